"""Attacks as plain functions of (model, x, y), in the L-inf or the L2 threat model (``norm``).

Contract: inputs in [0,1]; the result ``x_adv`` satisfies ``|x_adv - x| <= eps`` in the attack's norm
(``"linf"``, the default, or ``"l2"``, per example; ``fastadv.core.norms``) and ``x_adv in [0,1]``. Gradients are taken with ``torch.autograd.grad`` with respect to the
perturbation only, so parameter ``.grad`` is never touched, and ``model.training`` is
left as the caller set it (training-time attacks run in train mode, evaluation in eval).

The loops run on the device with no host synchronization (no ``.item()``, no printing,
no data-dependent Python branches), so a batch of K PGD steps costs K forward-backward
passes plus elementwise work.

``autoattack``, ``apgd_ce``, ``apgd_t`` and ``square`` wrap the ``pyautoattack`` package (a dependency of
fastadv): outside attacks, run as its authors wrote it.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from fastadv.core.norms import check_norm, project, steepest, uniform_ball
from fastadv.errors import UserError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, y) -> per-example loss


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def cw_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: best other logit minus the true logit (higher = worse for the model)."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "cw": cw_loss}


def feasible_box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel bounds (lo, hi) on delta: the eps-ball intersected with x + delta in [0,1].

    Computed once per batch so that each PGD step projects with a single clamp.
    """
    return (-x).clamp(min=-eps), (1.0 - x).clamp(max=eps)


def random_delta(x: torch.Tensor, eps: float, generator: torch.Generator | None = None,
                 norm: str = "linf") -> torch.Tensor:
    """Uniform start in the eps-ball of ``norm`` (L-inf: U[-eps, eps] per pixel), projected so x + delta is in [0,1]."""
    return project(x, uniform_ball(x, eps, norm, generator), eps, norm)


def input_gradient(model: torch.nn.Module, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor,
                   loss_fn: LossFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of the summed loss w.r.t. delta, with per-example loss and logits at x + delta."""
    delta = delta.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x + delta)
        losses = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(losses.sum(), delta)
    return grad, losses.detach(), logits.detach()


def pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
        steps: int, restarts: int = 1, random_start: bool = True, loss: str = "ce",
        generator: torch.Generator | None = None, norm: str = "linf") -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) from ``x``, in L-inf or L2: the adversarial images.

    Every example takes all ``steps`` steps of size ``alpha`` (no early stop): L-inf, signed-gradient steps
    and a clamp; L2, steps along the gradient scaled to unit L2 norm, then the perturbation scaled back onto
    the eps-ball and clipped to [0,1] (as torchattacks' PGDL2). With
    several ``restarts`` the per-example worst case is kept: a misclassifying perturbation beats one
    that is not, and among equals the higher loss wins. At ``eps = 0`` (or no steps) the result is
    ``x`` clipped to [0,1] with no work and no random numbers drawn.

    Arguments:
        model (nn.Module): takes [0,1] images, returns logits; its mode (train/eval) is left as it is.
        eps (float): radius in pixel units, e.g. ``8/255`` (L-inf) or ``0.5`` (L2).
        alpha (float): step size, in the same norm (the thesis' PGD-20: eps/4).
        steps (int): iterations. restarts (int): random restarts, worst case kept. (Default: 1)
        random_start (bool): start uniformly in the eps-ball (Default: True), else from x.
        loss (str): ``"ce"`` or ``"cw"`` (Carlini-Wagner margin). (Default: ``"ce"``)
        generator (torch.Generator, optional): for the random starts.
        norm (str): ``"linf"`` or ``"l2"``. (Default: ``"linf"``)

    Shape:
        - x: :math:`(N, C, H, W)` in [0, 1]; y: :math:`(N)` class indices.
        - output: :math:`(N, C, H, W)`, within ``eps`` of x and in [0, 1].

    Example::

        x_adv = fastadv.pgd(model, x, y, eps=8/255, alpha=2/255, steps=20)
        x_adv = fastadv.pgd(model, x, y, eps=0.5, alpha=0.125, steps=20, norm="l2")
    """
    check_norm(norm)
    if eps == 0 or steps == 0:
        return x.detach().clamp(0.0, 1.0)
    loss_fn = LOSSES[loss]
    lo, hi = feasible_box(x, eps) if norm == "linf" else (None, None)
    view = (-1, *([1] * (x.dim() - 1)))
    best_delta = None
    for _ in range(restarts):
        delta = random_delta(x, eps, generator, norm) if random_start else torch.zeros_like(x)
        for _ in range(steps):
            grad, _, _ = input_gradient(model, x, delta, y, loss_fn)
            if norm == "linf":
                delta = torch.clamp(delta.add(grad.sign(), alpha=alpha), lo, hi)  # step, then project: 3 ops
            else:
                delta = project(x, delta.add(steepest(grad, norm), alpha=alpha), eps, norm)
        if restarts == 1:
            best_delta = delta  # nothing to compare: skip the extra forward pass
            break
        with torch.no_grad():
            logits = model(x + delta)
            losses = loss_fn(logits, y)
            wrong = logits.argmax(1) != y
        if best_delta is None:
            best_delta, best_wrong, best_loss = delta, wrong, losses
            continue
        better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (losses > best_loss))
        best_delta = torch.where(better.view(view), delta, best_delta)
        best_wrong, best_loss = best_wrong | wrong, torch.where(better, losses, best_loss)
    return (x + best_delta).detach()


def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
         alpha: float | None = None, random_start: bool = False, loss: str = "ce",
         generator: torch.Generator | None = None, norm: str = "linf") -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size ``alpha`` from x (or a random start).

    In L2 it is the fast gradient method: one step along the gradient scaled to unit L2 norm, then the
    perturbation projected onto the eps-ball and [0,1].

    Arguments:
        model (nn.Module): takes [0,1] images, returns logits.
        eps (float): radius. alpha (float, optional): the step. (Default: eps)
        random_start (bool): from uniform in the eps-ball (FGSM-RS, Wong et al. 2020). (Default: False)
        norm (str): ``"linf"`` or ``"l2"``. (Default: ``"linf"``)

    Shape:
        - x: :math:`(N, C, H, W)` in [0, 1]; y: :math:`(N)`; output like x.

    Example::

        x_adv = fastadv.fgsm(model, x, y, eps=8/255)
    """
    return pgd(model, x, y, eps=eps, alpha=eps if alpha is None else alpha, steps=1, restarts=1,
               random_start=random_start, loss=loss, generator=generator, norm=norm)


def n_fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float | None = None,
           noise: float = 2.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """N-FGSM's training input (de Jorge et al. 2022): x + eta + alpha * sign(grad), clipped to [0,1] only.

    eta ~ U[-noise * eps, noise * eps] per pixel (the paper: noise 2, alpha = eps); the gradient
    of the CE loss is taken at clip(x + eta, 0, 1). There is no projection back to the eps-ball:
    ``|x_adv - x| <= noise * eps + alpha`` and ``x_adv in [0,1]``. This is a training augmentation,
    not an attack for evaluating robustness at radius eps (hence not in ``ATTACKS``). At
    ``eps = 0`` it returns x clipped to [0,1] without drawing random numbers.
    """
    alpha = eps if alpha is None else alpha
    if eps == 0:
        return x.detach().clamp(0.0, 1.0)
    u = torch.rand(x.shape, generator=generator, device=x.device if generator is None else generator.device)
    start = (x + (u.to(x.device, x.dtype) * 2 - 1) * (noise * eps)).clamp(0.0, 1.0)
    grad, _, _ = input_gradient(model, start, torch.zeros_like(x), y, ce_loss)
    return (start + alpha * grad.sign()).clamp(0.0, 1.0).detach()


# ----------------------------------------------------------------------------- AutoAttack
AUTOATTACK_STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")  # the standard version's attacks, in order
OUTSIDE_NORMS = {"linf": "Linf", "l2": "L2"}  # pyautoattack's names of the norms


def outside_norm(norm: str) -> str:
    """pyautoattack's name of ``norm`` ("Linf", "L2"); ValueError for an unknown norm."""
    return OUTSIDE_NORMS[check_norm(norm)]


class MissingDependency(UserError, ImportError):
    """An optional package is needed for this feature; the message says how to install it."""


def require_pyautoattack():
    """The ``pyautoattack`` module, or a one-line error naming the extra that installs it."""
    try:
        import pyautoattack
    except ImportError:
        raise MissingDependency("APGD, Square and AutoAttack need the pyautoattack package, a dependency of fastadv: "
                                "pip install pyautoattack") from None
    return pyautoattack


@contextmanager
def autoattack_progress(log: Callable[[str], None] | None) -> Iterator[None]:
    """Send pyautoattack's own progress messages (it logs them at DEBUG level) to ``log``.

    With ``log=None`` they stay silent; the logger's level and handlers are restored after.
    """
    logger = logging.getLogger("auto-attack")
    if log is None:
        handler: logging.Handler = logging.NullHandler()
    else:
        handler = logging.Handler(logging.DEBUG)
        handler.emit = lambda record: log(f"autoattack: {record.getMessage()}")  # type: ignore[method-assign]
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if log is not None else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def outside_seed(generator: torch.Generator | None) -> int:
    """A seed for a pyautoattack attack, drawn from ``generator`` (so one evaluation seed gives one result)."""
    return int(torch.randint(2**31 - 1, (1,), generator=generator, device=_gen_device(generator)))


def autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               generator: torch.Generator | None = None, version: str = "standard",
               log: Callable[[str], None] | None = None, norm: str = "linf") -> torch.Tensor:
    """Standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square; L-inf or L2) from ``pyautoattack``: x_adv.

    Points that the model already misclassifies are returned unchanged (AutoAttack's rule);
    the seed of its random starts is drawn from ``generator``. ``log`` receives its progress.
    """
    pyautoattack = require_pyautoattack()
    seed = outside_seed(generator)
    with autoattack_progress(log), keep_global_rng(x.device):
        adversary = pyautoattack.AutoAttack(model, eps=eps, norm=outside_norm(norm), version=version, seed=seed,
                                            device=x.device)
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    return x_adv.detach()


@contextmanager
def keep_global_rng(device: torch.device) -> Iterator[None]:
    """pyautoattack reseeds torch's global generators; restore them after, so training RNG streams stay put."""
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def apgd_ce(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 100,
            restarts: int = 1, generator: torch.Generator | None = None, norm: str = "linf") -> torch.Tensor:
    """APGD with the cross-entropy loss (Croce & Hein 2020), ``pyautoattack``'s implementation: x_adv.

    ``steps`` iterations (AutoAttack standard: 100) and ``restarts`` (standard: 1). Points the
    model misclassifies are returned unchanged; a point the attack breaks gets its adversarial image.
    """
    pyautoattack = require_pyautoattack()
    with keep_global_rng(x.device):
        attack = pyautoattack.autopgd_base.APGDAttack(model, n_iter=steps, norm=outside_norm(norm), n_restarts=restarts,
                                                      eps=eps, seed=outside_seed(generator), loss="ce", device=x.device)
        return attack.perturb(x, y).detach()


def apgd_t(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 100,
           restarts: int = 1, targets: int = 9, generator: torch.Generator | None = None,
           norm: str = "linf") -> torch.Tensor:
    """Targeted APGD on the DLR loss against the ``targets`` most likely wrong classes (``pyautoattack``): x_adv.

    AutoAttack standard uses 9 targets (every other CIFAR-10 class) and 100 iterations; the run
    costs about ``targets * steps`` forward-backward passes per robust point. Needs >= 4 classes.
    """
    pyautoattack = require_pyautoattack()
    with keep_global_rng(x.device):
        with torch.no_grad():
            classes = model(x[:1]).shape[1]
        attack = pyautoattack.autopgd_base.APGDAttack_targeted(
            model, n_iter=steps, norm=outside_norm(norm), n_restarts=restarts, eps=eps, seed=outside_seed(generator),
            n_target_classes=max(1, min(targets, classes - 1)), device=x.device)
        return attack.perturb(x, y).detach()


def square(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 5000,
           generator: torch.Generator | None = None, norm: str = "linf") -> torch.Tensor:
    """Square Attack (Andriushchenko et al. 2020), black-box: random square updates, ``steps`` queries (``pyautoattack``).

    It uses no gradients, so a model whose gradients are masked (quantized inputs, saturated outputs)
    does not fool it. AutoAttack standard runs 5,000 queries from p_init 0.8; with fewer queries the
    schedule of square sizes is rescaled to the budget (``resc_schedule``).
    """
    pyautoattack = require_pyautoattack()
    with keep_global_rng(x.device):
        attack = pyautoattack.square.SquareAttack(model, norm=outside_norm(norm), n_queries=steps, eps=eps, p_init=0.8,
                                                  n_restarts=1, seed=outside_seed(generator), device=x.device,
                                                  resc_schedule=steps < 5000)
        return attack.perturb(x, y).detach()


def _gen_device(generator: torch.Generator | None) -> torch.device | str:
    return generator.device if generator is not None else "cpu"


# ----------------------------------------------------------------------------- the registry
def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def ball(spec) -> str:
    """The radius as reports quote it: 'eps=0.3' (L-inf, the default) or 'L2 eps=0.5'."""
    return ("" if spec.norm == "linf" else "L2 ") + f"eps={spec.eps:.4g}"


@dataclass(frozen=True)
class Attack:
    """One registered attack and the facts evaluation and the sanity checks need about it.

    ``describe(spec)`` is the line reports quote and ``short(spec)`` a table label (``spec``: an
    ``fastadv.evaluation.AttackSpec``); ``default_alpha(eps)`` the step when none is given (None:
    the attack sets its own); ``outside``: run as its authors wrote it (``pyautoattack``), so the
    sanity checks do not probe it; ``pgd_like``: steps and restarts of a steepest-ascent attack
    (the ``steps-monotone`` and ``pgd-vs-fgsm`` checks apply); ``record``: fixed facts added to the spec's record (``AttackSpec.to_dict``); ``curve``: the eps
    curve's label of the attack without its eps. ``takes``: the spec's fields the attack is called
    with, besides ``eps``, ``norm`` and ``generator`` which every attack takes (``arguments``: the keywords
    of one call); ``log`` among them sends it the evaluation's progress log.
    """

    fn: Callable[..., torch.Tensor]
    describe: Callable[[object], str]
    short: Callable[[object], str]
    takes: tuple[str, ...] = ()
    default_alpha: Callable[[float], float | None] = lambda eps: None
    outside: bool = False
    pgd_like: bool = False
    record: dict = field(default_factory=dict)
    curve: Callable[[object], str] | None = None

    @property
    def targeted(self) -> bool:
        """Whether ``spec.targets`` applies."""
        return "targets" in self.takes

    def arguments(self, spec, generator: torch.Generator | None = None,
                  log: Callable[[str], None] | None = None) -> dict:
        """The keywords of a call of ``fn`` for ``spec``: eps, generator and the fields in ``takes``
        (alpha resolved to the attack's default step), nothing else."""
        values = {"alpha": spec.resolved_alpha(), "steps": spec.steps, "restarts": spec.restarts,
                  "random_start": spec.random_start, "loss": spec.loss, "targets": spec.targets, "log": log}
        return {"eps": spec.eps, "norm": spec.norm, "generator": generator,
                **{name: values[name] for name in self.takes}}


ATTACKS: dict[str, Attack] = {
    "pgd": Attack(
        pgd, pgd_like=True, default_alpha=lambda eps: eps / 4,
        takes=("alpha", "steps", "restarts", "random_start", "loss"),
        describe=lambda s: (f"PGD-{s.steps} ({plural(s.restarts, 'restart')}, {ball(s)}, "
                            f"alpha={s.resolved_alpha():.4g}, {s.loss} loss)"),
        short=lambda s: f"PGD-{s.steps}x{s.restarts}",
        curve=lambda s: (f"PGD-{s.steps}, {plural(s.restarts, 'restart')}, step "
                         + ("eps/4" if s.alpha is None else f"{s.alpha / s.eps:.3g} eps" if s.eps else f"{s.alpha:.3g}")
                         + f", {s.loss} loss" + ("" if s.norm == "linf" else ", L2"))),
    "fgsm": Attack(fgsm, takes=("alpha", "loss"), default_alpha=lambda eps: eps, describe=lambda s: f"FGSM ({ball(s)})",
                   short=lambda s: "FGSM", curve=lambda s: "FGSM, step eps" + ("" if s.norm == "linf" else ", L2")),
    "apgd-ce": Attack(
        apgd_ce, outside=True, takes=("steps", "restarts"),
        describe=lambda s: f"APGD-CE ({s.steps} iterations, {plural(s.restarts, 'restart')}, {ball(s)}; pyautoattack)",
        short=lambda s: "APGD-CE"),
    "apgd-t": Attack(
        apgd_t, outside=True, takes=("steps", "restarts", "targets"),
        describe=lambda s: (f"APGD-T ({s.steps} iterations, {plural(s.targets, 'target class')}, "
                            f"{ball(s)}; pyautoattack)"),
        short=lambda s: f"APGD-T{s.targets}"),
    "square": Attack(
        square, outside=True, takes=("steps",),
        describe=lambda s: f"Square ({s.steps} queries, {ball(s)}; pyautoattack, black-box)",
        short=lambda s: f"Square-{s.steps}"),
    "autoattack": Attack(
        autoattack, outside=True, takes=("log",),
        record={"version": "standard", "attacks": list(AUTOATTACK_STANDARD), "package": "pyautoattack"},
        describe=lambda s: f"AutoAttack standard ({', '.join(a.upper() for a in AUTOATTACK_STANDARD)}; {ball(s)})",
        short=lambda s: "AutoAttack"),
}


def with_fn(attacks: dict[str, Attack], name: str, fn: Callable[..., torch.Tensor]) -> dict[str, Attack]:
    """A copy of the registry whose ``name`` entry calls ``fn`` (tests swap in deliberately broken attacks)."""
    from dataclasses import replace

    return {**attacks, name: replace(attacks[name], fn=fn)}
