"""Schedule shapes: end values, signs, monotone pieces, TF formulas, the thesis' 1cycle, torch interop."""
from __future__ import annotations

import math

import pytest
import torch

from fastadv import schedules
from fastadv.config import ConfigError

LR = 0.1
T = 1000

# Per registered LR shape (defaults, lr_max=LR): value at step 0, at p = 1 (step T), and the progress
# points between which it is monotone. Every registered shape must be listed here.
EXPECTED = {
    "constant": (LR, LR, [0, 1]),
    "piecewise": (LR, LR * 0.01, [0, 1]),
    "one-cycle": (LR / 10, LR / 1000, [0, 0.45, 0.9, 1]),
    "one-cycle-half": (LR / 10, LR / 1000, [0, 0.3, 0.6, 0.9, 1]),
    "one-cycle-truncated": (LR / 10, LR / 1000, [0, 0.45, 0.675, 0.9, 1]),
    "exponential": (LR, LR / 1000, [0, 1]),
    "polynomial": (LR, LR / 1000, [0, 1]),
    "linear": (LR, LR / 1000, [0, 1]),
    "cyclical": (LR / 10, LR / 10, [k / 8 for k in range(9)]),
    "warm-restarts": (LR, 0.0, [0, 0.25, 0.5, 0.75, 1]),
    "linear-warm-restarts": (LR, 0.0, [0, 0.25, 0.5, 0.75, 1]),
}


def values(spec, total=T, lr_max=LR, last=None):
    sched = schedules.build(spec, total, lr_max=lr_max)
    return [sched(s) for s in range(total + 1 if last is None else last)]


def one_step_change(vals):
    return max(abs(b - a) for a, b in zip(vals, vals[1:]))


def test_every_shape_has_expectations():
    assert set(schedules.SHAPES) == set(EXPECTED)
    assert set(schedules.MOMENTUM_SHAPES) == {"constant", "one-cycle", "cyclical"}
    assert all(name in schedules.DESCRIPTIONS for name in schedules.SHAPES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("total", [1, 7, 100, T])
def test_start_end_and_sign(name, total):
    start, end, _ = EXPECTED[name]
    vals = values(name, total)
    assert vals[0] == pytest.approx(start, rel=1e-12)
    assert vals[-1] == pytest.approx(end, rel=1e-12, abs=1e-15)  # p = 1, after the last step
    assert all(v >= 0 and math.isfinite(v) for v in vals)
    # the last step a run takes (T-1) is within one step's change of the end value
    if total >= 100:
        assert abs(vals[-2] - vals[-1]) <= one_step_change(vals) + 1e-15


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_monotone_pieces(name):
    """Monotone (either way) on each half-open piece [a, b) of its breakpoints; the last piece closed."""
    vals = values(name)
    points = EXPECTED[name][2]
    for a, b in zip(points, points[1:]):
        lo, hi = round(a * T), round(b * T) - (0 if b == 1 else 1)
        diffs = [y - x for x, y in zip(vals[lo:hi], vals[lo + 1:hi + 1])]
        assert all(d >= -1e-15 for d in diffs) or all(d <= 1e-15 for d in diffs), (name, a, b)


def test_one_cycle_peak():
    vals = values("one-cycle")
    assert max(vals) == pytest.approx(LR)
    assert vals.index(max(vals)) == 450
    vals = values("one-cycle:peak=0.3,lr_max=0.2")
    assert vals.index(max(vals)) == 300 and max(vals) == pytest.approx(0.2)


@pytest.mark.parametrize("total", [20, 97, 100, 391, T])
def test_one_cycle_matches_thesis_tf_construction(total):
    """The thesis builds 1cycle in TF as a sum of three polynomial decays (power 1), D = 0.9 T.

    It agrees exactly up to D; in the final annealing it is off by one step: the thesis reaches
    lr_max/1000 at step T-1 (the last step taken), our one-cycle at p = 1, i.e. step T, so after D the
    two differ by at most one step's LR change (exactly that at step T-1).
    """
    def poly(lr0, s, ds, end):
        return (lr0 - end) * (1 - min(s, ds) / ds) ** 1 + end

    d = 0.9 * total
    ours = values("one-cycle", total)
    step_change = one_step_change(ours)
    for s in range(total):
        thesis = (poly(-1.8 * LR, s, d / 2, 0) + poly(1.8 * LR, s, d, 0)
                  + poly(LR / 1000, total - s - 1, total - d - 1, LR / 10))
        if s <= d:
            assert ours[s] == pytest.approx(thesis, rel=1e-9, abs=1e-15), s
        else:
            assert abs(ours[s] - thesis) <= step_change * (1 + 1e-9), s
    assert thesis == pytest.approx(LR / 1000)  # s = T-1


@pytest.mark.parametrize("total", [100, 391, T])
def test_one_cycle_vs_torch_one_cycle_lr(total):
    """OneCycleLR(three_phase, linear, pct_start=0.45, div 10, final_div 100) ends its phases at
    0.45T-1, 0.9T-2, T-1 where ours has 0.45T, 0.9T, T: it runs up to two steps ahead, so the
    agreement is within two steps' LR change (one step through the rise)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=LR, momentum=0.9)
    torch_sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, total_steps=total, pct_start=0.45, anneal_strategy="linear", three_phase=True,
        div_factor=10, final_div_factor=100)
    ours = values("one-cycle", total)
    mom = schedules.build_momentum("one-cycle", total)
    step_change = one_step_change(ours)
    for s in range(total):
        lr = opt.param_groups[0]["lr"]
        bound = (1 if s < 0.45 * total else 2) * step_change * (1 + 1e-9)
        assert abs(lr - ours[s]) <= bound, s
        assert abs(opt.param_groups[0]["momentum"] - mom(s)) <= 2 * 0.1 / (0.45 * total) + 1e-12, s
        opt.step()
        torch_sched.step()
    assert lr == pytest.approx(LR / 1000)


def test_momentum_one_cycle_mirror():
    lr = values("one-cycle")
    mom = schedules.build_momentum("one-cycle", T, momentum=0.9)
    m = [mom(s) for s in range(T + 1)]
    assert m[0] == pytest.approx(0.95) and m[450] == pytest.approx(0.85) and m[900] == pytest.approx(0.95)
    assert all(v == pytest.approx(0.95) for v in m[900:])
    assert m.index(min(m)) == lr.index(max(lr)) == 450
    assert all(b <= a for a, b in zip(m[:450], m[1:451])) and all(b >= a for a, b in zip(m[450:900], m[451:901]))


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "decreasing"])
def test_momentum_cyclical_mirror(mode):
    spec = f"cyclical:cycles=5,mode={mode}"
    lr, mom = values(spec), schedules.build_momentum(spec, T)
    for s in range(T + 1):
        u = (lr[s] - LR / 10) / (LR - LR / 10)
        assert mom(s) == pytest.approx(0.95 - 0.1 * u, abs=1e-12)


# ----------------------------------------------------------------------------- TF semantics
@pytest.mark.parametrize("boundaries,vals", [((0.5, 0.75), (1, 0.1, 0.01)), ((0.3,), (1, 0.5)),
                                              ((0.1, 0.2, 0.7), (1, 0.3, 0.2, 0.05))])
def test_piecewise_tf(boundaries, vals):
    spec = "piecewise:values=" + "/".join(map(str, vals)) + ",boundaries=" + "/".join(map(str, boundaries))
    ours = values(spec)
    steps = [round(b * T) for b in boundaries]
    for s in range(T + 1):
        expected = vals[next((i for i, b in enumerate(steps) if s <= b), len(steps))]
        assert ours[s] == pytest.approx(LR * expected, rel=1e-12), s
    for b in steps:  # values[i] *at* boundary i, values[i+1] one step later
        assert ours[b] != ours[b + 1]


@pytest.mark.parametrize("rate,decay", [(0.1, 0.25), (0.5, 0.1), (0.96, 0.3), (0.2, 0.07)])
@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_tf(rate, decay, staircase):
    ours = values(f"exponential:rate={rate},decay={decay},staircase={str(staircase).lower()}")
    ds = decay * T
    for s in range(T + 1):
        exponent = s // round(ds) if staircase else s / ds
        assert ours[s] == pytest.approx(LR * rate ** exponent, rel=1e-9), s


@pytest.mark.parametrize("decay", [1.0, 0.3, 0.25, 0.07])
@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("cycle", [False, True])
def test_polynomial_tf(decay, power, cycle):
    end = 0.0005
    ours = values(f"polynomial:decay={decay},power={power},end_lr={end},cycle={int(cycle)}")
    ds = round(decay * T)
    for s in range(T + 1):
        if cycle:
            d, g = ds * (1 if s == 0 else math.ceil(s / ds)), s
        else:
            d, g = ds, min(s, ds)
        assert ours[s] == pytest.approx((LR - end) * (1 - g / d) ** power + end, rel=1e-9, abs=1e-15), s
    if cycle and decay < 1:  # at a multiple of decay_steps the LR is end_lr, one step later it jumps up
        assert ours[2 * ds] == pytest.approx(end) and ours[2 * ds + 1] > ours[2 * ds]


def test_linear_is_polynomial_power_one():
    assert values("linear") == values("polynomial:power=1")
    assert values("linear:end_lr=0.01,decay=0.5") == values("polynomial:power=1,end_lr=0.01,decay=0.5")


# ----------------------------------------------------------------------------- shapes' definitions
def test_exponential_rate_changes_end():
    assert values("exponential:rate=0.5")[-1] == pytest.approx(LR * 0.5 ** 3)


def test_one_cycle_half_legs():
    vals = values("one-cycle-half")
    assert [vals[s] for s in (0, 300, 600, 900, 1000)] == pytest.approx([LR / 10, LR, LR / 10, LR, LR / 1000])


def test_one_cycle_truncated():
    vals = values("one-cycle-truncated")
    assert vals[675] == pytest.approx(0.55 * LR)
    assert all(v == pytest.approx(0.55 * LR) for v in vals[675:901])
    assert values("one-cycle-truncated:stop=0.9") == pytest.approx(values("one-cycle"))


def test_cyclical_modes():
    tri = values("cyclical:cycles=4")
    tri2 = values("cyclical:length=0.25,mode=triangular2")
    dec = values("cyclical:cycles=4,mode=decreasing")
    lower = LR / 10
    peaks = [125, 375, 625, 875]
    assert [tri[s] for s in peaks] == pytest.approx([LR] * 4)
    assert [tri2[s] for s in peaks] == pytest.approx([lower + (LR - lower) / 2 ** k for k in range(4)])
    assert [dec[s] for s in peaks] == pytest.approx([LR - (LR - lower) * k / 4 for k in range(4)])
    for vals in (tri, tri2, dec):
        assert min(vals) == pytest.approx(lower) and all(vals[s] == pytest.approx(lower) for s in (0, 250, 500, 750))


@pytest.mark.parametrize("spec,total,restarts", [
    ("warm-restarts", T, [250, 500, 750]),
    ("warm-restarts:period=0.1", T, list(range(100, 1000, 100))),
    ("warm-restarts:period=0.142857142857142857,mult=2", 700, [100, 300]),  # cycles 1/7, 2/7, 4/7
    ("warm-restarts:period=0.2,mult=1.5,decay=0.5,shape=linear", T, [200, 500, 950]),  # ends mid-cycle
    ("linear-warm-restarts:period=0.125,mult=3,min_lr=0.001", T, [125, 500]),  # ends mid-cycle
    ("warm-restarts:period=0.0625,mult=3,decay=0.8,min_lr=0.002", 1600, [100, 400, 1300]),  # ends mid-cycle
])
def test_warm_restart_positions(spec, total, restarts):
    """Restarts (the only upward jumps) at the starts of cycles of lengths period * mult**i; each
    cycle starts at lr_max * decay**i; a run whose cycles tile it ends at min_lr."""
    name, params = schedules.parse_spec(spec)
    period, mult, decay = params.get("period", 0.25), params.get("mult", 1.0), params.get("decay", 1.0)
    starts, start, i = [], 0.0, 0
    while start < 1 - 1e-9:
        starts.append(start)
        start += period * mult ** i
        i += 1
    assert [round(s * total) for s in starts[1:]] == restarts
    vals = values(spec, total=total, lr_max=LR)
    jumps = [s for s in range(1, total + 1) if vals[s] > vals[s - 1] + 1e-12]
    assert jumps == restarts
    for k, s in enumerate([0] + restarts):
        assert vals[s] == pytest.approx(LR * decay ** k)
    if abs(start - 1) < 1e-9:
        assert vals[total] == pytest.approx(params.get("min_lr", 0.0))
    else:
        assert vals[total] > params.get("min_lr", 0.0)


def test_warm_restarts_mult_7ths():
    vals = values("warm-restarts:period=0.142857142857142857,mult=2", total=700)
    assert [s for s in range(1, 701) if vals[s] > vals[s - 1]] == [100, 300]


def test_warm_restarts_shapes():
    cos = values("warm-restarts:period=0.5")
    assert cos[250] == pytest.approx(LR / 2) and cos[499] < 1e-5
    assert values("linear-warm-restarts:mult=2,decay=0.7") == values("warm-restarts:shape=linear,mult=2,decay=0.7")
    trap = values("warm-restarts:shape=trapezoid,period=0.5,ramp=0.2,min_lr=0.01")
    assert trap[0] == pytest.approx(0.01) and trap[100] == pytest.approx(LR) and trap[400] == pytest.approx(LR)
    assert trap[500] == pytest.approx(0.01) and trap[600] == pytest.approx(LR)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("spec", [
    "piecewise:values=1/0.1,boundaries=0.3/0.6",
    "piecewise:values=1/0.1/0.01/0.001,boundaries=0.3/0.6",
    "piecewise:values=1/0.1/0.01,boundaries=0.6/0.3",
    "one-cycle:peak=0.95",
    "one-cycle-half:peak=0.4",
    "one-cycle-truncated:stop=0.3",
    "exponential:rate=0",
    "exponential:decay=-1",
    "exponential:staircase=maybe",
    "polynomial:decay=0",
    "polynomial:end_lr=-0.1",
    "cyclical:lower=0.5",
    "cyclical:cycles=0",
    "cyclical:cycles=2,length=0.5",
    "cyclical:mode=sawtooth",
    "warm-restarts:period=0",
    "warm-restarts:period=-0.2",
    "warm-restarts:mult=0.5",
    "warm-restarts:shape=step",
    "warm-restarts:min_lr=1",
    "linear-warm-restarts:period=0",
])
def test_contradictory_specs_raise_config_error(spec):
    with pytest.raises(ConfigError) as info:
        schedules.build(spec, 100, lr_max=LR)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError):  # the trainer validates with total_steps=1
        schedules.build(spec, 1, lr_max=LR)


@pytest.mark.parametrize("spec", ["cyclical:high=0.8,low=0.9", "cyclical:length=0", "one-cycle:peak=0.95"])
def test_contradictory_momentum_specs(spec):
    with pytest.raises(ConfigError):
        schedules.build_momentum(spec, 100, momentum=0.9)


def test_single_boundary_and_unknown_parameter():
    assert values("piecewise:values=1/0.5,boundaries=0.5")[501] == pytest.approx(LR / 2)
    with pytest.raises(ConfigError, match="no parameter"):
        schedules.build("cyclical:amplitude=2", 100, lr_max=LR)


# ----------------------------------------------------------------------------- torch scheduler
def test_as_lr_scheduler_steps_sgd():
    total = 50
    sched = schedules.build("warm-restarts:period=0.2,mult=2", total, lr_max=LR)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD([{"params": [model.weight], "lr": 5.0}, {"params": [model.bias], "lr": 7.0}],
                          lr=1.0, momentum=0.9)
    scheduler = schedules.as_lr_scheduler(opt, sched)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    for s in range(total + 3):
        assert [g["lr"] for g in opt.param_groups] == [sched(s)] * 2
        assert scheduler.get_last_lr() == [sched(s)] * 2
        before = model.weight.detach().clone()
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        scheduler.step()
        if s == 0:
            assert not torch.equal(before, model.weight)
    assert opt.param_groups[0]["lr"] == sched(total)  # past the end: held at the end value
