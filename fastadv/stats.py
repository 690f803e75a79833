"""Small numerics shared by the finders and the reports (plain Python: no torch, no NumPy)."""
from __future__ import annotations


def smooth(values: list[float], beta: float) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's): avg_i / (1 - beta**(i+1)); beta 0 = raw."""
    avg, out = 0.0, []
    for i, value in enumerate(values):
        avg = beta * avg + (1 - beta) * value
        out.append(avg / (1 - beta ** (i + 1)))
    return out
