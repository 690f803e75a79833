"""``fastadv train``: train a robust model and write its run directory."""
from __future__ import annotations

import json

from fastadv.commands._util import add_config_flags, config_from_args, print_summary

NAME = "train"
HELP = "train a robust model and write a run directory"
ORDER = 10


def configure(parser) -> None:
    parser.description = ("Train a model; every config field is a flag. "
                          "Example: fastadv train --dataset mnist --method fgsm-rs --epochs 10")
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON config; flags override it")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    add_config_flags(parser)


def run(args) -> int:
    from fastadv.config import resolve_eps
    from fastadv.distributed import is_main
    from fastadv.trainer import check_names, resolve_device, run_name, train

    cfg = config_from_args(args)
    check_names(cfg)
    if args.dry_run:
        print(json.dumps({"name": cfg.name or run_name(cfg, resolve_eps(cfg)), "config": cfg.to_dict()}, indent=2))
        return 0
    resolve_device(cfg.device)
    result = train(cfg)
    if is_main():  # under torchrun, one summary
        print_summary(result.summary, result.run_dir)
    return 0
