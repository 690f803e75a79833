"""The subcommands of ``fastadv``: one module per command, found by ``discover()``.

A command module defines ``NAME`` (the subcommand), ``HELP`` (one line for ``fastadv --help``),
``ORDER`` (its place in that list), ``configure(parser)`` (adds its flags and sets
``description``) and ``run(args) -> int`` (the exit code). Modules whose name starts with ``_``
are helpers, not commands. Command modules import torch and the heavy parts of fastadv
inside ``run`` so that building the parser (``--help``, bad flags) stays fast.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def discover() -> list[ModuleType]:
    """Every command module of this package, in ``ORDER``."""
    modules = [importlib.import_module(f"{__name__}.{info.name}")
               for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))
