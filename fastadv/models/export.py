"""Export a run's model as a checkpoint for outside tools (RobustBench, AutoAttack, plain PyTorch).

Two formats:

* ``robustbench`` (``.pt``): a plain ``state_dict`` (tensors only, CPU, contiguous) that
  loads with ``torch.load(path, weights_only=True)`` into the model class that
  ``fastadv.models.build_model`` returns. The Normalize layer is part of the model and its
  mean/std are buffers in the state dict, so the model takes [0,1] images, the input
  convention of RobustBench and AutoAttack.
* ``safetensors`` (``.safetensors``): the same tensors, with the architecture in the
  file's metadata so that ``fastadv.load_model(path)`` rebuilds the model alone.

Each export is checked by loading it back (``weights_only=True`` for ``.pt``) into a fresh
model and comparing every tensor, and comes with ``<out>.json``: the architecture and
the exact lines that load it. A ``robustbench`` export also writes ``<out stem>.model_info.json``
(``model_info``): RobustBench's model-info fields (dataset, threat model, eps as "8/255", architecture,
clean and AutoAttack accuracy as percent strings), and what fastadv knows besides: the line that
rebuilds the net, every accuracy the run directory holds with its attack and number of points, the
training data (a partial split said as such) and the versions.
"""
from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Callable

import torch

from fastadv.errors import CheckpointError, first_line
from fastadv.io import atomic_write, read_json_object, write_json
from fastadv.models.store import BUILD_KEYS, load_model, read_arch


def build_kwargs(arch: dict) -> dict:
    """``build_model`` keyword arguments for a run's architecture (mean/std come from the state dict)."""
    from fastadv.models import MODELS

    kwargs = {k: arch[k] for k in BUILD_KEYS if k in arch and k not in ("mean", "std")}
    ctor = MODELS.get(arch.get("model"))
    accepted = inspect.signature(ctor).parameters if ctor is not None else ()
    for key in ("depth", "width"):  # only the nets that take them (the WideResNet)
        if key not in accepted:
            kwargs.pop(key, None)
    return kwargs


def loading_snippet(arch: dict, filename: str, fmt: str) -> str:
    """The few lines a RobustBench/AutoAttack user runs to get the model back."""
    args = ", ".join([repr(arch["model"])] + [f"{k}={v!r}" for k, v in build_kwargs(arch).items()])
    load = (f'torch.load("{filename}", weights_only=True)' if fmt == "robustbench" else
            f'safetensors.torch.load_file("{filename}")')
    build = (["from fastadv.models import build_model", "", f"model = build_model({args})"]
             if arch["model"] != "custom" else
             ["from fastadv.models import wrap_model", "", f"model = wrap_model(MyNet(), channels={arch['channels']})"
              f"  # MyNet: {arch.get('module', 'your module')}"])
    lines = ["import torch"] + (["import safetensors.torch"] if fmt == "safetensors" else []) + build + [
        f"model.load_state_dict({load})",
        "model.eval()  # takes [0,1] images; normalization is inside the model",
    ]
    return "\n".join(lines)


def _save_pt(state: dict, arch: dict, out: Path) -> None:
    atomic_write(out, lambda tmp: torch.save(state, tmp))


def _save_safetensors(state: dict, arch: dict, out: Path) -> None:
    from safetensors.torch import save_file

    atomic_write(out, lambda tmp: save_file(state, tmp, metadata={"fastadv_arch": json.dumps(arch)}))


def _load_pt(out: Path) -> dict:
    return torch.load(out, map_location="cpu", weights_only=True)


def _load_safetensors(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out))


# format name -> (file suffix, save, load back)
FORMATS: dict[str, tuple[str, Callable, Callable]] = {
    "robustbench": (".pt", _save_pt, _load_pt),
    "safetensors": (".safetensors", _save_safetensors, _load_safetensors),
}


class ExportError(CheckpointError):
    """An export that cannot be written or does not load back identically; one line."""


def format_for(out: Path, fmt: str | None) -> str:
    """The format named, or the one the output's suffix implies; checks that they agree."""
    by_suffix = {suffix: name for name, (suffix, _, _) in FORMATS.items()}
    if fmt is None:
        if out.suffix not in by_suffix:
            raise ExportError(f"cannot tell the format from {out.name!r}: use a .pt or .safetensors name, or --format "
                              f"({', '.join(FORMATS)})")
        return by_suffix[out.suffix]
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (valid: {', '.join(FORMATS)})")
    if out.suffix != FORMATS[fmt][0]:
        raise ExportError(f"format {fmt} writes a {FORMATS[fmt][0]} file, got {out.name!r}")
    return fmt


def export_checkpoint(source: str | Path, out: str | Path, fmt: str | None = None, *, overwrite: bool = False,
                      model=None) -> dict:
    """Write the model of a run directory or weights file to ``out`` for RobustBench / AutoAttack users.

    Arguments:
        source: a run directory or weights file. out: ``.pt`` (plain ``state_dict``) or ``.safetensors``.
        fmt (str, optional): ``"robustbench"`` or ``"safetensors"``; by default from the suffix of ``out``.
        overwrite (bool): replace an existing file. (Default: False)
        model (nn.Module, optional): for a run that trained one's own module, that module freshly built.

    Returns:
        The record also written to ``<out>.json``: format, architecture, ``build_model`` arguments and the
        loading snippet. Raises ``ExportError`` (one line) on a bad name, an existing file without
        ``overwrite``, or a failed load-back check.
    """
    out = Path(out)
    fmt = format_for(out, fmt)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; pass --force to overwrite it")
    arch, weights = read_arch(Path(source))
    if arch["model"] == "custom" and model is None:
        raise ExportError(f"{source} trained its own module ({arch.get('module', '?')}): export it from Python with "
                          f"fastadv.export_checkpoint(run_dir, out, model=MyNet())")
    loaded = load_model(source, model=copy.deepcopy(model) if model is not None else None)
    load = loading_snippet(arch, out.name, fmt)
    info = model_info(arch, Path(weights), out.name, load) if fmt == "robustbench" else None  # reads first
    state = {k: v.detach().cpu().contiguous() for k, v in loaded.state_dict().items()}
    _, save, load_back = FORMATS[fmt]
    save(state, arch, out)
    verify(load_back(out), arch, state, out, fresh=copy.deepcopy(loaded) if model is not None else None)
    record = {"format": fmt, "file": out.name, "source": str(weights), "arch": arch,
              "build_model": {"name": arch["model"], **build_kwargs(arch)},
              "inputs": "N x C x H x W float images in [0,1]; normalization is inside the model",
              "load": load}
    if info is not None:
        info_path = out.with_name(out.stem + ".model_info.json")
        write_json(info_path, info)
        record["model_info"] = info_path.name
    write_json(out.with_name(out.name + ".json"), record)
    return record


# files of a run directory that the model info reads (written by the trainer and by `fastadv eval`)
SUMMARY, EVAL, CONFIG = "summary.json", "eval.json", "config.json"


def eps_text(eps: float) -> str:
    """eps as RobustBench writes it: "8/255" for a multiple of 1/255, else the number ("0.3")."""
    k = round(eps * 255)
    return f"{k}/255" if k and abs(eps * 255 - k) < 1e-6 else f"{eps:g}"


def percent(acc: float | None) -> str | None:
    return None if acc is None else f"{100 * acc:.2f}"


def rebuild_line(arch: dict) -> str:
    """The one Python line that rebuilds the (untrained) net the weights load into."""
    args = ", ".join([repr(arch["model"])] + [f"{k}={v!r}" for k, v in build_kwargs(arch).items()])
    return f"from fastadv.models import build_model; model = build_model({args})"


def _read(path: Path) -> dict:
    """A run's JSON record, {} when absent; a corrupt one is a one-line CheckpointError, not a silent gap."""
    return read_json_object(path) if path.is_file() else {}


def model_info(arch: dict, weights: Path, filename: str, load: str) -> dict:
    """RobustBench-style model info for an exported model, from the run directory that holds ``weights``.

    Accuracies are fractions in [0,1] under ``evaluations`` (each with its attack, points and source file)
    and RobustBench's percent strings in ``clean_acc`` / ``autoattack_acc``; ``autoattack_acc`` is set only
    when ``eval.json`` holds standard AutoAttack at the run's eps (``fastadv eval RUN --autoattack``)."""
    import torch

    from fastadv._version import __version__

    run = weights.parent
    summary, evaluated, config = _read(run / SUMMARY), _read(run / EVAL), _read(run / CONFIG)
    eps = summary.get("eps", config.get("eps"))
    evaluations = []
    if "clean_acc" in summary:
        evaluations.append({"name": "clean", "acc": summary["clean_acc"], "points": summary.get("eval_points"),
                            "source": SUMMARY})
    headline = summary.get("headline") or {}
    if headline.get("robust_acc") is not None:
        evaluations.append({"name": headline.get("name", "headline"), "acc": headline["robust_acc"],
                            "attack": headline.get("attack"), "points": headline.get("points"), "source": SUMMARY})
    if summary.get("robust_acc") is not None and summary.get("attack") != headline.get("attack"):
        evaluations.append({"name": "final PGD", "acc": summary["robust_acc"], "attack": summary.get("attack"),
                            "points": summary.get("eval_points"), "source": SUMMARY})
    autoattack = None
    for attack in evaluated.get("attacks", []):
        entry = {"name": attack.get("name"), "acc": attack.get("robust_acc"), "attack": attack.get("description"),
                 "points": evaluated.get("points"), "eps": attack.get("eps"), "source": EVAL}
        evaluations.append(entry)
        if (attack.get("name") == "autoattack" and attack.get("version") == "standard" and eps is not None
                and attack.get("eps") is not None and abs(attack["eps"] - eps) < 1e-9):
            autoattack = entry
    train_size = summary.get("train_size", config.get("train_size"))
    note = summary.get("data_note", config.get("data_note")) or "the complete training split"
    return {
        "name": summary.get("name", run.name),
        "dataset": arch.get("dataset"),
        "threat_model": {"l2": "L2"}.get(config.get("norm"), "Linf"),  # RobustBench's names
        "eps": eps_text(eps) if eps is not None else None,
        "architecture": arch["model"],
        "clean_acc": percent(summary.get("clean_acc")),
        "autoattack_acc": percent(autoattack["acc"]) if autoattack else None,
        "autoattack_points": autoattack["points"] if autoattack else None,
        "additional_data": False,
        "number_forward_passes": 1,
        "weights": filename,
        "rebuild": rebuild_line(arch) if arch["model"] != "custom" else None,
        "load": load,
        "inputs": "N x C x H x W float images in [0,1]; normalization is inside the model",
        "eps_value": eps,
        "method": summary.get("method", config.get("method")),
        "evaluations": evaluations,
        "trusted": summary.get("trusted"),
        "training_data": {"dataset": arch.get("dataset"), "train_images": train_size, "note": note},
        "versions": {"fastadv": __version__, "torch": torch.__version__,
                     "trained_with_torch": (config.get("versions") or {}).get("torch")},
    }


def verify(loaded: dict, arch: dict, state: dict, out: Path, fresh=None) -> None:
    """Load ``loaded`` into a fresh model of ``arch`` (or ``fresh``, strict) and compare every tensor with ``state``."""
    from fastadv.models import build_model

    fresh = fresh if fresh is not None else build_model(arch["model"], **build_kwargs(arch))
    try:
        fresh.load_state_dict(loaded)
    except RuntimeError as exc:
        raise ExportError(f"{out} does not load back into {arch['model']}: {first_line(exc)}") from None
    same = set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    if not same:
        raise ExportError(f"{out} does not hold the same tensors as the run's model")
