"""``fastadv find-wd``: the weight-decay finder (thesis section 4.2.3)."""
from __future__ import annotations

import json

from fastadv.cli.commands._util import (
    add_config_flags,
    config_from_args,
    number_flag,
    table,
)
from fastadv.cli.commands.find_lr import add_finder_flags, finder_args

NAME = "find-wd"
HELP = "weight-decay finder: an LR range test per decay; picks the one allowing the highest LR"
ORDER = 41


def configure(parser) -> None:
    parser.description = ("Run the LR range test (same seed, so same initial weights and data order) for each "
                          "weight decay, draw all smoothed curves in one plot, and pick the decay whose suggested "
                          "lr_max is highest (ties: lower loss minimum). Takes every train flag.")
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON config; flags override it")
    parser.add_argument("--weight-decays", default="1e-3,5e-4,2e-4,1e-4,0",
                        help="comma-separated decays to try [default: 1e-3,5e-4,2e-4,1e-4,0]")
    add_finder_flags(parser)
    add_config_flags(parser)


def run(args) -> int:
    from fastadv.training.finder import find_weight_decay

    decays = [number_flag("weight-decays", d) for d in args.weight_decays.split(",") if d.strip()]
    cfg = config_from_args(args)
    search = find_weight_decay(cfg, decays, **finder_args(args))
    if args.plot:
        search.plot(args.plot)
    if args.json:
        print(json.dumps({**search.summary(), "curves": {str(wd): t.to_dict() for wd, t in search.tests.items()}},
                         indent=2))
        return 0
    rows = [(f"weight decay {wd:g}", f"suggested lr_max {t.suggestion:.3g}, steepest {t.steepest_lr:.3g}, "
                                     f"min loss {min(t.smoothed):.4f}, {len(t.lrs)} steps, {t.seconds:.1f} s")
            for wd, t in search.tests.items()]
    print(table(rows))
    print(f"best weight decay: {search.best:g} (allows lr_max {search.tests[search.best].suggestion:.3g})")
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0
