"""Speed settings (channels_last, torch.compile, backend flags) change speed, never results."""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fastadv
from fastadv.core import perf
from fastadv.core.methods import METHODS, StepContext
from fastadv.core.precision import make_precision
from fastadv.models import build_model

CUDA = torch.cuda.is_available()


def pair(name="small-cnn", channels=1, size=16):
    torch.manual_seed(0)
    a = build_model(name, channels=channels, size=size)
    b = build_model(name, channels=channels, size=size)
    b.load_state_dict(a.state_dict())
    return a, b


def test_prepare_batch_layout():
    x = torch.rand(4, 3, 8, 8)
    assert perf.prepare_batch(x, False) is x
    cl = perf.prepare_batch(x, True)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, x)
    flat = torch.rand(4, 10)
    assert perf.prepare_batch(flat, True) is flat  # only 4-D batches have a channels-last layout


@pytest.mark.parametrize("name,channels,size", [("small-cnn", 1, 16), ("fast-cnn", 3, 16)])
def test_channels_last_model_computes_the_same_outputs_and_gradients(name, channels, size):
    ref, fast = pair(name, channels, size)
    model = perf.prepare_model(fast, channels_last=True)
    assert model is fast  # converted in place: the caller's module holds the trained weights
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    x = torch.rand(8, channels, size, size)
    y = torch.randint(0, 10, (8,))
    for m, inp in ((ref, x), (fast, perf.prepare_batch(x, True))):
        F.cross_entropy(m(inp), y).backward()
    torch.testing.assert_close(fast(perf.prepare_batch(x, True)), ref(x), rtol=1e-4, atol=1e-5)
    for p, q in zip(ref.parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5)


def test_backend_flags_off_cuda_change_nothing():
    before = torch.backends.cudnn.benchmark
    assert perf.configure_backends("cpu") == {"cudnn_benchmark": False, "tf32": False}
    assert torch.backends.cudnn.benchmark == before


@pytest.mark.skipif(not CUDA, reason="cuDNN autotuning and TF32 exist only on CUDA")
def test_backend_flags_on_cuda():
    flags = perf.configure_backends("cuda")
    assert flags == {"cudnn_benchmark": True, "tf32": True} and torch.backends.cudnn.benchmark


def compiles_here() -> str | None:
    """Why torch.compile cannot run here, or None when it can (Windows and Python 3.13+ may lack it)."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    try:
        importlib.import_module("torch._dynamo")
    except Exception as exc:  # pragma: no cover - depends on the platform
        return f"torch._dynamo unavailable: {exc}"
    return None


def compiled_step_matches_eager(compile_options):
    """A fgsm-rs step through a compiled model leaves the same weights as the eager step."""
    ref, fast = pair()
    compiled = perf.prepare_model(fast, compile=True, compile_options=compile_options)
    assert compiled is not fast  # a wrapper sharing fast's parameters
    assert set(compiled.state_dict()) != set(fast.state_dict())  # hence: save ``fast``, not the wrapper
    x = torch.rand(16, 1, 16, 16)
    y = torch.randint(0, 10, (16,))
    results = []
    for model in (ref, compiled):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ctx = StepContext(model, opt, 0.1, 0.125, 1, 1, lambda i: None, torch.Generator().manual_seed(3),
                          precision=make_precision("fp32", torch.device("cpu")))
        METHODS["fgsm-rs"].step(ctx, x, y)
        results.append([p.detach().clone() for p in model.parameters()])
    for p, q in zip(*results):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(compiles_here() is not None, reason=str(compiles_here()))
def test_compiled_model_trains_like_eager_on_cpu():
    """The --compile path (dynamo graph capture, AOT autograd, the wrapper sharing weights) with the
    aot_eager backend, which skips code generation and so runs in seconds."""
    compiled_step_matches_eager({"backend": "aot_eager"})


@pytest.mark.skipif(not os.environ.get("FASTADV_TEST_INDUCTOR"),
                    reason="inductor's C++ code generation takes minutes on a 2-core CPU; "
                           "set FASTADV_TEST_INDUCTOR=1 to run it")
def test_compiled_model_trains_like_eager_with_inductor():
    compiled_step_matches_eager(None)


HOST_SYNCS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_step_functions_make_no_host_syncs(method, monkeypatch):
    """No .item(), .tolist(), .cpu(), float(t), bool(t)... called from fastadv code inside a step:
    on a GPU each would stall the queue. (Calls made by torch's own code are not fastadv's.)"""
    calls = []
    for name in HOST_SYNCS:
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("fastadv"):
                calls.append(f"{_name} from {caller}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    model = build_model("small-cnn", channels=1, size=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ctx = StepContext(model, opt, 0.1, 0.1, 2, 2, lambda i: None, torch.Generator().manual_seed(0),
                      precision=make_precision("fp32", torch.device("cpu")), index=torch.arange(8), train_size=8)
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 10, (8,))
    for _ in range(2):
        METHODS[method].step(ctx, x, y)
    assert calls == []


@pytest.mark.skipif(not CUDA, reason="CUDA sync debug mode needs a CUDA device")
@pytest.mark.parametrize("method", sorted(METHODS))
def test_step_functions_do_not_synchronize_cuda(method):
    model = build_model("small-cnn", channels=1, size=16).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ctx = StepContext(model, opt, 0.1, 0.1, 2, 2, lambda i: None, torch.Generator(device="cuda").manual_seed(0),
                      precision=make_precision("fp16", torch.device("cuda")),
                      index=torch.arange(8, device="cuda"), train_size=8)
    x, y = torch.rand(8, 1, 16, 16, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    METHODS[method].step(ctx, x, y)  # warm-up (lazy init may sync once)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        METHODS[method].step(ctx, x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_trainer_records_speed_flags(synthetic, tmp_path):
    cfg = {"dataset": "synthetic", "method": "fgsm-rs", "epochs": 0.1, "batch_size": 64, "channels_last": True,
           "precision": "bf16", "eval_size": 32, "final_limit": 32, "final_attack_steps": 2,
           "eval_attack_steps": 1, "out_dir": str(tmp_path), "progress": False, "device": "cpu"}
    result = fastadv.train(cfg, data=synthetic)
    speed = json.loads((result.run_dir / "config.json").read_text())["speed"]
    assert speed == {"cudnn_benchmark": False, "tf32": False, "channels_last": True, "compile": False,
                     "precision": "bf16"}
    reloaded = fastadv.load_model(result.run_dir)  # weights saved from the channels-last model load as usual
    x = torch.rand(4, 1, 16, 16)
    torch.testing.assert_close(reloaded(x), result.model(x), rtol=1e-4, atol=1e-5)


def test_compile_flag_is_a_config_field():
    cfg = fastadv.TrainConfig.from_dict({"compile": "true", "channels_last": "yes"})
    assert cfg.compile is True and cfg.channels_last is True
    with pytest.raises(fastadv.ConfigError, match="compile expects true or false"):
        fastadv.TrainConfig.from_dict({"compile": "maybe"})


CIFAR_FAST = Path(__file__).resolve().parents[1] / "configs" / "cifar10-fast.toml"


@pytest.mark.slow
def test_cifar10_fast_recipe_runs_end_to_end_on_a_cpu_subset(tmp_path):
    """configs/cifar10-fast.toml as written (bf16, channels_last, fgsm-rs, PreAct ResNet-18, its LR
    schedule and optimizer), for one minibatch of 64 of the first 128 training images. Changed so it
    runs in seconds on 2 CPU cores: train_limit, epochs, batch size, evaluation sizes, and compile
    off (inductor compiles for minutes on a 2-core CPU; the compile path is tested above).
    Its GPU figures are still to be measured (docs/PERFORMANCE.md)."""
    try:
        data = fastadv.load_dataset("cifar10", download=False)
    except fastadv.DataError as exc:
        pytest.skip(f"CIFAR-10 not available ({exc}); set FASTADV_DATA")
    cfg = fastadv.TrainConfig.from_file(CIFAR_FAST, {
        "train_limit": 128, "epochs": 0.5, "batch_size": 64, "compile": False, "device": "cpu", "eval_size": 16,
        "eval_attack_steps": 1, "final_limit": 16, "final_attack_steps": 2, "out_dir": str(tmp_path),
        "progress": False})
    assert (cfg.model, cfg.method, cfg.precision, cfg.channels_last) == ("preact-resnet18", "fgsm-rs", "bf16", True)
    result = fastadv.train(cfg, data=data)
    s = result.summary
    assert s["minibatches"] == 1 and s["grad_computations"] == 2
    assert 0.0 <= s["robust_acc"] <= s["clean_acc"] <= 1.0
    recorded = json.loads((result.run_dir / "config.json").read_text())
    assert recorded["speed"]["precision"] == "bf16" and recorded["speed"]["channels_last"] is True
    assert abs(recorded["eps"] - 8 / 255) < 1e-9 and abs(recorded["alpha"] - 10 / 255) < 1e-9
