"""``fastadv demo``: the README's one-command robust classifier (MNIST, or CIFAR-10 with --dataset cifar10)."""
from __future__ import annotations

import argparse

from fastadv.cli.commands._util import print_summary

# The demos are presets (fastadv/recipes) with a time budget: "mnist" (a robust small CNN in a minute of
# training) and "cifar10-cpu" (configs/cifar10-cpu.toml, ten minutes). The CIFAR demo's final evaluation is
# sized so that the whole demo takes about 15 minutes on 2 cores with AMX: PGD-20 on the first 2,000 test
# images (--final-limit 0 on `fastadv eval` or `fastadv train` gives all 10,000), AA-lite on 1,000.
# Without MNIST the MNIST demo runs the same job on sklearn's digits.
DEMOS = {"mnist": {"preset": "mnist"}, "cifar10": {"preset": "cifar10-cpu", "final_limit": 2000}}
# Seconds of evaluation per test point after training, measured on 2 cores with AMX (the demo's estimate of
# its whole duration; other CPUs scale it by their measured training speed): PGD-20 + AA-lite + sanity checks.
EVAL_SECONDS = {"mnist": 20.0, "cifar10": 300.0}
FALLBACK_CHANGES = {"dataset": "digits", "time_budget": None, "epochs": 60, "batch_size": 64, "name": "demo-digits"}

NAME = "demo"
HELP = "train a robust MNIST (or --dataset cifar10) classifier and evaluate it"
ORDER = 90


def configure(parser) -> None:
    parser.description = ("Train a preset recipe and evaluate it: MNIST (about a minute on 2 CPU cores; falls back "
                          "to scikit-learn's bundled digits when MNIST cannot be found or downloaded), or CIFAR-10 "
                          "with the CPU recipe of configs/cifar10-cpu.toml (10 minutes of training on any machine, then about 5 "
                          "of evaluation on 2 cores with AMX).")
    parser.add_argument("--dataset", choices=["mnist", "cifar10"], default="mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", default="runs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="tqdm progress bar [default: on]")


def run(args) -> int:
    from fastadv.config import TrainConfig
    from fastadv.core.perf import resolve_device
    from fastadv.data import DataError, load_dataset
    from fastadv.training import train

    device = resolve_device(args.device)
    cfg = TrainConfig.from_dict({**DEMOS[args.dataset], "name": f"demo-{args.dataset}", "out_dir": args.out_dir, "device": args.device,
                                 "data_dir": args.data_dir, "progress": args.progress})
    label = ""
    try:
        data = load_dataset(args.dataset, args.data_dir, download=True, device=device)
    except DataError as exc:
        if args.dataset != "mnist":
            raise
        print(f"fastadv demo: MNIST unavailable ({exc}); running on scikit-learn's bundled digits instead")
        cfg = cfg.replace(**FALLBACK_CHANGES)
        data = load_dataset("digits", device=device)
        label = "[digits fallback, not MNIST] "
    print(announce(cfg, data, device, args.dataset))
    result = train(cfg, data=data)
    print_summary(result.summary, result.run_dir, label)
    return 0


def announce(cfg, data, device, demo: str) -> str:
    """The demo's first line: what it trains, for how long, on which bf16 path, and its whole duration."""
    from fastadv.core.precision import cpu_bf16_path

    size = f"{len(data.y_train):,} images" + (f"; {data.split_note}" if data.split_note else "")
    length = (f"{cfg.time_budget / 60:g} min of training" if cfg.time_budget else f"{cfg.epochs:g} epochs")
    path = f"bf16 path: {cpu_bf16_path()}" if device.type == "cpu" else f"device {device}"
    points = cfg.final_limit or len(data.y_test)
    whole = (f"; about {(cfg.time_budget + EVAL_SECONDS[demo]) / 60:.0f} min in all on a 2-core CPU with AMX, longer "
             f"without" if cfg.time_budget and device.type == "cpu" else "")
    return (f"fastadv demo: {cfg.method} training of {cfg.model} on {data.name} ({size}, eps={cfg.eps:.4g}), "
            f"{length} ({path}), then PGD-{cfg.final_attack_steps} on {points:,} test images"
            + (f" and AA-lite on {cfg.final_aa_points:,}" if cfg.final_aa_points else "") + whole)
