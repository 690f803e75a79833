"""``fastadv eval``: clean and adversarial accuracy of a run directory or weights file."""
from __future__ import annotations

import json
from pathlib import Path

from fastadv.commands._util import number_flag, table
from fastadv.config import ConfigError

NAME = "eval"
HELP = "clean and adversarial accuracy of a run or weights file"
ORDER = 20


def configure(parser) -> None:
    parser.description = "Evaluate a run directory or weights file on the test set."
    parser.add_argument("path", metavar="RUN_DIR_OR_WEIGHTS")
    parser.add_argument("--attack", default="pgd", help="pgd | fgsm [default: pgd]")
    parser.add_argument("--eps", default=None, help="L-inf radius, e.g. 0.3 or 8/255 [default: the run's]")
    parser.add_argument("--alpha", default=None, help="step size [default: eps/4 for PGD]")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps [default: 20]")
    parser.add_argument("--restarts", type=int, default=1, help="PGD restarts [default: 1]")
    parser.add_argument("--loss", default="ce", help="ce | cw [default: ce]")
    parser.add_argument("--limit", type=int, default=0, help="first N test points only [default: all]")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--dataset", default=None, help="[default: the run's]")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    from fastadv.checkpoint import load_model, read_arch
    from fastadv.data import load_dataset
    from fastadv.evaluation import AttackSpec, evaluate
    from fastadv.trainer import resolve_device

    for name in ("steps", "restarts", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.limit < 0:
        raise ConfigError(f"--limit must be >= 0, got {args.limit}")
    if args.attack not in ("pgd", "fgsm"):
        raise ConfigError(f"unknown attack {args.attack!r} (valid: fgsm, pgd)")
    if args.loss not in ("ce", "cw"):
        raise ConfigError(f"unknown loss {args.loss!r} (valid: ce, cw)")
    eps_flag = number_flag("eps", args.eps) if args.eps is not None else None
    if eps_flag is not None and not 0 <= eps_flag <= 1:
        raise ConfigError(f"--eps must be in [0, 1], got {eps_flag}")
    alpha = number_flag("alpha", args.alpha) if args.alpha is not None else None
    if alpha is not None and alpha <= 0:
        raise ConfigError(f"--alpha must be > 0, got {alpha}")
    device = resolve_device(args.device)
    path = Path(args.path)
    arch, _ = read_arch(path)
    model = load_model(path, device=device)
    run_config = path / "config.json" if path.is_dir() else path.parent / "config.json"
    run_cfg = json.loads(run_config.read_text()) if run_config.is_file() else {}
    eps = eps_flag if eps_flag is not None else run_cfg.get("eps")
    if eps is None:
        raise ConfigError("--eps is required when the weights come without their run's config.json")
    dataset = args.dataset or arch.get("dataset")
    data = load_dataset(dataset, args.data_dir or run_cfg.get("data_dir"), download=True, device=device)
    spec = AttackSpec(args.attack, eps=eps, alpha=alpha, steps=args.steps, restarts=args.restarts, loss=args.loss)
    result = evaluate(model, data, attack=spec, limit=args.limit, batch_size=args.batch_size,
                      seed=args.seed, device=device)
    out = {**result.to_dict(), "attack_params": spec.to_dict(), "dataset": dataset, "path": str(path)}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(table([("model", f"{arch['model']} ({path})"), ("dataset", f"{dataset}, {result.points} test points"),
                     ("attack", result.attack), ("clean accuracy", f"{100 * result.clean_acc:.2f}%"),
                     ("robust accuracy", f"{100 * result.robust_acc:.2f}%")]))
    return 0
