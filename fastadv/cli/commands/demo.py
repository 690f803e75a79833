"""``fastadv demo``: the README's one-command robust classifier (MNIST, or CIFAR-10 with --dataset cifar10)."""
from __future__ import annotations

import argparse

from fastadv.cli.commands._util import print_summary

# The demos are presets (fastadv/recipes): "mnist" (a robust small CNN in about a minute on 2 CPU cores) and
# "cifar10-cpu" (configs/cifar10-cpu.toml). Without MNIST the MNIST demo runs the same job on sklearn's digits.
DEMOS = {"mnist": {"preset": "mnist"}, "cifar10": {"preset": "cifar10-cpu"}}
FALLBACK_CHANGES = {"dataset": "digits", "epochs": 60, "batch_size": 64, "name": "demo-digits"}

NAME = "demo"
HELP = "train a robust MNIST (or --dataset cifar10) classifier and evaluate it"
ORDER = 90


def configure(parser) -> None:
    parser.description = ("Train a preset recipe and evaluate it: MNIST (about a minute on 2 CPU cores; falls back "
                          "to scikit-learn's bundled digits when MNIST cannot be found or downloaded), or CIFAR-10 "
                          "with the CPU recipe of configs/cifar10-cpu.toml (about 11 minutes of training on 2 cores, then about 15 of evaluation).")
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
    size = f"{len(data.y_train):,} images" + (f"; {data.split_note}" if data.split_note else "")
    print(f"fastadv demo: {cfg.method} training of {cfg.model} on {data.name} ({size}, "
          f"{cfg.epochs:g} epochs, eps={cfg.eps:.4g}), then PGD-{cfg.final_attack_steps} on the test set"
          + (f" and AA-lite on {cfg.final_aa_points} points" if cfg.final_aa_points else ""))
    result = train(cfg, data=data)
    print_summary(result.summary, result.run_dir, label)
    return 0
