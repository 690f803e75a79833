"""Learning-rate and momentum shapes as pure functions of progress.

A shape is ``f(p, **params) -> value`` for progress ``p = step / total_steps`` in [0, 1].
A *spec* is a short string ``"name:key=value,key=value"`` (e.g. ``"one-cycle:lr_max=0.15"``
or ``"piecewise:values=1/0.1/0.01,boundaries=0.5/0.75"``). ``build(spec, total_steps,
**defaults)`` turns a spec into ``step -> value``; the training loop calls it every
optimizer step and writes the value into the optimizer's param groups.

To add a shape, decorate a function with ``@shape("name", "one-line description")``.
Units: every ``lr_*`` / ``lower`` / ``min_lr`` / ``end_lr`` is an absolute learning rate; every
position or length (``peak``, ``boundaries``, ``decay``, ``period``, ``length`` ...) is a fraction
of training (progress), so a spec means the same thing for any run length. A shape checks its own
parameters and raises ``ValueError`` with a one-line message, which ``build`` turns into ``ConfigError``.

This module holds the shapes; ``base`` the ``Schedule`` protocol, ``adaptive`` the schedules that
watch held-out checks, ``build`` turns specs into schedules, ``lr_scheduler`` wraps one for torch.

Step convention: a run of ``T`` optimizer steps evaluates steps ``0 .. T-1``; progress ``p = 1``
(step ``T``) is the value *after* the last step, where shapes reach their end value.
"""
from __future__ import annotations

import math
from typing import Callable

Shape = Callable[..., float]
SHAPES: dict[str, Shape] = {}
MOMENTUM_SHAPES: dict[str, Shape] = {}
DESCRIPTIONS: dict[str, str] = {}  # LR shape -> one line
MOMENTUM_DESCRIPTIONS: dict[str, str] = {}  # momentum shape -> one line


def shape(name: str, description: str, registry: dict[str, Shape] = SHAPES):
    def wrap(fn: Shape) -> Shape:
        registry[name] = fn
        (MOMENTUM_DESCRIPTIONS if registry is MOMENTUM_SHAPES else DESCRIPTIONS)[name] = description
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


# ----------------------------------------------------------------------------- helpers
_TOL = 1e-9  # ratios within this of an integer count as that integer (progress is step / total)


def _snap(x: float) -> float:
    """x, or the integer within float rounding of it (ratios like (s/T) / (ds/T) at a multiple of ds)."""
    r = round(x)
    return float(r) if abs(x - r) <= _TOL * max(1.0, abs(x)) else x


def _floor(x: float) -> int:
    return math.floor(_snap(x))


def _ceil(x: float) -> int:
    return math.ceil(_snap(x))


def _require(ok: bool, message: str) -> None:
    """Raise ValueError(message) (build turns it into a one-line ConfigError) unless ok."""
    if not ok:
        raise ValueError(message)


def _flag(value) -> bool:
    """A boolean spec value: True/False, 1/0, or 'true'/'false'/'yes'/'no'/'on'/'off'."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    _require(text in ("true", "yes", "on", "false", "no", "off", "1", "0"),
             f"expected a boolean (true/false), got {value!r}")
    return text in ("true", "yes", "on", "1")


def _choice(value, name: str, options: tuple[str, ...]) -> str:
    _require(value in options, f"{name} must be one of {', '.join(options)}, got {value!r}")
    return value


def _seq(value, name: str) -> tuple[float, ...]:
    """A list spec value ('1/0.1/0.01' -> tuple); a single number becomes a 1-tuple."""
    if isinstance(value, (int, float)):
        return (float(value),)
    _require(isinstance(value, (tuple, list)), f"{name} must be numbers separated by '/', got {value!r}")
    return tuple(float(v) for v in value)


def triangle(x: float) -> float:
    """Unit triangle on a cycle position x in [0, 1]: 0 at both ends, 1 in the middle."""
    return 1.0 - abs(2.0 * x - 1.0)


def cycle_position(p: float, period: float, mult: float = 1.0) -> tuple[int, float]:
    """(cycle index i, position x in [0, 1)) of progress p in cycles of lengths period * mult**i.

    Cycles are half-open ``[start, end)``; p = 1 falling exactly on a cycle boundary is reported
    as the end (x = 1) of the previous cycle, so a run ends at the end of a cycle, not a restart.
    """
    if mult == 1.0:
        i = _floor(p / period)
        start, length = i * period, period
    else:  # start_i = period * (mult**i - 1) / (mult - 1)
        i = _floor(math.log1p(p * (mult - 1.0) / period) / math.log(mult))
        start, length = period * (mult ** i - 1.0) / (mult - 1.0), period * mult ** i
    x = (p - start) / length
    if abs(x) <= _TOL or x < 0:
        x = 0.0
    if p >= 1.0 and x == 0.0 and i > 0:
        return i - 1, 1.0
    return i, min(x, 1.0)


# ----------------------------------------------------------------------------- LR shapes
@shape("constant", "lr_max throughout")
def constant(p: float, lr_max: float) -> float:
    return lr_max


@shape("piecewise", "piecewise constant: lr_max*values[i] while p <= boundaries[i] (Free-m's 3 steps)")
def piecewise(p: float, lr_max: float, values: tuple[float, ...] = (1.0, 0.1, 0.01),
              boundaries: tuple[float, ...] = (0.5, 0.75)) -> float:
    """TF ``piecewise_constant``: ``lr_max * values[i]`` while ``p <= boundaries[i]``, then the last value.

    values: multipliers of lr_max, one more than boundaries; boundaries: increasing fractions of training.
    """
    values, boundaries = _seq(values, "values"), _seq(boundaries, "boundaries")
    _require(len(values) == len(boundaries) + 1,
             f"piecewise needs one more value than boundaries, got {len(values)} values "
             f"and {len(boundaries)} boundaries")
    _require(all(b0 <= b1 for b0, b1 in zip(boundaries, boundaries[1:])), "boundaries must be increasing")
    for value, bound in zip(values, boundaries):
        if p <= bound:
            return lr_max * value
    return lr_max * values[-1]


def _check_one_cycle(peak: float, end_cycle: float, div: float, final_div: float) -> None:
    _require(0.0 <= peak <= end_cycle <= 1.0, f"need 0 <= peak <= end_cycle <= 1, got peak={peak}, "
                                              f"end_cycle={end_cycle}")
    _require(div > 0 and final_div > 0, f"div and final_div must be > 0, got {div}, {final_div}")


@shape("one-cycle", "1cycle: lr_max/div up to lr_max at peak, back to lr_max/div at end_cycle, "
                    "then down to lr_max/final_div")
def one_cycle(p: float, lr_max: float, peak: float = 0.45, end_cycle: float = 0.9,
              div: float = 10.0, final_div: float = 1000.0) -> float:
    """Smith's 1cycle, linear pieces: lr_max/div -> lr_max at ``peak`` -> lr_max/div at ``end_cycle``
    -> lr_max/final_div at p = 1 (peak, end_cycle: fractions of training; div, final_div: divisors of lr_max).
    """
    _check_one_cycle(peak, end_cycle, div, final_div)
    low = lr_max / div
    return interp(p, [(0.0, low), (peak, lr_max), (end_cycle, low), (1.0, lr_max / final_div)])


@shape("one-cycle-tf", "the thesis' 1cycle exactly (its TensorFlow sum of three polynomial decays): lr_max/div -> "
                       "lr_max at end_cycle/2 -> lr_max/div at end_cycle -> lr_max/final_div at the last step")
def one_cycle_tf(p: float, lr_max: float, total_steps: int, end_cycle: float = 0.9, div: float = 10.0,
                 final_div: float = 1000.0) -> float:
    """The thesis' TF construction, step for step: with T = total_steps, D = end_cycle * T, s = p * T and
    ``poly(lr0, s, ds, end) = (lr0 - end) * (1 - min(s, ds) / ds) + end`` (TF ``polynomial_decay``, power 1),

        lr(s) = poly(-2A, s, D/2, 0) + poly(2A, s, D, 0) + poly(lr_max/final_div, T - s - 1, T - D - 1, lr_max/div)

    with A = lr_max - lr_max/div (the thesis: A = 0.9 lr_max, 2A = 1.8 lr_max). It equals ``one-cycle``
    (peak = end_cycle/2) up to D; the final annealing reaches lr_max/final_div at step T - 1, the last
    step taken, where ``one-cycle`` reaches it at p = 1 (one step later), and stays there at step T.
    Runs too short for the formula (T - D - 1 <= 0, fewer than ~10 steps) drop to lr_max/final_div after D.
    """
    _check_one_cycle(end_cycle / 2, end_cycle, div, final_div)
    T = max(total_steps, 1)
    D = end_cycle * T
    step = p * T

    def poly(lr0: float, x: float, ds: float, end: float) -> float:
        return (lr0 - end) * (1.0 - min(max(x, 0.0), ds) / ds) + end

    amp = 2.0 * (lr_max - lr_max / div)
    rise_and_fall = poly(-amp, step, D / 2, 0.0) + poly(amp, step, D, 0.0) if D > 0 else 0.0
    if T - D - 1 <= 0:  # too short for the formula's final leg
        return rise_and_fall + (lr_max / div if step <= D else lr_max / final_div)
    return rise_and_fall + poly(lr_max / final_div, T - step - 1, T - D - 1, lr_max / div)


@shape("one-cycle-half", "1cycle & half: low->lr_max->low->lr_max in legs of `peak`, then anneal to "
                         "lr_max/final_div")
def one_cycle_half(p: float, lr_max: float, peak: float = 0.3, div: float = 10.0,
                   final_div: float = 1000.0) -> float:
    """One and a half triangular cycles: three linear legs of length ``peak`` (fraction of training)
    lr_max/div -> lr_max -> lr_max/div -> lr_max (ending at 3*peak), and the half cycle's descent is
    the final annealing, lr_max -> lr_max/final_div over [3*peak, 1]. Needs 0 < peak < 1/3.
    """
    _require(0.0 < peak < 1.0 / 3.0, f"one-cycle-half needs 0 < peak < 1/3, got peak={peak}")
    _check_one_cycle(peak, peak, div, final_div)
    low = lr_max / div
    return interp(p, [(0.0, low), (peak, lr_max), (2 * peak, low), (3 * peak, lr_max),
                      (1.0, lr_max / final_div)])


@shape("one-cycle-truncated", "1cycle whose decline stops at `stop`, holds that LR until end_cycle, "
                              "then anneals to lr_max/final_div")
def one_cycle_truncated(p: float, lr_max: float, peak: float = 0.45, stop: float = 0.675,
                        end_cycle: float = 0.9, div: float = 10.0, final_div: float = 1000.0) -> float:
    """``one-cycle`` up to ``stop`` (a fraction of training between peak and end_cycle), then the LR
    reached there is held until ``end_cycle`` and annealed linearly to lr_max/final_div at p = 1.
    With the defaults the decline stops halfway down, at 0.55*lr_max; stop = end_cycle is ``one-cycle``.
    """
    _require(peak <= stop <= end_cycle, f"one-cycle-truncated needs peak <= stop <= end_cycle, "
                                        f"got {peak}, {stop}, {end_cycle}")
    held = one_cycle(stop, lr_max, peak, end_cycle, div, final_div)
    return interp(p, [(0.0, lr_max / div), (peak, lr_max), (stop, held), (end_cycle, held),
                      (1.0, lr_max / final_div)])


@shape("exponential", "TF exponential_decay: lr_max * rate**(p/decay), staircase floors the exponent")
def exponential(p: float, lr_max: float, rate: float = 0.1, decay: float = 1.0 / 3.0,
                staircase: bool = False) -> float:
    """``lr_max * rate ** (p / decay)``; ``decay`` is the fraction of training per factor ``rate``
    (TF's decay_steps / total_steps), ``staircase`` floors ``p / decay``. The defaults end at
    lr_max/1000 (three factors of 0.1); with another rate the end value is lr_max * rate**(1/decay).
    """
    _require(rate > 0, f"rate must be > 0, got {rate}")
    _require(decay > 0, f"decay must be > 0, got {decay}")
    exponent = p / decay
    return lr_max * rate ** (_floor(exponent) if _flag(staircase) else exponent)


@shape("polynomial", "TF polynomial_decay from lr_max to end_lr over `decay` of training (power, cycle)")
def polynomial(p: float, lr_max: float, decay: float = 1.0, power: float = 1.0,
               end_lr: float | None = None, cycle: bool = False) -> float:
    """TF ``polynomial_decay`` with decay_steps = decay * total_steps (``decay``: fraction of training):
    ``(lr_max - end_lr) * (1 - p/d)**power + end_lr`` with p capped at d = decay, or, if ``cycle``,
    d = decay * max(1, ceil(p / decay)). end_lr (absolute LR) defaults to lr_max/1000.
    """
    end_lr = lr_max / 1000.0 if end_lr is None else end_lr
    _require(decay > 0, f"decay must be > 0, got {decay}")
    _require(power > 0, f"power must be > 0, got {power}")
    _require(end_lr >= 0, f"end_lr must be >= 0, got {end_lr}")
    r = _snap(p / decay)  # TF's global_step / decay_steps
    remaining = 1.0 - r / max(1, math.ceil(r)) if _flag(cycle) else 1.0 - min(r, 1.0)
    return (lr_max - end_lr) * remaining ** power + end_lr


@shape("linear", "polynomial with power 1: linear from lr_max to end_lr (default lr_max/1000)")
def linear(p: float, lr_max: float, decay: float = 1.0, end_lr: float | None = None) -> float:
    """``polynomial`` with power 1: lr_max -> end_lr (default lr_max/1000) over ``decay`` of training."""
    return polynomial(p, lr_max, decay=decay, power=1.0, end_lr=end_lr)


def _cycles(cycles: float | None, length: float | None) -> float:
    """Length of one cycle as a fraction of training, from ``cycles`` or ``length`` (not both)."""
    _require(cycles is None or length is None, "give cycles or length, not both")
    if length is None:
        cycles = 4.0 if cycles is None else cycles
        _require(cycles > 0, f"cycles must be > 0, got {cycles}")
        return 1.0 / cycles
    _require(length > 0, f"length must be > 0, got {length}")
    return length


@shape("cyclical", "CLR triangular cycles between lower and lr_max (mode triangular|triangular2|decreasing)")
def cyclical(p: float, lr_max: float, lower: float | None = None, cycles: float | None = None,
             length: float | None = None, mode: str = "triangular") -> float:
    """Smith's cyclical LR: each cycle goes lower -> peak -> lower linearly.

    lower: absolute LR (default lr_max/10); cycles: number of cycles in the run (default 4) or
    length: one cycle as a fraction of training. mode: ``triangular`` (peak lr_max), ``triangular2``
    (amplitude halved each cycle), ``decreasing`` (cycle k's peak on the line from lr_max at p = 0
    to lower at p = 1, taken at the cycle's start; lower bound fixed).
    """
    lower = lr_max / 10.0 if lower is None else lower
    _require(0 <= lower <= lr_max, f"cyclical needs 0 <= lower <= lr_max, got lower={lower}, lr_max={lr_max}")
    _choice(mode, "mode", ("triangular", "triangular2", "decreasing"))
    period = _cycles(cycles, length)
    i, x = cycle_position(p, period)
    amplitude = lr_max - lower
    if mode == "triangular2":
        amplitude /= 2.0 ** i
    elif mode == "decreasing":
        amplitude *= max(0.0, 1.0 - i * period)
    return lower + amplitude * triangle(x)


def _restart_profile(x: float, kind: str, ramp: float) -> float:
    """Fraction of a restart cycle's amplitude at position x in [0, 1] of the cycle."""
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * x))
    if kind == "linear":
        return 1.0 - x
    return interp(x, [(0.0, 0.0), (ramp, 1.0), (1.0 - ramp, 1.0), (1.0, 0.0)])  # trapezoid


@shape("warm-restarts", "SGDR: cosine|linear|trapezoid decay to min_lr, restarting; cycle i lasts "
                        "period*mult**i, peaks lr_max*decay**i")
def warm_restarts(p: float, lr_max: float, period: float = 0.25, mult: float = 1.0, decay: float = 1.0,
                  min_lr: float = 0.0, shape: str = "cosine", ramp: float = 0.1) -> float:
    """SGDR (Loshchilov & Hutter): cycle i (from 0) lasts ``period * mult**i`` of training (period:
    fraction of training; mult: T_mult, the "accordion"), starts at peak ``max(lr_max * decay**i,
    min_lr)`` and falls to ``min_lr`` (absolute LR) by the profile ``shape``: cosine, linear, or
    trapezoid (up from min_lr over the first ``ramp`` of the cycle, held, down over the last ``ramp``).
    """
    _require(period > 0, f"period must be > 0, got {period}")
    _require(mult >= 1, f"mult must be >= 1, got {mult}")
    _require(decay > 0, f"decay must be > 0, got {decay}")
    _require(0 <= min_lr <= lr_max, f"need 0 <= min_lr <= lr_max, got min_lr={min_lr}, lr_max={lr_max}")
    _choice(shape, "shape", ("cosine", "linear", "trapezoid"))
    _require(0 < ramp <= 0.5, f"ramp must be in (0, 0.5], got {ramp}")
    i, x = cycle_position(p, period, mult)
    peak = max(lr_max * decay ** i, min_lr)
    return min_lr + (peak - min_lr) * _restart_profile(x, shape, ramp)


@shape("linear-warm-restarts", "warm-restarts with linear decay within each restart")
def linear_warm_restarts(p: float, lr_max: float, period: float = 0.25, mult: float = 1.0,
                         decay: float = 1.0, min_lr: float = 0.0) -> float:
    """``warm-restarts`` with ``shape=linear`` (same parameters and units)."""
    return warm_restarts(p, lr_max, period, mult, decay, min_lr, shape="linear")


# ----------------------------------------------------------------------------- momentum shapes
@shape("constant", "`momentum` throughout (0.9 by default)", MOMENTUM_SHAPES)
def momentum_constant(p: float, momentum: float) -> float:
    return momentum


@shape("one-cycle", "1cycle mirror: high -> low at the LR peak -> high at end_cycle, then held",
       MOMENTUM_SHAPES)
def momentum_one_cycle(p: float, high: float = 0.95, low: float = 0.85, peak: float = 0.45,
                       end_cycle: float = 0.9) -> float:
    """Mirror of ``one-cycle``: high -> low at ``peak`` -> high at ``end_cycle``, held to the end (high,
    low: momenta; peak, end_cycle: fractions of training, taken from the LR spec when it is a one-cycle)."""
    _require(0.0 <= peak <= end_cycle <= 1.0, f"need 0 <= peak <= end_cycle <= 1, got {peak}, {end_cycle}")
    _require(0 <= low <= high < 1, f"need 0 <= low <= high < 1, got low={low}, high={high}")
    return interp(p, [(0.0, high), (peak, low), (end_cycle, high), (1.0, high)])


@shape("cyclical", "cyclical mirror: high when the cyclical LR is at lower, low at its peaks", MOMENTUM_SHAPES)
def momentum_cyclical(p: float, high: float = 0.95, low: float = 0.85, cycles: float | None = None,
                      length: float | None = None, mode: str = "triangular") -> float:
    """Mirror of the ``cyclical`` LR shape with the same cycles/length/mode: ``high - (high - low) * u``
    where u in [0, 1] is the LR's position between lower and lr_max (so triangular2 halves the dip too).
    """
    _require(0 <= low <= high < 1, f"need 0 <= low <= high < 1, got low={low}, high={high}")
    return high - (high - low) * cyclical(p, 1.0, lower=0.0, cycles=cycles, length=length, mode=mode)
