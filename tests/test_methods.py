"""Free-m mechanics and the cost accounting of every method, on a tiny model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fastadv.core.methods import METHODS, StepContext


class Recorder(nn.Module):
    """A linear model that records every input it sees."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 3)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.fc(x.flatten(1))


class CountingSGD(torch.optim.SGD):
    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


def make_ctx(method, eps=0.1, replays=4, attack_steps=3):
    torch.manual_seed(0)
    model = Recorder()
    opt = CountingSGD(model.parameters(), lr=0.1, momentum=0.9)
    lrs = []
    alpha = METHODS[method].default_alpha(eps, attack_steps)
    ctx = StepContext(model, opt, eps, alpha, replays, attack_steps, set_hyperparams=lrs.append,
                      generator=torch.Generator().manual_seed(1), index=torch.arange(8), train_size=64)
    return ctx, lrs


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g) * 0.8 + 0.1, torch.randint(0, 3, (n,), generator=g)


def test_free_replays_each_minibatch_m_times_with_one_step_each():
    ctx, lrs = make_ctx("free", replays=4)
    x, y = batch()
    stats = METHODS["free"].step(ctx, x, y)
    assert ctx.optimizer.steps == 4 and ctx.iteration == 4
    assert lrs == [0, 1, 2, 3]  # LR/momentum set before every replay's optimizer step
    assert len(ctx.model.inputs) == 4  # one forward (and one backward) per replay
    assert stats.count == 4 * len(y)
    assert METHODS["free"].passes_per_minibatch(4, 3) == 4
    assert METHODS["free"].steps_per_minibatch(4, 3) == 4


def test_free_delta_follows_the_sign_update_and_carries_over():
    ctx, _ = make_ctx("free", eps=0.1, replays=3)
    x, y = batch()
    METHODS["free"].step(ctx, x, y)
    seen = ctx.model.inputs
    assert torch.equal(seen[0], x)  # delta starts at 0
    deltas = [s - x for s in seen]
    for d_prev, d_next in zip(deltas, deltas[1:]):
        step = d_next - d_prev
        # each replay moves delta by eps*sign(g) then clips to [-eps, eps]: moves are 0 or up to 2 eps
        assert step.abs().max() <= 2 * 0.1 + 1e-6
    stored = ctx.state["delta"].clone()
    assert stored.abs().max() <= 0.1 + 1e-7 and stored.abs().max() > 0
    # the next minibatch starts from the carried-over delta
    x2, y2 = batch(seed=1)
    METHODS["free"].step(ctx, x2, y2)
    first_input_of_batch2 = ctx.model.inputs[3]
    assert torch.allclose(first_input_of_batch2, (x2 + stored).clamp(0, 1))


def test_free_delta_values_are_multiples_of_eps_steps():
    ctx, _ = make_ctx("free", eps=0.1, replays=1)
    x, y = batch()
    METHODS["free"].step(ctx, x, y)
    d = ctx.state["delta"]
    # from 0, one step of eps*sign(g): every entry is exactly +-eps or 0 (where g == 0)
    assert torch.all(torch.isclose(d.abs(), torch.tensor(0.1)) | (d == 0))


def test_free_smaller_batch_uses_the_first_rows_of_delta():
    ctx, _ = make_ctx("free", replays=2)
    x, y = batch(8)
    METHODS["free"].step(ctx, x, y)
    kept = ctx.state["delta"].clone()
    x_small, y_small = batch(5, seed=2)
    METHODS["free"].step(ctx, x_small, y_small)
    assert ctx.state["delta"].shape[0] == 8
    assert torch.equal(ctx.state["delta"][5:], kept[5:])
    assert torch.allclose(ctx.model.inputs[2], (x_small + kept[:5]).clamp(0, 1))


@pytest.mark.parametrize("method,passes,steps", [("standard", 1, 1), ("fgsm-rs", 2, 1), ("n-fgsm", 2, 1),
                                                 ("pgd", 4, 1), ("free", 4, 4)])
def test_cost_accounting(method, passes, steps):
    ctx, _ = make_ctx(method, replays=4, attack_steps=3)
    x, y = batch()
    METHODS[method].step(ctx, x, y)
    assert passes == METHODS[method].passes_per_minibatch(4, 3)
    assert ctx.optimizer.steps == steps == METHODS[method].steps_per_minibatch(4, 3)
    # the forward passes the model saw: attack steps + final (the no-grad restart check adds one for PGD)
    assert len(ctx.model.inputs) >= passes


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_lowers_the_loss_in_a_few_steps(method):
    ctx, _ = make_ctx(method)
    x, y = batch(32)
    ctx.index = torch.arange(32)  # the rows' training-set indices (per-example memories)
    first = METHODS[method].step(ctx, x, y)
    for _ in range(20):
        last = METHODS[method].step(ctx, x, y)
    assert last.loss_sum.item() / last.count < first.loss_sum.item() / first.count


# ----------------------------------------------------------------------------- N-FGSM
def n_fgsm_inputs(eps=0.1, noise=2.0, seed=0, n=64):
    """The two inputs an N-FGSM step shows the model: the noisy start (gradient) and the training input."""
    ctx, _ = make_ctx("n-fgsm", eps=eps)
    ctx.noise = noise
    ctx.generator.manual_seed(seed)
    x, y = batch(n, seed)
    METHODS["n-fgsm"].step(ctx, x, y)
    start, trained = ctx.model.inputs
    return x, start, trained, ctx


def test_n_fgsm_costs_two_passes_and_alpha_defaults_to_eps():
    assert METHODS["n-fgsm"].passes_per_minibatch(8, 7) == 2
    assert METHODS["n-fgsm"].steps_per_minibatch(8, 7) == 1
    assert METHODS["n-fgsm"].default_alpha(8 / 255, 7) == pytest.approx(8 / 255)


def test_n_fgsm_noise_is_uniform_in_two_eps_and_the_step_is_alpha_sign_grad():
    eps = 0.1
    x, start, trained, ctx = n_fgsm_inputs(eps=eps)
    noise = start - x
    inside = ((start > 0) & (start < 1))  # away from the image box the noise is the raw draw
    assert noise.abs().max() <= 2 * eps + 1e-6
    assert noise[inside].abs().max() > 1.5 * eps  # it reaches beyond the eps-ball: radius 2 eps, not eps
    assert abs(noise[inside].mean().item()) < 0.02  # centred
    step = trained - start
    free = (trained > 0) & (trained < 1)  # where the box did not cut the step
    assert torch.allclose(step[free].abs(), torch.full_like(step[free], ctx.alpha), atol=1e-6)


def test_n_fgsm_does_not_project_to_the_eps_ball_only_to_the_image_box():
    eps = 0.1
    x, start, trained, _ = n_fgsm_inputs(eps=eps)
    dist = (trained - x).abs()
    assert trained.min() >= 0 and trained.max() <= 1
    assert dist.max() <= 3 * eps + 1e-6  # noise 2 eps + step eps
    assert (dist > eps + 1e-6).float().mean() > 0.2  # many pixels lie outside the eps-ball: no projection


def test_n_fgsm_noise_scale_zero_is_fgsm_from_x():
    x, start, trained, _ = n_fgsm_inputs(noise=0.0)
    assert torch.equal(start, x.clamp(0, 1))


def test_n_fgsm_at_eps_zero_trains_on_clean_inputs():
    ctx, _ = make_ctx("n-fgsm", eps=0.0)
    x, y = batch()
    state = ctx.generator.get_state()
    METHODS["n-fgsm"].step(ctx, x, y)
    assert torch.equal(ctx.model.inputs[-1], x)
    assert torch.equal(ctx.generator.get_state(), state)  # no random numbers drawn at eps 0 (an eps ramp's start)
