"""Small helpers shared by test modules (pytest puts this folder on sys.path)."""
from __future__ import annotations


def without_timings(value, drop=()):
    """``value`` with every dict key ending in "seconds" removed at any depth (and the keys in ``drop``
    at the top): what must be equal between two runs that differ only in wall time."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not k.endswith("seconds") and k not in drop}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value
