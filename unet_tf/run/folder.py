"""A run folder: opened by one process at a time, new, resumed or (on other workers) a scratch
folder, and the names of what lives in it.

    with open_run(config, "runs/pets") as run:     # created and locked
        ...                                        # train; run.state says where it stands

A new run folder must be new or empty: two runs' files are never mixed. Whoever opens a run holds
an exclusive lock on `<run>/.lock` (the kernel's, released when the process ends however it
ends), so a second `train` or `--resume` of the same run is refused while the first works, and a
run whose process was killed can be resumed at once. A folder this process created is removed
again when it fails before its first epoch is saved: nothing is left behind by a run that did not
start.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import errno
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from unet_tf.config import Config, ConfigError
from unet_tf.distribute import is_chief
from unet_tf.run.resume import RunState
from unet_tf.files import write_json

CONFIG = "config.json"
PLAN = "plan.json"  # what the run decided before it started (unet_tf.plan)
MODEL = "model.keras"
BEST_EPOCH = "best_epoch.keras"  # with --average-weights: the best epoch beside the average
HISTORY = "history.csv"
METRICS = "metrics.json"
TRAIN_LOG = "train.log"  # what the run printed (unet_tf.run.log)
LOCK = ".lock"
# What a run writes before its first epoch is saved (removed when it starts again).
STARTED = (CONFIG, PLAN, HISTORY, TRAIN_LOG, "logs", "cache", "resume", "previews", LOCK)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None


class RunFolderError(ConfigError):
    """The run folder cannot be used: taken, not empty, not writable; the message says what to
    do."""


@dataclasses.dataclass
class Run:
    """An open run folder.

    Attributes:
        path: Path. The folder.
        state: RunState. Where the run stands (new: nothing done yet).
        resumed: bool. Opened with --resume.
        scratch: bool. A worker's throw-away folder (only the chief writes the real one).
        created: str. "folder" when this process created the folder, "files" when it only wrote
            into an empty folder it was given, "" when it reopened a run.
    """

    path: Path
    state: RunState
    resumed: bool = False
    scratch: bool = False
    created: str = ""
    created_parent: Path | None = None  # runs/, when this process made it
    _lock: object = None

    def close(self, failed: bool = False) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None
        if self.scratch or (failed and self.created and not self.state.epochs_completed):
            _remove_own_files(self.path, remove_folder=self.scratch or self.created == "folder")
            if self.created_parent and not any(self.created_parent.iterdir()):
                self.created_parent.rmdir()


@contextlib.contextmanager
def open_run(config: Config, run_dir=None, resume: bool = False):
    """The run folder of `config` (`run_dir` first, then config.run_dir, else a new folder under
    runs/), locked for this process; config.json is written into a new one. Yields a `Run`."""
    if not is_chief():
        # Other workers train in step with the chief but write into a scratch folder.
        run = Run(Path(tempfile.mkdtemp(prefix="unet_tf-worker-")), RunState(), scratch=True)
    elif resume:
        run = _resume(Path(run_dir), config)
    else:
        run = _create(str(run_dir or config.run_dir), config)
    try:
        yield run
    except BaseException:
        run.close(failed=True)
        raise
    run.close()


def check_new_run_dir(run_dir: str) -> None:
    """Refuses a --run-dir that cannot hold a new run (a file, not empty, not writable), before
    any work and without writing anything."""
    path = Path(run_dir)
    if not run_dir or not path.exists():
        return
    if not path.is_dir():
        raise RunFolderError(f"--run-dir {path} is a file; give a folder")
    _check_empty(path)
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunFolderError(f"--run-dir {path}: not writable; give a folder you can write to")


def _create(run_dir: str, config: Config) -> Run:
    if run_dir:
        path = Path(run_dir)
        created = "folder" if not path.exists() else "files"
        check_new_run_dir(run_dir)  # before writing anything into it
        _make_folder(path)
        parent = None
    else:
        parent = None if Path("runs").is_dir() else Path("runs")
        path, created = _new_timestamped_folder(config), "folder"
    lock = _lock(path)
    try:
        _check_empty(path)  # again: another process may have started in it meanwhile
    except RunFolderError:
        lock.close()
        raise
    run = Run(path, RunState(), created=created, created_parent=parent, _lock=lock)
    try:
        write_json(path / CONFIG, config.to_dict())
    except OSError as error:
        run.close(failed=True)
        raise RunFolderError(f"--run-dir {path}: cannot write into it ({_reason(error)})") from None
    return run


def _check_empty(path: Path) -> None:
    if any(p.name != LOCK for p in path.iterdir()):
        hint = (f"; to continue the run it holds: python -m unet_tf.train --resume {path}"
                if (path / CONFIG).is_file() else "")
        raise RunFolderError(f"--run-dir {path} is not empty (it may hold another run); give a "
                             f"new folder or empty this one{hint}")


def _resume(path: Path, config: Config) -> Run:
    if not (path / CONFIG).is_file():
        raise RunFolderError(f"--resume {path}: no {CONFIG} there; is it a run folder?")
    lock = _lock(path)
    try:
        state = RunState.read(path)
    except ValueError:
        lock.close()
        raise
    if state is None:  # stopped (killed) before its first epoch was saved: nothing to lose
        lock.close()
        print(f"--resume {path}: no epoch was saved before the run stopped; starting it again "
              f"there, as its {CONFIG} says")
        for name in STARTED:
            item = path / name
            shutil.rmtree(item) if item.is_dir() else item.unlink(missing_ok=True)
        return _create(str(path), config)
    if state.finished:
        lock.close()
        raise RunFolderError(f"--resume {path}: this run finished; its results are in {path}")
    if (path / BEST_EPOCH).is_file():
        # Stopped while putting the averaged weights into model.keras: until training ends again,
        # model.keras is the best epoch's model.
        os.replace(path / BEST_EPOCH, path / MODEL)
    if config.validates and state.epochs_completed and not (path / MODEL).is_file():
        lock.close()  # the resume state holds the last epoch, not the best one: nothing is lost
        raise RunFolderError(
            f"--resume {path}: {MODEL} (the best epoch so far) is missing; a resumed run only "
            f"replaces it with a better epoch, so it would end without one. Put {MODEL} back, or "
            f"train again into a new folder: python -m unet_tf.train --config {path / CONFIG} "
            f"--run-dir NEW_RUN_DIR")
    return Run(path, state, resumed=True, _lock=lock)


def _new_timestamped_folder(config: Config) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-{config.dataset}-{config.image_size}px"
    for suffix in range(1, 1000):
        path = base if suffix == 1 else base.with_name(f"{base.name}-{suffix}")
        try:
            _make_folder(path.parent)
            path.mkdir()  # atomic: two processes never get the same folder
            return path
        except FileExistsError:
            continue
    raise RunFolderError(f"{base}: 999 runs started this second; give --run-dir")


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunFolderError(f"--run-dir {path} is a file; give a folder") from None
    except OSError as error:
        raise RunFolderError(f"--run-dir {path}: cannot create it ({_reason(error)})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunFolderError(f"--run-dir {path}: not writable; give a folder you can write to")


def _lock(path: Path):
    """The open lock file of `path`, locked exclusively for this process."""
    try:
        handle = open(path / LOCK, "a+")
    except OSError as error:
        raise RunFolderError(f"{path}: cannot write into it ({_reason(error)})") from None
    if fcntl is None:
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunFolderError(f"{path} is in use by {holder}: one process at a time trains a "
                             "run; wait for it to end (or stop it), then --resume") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {os.uname().nodename}\n")
    handle.flush()
    return handle


def _remove_own_files(path: Path, remove_folder: bool) -> None:
    """Removes a run folder this process created (or, in a folder the user gave, what it wrote)."""
    if remove_folder:
        shutil.rmtree(path, ignore_errors=True)
        return
    for item in path.iterdir():
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)


def _reason(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return "the disk is full"
    return error.strerror or str(error)


def best_epoch(history: dict) -> int:
    """The epoch (from 1) with the highest validation mean Dice: the one model.keras holds (its
    first, on a tie, as the checkpoint keeps the first)."""
    return int(np.nanargmax(history["val_dice"])) + 1


def read_history(path: Path) -> dict:
    """history.csv as {column: [float per epoch]}, without the columns Keras' CSVLogger leaves
    empty ("NA": its validation columns when there is no validation)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})
            if key != "epoch" and any(row[key] != "NA" for row in rows)}
