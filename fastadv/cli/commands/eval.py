"""``fastadv eval``: clean accuracy, FGSM, PGD (and AutoAttack), worst case, per class, eps curve, sanity checks."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fastadv.cli.commands._util import number_flag
from fastadv.config import ConfigError

NAME = "eval"
HELP = "clean and adversarial accuracy of a run or weights file, with sanity checks"
ORDER = 20

ATTACK_NAMES = ("pgd", "fgsm")
LOSS_NAMES = ("ce", "cw")


def configure(parser) -> None:
    parser.description = (
        "Evaluate a run directory or weights file on the test set (all of it unless --limit): clean accuracy, "
        "FGSM, PGD-K with R restarts (default PGD-20, 1 restart, alpha = eps/4), optionally AutoAttack, the "
        "per-example worst case over all attacks, per-class accuracy, and sanity checks. Writes eval.json "
        "beside the run.")
    parser.epilog = "Example: fastadv eval runs/demo-mnist --preset pgd50-10 --eps-curve 0,0.1,0.2,0.3,0.4"
    parser.add_argument("path", metavar="RUN_DIR_OR_WEIGHTS")
    parser.add_argument("--attack", default="pgd", help="main attack: pgd | fgsm [default: pgd]; FGSM always "
                        "runs as well")
    parser.add_argument("--preset", default=None, help="pgd20 (PGD-20, 1 restart) | pgd50-10 (PGD-50, 10 "
                        "restarts); --steps/--restarts override it [default: pgd20]")
    parser.add_argument("--norm", default=None, help="threat model of every attack: linf | l2 [default: the run's, "
                        "else linf]")
    parser.add_argument("--eps", default=None, help="radius in the norm, e.g. 0.3 or 8/255 (L-inf), 0.5 (L2) "
                        "[default: the run's; under another norm than the run's, the dataset's standard one]")
    parser.add_argument("--alpha", default=None, help="PGD step size [default: eps/4]")
    parser.add_argument("--steps", type=int, default=None, help="PGD steps [default: 20]")
    parser.add_argument("--restarts", type=int, default=None, help="PGD random restarts [default: 1]")
    parser.add_argument("--loss", default="ce", help="ce (cross-entropy) | cw (Carlini-Wagner margin) [default: ce]")
    parser.add_argument("--apgd", action="store_true", help="also run APGD-CE and APGD-T (pyautoattack): with the "
                        "main PGD the worst case is AA-lite, every run's headline (use --limit 1000 as training does)")
    parser.add_argument("--apgd-targets", type=int, default=3, help="APGD-T's target classes [default: 3, as a "
                        "run's AA-lite; AutoAttack standard: 9]")
    parser.add_argument("--autoattack", action="store_true", help="also run standard AutoAttack (APGD-CE, APGD-T, "
                        "FAB-T, Square; pyautoattack, a dependency of fastadv)")
    parser.add_argument("--eps-curve", default=None, metavar="LIST",
                        help="comma-separated radii, e.g. 0,1/255,2/255,4/255,8/255: robust accuracy of the main "
                        "attack at each (table and eps_curve.png)")
    parser.add_argument("--limit", type=int, default=0, help="first N test points only [default: all]")
    parser.add_argument("--batch-size", type=int, default=500, help="evaluation batch, independent of training "
                        "[default: 500]")
    parser.add_argument("--sanity-points", type=int, default=200, help="points the sanity checks' extra attacks "
                        "run on [default: 200]")
    parser.add_argument("--dataset", default=None, help="[default: the run's]")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts [default: 0]")
    parser.add_argument("--output", default=None, metavar="FILE", help="where to write the JSON record "
                        "[default: eval.json beside the run]")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars on stderr [default: when stderr is a terminal]")


def in_range(eps: float, norm: str) -> bool:
    """A radius in the norm's range: [0, 1] for L-inf (1 covers the whole box), >= 0 for L2."""
    return 0 <= eps <= (1 if norm == "linf" else float("inf"))


def parse_eps_list(text: str, norm: str = "linf") -> list[float]:
    values = [number_flag("eps-curve", part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise ConfigError("--eps-curve needs at least one radius, e.g. 0,0.1,0.2,0.3")
    bad = [v for v in values if not in_range(v, norm)]
    if bad:
        raise ConfigError(f"--eps-curve radii must be in [0, 1] (L-inf) or >= 0 (L2), got {bad[0]}")
    return sorted(set(values))


def check_flags(args, norm: str = "linf") -> dict:
    """Validate the flags before anything is loaded (``norm``: the one the attacks will use); returns the
    parsed numbers."""
    from fastadv.config import NORMS
    from fastadv.evaluation import ATTACK_PRESETS

    for name in ("steps", "restarts"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be >= 1, got {value}")
    for name in ("batch_size", "sanity_points"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.limit < 0:
        raise ConfigError(f"--limit must be >= 0, got {args.limit}")
    if args.attack not in ATTACK_NAMES:
        raise ConfigError(f"unknown attack {args.attack!r} (valid: {', '.join(sorted(ATTACK_NAMES))}; "
                          f"AutoAttack is --autoattack)")
    if args.loss not in LOSS_NAMES:
        raise ConfigError(f"unknown loss {args.loss!r} (valid: {', '.join(LOSS_NAMES)})")
    if args.preset is not None and args.preset not in ATTACK_PRESETS:
        raise ConfigError(f"unknown preset {args.preset!r} (valid: {', '.join(ATTACK_PRESETS)})")
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r} (valid: {', '.join(NORMS)})")
    eps = number_flag("eps", args.eps) if args.eps is not None else None
    if eps is not None and not in_range(eps, norm):
        raise ConfigError(f"--eps must be in [0, 1] for L-inf (>= 0 for L2), got {eps}")
    alpha = number_flag("alpha", args.alpha) if args.alpha is not None else None
    if alpha is not None and alpha <= 0:
        raise ConfigError(f"--alpha must be > 0, got {alpha}")
    curve = parse_eps_list(args.eps_curve, norm) if args.eps_curve is not None else []
    if args.apgd_targets < 1:
        raise ConfigError(f"--apgd-targets must be >= 1, got {args.apgd_targets}")
    if args.autoattack or args.apgd:
        from fastadv.core.attacks import require_pyautoattack

        require_pyautoattack()
    return {"eps": eps, "alpha": alpha, "curve": curve}


def attack_specs(args, eps: float, alpha: float | None, norm: str = "linf") -> list:
    """Main attack first (PGD from preset/flags, or FGSM), then FGSM, then AutoAttack if asked; all in ``norm``."""
    from fastadv.evaluation import ATTACK_PRESETS, AttackSpec

    preset = ATTACK_PRESETS[args.preset or "pgd20"]
    steps = args.steps if args.steps is not None else preset["steps"]
    restarts = args.restarts if args.restarts is not None else preset["restarts"]
    fgsm = AttackSpec("fgsm", eps=eps, loss=args.loss, norm=norm)
    specs = [fgsm] if args.attack == "fgsm" else [
        AttackSpec("pgd", eps=eps, alpha=alpha, steps=steps, restarts=restarts, loss=args.loss, norm=norm), fgsm]
    if args.apgd:
        specs += [AttackSpec("apgd-ce", eps=eps, steps=100, norm=norm),
                  AttackSpec("apgd-t", eps=eps, steps=100, targets=args.apgd_targets, norm=norm)]
    if args.autoattack:
        specs.append(AttackSpec("autoattack", eps=eps, norm=norm))
    return specs


def run(args) -> int:
    import torch

    from fastadv.core.perf import resolve_device
    from fastadv.data import load_dataset
    from fastadv.evaluation import evaluate_suite, plot_eps_curve
    from fastadv.evaluation.spec import dataset_eps
    from fastadv.io import read_json_object, write_json
    from fastadv.models.store import load_model, read_arch

    path = Path(args.path)
    run_dir = path if path.is_dir() else path.parent
    run_config = run_dir / "config.json"
    run_cfg = read_json_object(run_config) if run_config.is_file() else {}
    run_norm = run_cfg.get("norm", "linf")
    norm = args.norm or run_norm
    flags = check_flags(args, norm)
    device = resolve_device(args.device)
    arch, weights = read_arch(path)
    model = load_model(path, device=device)
    dataset = args.dataset or arch.get("dataset")
    if not dataset:
        raise ConfigError("--dataset is required: the weights do not say which dataset they were trained on")
    eps = flags["eps"] if flags["eps"] is not None else run_cfg.get("eps") if norm == run_norm else dataset_eps(
        dataset, norm)  # the run's radius is in the run's norm
    if eps is None:
        raise ConfigError("--eps is required when the weights come without their run's config.json")
    data = load_dataset(dataset, args.data_dir or run_cfg.get("data_dir"), download=True, device=device)
    specs = attack_specs(args, eps, flags["alpha"], norm)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    progress = make_progress() if show else None
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if show or args.autoattack else None  # AA's own lines

    report = evaluate_suite(model, data, specs, eps_curve=flags["curve"], limit=args.limit,
                            batch_size=args.batch_size, seed=args.seed, device=device,
                            sanity_points=args.sanity_points, num_classes=data.num_classes,
                            progress=progress, log=log)
    y = data.y_test[:args.limit] if args.limit else data.y_test
    output = Path(args.output) if args.output else run_dir / "eval.json"
    plot = None
    if report.eps_curve:
        plot = output.with_name("eps_curve.png")
        plot_eps_curve(report.eps_curve, plot, title=f"{arch['model']} on {dataset} ({report.points} test points)\n"
                       f"{report.curve_spec.curve_label()}", clean_acc=report.clean_acc, eps_mark=eps)
    options = {k: v for k, v in vars(args).items() if k not in ("run", "command")}
    record = {"path": str(path), "weights": str(weights), "model": arch["model"], "dataset": dataset,
              "limit": args.limit, "options": options, **report.to_dict(y),
              "eps_curve_plot": str(plot) if plot else None, "versions": versions(torch)}
    write_json(output, record)

    for check in report.failed_checks:
        print(f"warning: sanity check {check.name!r} failed: {check.detail}. {check.explanation}.", file=sys.stderr)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(render(report, record, y))
        print(f"\nwrote {output}" + (f" and {plot}" if plot else ""))
    return 0


def versions(torch) -> dict:
    from fastadv._version import __version__

    out = {"fastadv": __version__, "torch": torch.__version__}
    try:
        import pyautoattack

        out["pyautoattack"] = pyautoattack.__version__
    except ImportError:
        pass
    return out


def make_progress():
    from tqdm import tqdm

    return lambda desc, total: tqdm(desc=f"{desc:>10}", total=total, unit="img", leave=False, file=sys.stderr,
                                    dynamic_ncols=True)


def pct(a: float) -> str:
    return f"{100 * a:6.2f}%"


def render(report, record: dict, y) -> str:
    """The human-readable tables of one evaluation."""
    untrusted = "" if report.trusted else "   << NOT TRUSTED: sanity checks failed (see warnings)"
    subset = (f"{report.points} of {report.total_points} test points (--limit {record['limit']})"
              if record["limit"] and report.points < report.total_points else
              f"all {report.points} test points")
    lines = [f"{record['model']} on {record['dataset']} ({record['path']}): {subset}, seed {report.seed}", ""]
    rows = [("clean", pct(report.clean_acc), "")]
    rows += [(r.spec.describe(), pct((report.clean.correct & r.correct).float().mean().item()), f"{r.seconds:.1f} s")
             for r in report.attacks]
    worst_label = "worst case over all attacks (per example)" if len(report.attacks) > 1 else "robust accuracy"
    rows.append((worst_label, pct(report.worst_case_acc) + untrusted, ""))
    width = max(len(r[0]) for r in rows)
    lines.append(f"  {'attack':<{width}}  {'accuracy':>8}  time")
    lines += [f"  {name:<{width}}  {acc}  {sec}".rstrip() for name, acc, sec in rows]

    lines += ["", "  per-class accuracy (robust = worst case)", f"  {'class':>5}  {'points':>6}  {'clean':>7}  {'robust':>7}"]
    lines += [f"  {r['class']:>5}  {r['points']:>6}  {pct(r['clean_acc'])}  {pct(r['robust_acc'])}"
              for r in report.per_class(y)]

    if report.eps_curve:
        lines += ["", f"  robust accuracy against eps ({report.curve_spec.curve_label()})",
                  f"  {'eps':>8}  {'x255':>6}  {'robust':>7}"]
        lines += [f"  {e:>8.4g}  {e * 255:>6.1f}  {pct(a)}" for e, a in report.eps_curve]

    lines += ["", f"  sanity checks (extra attacks on {report.sanity_points} of the points):"]
    lines += [f"    {c.line()}" for c in report.sanity]
    verdict = ("all passed: the number is trusted as far as these checks go" if report.trusted else
               f"{len(report.failed_checks)} failed: the robust accuracy above is NOT trusted")
    lines.append(f"  {verdict}")
    return "\n".join(lines)

