"""Pieces shared by the command modules: config flags, number flags, tables."""
from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import fields
from pathlib import Path

from fastadv.config import ConfigError, TrainConfig, parse_number


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name V`` flag per TrainConfig field (booleans get ``--no-...`` too)."""
    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group("config fields (override --config)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} [default: {f.default}]".replace("%", "%%")
        if hints[f.name] in (bool, bool | None):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar="V", help=help_text)


def config_from_args(args: argparse.Namespace, use_presets: bool = False) -> TrainConfig:
    """The config a command's flags describe: ``--config FILE`` (if any) overridden by flags.

    ``use_presets`` (``fastadv train``): without ``--config`` and ``--preset``, the preset for the
    dataset and device (``fastadv.presets``) sits under the flags.
    """
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if getattr(args, "config", None):
        return TrainConfig.from_file(args.config, overrides)
    if use_presets and "preset" not in overrides:
        from fastadv.presets import preset_for

        dataset = overrides.get("dataset", TrainConfig.dataset)
        name = preset_for(dataset, device_type(overrides.get("device", TrainConfig.device)))
        if name is not None:
            overrides["preset"] = name
    cfg = TrainConfig.from_dict(overrides)
    if use_presets:
        from fastadv.presets import provenance

        note = provenance(overrides)
        if note:
            print(f"fastadv: {note}", file=sys.stderr)
    return cfg


def device_type(device: str) -> str:
    """'cpu', 'cuda', 'mps' for a config's device string; 'auto' asks torch whether CUDA is there."""
    if device != "auto":
        return device.split(":")[0]
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def number_flag(name: str, text: str) -> float:
    """Parse a flag value like '0.3' or '8/255'; one-line ConfigError otherwise."""
    try:
        return parse_number(text)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"--{name} expects a number such as 0.3 or 8/255, got {text!r}") from None


def table(rows) -> str:
    """Two aligned columns, one ``(label, value)`` pair a line."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def print_summary(summary: dict, run_dir: Path, label: str = "") -> None:
    print(f"\n{label}{summary['dataset']} / {summary['model']} / {summary['method']}: "
          f"{summary['steps']} steps, {summary['train_seconds']:.1f} s of training")
    if summary.get("status", "completed") != "completed":
        why = next((e["message"] for e in summary.get("events", []) if e.get("event") == "robustness_collapse"), "")
        print(f"  status: {summary['status'].upper()}{' -- ' + why if why else ''}; its figures are not to be trusted"
              if summary["status"] == "robustness collapsed" else f"  status: {summary['status']}")
    kept = summary.get("kept")
    if kept and kept.get("which") and (kept.get("which") != "raw" or kept.get("keep") == "best"):
        print(f"  weights kept: {kept['which']} at step {kept['step']} ({kept.get('why', '')})")
    failed = [c for c in summary.get("sanity", []) if c["passed"] is False]
    flag = "  NOT TRUSTED: a sanity check failed (below)" if failed else ""
    rows = []
    head = summary.get("headline")
    if head and head.get("name") == "AA-lite":
        rows += [("robust accuracy (AA-lite)", f"{100 * head['robust_acc']:.2f}%{flag}"),
                 ("  attack", f"{head['attack']} on the first {head['points']} test points")]
        flag = ""
    rows += [("clean accuracy", f"{100 * summary['clean_acc']:.2f}% on {summary['eval_points']} test points"),
             ("robust accuracy (PGD)", f"{100 * summary['robust_acc']:.2f}%{flag}"),
             ("  attack", f"{summary['attack']} on {summary['eval_points']} test points")]
    if summary.get("data_note"):
        rows.append(("data", f"{summary['dataset']}: {summary['data_note']}"))
    print(table(rows))
    for c in failed:
        print(f"  sanity [{c['name']}] FAILED: {c['detail']} -- {c['explanation']}")
    print(f"run directory: {run_dir}")
