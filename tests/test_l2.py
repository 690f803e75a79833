"""The L2 threat model: every L2 attack and L2 training method keeps ||delta||_2 <= eps per example and
x + delta in [0,1]; PGD-L2 is a real attack (it beats noise of the same norm, agrees with torchattacks'
PGDL2); methods without an L2 form refuse it in one line; the config's default radii; a run trains,
checks and evaluates in its norm, and ``fastadv eval --norm`` follows it."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastadv
from fastadv.config import ConfigError, TrainConfig
from fastadv.threat import resolve_eps
from fastadv.core.attacks import ATTACKS, apgd_ce, apgd_t, fgsm, pgd, square
from fastadv.core.methods import METHODS, AdversarialStep
from fastadv.core.norms import per_example, project, uniform_ball
from fastadv.evaluation import AALite, AttackSpec

EPS = 1.0  # L2 radius on the synthetic 1 x 16 x 16 images (256 coordinates; L-inf radius there: 0.1)
TOL = 1e-5


def l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).double().norm(dim=1)


def assert_in_ball_and_box(x_adv, x, eps=EPS):
    norms = l2(x_adv - x)
    assert norms.max() <= eps * (1 + TOL), f"an example {norms.max():.6f} from x, eps {eps}"
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.fixture(scope="module")
def trained(synthetic, briefly_trained):
    model = briefly_trained(2048)
    x = synthetic.x_test[:128].float() / 255
    x[:, :, :2] = 0.0  # pixels at the box's edges: the [0,1] clip must act
    x[:, :, -2:] = 1.0
    return model, x, synthetic.y_test[:128]


L2_ATTACKS = {
    "pgd": lambda m, x, y: pgd(m, x, y, eps=EPS, alpha=EPS / 4, steps=10, norm="l2"),
    "pgd-restarts-cw": lambda m, x, y: pgd(m, x, y, eps=EPS, alpha=EPS / 4, steps=3, restarts=3, loss="cw",
                                           norm="l2", generator=torch.Generator().manual_seed(1)),
    "fgm": lambda m, x, y: fgsm(m, x, y, eps=EPS, norm="l2"),
    "fgsm-rs": lambda m, x, y: fgsm(m, x, y, eps=EPS, alpha=1.25 * EPS, random_start=True, norm="l2"),
    "apgd-ce": lambda m, x, y: apgd_ce(m, x, y, eps=EPS, steps=10, norm="l2"),
    "apgd-t": lambda m, x, y: apgd_t(m, x, y, eps=EPS, steps=5, targets=2, norm="l2"),
    "square": lambda m, x, y: square(m, x, y, eps=EPS, steps=50, norm="l2"),
}


@pytest.mark.parametrize("name", sorted(L2_ATTACKS))
def test_every_l2_attack_stays_in_the_l2_ball_and_the_box(trained, name):
    if name in ("apgd-ce", "apgd-t", "square"):
        pytest.importorskip("pyautoattack")
    model, x, y = trained
    x_adv = L2_ATTACKS[name](model, x, y)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert_in_ball_and_box(x_adv, x)
    with torch.no_grad():
        clean, adv = F.cross_entropy(model(x), y), F.cross_entropy(model(x_adv), y)
    assert adv > clean, f"{name}: L2 adversarial loss {adv:.4f} not above clean {clean:.4f}"
    if name.startswith("pgd") or name == "fgm":  # gradient steps use the ball: they do not stay near x
        assert l2(x_adv - x).median() > 0.5 * EPS


def test_the_l2_random_start_is_uniform_in_the_ball():
    """Radii: all <= eps, and for d = 2 coordinates the share inside radius eps / sqrt(2) is half the area."""
    x = torch.full((20000, 1, 1, 2), 0.5)
    delta = uniform_ball(x, 0.3, "l2", torch.Generator().manual_seed(0))
    r = l2(delta)
    assert r.max() <= 0.3 * (1 + TOL)
    assert abs((r <= 0.3 / math.sqrt(2)).double().mean().item() - 0.5) < 0.02
    direction = delta.flatten(1) / r[:, None].float()
    assert direction.mean(0).abs().max() < 0.03  # no preferred direction


def test_l2_projection_clips_to_the_box_and_the_ball():
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    delta = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    out = project(x, delta, 2.0, "l2")
    assert_in_ball_and_box(x + out, x, eps=2.0)
    inside = delta * 1e-3  # already in the ball and the box (x not at an edge): unchanged
    assert torch.allclose(project(x.clamp(0.1, 0.9), inside, 2.0, "l2"), inside, atol=1e-6)  # (x + d) - x rounds


def test_pgd_l2_hurts_more_than_noise_of_the_same_norm(trained):
    model, x, y = trained
    noise = project(x, uniform_ball(x, EPS, "l2", torch.Generator().manual_seed(0)), EPS, "l2")
    sphere = project(x, noise * (EPS / per_example(noise, "l2").clamp_min(1e-12)).view(-1, 1, 1, 1), EPS, "l2")
    x_pgd = pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=10, norm="l2")
    with torch.no_grad():
        acc = {k: (model(v).argmax(1) == y).float().mean().item() for k, v in
               {"clean": x, "noise": x + sphere, "pgd": x_pgd}.items()}
    print(f"accuracy at L2 eps {EPS}: {acc}")
    assert acc["pgd"] < acc["noise"] - 0.2, acc
    assert acc["noise"] > acc["clean"] - 0.1, acc  # noise of this norm barely matters: the attack's does


def test_pgd_l2_agrees_with_torchattacks_pgdl2(trained):
    """Same eps, step, steps and no random start: the same adversarial images up to float error wherever the
    input gradient does not vanish. Where it nearly does (a saturated softmax: norms 1e-17 to 1e-6 here),
    torchattacks adds 1e-10 to the norm of the batch-mean loss's gradient and barely moves, while fastadv
    normalizes any gradient above 1e-12: there fastadv's attack is the stronger one."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = trained
    ours = pgd(model, x, y, eps=EPS, alpha=EPS / 4, steps=10, random_start=False, norm="l2")
    theirs = torchattacks.PGDL2(model, eps=EPS, alpha=EPS / 4, steps=10, random_start=False)(x, y)
    x_grad = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_grad), y, reduction="sum"), x_grad)
    live = l2(grad) > 1e-4
    assert live.sum() >= len(y) // 2
    assert (ours - theirs)[live].abs().max() < 1e-5
    with torch.no_grad():
        acc_ours, acc_theirs = ((model(v).argmax(1) == y).float().mean().item() for v in (ours, theirs))
    print(f"PGD-L2 accuracy: fastadv {acc_ours:.4f}, torchattacks {acc_theirs:.4f} ({int(live.sum())} of {len(y)} "
          f"points with a live gradient)")
    assert acc_ours <= acc_theirs


def test_linf_is_still_the_default_and_a_bad_norm_is_one_line(trained):
    model, x, y = trained
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(pgd(model, x, y, eps=0.1, alpha=0.025, steps=2, generator=g()),
                       pgd(model, x, y, eps=0.1, alpha=0.025, steps=2, generator=g(), norm="linf"))
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        pgd(model, x, y, eps=0.1, alpha=0.025, steps=2, norm="l1")
    with pytest.raises(ConfigError, match="unknown norm"):
        AttackSpec("pgd", eps=0.5, norm="L2")


def test_every_registered_attack_takes_norm_and_no_catch_all():
    import inspect

    for name, attack in ATTACKS.items():
        params = inspect.signature(attack.fn).parameters
        assert "norm" in params and params["norm"].default == "linf", name
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), name
        assert attack.arguments(AttackSpec(name, eps=0.5, norm="l2"))["norm"] == "l2"


# ----------------------------------------------------------------------------- training methods
L2_METHODS = sorted(name for name, m in METHODS.items() if "l2" in m.norms)


class Watched(nn.Module):
    """A small MLP that records every input it sees."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 10))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.net(x)


def test_the_l2_methods_are_the_ones_defined_in_l2():
    assert L2_METHODS == ["fgsm", "fgsm-rs", "free", "pgd", "standard"]


@pytest.mark.parametrize("method", L2_METHODS)
def test_l2_training_inputs_stay_in_the_l2_ball_and_the_box(synthetic, method):
    torch.manual_seed(0)
    model = Watched()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    step = AdversarialStep(method, model, opt, eps=EPS, replays=3, attack_steps=3, norm="l2", seed=1)
    assert step.ctx.norm == "l2"
    farthest = 0.0
    for i in range(3):
        x = synthetic.x_train[i * 64:(i + 1) * 64].float() / 255
        x[:, :, 0] = 0.0
        x[:, :, -1] = 1.0
        model.inputs.clear()
        step(x, synthetic.y_train[i * 64:(i + 1) * 64])
        for seen in model.inputs:
            assert_in_ball_and_box(seen, x)
            farthest = max(farthest, l2(seen - x).max().item())
    if method != "standard":
        assert farthest >= 0.5 * EPS  # the attack does move, in L2 units (an L-inf step would go ~16 eps far)


def test_methods_without_an_l2_form_refuse_it_in_one_line(synthetic):
    model = Watched()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for method in sorted(set(METHODS) - set(L2_METHODS)):
        with pytest.raises(ConfigError) as err:
            AdversarialStep(method, model, opt, eps=EPS, norm="l2")
        message = str(err.value)
        assert "\n" not in message and method in message and "fgsm-rs, free, pgd" in message
    from fastadv.training.setup import check_config

    with pytest.raises(ConfigError, match="method n-fgsm has no l2 form"):
        check_config(TrainConfig(method="n-fgsm", norm="l2"))
    check_config(TrainConfig(method="pgd", norm="l2"))


# ----------------------------------------------------------------------------- config
def test_default_radii_by_dataset_and_norm():
    assert resolve_eps(TrainConfig(dataset="cifar10", norm="l2")) == 0.5
    assert resolve_eps(TrainConfig(dataset="cifar100", norm="l2")) == 0.5
    assert resolve_eps(TrainConfig(dataset="mnist", norm="l2")) == 2.0
    assert resolve_eps(TrainConfig(dataset="mnist")) == 0.3 and resolve_eps(TrainConfig(dataset="cifar10")) == 8 / 255
    assert resolve_eps(TrainConfig(dataset="synthetic", norm="l2", eps=1.5)) == 1.5
    with pytest.raises(ConfigError, match="no standard L2 radius for fashion-mnist: give eps"):
        resolve_eps(TrainConfig(dataset="fashion-mnist", norm="l2"))


def test_norm_and_eps_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="norm must be one of linf, l2, got 'L2'"):
        TrainConfig.from_dict({"norm": "L2"})
    with pytest.raises(ConfigError, match=r"eps must be in \[0, 1\] for L-inf"):
        TrainConfig.from_dict({"eps": 2.0})
    assert TrainConfig.from_dict({"eps": 2.0, "norm": "l2"}).eps == 2.0
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"eps": -1.0, "norm": "l2"})


def test_a_presets_linf_radii_do_not_carry_to_l2():
    cfg = TrainConfig.from_dict({"preset": "mnist", "norm": "l2"})
    assert cfg.eps is None and cfg.alpha is None and resolve_eps(cfg) == 2.0 and cfg.method == "pgd"
    cfg = TrainConfig.from_dict({"preset": "mnist", "norm": "l2", "eps": 1.5, "alpha": 0.5})
    assert (cfg.eps, cfg.alpha) == (1.5, 0.5)
    assert TrainConfig.from_dict({"preset": "mnist"}).eps == 0.3


# ----------------------------------------------------------------------------- evaluation
def test_specs_and_aa_lite_say_their_norm(trained):
    pytest.importorskip("pyautoattack")
    model, x, y = trained
    spec = AttackSpec("pgd", eps=EPS, steps=5, norm="l2")
    assert "L2 eps=1" in spec.describe() and spec.to_dict()["norm"] == "l2"
    assert spec.at_eps(0.5).norm == "l2"
    assert "L2 eps=1" in AttackSpec("autoattack", eps=EPS, norm="l2").describe()
    result = fastadv.evaluate(model, (x, y), eps=EPS, steps=5, norm="l2", aa_lite=AALite(points=64, steps=10,
                                                                                         targets=2))
    assert "L2 eps=1" in result.attack
    assert all("L2 eps=1" in stage["after"] for stage in result.aa_lite["stages"])
    assert result.headline_acc <= result.robust_acc < result.clean_acc
    with pytest.raises(ConfigError, match="norm"):
        fastadv.evaluate(model, (x, y), attack=spec, norm="l2")


def test_sanity_checks_probe_in_the_main_attacks_norm(trained):
    """The checks pass on a healthy model in L2 (large-eps at sqrt(d), FGM, APGD-CE and Square in L2)."""
    pytest.importorskip("pyautoattack")
    from fastadv.evaluation.sanity import run_checks

    model, x, y = trained
    checks = {c.name: c for c in run_checks(model, x[:64], y[:64], AttackSpec("pgd", eps=EPS, steps=10, norm="l2"))}
    assert "L2 eps=16" in checks["large-eps"].detail
    failed = [c.line() for c in checks.values() if c.passed is False]
    assert not failed, failed


def test_an_l2_run_trains_checks_and_evaluates_in_l2(synthetic, tmp_path, capsys):
    """``norm = "l2"`` end to end: the held-out checks and the final PGD and AA-lite in L2; ``fastadv eval`` takes
    the run's norm and radius, and ``--norm linf`` the dataset's L-inf radius."""
    pytest.importorskip("pyautoattack")
    from fastadv.cli import main

    result = fastadv.train({"dataset": "synthetic", "norm": "l2", "eps": EPS, "method": "pgd", "attack_steps": 2,
                            "epochs": 1, "train_limit": 1000, "val_size": 200, "eval_size": 100, "final_limit": 200,
                            "final_aa_points": 50, "final_aa_targets": 2, "out_dir": str(tmp_path),
                            "progress": False, "name": "l2"}, data=synthetic)
    summary = result.summary
    assert "L2 eps=1" in summary["attack"] and "L2 eps=1" in summary["headline"]["attack"]
    metrics = (result.run_dir / "metrics.csv").read_text()
    assert json.loads((result.run_dir / "config.json").read_text())["norm"] == "l2" and metrics
    assert main(["eval", str(result.run_dir), "--limit", "100", "--sanity-points", "50", "--json"]) == 0
    record = json.loads((result.run_dir / "eval.json").read_text())
    assert {a["norm"] for a in record["attacks"]} == {"l2"} and record["attacks"][0]["eps"] == EPS
    capsys.readouterr()
    assert main(["eval", str(result.run_dir), "--norm", "linf", "--limit", "100", "--sanity-points", "50",
                 "--output", str(tmp_path / "linf.json")]) == 0
    record = json.loads((tmp_path / "linf.json").read_text())
    assert {a["norm"] for a in record["attacks"]} == {"linf"} and record["attacks"][0]["eps"] == pytest.approx(0.1)
    assert main(["eval", str(result.run_dir), "--norm", "l1"]) == 2
    assert "unknown norm 'l1'" in capsys.readouterr().err
