"""Precision: fp32 / bf16 / fp16 autocast and the GradScaler path, exercised on CPU where possible."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastadv.config import ConfigError
from fastadv.core.methods import METHODS, StepContext
from fastadv.core.precision import Precision, make_precision, resolve_mode
from fastadv.models import build_model

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (fp16 GradScaler and CUDA autocast)")


def tiny(seed=0):
    torch.manual_seed(seed)
    return build_model("small-cnn", channels=1, size=16)


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def context(model, method, precision, eps=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return StepContext(model, opt, eps, METHODS[method].default_alpha(eps, 2), 2, 2, lambda i: None,
                       torch.Generator().manual_seed(1), precision=precision, train_size=64)


def test_fp32_is_plain_autograd():
    p = make_precision("fp32", torch.device("cpu"))
    assert p.scaler is None
    with p.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_auto_is_bf16_on_a_cpu_with_native_bf16_and_fp32_without(monkeypatch):
    from fastadv.core import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_mode("auto", torch.device("cpu")) == "bf16"
    assert make_precision("auto", torch.device("cpu")).mode == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_mode("auto", torch.device("cpu")) == "fp32"
    assert resolve_mode("bf16", torch.device("cpu")) == "bf16"  # an explicit choice is kept


def test_native_bf16_detection_agrees_with_the_cpu_flags():
    flags = ""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo to compare with")
    from fastadv.core.precision import cpu_has_native_bf16

    listed = any(f" {flag}" in flags for flag in ("avx512_bf16", "amx_bf16"))
    assert cpu_has_native_bf16() == listed


def test_bad_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="precision must be one of"):
        make_precision("fp8", torch.device("cpu"))


def test_no_scaler_off_cuda():
    """A GradScaler only exists for fp16 on CUDA (bf16 has fp32's exponent range and needs none)."""
    for mode in ("bf16", "fp16"):
        assert make_precision(mode, torch.device("cpu")).scaler is None


def test_bf16_autocast_on_cpu_runs_convolutions_in_bf16():
    model, (x, y) = tiny(), batch()
    with make_precision("bf16", torch.device("cpu")).autocast():
        out = model(x)
    assert out.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_under_bf16_on_cpu(method):
    """bf16 steps: finite loss, fp32 weights that move, and the attack stays in the eps-ball."""
    model, (x, y) = tiny(), batch()
    before = [p.detach().clone() for p in model.parameters()]
    ctx = context(model, method, make_precision("bf16", torch.device("cpu")))
    ctx.index = torch.arange(len(y))  # the rows' training-set indices (per-example memories)
    stats = METHODS[method].step(ctx, x, y)
    assert torch.isfinite(stats.loss_sum)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    if method in ("fgsm-rs", "pgd"):
        x_adv = ctx.attack(x, y, steps=2)
        assert (x_adv - x).abs().max() <= ctx.eps + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_bf16_step_close_to_fp32_step():
    """The same clean step in bf16 and fp32 moves the weights in nearly the same direction."""
    (x, y) = batch(64)
    deltas = []
    for mode in ("fp32", "bf16"):
        model = tiny()
        before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
        ctx = context(model, "standard", make_precision(mode, torch.device("cpu")))
        METHODS["standard"].step(ctx, x, y)
        deltas.append(torch.nn.utils.parameters_to_vector(model.parameters()).detach() - before)
    assert F.cosine_similarity(deltas[0], deltas[1], dim=0) > 0.95


def test_gradscaler_path_scales_and_skips_nonfinite_steps_on_cpu():
    """The fp16 code path (scaled backward, unscale + inf check in step, scale update), driven by a
    CPU GradScaler so it runs here; on CUDA make_precision builds the same object."""
    model, (x, y) = tiny(), batch()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    prec = Precision("fp16", "cpu", scaler)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(x), y)
    prec.backward(loss)
    grads_scaled = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for gs, g in zip(grads_scaled, (p.grad for p in model.parameters())):
        torch.testing.assert_close(gs, g * 2.0**10, rtol=1e-4, atol=1e-6)

    # A finite step: weights move by lr * unscaled gradient.
    model.zero_grad()
    before = [p.detach().clone() for p in model.parameters()]
    prec.backward(F.cross_entropy(model(x), y))
    unscaled = [p.grad / 2.0**10 for p in model.parameters()]
    prec.step(opt)
    for b, p, g in zip(before, model.parameters(), unscaled):
        torch.testing.assert_close(p.detach(), b - 0.1 * g, rtol=1e-4, atol=1e-6)

    # A non-finite gradient: the step is skipped and the scale backs off.
    model.zero_grad()
    prec.backward(F.cross_entropy(model(x), y))
    next(model.parameters()).grad[0].fill_(float("inf"))
    scale = scaler.get_scale()
    before = [p.detach().clone() for p in model.parameters()]
    prec.step(opt)
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert scaler.get_scale() < scale


def test_fp16_autocast_step_with_cpu_scaler_trains():
    """A whole fgsm-rs step under fp16 autocast with a scaler (CPU fp16 autocast is slow but exists)."""
    model, (x, y) = tiny(), batch()
    prec = Precision("fp16", "cpu", torch.amp.GradScaler("cpu"))
    ctx = context(model, "fgsm-rs", prec)
    stats = METHODS["fgsm-rs"].step(ctx, x, y)
    assert torch.isfinite(stats.loss_sum)


@needs_cuda
def test_fp16_on_cuda_has_a_gradscaler_and_trains():
    device = torch.device("cuda")
    prec = make_precision("fp16", device)
    assert prec.scaler is not None
    model = tiny().to(device)
    x, y = (t.to(device) for t in batch())
    stats = METHODS["pgd"].step(context(model, "pgd", prec), x, y)
    assert torch.isfinite(stats.loss_sum)
    assert make_precision("auto", device).mode in ("bf16", "fp16")


def test_bf16_training_keeps_accuracy_within_seed_noise(mnist):
    """Same seed, fp32 against bf16 autocast: a short FGSM-RS run ends within the spread that another seed
    gives in fp32 (clean and PGD-10 on 1,000 test points)."""
    import fastadv

    cfg = {"dataset": "mnist", "preset": "none", "model": "small-cnn", "method": "fgsm-rs", "eps": 0.1,
           "epochs": 1, "train_limit": 6000, "batch_size": 100, "optimizer": "adam", "lr_max": 5e-3,
           "weight_decay": 0.0, "eval_size": 200, "final_limit": 1000, "final_attack_steps": 10,
           "final_aa_points": 0, "progress": False}

    def accs(precision, seed, tmp):
        s = fastadv.train({**cfg, "precision": precision, "seed": seed, "out_dir": str(tmp)}, data=mnist).summary
        return s["clean_acc"], s["robust_acc"]

    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        fp32, others, bf16 = accs("fp32", 0, tmp), [accs("fp32", k, tmp) for k in (1, 2)], accs("bf16", 0, tmp)
    for i, name in enumerate(("clean", "robust")):
        noise = max(abs(fp32[i] - other[i]) for other in others)  # the spread of fp32 over three seeds
        assert abs(bf16[i] - fp32[i]) <= max(2 * noise, 0.02), (name, fp32, others, bf16)
    assert bf16[0] > 0.8 and bf16[1] > 0.5, bf16  # and the runs learned something worth comparing
