"""The CIFAR-10 race on a CPU as a frontier: every recipe at several wall budgets, judged on the weights it keeps.

Recipes, all on the same net, data split and engine (bf16, channels_last where the CPU computes bf16):

- the peers as published: ``free-shafahi`` (Free-8, 3-steps LR 0.1 -> 0.01 -> 0.001 at 50% / 75%, weight
  decay 2e-4, alpha = eps; Shafahi et al. 2019), ``fgsm-rs-wong`` (FGSM from a random start, alpha 10/255,
  triangular LR 0 -> 0.2 -> 0 peaking at 40%, weight decay 5e-4; Wong et al. 2020), ``n-fgsm`` (noise
  U[-2 eps, 2 eps], step eps, no projection, the same LR; de Jorge et al. 2022), ``pgd-2`` (PGD-2, step
  1.25 eps, the same LR);
- the same peers with fastadv's weight averaging and selection (``+avg``: an EMA of the weights, and the
  better of raw and averaged weights at the best validation check), so the gain of each piece shows;
- ``fastadv``: configs/cifar10-cpu.toml, the project's recipe; ``fastadv-free``: its best Free-m recipe.

Each (recipe, budget, seed) run is calibrated to its budget: the recipe's seconds per minibatch are measured
once (a short run of the loop's own minibatch step) and its length in epochs set so that training takes the
budget; the schedules are functions of progress, so each is fitted to the budget. Every run is judged on the
weights it keeps: clean accuracy and PGD-20 (step 2/255, 1 restart) on the first ``FINAL_POINTS`` test
images, AA-lite (PGD-20, APGD-CE, APGD-T with 3 targets; pyautoattack) on the first ``AA_POINTS``.

Time-to-target: the smallest budget at which the median AA-lite over seeds reaches ``TARGET``, interpolated
linearly in AA-lite against log-budget between the two budgets that bracket it (None: not reached within the
largest budget). Ratios: fastadv / the best published peer, fastadv / the best peer with averaging,
fastadv-free / the best published peer.

It resumes: every finished run is appended to the ledger (a JSON file, ``--ledger``, by default
docs/cifar-cpu-frontier.json) at once, and a rerun skips the runs the ledger holds for the same recipe
config, budget and seed, so the frontier may span sessions.
"""
from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

import tomllib

import fastadv
from benchmarks._common import machine, median, table
from fastadv.config import TrainConfig
from fastadv.core.methods import METHODS
from fastadv.data import batches_per_epoch
from fastadv.errors import UserError, first_line
from fastadv.io import write_json
from fastadv.training.loop import Timer, train_minibatch
from fastadv.training.setup import build

NAME = "cifar-cpu"
DESCRIPTION = "CIFAR-10 on a CPU: peers as published, with averaging, and fastadv's recipes at 120/240/480 s"
HEAVY = True  # about 3 hours on 2 cores for one seed of everything; runs only when named with --only

ROOT = Path(__file__).resolve().parents[1]
RECIPE_FILE = ROOT / "configs" / "cifar10-cpu.toml"
FREE_RECIPE_FILE = ROOT / "configs" / "cifar10-cpu-free.toml"
LEDGER = ROOT / "docs" / "cifar-cpu-frontier.json"
TARGET = 0.35  # final AA-lite robust accuracy that counts as "reached"
BUDGETS = (120.0, 240.0, 480.0)  # seconds of training per run
SEEDS = 2  # seeds at the budgets that bracket the target (one elsewhere)
FINAL_POINTS = 2000
AA_POINTS = 1000
CHECKS = 8  # validation checks per run (PGD-10 on 500 validation points; their time is not training time)
EVAL_POINTS = 500

TRIANGLE = "one-cycle:peak=0.4,end_cycle=1,div=1e9"  # linear 0 -> lr_max at 40% -> 0 (Wong's "cyclic")
PEERS = {
    "free-shafahi": {"method": "free", "replays": 8, "lr_schedule": "piecewise:values=1/0.1/0.01,boundaries=0.5/0.75",
                     "lr_max": 0.1, "momentum": 0.9, "weight_decay": 2e-4},
    "fgsm-rs-wong": {"method": "fgsm-rs", "alpha": "10/255", "lr_schedule": TRIANGLE, "lr_max": 0.2,
                     "momentum": 0.9, "weight_decay": 5e-4},
    "n-fgsm": {"method": "n-fgsm", "noise": 2.0, "alpha": "8/255", "lr_schedule": TRIANGLE, "lr_max": 0.2,
               "momentum": 0.9, "weight_decay": 5e-4},
    "pgd-2": {"method": "pgd", "attack_steps": 2, "lr_schedule": TRIANGLE, "lr_max": 0.2, "momentum": 0.9,
              "weight_decay": 5e-4},
}
# the order runs take within a budget: what the ratios need first, so that a stopped frontier has them
PRIORITY = ("fastadv", "n-fgsm", "fgsm-rs-wong", "n-fgsm+avg", "fgsm-rs-wong+avg", "fastadv-free", "free-shafahi",
            "pgd-2", "pgd-2+avg", "free-shafahi+avg")
AVERAGING = {"average": "ema", "ema_decay": 0.999, "keep": "best"}  # what "+avg" adds to a peer
PLAIN = {"average": "none", "keep": "last", "label_smoothing": 0.0, "eps_warmup": 0.0, "time_budget": None}
# What every recipe shares with fastadv's: data, net, eps, batch, optimizer family, engine settings.
SHARED = ("dataset", "model", "width", "depth", "eps", "batch_size", "optimizer", "precision", "channels_last",
          "val_size")


def read_recipe(path: Path) -> dict:
    with open(path, "rb") as f:
        recipe = tomllib.load(f)
    recipe.pop("time_budget", None)  # the frontier sets each run's length itself
    return recipe


def recipes() -> dict[str, dict]:
    """Name -> config: the peers (as published and with averaging) take the shared fields from fastadv's recipe."""
    ours = read_recipe(RECIPE_FILE)
    base = {k: ours[k] for k in SHARED if k in ours}
    out = {}
    for name, peer in PEERS.items():
        out[name] = {**base, "nesterov": False, "momentum_schedule": "constant", **PLAIN, **peer}
        out[f"{name}+avg"] = {**out[name], **AVERAGING}
    out["fastadv"] = ours
    if FREE_RECIPE_FILE.is_file():
        out["fastadv-free"] = {**base, **read_recipe(FREE_RECIPE_FILE)}
    order = sorted(out, key=lambda n: PRIORITY.index(n) if n in PRIORITY else len(PRIORITY))
    return {name: {k: v for k, v in out[name].items() if v is not None} for name in order}


def fingerprint(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


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


def read_ledger(path: Path | None) -> dict:
    if path is None or not Path(path).is_file():
        return {"calibration": {}, "runs": []}
    try:
        ledger = json.loads(Path(path).read_text())
        assert isinstance(ledger.get("runs"), list) and isinstance(ledger.get("calibration"), dict)
        return ledger
    except (OSError, ValueError, AssertionError) as exc:
        raise UserError(f"--ledger {path}: not a cifar-cpu frontier ledger ({first_line(exc) or 'bad fields'})") from None


def plan(names: list[str], budgets: tuple[float, ...], seeds: int) -> list[tuple[int, float, str]]:
    """(seed, budget, recipe) in the order they run: seed 0 at every budget first (the middle budget first),
    recipes alternating within a budget so that load from other processes hits all of them alike."""
    order = sorted(budgets, key=lambda b: abs(math.log(b) - math.log(budgets[len(budgets) // 2])))
    return [(seed, budget, name) for seed in range(seeds) for budget in order for name in names]


def run(device, quick: bool = False, seeds: int | None = None, budget: float | None = None, log=print,
        budgets: tuple[float, ...] | None = None, target: float = TARGET, final_points: int = FINAL_POINTS,
        aa_points: int = AA_POINTS, train_limit: int = 0, only: list[str] | None = None,
        eval_points: int = EVAL_POINTS, overrides: dict | None = None, calibration_minibatches: int = 12,
        ledger: Path | None = LEDGER, data=None, max_runs: int | None = None) -> dict:
    """Calibrate, then train every (recipe, budget, seed) the ledger lacks; see the module docstring.

    ``budget`` (``--budget``) runs that one budget; ``quick``: 120 s, one seed, 1,000 / 500 points. ``overrides``
    replaces fields in every recipe alike (the tests' smaller net). ``max_runs`` stops after that many new runs.
    """
    budgets = (budget,) if budget else budgets or ((120.0,) if quick else BUDGETS)
    seeds = seeds or (1 if quick else SEEDS)
    if quick:
        final_points, aa_points = 1000, 500
    if data is None:
        data = fastadv.load_dataset(read_recipe(RECIPE_FILE)["dataset"], download=False, device=device)
    data = data.limit_train(train_limit)
    chosen = {k: {**v, **(overrides or {})} for k, v in recipes().items() if only is None or k in only}
    book = read_ledger(ledger)
    settings = {"final_points": final_points, "aa_points": aa_points, "eval_points": eval_points,
                "train_size": len(data.y_train)}
    done = {(r["fingerprint"], r["budget"], r["seed"]) for r in book["runs"] if r.get("settings") == settings}
    for name, cfg in chosen.items():  # every recipe's speed first, back to back: the same load for all
        key = fingerprint(cfg)
        if key not in book["calibration"]:
            book["calibration"][key] = {"recipe": name, "seconds_per_minibatch": calibrate(
                cfg, data, device, calibration_minibatches), "machine": machine(device)["processor"]}
        log(f"  {name}: {1e3 * book['calibration'][key]['seconds_per_minibatch']:.0f} ms per minibatch")
    with tempfile.TemporaryDirectory() as tmp:
        new = 0
        for seed, budget_s, name in plan(list(chosen), budgets, seeds):
            cfg, key = chosen[name], fingerprint(chosen[name])
            if (key, budget_s, seed) in done or (max_runs is not None and new >= max_runs):
                continue
            record = train_one(name, cfg, budget_s, seed, book["calibration"][key]["seconds_per_minibatch"], data,
                               device, tmp, settings)
            book["runs"].append({**record, "fingerprint": key, "settings": settings})
            new += 1
            if ledger is not None:
                write_json(Path(ledger), book)
            log(f"  {name} {budget_s:.0f} s seed {seed}: {record['train_seconds']:.0f} s of training, clean "
                f"{100 * record['clean_acc']:.1f}%, PGD-20 {100 * record['pgd20_acc']:.1f}%, AA-lite "
                f"{100 * record['aa_lite_acc']:.1f}% (kept {record['kept']['which']} at step {record['kept']['step']})")
    result = summarize(book, chosen, settings, target=target, data=data)
    if ledger is not None and result["summary"]:
        plot(result, Path(ledger).with_suffix(".png"))
    return result


def train_one(name: str, cfg: dict, budget: float, seed: int, seconds_per_mb: float, data, device, out_dir: str,
              settings: dict) -> dict:
    """One frontier run: ``budget`` seconds of training at the calibrated speed, judged on the kept weights."""
    per_epoch = batches_per_epoch(len(data.y_train), cfg["batch_size"])
    steps_per_mb = METHODS[cfg["method"]].steps_per_minibatch(cfg.get("replays", 8), cfg.get("attack_steps", 7))
    minibatches = max(1, round(budget / seconds_per_mb))
    run_cfg = {**cfg, "seed": seed, "device": str(device), "epochs": minibatches / per_epoch, "iterations": 0,
               "progress": False, "out_dir": out_dir, "name": f"{name}-{budget:.0f}-{seed}",
               "final_limit": settings["final_points"], "final_aa_points": settings["aa_points"],
               "eval_size": settings["eval_points"], "eval_attack_steps": 10,
               "eval_every": max(1, minibatches // CHECKS) * steps_per_mb}
    s = fastadv.train(run_cfg).summary if data is None else fastadv.train(run_cfg, data=data).summary
    return {"recipe": name, "budget": budget, "seed": seed, "epochs": run_cfg["epochs"],
            "train_seconds": s["train_seconds"], "check_seconds": s.get("check_seconds"),
            "eval_seconds": s["eval_seconds"], "clean_acc": s["clean_acc"], "pgd20_acc": s["robust_acc"],
            "aa_lite_acc": s["aa_lite"]["robust_acc"] if s.get("aa_lite") else None, "trusted": s["trusted"],
            "failed_checks": [c["name"] for c in s.get("sanity", []) if c["passed"] is False],
            "status": s["status"], "kept": s["kept"], "grad_computations": s["grad_computations"],
            "events": s["events"], "config": {k: v for k, v in run_cfg.items() if k != "out_dir"}}


def time_to_target(points: dict[float, float], target: float) -> float | None:
    """Smallest budget at which AA-lite reaches ``target``: ``points`` budget -> AA-lite; linear in AA-lite
    against log-budget between the bracketing budgets; None when no budget reaches it."""
    budgets = sorted(points)
    for i, b in enumerate(budgets):
        if points[b] >= target:
            if i == 0:
                return b
            a = budgets[i - 1]
            frac = (target - points[a]) / (points[b] - points[a])
            return math.exp(math.log(a) + frac * (math.log(b) - math.log(a)))
    return None


def summarize(book: dict, chosen: dict, settings: dict, *, target: float, data) -> dict:
    by = {}
    for r in book["runs"]:
        name = r["recipe"]
        if name in chosen and r["fingerprint"] == fingerprint(chosen[name]) and r.get("settings") == settings:
            by.setdefault(name, {}).setdefault(r["budget"], []).append(r)
    summary = {}
    for name, budgets in by.items():
        aa = {b: median([r["aa_lite_acc"] for r in rs]) for b, rs in budgets.items()}
        summary[name] = {"time_to_target": time_to_target(aa, target), "budgets": {
            str(int(b)): {"seeds": len(rs), "aa_lite": aa[b], "pgd20": median([r["pgd20_acc"] for r in rs]),
                          "clean": median([r["clean_acc"] for r in rs]),
                          "train_seconds": median([r["train_seconds"] for r in rs]),
                          "kept": sorted({r["kept"]["which"] for r in rs})}
            for b, rs in sorted(budgets.items())}}

    def best(names):
        got = [(summary[n]["time_to_target"], n) for n in names if n in summary and summary[n]["time_to_target"]]
        return min(got) if got else (None, None)

    published, averaged = best(PEERS), best([f"{n}+avg" for n in PEERS])
    ratios = {}
    for ours, (theirs, peer), label in (("fastadv", published, "fastadv / best published peer"),
                                        ("fastadv", averaged, "fastadv / best peer with averaging"),
                                        ("fastadv-free", published, "fastadv-free / best published peer")):
        mine = summary.get(ours, {}).get("time_to_target")
        ratios[label] = {"ratio": mine / theirs if mine and theirs else None, "peer": peer}
    rows = []
    for name, s in summary.items():
        for b, f in s["budgets"].items():
            rows.append([name, b, f["seeds"], 100 * f["clean"], 100 * f["pgd20"], 100 * f["aa_lite"],
                         f["train_seconds"], "/".join(f["kept"]), s["time_to_target"]])
    text = table(["recipe", "budget s", "seeds", "clean %", "PGD-20 %", "AA-lite %", "train s", "kept",
                  f"s to {target:.0%} AA-lite"], rows)
    text += "".join(f"\nratio {k}: " + (f"{v['ratio']:.2f} ({v['peer']})" if v["ratio"] else "n/a (not reached)")
                    for k, v in ratios.items())
    text += (f"\nmedians over seeds; final: PGD-20 (step 2/255, 1 restart) on the first {settings['final_points']} "
             f"test images, AA-lite (PGD-20 + APGD-CE + APGD-T, 3 targets) on the first {settings['aa_points']}; "
             f"data: {data.name}, {settings['train_size']:,} training images"
             + (f" ({data.split_note})" if data.split_note else ""))
    return {"name": NAME, "target": target, "settings": settings, "data_note": data.split_note, "recipes": chosen,
            "summary": summary, "ratios": ratios, "runs": len(book["runs"]), "table": text}


def plot(result: dict, path: Path) -> None:
    """AA-lite against the training budget (each run's length was calibrated to it), one line per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, s in result["summary"].items():
        pts = sorted((float(b), 100 * f["aa_lite"]) for b, f in s["budgets"].items())
        style = "--" if name.endswith("+avg") else "-"
        ax.plot(*zip(*pts), style, marker="o", label=name, lw=2 if name.startswith("fastadv") else 1)
    ax.axhline(100 * result["target"], color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("training budget, seconds (2 CPU cores; length calibrated to it)")
    ax.set_ylabel(f"AA-lite % ({result['settings']['aa_points']} test points)")
    ax.set_title("CIFAR-10 on a CPU: robustness against training time")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
