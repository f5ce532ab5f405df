"""Writing files whole: a file is written to a temporary name beside its target and renamed over
it, so a crash leaves either the old complete file or the new complete one, never a half-written
file that looks whole. The bottom of the package: it imports nothing of it.

    >>> write_json(run / "metrics.json", {"mean_dice": 0.81})
    >>> with atomic_path(run / "model.keras") as tmp:
    ...     model.save(tmp)
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


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


def save_model_atomically(model, path, keep_old_as=None) -> None:
    """Saves a Keras `model` to `path` through a temporary file; with `keep_old_as`, the file it
    replaces is first renamed to that path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        model.save(tmp)
        if keep_old_as and path.exists():
            os.replace(path, keep_old_as)
