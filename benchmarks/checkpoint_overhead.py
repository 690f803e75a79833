"""Cost of a resume checkpoint: bytes and milliseconds per write, per verified read.

Builds the state a real run checkpoints (model, SGD momentum, data order of the full
training set, Free-m's delta for one batch, RNG states, loop counters) without training,
writes it ``--repeats`` times into a temporary run directory and prints a table; ``--json``
writes the figures. Timings depend on the disk and on what else runs on the machine.

    python benchmarks/checkpoint_overhead.py --models small-cnn preact-resnet18 --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fastadv.config import TrainConfig
from fastadv.data import Dataset
from fastadv.training import build
from fastadv.training.checkpoint import (
    checkpoint_problem,
    latest_checkpoint,
    read_checkpoint,
    training_state,
    write_checkpoint,
)

SHAPES = {"small-cnn": (1, 28, 60000), "preact-resnet18": (3, 32, 50000), "fast-cnn": (3, 32, 50000),
          "wide-resnet": (3, 32, 50000)}  # channels, size, training images


def measure(model_name: str, repeats: int, batch_size: int = 128) -> dict:
    channels, size, n = SHAPES[model_name]
    x_train = torch.zeros(n, channels, size, size, dtype=torch.uint8)  # the full training set's data order
    y = torch.zeros(n, dtype=torch.long)
    data = Dataset("cifar10" if channels == 3 else "mnist", x_train, y, x_train[:10], y[:10], 10, (0.5,) * channels,
                   (0.25,) * channels, False, "zeros")
    cfg = TrainConfig(model=model_name, dataset=data.name, method="free", batch_size=batch_size, eps=0.3,
                      precision="fp32", channels_last=False)
    s = build(cfg, data)  # the state a real run checkpoints: model, SGD momentum, data order, RNG, loop
    model, ctx = s.model, s.ctx
    x = torch.rand(batch_size, channels, size, size)
    torch.nn.functional.cross_entropy(model(x), torch.zeros(batch_size, dtype=torch.long)).backward()
    s.optimizer.step()  # momentum buffers exist, as in a running job
    ctx.state["delta"] = torch.zeros_like(x)  # Free-m's delta for one batch
    next(s.stream)
    writes, reads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        for i in range(repeats):
            ctx.iteration = i + 1
            state = training_state(s)
            t = time.perf_counter()
            path, nbytes = write_checkpoint(run_dir, ctx.iteration, state)
            writes.append(time.perf_counter() - t)
        for _ in range(repeats):
            t = time.perf_counter()
            newest = latest_checkpoint(run_dir)
            assert checkpoint_problem(newest) is None
            read_checkpoint(newest)
            reads.append(time.perf_counter() - t)
    params = sum(p.numel() for p in model.parameters())
    return {"model": model_name, "parameters": params, "bytes": nbytes,
            "write_ms_median": 1000 * statistics.median(writes), "write_ms_max": 1000 * max(writes),
            "verify_and_read_ms_median": 1000 * statistics.median(reads), "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["small-cnn"], choices=sorted(SHAPES))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    rows = [measure(m, args.repeats) for m in args.models]
    print(f"{'model':<16} {'params':>10} {'bytes':>12} {'write ms (median)':>18} {'write ms (max)':>15} "
          f"{'verify+read ms':>15}")
    for r in rows:
        print(f"{r['model']:<16} {r['parameters']:>10,} {r['bytes']:>12,} {r['write_ms_median']:>18.1f} "
              f"{r['write_ms_max']:>15.1f} {r['verify_and_read_ms_median']:>15.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
