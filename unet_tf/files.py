"""Writing files whole: a file is written to a temporary name beside its target and renamed over
it, so a crash leaves either the old complete file or the new complete one, never a half-written
file that looks whole. The bottom of the package: it imports nothing of it.

    >>> write_json(run / "metrics.json", {"mean_dice": 0.81})
    >>> with atomic_path(run / "model.keras") as tmp:
    ...     model.save(tmp)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np


def temporary_path(path) -> Path:
    """The hidden name beside `path` that a file is written to before it takes `path`'s name;
    with `path`'s suffixes, by which Keras and matplotlib choose the format."""
    path = Path(path)
    stem, dot, suffixes = path.name.partition(".")
    return path.with_name(f".{stem}.tmp{dot}{suffixes}")


@contextlib.contextmanager
def atomic_path(path):
    """The temporary path to write `path`'s new content to: renamed over `path` when the block
    ends, removed when it fails, so `path` is always either the old file or the new one, whole."""
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path, content: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(content)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path, value) -> None:
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def variables_bytes(variables) -> int:
    """Bytes the values of Keras or TensorFlow variables take."""
    return sum(int(np.prod(v.shape)) * np.dtype(_dtype_name(v.dtype)).itemsize for v in variables)


def _dtype_name(dtype) -> str:
    return getattr(dtype, "name", dtype)


def ensure_free_space(path, needed: int) -> None:
    """Raises the OSError of a full disk, naming `path`, unless its folder has `needed` bytes
    (and 10% more) free: writers of weights (HDF5) fail badly when the disk fills mid-file."""
    folder = Path(path)
    while not folder.is_dir():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < needed * 1.1:
        raise OSError(errno.ENOSPC, f"{needed / 2**20:,.0f} MiB needed, {free / 2**20:,.0f} MiB "
                      "free", str(path))


def save_model_atomically(model, path, keep_old_as=None) -> None:
    """Saves a Keras `model` to `path` through a temporary file; with `keep_old_as`, the file it
    replaces is first renamed to that path."""
    path = Path(path)
    ensure_free_space(path, variables_bytes(model.weights))
    with atomic_path(path) as tmp:
        model.save(tmp)
        if keep_old_as and path.exists():
            os.replace(path, keep_old_as)
