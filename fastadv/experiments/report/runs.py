"""The runs a report reads: finished run directories, their metrics, grouped by config (seeds together)."""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastadv.errors import UserError, first_line
from fastadv.naming import strip_seed

CURVE_FIELDS = ("step", "seconds", "lr", "momentum", "train_loss", "train_acc", "clean_loss", "clean_acc",
                "adv_loss", "adv_acc", "grad_computations")


class ReportError(UserError, ValueError):
    """No usable runs, a bad baseline name or target; one line for the user."""


@dataclass
class Run:
    """One run directory: its config, summary and held-out curves (1-D float arrays, one entry per check)."""

    path: Path
    name: str
    config: dict
    summary: dict
    curves: dict[str, np.ndarray]

    @property
    def label(self) -> str:
        return strip_seed(self.name)


@dataclass
class Group:
    """The seeds of one config."""

    label: str
    runs: list[Run] = field(default_factory=list)

    def final(self, key: str) -> np.ndarray:
        return np.array([float(r.summary[key]) for r in self.runs])

    def outside(self) -> np.ndarray | None:
        """Each seed's AA-lite figure (the per-point worst case with APGD; summary "aa_lite"), or None when a
        seed has none."""
        values = [(r.summary.get("aa_lite") or {}).get("robust_acc") for r in self.runs]
        return None if any(v is None for v in values) else np.array(values, dtype=float)

    def mean_curve(self, key: str) -> np.ndarray:
        """Seed mean of a curve, over the checks every seed has (same eval_every: same steps)."""
        n = min(len(r.curves[key]) for r in self.runs)
        return np.mean([r.curves[key][:n] for r in self.runs], axis=0)


# ----------------------------------------------------------------------------- reading
def read_metrics(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [k for k in CURVE_FIELDS if rows and k not in rows[0]]
    if missing:
        raise ReportError(f"{path}: metrics.csv lacks column(s) {', '.join(missing)}")
    return {k: np.array([float(r[k]) for r in rows], dtype=float) for k in CURVE_FIELDS}


def find_run_dirs(paths) -> list[Path]:
    """Run directories (holding metrics.csv) at or below each path, sorted, without duplicates."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ReportError(f"no such run directory or folder: {p}")
        found.extend(sorted(m.parent for m in p.rglob("metrics.csv")) if p.is_dir() else [])
    return sorted(set(found))


def load_runs(paths) -> tuple[list[Run], list[Path]]:
    """(finished runs, unfinished run directories) under ``paths``."""
    runs, unfinished = [], []
    for d in find_run_dirs(paths):
        if not (d / "summary.json").is_file() or not (d / "config.json").is_file():
            unfinished.append(d)
            continue
        try:
            summary = json.loads((d / "summary.json").read_text())
            config = json.loads((d / "config.json").read_text())
        except ValueError as exc:
            raise ReportError(f"{d}: unreadable JSON ({first_line(exc)})") from None
        curves = read_metrics(d / "metrics.csv")
        if len(curves["step"]) == 0:
            unfinished.append(d)
            continue
        runs.append(Run(d, summary.get("name", d.name), config, summary, curves))
    return runs, unfinished


def group_runs(runs: list[Run], baseline: str | None) -> list[Group]:
    """Groups by label, baseline first, then by label."""
    groups: dict[str, Group] = {}
    for r in runs:
        groups.setdefault(r.label, Group(r.label)).runs.append(r)
    for g in groups.values():
        g.runs.sort(key=lambda r: r.config.get("seed", 0))
    return sorted(groups.values(), key=lambda g: (g.label != baseline, g.label))


def pick_baseline(groups: list[Group], requested: str | None) -> str | None:
    """The baseline label: the requested one (a group label or run name), else the only FAT (3 steps) config."""
    labels = [g.label for g in groups]
    if requested:
        for name in (requested, strip_seed(requested)):
            if name in labels:
                return name
        raise ReportError(f"baseline {requested!r} is not among the runs (configs: {', '.join(labels)})")
    fat = [lab for lab in labels if re.search(r"_FAT(2\w*)?_", lab)]
    return fat[0] if len(fat) == 1 else None
