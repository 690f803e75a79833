"""Step cost ratio: time of one training step of each method / time of one clean step.

The floor of adversarial training in forward-backward computations per minibatch: a Free-m
replay 1, FGSM-RS 2, PGD-K K+1. This benchmark measures how close fastadv's real step
functions (``fastadv.core.methods``, with their ``StepContext``, schedules and precision) come to
it. The unit is a plain PyTorch clean step written out here (zero_grad, forward, cross
entropy, backward, optimizer step) on the same model, optimizer and batch. Methods are
timed round-robin in one process, ``steps`` steps per block; the ratio of a round is the
method's time per step over the clean step's time in that round (the clean step is timed
before and after the methods, and the mean is used), and the reported figure is the median
over rounds. Free-m is reported per replay (its minibatch time / m).
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F

from benchmarks._common import PeakMemory, median, shaped_setup, spread, sync, table
from fastadv.core import perf
from fastadv.core.methods import METHODS, StepContext
from fastadv.core.precision import make_precision
from fastadv.models import build_model

NAME = "step-cost"
DESCRIPTION = "time per training step of each method over one clean forward-backward step"

# (label, model, channels, size, batch, eps, (rounds, steps) full, (rounds, steps) quick): MNIST-sized
# input for small-cnn, CIFAR-sized for fast-cnn, whose steps cost ~20x more (so fewer of them).
SETUPS = [
    ("small-cnn / MNIST 1x28x28", "small-cnn", 1, 28, 100, 0.3, (15, 5), (5, 3)),
    ("fast-cnn / CIFAR 3x32x32", "fast-cnn", 3, 32, 128, 8 / 255, (7, 2), (3, 1)),
]
REPLAYS = 4
# (label, method name, attack steps, floor in forward-backward computations per optimizer-step unit)
METHOD_ROWS = [
    ("standard", "standard", 1, 1.0),
    (f"free (per replay, m={REPLAYS})", "free", 1, 1.0),
    ("fgsm-rs", "fgsm-rs", 1, 2.0),
    ("pgd-3", "pgd", 3, 4.0),
    ("pgd-7", "pgd", 7, 8.0),
]
TOLERANCE = 1.05  # targets: floor * 1.05, except fgsm-rs whose target is 2.1 (the same)


def make_context(setup, method: str, attack_steps: int, device, precision: str, channels_last: bool) -> StepContext:
    """The StepContext a run of ``method`` gets (``fastadv.training.build``: SGD, 1cycle LR and its setter, an
    attack RNG), on the setup's net with the same initial weights for every method (seed 0)."""
    label, model_name, channels, size, batch, eps = setup[:6]
    s = shaped_setup(model_name, channels, size, device, method=method, attack_steps=attack_steps, eps=eps,
                     replays=REPLAYS, batch_size=batch, optimizer="sgd", lr_max=0.01, precision=precision,
                     channels_last=channels_last, seed=0)
    return s.ctx


def time_block(fn, steps: int, device) -> float:
    """Seconds per call of fn, over ``steps`` calls."""
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / steps


def measure_setup(setup, device, *, rounds: int, steps: int, channels_last: bool, precision: str) -> list[dict]:
    label, model_name, channels, size, batch, eps = setup[:6]
    torch.manual_seed(0)
    x = torch.rand(batch, channels, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    x = perf.prepare_batch(x, channels_last)
    base = build_model(model_name, channels=channels, size=size).to(device)
    perf.prepare_model(base, channels_last=channels_last)

    # The clean unit runs under the same autocast as the methods (plain fp32 when precision is fp32).
    unit_model = copy.deepcopy(base)
    unit_opt = torch.optim.SGD(unit_model.parameters(), lr=0.01, momentum=0.9)
    unit_prec = make_precision(precision, torch.device(device))

    def unit():
        unit_opt.zero_grad(set_to_none=True)
        with unit_prec.autocast():
            logits = unit_model(x)
        F.cross_entropy(logits.float(), y).backward()
        unit_opt.step()

    runners = {}
    for row_label, method, k, floor in METHOD_ROWS:
        ctx = make_context(setup, method, k, device, precision, channels_last)
        step = METHODS[method].step
        runners[row_label] = (lambda ctx=ctx, step=step: step(ctx, x, y), floor,
                              REPLAYS if method == "free" else 1, method, k)

    for fn in [unit] + [r[0] for r in runners.values()]:  # warm-up: allocator, oneDNN/cuDNN kernels
        time_block(fn, 3, device)

    ratios = {name: [] for name in runners}
    ms = {name: [] for name in runners}
    units = []
    with PeakMemory(device) as mem:
        for _ in range(rounds):
            before = time_block(unit, steps, device)
            block = {name: time_block(r[0], steps, device) / r[2] for name, r in runners.items()}
            after = time_block(unit, steps, device)
            u = (before + after) / 2
            units.append(u)
            for name, t in block.items():
                ratios[name].append(t / u)
                ms[name].append(1e3 * t)
    rows = [{"setup": label, "model": model_name, "batch": batch, "channels_last": channels_last,
             "rounds": rounds, "steps": steps,
             "precision": precision, "method": "clean step (unit)", "ms": 1e3 * median(units),
             "ratio": 1.0, "ratio_range": [1.0, 1.0], "floor": 1.0, "target": None, "meets": None,
             "images_per_s": batch / median(units), "memory": mem.to_dict()}]
    for name, (_, floor, _, method, k) in runners.items():
        target = floor * TOLERANCE if method != "fgsm-rs" else 2.1
        r = median(ratios[name])
        rows.append({"setup": label, "model": model_name, "batch": batch, "channels_last": channels_last,
                     "rounds": rounds, "steps": steps,
                     "precision": precision, "method": name, "ms": median(ms[name]), "ratio": r,
                     "ratio_range": list(spread(ratios[name])), "floor": floor, "target": target,
                     "meets": bool(r <= target), "memory": mem.to_dict()})
    return rows


def variants(device: torch.device, quick: bool) -> list[tuple[bool, str]]:
    """(channels_last, precision) combinations: fp32 NCHW always, plus channels_last and bf16."""
    out = [(False, "fp32"), (True, "fp32")]
    if not quick:
        out.append((True, "bf16"))
    if device.type == "cuda":
        out.append((True, "fp16"))
    return out


def run(device: torch.device, quick: bool = False, log=print, setups=None) -> dict:
    """Every setup (or those in ``setups``) in every layout and precision variant; returns rows and a table."""
    setups = SETUPS if setups is None else setups
    rows = []
    for setup in setups:
        rounds, steps = setup[7] if quick else setup[6]
        for channels_last, precision in variants(device, quick):
            log(f"  {setup[0]}, channels_last={channels_last}, {precision} ...")
            rows += measure_setup(setup, device, rounds=rounds, steps=steps, channels_last=channels_last,
                                  precision=precision)
    text = table(["setup", "layout", "prec", "method", "ms/step", "ratio", "range", "target", "ok", "RSS MB"],
                 [[r["setup"], "NHWC" if r["channels_last"] else "NCHW", r["precision"], r["method"], r["ms"],
                   r["ratio"], f"{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}",
                   r["target"], {True: "yes", False: "NO", None: ""}[r["meets"]], r["memory"]["rss_peak_mb"]]
                  for r in rows])
    text += ("\nratio = method's time per step (free: per replay) / clean fwd-bwd-update step, same model, "
             "batch and layout; median over interleaved rounds ("
             + ", ".join(f"{s[1]}: {s[7 if quick else 6][0]} rounds of {s[7 if quick else 6][1]} steps" for s in setups)
             + ")")
    return {"name": NAME, "rows": rows, "table": text}


def profile(method_label: str = "free (per replay, m=4)", setup_index: int = 0, steps: int = 20,
            channels_last: bool = False, row_limit: int = 12) -> str:
    """torch.profiler tables (CPU time per op) of the clean unit step and one method's step, to see
    where a ratio above its floor comes from. ``python -m benchmarks.step_cost --profile free``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    label, model_name, channels, size, batch, eps = SETUPS[setup_index][:6]
    row = next(r for r in METHOD_ROWS if r[0] == method_label or r[1] == method_label)
    torch.manual_seed(0)
    x = perf.prepare_batch(torch.rand(batch, channels, size, size), channels_last)
    y = torch.randint(0, 10, (batch,))
    model = perf.prepare_model(build_model(model_name, channels=channels, size=size), channels_last=channels_last)
    unit_model = copy.deepcopy(model)
    unit_opt = torch.optim.SGD(unit_model.parameters(), lr=0.01, momentum=0.9)
    ctx = make_context(model, row[1], row[2], eps, torch.device("cpu"), "fp32")

    def unit():
        unit_opt.zero_grad(set_to_none=True)
        F.cross_entropy(unit_model(x), y).backward()
        unit_opt.step()

    out = []
    for name, fn in (("clean unit step", unit), (row[0], lambda: METHODS[row[1]].step(ctx, x, y))):
        time_block(fn, 3, "cpu")
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            time_block(fn, steps, "cpu")
        out.append(f"--- {name}, {label}, {steps} steps\n"
                   + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit))
    return "\n".join(out)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="profile one method's step against the clean step")
    parser.add_argument("--profile", default="free", help="method row label or method name (default free)")
    parser.add_argument("--setup", type=int, default=0, help="index into SETUPS (0 small-cnn, 1 fast-cnn)")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    print(profile(args.profile, args.setup, channels_last=args.channels_last))
