"""Continuing a run that stopped: after every epoch, everything needed to go on is saved.

One owner, `EpochState`, writes `<run>/resume/` after every epoch:

- `epoch_NNNN.weights.h5`: the model's weights with the optimizer's state;
- `epoch_NNNN.state.npz`: the arrays of the stateful callbacks (the running sum of the weights
  with --average-weights);
- `state.json`: a `RunState` naming both files, with the epochs completed, the phase, and each
  stateful callback's own small state (early stopping's best value, epochs waited, best epoch).

`state.json` is replaced atomically and only after the files it names are complete, so whatever
moment a run is killed at, it points to a consistent state; at most the epoch in progress is lost.
`python -m unet_tf.train --resume RUN` continues from it. A stateful callback offers `state()`
(a JSON-ready dict and a dict of arrays) and `restore(values, arrays)`; it writes no files itself.

Keras' BackupAndRestore keeps weights and epoch, but not the early-stopping and best-model state
(after a resume the first epoch would count as "best" however bad), and it writes its weights and
its epoch number as two files that a kill can leave out of step; hence this small owner.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import keras
import numpy as np

from unet_tf.errors import UserError
from unet_tf.files import (
    atomic_path,
    atomic_write_text,
    ensure_free_space,
    variables_bytes,
    write_json,
)

FOLDER = "resume"


class RunStateError(UserError):
    """A run's saved state cannot be used; the message says which file and why."""


@dataclasses.dataclass
class RunState:
    """Where a run stands, as `resume/state.json` records it.

    Attributes:
        epochs_completed: int. Epochs whose results are all saved.
        weights: str or None. The weights file (model and optimizer) of the last completed epoch.
        arrays: str or None. The stateful callbacks' arrays of that epoch.
        callbacks: dict. Each stateful callback's JSON state, by its `state_name`.
        fine_tune_from: int or None. The epoch count at which fine-tuning started (None: the
            first phase is still running, or there is none).
        finished: bool. The run completed; its results are in the run folder.
    """

    epochs_completed: int = 0
    weights: str | None = None
    arrays: str | None = None
    callbacks: dict = dataclasses.field(default_factory=dict)
    fine_tune_from: int | None = None
    finished: bool = False

    @classmethod
    def read(cls, run: Path) -> "RunState | None":
        """The saved state of `run`, or None when it saved none (no epoch completed)."""
        path = Path(run) / FOLDER / "state.json"
        if not path.is_file():
            return None
        try:
            values = json.loads(path.read_text())
            state = cls(**values)
            int(state.epochs_completed)
        except (ValueError, TypeError) as error:
            raise RunStateError(f"{path} is damaged ({error}); the run cannot be resumed from it"
                                ) from None
        for name in (state.weights, state.arrays):
            if name and not (path.parent / name).is_file():
                raise RunStateError(f"{path} names {name}, which is missing; the run cannot be "
                                    "resumed from it")
        return state

    def write(self, run: Path) -> None:
        write_json(Path(run) / FOLDER / "state.json", dataclasses.asdict(self))


class EpochState(keras.callbacks.Callback):
    """The owner of a run's state: after every epoch saves the weights, the optimizer's state and
    every stateful callback's state, then `state.json` (see the module docstring).

    Put it last in the callback list: it records what the others did in the epoch.

    Args:
        run: Path. The run folder.
        state: RunState. Updated and written after every epoch.
        stateful: list of callbacks with `state_name`, `state()` and `restore(values, arrays)`.
    """

    def __init__(self, run: Path, state: RunState, stateful: list):
        super().__init__()
        self.folder = Path(run) / FOLDER
        self.state = state
        self.stateful = list(stateful)

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(exist_ok=True)
        stem = f"epoch_{epoch + 1:04d}"
        weights, arrays = f"{stem}.weights.h5", f"{stem}.state.npz"
        ensure_free_space(self.folder / weights, variables_bytes(
            [*self.model.weights, *self.model.optimizer.variables]))
        with atomic_path(self.folder / weights) as tmp:
            self.model.save_weights(tmp)  # includes the optimizer's variables
        values, saved = {}, {}
        for callback in self.stateful:
            values[callback.state_name], own = callback.state()
            saved.update({f"{callback.state_name}/{key}": array for key, array in own.items()})
        with atomic_path(self.folder / arrays) as tmp:
            np.savez(tmp, **saved)
        self.state.epochs_completed, self.state.weights, self.state.arrays = epoch + 1, weights, arrays
        self.state.callbacks = values
        self.state.write(self.folder.parent)
        self._drop_files(keep={weights, arrays})

    def restore(self, model: keras.Model) -> None:
        """Puts the saved weights and optimizer state into `model` (built, compiled) and the saved
        state into every stateful callback."""
        model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(self.folder / self.state.weights)
        except ValueError as error:  # Keras names a layer or shape that does not match
            raise RunStateError(
                f"{self.folder / self.state.weights} does not fit the model that config.json "
                f"describes now ({str(error).splitlines()[0][:200]}); was config.json edited "
                "since the run started? Put it back as it was to --resume") from None
        with np.load(self.folder / self.state.arrays) as saved:
            for callback in self.stateful:
                prefix = f"{callback.state_name}/"
                arrays = {key[len(prefix):]: saved[key] for key in saved.files
                          if key.startswith(prefix)}
                callback.restore(self.state.callbacks.get(callback.state_name, {}), arrays)

    def finish(self) -> None:
        """Records that the run completed and drops the saved weights (model.keras has them)."""
        self.state.finished = True
        self.state.weights = self.state.arrays = None
        self.state.write(self.folder.parent)
        self._drop_files(keep=set())

    def _drop_files(self, keep: set) -> None:
        for old in self.folder.glob("epoch_*"):
            if old.name not in keep:
                old.unlink()


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose state (best value, epochs waited, best epoch, best weights) can be
    saved and restored: by `EpochState` across a restart, and by the fine-tuning phase across its
    second `fit`; and which tells others of each new best epoch.

    Args:
        on_new_best: callables, each called with the epoch (0-based) early stopping has just
            recorded as the best.
        uncounted: callable of an epoch's logs, True for an epoch that neither counts as best nor
            uses up patience (after the first epoch).
        Other arguments: as `keras.callbacks.EarlyStopping`.
    """

    state_name = "early_stopping"

    def __init__(self, *args, on_new_best=(), uncounted=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._restored = None
        self.on_new_best = list(on_new_best)  # called with the epoch (0-based) of each new best
        self.uncounted = uncounted  # logs -> True for an epoch that does not count

    def on_epoch_end(self, epoch, logs=None):
        if self.uncounted and self.best_weights is not None and self.uncounted(logs or {}):
            return  # neither a new best nor an epoch of patience used up
        super().on_epoch_end(epoch, logs)
        if self.best_epoch == epoch and self.wait == 0:
            for call in self.on_new_best:
                call(epoch)

    def state(self) -> tuple:
        values = {"best": None if self.best is None else float(self.best), "wait": int(self.wait),
                  "best_epoch": int(self.best_epoch)}
        return values, {f"best_{i}": w for i, w in enumerate(self.best_weights or [])}

    def restore(self, values: dict, arrays: dict) -> None:
        """The next `fit` starts from `values` and `arrays`, as `state()` gave them."""
        weights = [arrays[f"best_{i}"] for i in range(len(arrays))] or None
        self._restored = {**values, "best_weights": weights}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._restored:
            self.best = self._restored["best"]
            self.wait = self._restored["wait"]
            self.best_epoch = self._restored["best_epoch"]
            self.best_weights = self._restored["best_weights"]


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
