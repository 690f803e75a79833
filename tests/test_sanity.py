"""Sanity checks: none fires on a healthy robust model; each fires on a model or attack built to trip it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import fastadv
from fastadv.core.attacks import ATTACKS, pgd, with_fn
from fastadv.evaluation import AttackSpec, evaluate
from fastadv.evaluation.sanity import CHECKS, run_checks

EPS = 0.3
SPEC = AttackSpec("pgd", eps=EPS, steps=20)  # the thesis' PGD-20, alpha = eps/4


@pytest.fixture(scope="module")
def healthy(robust_mnist_run, mnist):
    """The robust fixture model and 200 MNIST test points in [0,1]."""
    model = fastadv.load_model(robust_mnist_run.run_dir)
    return model, mnist.x_test[:200].float() / 255, mnist.y_test[:200]


def fired(results) -> set[str]:
    return {r.name for r in results if r.passed is False}


def only(model, x, y, name, spec=SPEC, attacks=ATTACKS):
    (result,) = run_checks(model, x, y, spec, only=[name], attacks=attacks)
    print(result.line())
    return result


class Softmax(nn.Module):
    """A classifier that returns probabilities instead of logits."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).softmax(1)


class Rounded(nn.Module):
    """Binarizes its input (x -> round(x)) first: gradients through round() are zero (masked)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x))


class Noisy(nn.Module):
    """Adds fresh Gaussian noise to its input on every call, even in eval mode (a randomized defense)."""

    def __init__(self, net, sigma=0.3):
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x):
        return self.net(x + self.sigma * torch.randn_like(x))


class Scaled255(nn.Module):
    """Expects pixels in [0,255] (divides by 255 itself): the pipeline bug of unscaled inputs."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x / 255)


@pytest.mark.slow
def test_no_check_fires_on_a_healthy_model(healthy):
    model, x, y = healthy
    results = run_checks(model, x, y, SPEC)
    for r in results:
        print(r.line())
    assert [r.name for r in results] == list(CHECKS)
    assert fired(results) == set()
    assert all(r.passed is True for r in results)  # every check applies to PGD-20


@pytest.mark.slow
def test_healthy_evaluation_is_trusted(healthy):
    model, x, y = healthy
    result = evaluate(model, (x, y), attack=SPEC, sanity=True, sanity_points=100)
    assert result.trusted is True and len(result.sanity) == len(CHECKS)
    assert result.to_dict()["sanity"][0]["name"] == "logits"


@pytest.mark.slow
def test_softmax_output_trips_logits(healthy):
    model, x, y = healthy
    assert only(model, x, y, "logits").passed
    assert only(Softmax(model), x, y, "logits").passed is False


@pytest.mark.slow
def test_randomized_model_trips_deterministic(healthy):
    model, x, y = healthy
    assert only(model, x, y, "deterministic").passed
    assert only(Noisy(model), x, y, "deterministic").passed is False


@pytest.mark.slow
def test_dropout_left_active_in_eval_trips_deterministic(healthy):
    model, x, y = healthy

    class AlwaysDropout(nn.Module):
        def forward(self, z):
            return nn.functional.dropout(z, 0.5, training=True)  # ignores eval mode

    randomized = nn.Sequential(AlwaysDropout(), model)
    assert only(randomized, x, y, "deterministic").passed is False


@pytest.mark.slow
def test_rounding_model_trips_gradients_and_large_eps(healthy):
    model, x, y = healthy
    masked = Rounded(model)
    assert only(masked, x, y, "gradients").passed is False
    assert only(masked, x, y, "large-eps").passed is False


@pytest.mark.slow
def test_masked_gradients_trip_black_box_and_a_healthy_model_passes_it(healthy):
    """Square (black-box) breaks points that PGD-20 cannot reach through a rounded input layer; on the
    healthy robust model it breaks none of the points PGD-20 left robust."""
    pytest.importorskip("pyautoattack")
    model, x, y = healthy
    result = only(Rounded(model), x, y, "black-box")
    assert result.passed is False and "Square-300 broke" in result.detail and "APGD-CE" in result.detail
    healthy_result = only(model, x, y, "black-box")
    assert healthy_result.passed is True


@pytest.mark.slow
def test_unscaled_inputs_trip_eps_zero(healthy):
    """Images given as floats in [0,255] to a model that expects that: the attack clips them to [0,1]."""
    model, x, y = healthy
    assert only(model, x, y, "eps-zero").passed
    assert only(Scaled255(model), x * 255, y, "eps-zero").passed is False


@pytest.mark.slow
def test_attack_weaker_at_larger_eps_trips_eps_monotone(healthy):
    model, x, y = healthy

    def backwards_pgd(model, x, y, *, eps, alpha, **kw):
        # deliberately broken: at the full radius it only uses a tenth of it
        used = eps if eps < EPS else eps / 10
        return pgd(model, x, y, eps=used, alpha=used / 4, **kw)

    assert only(model, x, y, "eps-monotone").passed
    assert only(model, x, y, "eps-monotone", attacks=with_fn(ATTACKS, "pgd", backwards_pgd)).passed is False


@pytest.mark.slow
def test_attack_weaker_with_more_steps_trips_steps_monotone(healthy):
    model, x, y = healthy

    def shrinking_pgd(model, x, y, *, eps, alpha, steps, **kw):
        # deliberately broken: the radius shrinks as the number of steps grows
        used = eps * 5 / max(steps, 5)
        return pgd(model, x, y, eps=used, alpha=used / 4, steps=steps, **kw)

    assert only(model, x, y, "steps-monotone").passed
    assert only(model, x, y, "steps-monotone", attacks=with_fn(ATTACKS, "pgd", shrinking_pgd)).passed is False


@pytest.mark.slow
def test_tiny_step_pgd_trips_pgd_vs_fgsm(healthy):
    """PGD-20 whose step is eps/1000 moves 2% of the way: one FGSM step beats it."""
    model, x, y = healthy
    weak = AttackSpec("pgd", eps=EPS, alpha=EPS / 1000, steps=20, random_start=False)
    assert only(model, x, y, "pgd-vs-fgsm").passed
    assert only(model, x, y, "pgd-vs-fgsm", spec=weak).passed is False


def test_untrusted_number_is_flagged(synthetic):
    """A failed check makes evaluate() report trusted=False (softmax model, a few synthetic points)."""
    torch.manual_seed(0)
    net = fastadv.build_model("small-cnn", channels=1, size=16)
    x, y = synthetic.x_test[:64], synthetic.y_test[:64]
    result = evaluate(Softmax(net), (x, y), attack=AttackSpec("pgd", eps=0.1, steps=2), sanity=True,
                      sanity_points=32)
    assert result.trusted is False
    assert "logits" in {c.name for c in result.sanity if c.passed is False}
    plain = evaluate(net, (x, y), attack=AttackSpec("pgd", eps=0.1, steps=2))
    assert plain.trusted is None and plain.sanity == ()  # no checks asked for: no verdict


def test_checks_leave_model_mode_and_grads_alone(synthetic):
    net = fastadv.build_model("small-cnn", channels=1, size=16)
    net.train()
    for p in net.parameters():
        p.grad = torch.full_like(p, 3.0)
    x, y = synthetic.x_test[:32].float() / 255, synthetic.y_test[:32]
    run_checks(net, x, y, AttackSpec("pgd", eps=0.1, steps=2))
    assert net.training
    assert all(torch.equal(p.grad, torch.full_like(p, 3.0)) for p in net.parameters())


def test_unknown_check_name():
    with pytest.raises(ValueError, match="unknown sanity check"):
        run_checks(nn.Linear(2, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), SPEC, only=["nope"])
