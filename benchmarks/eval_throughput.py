"""Evaluation throughput: PGD-20 over the 10,000 MNIST test images with small-cnn.

Reports images per second and the seconds for the whole test set, against a floor of 21
forward-backward passes per batch (20 attack steps + the final forward, counted generously
as a full pass): ``floor = 21 x (time of one forward+backward of the same model and batch)
x batches``. The unit is measured in eval mode, backward to the parameters; an attack step
needs the input gradient only, so the ratio may fall below 1. Evaluation and unit timings
alternate; figures are medians over rounds.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

import fastadv
from benchmarks._common import PeakMemory, median, spread, sync, table
from fastadv.core import perf
from fastadv.data import DataError, to_float
from fastadv.evaluation import AttackSpec, evaluate
from fastadv.models import build_model

NAME = "eval-throughput"
DESCRIPTION = "PGD-20 evaluation of small-cnn on the MNIST test set vs 21 forward-backward passes"

ATTACK = AttackSpec("pgd", eps=0.3, alpha=0.075, steps=20, restarts=1)
BATCH = 500  # the trainer's eval_batch_size default


def test_set(device) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        data = fastadv.load_dataset("mnist", download=False, device=device)
        return data.x_test, data.y_test, "MNIST test split"
    except DataError:  # timing does not depend on the pixels: same shapes, random content
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (10000, 1, 28, 28), generator=g, dtype=torch.uint8)
        return x.to(device), torch.randint(0, 10, (10000,), generator=g).to(device), "random images (MNIST not found)"


def unit_seconds(model, x, y, device, repeats: int) -> float:
    """Median seconds of one forward + backward (to the parameters) on one batch, eval mode."""
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        sync(device)
        times.append(time.perf_counter() - t)
    return median(times)


def measure(device, x_all, y_all, *, channels_last: bool, rounds: int) -> dict:
    torch.manual_seed(0)
    model = build_model("small-cnn", channels=1, size=28, mean=(0.1307,), std=(0.3081,)).to(device).eval()
    perf.prepare_model(model, channels_last=channels_last)
    n = len(y_all)
    xb = perf.prepare_batch(to_float(x_all[:BATCH]), channels_last)
    yb = y_all[:BATCH]
    unit_seconds(model, xb, yb, device, 3)  # warm-up
    evals, units = [], []
    with PeakMemory(device) as mem:
        for _ in range(rounds):
            units.append(unit_seconds(model, xb, yb, device, 10))
            sync(device)
            t = time.perf_counter()
            evaluate(model, (x_all, y_all), attack=ATTACK, batch_size=BATCH, seed=0)
            sync(device)
            evals.append(time.perf_counter() - t)
            units.append(unit_seconds(model, xb, yb, device, 10))
    batches = -(-n // BATCH)
    floor = (ATTACK.steps + 1) * median(units) * batches
    seconds = median(evals)
    return {"channels_last": channels_last, "images": n, "batch": BATCH, "seconds": seconds,
            "seconds_range": list(spread(evals)), "images_per_s": n / seconds, "floor_seconds": floor,
            "ratio_to_floor": seconds / floor, "unit_ms": 1e3 * median(units), "memory": mem.to_dict()}


def run(device: torch.device, quick: bool = False, log=print) -> dict:
    x_all, y_all, source = test_set(device)
    rounds = 2 if quick else 3
    rows = []
    for channels_last in (False, True):
        log(f"  PGD-20 on {len(y_all)} images, channels_last={channels_last} ...")
        rows.append(measure(device, x_all, y_all, channels_last=channels_last, rounds=rounds))
    text = table(["layout", "images", "s (PGD-20)", "images/s", "floor s (21 fwd-bwd)", "ratio", "RSS MB"],
                 [["NHWC" if r["channels_last"] else "NCHW", r["images"], r["seconds"], r["images_per_s"],
                   r["floor_seconds"], r["ratio_to_floor"], r["memory"]["rss_peak_mb"]] for r in rows])
    text += (f"\n{ATTACK.describe()}, batch {BATCH}, {source}; fastadv.evaluate (clean + attack + adversarial "
             f"forward); medians over {rounds} rounds")
    return {"name": NAME, "attack": ATTACK.to_dict(), "source": source, "rounds": rounds, "rows": rows,
            "table": text}
