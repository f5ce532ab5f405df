"""Where the commands write, and the rule that keeps them from destroying anything: a command writes
only into a folder it creates, or into one that holds nothing but its own earlier output, and it
replaces only files it wrote itself. Anything else is refused before any work, with the path and
what to do.

- `export --out`: a new or empty folder; an earlier export (its metadata.json says so) only with
  --force; never a run folder, a photo folder or a file.
- `evaluate --json`: a new file, or an earlier evaluation report (with its confusion-matrix
  picture beside it).
- `predict --out`: a new or empty folder, or one predict wrote before (it leaves a marker file).
- `train --run-dir`: a new or empty folder (see run.py).

Folders are created with the usual permissions (the user's umask), never private to the process.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from unet_tf.errors import UserError

EXPORT_FORMAT = "unet_tf SavedModel"  # metadata.json's "format" of an export
REPORT_FORMAT = "unet_tf evaluation"  # an evaluation report's "format"
BENCHMARK_FORMAT = "unet_tf benchmark"  # a benchmark result's
PREDICTIONS_MARKER = ".unet_tf-predictions"  # in every folder predict writes


class OutputPathError(UserError):
    """An output path that would overwrite something the command did not write."""


def _read_json(path: Path, limit: int = 10 * 2**20):
    """The JSON in `path`, or None (missing, not JSON, or larger than any file of ours)."""
    try:
        if path.stat().st_size > limit:
            return None
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_export(folder: Path) -> bool:
    metadata = _read_json(Path(folder) / "metadata.json")
    return isinstance(metadata, dict) and metadata.get("format") == EXPORT_FORMAT


def check_export_folder(out: Path, force: bool = False) -> None:
    """Refuses an `export --out` that holds anything but an earlier export (and that too without
    `force`)."""
    out = Path(out)
    _check_parent(out, "--out")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputPathError(f"--out {out} is a file; give a new folder for the SavedModel")
    if not any(out.iterdir()):
        return
    if is_export(out):
        if force:
            return
        raise OutputPathError(f"--out {out} holds an earlier export; add --force to replace it, "
                              "or give a new folder")
    what = "a training run" if (out / "config.json").is_file() else "other files"
    raise OutputPathError(f"--out {out} holds {what}, which an export would replace; give a new "
                          "folder (--force replaces only an earlier export)")


def check_report_file(path: Path, pictures=(), kind: str = REPORT_FORMAT) -> None:
    """Refuses a `--json` path (and the files written beside it, `pictures`: their paths) unless
    each is new or what an earlier report of this `kind` (its "format") wrote there: the report
    records each file's checksum (`files_sha256`), so a file changed or put there since is never
    replaced."""
    path = Path(path)
    _check_parent(path, "--json")
    if path.is_dir():
        raise OutputPathError(f"--json {path} is a folder; give a file name, e.g. {path}/report.json")
    earlier = _read_json(path) if path.is_file() else None
    ours = isinstance(earlier, dict) and earlier.get("format") == kind
    if path.exists() and not ours:
        raise OutputPathError(f"--json {path} exists and is not an earlier {kind} report; give a "
                              "new file name")
    for picture in map(Path, pictures):
        if not picture.exists():
            continue
        recorded = written_files(earlier, path).get(picture.name) if ours else None
        if not (recorded and picture.is_file() and picture.stat().st_size < 2**26
                and recorded == file_sha256(picture)):
            raise OutputPathError(f"{picture} exists and is not what an earlier evaluate wrote "
                                  f"there (evaluate --json {path} writes it); give another "
                                  "--json name")


def written_files(report: dict, json_path: Path) -> dict:
    """{file name: sha256} of the files the evaluation report at `json_path` wrote beside itself
    (earlier reports recorded only their confusion-matrix picture's, as `picture_sha256`)."""
    files = dict(report.get("files_sha256") or {})
    if report.get("picture_sha256"):
        files.setdefault(f"{Path(json_path).stem}_confusion.png", report["picture_sha256"])
    return files


def file_sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def prepare_predictions_folder(out: Path) -> Path:
    """Creates `predict --out` (or checks that it is empty or predict's own) and marks it."""
    out = Path(out)
    _check_parent(out, "--out")
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"--out {out} is a file; give a folder for the masks and overlays")
    if out.is_dir() and any(out.iterdir()) and not (out / PREDICTIONS_MARKER).is_file():
        raise OutputPathError(f"--out {out} holds other files (predict writes only into a new or "
                              "empty folder, or one it wrote before); give a new folder")
    make_folder(out, "--out")
    (out / PREDICTIONS_MARKER).write_text("masks and overlays written by unet_tf.predict\n")
    return out


def make_folder(path: Path, option: str) -> None:
    """mkdir -p, with the user's umask; errors as one line naming the option."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputPathError(f"{option} {path}: cannot create it ({error.strerror or error})"
                              ) from None


def _check_parent(path: Path, option: str) -> None:
    """The nearest existing folder above `path` must be a writable folder."""
    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{option} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputPathError(f"{option} {path}: {parent} is not writable")
            return


def default_mode_folder(path: Path) -> None:
    """Gives a folder made private by tempfile.mkdtemp the permissions a plain mkdir gives."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
