"""Evaluation: per-example worst case, per-class numbers, eps curve, batch independence, `fastadv eval` output."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import fastadv
from fastadv.cli import main
from fastadv.evaluation import ATTACK_PRESETS, AttackSpec, EvalReport, evaluate, evaluate_suite
from fastadv.evaluation.sanity import CheckResult


@pytest.fixture(scope="module")
def small(synthetic, briefly_trained):
    """A small-cnn trained a few steps on the synthetic set (not robust), and 96 test points."""
    return briefly_trained(1024), (synthetic.x_test[:96], synthetic.y_test[:96])


def test_worst_case_is_per_example_and_per_class_adds_up(small):
    model, data = small
    specs = [AttackSpec("pgd", eps=0.05, steps=3, restarts=2), AttackSpec("fgsm", eps=0.05)]
    report = evaluate_suite(model, data, specs, eps_curve=[0.0, 0.025, 0.05], sanity_points=32, num_classes=10)
    worst = report.worst_correct
    expected = report.clean.correct.clone()
    for r in report.attacks:
        expected &= r.correct
        assert report.worst_case_acc <= (report.clean.correct & r.correct).float().mean().item()
    assert torch.equal(worst, expected)
    assert report.worst_case_acc <= report.robust_acc <= report.clean_acc
    y = data[1]
    rows = report.per_class(y)
    assert sum(r["points"] for r in rows) == report.points == 96
    assert sum(r["robust_acc"] * r["points"] for r in rows) == pytest.approx(report.worst_case_acc * 96)
    assert sum(r["clean_acc"] * r["points"] for r in rows) == pytest.approx(report.clean_acc * 96)
    curve = dict(report.eps_curve)
    assert curve[0.0] == pytest.approx(report.clean_acc)  # eps=0 changes nothing
    main_at_eps = (report.clean.correct & report.attacks[0].correct).float().mean().item()
    assert curve[0.05] == pytest.approx(main_at_eps)  # the curve reuses the main attack at its own eps
    record = json.loads(json.dumps(report.to_dict(y)))  # JSON-serializable
    assert record["points"] == 96 and record["seed"] == 0
    assert record["attacks"][0]["description"].startswith("PGD-3 (2 restarts")
    assert len(record["sanity"]["checks"]) == len(report.sanity) and record["sanity"]["points"] == 32


def test_batch_size_does_not_change_the_numbers(small):
    """No random start: every batch size gives the same per-example results."""
    model, data = small
    spec = AttackSpec("pgd", eps=0.05, steps=3, random_start=False)
    a = evaluate(model, data, attack=spec, batch_size=7)
    b = evaluate(model, data, attack=spec, batch_size=500)
    assert a.clean_acc == b.clean_acc and a.robust_acc == b.robust_acc
    assert a.robust_loss == pytest.approx(b.robust_loss, rel=1e-5)


def test_evaluate_keeps_its_contract(small):
    model, data = small
    model.train()
    result = evaluate(model, data, eps=0.05, steps=2, seed=1)
    assert model.training  # mode restored
    model.eval()
    assert result.points == 96 and 0 <= result.robust_acc <= result.clean_acc <= 1
    assert result.attack == "PGD-2 (1 restart, eps=0.05, alpha=0.0125, ce loss)"
    assert set(result.to_dict()) >= {"clean_acc", "robust_acc", "clean_loss", "robust_loss", "points", "attack"}
    again = evaluate(model, data, eps=0.05, steps=2, seed=1)
    assert again.robust_acc == result.robust_acc  # same seed, same number


def test_evaluate_refuses_contradictory_attack_arguments(small):
    """An AttackSpec says everything; eps= (or steps=, ...) beside it is a one-line ConfigError, not ignored."""
    from fastadv.config import ConfigError

    model, data = small
    for extra in ({"eps": 0.1}, {"steps": 50}, {"alpha": 0.01, "loss": "cw"}):
        with pytest.raises(ConfigError) as info:
            evaluate(model, data, attack=AttackSpec("pgd", eps=0.05, steps=2), **extra)
        message = str(info.value)
        assert "\n" not in message and all(key in message for key in extra)
    with pytest.raises(ConfigError, match="eps"):  # an (x, y) pair has no dataset to take eps from
        evaluate(model, data, steps=2)
    with pytest.raises(ConfigError, match="unknown attack"):
        evaluate(model, data, attack="pgd20", eps=0.05)
    with pytest.raises(TypeError):
        evaluate(model, data, eps=0.05, step=2)


def test_default_eps_is_the_datasets(synthetic, briefly_trained):
    """Without eps an attack named by a string takes the dataset's standard radius (as training does),
    CIFAR's 8/255 included, not 0.3 for all."""
    from fastadv.threat import DEFAULT_EPS
    from fastadv.evaluation.spec import spec_from

    assert spec_from("pgd", dataset="cifar10").eps == pytest.approx(8 / 255)
    assert spec_from("pgd", dataset="cifar100").eps == pytest.approx(8 / 255)
    assert spec_from("pgd", dataset="mnist").eps == 0.3 == DEFAULT_EPS["mnist"]
    assert spec_from("fgsm", dataset="fashion-mnist").eps == DEFAULT_EPS["fashion-mnist"] == 0.1
    assert spec_from("pgd", eps=0.2, dataset="cifar10").eps == 0.2
    result = evaluate(briefly_trained(256), synthetic, steps=1, limit=32)
    assert "eps=0.1," in result.attack  # synthetic's standard radius


def test_attack_spec_descriptions_and_presets():
    assert AttackSpec("pgd", eps=0.3).describe() == "PGD-20 (1 restart, eps=0.3, alpha=0.075, ce loss)"
    assert AttackSpec("pgd", eps=0.3, steps=50, restarts=10).describe().startswith("PGD-50 (10 restarts")
    assert AttackSpec("autoattack", eps=8 / 255).to_dict()["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    spec = AttackSpec("pgd", eps=0.2, alpha=0.1)
    assert spec.at_eps(0.4).resolved_alpha() == pytest.approx(0.2)  # explicit alpha keeps its ratio
    assert AttackSpec("pgd", eps=0.2).at_eps(0.4).resolved_alpha() == pytest.approx(0.1)
    assert ATTACK_PRESETS["pgd20"] == {"steps": 20, "restarts": 1} and ATTACK_PRESETS["pgd50-10"] == {"steps": 50, "restarts": 10}


def test_render_says_when_a_number_is_not_trusted(small):
    from fastadv.cli.commands.eval import render

    model, data = small
    report = evaluate_suite(model, data, [AttackSpec("fgsm", eps=0.05)], sanity=False)
    bad = CheckResult("logits", False, "outputs are in [0,1] and every row sums to 1", "softmax outputs")
    record = {"model": "small-cnn", "dataset": "synthetic", "path": "x", "limit": 0}
    flagged = EvalReport(**{**report.__dict__, "sanity": [bad], "sanity_points": 32})
    assert "NOT TRUSTED" in render(flagged, record, data[1])
    ok = EvalReport(**{**report.__dict__, "sanity": [CheckResult("logits", True, "fine", "")]})
    assert "NOT TRUSTED" not in render(ok, record, data[1])


# ----------------------------------------------------------------------------- the command
@pytest.mark.slow
def test_eval_command_table_json_and_plot(robust_mnist_run, capsys, tmp_path):
    run_dir = robust_mnist_run.run_dir
    out = tmp_path / "eval.json"
    code = main(["eval", str(run_dir), "--limit", "200", "--eps-curve", "0,0.1,0.2,0.3,0.4", "--output", str(out),
                 "--no-progress"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    text = printed.out
    print(text)
    assert "200 of 10000 test points (--limit 200)" in text
    assert "worst case over all attacks" in text and "per-class accuracy" in text
    assert "all passed" in text and "NOT TRUSTED" not in text
    record = json.loads(out.read_text())
    assert record["points"] == 200 and record["seed"] == 0 and record["trusted"] is True
    names = [a["description"] for a in record["attacks"]]
    assert names == ["PGD-20 (1 restart, eps=0.3, alpha=0.075, ce loss)", "FGSM (eps=0.3)"]
    assert record["robust_acc"] == record["attacks"][0]["robust_acc"]  # the main attack, as in summary.json
    assert record["worst_case_acc"] <= min(a["robust_acc"] for a in record["attacks"])  # worst case per example
    eps_acc = [p["robust_acc"] for p in record["eps_curve"]["points"]]
    assert eps_acc[0] == pytest.approx(record["clean_acc"]) and eps_acc == sorted(eps_acc, reverse=True)
    png = tmp_path / "eps_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.slow
def test_eval_command_json_and_preset(robust_mnist_run, capsys, tmp_path):
    code = main(["eval", str(robust_mnist_run.run_dir), "--preset", "pgd50-10", "--limit", "10", "--json",
                 "--sanity-points", "10", "--output", str(tmp_path / "e.json"), "--loss", "cw", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    record = json.loads(out)
    assert record["attacks"][0]["description"] == "PGD-50 (10 restarts, eps=0.3, alpha=0.075, cw loss)"
    assert record["attacks"][0]["restarts"] == 10 and record["limit"] == 10 and record["points"] == 10
    assert json.loads((tmp_path / "e.json").read_text())["worst_case_acc"] == record["worst_case_acc"]


def test_eval_apgd_gives_the_aa_lite_worst_case(robust_mnist_run, capsys, tmp_path):
    """`fastadv eval RUN --apgd --limit N`: PGD-20, APGD-CE and APGD-T; the worst case agrees with the run's own
    AA-lite on the same points (up to the attacks' random starts: within 2 points of 100)."""
    run = robust_mnist_run.run_dir
    assert main(["eval", str(run), "--apgd", "--limit", "100", "--json", "--sanity-points", "20",
                 "--output", str(tmp_path / "e.json"), "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    names = [a["name"] for a in record["attacks"]]
    assert names == ["pgd", "fgsm", "apgd-ce", "apgd-t"] and record["attacks"][3]["targets"] == 3
    assert record["worst_case_acc"] <= min(a["robust_acc"] for a in record["attacks"])
    from fastadv.evaluation import AALite, AttackSpec

    own = fastadv.evaluate(fastadv.load_model(run), robust_mnist_run_points(), attack=AttackSpec("pgd", eps=0.3),
                           aa_lite=AALite(points=100))
    assert abs(own.aa_lite["robust_acc"] - record["worst_case_acc"]) <= 0.02


def robust_mnist_run_points():
    data = fastadv.load_dataset("mnist", download=False)
    return data.x_test[:100], data.y_test[:100]


@pytest.mark.parametrize("argv,message", [
    (["--apgd-targets", "0"], "--apgd-targets must be >= 1"),
    (["--preset", "pgd7"], "unknown preset 'pgd7' (valid: pgd20, pgd50-10)"),
    (["--eps-curve", "0,2"], "--eps-curve radii must be in [0, 1]"),
    (["--eps-curve", "0,x"], "--eps-curve expects a number"),
    (["--eps-curve", ","], "--eps-curve needs at least one radius"),
    (["--restarts", "0"], "--restarts must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--loss", "hinge"], "unknown loss 'hinge'"),
    (["--attack", "autoattack"], "AutoAttack is --autoattack"),
])
def test_bad_eval_flags(argv, message, capsys, tmp_path):
    (tmp_path / "RUN").mkdir()
    assert main(["eval", str(tmp_path / "RUN"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_missing_pyautoattack_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # import fails as if not installed
    (tmp_path / "RUN").mkdir()
    assert main(["eval", str(tmp_path / "RUN"), "--autoattack"]) == 2
    err = capsys.readouterr().err
    assert "pip install pyautoattack" in err and err.count("\n") == 1, err


def test_eval_help_lists_the_suite():
    out = subprocess.run([sys.executable, "-m", "fastadv", "eval", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--preset", "--eps-curve", "--autoattack", "--json", "--limit", "--batch-size", "--loss"):
        assert flag in out.stdout
