"""Continuing a run that stopped: after every epoch, everything needed to go on is saved.

`<run>/resume/` holds the weights with the optimizer's state (`epoch_NNNN.weights.h5`) and
`state.json`: the epochs completed, the weights file, and the early-stopping state (best value,
epochs waited, best epoch). `state.json` is replaced atomically and only after its weights file is
complete, so whatever moment a run is killed at, it points to a consistent state; at most the epoch
in progress is lost. `python -m unet_tf.train --resume RUN` continues from it. With
`--average-weights` the folder also holds the running sum of the weights (`average_NNNN.npz`,
named in `state.json`; see averaging.py).

Keras' BackupAndRestore keeps weights and epoch, but not the early-stopping and best-model state
(after a resume the first epoch would count as "best" however bad), and it writes its weights and
its epoch number as two files that a kill can leave out of step; hence this small callback.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras

from unet_tf.averaging import FILE_PREFIX as AVERAGE_PREFIX
from unet_tf.run_files import atomic_write_text, write_json

FOLDER = "resume"


class EpochState(keras.callbacks.Callback):
    """Saves weights, optimizer state and early-stopping state at the end of every epoch.

    Args:
        run: Path. The run folder.
        early_stopping: keras.callbacks.EarlyStopping. Whose state to save.
        extra: dict. More state to keep (e.g. the epoch fine-tuning started at).
    """

    def __init__(self, run: Path, early_stopping: keras.callbacks.EarlyStopping | None,
                 extra: dict | None = None):
        super().__init__()
        self.folder = Path(run) / FOLDER
        self.early_stopping = early_stopping
        self.extra = dict(extra or {})

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(exist_ok=True)
        name = f"epoch_{epoch + 1:04d}.weights.h5"
        tmp = self.folder / f".{name}.tmp.weights.h5"
        self.model.save_weights(tmp)  # includes the optimizer's variables
        tmp.replace(self.folder / name)
        stopping = self.early_stopping
        write_json(self.folder / "state.json", {
            "epochs_completed": epoch + 1,
            "weights": name,
            "early_stopping": {"best": _plain(stopping.best), "wait": stopping.wait,
                               "best_epoch": stopping.best_epoch},
            "stop_training": bool(self.model.stop_training),
            "extra": self.extra,
            "finished": False,
        })
        for old in self.folder.glob("epoch_*.weights.h5"):
            if old.name != name:
                old.unlink()


def _plain(value):
    return None if value is None else float(value)


def read_state(run: Path) -> dict | None:
    path = Path(run) / FOLDER / "state.json"
    return json.loads(path.read_text()) if path.is_file() else None


def mark_finished(run: Path) -> None:
    """Records that the run completed and drops the weights backups (model.keras has the
    result)."""
    state = read_state(run) or {}
    state["finished"] = True
    for pattern in ("epoch_*.weights.h5", f"{AVERAGE_PREFIX}*.npz"):
        for old in (Path(run) / FOLDER).glob(pattern):
            old.unlink()
    write_json(Path(run) / FOLDER / "state.json", state)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that can start from a saved state instead of from scratch.

    Args:
        restored: dict or None. `best`, `wait`, `best_epoch` from `state.json`, and
            `best_weights`: the weights of the best model so far.
        Other arguments: as `keras.callbacks.EarlyStopping`.
    """

    def __init__(self, *args, restored: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.restored = restored

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.restored:
            self.best = self.restored["best"]
            self.wait = self.restored["wait"]
            self.best_epoch = self.restored["best_epoch"]
            self.best_weights = self.restored.get("best_weights")


def truncate_history(path: Path, epochs: int) -> None:
    """Keeps the header and the first `epochs` complete rows of history.csv: rows written after
    the saved state (or half-written by a kill) would otherwise repeat or break the file."""
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return
    width = len(next(csv.reader(lines[:1])))
    rows = [line for line in lines[1:]
            if line.endswith("\n") and len(next(csv.reader([line]))) == width]
    atomic_write_text(path, "".join([lines[0], *rows[:epochs]]))
