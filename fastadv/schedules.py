"""Learning-rate and momentum shapes as pure functions of progress.

A shape is ``f(p, **params) -> value`` for progress ``p = step / total_steps`` in [0, 1].
A *spec* is a short string ``"name:key=value,key=value"`` (e.g. ``"one-cycle:lr_max=0.15"``
or ``"piecewise:values=1/0.1/0.01,boundaries=0.5/0.75"``). ``build(spec, total_steps,
**defaults)`` turns a spec into ``step -> value``; the training loop calls it every
optimizer step and writes the value into the optimizer's param groups.

To add a shape, decorate a function with ``@shape("name", "one-line description")``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from fastadv.config import ConfigError

Shape = Callable[..., float]
SHAPES: dict[str, Shape] = {}
MOMENTUM_SHAPES: dict[str, Shape] = {}
DESCRIPTIONS: dict[str, str] = {}


def shape(name: str, description: str, registry: dict[str, Shape] = SHAPES):
    def wrap(fn: Shape) -> Shape:
        registry[name] = fn
        DESCRIPTIONS[name] = description
        return fn

    return wrap


def interp(p: float, points: list[tuple[float, float]]) -> float:
    """Piecewise-linear through (progress, value) points; constant outside them."""
    if p <= points[0][0]:
        return points[0][1]
    for (p0, v0), (p1, v1) in zip(points, points[1:]):
        if p <= p1:
            return v0 + (v1 - v0) * (p - p0) / (p1 - p0) if p1 > p0 else v1
    return points[-1][1]


# ----------------------------------------------------------------------------- LR shapes
@shape("constant", "lr_max throughout")
def constant(p: float, lr_max: float) -> float:
    return lr_max


@shape("piecewise", "piecewise constant: lr_max*values[i] while p <= boundaries[i] (Free-m's 3 steps)")
def piecewise(p: float, lr_max: float, values: tuple[float, ...] = (1.0, 0.1, 0.01),
              boundaries: tuple[float, ...] = (0.5, 0.75)) -> float:
    for value, bound in zip(values, boundaries):
        if p <= bound:
            return lr_max * value
    return lr_max * values[len(boundaries)]


@shape("one-cycle", "1cycle: lr_max/div up to lr_max at peak, back to lr_max/div at end_cycle, "
                    "then down to lr_max/final_div")
def one_cycle(p: float, lr_max: float, peak: float = 0.45, end_cycle: float = 0.9,
              div: float = 10.0, final_div: float = 1000.0) -> float:
    low = lr_max / div
    return interp(p, [(0.0, low), (peak, lr_max), (end_cycle, low), (1.0, lr_max / final_div)])


# ----------------------------------------------------------------------------- momentum shapes
@shape("constant", "momentum constant", MOMENTUM_SHAPES)
def momentum_constant(p: float, momentum: float) -> float:
    return momentum


@shape("one-cycle", "1cycle mirror: high -> low at the LR peak -> high at end_cycle, then held",
       MOMENTUM_SHAPES)
def momentum_one_cycle(p: float, momentum: float = 0.9, high: float = 0.95, low: float = 0.85,
                       peak: float = 0.45, end_cycle: float = 0.9) -> float:
    return interp(p, [(0.0, high), (peak, low), (end_cycle, high), (1.0, high)])


# ----------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class Schedule:
    """A named shape with bound parameters, evaluated at integer steps of a run."""

    name: str
    fn: Shape
    params: dict
    total_steps: int

    def __call__(self, step: int) -> float:
        p = min(max(step / max(self.total_steps, 1), 0.0), 1.0)
        return float(self.fn(p, **self.params))


def parse_value(text: str):
    """'0.1' -> 0.1; '1/0.1/0.01' -> (1.0, 0.1, 0.01) ('/' separates list items); else str."""
    try:
        if "/" in text:
            return tuple(float(x) for x in text.split("/"))
        return float(text)
    except ValueError:
        return text


def parse_spec(spec: str) -> tuple[str, dict]:
    """'name:k=v,k=v' -> (name, {k: v}); values are numbers, '/'-separated tuples or strings."""
    name, _, rest = spec.strip().partition(":")
    params = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"schedule spec {spec!r}: expected key=value, got {item!r}")
        params[key.strip()] = parse_value(value.strip())
    return name.strip(), params


def build(spec: str, total_steps: int, registry: dict[str, Shape] = SHAPES, **defaults) -> Schedule:
    """Build a schedule from a spec; ``defaults`` (e.g. lr_max) fill unspecified parameters."""
    name, params = parse_spec(spec)
    kind = "momentum schedule" if registry is MOMENTUM_SHAPES else "schedule"
    if name not in registry:
        raise ConfigError(f"unknown {kind} {name!r} (valid: {', '.join(sorted(registry))})")
    fn = registry[name]
    accepted = list(inspect.signature(fn).parameters)[1:]
    bad = sorted(set(params) - set(accepted))
    if bad:
        raise ConfigError(f"{kind} {name!r} has no parameter(s) {', '.join(bad)} (valid: {', '.join(accepted)})")
    merged = {k: v for k, v in defaults.items() if k in accepted}
    merged.update(params)
    missing = [k for k in accepted if k not in merged
               and inspect.signature(fn).parameters[k].default is inspect.Parameter.empty]
    if missing:
        raise ConfigError(f"{kind} {name!r} needs parameter(s) {', '.join(missing)}")
    sched = Schedule(name, fn, merged, total_steps)
    try:
        sched(0)
    except (TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
        raise ConfigError(f"{kind} {spec!r} has inconsistent parameters: {exc}") from None
    return sched


def build_momentum(spec: str, total_steps: int, **defaults) -> Schedule:
    return build(spec, total_steps, MOMENTUM_SHAPES, **defaults)
