"""Clean and adversarial accuracy of a model on [0,1] images, batched on the device.

Two entry points:

* ``evaluate(model, data, attack=AttackSpec(...))``: clean and robust accuracy under one
  attack (what the trainer calls for its periodic check and its final number).
* ``evaluate_suite(model, data, [AttackSpec(...), ...], eps_curve=..., sanity=True)``: the
  full evaluation of ``fastadv eval``: clean accuracy, each attack, the per-example worst
  case over all of them, per-class accuracy, robust accuracy against eps, and the sanity
  checks of ``fastadv.evaluation.sanity``.

A point counts as robust only when the model classifies it correctly *and* the attack
fails on it; every point is attacked for all steps (no early stop), with restarts the
per-example worst case is kept, and the worst case over several attacks is taken per
example. Per-example results stay on the device until the end of a pass (no host syncs
inside the batch loop).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch

from fastadv.core import distributed
from fastadv.core.attacks import ATTACKS, Attack
from fastadv.data import Dataset
from fastadv.evaluation.points import (
    PointResults,
    Progress,
    as_float,
    clean_pass,
    eval_mode,
    predict_points,
    test_split,
)
from fastadv.evaluation.sanity import run_checks, subset_indices
from fastadv.evaluation.spec import AttackSpec, spec_from


@dataclass(frozen=True)
class EvalResult:
    clean_acc: float
    robust_acc: float
    clean_loss: float
    robust_loss: float
    points: int
    attack: str
    trusted: bool | None = None  # None: no sanity checks were run
    sanity: tuple = ()  # fastadv.evaluation.sanity.CheckResult for each check run
    aa_lite: dict | None = None  # AALite.record(): the worst case of the main attack, APGD-CE and APGD-T

    @property
    def headline_acc(self) -> float:
        """The number to quote: AA-lite's worst case when it ran, else the main attack's robust accuracy."""
        return self.aa_lite["robust_acc"] if self.aa_lite else self.robust_acc

    def to_dict(self) -> dict:
        out = asdict(self)
        out["sanity"] = [c.to_dict() for c in self.sanity]
        return out


@dataclass(frozen=True)
class AALite:
    """AA-lite: per point, the worst case of the main PGD attack, APGD-CE and APGD-T (``pyautoattack``).

    Run on the first ``points`` test points; like AutoAttack, each attack only tries the points
    the previous ones left robust. ``targets`` sizes APGD-T (AutoAttack standard: 9 target
    classes), whose cost is about ``targets * steps`` forward-backward passes per robust point;
    ``steps`` are APGD iterations (standard: 100); ``targets = 0`` leaves APGD-T out. FAB-T and Square, the rest of standard
    AutoAttack, are left out: they rarely lower the figure on a model whose gradients are not
    masked, and the masking check of ``fastadv.evaluation.sanity`` looks for that case.
    """

    points: int = 1000
    targets: int = 3
    steps: int = 100

    def specs(self, eps: float, norm: str = "linf") -> list[AttackSpec]:
        """APGD-CE, then APGD-T unless ``targets`` is 0 (APGD-CE alone: the cheapest outside check), in ``norm``."""
        ce = AttackSpec("apgd-ce", eps=eps, steps=self.steps, norm=norm)
        return [ce] + ([AttackSpec("apgd-t", eps=eps, steps=self.steps, targets=self.targets, norm=norm)]
                       if self.targets else [])

    def describe(self, main: AttackSpec) -> str:
        return "worst case of " + ", ".join([main.describe()] + [s.describe() for s in self.specs(main.eps, main.norm)])

    def run(self, model, x, y, robust: torch.Tensor, main: AttackSpec, *, seed: int, batch_size: int,
            device) -> dict:
        """AA-lite counts on points ``x``, ``y`` (at most ``points``) whose main-attack robust mask is ``robust``."""
        t0 = time.perf_counter()
        n = len(y)
        counts = [int(robust.sum())]
        for spec in self.specs(main.eps, main.norm):
            idx = robust.nonzero().squeeze(1)
            if len(idx):
                r = predict_points(model, x[idx.to(x.device)], y[idx.to(y.device)], spec, batch_size=batch_size,
                                   seed=seed, device=device)
                robust = robust.clone()
                robust[idx] = r.correct
            counts.append(int(robust.sum()))
        return self.record(n, counts, main, time.perf_counter() - t0)

    def record(self, n: int, counts: list[int], main: AttackSpec, seconds: float) -> dict:
        """The summary entry from per-stage robust counts (main attack, then after each APGD attack)."""
        names = [main.describe()] + [s.describe() for s in self.specs(main.eps, main.norm)]
        return {"points": n, "robust_acc": counts[-1] / max(n, 1), "robust_counts": counts,
                "stages": [{"after": name, "robust_acc": c / max(n, 1)} for name, c in zip(names, counts)],
                "attack": self.describe(main), "targets": self.targets, "steps": self.steps, "seconds": seconds}


def evaluate(model: torch.nn.Module, data, *, attack: AttackSpec | str = "pgd", eps: float | None = None,
             alpha: float | None = None, steps: int | None = None, restarts: int | None = None,
             loss: str | None = None, limit: int = 0, batch_size: int = 500, seed: int = 0,
             device: torch.device | str | None = None, sanity: bool = False,
             sanity_points: int = 200, aa_lite: AALite | None = None, norm: str | None = None) -> EvalResult:
    """Clean and robust accuracy (fractions in [0,1]) over the test split or an (x, y) pair.

    A point counts as robust only if the model is right on it and the attack fails; every point is
    attacked for all steps, and with restarts the per-example worst case is kept. Runs in eval mode
    and restores the model's previous mode.

    Arguments:
        model (nn.Module): takes [0,1] images, returns logits.
        data: a ``fastadv.data.Dataset`` (its test split) or an ``(x, y)`` pair; uint8 [0,255] or float [0,1].
        attack (AttackSpec or str): the attack (then ``eps``, ``alpha``, ``steps``, ``restarts`` and ``loss``
            must not be given: a ConfigError), or its name with those settings. (Default: PGD-20, step eps/4,
            1 restart, CE loss, eps the dataset's standard radius: an (x, y) pair must give eps)
        norm (str, optional): ``"linf"`` (the default) or ``"l2"``, for an attack given by name (an
            ``AttackSpec`` carries its own); AA-lite runs in the main attack's norm.
        limit (int): the first ``limit`` points only (0 = all). batch_size (int): (Default: 500)
        seed (int): seed of the random starts: one spec, one seed, one number. (Default: 0)
        sanity (bool): also run the checks of ``fastadv.evaluation.sanity`` on ``sanity_points`` points.
        aa_lite (AALite, optional): APGD-CE and APGD-T on the first ``aa_lite.points`` points, only where
            ``attack`` failed: ``EvalResult.aa_lite`` then holds the per-point worst case, the headline.

    Returns:
        ``EvalResult``: clean_acc, robust_acc, losses, points, the attack's description, the sanity
        verdicts (``trusted``) and ``aa_lite``.

    Example::

        r = fastadv.evaluate(model, data, eps=8/255, steps=20, aa_lite=fastadv.AALite(points=1000))
        print(r.clean_acc, r.robust_acc, r.headline_acc)
    """
    spec = spec_from(attack, eps, alpha, steps, restarts, loss, dataset=dataset_name(data), norm=norm)
    x_all, y_all = test_split(data, limit)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    with eval_mode(model):
        clean = clean_pass(model, x_all, y_all, batch_size, device)
        adv = predict_points(model, x_all, y_all, spec, batch_size=batch_size, seed=seed, device=device)
        checks = ()
        if sanity:
            checks = tuple(run_sanity(model, x_all, y_all, spec, {None: clean, spec: adv}, points=sanity_points,
                                      seed=seed, batch_size=batch_size, device=device))
    robust = clean.correct & adv.correct
    aa = None
    if aa_lite is not None:
        k = min(aa_lite.points, len(y_all))
        with eval_mode(model):
            aa = aa_lite.run(model, x_all[:k], y_all[:k], robust[:k], spec, seed=seed, batch_size=batch_size,
                             device=device)
    n = max(len(y_all), 1)
    sums = torch.stack([clean.correct.sum(), robust.sum(), clean.loss.sum(), adv.loss.sum()]).double() / n
    clean_acc, robust_acc, clean_loss, robust_loss = sums.tolist()
    trusted = all(c.passed is not False for c in checks) if sanity else None
    return EvalResult(clean_acc, robust_acc, clean_loss, robust_loss, len(y_all), spec.describe(), trusted, checks,
                      aa)


def dataset_name(data) -> str | None:
    """The name of a ``Dataset`` (it gives the standard eps); None for an (x, y) pair."""
    return data.name if isinstance(data, Dataset) else None


def run_sanity(model, x_all, y_all, spec: AttackSpec, known: Mapping, *, points: int, seed: int, batch_size: int,
               device, attacks: Mapping[str, Attack] = ATTACKS, progress: Progress | None = None) -> list:
    """The sanity checks on a fixed random subset of ``points`` points, reusing ``known`` results."""
    idx = subset_indices(len(y_all), points, seed).to(x_all.device)
    x = as_float(x_all[idx], device)
    y = y_all[idx].to(device)
    idx_dev = idx.to(device)
    cached = {k: r.correct[idx_dev] for k, r in known.items()}
    return run_checks(model, x, y, spec, known=cached, seed=seed, batch_size=batch_size, attacks=attacks,
                      progress=progress)


# ----------------------------------------------------------------------------- the full suite
@dataclass
class EvalReport:
    """Everything ``fastadv eval`` measures; per-example tensors live on the CPU.

    ``worst_case_acc`` is the headline (per example, right on the clean point and under
    every attack); ``robust_acc`` is the main attack's alone, comparable with a run's summary.
    """

    points: int
    total_points: int  # size of the test split before --limit
    num_classes: int
    seed: int
    batch_size: int
    clean: PointResults
    attacks: list[PointResults]
    eps_curve: list[tuple[float, float]] = field(default_factory=list)  # (eps, robust acc), main attack
    curve_spec: AttackSpec | None = None
    sanity: list = field(default_factory=list)
    sanity_points: int = 0
    seconds: float = 0.0

    @property
    def clean_acc(self) -> float:
        return self.clean.acc

    def robust_correct(self, result: PointResults) -> torch.Tensor:
        return self.clean.correct & result.correct

    @property
    def worst_correct(self) -> torch.Tensor:
        """Per example: right on the clean input and under every attack run."""
        out = self.clean.correct.clone()
        for r in self.attacks:
            out &= r.correct
        return out

    @property
    def worst_case_acc(self) -> float:
        """The number to quote: right on the clean point and under every attack run, per example."""
        return self.worst_correct.float().mean().item() if self.points else 0.0

    @property
    def robust_acc(self) -> float:
        """Robust accuracy under the main attack alone (``attacks[0]``; what a run's summary reports)."""
        return self.robust_correct(self.attacks[0]).float().mean().item() if self.points else 0.0

    @property
    def trusted(self) -> bool:
        return all(c.passed is not False for c in self.sanity)

    @property
    def failed_checks(self) -> list:
        return [c for c in self.sanity if c.passed is False]

    def per_class(self, y: torch.Tensor) -> list[dict]:
        """Clean and worst-case robust accuracy for each class present among the points."""
        y = y.cpu()
        worst = self.worst_correct
        rows = []
        for c in range(self.num_classes):
            mask = y == c
            n = int(mask.sum())
            if n:
                rows.append({"class": c, "points": n, "clean_acc": self.clean.correct[mask].float().mean().item(),
                             "robust_acc": worst[mask].float().mean().item()})
        return rows

    def to_dict(self, y: torch.Tensor) -> dict:
        return {
            "points": self.points, "total_points": self.total_points, "seed": self.seed,
            "batch_size": self.batch_size, "clean_acc": self.clean_acc,
            "clean_loss": self.clean.loss.mean().item() if self.points else 0.0,
            "attacks": [{**r.spec.to_dict(), "robust_acc": self.robust_correct(r).float().mean().item(),
                         "robust_loss": r.loss.mean().item() if self.points else 0.0, "seconds": r.seconds}
                        for r in self.attacks],
            "robust_acc": self.robust_acc,  # under the main attack, as in a run's summary.json
            "attack": self.attacks[0].spec.describe(),
            "worst_case_acc": self.worst_case_acc,  # per example, over every attack: the number to quote
            "worst_case_over": [r.spec.describe() for r in self.attacks],
            "per_class": self.per_class(y),
            "eps_curve": {"attack": self.curve_spec.to_dict() if self.curve_spec else None,
                          "points": [{"eps": e, "robust_acc": a} for e, a in self.eps_curve]},
            "sanity": {"points": self.sanity_points, "trusted": self.trusted,
                       "checks": [c.to_dict() for c in self.sanity]},
            "trusted": self.trusted,
            "seconds": self.seconds,
        }


def evaluate_suite(model: torch.nn.Module, data, attacks: Sequence[AttackSpec], *, eps_curve: Sequence[float] = (),
                   limit: int = 0, batch_size: int = 500, seed: int = 0, device: torch.device | str | None = None,
                   sanity: bool = True, sanity_points: int = 200, num_classes: int | None = None,
                   progress: Progress | None = None, log: Callable[[str], None] | None = None) -> EvalReport:
    """The full evaluation of ``fastadv eval``: clean accuracy, every attack, their per-example worst case,
    per-class accuracy, robust accuracy against eps and the sanity checks.

    Arguments:
        model (nn.Module): takes [0,1] images, returns logits.
        data: a ``Dataset`` or an ``(x, y)`` pair.
        attacks (list of AttackSpec): ``attacks[0]`` is the main attack: the eps curve repeats it at each
            eps in ``eps_curve`` (on all the points) and the sanity checks probe it on ``sanity_points``.
        limit, batch_size, seed: as for ``evaluate``.
        progress (callable, optional): ``(description, total) -> bar`` (e.g. ``tqdm``).
        log (callable, optional): receives AutoAttack's own progress lines.

    Returns:
        ``EvalReport``: ``worst_case_acc`` (the number to quote), each attack's results, ``per_class``,
        ``eps_curve``, ``sanity``.

    Example::

        report = fastadv.evaluate_suite(model, data, [fastadv.AttackSpec("pgd", eps=8/255, steps=50, restarts=10),
                                                      fastadv.AttackSpec("autoattack", eps=8/255)], limit=1000)
    """
    if not attacks:
        raise ValueError("evaluate_suite needs at least one attack")
    t0 = time.perf_counter()
    x_all, y_all = test_split(data, limit)
    total = len(test_split(data)[1])
    device = torch.device(device) if device is not None else next(model.parameters()).device
    kw = dict(batch_size=batch_size, seed=seed, device=device, progress=progress)
    main = attacks[0]
    with eval_mode(model):
        clean = predict_points(model, x_all, y_all, None, **kw)
        results = [predict_points(model, x_all, y_all, spec, log=log, **kw) for spec in attacks]
        known: dict[Any, PointResults] = {None: clean, **{r.spec: r for r in results}}
        curve = []
        for eps in eps_curve:
            spec = main.at_eps(eps)
            if spec not in known:
                known[spec] = predict_points(model, x_all, y_all, spec, **kw)
            curve.append((eps, (clean.correct & known[spec].correct).float().mean().item()))
        checks = (run_sanity(model, x_all, y_all, main, {k: v for k, v in known.items() if k is None or
                                                          not k.info.outside},
                             points=sanity_points, seed=seed, batch_size=batch_size, device=device,
                             progress=progress) if sanity else [])
    if num_classes is None:
        num_classes = int(y_all.max()) + 1 if len(y_all) else 0
    to_cpu = lambda r: replace(r, correct=r.correct.cpu(), loss=r.loss.cpu())  # noqa: E731
    return EvalReport(points=len(y_all), total_points=total, num_classes=num_classes, seed=seed,
                      batch_size=batch_size, clean=to_cpu(clean), attacks=[to_cpu(r) for r in results],
                      eps_curve=curve, curve_spec=main if eps_curve else None, sanity=checks,
                      sanity_points=min(sanity_points, len(y_all)) if sanity else 0,
                      seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- under torchrun
def evaluate_distributed(model, data, *, attack: AttackSpec | str = "pgd", eps: float | None = None,
                         alpha: float | None = None, steps: int | None = None, restarts: int | None = None,
                         loss: str | None = None, limit: int = 0, batch_size: int = 500, seed: int = 0,
                         device=None, sanity: bool = False, sanity_points: int = 200,
                         aa_lite: AALite | None = None, norm: str | None = None) -> EvalResult:
    """``evaluate`` (same arguments) under torchrun: the points split across ranks and the figures reduced.

    Each rank attacks a contiguous share of the (first ``limit``) points with rank 0's buffers;
    the result is over all points and the same on every rank. AA-lite's points (the first
    ``aa_lite.points``) are attacked by the ranks whose shares hold them. Without a group: ``evaluate``.
    """
    spec = spec_from(attack, eps, alpha, steps, restarts, loss, dataset=dataset_name(data), norm=norm)
    options = dict(attack=spec, batch_size=batch_size, seed=seed, device=device, sanity=sanity,
                   sanity_points=sanity_points)
    model = distributed.unwrap(model)
    if not distributed.active():
        return evaluate(model, data, limit=limit, aa_lite=aa_lite, **options)
    rank, world = distributed.rank(), distributed.world_size()
    distributed.sync_buffers(model)
    x, y = test_split(data, limit)
    lo, hi = rank * len(y) // world, (rank + 1) * len(y) // world
    share = None if aa_lite is None else replace(aa_lite, points=max(0, min(hi, aa_lite.points) - lo))
    part = evaluate(model, (x[lo:hi], y[lo:hi]), aa_lite=share if share and share.points else None, **options)
    k = part.points
    sums = torch.tensor([part.clean_acc * k, part.robust_acc * k, part.clean_loss * k, part.robust_loss * k, k],
                        dtype=torch.float64)
    clean, robust, closs, rloss, n = distributed.all_reduce_sum(sums).tolist()
    n_points = round(n)
    scale = 1.0 / max(n, 1.0)
    verdicts = distributed.gather_objects(part.trusted)  # sanity checks (if asked for) ran on each rank's share
    trusted = None if verdicts[0] is None else all(v is not False for v in verdicts)
    aa = merge_aa_lite(aa_lite, distributed.gather_objects(part.aa_lite), spec) if aa_lite else None
    return EvalResult(clean * scale, robust * scale, closs * scale, rloss * scale, n_points, part.attack,
                      trusted, distributed.broadcast_object(part.sanity), aa)


def merge_aa_lite(aa_lite: AALite, parts: list, main: AttackSpec) -> dict:
    """One AA-lite record from the ranks' partial ones (ranks without AA-lite points give None)."""
    parts = [p for p in parts if p]
    counts = [sum(c) for c in zip(*(p["robust_counts"] for p in parts))]
    n = sum(p["points"] for p in parts)
    return aa_lite.record(n, counts, main, max(p["seconds"] for p in parts))
