"""``fastadv grid``: train every config x seed, skipping finished runs, going on past failures."""
from __future__ import annotations

from dataclasses import fields

from fastadv.cli.commands._util import add_config_flags, table

NAME = "grid"
HELP = "train every config x seed into one folder; rerun to finish an interrupted grid"
ORDER = 50


def configure(parser) -> None:
    parser.description = (
        "Train every config file (or every *.toml / *.json in a directory) with each seed. "
        "Run directories are OUT/<name>_s<seed>; a run with summary.json is finished and skipped, an "
        "unfinished one resumes from its last checkpoint (or restarts when it has none), a failing one is "
        "reported at the end (exit 1). A second grid into the same OUT stops at once with one line. "
        "Example: fastadv grid configs/scaled --seeds 3 --out runs/scaled")
    parser.add_argument("configs", nargs="+", metavar="CONFIG_DIR_OR_FILE")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per config [default: 1]")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST.. FIRST+SEEDS-1 [default: 0]")
    parser.add_argument("--out", default="runs", help="folder of the run directories [default: runs]")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their state, train nothing")
    add_config_flags(parser)  # overrides for every config, e.g. --device cuda; --no-progress hides the grid's bar


def run(args) -> int:
    from fastadv.config import TrainConfig
    from fastadv.experiments.grid import grid_lock, plan_grid, run_grid
    from fastadv.training.setup import check_config

    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    show_bar = overrides.pop("progress", True)  # one bar over runs; each run's own bar stays off
    runs = plan_grid(args.configs, args.seeds, args.out, first_seed=args.first_seed, overrides=overrides)
    for run_ in runs:
        check_config(run_.config)  # a typo in any config fails before hours of training
    done = [r for r in runs if r.finished]
    print(f"grid: {len(runs)} runs ({len(runs) // args.seeds} configs x {args.seeds} seeds) in {args.out}; "
          f"{len(done)} finished, {len(runs) - len(done)} to train")
    if args.dry_run:
        state = {True: "finished", False: "to train"}
        print(table([(r.name, f"{state[r.finished]:<9} <- {r.source}") for r in runs]))
        return 0
    with grid_lock(args.out):
        outcome = run_grid(runs, progress=show_bar)
    print(f"grid: trained {len(outcome.trained)}, skipped {len(outcome.skipped)} finished, "
          f"{len(outcome.failed)} failed, {outcome.seconds:.0f} s")
    if outcome.failed:
        print("failed runs (rerun the same command to retry them):")
        print(table(outcome.failed))
        return 1
    return 0
