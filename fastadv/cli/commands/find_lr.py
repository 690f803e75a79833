"""``fastadv find-lr``: the LR range test of a training config (thesis section 4.2.1)."""
from __future__ import annotations

import json

from fastadv.cli.commands._util import (
    add_config_flags,
    config_from_args,
    number_flag,
    table,
)

NAME = "find-lr"
HELP = "LR range test under a training method: suggests lr_max, plots loss vs LR"
ORDER = 40


def add_finder_flags(parser) -> None:
    """Flags shared by find-lr and find-wd (and their defaults)."""
    group = parser.add_argument_group("range test")
    group.add_argument("--start-lr", default="1e-5", help="first LR of the exponential sweep [default: 1e-5]")
    group.add_argument("--end-lr", default="10", help="last LR of the sweep [default: 10]")
    group.add_argument("--num-steps", type=int, default=100, help="minibatches (one LR each) [default: 100]")
    group.add_argument("--beta", default="0.9", help="EMA factor of the loss smoothing [default: 0.9]")
    group.add_argument("--diverge", default="4", help="stop when the smoothed loss exceeds this times its "
                                                     "minimum [default: 4]")
    group.add_argument("--plot", metavar="PNG", help="draw loss vs LR with the suggestions marked")
    group.add_argument("--json", action="store_true", help="print JSON (with the curves) instead of a table")


def finder_args(args) -> dict:
    from fastadv.config import ConfigError

    out = {name: number_flag(name.replace("_", "-"), getattr(args, name))
           for name in ("start_lr", "end_lr", "beta", "diverge")}
    if args.num_steps < 2:
        raise ConfigError(f"--num-steps must be >= 2, got {args.num_steps}")
    return {**out, "num_steps": args.num_steps}


def configure(parser) -> None:
    parser.description = ("LR range test: train from a fresh model while the LR grows exponentially (one LR per "
                          "minibatch) under the config's method, so adversarial methods record their adversarial "
                          "loss; stop when the smoothed loss passes 4x its minimum. Suggests lr_max = the LR at the "
                          "smoothed minimum / 10 (the thesis' rule) and the steepest-descent LR. Takes every train "
                          "flag. Example: fastadv find-lr --dataset mnist --method fgsm-rs --eps 0.1 --plot lr.png")
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON config; flags override it")
    add_finder_flags(parser)
    add_config_flags(parser)


def report(result) -> list[tuple[str, str]]:
    s = result.settings
    return [("method", f"{s['method']} (eps={s['eps']:.4g}) on {s['dataset']} / {s['model']}, {s['optimizer']}, "
                       f"weight decay {s['weight_decay']:g}"),
            ("sweep", f"{s['start_lr']:g} -> {s['end_lr']:g} over {s['num_steps']} minibatches; "
                      f"{len(result.lrs)} run ({result.stop_reason})"),
            ("smoothed-loss minimum", f"{min(result.smoothed):.4f} at lr {result.min_lr:.3g}"),
            ("suggested lr_max", f"{result.suggestion:.3g}  (minimum / 10, the thesis' rule)"),
            ("steepest descent", f"{result.steepest_lr:.3g}"),
            ("time", f"{result.seconds:.1f} s")]


def run(args) -> int:
    from fastadv.training.finder import range_test_for_config

    cfg = config_from_args(args)
    result = range_test_for_config(cfg, **finder_args(args))
    if args.plot:
        result.plot(args.plot, f"LR range test: {cfg.method} on {cfg.dataset}")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(table(report(result)))
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0
