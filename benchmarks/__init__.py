"""fastadv's speed and memory benchmarks: ``python -m benchmarks`` (or ``make bench``).

Each module here is one benchmark with ``NAME``, ``DESCRIPTION`` and
``run(device, quick=False, log=print, **options) -> dict`` whose result holds a printable
``table``; ``python -m benchmarks`` runs them in ``BENCHMARKS`` order, prints the tables and
writes everything to ``benchmarks/results.json``.
"""
from benchmarks import eval_throughput, step_cost, time_to_robust

BENCHMARKS = {m.NAME: m for m in (step_cost, eval_throughput, time_to_robust)}

__all__ = ["BENCHMARKS"]
