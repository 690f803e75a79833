"""Peer recipes side by side on CIFAR-10 on a CPU: the same net, data and wall budget for each.

Five recipes train the same net on the same in-memory CIFAR-10 split in this process, one after
the other and alternating over seeds (recipe a seed 0, b seed 0, ..., a seed 1, ...), so that
load from other processes hits all of them alike:

- (a) ``free-shafahi``: Free-8 with Shafahi et al.'s (2019) settings: the 3-steps LR 0.1 -> 0.01
  -> 0.001 (at 50% and 75% of training), momentum 0.9, weight decay 2e-4, alpha = eps;
- (b) ``fgsm-rs-wong``: Wong et al.'s (2020) FGSM with a random start: triangular LR 0 -> 0.2 -> 0
  (peak at 40%), alpha = 10/255, weight decay 5e-4;
- (c) ``n-fgsm``: de Jorge et al.'s (2022) N-FGSM: noise U[-2 eps, 2 eps], step eps, no projection
  to the eps-ball, the same triangular LR to 0.2, weight decay 5e-4;
- (d) ``pgd-2``: PGD-2 training (step 1.25 eps, random start), the multi-step reference, same LR;
- (e) ``fastadv``: configs/cifar10-cpu.toml, the project's CPU recipe.

Each recipe's length in epochs is set so that its training takes the wall budget: a short
calibration run of each measures its seconds per minibatch first. During training the trainer's
held-out check (PGD-10, step eps/4, 500 fixed test points; its time excluded from the clock)
runs about 10 times; the figure of merit is the training time at the first check at or above
``TARGET``. At the end of each run: clean accuracy and PGD-20 (step eps/4 = 2/255, 1 restart) on
the first ``FINAL_POINTS`` test images and AA-lite (the per-point worst case of that PGD-20,
APGD-CE and APGD-T with 3 target classes, pyautoattack) on the first ``AA_POINTS``. The ratio is
fastadv's median time to the target over the best peer's median.
"""
from __future__ import annotations

import csv
import json
import math
import tempfile
from pathlib import Path

import tomllib

import fastadv
from benchmarks._common import PeakMemory, median, spread, table
from fastadv.config import TrainConfig
from fastadv.core.methods import METHODS
from fastadv.data import batches_per_epoch
from fastadv.errors import UserError, first_line
from fastadv.training.loop import Timer, train_minibatch
from fastadv.training.setup import build

NAME = "cifar-cpu"
DESCRIPTION = "CIFAR-10 on a CPU: five recipes (Free-8, FGSM-RS, N-FGSM, PGD-2, fastadv) at one wall budget"
HEAVY = True  # 55 minutes a seed (measured, 2 quiet cores), so about 110 in full; runs only when named with --only

ROOT = Path(__file__).resolve().parents[1]
RECIPE_FILE = ROOT / "configs" / "cifar10-cpu.toml"
TARGET = 0.35  # held-out PGD-10 robust accuracy (500 points) that counts as "reached"
BUDGET = 300.0  # seconds of training per run (plus about 4.5 min of evaluation); --quick: QUICK_BUDGET
QUICK_BUDGET = 120.0
SEEDS = 2  # seeds of a full run (--quick: 1)
FINAL_POINTS = 1000
AA_POINTS = 500
CHECKS = 10  # held-out checks per run

TRIANGLE = "one-cycle:peak=0.4,end_cycle=1,div=1e9"  # linear 0 -> lr_max at 40% -> 0 (Wong's "cyclic")
PEERS = {
    "free-shafahi": {"method": "free", "replays": 8, "lr_schedule": "piecewise:values=1/0.1/0.01,boundaries=0.5/0.75",
                     "lr_max": 0.1, "momentum": 0.9, "weight_decay": 2e-4, "eps_warmup": 0.0},
    "fgsm-rs-wong": {"method": "fgsm-rs", "alpha": "10/255", "lr_schedule": TRIANGLE, "lr_max": 0.2,
                     "momentum": 0.9, "weight_decay": 5e-4, "eps_warmup": 0.0},
    "n-fgsm": {"method": "n-fgsm", "noise": 2.0, "alpha": "8/255", "lr_schedule": TRIANGLE, "lr_max": 0.2,
               "momentum": 0.9, "weight_decay": 5e-4, "eps_warmup": 0.0},
    "pgd-2": {"method": "pgd", "attack_steps": 2, "alpha": None, "lr_schedule": TRIANGLE, "lr_max": 0.2,
              "momentum": 0.9, "weight_decay": 5e-4, "eps_warmup": 0.0},
}
# What every recipe shares with fastadv's: data, net, eps, batch, optimizer family, engine settings.
SHARED = ("dataset", "model", "width", "depth", "eps", "batch_size", "optimizer", "precision", "channels_last")


def fastadv_recipe() -> dict:
    with open(RECIPE_FILE, "rb") as f:
        return tomllib.load(f)


def recipes() -> dict[str, dict]:
    """Name -> config for all five; the peers take the shared fields from fastadv's recipe."""
    ours = fastadv_recipe()
    base = {k: ours[k] for k in SHARED if k in ours}
    out = {name: {**base, "nesterov": False, "momentum_schedule": "constant", **peer} for name, peer in PEERS.items()}
    out["fastadv"] = ours
    return {name: {k: v for k, v in cfg.items() if v is not None} for name, cfg in out.items()}


def run_config(cfg: dict, *, seed: int, device, out_dir: str, name: str, epochs: float, final_points: int,
               aa_points: int, eval_points: int = 500) -> dict:
    """A recipe as one benchmark run: its length in epochs, the shared evaluation settings."""
    return {**cfg, "seed": seed, "device": str(device), "epochs": epochs, "iterations": 0, "progress": False,
            "out_dir": out_dir, "name": name, "final_limit": final_points, "final_aa_points": aa_points,
            "eval_size": eval_points, "eval_attack_steps": 10}


def calibrate(cfg: dict, data, device, minibatches: int = 12) -> float:
    """Seconds of training per minibatch for ``cfg``: the loop's own minibatch step ``minibatches`` times on a
    fresh ``build`` (first steps included), without the run directory and final evaluation of a real run."""
    per_epoch = batches_per_epoch(len(data.y_train), cfg["batch_size"])
    probe = {**cfg, "seed": 0, "device": str(device), "epochs": minibatches / per_epoch, "iterations": 0,
             "progress": False, "eps_warmup": 0.0}
    s = build(TrainConfig.from_dict(probe), data)
    s.model.train()
    timer = Timer(s.device)
    for _ in range(minibatches):
        train_minibatch(s)
    return timer.lap() / minibatches


def curve(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{"seconds": float(r["seconds"]), "epoch": float(r["epoch"]), "adv_acc": float(r["adv_acc"]),
                 "clean_acc": float(r["clean_acc"]), "passes": int(r["grad_computations"])} for r in csv.DictReader(f)]


def first_hit(points: list[dict], target: float) -> dict | None:
    return next((p for p in points if p["adv_acc"] >= target), None)


def load_earlier(path) -> dict:
    """The cifar-cpu result in a results JSON file (``python -m benchmarks --out``), for ``run(extend=...)``."""
    try:
        earlier = json.loads(Path(path).read_text())["benchmarks"][NAME]
        missing = [k for k in ("runs", "summary", "recipes", "budget_seconds", "target", "final_points", "aa_points",
                               "train_size") if k not in earlier]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = f"no field {exc}" if isinstance(exc, KeyError) else first_line(exc)
        raise UserError(f"--extend {path}: no cifar-cpu result to extend there ({why})") from None
    if missing:
        raise UserError(f"--extend {path}: its cifar-cpu result lacks {', '.join(missing)}")
    return earlier


def run(device, quick: bool = False, seeds: int | None = None, budget: float | None = None, log=print,
        target: float = TARGET, final_points: int | None = None, aa_points: int | None = None,
        train_limit: int = 0, only: list[str] | None = None, eval_points: int = 500, overrides: dict | None = None,
        calibration_minibatches: int = 12, extend: dict | None = None, data=None) -> dict:
    """Calibrate, then train every recipe for ``budget`` seconds per seed, alternating; see the module docstring.

    ``overrides`` replaces fields in every recipe alike (the tests' smaller net and batch). ``extend``, an
    earlier result of this benchmark (``load_earlier``), adds ``seeds`` (default 1) more seeds to it: its runs are kept and
    its recipes, calibration (epochs per recipe), budget and evaluation settings are reused, so the new runs
    are the same length as the old; a recipe that changed since is an error. ``data``, a loaded ``Dataset``
    of the recipe's dataset, saves loading it (default: loaded here, ``train_limit`` applies either way)."""
    budget = budget or (QUICK_BUDGET if quick else BUDGET)
    seeds = seeds or (1 if quick or extend is not None else SEEDS)  # extend: one more seed unless told
    final_points = final_points if final_points is not None else (1000 if quick else FINAL_POINTS)
    aa_points = aa_points if aa_points is not None else (500 if quick else AA_POINTS)
    if data is None:
        data = fastadv.load_dataset(fastadv_recipe()["dataset"], download=False, device=device)
    data = data.limit_train(train_limit)
    chosen = {k: {**v, **(overrides or {})} for k, v in recipes().items() if only is None or k in only}
    per_epoch = {name: batches_per_epoch(len(data.y_train), cfg["batch_size"]) for name, cfg in chosen.items()}
    runs: dict[str, list[dict]] = {name: [] for name in chosen}
    first_seed = 0
    if extend is not None:
        if json.loads(json.dumps(chosen)) != extend["recipes"] or extend["train_size"] != len(data.y_train):
            raise UserError("--extend: the recipes or the training split changed since that result; run afresh")
        budget, target = extend["budget_seconds"], extend["target"]
        final_points, aa_points = extend["final_points"], extend["aa_points"]
        eval_points = next(iter(extend["runs"].values()))[0]["config"]["eval_size"]
        runs = {name: list(extend["runs"][name]) for name in chosen}
        first_seed = 1 + max(r["seed"] for rs in runs.values() for r in rs)
    with tempfile.TemporaryDirectory() as tmp:
        if extend is None:
            seconds_per_mb = {name: calibrate(cfg, data, device, calibration_minibatches)
                              for name, cfg in chosen.items()}
            epochs = {name: budget / (seconds_per_mb[name] * per_epoch[name]) for name in chosen}
        else:
            seconds_per_mb = {name: extend["summary"][name]["ms_per_minibatch"] / 1e3 for name in chosen}
            epochs = {name: extend["summary"][name]["epochs"] for name in chosen}
        for name in chosen:
            log(f"  {name}: {seconds_per_mb[name] * 1e3:.0f} ms per minibatch -> {epochs[name]:.2f} epochs "
                f"in {budget:.0f} s" + (" (the earlier result's calibration)" if extend is not None else ""))
        for seed in range(first_seed, first_seed + seeds):
            for name, cfg in chosen.items():
                steps_per_mb = METHODS[cfg["method"]].steps_per_minibatch(
                    cfg.get("replays", 8), cfg.get("attack_steps", 7))
                minibatches = max(1, round(epochs[name] * per_epoch[name]))
                run_cfg = {**run_config(cfg, seed=seed, device=device, out_dir=tmp, name=f"{name}-{seed}",
                                        epochs=epochs[name], final_points=final_points, aa_points=aa_points,
                                        eval_points=eval_points),
                           "eval_every": max(1, minibatches // CHECKS) * steps_per_mb}
                with PeakMemory(device) as mem:
                    result = fastadv.train(run_cfg, data=data)
                s = result.summary
                points = curve(result.run_dir)
                hit = first_hit(points, target)
                runs[name].append({
                    "seed": seed, "epochs": epochs[name], "train_seconds": s["train_seconds"],
                    "seconds_to_target": hit["seconds"] if hit else None,
                    "passes_to_target": hit["passes"] if hit else None,
                    "clean_acc": s["clean_acc"], "pgd20_acc": s["robust_acc"],
                    "aa_lite_acc": s["aa_lite"]["robust_acc"] if s.get("aa_lite") else None,
                    "grad_computations": s["grad_computations"], "compute_epochs": s["compute_epochs"],
                    "best_heldout_adv_acc": max(p["adv_acc"] for p in points), "curve": points,
                    "events": s["events"], "memory": mem.to_dict(),
                    "config": {k: v for k, v in run_cfg.items() if k != "out_dir"}})  # a temporary folder, gone
                r = runs[name][-1]
                when = "never" if hit is None else f"{hit['seconds']:.0f} s"
                aa = "-" if r["aa_lite_acc"] is None else f"{100 * r['aa_lite_acc']:.1f}%"
                log(f"  {name} seed {seed}: {target:.0%} held-out at {when}; final clean {100 * r['clean_acc']:.1f}%, "
                    f"PGD-20 {100 * r['pgd20_acc']:.1f}%, AA-lite {aa} ({s['train_seconds']:.0f} s of training)")
    out = summarize(runs, chosen, budget=budget, seeds=first_seed + seeds, target=target, final_points=final_points,
                    aa_points=aa_points, seconds_per_mb=seconds_per_mb, data=data)
    if extend is not None:  # where and when the seeds it kept were run
        out["earlier"] = extend.get("earlier", []) + [{k: extend.get(k) for k in ("seeds", "finished",
                                                                                "wall_seconds", "machine")}]
    return out


def summarize(runs: dict, chosen: dict, *, budget, seeds, target, final_points, aa_points, seconds_per_mb,
              data) -> dict:
    def med(values):
        values = [v for v in values if v is not None]
        return median(values) if values else None

    summary = {}
    for name, rs in runs.items():
        hits = [r["seconds_to_target"] for r in rs]
        reached = [h for h in hits if h is not None]
        ok = len(reached) * 2 > len(rs)  # a median over seeds needs most seeds to have reached the target
        summary[name] = {
            "reached": f"{len(reached)}/{len(rs)}",
            "median_seconds_to_target": median(sorted(h if h is not None else math.inf for h in hits)) if ok else None,
            "seconds_to_target_range": list(spread(reached)) if reached else None,
            "median_passes_to_target": med([r["passes_to_target"] for r in rs]) if ok else None,
            "median_clean_acc": med([r["clean_acc"] for r in rs]),
            "median_pgd20_acc": med([r["pgd20_acc"] for r in rs]),
            "median_aa_lite_acc": med([r["aa_lite_acc"] for r in rs]),
            "pgd20_range": list(spread([r["pgd20_acc"] for r in rs])),
            "median_train_seconds": med([r["train_seconds"] for r in rs]),
            "median_grad_computations": med([r["grad_computations"] for r in rs]),
            "epochs": rs[0]["epochs"] if rs else None,
            "ms_per_minibatch": 1e3 * seconds_per_mb[name],
        }
    peers = {n: s for n, s in summary.items() if n != "fastadv" and s["median_seconds_to_target"] is not None}
    best_peer = min(peers, key=lambda n: peers[n]["median_seconds_to_target"]) if peers else None
    ours = summary.get("fastadv", {}).get("median_seconds_to_target")
    ratio = ours / peers[best_peer]["median_seconds_to_target"] if ours is not None and best_peer else None

    def pct(v):
        return None if v is None else 100 * v

    rows = [[name, s["reached"], s["median_seconds_to_target"], s["median_passes_to_target"], s["epochs"],
             s["median_train_seconds"], pct(s["median_clean_acc"]), pct(s["median_pgd20_acc"]),
             pct(s["median_aa_lite_acc"]), s["median_grad_computations"]] for name, s in summary.items()]
    text = table(["recipe", "reached", f"s to {target:.0%}", "fwd-bwd to target", "epochs", "train s", "clean %",
                  "PGD-20 %", "AA-lite %", "fwd-bwd passes"], rows)
    text += (f"\nratio fastadv / best peer ({best_peer}) in median seconds to {target:.0%} held-out PGD-10: "
             + (f"{ratio:.2f}" if ratio is not None else "n/a (a recipe did not reach the target in most seeds)")
             + f"\nbudget {budget:.0f} s of training per run, {seeds} seed(s), medians over seeds; held-out check: "
               f"PGD-10 (step eps/4) on 500 fixed test points, time excluded; final: PGD-20 (step 2/255, 1 restart) "
               f"on the first {final_points} test images, AA-lite (PGD-20 + APGD-CE + APGD-T, 3 targets) on the "
               f"first {aa_points}; data: {data.name}, {len(data.y_train):,} training images"
             + (f" ({data.split_note})" if data.split_note else ""))
    return {"name": NAME, "target": target, "budget_seconds": budget, "seeds": seeds, "final_points": final_points,
            "aa_points": aa_points, "train_size": len(data.y_train), "data_note": data.split_note,
            "recipes": chosen, "ratio": ratio, "best_peer": best_peer, "summary": summary,
            "runs": {n: [{k: v for k, v in r.items()} for r in rs] for n, rs in runs.items()}, "table": text}
