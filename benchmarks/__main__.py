"""``python -m benchmarks [--only NAME ...] [--quick] [--seeds N] [--ledger FILE] [--device D] [--out FILE]``."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"


def parse_args(argv=None) -> argparse.Namespace:
    from benchmarks import registry

    BENCHMARKS = registry()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="fastadv speed and memory benchmarks: print tables, write JSON.",
        epilog="benchmarks: " + "; ".join(f"{n}: {m.DESCRIPTION}" for n, m in BENCHMARKS.items()))
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
                        help=f"run only this benchmark (repeatable; one of {', '.join(BENCHMARKS)}); without it every benchmark "
             f"but the long ones ({', '.join(n for n, m in BENCHMARKS.items() if getattr(m, 'HEAVY', False))}) runs")
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and one seed (minutes); the full run takes longer, see docs/PERFORMANCE.md")
    cifar = BENCHMARKS["cifar-cpu"]
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"seeds: time-to-robust (default 3, quick 1), cifar-cpu (default {cifar.SEEDS}, quick 1)")
    parser.add_argument("--ledger", type=Path, default=cifar.LEDGER, metavar="FILE",
                        help="cifar-cpu: the frontier's ledger; finished runs are added to it at once and a rerun "
                             f"skips the runs it holds [default: docs/{cifar.LEDGER.name}]")
    parser.add_argument("--max-runs", type=int, default=None, metavar="N",
                        help="cifar-cpu: stop after N new runs (the ledger keeps them; rerun to go on)")
    parser.add_argument("--stop-at-target", action=argparse.BooleanOptionalAction, default=None,
                        help="time-to-robust: end Wong's training at its first check >= 88%% (same time to 88%%, "
                             "no final accuracy; default: on in --quick, off otherwise)")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"cifar-cpu: this one budget in seconds of training (default the frontier's "
                             f"{', '.join(f'{b:.0f}' for b in cifar.BUDGETS)}, quick 120); "
                             "--suite gpu: seconds for the whole suite (default 540)")
    parser.add_argument("--suite", choices=["gpu"], default=None,
                        help="gpu: the GPU suite (benchmarks/gpu_suite.py) instead of the benchmarks")
    parser.add_argument("--tiny", action="store_true", help="--suite gpu: the same code on a CPU in under a minute")
    parser.add_argument("--suite-out", type=Path, default=Path("gpu-results"),
                        help="--suite gpu: folder for its results.json and figures [gpu-results]")
    parser.add_argument("--data-dir", default=None, help="--suite gpu: folder with cifar10.npz or its parts "
                             "(python -m benchmarks.gpu_suite split)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a crowded machine)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results file [default: {DEFAULT_OUT.name} "
                                                                      "next to this package]")
    args = parser.parse_args(argv)
    if args.budget is not None and args.budget <= 0:
        parser.error("--budget must be > 0")
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.max_runs is not None and args.max_runs < 1:
        parser.error("--max-runs must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from benchmarks import registry
    from benchmarks._common import machine
    from fastadv.core.perf import resolve_device
    from fastadv.errors import UserError

    try:
        device = resolve_device(args.device)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.suite == "gpu":
        from benchmarks import gpu_suite

        argv_suite = ["--out", str(args.suite_out), "--device", args.device] + (["--tiny"] if args.tiny else [])
        argv_suite += (["--budget", str(args.budget)] if args.budget else []) + (
            ["--data-dir", args.data_dir] if args.data_dir else [])
        return gpu_suite.main(argv_suite)
    BENCHMARKS = registry()
    names = args.only or [n for n, m in BENCHMARKS.items() if not getattr(m, "HEAVY", False)]
    info = machine(device)
    print(f"fastadv benchmarks on {info['processor']} ({info['cpu_count']} cores, torch {info['torch']}, "
          f"{info['torch_threads']} threads, device {device}); load average {info['load_average'][0]:.1f}"
          + (" [quick]" if args.quick else ""), flush=True)
    results = {}
    for name in names:
        print(f"\n== {name}: {BENCHMARKS[name].DESCRIPTION}", flush=True)
        t = time.perf_counter()
        try:
            out = BENCHMARKS[name].run(device, **run_options(BENCHMARKS[name], args))
        except UserError as exc:  # e.g. MNIST not found for time-to-robust
            print(f"error: {exc}", file=sys.stderr)
            return 2
        out.update(wall_seconds=time.perf_counter() - t, quick=args.quick, machine=machine(device),
                   finished=dt.datetime.now().isoformat(timespec="seconds"))
        results[name] = out
        print(out["table"], flush=True)
        print(f"({out['wall_seconds']:.0f} s)", flush=True)
    write(args.out, results)
    print(f"\nresults written to {args.out}")
    return 0


def run_options(module, args: argparse.Namespace) -> dict:
    """The command-line options a benchmark's ``run`` takes (its signature names them), and only those:
    each flag's help says which benchmarks it is for, and ``run`` refuses a keyword it does not know."""
    import inspect

    options = {"quick": args.quick, "seeds": args.seeds, "stop_at_target": args.stop_at_target,
               "budget": args.budget, "ledger": args.ledger, "max_runs": args.max_runs,
               "log": lambda s: print(s, flush=True)}
    takes = inspect.signature(module.run).parameters
    return {key: value for key, value in options.items() if key in takes}


def write(path: Path, results: dict) -> None:
    """Merge into an existing results file, so running one benchmark keeps the others' last figures."""
    old = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text()).get("benchmarks", {})
        except (ValueError, AttributeError):
            old = {}
    data = {"benchmarks": {**old, **results}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
