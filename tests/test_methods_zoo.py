"""Properties every registered method keeps (parametrized over METHODS, so a new method is covered as
it lands), and the defining piece of each method from the fast-AT literature (fastadv.core.zoo).

A tiny MLP with BatchNorm on 4x4 synthetic images; ``Watched`` records every input the model sees
and counts backward traversals: each time a gradient flows back into the output of one of its
forward passes (the unit of ``passes_per_minibatch``; a double backprop's second traversal counts).
"""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastadv
from fastadv.core.attacks import pgd
from fastadv.core.methods import METHODS, AdversarialStep, StepContext
from fastadv.core.zoo.common import from_eps_units, to_eps_units
from fastadv.core.zoo.guided import nuclear_gap, softmax_gap
from fastadv.core.zoo.single_step import cosine_alignment, zero_small
from fastadv.core.zoo.trades import kl_to

EPS, TRAIN, BATCH, REPLAYS, STEPS = 0.1, 64, 32, 2, 2
ALL = sorted(METHODS)


class Watched(nn.Module):
    """A 16-32-3 MLP with BatchNorm that records its inputs and counts backward traversals of its outputs."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))
        self.inputs: list[torch.Tensor] = []
        self.traversals = 0

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        out = self.net(x)
        if out.requires_grad:
            out.register_hook(self._count)
        return out

    def _count(self, grad):
        self.traversals += 1


def dataset():
    """64 images in [0,1] with some pixels at 0 and 1 (the box must clip there), labels from a fixed linear rule."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(TRAIN, 1, 4, 4, generator=g)
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0
    w = torch.randn(16, 3, generator=g)
    return x, (x.flatten(1) @ w).argmax(1)


X, Y = dataset()


def minibatch(i: int):
    """The i-th minibatch of an epoch order that changes every epoch: (x, y, index)."""
    epoch, part = divmod(i, TRAIN // BATCH)
    index = torch.randperm(TRAIN, generator=torch.Generator().manual_seed(epoch))[part * BATCH:(part + 1) * BATCH]
    return X[index], Y[index], index


def make(method: str, seed: int = 0, lr: float = 0.05):
    torch.manual_seed(seed)
    model = Watched()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    step = AdversarialStep(method, model, opt, eps=EPS, replays=REPLAYS, attack_steps=STEPS, seed=1, train_size=TRAIN)
    return step, model, opt


def run(step, start: int, count: int):
    for i in range(start, start + count):
        stats = step(*minibatch(i))
    return stats


@pytest.mark.parametrize("method", ALL)
def test_inputs_stay_within_the_methods_bound_and_in_the_image_box(method):
    step, model, _ = make(method)
    bound = METHODS[method].bound(EPS, step.ctx.alpha, step.ctx.noise)
    farthest = 0.0
    for i in range(3):  # the third minibatch starts the second epoch: memories are read back
        model.inputs.clear()
        x, y, index = minibatch(i)
        step(x, y, index)
        for seen in model.inputs:
            assert seen.min() >= 0 and seen.max() <= 1
            distance = (seen - x).abs().max().item()
            assert distance <= bound + 1e-6, f"{method}: an input {distance:.4g} from x, bound {bound:.4g}"
            farthest = max(farthest, distance)
    if method != "standard":  # the attack does move: the bound is not met by staying at x
        assert farthest >= 0.99 * min(step.ctx.alpha, EPS)


@pytest.mark.parametrize("method", ALL)
def test_backward_traversals_and_optimizer_steps_equal_the_declared_cost(method):
    step, model, _ = make(method)
    run(step, 0, 2)
    model.traversals, before = 0, step.iteration
    run(step, 2, 1)
    assert model.traversals == METHODS[method].passes_per_minibatch(REPLAYS, STEPS) == step.passes
    assert step.iteration - before == METHODS[method].steps_per_minibatch(REPLAYS, STEPS)


def checkpoint(step, model, opt) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step.state_dict()}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("method", ALL)
def test_a_restored_checkpoint_continues_bit_for_bit(method):
    step, model, opt = make(method)
    run(step, 0, 2)
    saved = checkpoint(step, model, opt)
    run(step, 2, 3)  # crosses into the next epoch: the memories written before the checkpoint are read
    again, model2, opt2 = make(method, seed=5)
    state = torch.load(io.BytesIO(saved), weights_only=True)  # as the trainer loads its checkpoints
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    again.load_state_dict(state["step"])
    run(again, 2, 3)
    assert again.iteration == step.iteration
    for key, value in model.state_dict().items():
        assert torch.equal(value, model2.state_dict()[key]), f"{method}: {key} differs after resuming"


def adversarial_loss(model) -> float:
    model.eval()
    x_adv = pgd(model, X, Y, eps=EPS, alpha=EPS / 4, steps=5, random_start=False)
    with torch.no_grad():
        loss = F.cross_entropy(model(x_adv), Y).item()
    model.train()
    return loss


@pytest.mark.parametrize("method", ALL)
def test_a_few_steps_lower_the_adversarial_loss(method):
    step, model, _ = make(method, lr=0.1)
    before = adversarial_loss(model)
    stats = run(step, 0, 16)
    assert torch.isfinite(stats.loss_sum)
    assert adversarial_loss(model) < 0.9 * before


@pytest.mark.parametrize("method", ALL)
def test_the_public_adversarial_step_takes_every_method_and_its_settings(method):
    torch.manual_seed(0)
    model = Watched()
    defaults = {key: default for key, (default, _) in METHODS[method].settings.items()}
    step = fastadv.AdversarialStep(method, model, torch.optim.SGD(model.parameters(), lr=0.01), eps=EPS,
                                   method_args=defaults, train_size=TRAIN)
    assert step.ctx.args == defaults
    stats = step(*minibatch(0))
    assert stats.count == BATCH * METHODS[method].steps_per_minibatch(8, 7) and 0 <= stats.accuracy <= 1


@pytest.mark.parametrize("method", ["fgsm-pgi", "fgsm-mep-cs"])
def test_methods_with_a_memory_need_the_rows_indices(method):
    step, _, _ = make(method)
    x, y, _ = minibatch(0)
    with pytest.raises(ValueError, match="training-set indices"):
        step(x, y)


def test_settings_are_validated_with_the_methods_names():
    with pytest.raises(ValueError, match="this method's: lam"):
        AdversarialStep("grad-align", Watched(), torch.optim.SGD(Watched().parameters(), lr=0.1), eps=EPS,
                        method_args={"beta": 1.0})


# ----------------------------------------------------------------------------- each method's defining piece
def test_grad_align_cosine_ignores_zero_gradients_and_is_scale_free():
    g = torch.randn(4, 1, 4, 4)
    assert torch.allclose(cosine_alignment(g, 3 * g), torch.tensor(1.0))
    assert torch.allclose(cosine_alignment(g, -g), torch.tensor(-1.0))
    zeroed = g.clone()
    zeroed[0] = 0
    assert torch.allclose(cosine_alignment(zeroed, g), torch.tensor(1.0))  # row 0 left out, not counted as 0
    assert cosine_alignment(torch.zeros_like(g), g) == 0


def test_grad_align_regularizer_changes_the_update_and_lam_zero_is_fgsm():
    def weights(method, **args):
        torch.manual_seed(0)
        model = Watched()
        step = AdversarialStep(method, model, torch.optim.SGD(model.parameters(), lr=0.1), eps=EPS, seed=1,
                               method_args=args)
        step(*minibatch(0))
        return torch.nn.utils.parameters_to_vector(model.parameters())

    fgsm = weights("fgsm")
    assert torch.allclose(weights("grad-align", lam=0.0), fgsm, atol=1e-6)
    assert not torch.allclose(weights("grad-align", lam=1.0), fgsm, atol=1e-4)


def test_zero_grad_zeroes_each_examples_smallest_quantile():
    g = torch.randn(5, 3, 8, 8)
    kept = zero_small(g, 0.35)
    d = g[0].numel()
    assert torch.all((kept.flatten(1) == 0).sum(1) == int(0.35 * d))
    survivors = kept.flatten(1) != 0
    assert torch.equal(kept.flatten(1)[survivors], g.flatten(1)[survivors])  # the rest untouched
    smallest_kept = torch.where(survivors, g.flatten(1).abs(), torch.inf).amin(1)
    largest_zeroed = torch.where(survivors, -torch.inf, g.flatten(1).abs()).amax(1)
    assert torch.all(largest_zeroed < smallest_kept)
    assert torch.equal(zero_small(g, 0.0), g)


def test_pgi_memory_stores_the_trained_perturbation_as_the_next_epochs_start():
    step, model, _ = make("fgsm-pgi")
    x, y, index = minibatch(0)
    model.inputs.clear()
    step(x, y, index)
    trained_delta = model.inputs[1] - x  # the second forward: x + delta, the training input
    model.inputs.clear()
    step(x, y, index)  # the same rows again: their prior is the stored delta (int8, eps/127 units)
    prior = model.inputs[0] - x
    assert (prior - trained_delta).abs().max() <= EPS / 254 + 1e-6
    assert step.ctx.state["pgi_delta"].dtype == torch.int8 and len(step.ctx.state["pgi_delta"]) == TRAIN
    assert step.ctx.state["pgi_momentum"].dtype == torch.float16


def test_pgi_regularizer_pulls_the_logits_at_the_prior_and_the_attack_together():
    def weights(lam):
        step, model, _ = make("fgsm-pgi")
        step.ctx.args["lam"] = lam
        step(*minibatch(0))
        return torch.nn.utils.parameters_to_vector(model.parameters())

    assert not torch.allclose(weights(0.0), weights(10.0), atol=1e-4)


def test_eps_units_round_trip_within_half_a_unit():
    delta = (torch.rand(1000) * 2 - 1) * EPS
    back = from_eps_units(to_eps_units(delta, EPS), EPS, torch.float32)
    assert (back - delta).abs().max() <= EPS / 254 + 1e-7
    assert to_eps_units(delta, 0.0).abs().max() == 0  # eps 0 (an eps ramp's start) stores no perturbation


@pytest.mark.parametrize("method", ["fgsm-rs-cs", "fgsm-mep-cs"])
def test_convergence_term_is_gamma_times_the_change_of_the_loss(method):
    step, _, _ = make(method)
    step(*minibatch(0))
    first = step.ctx.state["cs_previous_loss"].clone()
    step.ctx.args["lam"] = 0.0  # fgsm-mep-cs: leave out the PGI term, so the loss is CE + CS alone
    stats = step(*minibatch(1))
    ce = step.ctx.state["cs_previous_loss"]
    gamma = step.ctx.args["gamma"]
    assert torch.allclose(stats.loss_sum / BATCH, ce + gamma * (ce - first).abs(), atol=1e-5)


def test_guided_terms_vanish_at_equal_outputs_and_grow_apart():
    a = torch.randn(8, 3)
    assert torch.all(softmax_gap(a, a) == 0) and nuclear_gap(a, a) == 0
    assert torch.all(softmax_gap(a + torch.randn(8, 3), a) > 0) and nuclear_gap(a + 1, a) > 0


def test_nu_at_ramps_its_weight_with_progress():
    from fastadv.core.zoo.common import ramp

    ctx = StepContext(None, None, EPS, EPS, 1, 1, lambda i: None, progress=0.25)
    assert ramp(ctx, 4.0, 0.5) == 2.0
    ctx.progress = 0.9
    assert ramp(ctx, 4.0, 0.5) == 4.0
    ctx.progress = None
    assert ramp(ctx, 4.0, 0.5) == 4.0


def test_trades_kl_term_is_zero_when_the_outputs_are_equal():
    a = torch.randn(8, 3)
    assert kl_to(a, a).abs() < 1e-6 and kl_to(a + torch.randn(8, 3), a) > 0


def weights_after_one_step(method: str, **args) -> torch.Tensor:
    torch.manual_seed(0)
    model = Watched()
    step = AdversarialStep(method, model, torch.optim.SGD(model.parameters(), lr=0.1), eps=EPS, seed=1,
                           attack_steps=STEPS, method_args=args, train_size=TRAIN)
    step(*minibatch(0))
    return torch.nn.utils.parameters_to_vector(model.parameters())


@pytest.mark.parametrize("method,weight", [("trades", "beta"), ("trades-fgsm", "beta"), ("gat", "lam")])
def test_clean_loss_methods_train_on_the_clean_loss_at_weight_zero(method, weight):
    """TRADES and GAT: CE(f(x)) plus a weighted term; at weight 0 the update is standard training's (the
    attack's forwards only move BatchNorm's running statistics, which are not parameters)."""
    standard = weights_after_one_step("standard")
    assert not torch.allclose(weights_after_one_step(method), standard, atol=1e-4)
    assert torch.allclose(weights_after_one_step(method, **{weight: 0.0}), standard, atol=1e-6)


def test_nu_at_nuclear_term_changes_the_update():
    assert not torch.allclose(weights_after_one_step("nu-at", lam=0.0), weights_after_one_step("nu-at"), atol=1e-4)


def test_zero_grad_leaves_the_smallest_quantile_at_its_random_start():
    """The step moves no coordinate whose gradient was zeroed: at least floor(q D) per example stay put."""
    counts = {}
    for method in ("zero-grad", "fgsm-rs"):
        step, model, _ = make(method)
        model.inputs.clear()
        step(*minibatch(0))
        start, trained = model.inputs[:2]
        counts[method] = ((trained - start) == 0).flatten(1).sum(1)
    assert torch.all(counts["zero-grad"] >= int(0.35 * 16))
    assert counts["fgsm-rs"].float().mean() < 2  # without zeroing, almost every coordinate moves
