"""Attack contract: inside the eps-ball and [0,1], loss goes up, no side effects; agrees with torchattacks."""
from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

import fastadv
from fastadv.core.attacks import ATTACKS, fgsm, pgd

EPS = 0.1
ATTACK_KWARGS = {
    "fgsm": dict(eps=EPS),
    "fgsm-rs": dict(eps=EPS, alpha=1.25 * EPS, random_start=True),
    "pgd": dict(eps=EPS, alpha=EPS / 4, steps=5),
    "pgd-restarts": dict(eps=EPS, alpha=EPS / 4, steps=3, restarts=3),
    "pgd-cw": dict(eps=EPS, alpha=EPS / 4, steps=5, loss="cw"),
}


def run(name, model, x, y):
    fn = fgsm if name.startswith("fgsm") else pgd
    return fn(model, x, y, **ATTACK_KWARGS[name])


@pytest.fixture(scope="module")
def trained(synthetic, briefly_trained):
    """A small-cnn trained for a few steps on the synthetic set, plus a test batch."""
    model = briefly_trained(2048)
    xt = synthetic.x_test[:128].float() / 255
    # include pixels at 0 and 1 so the [0,1] box constraint is exercised
    xt[:, :, :2] = 0.0
    xt[:, :, -2:] = 1.0
    return model, xt, synthetic.y_test[:128]


@pytest.mark.parametrize("name", sorted(ATTACK_KWARGS))
@pytest.mark.parametrize("training", [True, False])
def test_attack_contract(trained, name, training):
    model, x, y = trained
    model.train(training)
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)  # sentinel: must survive the attack untouched
    x_adv = run(name, model, x, y)
    assert model.training is training
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    model.eval()
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
        adv = F.cross_entropy(model(x_adv), y)
    assert adv > clean, f"{name}: adversarial loss {adv:.4f} not above clean loss {clean:.4f}"
    for p in model.parameters():
        p.grad = None


def test_more_steps_and_restarts_never_help_the_model(trained):
    model, x, y = trained
    model.eval()

    def acc(x_adv):
        with torch.no_grad():
            return (model(x_adv).argmax(1) == y).float().mean().item()

    clean = acc(x)
    one = acc(pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=1, random_start=False))
    many = acc(pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=20, random_start=False))
    restarts = acc(pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=20, restarts=4,
                       generator=torch.Generator().manual_seed(0)))
    assert clean >= one >= many
    assert restarts <= acc(pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=20, restarts=1,
                               generator=torch.Generator().manual_seed(0)))


def test_eps_zero_is_identity(trained):
    model, x, y = trained
    assert torch.equal(pgd(model, x, y, eps=0.0, alpha=0.01, steps=5), x)


def test_registry_names():
    assert set(ATTACKS) == {"fgsm", "pgd", "apgd-ce", "apgd-t", "square", "autoattack"}


def test_a_misspelt_keyword_raises(trained):
    """No attack swallows unknown keywords: `restart=10` (for restarts) is a TypeError, not one restart."""
    model, x, y = trained
    with pytest.raises(TypeError, match="restart"):
        fastadv.pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=20, restart=10)
    with pytest.raises(TypeError, match="step"):
        fgsm(model, x, y, eps=EPS, step=EPS)
    for name, attack in ATTACKS.items():
        params = inspect.signature(attack.fn).parameters.values()
        assert not any(p.kind is p.VAR_KEYWORD for p in params), f"{name} takes **kwargs"


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_dispatch_passes_each_attack_only_what_it_takes(name):
    """``Attack.arguments`` names only parameters of the attack's function, so calling it by name
    cannot raise TypeError; each spec field it passes is the spec's (alpha resolved)."""
    from fastadv.evaluation import AttackSpec

    info = ATTACKS[name]
    spec = AttackSpec(name, eps=EPS, steps=3, restarts=2, loss="cw", random_start=False, targets=4)
    args = info.arguments(spec, generator=None, log=print)
    assert set(args) <= set(inspect.signature(info.fn).parameters)
    assert args["eps"] == EPS and "generator" in args
    expected = {"alpha": spec.resolved_alpha(), "steps": 3, "restarts": 2, "loss": "cw", "random_start": False,
                "targets": 4, "log": print}
    assert all(args[k] == v for k, v in expected.items() if k in args)
    assert ("log" in args) == (name == "autoattack") and ("targets" in args) == info.targeted


def test_attack_loop_makes_no_host_syncs(trained, monkeypatch):
    """PGD with restarts and FGSM never pull a value to the host (.item(), .tolist(), bool(), .cpu(), .numpy())."""
    model, x, y = trained
    model.eval()

    def forbidden(name):
        def fail(*args, **kwargs):
            raise AssertionError(f"host sync in the attack loop: Tensor.{name}")
        return fail

    for name in ("item", "tolist", "__bool__", "cpu", "numpy", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden(name))
    pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=3, restarts=2, generator=torch.Generator().manual_seed(0))
    pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=3, loss="cw")
    fgsm(model, x, y, eps=EPS)
    monkeypatch.undo()


def test_best_restart_is_kept_per_example(trained):
    """With restarts, every example ends at least as bad for the model as under the first restart alone."""
    model, x, y = trained
    model.eval()
    kw = dict(eps=EPS, alpha=EPS / 4, steps=2)
    one = pgd(model, x, y, restarts=1, generator=torch.Generator().manual_seed(3), **kw)
    four = pgd(model, x, y, restarts=4, generator=torch.Generator().manual_seed(3), **kw)
    with torch.no_grad():
        wrong_one = model(one).argmax(1) != y
        wrong_four = model(four).argmax(1) != y
    assert bool((wrong_four | ~wrong_one).all())  # whatever restart 1 broke stays broken


@pytest.mark.slow
def test_pgd20_agrees_with_torchattacks(robust_mnist_run, mnist):
    """Same eps, alpha, steps, no random start: accuracies within 1 point on 1,000 MNIST test points."""
    torchattacks = pytest.importorskip("torchattacks")
    model = fastadv.load_model(robust_mnist_run.run_dir)
    x, y = mnist.x_test[:1000].float() / 255, mnist.y_test[:1000]
    eps, alpha = 0.3, 0.3 / 4
    ours = fastadv.evaluate(model, (x, y), attack=fastadv.AttackSpec("pgd", eps=eps, alpha=alpha, steps=20,
                                                                     random_start=False))
    atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=20, random_start=False)
    theirs = torch.cat([(model(atk(x[i:i + 250], y[i:i + 250])).argmax(1) == y[i:i + 250])
                        for i in range(0, 1000, 250)]).float().mean().item()
    print(f"PGD-20 robust accuracy: fastadv {ours.robust_acc:.4f}, torchattacks {theirs:.4f}")
    assert ours.robust_acc > 0.3, "the fixture model should be robust enough for the comparison to mean something"
    assert abs(ours.robust_acc - theirs) <= 0.01


AA_POINTS = 500


@pytest.mark.slow
def test_autoattack_agrees_with_torchattacks(robust_mnist_run, mnist):
    """Standard AutoAttack through fastadv (pyautoattack) vs torchattacks.AutoAttack (standard): within 1 point.

    Same 500 MNIST test points, eps=0.3, both the full standard set (APGD-CE, APGD-T, FAB-T, Square 5000).
    """
    pytest.importorskip("pyautoattack")
    torchattacks = pytest.importorskip("torchattacks")
    from fastadv.evaluation import AttackSpec, evaluate_suite

    model = fastadv.load_model(robust_mnist_run.run_dir)
    x, y = mnist.x_test[:AA_POINTS].float() / 255, mnist.y_test[:AA_POINTS]
    ours = evaluate_suite(model, (x, y), [AttackSpec("autoattack", eps=0.3)], sanity=False, batch_size=AA_POINTS)
    atk = torchattacks.AutoAttack(model, norm="Linf", eps=0.3, version="standard", n_classes=10, seed=0)
    with torch.no_grad():
        theirs = (model(atk(x, y)).argmax(1) == y) & (model(x).argmax(1) == y)
    theirs = theirs.float().mean().item()
    print(f"AutoAttack robust accuracy on {AA_POINTS} points: fastadv/pyautoattack {ours.robust_acc:.4f}, "
          f"torchattacks {theirs:.4f} ({ours.attacks[0].seconds:.0f} s for ours)")
    assert ours.robust_acc > 0.3, "the fixture model should be robust enough for the comparison to mean something"
    assert abs(ours.robust_acc - theirs) <= 0.01


# ----------------------------------------------------------------------------- AA-lite
def test_aa_lite_is_a_worst_case_that_only_attacks_what_is_left(robust_mnist_run, mnist):
    """AA-lite on the robust fixture: stages never rise, APGD runs only on points the previous attacks left,
    and the figure agrees with pyautoattack's own APGD-CE + APGD-T run (custom AutoAttack) within 1 point."""
    pyautoattack = pytest.importorskip("pyautoattack")
    from fastadv.evaluation import AALite, AttackSpec

    model = fastadv.load_model(robust_mnist_run.run_dir)
    n = 300
    x, y = mnist.x_test[:n].float() / 255, mnist.y_test[:n]
    main = AttackSpec("pgd", eps=0.3, steps=20)
    lite = AALite(points=n, targets=3, steps=50)
    result = fastadv.evaluate(model, (x, y), attack=main, aa_lite=lite)
    aa = result.aa_lite
    counts = aa["robust_counts"]
    assert aa["points"] == n and len(counts) == 3 and counts == sorted(counts, reverse=True)
    assert counts[0] == round(result.robust_acc * n)  # stage 0 is the main PGD-20 on the same points
    assert result.headline_acc == aa["robust_acc"] <= result.robust_acc
    assert "APGD-CE (50 iterations" in aa["attack"] and "APGD-T (50 iterations, 3 target classes" in aa["attack"]
    adversary = pyautoattack.AutoAttack(model, eps=0.3, norm="Linf", version="custom", attacks=["apgd-ce", "apgd-t"],
                                        seed=0)
    adversary.apgd.n_iter = adversary.apgd_targeted.n_iter = 50
    adversary.apgd_targeted.n_target_classes = 3
    adversary.logger.disabled = True
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=n)
    with torch.no_grad():
        theirs = ((model(x_adv).argmax(1) == y) & (model(x).argmax(1) == y)).float().mean().item()
    print(f"AA-lite {aa['robust_acc']:.4f} (stages {counts}), pyautoattack APGD-CE+T {theirs:.4f}")
    assert abs(aa["robust_acc"] - theirs) <= 0.01


def test_apgd_attacks_stay_in_the_ball_and_leave_the_global_rng_alone(trained):
    pytest.importorskip("pyautoattack")
    from fastadv.core.attacks import apgd_ce, apgd_t

    model, x, y = trained
    model.eval()
    for attack in (apgd_ce, apgd_t):
        state = torch.get_rng_state()
        x_adv = attack(model, x, y, eps=EPS, steps=5, generator=torch.Generator().manual_seed(0))
        assert torch.equal(torch.get_rng_state(), state)  # pyautoattack reseeds; we put it back
        assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
