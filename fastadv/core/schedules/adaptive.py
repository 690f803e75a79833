"""Schedules that adapt to the held-out checks: ``plateau`` (the thesis' future work, made a schedule)."""
from __future__ import annotations

import math

from fastadv.core.schedules.base import Schedule
from fastadv.core.schedules.shapes import _TOL, DESCRIPTIONS, _require, _seq, interp


class PlateauSchedule(Schedule):
    """Plateau-aware step decay: hold each LR level until the held-out metric stops improving.

    The thesis' future work ("evaluate the accuracy gradient to avoid plateau areas") as a schedule.
    Levels ``lr_max * values[k]`` follow each other (default 1, 0.1, 0.01, Free-m's three steps). After
    an optional linear ``warmup`` from ``lr_max * values[0] / div``, the schedule holds the current
    level; at each held-out check (``observe(step, metrics)``, called by the trainer) it fits a
    least-squares line to ``metrics[metric]`` (default ``adv_acc``, a fraction in [0, 1]) against
    progress over the last ``window`` of training, using only checks taken at this level. When the
    slope is below ``min_slope`` (metric gained per unit of progress: 0.1 = one accuracy point per
    10% of training), it moves on: the LR goes linearly to the next level over ``ramp`` of training.
    ``boundaries[k]`` is the latest progress at which level k ends, so without observations (or
    when the metric keeps improving) it is the piecewise schedule with those boundaries.

    Units: window, ramp, warmup, boundaries are fractions of training; lr_max an absolute LR.
    Callable ``step -> lr`` like every schedule; ``state_dict()`` / ``load_state_dict()`` hold the
    observations and the steps at which it moved on (plain Python values) for resume checkpoints.
    """

    name = "plateau"

    def __init__(self, total_steps: int, lr_max: float, values: tuple[float, ...] = (1.0, 0.1, 0.01),
                 boundaries: tuple[float, ...] = (0.5, 0.75), window: float = 0.1, min_slope: float = 0.1,
                 ramp: float = 0.05, warmup: float = 0.0, div: float = 10.0, metric: str = "adv_acc",
                 min_points: float = 3):
        values, boundaries = _seq(values, "values"), _seq(boundaries, "boundaries")
        _require(lr_max > 0, f"lr_max must be > 0, got {lr_max}")
        _require(len(values) == len(boundaries) + 1,
                 f"plateau needs one more value than boundaries, got {len(values)} values and "
                 f"{len(boundaries)} boundaries")
        _require(all(v >= 0 for v in values), "values must be >= 0")
        _require(0 < window <= 1, f"window must be in (0, 1], got {window}")
        _require(0 <= ramp < 1 and 0 <= warmup < 1, f"ramp and warmup must be in [0, 1), got {ramp}, {warmup}")
        _require(div > 0, f"div must be > 0, got {div}")
        _require(int(min_points) >= 2, f"min_points must be >= 2, got {min_points}")
        edges = (warmup, *boundaries)
        _require(all(b - a >= ramp - _TOL for a, b in zip(edges[1:], edges[2:])) and edges[-1] + ramp <= 1 + _TOL
                 and warmup <= edges[min(1, len(edges) - 1)],
                 f"need warmup <= boundaries[0], boundaries increasing by at least ramp={ramp}, "
                 f"and boundaries[-1] + ramp <= 1")
        self.total_steps, self.lr_max, self.values, self.boundaries = max(int(total_steps), 1), lr_max, values, boundaries
        self.window, self.min_slope, self.ramp, self.warmup, self.div = window, min_slope, ramp, warmup, div
        self.metric, self.min_points = str(metric), int(min_points)
        self.params = {"lr_max": lr_max, "values": values, "boundaries": boundaries, "window": window,
                       "min_slope": min_slope, "ramp": ramp, "warmup": warmup, "div": div, "metric": metric,
                       "min_points": self.min_points}
        self.switches: list[int] = []  # step at which level k's ramp to level k+1 began, on a plateau
        self.history: list[tuple[int, float]] = []  # (step, metric) of every observation

    # -- the LR as a function of step, given the plateaus seen so far
    def level_ends(self) -> list[float]:
        """Progress at which each level's ramp to the next begins: the plateau, else the boundary."""
        return [self.switches[k] / self.total_steps if k < len(self.switches) else b
                for k, b in enumerate(self.boundaries)]

    def level_at(self, step: int) -> int:
        """Index of the level in force (or being ramped to) at ``step``."""
        p = step / self.total_steps
        return sum(1 for e in self.level_ends() if p > e + _TOL)

    def level_start(self, k: int) -> float:
        """Progress at which level k is reached (its ramp or the warmup over)."""
        return self.warmup if k == 0 else self.level_ends()[k - 1] + self.ramp

    def __call__(self, step: int) -> float:
        p = min(max(step / self.total_steps, 0.0), 1.0)
        v = [self.lr_max * x for x in self.values]
        points = [(0.0, v[0] / self.div if self.warmup > 0 else v[0]), (self.warmup, v[0])]
        for k, end in enumerate(self.level_ends()):
            points += [(end, v[k]), (end + self.ramp, v[k + 1])]
        return float(interp(p, points))

    # -- adaptation
    def slope(self, step: int) -> float | None:
        """Least-squares slope of the metric per unit progress over the window ending at ``step``,
        from checks taken at the current level; None while there are too few or the window is not full."""
        k = self.level_at(step)
        start = max(self.level_start(k), step / self.total_steps - self.window)
        if step / self.total_steps - self.level_start(k) < self.window - _TOL:
            return None
        pts = [(s / self.total_steps, m) for s, m in self.history if s / self.total_steps >= start - _TOL]
        if len(pts) < self.min_points:
            return None
        mx = sum(x for x, _ in pts) / len(pts)
        my = sum(y for _, y in pts) / len(pts)
        sxx = sum((x - mx) ** 2 for x, _ in pts)
        return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx > 0 else None

    def observe(self, step: int, metrics: dict) -> None:
        """Record a held-out check (``metrics[self.metric]``) at ``step``; move on if it has flattened."""
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return
        self.history.append((int(step), float(value)))
        k = self.level_at(step)
        if k >= len(self.boundaries) or len(self.switches) != k:
            return  # last level, or ramping to the next one
        slope = self.slope(step)
        if slope is not None and slope < self.min_slope and step / self.total_steps < self.boundaries[k]:
            self.switches.append(int(step))

    def state_dict(self) -> dict:
        return {"switches": list(self.switches), "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.switches = [int(s) for s in state.get("switches", [])]
        self.history = [(int(s), float(m)) for s, m in state.get("history", [])]


ADAPTIVE: dict[str, type] = {"plateau": PlateauSchedule}  # LR schedules that observe held-out checks
DESCRIPTIONS["plateau"] = ("steps lr_max*values[k], moving on when the held-out robust accuracy's slope "
                           "flattens (or at boundaries[k])")
