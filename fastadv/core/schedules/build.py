"""Specs to schedules: ``build(spec, total_steps, lr_max=...)``, the momentum mirror, a config's pair.

``build("one-cycle:lr_max=0.15", 1000)`` checks the spec against the shape's parameters (names,
required ones) and returns a ``Schedule``; ``build_momentum`` lets a mirrored momentum (one-cycle,
cyclical) take the LR spec's positions; ``for_config`` is the one place a run's LR and momentum
schedules are made, for the training loop and for reports that draw them.
"""
from __future__ import annotations

import inspect

from fastadv.config import ConfigError
from fastadv.core.schedules.adaptive import ADAPTIVE
from fastadv.core.schedules.base import Schedule, ShapeSchedule
from fastadv.core.schedules.shapes import MOMENTUM_SHAPES, SHAPES, Shape
from fastadv.specs import parse_spec


def build(spec: str, total_steps: int, registry: dict[str, Shape] = SHAPES, **defaults):
    """Build a schedule (``step -> value``) from a spec; ``defaults`` (e.g. lr_max) fill unspecified
    parameters. Returns a ``Schedule``, or for an adaptive LR shape (``plateau``) its stateful object."""
    name, params = parse_spec(spec)
    kind = "momentum schedule" if registry is MOMENTUM_SHAPES else "schedule"
    adaptive = ADAPTIVE if registry is SHAPES else {}
    if name not in registry and name not in adaptive:
        raise ConfigError(f"unknown {kind} {name!r} (valid: {', '.join(sorted({*registry, *adaptive}))})")
    fn = registry.get(name) or adaptive[name]
    signature = inspect.signature(fn).parameters
    # after p (shapes) or total_steps (adaptive classes); a shape's total_steps comes from the run
    accepted = [k for k in list(signature)[1:] if k != "total_steps"]
    bad = sorted(set(params) - set(accepted))
    if bad:
        raise ConfigError(f"{kind} {name!r} has no parameter(s) {', '.join(bad)} (valid: {', '.join(accepted)})")
    merged = {k: v for k, v in defaults.items() if k in accepted}
    merged.update(params)
    missing = [k for k in accepted if k not in merged and signature[k].default is inspect.Parameter.empty]
    if missing:
        raise ConfigError(f"{kind} {name!r} needs parameter(s) {', '.join(missing)}")
    try:
        sched = fn(total_steps, **merged) if name in adaptive else ShapeSchedule(name, fn, merged, total_steps)
        sched(0)
    except (TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
        raise ConfigError(f"{kind} {spec!r} has inconsistent parameters: {exc}") from None
    return sched


# Parameters a momentum mirror takes from the LR spec when both name the same shape.
MIRRORED = {"one-cycle": ("peak", "end_cycle"), "cyclical": ("cycles", "length", "mode")}
# LR shapes whose momentum mirror is another shape's: one-cycle-tf peaks at end_cycle / 2
MIRROR_OF = {"one-cycle-tf": ("one-cycle", lambda params: {"end_cycle": params.get("end_cycle", 0.9),
                                                           "peak": params.get("end_cycle", 0.9) / 2})}


def build_momentum(spec: str, total_steps: int, lr_spec: str | None = None, **defaults) -> Schedule:
    """Build a momentum schedule. With ``lr_spec`` naming the same shape (one-cycle, cyclical), the
    mirror takes the LR's peak/end_cycle or cycles/length/mode, unless ``spec`` sets any of them."""
    name, _ = parse_spec(spec)
    if lr_spec is not None and name in MIRRORED:
        lr_name, lr_params = parse_spec(lr_spec)
        unset = not set(parse_spec(spec)[1]) & set(MIRRORED[name])
        if lr_name == name and unset:
            defaults = {**defaults, **{k: v for k, v in lr_params.items() if k in MIRRORED[name]}}
        elif lr_name in MIRROR_OF and MIRROR_OF[lr_name][0] == name and unset:
            defaults = {**defaults, **MIRROR_OF[lr_name][1](lr_params)}
    return build(spec, total_steps, MOMENTUM_SHAPES, **defaults)


def for_config(cfg, total_steps: int) -> tuple[Schedule, Schedule]:
    """(LR, momentum) schedules of a run: ``cfg``'s specs (a TrainConfig or its dict) over ``total_steps``.

    The momentum mirror takes the LR spec's peak / end_cycle (one-cycle) or cycles (cyclical); an
    ``lr_max`` of None ("auto", not yet found) draws the shape at lr_max = 1.
    """
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    lr = build(get("lr_schedule"), total_steps, lr_max=get("lr_max") or 1.0)
    momentum = build_momentum(get("momentum_schedule"), total_steps, lr_spec=get("lr_schedule"),
                              momentum=get("momentum", 0.9))
    return lr, momentum
