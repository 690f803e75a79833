"""``fastadv train``: train a robust model and write its run directory; ``--resume`` continues one."""
from __future__ import annotations

import argparse
import json
from dataclasses import fields

from fastadv.cli.commands._util import add_config_flags, config_from_args, print_summary

NAME = "train"
HELP = "train a robust model and write a run directory"
ORDER = 10


def configure(parser) -> None:
    from fastadv.presets import help_table

    parser.description = ("Train a model; every config field is a flag. Without --config, the preset for the "
                          "dataset and device sits under the flags (--preset NAME picks another, --preset none "
                          "switches it off). Example: fastadv train --dataset cifar10 --epochs 5")
    parser.epilog = "presets (fastadv/recipes/):\n" + help_table()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON config; flags override it")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an unfinished run from its last checkpoint, with its own config.json "
                             "(only --progress/--no-progress, --device, --data-dir, --download may be given)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    add_config_flags(parser)


def resume_overrides(args) -> dict:
    """The config flags given with --resume; ConfigError (one line) for any that would change the run."""
    from fastadv.config import ConfigError, TrainConfig
    from fastadv.training.checkpoint import RESUME_MAY_CHANGE

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    refused = [f"--{k.replace('_', '-')}" for k in given if k not in RESUME_MAY_CHANGE]
    if args.config:
        refused.insert(0, "--config")
    if refused:
        raise ConfigError(f"--resume continues a run with its own config.json; {', '.join(refused)} would change it "
                          f"(allowed: --progress/--no-progress, --device, --data-dir, --download)")
    return given


def run(args) -> int:
    from fastadv.core.distributed import is_main
    from fastadv.core.perf import resolve_device
    from fastadv.naming import thesis_name
    from fastadv.training import check_config, train
    from fastadv.training.run_dir import resume_config

    if args.resume:
        cfg = resume_config(args.resume, None).replace(**resume_overrides(args))
    else:
        cfg = config_from_args(args, use_presets=True)
    check_config(cfg)
    if args.dry_run:
        print(json.dumps({"name": cfg.name or thesis_name(cfg), "preset": cfg.preset, "config": cfg.to_dict()}, indent=2))
        return 0
    resolve_device(cfg.device)
    result = train(cfg, resume=args.resume)
    if is_main():  # under torchrun, one summary
        print_summary(result.summary, result.run_dir)
    return 0
