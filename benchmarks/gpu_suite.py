"""The GPU suite: fastadv's CIFAR-10 recipes timed on one CUDA device, in one call of at most ~9 minutes.

    python -m benchmarks.gpu_suite --out gpu-results [--data-dir DIR] [--budget 540]
    python -m benchmarks --suite gpu                    # the same, through the benchmarks runner
    python -m benchmarks.gpu_suite --tiny --out DIR     # the same code on a CPU in under a minute (tests)

Runs, in order, each through ``fastadv.train`` with its held-out checks (PGD-10, step eps/4, 1,000
fixed test points) and a final evaluation of PGD-20 (step 2/255, 1 restart) on all 10,000 test
images plus AA-lite (the per-point worst case of that PGD-20, APGD-CE and APGD-T with 9 target
classes, as AutoAttack standard) on the first 1,000:

1. ``cifar10-fast``: configs/cifar10-fast.toml as written (FGSM-RS, PreAct ResNet-18, bf16,
   channels_last, torch.compile, 15 epochs);
2. ``free8-1cycle``: the thesis' recipe, Free-8 on PreAct ResNet-18 with the 1cycle LR (lr_max 0.15)
   and 1cycle momentum, scaled to the same forward-backward budget as run 1 (30 passes: 3.75 real
   epochs of 8 replays);
3. ``free8-3steps``: Free-m's original 3-steps LR (0.1 -> 0.01 -> 0.001) at twice run 2's iterations,
   only if the time left says it fits.

Before the recipes, the step-cost benchmark's CIFAR setup runs in quick mode (Free replay, FGSM-RS,
PGD-K over a clean step). It writes ``results.json`` and PNG figures (held-out robust and clean
accuracy against training seconds) into ``--out``, and prints a table.

The training data travels in parts when it is too large for one transfer (64 MiB): ``split`` writes
``cifar10-part1.npz`` (the test split, 31 MB), ``cifar10-part2.npz`` and ``cifar10-part3.npz`` (each
half of the training split, 57 MB for the local 36,947 images), uncompressed uint8; ``--data-dir``
holding the parts and no ``cifar10.npz`` makes the suite put the whole file back together first.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
FAST_CONFIG = ROOT / "configs" / "cifar10-fast.toml"
BUDGET = 540.0  # seconds for the whole suite (9 minutes)
NAME = "gpu"
DESCRIPTION = "CIFAR-10 recipes on one CUDA device (run with --suite gpu; --tiny on a CPU)"
PARTS = ("cifar10-part1.npz", "cifar10-part2.npz", "cifar10-part3.npz")
KEYS = ("x_train", "y_train", "x_test", "y_test")


# ----------------------------------------------------------------------------- data in parts
def split(src: Path, out_dir: Path) -> list[Path]:
    """Write ``src`` (a cifar10.npz) as three uint8 parts: the test split, then each half of the training split."""
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in KEYS}
    half = len(arrays["y_train"]) // 2
    parts = [{"x_test": arrays["x_test"], "y_test": arrays["y_test"]},
             {"x_train": arrays["x_train"][:half], "y_train": arrays["y_train"][:half]},
             {"x_train": arrays["x_train"][half:], "y_train": arrays["y_train"][half:]}]
    paths = [out_dir / name for name in PARTS]
    for path, part in zip(paths, parts):
        np.savez(path, **part)  # uncompressed: CIFAR pixels barely compress and loading stays fast
    return paths


def assemble(data_dir: Path) -> Path | None:
    """Put ``cifar10.npz`` together from its parts in ``data_dir`` when only the parts are there."""
    import numpy as np

    target = data_dir / "cifar10.npz"
    if target.is_file() or not all((data_dir / p).is_file() for p in PARTS):
        return target if target.is_file() else None
    loaded = [np.load(data_dir / name, allow_pickle=False) for name in PARTS]
    try:
        test, first, second = loaded
        whole = {"x_test": test["x_test"], "y_test": test["y_test"],
                 "x_train": np.concatenate([first["x_train"], second["x_train"]]),
                 "y_train": np.concatenate([first["y_train"], second["y_train"]])}
    finally:
        for f in loaded:
            f.close()
    tmp = data_dir / ".cifar10.npz.tmp.npz"
    np.savez(tmp, **whole)
    tmp.replace(target)
    return target


# ----------------------------------------------------------------------------- recipes
def recipes(tiny: bool) -> list[tuple[str, dict]]:
    with open(FAST_CONFIG, "rb") as f:
        fast = tomllib.load(f)
    fast_passes = fast["epochs"] * 2  # FGSM-RS: 2 forward-backward passes per minibatch
    free = {**fast, "method": "free", "replays": 8, "alpha": None, "lr_schedule": "one-cycle", "lr_max": 0.15,
            "momentum_schedule": "one-cycle", "weight_decay": 2e-4, "epochs": fast_passes / 8, "batch_size": 256,
            "compile": fast.get("compile", False)}
    three = {**free, "lr_schedule": "piecewise:values=1/0.1/0.01,boundaries=0.5/0.75", "lr_max": 0.1,
             "momentum_schedule": "constant", "epochs": 2 * free["epochs"]}
    runs = [("cifar10-fast", fast), ("free8-1cycle", free), ("free8-3steps", three)]
    shared = {"final_limit": 0, "final_aa_points": 1000, "final_aa_targets": 9, "eval_size": 1000, "progress": False}
    if tiny:  # the same code on a CPU: a small net, a few hundred images, short runs, small evaluations
        shared = {"model": "fast-cnn", "compile": False, "train_limit": 256, "batch_size": 64, "final_limit": 48,
                  "final_aa_points": 32, "final_aa_targets": 1, "eval_size": 48, "eval_attack_steps": 2,
                  "final_attack_steps": 3, "eval_batch_size": 64, "eval_every": 8, "progress": False,
                  "device": "cpu"}
        epochs = {"cifar10-fast": 1.0, "free8-1cycle": 0.5, "free8-3steps": 1.0}  # 3-steps: twice the 1cycle run
        return [(name, {**cfg, **shared, "name": name, "epochs": epochs[name]}) for name, cfg in runs]
    return [(name, {**cfg, **shared, "name": name}) for name, cfg in runs]


def cuda_peak_mb(device) -> float | None:
    import torch

    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_peak(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def held_out_curve(run_dir: Path) -> list[dict]:
    import csv

    with open(run_dir / "metrics.csv") as f:
        return [{"seconds": float(r["seconds"]), "adv_acc": float(r["adv_acc"]), "clean_acc": float(r["clean_acc"]),
                 "step": int(r["step"])} for r in csv.DictReader(f)]


def plot(results: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastadv.io import atomic_write

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for r in results:
        xs = [p["seconds"] for p in r["curve"]]
        axes[0].plot(xs, [100 * p["adv_acc"] for p in r["curve"]], marker="o", label=r["name"])
        axes[1].plot(xs, [100 * p["clean_acc"] for p in r["curve"]], marker="o", label=r["name"])
    for ax, what in zip(axes, ("held-out PGD-10 accuracy (%)", "held-out clean accuracy (%)")):
        ax.set_xlabel("training seconds")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("CIFAR-10 recipes on " + (results[0]["device_name"] if results else "?"), fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def device_name(device) -> str:
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    from benchmarks._common import processor_name

    return processor_name()


def run(device, quick: bool = False, tiny: bool = False, out: Path | None = None, budget: float = BUDGET,
        data_dir: str | None = None, log=print) -> dict:
    """Run the suite; returns the results dict (also written to ``out/results.json`` with the figures)."""
    import fastadv
    from benchmarks import step_cost
    from benchmarks._common import table

    t_start = time.perf_counter()
    out = Path(out or "gpu-results")
    out.mkdir(parents=True, exist_ok=True)
    if data_dir:
        assemble(Path(data_dir))
    device = "cpu" if tiny else device
    data = fastadv.load_dataset("cifar10", data_dir, download=not tiny, device=device)
    results = {"device": str(device), "device_name": device_name(device), "tiny": tiny, "train_size": len(data.y_train),
               "data_note": data.split_note, "data_source": data.source, "runs": []}
    if not tiny:
        log("  step cost (CIFAR setup, quick)")
        cost = step_cost.run(device, quick=True, setups=[s for s in step_cost.SETUPS if "CIFAR" in s[0]], log=log)
        results["step_cost"] = cost
        log(cost["table"])
    plan = recipes(tiny)
    last_cost = None  # seconds the previous run took, training and evaluation
    for name, cfg in plan:
        elapsed = time.perf_counter() - t_start
        if name == "free8-3steps" and last_cost is not None and elapsed + 2.1 * last_cost > budget:
            log(f"  {name}: skipped ({elapsed:.0f} s used, about {2.1 * last_cost:.0f} s needed, budget {budget:.0f} s)")
            results["runs"].append({"name": name, "skipped": True, "reason": "did not fit in the budget"})
            continue
        reset_peak(device)
        t = time.perf_counter()
        result = fastadv.train({**cfg, "device": str(device), "out_dir": str(out / "runs"),
                                "data_dir": data_dir}, data=data)
        last_cost = time.perf_counter() - t
        s = result.summary
        entry = {"name": name, "config": cfg, "train_seconds": s["train_seconds"], "eval_seconds": s["eval_seconds"],
                 "clean_acc": s["clean_acc"], "pgd20_acc": s["robust_acc"], "eval_points": s["eval_points"],
                 "aa_lite": s.get("aa_lite"), "headline": s.get("headline"), "steps": s["steps"],
                 "epochs": s["epochs"], "grad_computations": s["grad_computations"], "trusted": s["trusted"],
                 "cuda_peak_mb": cuda_peak_mb(device), "events": s["events"], "curve": held_out_curve(result.run_dir),
                 "device_name": results["device_name"], "wall_seconds": last_cost}
        target = next((p for p in entry["curve"] if p["adv_acc"] >= 0.45), None)
        entry["seconds_to_45"] = target["seconds"] if target else None
        results["runs"].append(entry)
        aa = f", AA-lite {100 * s['aa_lite']['robust_acc']:.1f}%" if s.get("aa_lite") else ""
        log(f"  {name}: {s['train_seconds']:.0f} s of training, clean {100 * s['clean_acc']:.1f}%, "
            f"PGD-20 {100 * s['robust_acc']:.1f}%{aa}")
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")  # keep what finished
    done = [r for r in results["runs"] if not r.get("skipped")]
    if done:
        results["figure"] = str(plot(done, out / "heldout.png"))

    def pct(v):
        return None if v is None else 100 * v

    rows = [[r["name"], r.get("train_seconds"), r.get("seconds_to_45"), pct(r.get("clean_acc")),
             pct(r.get("pgd20_acc")), pct((r.get("aa_lite") or {}).get("robust_acc")), r.get("cuda_peak_mb"),
             "skipped" if r.get("skipped") else ""] for r in results["runs"]]
    results["table"] = table(["run", "train s", "s to 45% held-out", "clean %", "PGD-20 %", "AA-lite %",
                              "CUDA peak MB", ""], rows) + (
        f"\n{results['device_name']}; final PGD-20 on {done[0]['eval_points'] if done else '?'} test images, "
        f"AA-lite on the first {plan[0][1]['final_aa_points']}; {results['train_size']:,} training images"
        + (f" ({results['data_note']})" if results["data_note"] else ""))
    results["wall_seconds"] = time.perf_counter() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_suite", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sp = sub.add_parser("split", help="write cifar10.npz as three parts for transfer (each under 64 MiB)")
    sp.add_argument("src", type=Path)
    sp.add_argument("out_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("gpu-results"), help="folder for results.json and figures")
    parser.add_argument("--data-dir", default=None, help="folder with cifar10.npz (or its parts from `split`)")
    parser.add_argument("--budget", type=float, default=BUDGET, help="seconds for the whole suite [540]")
    parser.add_argument("--tiny", action="store_true", help="the same code on a CPU with a few hundred images")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.command == "split":
        for p in split(args.src, args.out_dir):
            print(p)
        return 0
    from fastadv.core.perf import resolve_device
    from fastadv.errors import UserError

    try:
        device = resolve_device(args.device)
        result = run(device, tiny=args.tiny, out=args.out, budget=args.budget, data_dir=args.data_dir,
                     log=lambda s: print(s, flush=True))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result["table"])
    print(f"results written to {args.out / 'results.json'} ({result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
