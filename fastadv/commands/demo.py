"""``fastadv demo``: the README's one-command robust MNIST classifier."""
from __future__ import annotations

from fastadv.commands._util import print_summary

NAME = "demo"
HELP = "train a robust MNIST classifier and evaluate it (PGD-20, eps=0.3)"
ORDER = 90


def configure(parser) -> None:
    parser.description = ("The main job on the default data; falls back to scikit-learn's "
                          "bundled digits when MNIST cannot be found or downloaded.")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", default="runs")
    parser.add_argument("--device", default="auto")


def run(args) -> int:
    from fastadv.config import TrainConfig
    from fastadv.data import DataError, load_dataset
    from fastadv.demo import DEMO_CONFIG, FALLBACK_CHANGES
    from fastadv.trainer import resolve_device, train

    device = resolve_device(args.device)
    cfg = TrainConfig.from_dict({**DEMO_CONFIG, "out_dir": args.out_dir, "device": args.device,
                                 "data_dir": args.data_dir})
    label = ""
    try:
        data = load_dataset("mnist", args.data_dir, download=True, device=device)
    except DataError as exc:
        print(f"fastadv demo: MNIST unavailable ({exc}); running on scikit-learn's bundled digits instead")
        cfg = cfg.replace(**FALLBACK_CHANGES)
        data = load_dataset("digits", device=device)
        label = "[digits fallback, not MNIST] "
    print(f"fastadv demo: {cfg.method} training of {cfg.model} on {data.name} ({len(data.y_train)} images, "
          f"{cfg.epochs:g} epochs, eps={cfg.eps}), then PGD-{cfg.final_attack_steps} on the test set")
    result = train(cfg, data=data)
    print_summary(result.summary, result.run_dir, label)
    return 0
