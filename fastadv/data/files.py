"""Files on disk: the download cache and ``<name>.npz`` arrays."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from fastadv.data.batches import DataError
from fastadv.errors import first_line


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fastadv"


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path) -> tuple[np.ndarray, ...]:
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise DataError(f"{path} lacks array(s) {', '.join(missing)} (needs {', '.join(NPZ_KEYS)})")
            return tuple(f[k] for k in NPZ_KEYS)
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path}: {first_line(exc)}") from None
