"""Behaviour kept? Train three fixed-seed runs and record, or compare against a record, every figure they produce.

    python scripts/behaviour.py record before.json    # on the code before a change
    python scripts/behaviour.py compare before.json   # on the code after it: exit 1 and the differences if any

The runs: the MNIST demo recipe (preset "mnist"), a Free-m run (preset "fashion-mnist", shortened) and an
FGSM-RS run on MNIST (10,000 images, 2 epochs). What is compared: summary.json without its timings
(every key ending in "seconds", at any depth) and the run name, plus every metrics.csv row without
its wall-clock column. Figures are bit-for-bit on one machine; across machines float rounding differs.
"""
from __future__ import annotations

import csv
import json
import sys
import tempfile
from pathlib import Path

RUNS = {
    "demo": {"preset": "mnist"},
    "free": {"preset": "fashion-mnist", "iterations": 600, "final_limit": 2000},
    "fgsm-rs": {"preset": "none", "dataset": "mnist", "method": "fgsm-rs", "eps": 0.3, "epochs": 2,
                "train_limit": 10000, "optimizer": "adam", "lr_max": 0.005, "weight_decay": 0.0, "batch_size": 100,
                "lr_schedule": "one-cycle:peak=0.4,end_cycle=1,div=1e9", "final_limit": 2000},
}
SHARED = {"seed": 0, "progress": False, "name": "run"}


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not k.endswith("seconds") and k != "name"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def figures() -> dict:
    import fastadv

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, cfg in RUNS.items():
            result = fastadv.train({**cfg, **SHARED, "out_dir": str(Path(tmp) / label)})
            with open(result.run_dir / "metrics.csv") as f:
                rows = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]
            out[label] = {"summary": without_timings(result.summary), "metrics": rows}
            print(f"{label}: clean {result.summary['clean_acc']:.4f}, robust {result.summary['robust_acc']:.4f}",
                  flush=True)
    return out


def differences(old, new, path="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if key not in new:
                out.append(f"{path}/{key}: only before")
            elif key not in old:
                out.append(f"{path}/{key}: only after")
            else:
                out += differences(old[key], new[key], f"{path}/{key}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {old!r} before, {new!r} after"]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "compare"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    path = Path(argv[1])
    now = figures()
    if argv[0] == "record":
        path.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"recorded {path}")
        return 0
    diffs = differences(json.loads(path.read_text()), json.loads(json.dumps(now)))
    for d in diffs:
        print(d)
    print("same figures" if not diffs else f"{len(diffs)} difference(s)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
