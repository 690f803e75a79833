"""Precision x memory layout x torch.compile: training throughput of each net on this machine.

For every net (MNIST-sized small-cnn; CIFAR-sized fast-cnn, airbench-half, airbench) one
training step (zero_grad, forward under the precision's autocast, cross entropy, backward,
SGD step) is timed in the four combinations fp32 / bf16 x NCHW / NHWC, round-robin within
one process; the figure is the median images per second over rounds. The row also names
what ``precision = "auto"`` and ``channels_last = None`` choose here (``fastadv.core``), so a
reader sees whether the defaults are the fastest variant.

``torch.compile`` (inductor) is measured for one CIFAR net in the default precision and
layout: the seconds of the first two steps (compilation included) against eager's, the
steady step time, and the number of steps after which compiling has paid for itself.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from benchmarks._common import median, spread, sync, table
from fastadv.core import perf
from fastadv.core.precision import make_precision, resolve_mode
from fastadv.models import build_model

NAME = "cpu-speed"
DESCRIPTION = "fp32/bf16 x NCHW/NHWC training img/s per net, what auto picks, and torch.compile's cost and gain"
HEAVY = True  # torch.compile takes about a minute on 2 cores

# (label, model, channels, size, batch)
NETS = [
    ("small-cnn / MNIST", "small-cnn", 1, 28, 100),
    ("fast-cnn / CIFAR", "fast-cnn", 3, 32, 128),
    ("airbench-half / CIFAR", "airbench-half", 3, 32, 128),
    ("airbench / CIFAR", "airbench", 3, 32, 128),
]
VARIANTS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
COMPILE_NET = "airbench-half"


def trainer(model_name: str, channels: int, size: int, batch: int, device, precision: str, channels_last: bool,
            compile_model: bool = False):
    """A closure running one training step of a fresh net (seed 0) on a fixed random batch."""
    torch.manual_seed(0)
    model = build_model(model_name, channels=channels, size=size).to(device).train()
    run = perf.prepare_model(model, channels_last=channels_last, compile=compile_model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    prec = make_precision(precision, torch.device(device))
    x = perf.prepare_batch(torch.rand(batch, channels, size, size, device=device), channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with prec.autocast():
            logits = run(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()

    return step


def seconds_per_step(step, device, seconds: float) -> float:
    sync(device)
    t, k = time.perf_counter(), 0
    while k < 2 or time.perf_counter() - t < seconds:
        step()
        k += 1
    sync(device)
    return (time.perf_counter() - t) / k


def measure_net(net, device, rounds: int, seconds: float) -> dict:
    label, model_name, channels, size, batch = net
    steps = {v: trainer(model_name, channels, size, batch, device, *v) for v in VARIANTS}
    for step in steps.values():  # warm-up: allocator and oneDNN kernels
        seconds_per_step(step, device, 0.5)
    rates = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for v, step in steps.items():
            rates[v].append(batch / seconds_per_step(step, device, seconds))
    auto = (resolve_mode("auto", torch.device(device)), perf.resolve_channels_last(None, torch.device(device)))
    best = max(VARIANTS, key=lambda v: median(rates[v]))
    return {"net": label, "model": model_name, "batch": batch, "rounds": rounds,
            "img_per_s": {f"{p}-{'NHWC' if cl else 'NCHW'}": median(rates[(p, cl)]) for p, cl in VARIANTS},
            "range": {f"{p}-{'NHWC' if cl else 'NCHW'}": list(spread(rates[(p, cl)])) for p, cl in VARIANTS},
            "auto": f"{auto[0]}-{'NHWC' if auto[1] else 'NCHW'}", "fastest": f"{best[0]}-{'NHWC' if best[1] else 'NCHW'}",
            "auto_vs_fastest": median(rates[auto]) / median(rates[best]) if auto in rates else None}


def measure_compile(device, seconds: float) -> dict:
    """Eager against torch.compile for COMPILE_NET in the default precision and layout."""
    dev = torch.device(device)
    precision, channels_last = resolve_mode("auto", dev), perf.resolve_channels_last(None, dev)
    out = {"net": COMPILE_NET, "precision": precision, "channels_last": channels_last}
    for mode in ("eager", "compile"):
        step = trainer(COMPILE_NET, 3, 32, 128, device, precision, channels_last, compile_model=mode == "compile")
        sync(device)
        t = time.perf_counter()
        step()
        step()
        sync(device)
        out[f"{mode}_first_two_steps_s"] = time.perf_counter() - t
        out[f"{mode}_ms_per_step"] = 1e3 * median([seconds_per_step(step, device, seconds) for _ in range(3)])
    saved = (out["eager_ms_per_step"] - out["compile_ms_per_step"]) / 1e3
    extra = out["compile_first_two_steps_s"] - out["eager_first_two_steps_s"]
    out["speedup"] = out["eager_ms_per_step"] / out["compile_ms_per_step"]
    out["breakeven_steps"] = extra / saved if saved > 0 else None
    return out


def run(device: torch.device, quick: bool = False, log=print, nets=None, compile_too: bool = True) -> dict:
    rounds, seconds = (2, 1.0) if quick else (5, 2.0)
    rows = []
    for net in NETS if nets is None else nets:
        log(f"  {net[0]} ...")
        rows.append(measure_net(net, device, rounds, seconds))
    names = [f"{p}-{'NHWC' if cl else 'NCHW'}" for p, cl in VARIANTS]
    text = table(["net", "batch", *names, "auto", "fastest", "auto/fastest"],
                 [[r["net"], r["batch"], *[round(r["img_per_s"][n]) for n in names], r["auto"], r["fastest"],
                   r["auto_vs_fastest"]] for r in rows])
    out = {"rows": rows, "table": text}
    if compile_too:
        log(f"  torch.compile of {COMPILE_NET} ...")
        c = measure_compile(device, seconds)
        out["compile"] = c
        out["table"] = text + "\n" + table(
            ["compile", "prec", "NHWC", "first 2 steps eager s", "first 2 steps compiled s", "eager ms",
             "compiled ms", "speedup", "break-even steps"],
            [[c["net"], c["precision"], c["channels_last"], c["eager_first_two_steps_s"],
              c["compile_first_two_steps_s"], c["eager_ms_per_step"], c["compile_ms_per_step"], c["speedup"],
              c["breakeven_steps"]]])
    return out
