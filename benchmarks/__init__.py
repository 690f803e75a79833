"""fastadv's speed and memory benchmarks: ``python -m benchmarks`` (or ``make bench``).

Each module named in ``MODULES`` is one benchmark with ``NAME``, ``DESCRIPTION`` and
``run(device, quick=False, log=print, <its own keyword options>) -> dict`` whose result holds a
printable ``table`` (``python -m benchmarks`` passes each one only the options its ``run`` names); ``python -m benchmarks`` runs them in that order, prints the tables and writes
everything to ``benchmarks/results.json``. Modules are imported on demand, so that
``python -m benchmarks.step_cost --profile free`` runs a module on its own.
"""
from __future__ import annotations

import importlib

MODULES = ("step_cost", "eval_throughput", "time_to_robust", "cifar_cpu", "cpu_speed")


def registry() -> dict:
    """Benchmark name -> module, in running order."""
    mods = [importlib.import_module(f"benchmarks.{m}") for m in MODULES]
    return {m.NAME: m for m in mods}


__all__ = ["MODULES", "registry"]
