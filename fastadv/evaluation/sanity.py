"""Sanity checks that run with every evaluation: cheap tests that a robust number can be believed.

Each check probes the model and the main attack on a small fixed subset of the points
(200 by default; the extra attacks run only there, so the checks cost a few attacks on
200 points) and reuses the per-example results the evaluation already has for the same
points. A check that fails means the robust accuracy is *not trusted*: the evaluation is
broken (inputs not in [0,1], a model that changes between calls) or the attack is
failing for reasons that do not make the model robust (gradient masking, softmax outputs,
randomness, a too-weak attack).

The checks (name: what must hold):

- ``logits``: the model outputs logits, not probabilities;
- ``deterministic``: two forward passes in eval mode agree;
- ``gradients``: input gradients are non-zero for most points;
- ``eps-zero``: robust accuracy at eps=0 equals clean accuracy;
- ``eps-monotone``: robust accuracy never rises with eps;
- ``steps-monotone``: robust accuracy never rises with more steps (or restarts);
- ``pgd-vs-fgsm``: PGD never does better (for the model) than FGSM at the same eps;
- ``large-eps``: a very large eps (1.0, the whole [0,1] box) takes robust accuracy to about 0%;
- ``black-box``: a gradient-free attack (Square, ``BLACK_BOX_QUERIES`` queries) breaks at most about
  1% of the points the gradient attacks (the main attack and APGD-CE) left robust. AutoAttack flags the opposite as a sign of an
  unreliable evaluation: it means the gradients are masked, and the white-box number overstates.

Comparisons between two attacks allow a rise of one point of the subset: random starts
differ between attacks, and one point is below what a real failure looks like.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from fastadv.core.attacks import ATTACKS, Attack, ball
from fastadv.evaluation.points import eval_mode, predict_points
from fastadv.evaluation.spec import AttackSpec

ZERO_GRAD_FRACTION = 0.1  # more than this share of points with an all-zero input gradient fails `gradients`
LARGE_EPS = 1.0  # L-inf radius that covers the whole [0,1] box: any image can become any other (L2: sqrt(d))
LARGE_EPS_MAX_ACC = 0.02  # robust accuracy above this at LARGE_EPS fails `large-eps`
PROB_TOL = 1e-4  # rows of outputs in [0,1] summing to 1 within this look like probabilities
DETERMINISM_TOL = 1e-5  # relative difference between two forward passes
BLACK_BOX_QUERIES = 300  # Square queries per point in `black-box` (AutoAttack standard: 5,000)
BLACK_BOX_APGD_STEPS = 50  # `black-box` first runs APGD-CE (pyautoattack) too: Square is judged on what both left
BLACK_BOX_MAX_BROKEN = 0.01  # `black-box` fails when Square breaks more than this share of the robust points (and > 1)


@dataclass(frozen=True)
class CheckResult:
    """One check: ``passed`` is True, False (the number is not trusted) or None (not applicable)."""

    name: str
    passed: bool | None
    detail: str  # what was measured
    explanation: str  # one line: what a failure means

    def line(self) -> str:
        status = {True: "ok", False: "FAILED", None: "skipped"}[self.passed]
        text = f"[{self.name}] {status}: {self.detail}"
        return text + (f" -- {self.explanation}" if self.passed is False else "")

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "detail": self.detail, "explanation": self.explanation}


def subset_indices(n: int, points: int, seed: int = 0) -> torch.Tensor:
    """A fixed random subset of ``points`` indices out of ``n`` (sorted), the same for a given seed."""
    if points <= 0 or points >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:points].sort().values


class Probe:
    """The model, the subset and the main attack, with per-spec results cached.

    ``correct(spec)`` is the per-example robust mask (right on the clean input and under
    ``spec``); ``known`` may hold attack-correct masks already computed for these points.
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, spec, *,
                 known: Mapping | None = None, seed: int = 0, batch_size: int = 500,
                 attacks: Mapping[str, Attack] = ATTACKS, progress=None):
        self.model, self.x, self.y, self.spec = model, x, y, spec
        self.batch_size, self.seed = batch_size, seed
        self.n = len(y)
        self.tol = 1 / max(self.n, 1)  # one point of the subset
        self.attacks, self.progress = attacks, progress
        self.cache: dict = dict(known or {})
        if None not in self.cache:
            self.cache[None] = self.predict(None)

    def outputs(self) -> torch.Tensor:
        """Model outputs on the subset (N x classes, float), computed batch by batch without gradients."""
        with torch.no_grad():
            return torch.cat([self.model(self.x[i:i + self.batch_size]).float()
                              for i in range(0, self.n, self.batch_size)])

    @property
    def clean(self) -> torch.Tensor:
        return self.cache[None]

    def correct(self, spec) -> torch.Tensor:
        if spec not in self.cache:
            self.cache[spec] = self.predict(spec)
        return self.clean & self.cache[spec]

    def predict(self, spec, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Attack-correct mask under ``spec`` (None = clean) of the subset, or of its points ``idx``."""
        x, y = (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])
        return predict_points(self.model, x, y, spec, batch_size=self.batch_size, seed=self.seed,
                              device=self.x.device, attacks=self.attacks, progress=self.progress).correct

    def correct_where(self, spec, where: torch.Tensor) -> torch.Tensor:
        """Attack-correct mask under ``spec``, with ``spec`` run only on the points ``where`` holds and False
        elsewhere (AutoAttack's rule: an attack is spent only on what the earlier ones left); not cached. For
        ``where`` within the clean-correct points, as the callers pass, it equals ``correct(spec) & where``."""
        out = torch.zeros_like(where)
        idx = where.nonzero().squeeze(1)
        if len(idx):
            out[idx] = self.predict(spec, idx)
        return out

    def acc(self, spec=None) -> float:
        mask = self.clean if spec is None else self.correct(spec)
        return mask.float().mean().item() if self.n else 0.0

    def pgd_like(self):
        """The main attack if it is PGD, else the default PGD-20 at the same eps (for probes that need steps)."""
        return self.spec if self.spec.info.pgd_like else AttackSpec("pgd", eps=self.spec.eps, norm=self.spec.norm)

    def large_eps(self) -> float:
        """The radius of the whole [0,1] box in the main attack's norm: 1 (L-inf), sqrt(coordinates) (L2)."""
        return LARGE_EPS if self.spec.norm == "linf" else LARGE_EPS * self.x[0].numel() ** 0.5


Check = Callable[[Probe], tuple]  # -> (passed: bool | None, detail: str)
CHECKS: dict[str, tuple[Check, str]] = {}


def register_check(name: str, explanation: str):
    """Add a check ``fn(probe) -> (passed, detail)`` with the one line shown when it fails."""

    def wrap(fn: Check) -> Check:
        CHECKS[name] = (fn, explanation)
        return fn

    return wrap


def pct(a: float) -> str:
    return f"{100 * a:.1f}%"


@register_check("logits", "the model seems to output probabilities: softmax outputs flatten the loss and "
                "weaken gradient attacks, so attacks must see logits")
def check_logits(p: Probe):
    out = p.outputs()
    looks_prob = bool(out.min() >= -PROB_TOL and out.max() <= 1 + PROB_TOL
                      and ((out.sum(1) - 1).abs() <= PROB_TOL).all())
    detail = ("outputs are in [0,1] and every row sums to 1" if looks_prob
              else f"outputs range over [{out.min().item():.3g}, {out.max().item():.3g}]")
    return not looks_prob, detail


@register_check("deterministic", "the model is randomized: a fixed attack overstates robustness; use an "
                "attack over its randomness (EOT) and report it")
def check_deterministic(p: Probe):
    a, b = p.outputs(), p.outputs()
    diff = (a - b).abs().max().item() if len(a) else 0.0
    flips = (a.argmax(1) != b.argmax(1)).sum().item()
    ok = diff <= DETERMINISM_TOL * (1 + a.abs().max().item()) and flips == 0
    return ok, f"two eval-mode passes differ by up to {diff:.3g} and in {flips} predictions"


@register_check("gradients", "zero input gradients (rounding, quantization, a saturated softmax) blind gradient "
                "attacks: the robust number is an overestimate (gradient masking)")
def check_gradients(p: Probe):
    zeros = []
    for i in range(0, p.n, p.batch_size):
        x = p.x[i:i + p.batch_size].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(p.model(x).float(), p.y[i:i + p.batch_size], reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
        zeros.append(grad.flatten(1).abs().amax(1) == 0)
    zero = torch.cat(zeros).float().mean().item() if p.n else 0.0
    return zero <= ZERO_GRAD_FRACTION, f"{pct(zero)} of points have an all-zero input gradient"


@register_check("eps-zero", "at eps=0 the attack must not change any prediction: inputs are not in [0,1], or "
                "the model changes between calls")
def check_eps_zero(p: Probe):
    spec = p.spec.at_eps(0.0)
    changed = (p.correct(spec) != p.clean).sum().item()
    return changed == 0, (f"robust {pct(p.acc(spec))} at eps=0 vs clean {pct(p.acc())} "
                          f"({changed} of {p.n} points differ)")


@register_check("eps-monotone", "robust accuracy rose with eps: the attack is failing (too weak or masked "
                "gradients) rather than the model being robust")
def check_eps_monotone(p: Probe):
    eps = p.spec.eps
    grid = {e: p.spec.at_eps(e) for e in (0.0, eps / 4, eps / 2, eps)}
    # eps-curve results the evaluation already has for these points come for free
    grid.update({s.eps: s for s in p.cache if s is not None and s == p.spec.at_eps(s.eps)})
    curve = sorted((e, p.acc(s)) for e, s in grid.items())
    rises = [(e0, a0, e1, a1) for i, (e0, a0) in enumerate(curve) for e1, a1 in curve[i + 1:] if a1 > a0 + p.tol]
    detail = ", ".join(f"{e:.4g}: {pct(a)}" for e, a in curve)
    if rises:
        e0, a0, e1, a1 = max(rises, key=lambda r: r[3] - r[2])
        detail = f"robust {pct(a1)} at eps={e1:.4g} > {pct(a0)} at eps={e0:.4g} ({detail})"
    return not rises, detail


@register_check("steps-monotone", "more steps or restarts gave higher robust accuracy: the attack does not "
                "converge (step size, masked or noisy gradients)")
def check_steps_monotone(p: Probe):
    spec = p.spec
    if not spec.info.pgd_like or (spec.steps <= 1 and spec.restarts <= 1):
        return None, f"not applicable to {spec.short()}"
    weaker = []
    if spec.steps > 1:
        weaker.append(replace(spec, steps=max(1, spec.steps // 4), restarts=1))
    if spec.restarts > 1:
        weaker.append(replace(spec, restarts=1))
    main = p.acc(spec)
    parts = [f"{spec.short()}: {pct(main)}"] + [f"{w.short()}: {pct(p.acc(w))}" for w in weaker]
    ok = all(main <= p.acc(w) + p.tol for w in weaker)
    return ok, ", ".join(parts)


@register_check("pgd-vs-fgsm", "PGD did worse than one FGSM step at the same eps: the PGD attack is broken or "
                "its gradients are masked")
def check_pgd_vs_fgsm(p: Probe):
    if not p.spec.info.pgd_like:
        return None, f"not applicable to {p.spec.short()}"
    fgsm = AttackSpec("fgsm", eps=p.spec.eps, loss=p.spec.loss, norm=p.spec.norm)
    a_pgd, a_fgsm = p.acc(p.spec), p.acc(fgsm)
    return a_pgd <= a_fgsm + p.tol, f"{p.spec.short()} {pct(a_pgd)} vs FGSM {pct(a_fgsm)} at eps={p.spec.eps:.4g}"


@register_check("large-eps", f"at eps={LARGE_EPS:g} (L2: sqrt(d)) any image can be turned into any other, yet the "
                "attack fails: gradient masking or a broken attack")
def check_large_eps(p: Probe):
    spec = p.pgd_like().at_eps(p.large_eps())
    acc = p.acc(spec)
    return acc <= LARGE_EPS_MAX_ACC, f"robust {pct(acc)} under {spec.short()} at {ball(spec)} (want <= {pct(LARGE_EPS_MAX_ACC)})"


@register_check("black-box", "a black-box attack (Square) broke points the gradient attack could not: the gradients "
                "are masked or obfuscated, so the white-box robust accuracy overstates; quote the black-box or "
                "AutoAttack figure")
def check_black_box(p: Probe):
    from fastadv.core.attacks import MissingDependency

    white = [p.spec, AttackSpec("apgd-ce", eps=p.spec.eps, steps=BLACK_BOX_APGD_STEPS, norm=p.spec.norm)]  # the gradient attacks
    try:
        robust = p.correct_where(white[1], p.correct(white[0]))  # APGD only on the points the main attack left
        n = int(robust.sum())
        if n == 0:
            return None, f"no point is robust under {' and '.join(w.short() for w in white)}: nothing to look for"
        spec = AttackSpec("square", eps=p.spec.eps, steps=BLACK_BOX_QUERIES, norm=p.spec.norm)
        held = p.correct_where(spec, robust)[robust]
    except MissingDependency:
        return None, "Square and APGD need pyautoattack (pip install pyautoattack)"
    broken = n - int(held.sum())
    allowed = max(1, int(BLACK_BOX_MAX_BROKEN * n))
    return broken <= allowed, (f"{spec.short()} broke {broken} of the {n} points robust under "
                               f"{' and '.join(w.short() for w in white)} ({pct(broken / n)}; allowed: {allowed})")


def run_checks(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, spec, *, known: Mapping | None = None,
               seed: int = 0, batch_size: int = 500, attacks: Mapping[str, Attack] = ATTACKS,
               only: list[str] | None = None, progress=None) -> list[CheckResult]:
    """Run the checks (all, or the names in ``only``) on float [0,1] points ``x`` (N x C x H x W), ``y`` (N).

    ``spec`` is the main attack (an ``AttackSpec``); ``attacks`` maps attack names to
    functions (tests pass deliberately broken ones); ``known`` holds per-example
    attack-correct masks already computed for these points, keyed by spec (``None`` = clean).
    The model is put in eval mode and restored after.
    """
    names = list(CHECKS) if only is None else only
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown sanity check(s) {', '.join(unknown)} (valid: {', '.join(CHECKS)})")
    if len(y) == 0:
        return [CheckResult(name, None, "no points to check", CHECKS[name][1]) for name in names]
    with eval_mode(model):
        probe = Probe(model, x, y, spec, known=known, seed=seed, batch_size=batch_size, attacks=attacks,
                      progress=progress)
        results = []
        for name in names:
            fn, explanation = CHECKS[name]
            passed, detail = fn(probe)
            results.append(CheckResult(name, passed, detail, explanation))
    return results
