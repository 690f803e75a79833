"""The ``fastadv`` command: train, eval, demo.

Every user error (bad flag, bad value, unknown name, missing data or weights) is one line
on stderr and exit code 2; no tracebacks.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import typing
from dataclasses import fields
from pathlib import Path

from fastadv.config import ConfigError, TrainConfig, parse_number


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def field_comments() -> dict[str, str]:
    """The trailing ``# comment`` of each TrainConfig field, used as its --help text."""
    source = inspect.getsource(TrainConfig)
    out = {}
    for line in source.splitlines():
        stripped = line.strip()
        if ":" in stripped and "#" in stripped and not stripped.startswith("#"):
            name = stripped.split(":", 1)[0].strip()
            out[name] = stripped.split("#", 1)[1].strip()
    return out


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    comments = field_comments()
    group = parser.add_argument_group("config fields (override --config)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{comments.get(f.name, '')} [default: {f.default}]".replace("%", "%%")
        if hints[f.name] in (bool, bool | None):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar="V", help=help_text)


def build_parser() -> Parser:
    parser = Parser(prog="fastadv", description="Fast adversarial training: Free-m, FGSM-RS and PGD training "
                    "with honest PGD evaluation.",
                    epilog="Run `fastadv COMMAND --help` for the flags of each command.")
    from fastadv import __version__

    parser.add_argument("--version", action="version", version=f"fastadv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    train = sub.add_parser("train", help="train a robust model and write a run directory",
                           description="Train a model; every config field is a flag. "
                           "Example: fastadv train --dataset mnist --method fgsm-rs --epochs 10")
    train.add_argument("--config", metavar="FILE", help="TOML or JSON config; flags override it")
    train.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    add_config_flags(train)

    ev = sub.add_parser("eval", help="clean and adversarial accuracy of a run or weights file",
                        description="Evaluate a run directory or weights file on the test set.")
    ev.add_argument("path", metavar="RUN_DIR_OR_WEIGHTS")
    ev.add_argument("--attack", default="pgd", help="pgd | fgsm [default: pgd]")
    ev.add_argument("--eps", default=None, help="L-inf radius, e.g. 0.3 or 8/255 [default: the run's]")
    ev.add_argument("--alpha", default=None, help="step size [default: eps/4 for PGD]")
    ev.add_argument("--steps", type=int, default=20, help="PGD steps [default: 20]")
    ev.add_argument("--restarts", type=int, default=1, help="PGD restarts [default: 1]")
    ev.add_argument("--loss", default="ce", help="ce | cw [default: ce]")
    ev.add_argument("--limit", type=int, default=0, help="first N test points only [default: all]")
    ev.add_argument("--batch-size", type=int, default=500)
    ev.add_argument("--dataset", default=None, help="[default: the run's]")
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")

    demo = sub.add_parser("demo", help="train a robust MNIST classifier and evaluate it (PGD-20, eps=0.3)",
                          description="The main job on the default data; falls back to scikit-learn's "
                          "bundled digits when MNIST cannot be found or downloaded.")
    demo.add_argument("--data-dir", default=None)
    demo.add_argument("--out-dir", default="runs")
    demo.add_argument("--device", default="auto")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if args.config:
        return TrainConfig.from_file(args.config, overrides)
    return TrainConfig.from_dict(overrides)


def cmd_train(args) -> int:
    from fastadv.trainer import check_names, resolve_device, run_name
    from fastadv.config import resolve_eps

    cfg = config_from_args(args)
    check_names(cfg)
    if args.dry_run:
        print(json.dumps({"name": cfg.name or run_name(cfg, resolve_eps(cfg)), "config": cfg.to_dict()}, indent=2))
        return 0
    resolve_device(cfg.device)
    from fastadv.trainer import train

    result = train(cfg)
    print_summary(result.summary, result.run_dir)
    return 0


def print_summary(summary: dict, run_dir: Path, label: str = "") -> None:
    print(f"\n{label}{summary['dataset']} / {summary['model']} / {summary['method']}: "
          f"{summary['steps']} steps, {summary['train_seconds']:.1f} s of training")
    print(table([("clean accuracy", f"{100 * summary['clean_acc']:.2f}%"),
                 ("robust accuracy", f"{100 * summary['robust_acc']:.2f}%"),
                 ("attack", f"{summary['attack']} on {summary['eval_points']} test points")]))
    print(f"run directory: {run_dir}")


def table(rows) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def cmd_eval(args) -> int:
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


def number_flag(name: str, text: str) -> float:
    try:
        return parse_number(text)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"--{name} expects a number such as 0.3 or 8/255, got {text!r}") from None


def cmd_demo(args) -> int:
    from fastadv.data import DataError, load_dataset
    from fastadv.demo import DEMO_CONFIG, FALLBACK_CHANGES
    from fastadv.trainer import resolve_device, train

    device = resolve_device(args.device)
    cfg = TrainConfig.from_dict({**DEMO_CONFIG, "out_dir": args.out_dir, "device": args.device,
                                 "data_dir": args.data_dir})
    label = ""
    try:
        data = load_dataset("mnist", args.data_dir, download=True, device=device)
    except DataError as exc:
        print(f"fastadv demo: MNIST unavailable ({exc}); running on scikit-learn's bundled digits instead")
        cfg = cfg.replace(**FALLBACK_CHANGES)
        data = load_dataset("digits", device=device)
        label = "[digits fallback, not MNIST] "
    print(f"fastadv demo: {cfg.method} training of {cfg.model} on {data.name} ({len(data.y_train)} images, "
          f"{cfg.epochs:g} epochs, eps={cfg.eps}), then PGD-{cfg.final_attack_steps} on the test set")
    result = train(cfg, data=data)
    print_summary(result.summary, result.run_dir, label)
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from fastadv.checkpoint import CheckpointError
    from fastadv.data import DataError
    from fastadv.trainer import TrainingDiverged

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DataError, CheckpointError) as exc:
        print(f"fastadv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"fastadv {args.command}: stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fastadv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
