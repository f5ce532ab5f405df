"""What the Colab notebook (`colab/unet_segmentation.ipynb`) calls beside `preset`, `load_splits`,
`build_model` and `train`: each step of a run shown the way a learner wants to see it. The same
calls work in any Jupyter kernel, and in a script (pictures are then saved, not shown).

    from unet_tf import notebook as nb
    from unet_tf.config import preset
    from unet_tf.data import load_splits
    from unet_tf.train import train
    from unet_tf.training import build_model

    nb.check_runtime()                                   # versions, GPU, precision, XLA
    config = preset("quickstart", epoch_previews=True)
    train_split, val_split = load_splits(config)
    nb.show_examples(train_split, config.class_names)    # photos, masks, overlays
    model = build_model(config)
    nb.show_model(model, config)                         # the tutorial's down_stack and up_stack
    run = train(config, splits=(train_split, val_split))
    nb.show_run(run)                                     # curves and predictions
    nb.evaluate_run(run)                                 # scores, said honestly
    export = nb.export_run(run)                          # the SavedModel (a zip download in Colab)
    nb.segment_photos(export, stand_in=val_split)        # your own photos through the export

    folder = nb.own_data("my_data.zip")                  # your images/ and masks/, unpacked
    run = train(preset("own-data", data_dir=str(folder)))
"""

from __future__ import annotations

import errno
import importlib.metadata
import importlib.util
import io
import json
import os
import secrets
import shutil
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import unet_tf
from unet_tf import data, plots
from unet_tf import images as image_io
from unet_tf.config import Config, preset
from unet_tf.data import DataError
from unet_tf.data.sources import object_folders
from unet_tf.evaluation import (
    chose_the_model,
    evaluate_split,
    evaluation_config,
    evaluation_data,
    format_objects,
    format_report,
    photo_score,
    score_objects,
    scores_objects,
)
from unet_tf.export import export_saved_model
from unet_tf.inference import Policy, segment
from unet_tf.model import SKIP_LAYERS
from unet_tf.run.outputs import check_export_folder, make_folder, prepare_predictions_folder
from unet_tf.predict import Segmenter, collect_inputs, output_names, predict_files
from unet_tf.run import METRICS, MODEL
from unet_tf.run.model_file import load_model_safely, read_run_config
from unet_tf.training import gpu_available, precision_policy, use_xla

__all__ = ["check_runtime", "show_examples", "show_model", "show_run", "evaluate_run",
           "export_run", "own_data", "segment_photos"]

OWN_DATA_FOLDER = Path("own_data")  # where own_data unpacks a zip, under the working folder
OWN_DATA_MARKER = ".unet_tf-own-data"  # in each unpacking: the zip and what it wrote there
OWN_DATA_FORMAT = "unet_tf own_data"  # the marker's "format"
MAX_ZIP_MEMBERS = 250_000  # files; more than any data set of photos and masks a notebook trains on
GPU_ADVICE = "In Colab: Runtime > Change runtime type > GPU, then run the notebook from the top."


def _in_colab() -> bool:
    return "google.colab" in sys.modules


def _in_kernel() -> bool:
    return "ipykernel" in sys.modules


def _show_png(png: bytes) -> None:
    """Shows a PNG under the running cell (in a kernel; elsewhere nothing)."""
    if _in_kernel():
        from IPython.display import Image, display

        display(Image(data=png))


def _show_figure(figure) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    _show_png(buffer.getvalue())


def check_runtime() -> None:
    """Prints where unet_tf is imported from, the versions of Python, TensorFlow and Keras, and the
    GPU with the precision and XLA a run will use there (or how to get a GPU in Colab)."""
    print(f"unet_tf {unet_tf.__version__} ({Path(unet_tf.__file__).parent}); Python "
          f"{sys.version.split()[0]}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"tensorflow-datasets {importlib.metadata.version('tensorflow-datasets')}")
    defaults = preset("tutorial")
    if gpu_available():
        names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
                 for gpu in tf.config.list_physical_devices("GPU")]
        print(f"GPU: {', '.join(names)}; training computes in {precision_policy(defaults)}, XLA "
              f"{'on' if use_xla(defaults) else 'off'}")
    else:
        print(f"No GPU: training runs on the CPU, in float32, more slowly. {GPU_ADVICE}")


def show_examples(split: data.Split, class_names, count: int = 3, model=None) -> None:
    """Shows `count` examples of a split: photo, true mask and the truth laid over the photo; with
    `model`, the model's mask in place of the overlay (before training: noise)."""
    picks = plots.spread(len(split), count)
    images = [split.images[i] for i in picks]
    masks = [split.masks[i] for i in picks]
    if model is not None:
        predicted = [_segment(model, image) for image in images]
        figure = plots.predictions_figure(images, masks, predicted, class_names,
                                          titles=[split.names[i] for i in picks])
    else:
        figure = plots.panels_figure(
            [(image, plots.colorize(mask, class_names), plots.overlay(image, mask, class_names))
             for image, mask in zip(images, masks)],
            [(split.names[i], "true mask", "overlay") for i in picks], class_names)
    _show_figure(figure)


def _segment(model, image: np.ndarray) -> np.ndarray:
    policy = Policy(size=int(model.input_shape[1]))
    return segment(model, image[None], policy=policy)[0][0].numpy()


def show_model(model: keras.Model, config: Config) -> None:
    """Prints the U-Net as the tutorial builds it: the encoder layers whose outputs are the skip
    connections (`down_stack`), the pix2pix upsample blocks (`up_stack`), each joined to the skip of
    its size, and the last transposed convolution; then draws the model where pydot and Graphviz
    are installed (as in Colab)."""
    side, encoder = config.model_size, model.get_layer("encoder")
    print(f"down_stack: MobileNetV2 (alpha {config.alpha}, weights {config.encoder_weights}, "
          f"{'frozen' if not encoder.trainable else 'trained'}) on {side}x{side} photos; its "
          "outputs:")
    for (name, share), output in zip(SKIP_LAYERS, encoder.outputs):
        size = round(side * share)
        print(f"  {name:<22} {size}x{size}x{output.shape[-1]}")
    print("up_stack: pix2pix upsample blocks (3x3 transposed convolution, stride 2, BatchNorm, "
          "ReLU), each followed by the encoder output of its size:")
    blocks = [layer for layer in model.layers if layer.name.startswith("up_")]
    for (skip_name, share), block in zip(reversed(SKIP_LAYERS[:-1]), blocks):
        size = round(side * share)
        print(f"  {block.name:<14} {size // 2}x{size // 2} -> {size}x{size}, "
              f"{block.layers[0].filters} filters, + {skip_name}")
    logits = model.get_layer("logits")
    print(f"  {'logits':<14} {side // 2}x{side // 2} -> {side}x{side}, one channel per class "
          f"({', '.join(config.class_names)})")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"{model.count_params():,} parameters, {trainable:,} of them trained "
          f"(output {logits.output.shape[-1]} classes)")
    if importlib.util.find_spec("pydot") and shutil.which("dot"):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.png"
            keras.utils.plot_model(model, to_file=str(path), show_shapes=True, dpi=60)
            _show_png(path.read_bytes())
    else:
        print("(the model's picture needs pydot and Graphviz, as Colab has: "
              "pip install pydot; apt install graphviz)")


def _metrics(run: Path) -> dict:
    path = Path(run) / METRICS
    return json.loads(path.read_text()) if path.is_file() else {}


def show_run(run) -> None:
    """Shows a training run's learning curves and its predictions on validation photos, and says
    which epoch was kept (and when that was the last one: more epochs may help)."""
    run = Path(run)
    report = _metrics(run)
    best, epochs = report.get("best_epoch"), report.get("epochs_run")
    if best:
        print(f"best epoch {best} of {epochs}: validation mean Dice {report['mean_dice']:.3f}"
              + ("; the last epoch was the best: still improving, more epochs may help"
                 if best == epochs else ""))
    elif epochs:
        print(f"{epochs} epochs, no validation (every epoch ran; model.keras is the last)")
    for picture in ("curves.png", "predictions.png"):
        if (run / picture).is_file():
            _show_png((run / picture).read_bytes())


def _scoring_split(run_config: Config) -> str | None:
    """The split to score a run on: its own `val_split` when validation was carved out of the
    training split (so early stopping never saw it) and that split exists; else None (the run's
    validation data, said to be optimistic)."""
    if not run_config.validation_fraction or not run_config.validates:
        return None
    try:
        data.list_files(run_config, run_config.val_split)
    except DataError:
        return None  # e.g. one images/ + masks/ folder: no test/ beside it
    return run_config.val_split


def evaluate_run(run, split: str | None = None, full_resolution: bool = False,
                 worst: int = 3) -> dict:
    """Scores a run's model (model.keras) and prints the table, with the confusion matrix and the
    `worst` photos (photo, truth, prediction, each photo's mean Dice).

    Args:
        run: a run folder.
        split: str or None. The split to score (None: a split early stopping never saw when the
            run carved its validation out of training, else the run's validation data, and then
            the table says that these photos chose the model).
        full_resolution: bool. Score each photo at its own size, predicted as the export does.
        worst: int. How many of the lowest-scoring photos to show (and for instance data,
            photos with their true and found objects outlined, each in its own colour).

    Returns:
        The report (as `python -m unet_tf.evaluate` writes it).
    """
    run = Path(run)
    model, info = load_model_safely(run / MODEL)
    run_config = read_run_config(run / "config.json")
    split = split or _scoring_split(run_config)
    config = evaluation_config(info, split=split)
    named, policy, full = evaluation_data(info, config, bool(split), full_resolution)
    raw = None
    if scores_objects(config):  # objects too, from the same prediction
        raw, true, found, _, report_objects = score_objects(model, info, config, named, full,
                                                            policy)
    report, confusion, predicted = evaluate_split(model, named, config.class_names, policy=policy,
                                                  predicted=raw)
    report["chose_the_model"] = chose_the_model(info.config, split)
    print(format_report(report, config.class_names))
    if raw is not None:
        report["objects"] = report_objects
        print(format_objects(report_objects))
        shown = plots.spread(len(found), worst)
        _show_figure(plots.panels_figure(
            [(named.images[i], plots.instance_outlines(named.images[i], true[i]),
              plots.instance_outlines(named.images[i], found[i])) for i in shown],
            [(named.names[i], f"true: {_objects(true[i])}", f"found: {_objects(found[i])}")
             for i in shown], ()))
    _show_figure(plots.confusion_figure(confusion, config.class_names))
    scored = [photo_score(t, p, config.class_names) for t, p in zip(named.masks, predicted)]
    picks = np.argsort([score for _, score in scored], kind="stable")[:worst]
    if len(picks):
        print(f"the {len(picks)} photos it does worst on, by {scored[0][0]}"
              + (" (at their own size)" if full_resolution else "") + ":")
        _show_figure(plots.predictions_figure(
            [named.images[i] for i in picks], [named.masks[i] for i in picks],
            [predicted[i] for i in picks], config.class_names,
            titles=[f"{named.names[i]}: {scored[i][0]} {scored[i][1]:.3f}" for i in picks]))
    return report


def _objects(labels: np.ndarray) -> str:
    """"N objects" of an instance image (its distinct nonzero ids)."""
    count = int(np.count_nonzero(np.unique(labels)))
    return f"{count} object{'' if count == 1 else 's'}"


def export_run(run, download: bool = True) -> Path:
    """Exports a run's model as a SavedModel into `<run>/export` (an earlier export there is
    replaced) and returns the folder; in Colab with `download`, also downloads it as a zip."""
    run = Path(run)
    model, info = load_model_safely(run / MODEL)
    out = run / "export"
    check_export_folder(out, force=True)
    export_saved_model(model, out, info)
    print(f"SavedModel: {out.resolve()} (takes uint8 photos of any size, returns masks of "
          "their size)\n  " + "\n  ".join(sorted(p.name for p in out.iterdir())))
    if download and _in_colab():
        from google.colab import files

        files.download(shutil.make_archive(str(out), "zip", out))
    return out


def own_data(source: str | Path) -> Path | None:
    """A folder of your own images and masks, ready for `preset("own-data", data_dir=...)`.

    Args:
        source: "upload" (in Colab: choose a zip), the path of a zip, or of a folder; a path in
            Google Drive (/content/drive/...) mounts the Drive first. Empty: None (skipped).

    The zip (or folder) holds `images/` and `masks/` with files of the same stem (or `train/` and
    `test/`, each with both), at its top or a few single folders down. A zip is unpacked into
    `own_data/<zip name>/` under the working folder, replacing only an earlier unpacking of a
    zip of that name (a failure leaves it as it was).
    """
    if not str(source).strip():
        print("no own data given: set OWN_DATA to run this section")
        return None
    if str(source) == "upload":
        source = _upload_zip()
    path = Path(source).expanduser()
    if str(path).startswith("/content/drive") and _in_colab() and not Path(
            "/content/drive/MyDrive").is_dir():
        from google.colab import drive

        drive.mount("/content/drive")
    if not path.exists():
        raise DataError(f"own data {path}: no such file or folder; give a zip of images/ and "
                        "masks/, or a folder holding them")
    root = _unpack(path) if path.is_file() else _data_root(path, path)
    counts = {part: len(list((root / part).iterdir())) for part in ("images", "masks")
              if (root / part).is_dir()}
    folders = object_folders(root)
    layout = (", ".join(f"{n} {part}" for part, n in counts.items()) if counts else
              f"{len(folders)} image folders with one mask per object" if folders else
              "train/ and test/ with images/ and masks/ each")
    print(f"own data: {root} ({layout})")
    return root


def _upload_zip() -> Path:
    if not _in_colab():
        raise DataError("OWN_DATA = 'upload' asks for a file in Colab; elsewhere give a path")
    from google.colab import files

    uploaded = files.upload()
    if len(uploaded) != 1:
        raise DataError(f"expected one zip of images/ and masks/, got {len(uploaded)} files")
    name, content = next(iter(uploaded.items()))
    OWN_DATA_FOLDER.mkdir(exist_ok=True)
    path = OWN_DATA_FOLDER / Path(name).name
    path.write_bytes(content)
    return path


def _unpack(path: Path) -> Path:
    """Unpacks a zip into own_data/<stem>/ and returns the folder of its data there.

    The zip is unpacked into a staging folder beside own_data/<stem>/ and checked whole (every
    member's CRC, the data layout) before it is swapped in: a failure leaves an earlier unpacking
    as it was and no partial folder. An existing own_data/<stem>/ is replaced only when it holds
    nothing but what an earlier unpacking wrote (its marker lists that), never through a link,
    never with the zip inside it.
    """
    if not zipfile.is_zipfile(path):
        raise DataError(f"own data {path}: not a zip file; give a .zip of images/ and masks/, or "
                        "a folder")
    target = _unpack_target(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise DataError(f"own data {path}: the zip is damaged ({error}); make or download it "
                        "again") from None
    with archive:
        members, files, folders = _members(archive, path)
        _check_room(path, files, folders)
        # Not tempfile.mkdtemp: its folders are private to this user, unpacked data should not be.
        staging = OWN_DATA_FOLDER / f".{target.name}.unpacking-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            staging.mkdir()
            _extract(archive, members, staging, path)
            root = _data_root(staging, path).relative_to(staging)
            written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*"))
            (staging / OWN_DATA_MARKER).write_text(json.dumps(
                {"format": OWN_DATA_FORMAT, "zip": str(path), "unpacked": written}))
            _swap_in(staging, target, path)
        except OSError as error:
            raise _unpack_error(path, error, "") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already once swapped in
    return target / root


def _unpack_target(path: Path) -> Path:
    """own_data/<stem>, checked: a name of a folder of its own, and nothing there but an earlier
    unpacking."""
    name = path.stem
    if not name.strip() or name.startswith("."):  # "..zip" would name own_data/ itself
        raise DataError(f"own data {path}: {path.name} is not a name to unpack into: rename the "
                        "zip (e.g. my_data.zip unpacks into own_data/my_data/)")
    if OWN_DATA_FOLDER.exists() and not OWN_DATA_FOLDER.is_dir():
        raise DataError(f"own data {path}: {OWN_DATA_FOLDER} is a file, where own_data unpacks "
                        "zips; move it away")
    target = OWN_DATA_FOLDER / name
    _check_replaceable(target, path)
    return target


def _check_replaceable(target: Path, path: Path) -> None:
    """Refuses a `target` that is a link or a file, holds the zip, or holds anything that no
    unpacking wrote (an earlier unpacking's marker lists what it wrote)."""
    if target.is_symlink():
        raise DataError(f"own data {path}: {target} is a link (to {os.readlink(target)}); "
                        "own_data unpacks only into a folder of its own: remove the link or "
                        "rename the zip")
    if not target.exists():
        return
    if not target.is_dir():
        raise DataError(f"own data {path}: {target} is a file, where the zip would unpack; move "
                        "it away or rename the zip")
    if path.resolve().is_relative_to(target.resolve()):
        raise DataError(f"own data {path}: the zip lies inside {target}, the folder it unpacks "
                        "into (and replaces); move the zip out of it and give its new path")
    foreign = _not_unpacked(target)
    if foreign:
        raise DataError(f"own data {path}: {target} holds {foreign}, which no unpacking of a zip "
                        f"wrote; move that out of {target} (or delete the folder yourself), or "
                        "rename the zip to unpack it beside")


def _not_unpacked(folder: Path) -> str | None:
    """The first entry in `folder` (its path inside it) that its marker does not list; None when
    there is none (an earlier unpacking as it was, or an empty folder)."""
    try:
        marker = json.loads((folder / OWN_DATA_MARKER).read_text())
        listed = set(marker["unpacked"]) if marker.get("format") == OWN_DATA_FORMAT else set()
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        listed = set()
    for parent, folders, files in os.walk(folder):  # links are listed, never followed
        folders.sort()
        for name in sorted(folders + files):
            inside = (Path(parent) / name).relative_to(folder).as_posix()
            if inside != OWN_DATA_MARKER and inside not in listed:
                return inside
    return None


def _members(archive: zipfile.ZipFile, path: Path) -> tuple:
    """(the members to unpack, {path parts: member} of their files, {path parts} of their
    folders), refused with the reason when they cannot all be unpacked."""
    members = [m for m in archive.infolist() if not m.filename.startswith("__MACOSX/")]
    unsafe = [m.filename for m in members
              if m.filename.startswith("/") or ".." in Path(m.filename).parts]
    if unsafe:
        raise DataError(f"own data {path}: refused, it would write outside its folder "
                        f"({unsafe[0]})")
    files, folders = {}, set()
    for member in members:
        parts = tuple(p for p in member.filename.split("/") if p not in ("", "."))
        if not parts:
            continue
        if member.is_dir():
            folders.add(parts)
        else:
            files[parts] = member
        folders.update(parts[:i] for i in range(1, len(parts)))
    both = sorted(set(files) & folders)
    if both:
        raise DataError(f"own data {path}: {'/'.join(both[0])} is both a file and a folder in it; "
                        "zip the folders again so that each name is one or the other")
    if not files:
        raise DataError(f"own data {path}: the zip holds no files (only folders or macOS "
                        "__MACOSX/ resources); zip your images/ and masks/ folders with their "
                        "files")
    if len(files) > MAX_ZIP_MEMBERS:
        raise DataError(f"own data {path}: holds {len(files):,} files, more than the "
                        f"{MAX_ZIP_MEMBERS:,} own_data unpacks; unpack it yourself and give the "
                        "folder")
    encrypted = [m.filename for m in files.values() if m.flag_bits & 0x1]
    if encrypted:
        raise DataError(f"own data {path}: {encrypted[0]} is encrypted (password-protected), "
                        "which own_data cannot unpack; zip the folders again without a password")
    return members, files, folders


def _check_room(path: Path, files: dict, folders: set) -> None:
    """Refuses a zip whose files would not fit on the disk of own_data/: each file takes whole
    blocks and an inode, so 40,000 one-byte files take 160 MiB, not 40 KB."""
    make_folder(OWN_DATA_FOLDER, "own data")
    free = shutil.disk_usage(OWN_DATA_FOLDER).free
    disk = os.statvfs(OWN_DATA_FOLDER) if hasattr(os, "statvfs") else None
    block = max(disk.f_frsize or disk.f_bsize, 512) if disk else 4096
    marker = sum(len("/".join(parts)) + 4 for parts in [*files, *folders])  # its list of names

    def taken(size: int) -> int:
        return -(-max(size, 1) // block) * block

    needed = (sum(taken(m.file_size) for m in files.values()) + taken(marker)
              + (len(folders) + 1) * block)  # and the staging folder
    if needed > free:
        raise DataError(f"own data {path}: unpacks to {needed / 2**20:,.0f} MiB, more than the "
                        f"{free / 2**20:,.0f} MiB free here ({len(files):,} files, each taking "
                        f"at least {block:,} bytes on this disk); unpack it where there is room "
                        "and give that folder")
    entries = len(files) + len(folders) + 2  # and the staging folder and its marker
    if disk and disk.f_files and entries > disk.f_favail:  # some file systems count no inodes
        raise DataError(f"own data {path}: unpacks to {len(files):,} files and {len(folders):,} "
                        f"folders, more than the {disk.f_favail:,} this disk has room for (its "
                        "free inodes); unpack it where there is room and give that folder")


def _extract(archive: zipfile.ZipFile, members: list, staging: Path, path: Path) -> None:
    """Unpacks `members` into `staging`, each member's CRC checked as it is read; what goes wrong
    is one line naming the member."""
    name = ""
    try:
        for member in members:
            name = member.filename
            archive.extract(member, staging)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise DataError(f"own data {path}: the zip is damaged ({error}); make or download it "
                        "again") from None
    except NotImplementedError as error:
        raise DataError(f"own data {path}: {name} is packed in a way Python's zipfile cannot "
                        f"unpack ({error}); zip the folders again with the usual (deflate) "
                        "compression") from None
    except OSError as error:
        raise _unpack_error(path, error, name) from None


def _unpack_error(path: Path, error: OSError, name: str) -> DataError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(f"own data {path}: the disk filled while unpacking it; free some space "
                         "(or unpack it where there is room and give that folder) and run again")
    what = f" {name}" if name else ""
    return DataError(f"own data {path}: cannot unpack{what} into {OWN_DATA_FOLDER} "
                     f"({error.strerror or error}); unpack it yourself and give the folder")


def _swap_in(staging: Path, target: Path, path: Path) -> None:
    """Puts the checked unpacking `staging` in `target`'s place; the earlier unpacking there is
    moved aside first and removed only once the new one is in."""
    _check_replaceable(target, path)  # nothing of the user's was put there while unpacking
    earlier = None
    if target.exists():
        earlier = target.with_name(f".{target.name}.replaced-{secrets.token_hex(4)}")
        os.rename(target, earlier)
    try:
        os.rename(staging, target)
    except BaseException:  # Ctrl-C too: the earlier unpacking goes back
        if earlier is not None and not target.exists():
            os.rename(earlier, target)
        raise
    if earlier is not None:
        shutil.rmtree(earlier, ignore_errors=True)


def _data_root(folder: Path, source: Path) -> Path:
    """The folder holding images/ + masks/ (or train/ and test/, each with both), else one folder
    per image (ID/images/ and ID/masks/, one mask per object): `folder`, a folder found by going
    down through folders that hold one folder each (a zip of a path several folders deep), or
    the one such folder among others."""
    def paired(candidate: Path) -> bool:
        return (((candidate / "images").is_dir() and (candidate / "masks").is_dir())
                or (candidate / "train" / "images").is_dir())

    def per_object(candidate: Path) -> bool:
        return bool(object_folders(candidate)) or bool(object_folders(candidate / "train"))

    current = folder
    for _ in range(16):  # a link to a folder above would lead down for ever
        if paired(current):
            return current
        inside = sorted(p for p in current.iterdir() if p.is_dir()
                        and not p.name.startswith((".", "__")))
        lone = inside[0] if len(inside) == 1 else None
        # A single image folder is more likely images/ and masks/ one folder down: taken so.
        if per_object(current) and not (lone and paired(lone)):
            return current
        if lone is None:
            usable = [p for p in inside if paired(p)]
            if len(usable) == 1:
                return usable[0]
            break
        current = lone
    found = ", ".join(sorted(p.relative_to(folder).as_posix() for p in current.iterdir())[:10])
    raise DataError(f"own data {source}: no images/ and masks/ folders in it (found: "
                    f"{found or 'nothing'}); expected e.g. my_data/images/cell1.png with "
                    "my_data/masks/cell1.png")


def segment_photos(export_dir, stand_in: data.Split | None = None) -> Path:
    """Segments photos with an exported SavedModel at each photo's own size and shows photo and
    overlay side by side: in Colab the photos you upload, elsewhere the first photo of `stand_in`
    (so the step runs offline too). Returns the folder of masks and overlays."""
    export_dir = Path(export_dir)
    photos = export_dir.parent / "my_photos"
    photos.mkdir(exist_ok=True)
    if _in_colab():
        from google.colab import files

        for name, content in files.upload().items():
            (photos / Path(name).name).write_bytes(content)
    elif stand_in is not None:
        image_io.write_png(photos / f"{Path(stand_in.names[0]).stem}.png", stand_in.images[0])
    segmenter = Segmenter(export_dir)
    files_found, problems = collect_inputs([photos])
    out = prepare_predictions_folder(export_dir.parent / "my_predictions")
    for _, reason in problems + predict_files(segmenter, files_found, out, progress=False):
        print(f"skipped: {reason}")
    shown = [(path, overlay) for path, (_, overlay) in zip(files_found,
                                                           output_names(files_found, out))
             if overlay.is_file()]
    if shown:
        _show_figure(plots.panels_figure(
            [(image_io.read_image(path), image_io.read_image(overlay)) for path, overlay in shown],
            [(path.name, "predicted") for path, _ in shown], segmenter.class_names))
    print(f"masks and overlays: {out.resolve()}")
    return out
