r"""Segment photographs with a trained model or an exported SavedModel.

    python -m unet_tf.predict --model runs/RUN/model.keras --out predictions photos/ another.jpg
    python -m unet_tf.predict --model runs/RUN/model.keras --out predictions --postprocess largest,fill photos/
    python -m unet_tf.predict --model exports/pets --out predictions --tta photos/
    python -m unet_tf.predict --model runs/RUN/model.keras --out predictions --instances photos/

For every input image (JPEG incl. CMYK and grayscale, PNG incl. RGBA, palette and 16-bit, GIF's
first frame, BMP, TIFF, WebP; any size) it writes into --out:

- `<stem>_mask.png`: the class index of every pixel (0, 1, ...) at the photo's own resolution,
  as a palette PNG: programs read the indices, viewers show each class in its colour (background
  black);
- `<stem>_overlay.png`: the photo with the predicted classes tinted (background left as is), a
  legend of the colours underneath;
- `classes.json`: every class's index, name and colour (#rrggbb), as the masks' palette has them.

With `--instances` it also counts objects (touching ones separated: `unet_tf.instances`):

- `<stem>_instances.png`: a 16-bit grayscale PNG at the photo's size, 0 background and 1..N the
  objects (more than 65535 objects fail that photo);
- `<stem>_instances_overlay.png`: the photo with each object outlined in its own colour;
- `counts.csv`: one row per photo, `file,count,median_area` (area in pixels; empty for 0 objects).

Objects come from the model's class probabilities at the photo's size, not from the
post-processed mask (keeping only the largest object would leave one to count): a model with
classes background, interior and boundary (or the pet trimap's pet, background, border)
separates touching objects by watershed; any other model counts the connected components of
what is not background (`instances.classes_for_separation`). For patch models the probabilities
are the stitched full-size map, so an object across a tile seam is one object. Objects under
`--min-object-size` pixels (default: the `min_object_size` the model's export or run records,
else none) merge into the object they touch, or are dropped.

Masks of a model trained on oxford_iiit_pet keep only the largest pet and have their holes filled
(`--postprocess auto`, the default; `--postprocess none` writes the model's raw masks). `--tta`
averages the class probabilities of each photo and of its mirror image (twice the work; the same
test-time flips as `python -m unet_tf.evaluate --tta`).

Folders are searched (not recursively) for image files. A file that cannot be read or written is
reported with the reason and the others are still processed; the exit status is 1 if any failed.
--out must be new or empty, or a folder predict wrote before (it leaves a `.unet_tf-predictions`
marker): nothing else is ever written into, and no output takes an input's name.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from unet_tf import images as image_io
from unet_tf import instances as instance_io
from unet_tf import plots
from unet_tf.files import atomic_write_bytes, write_json
from unet_tf.evaluation import recorded_min_size
from unet_tf.cli import add_tta_argument, command_parser, positive_int, run_command
from unet_tf.inference import mirror_mean, postprocess, segment
from unet_tf.progress import progress as report_progress
from unet_tf.run.model_file import (ModelFileError, check_keras_file, check_model_config,
                                    load_model_safely, read_model_config)
from unet_tf.run.outputs import is_export, prepare_predictions_folder


CLASSES = "classes.json"  # beside the masks: index, name and colour of every class
COUNTS = "counts.csv"  # with --instances: objects per photo


class Segmenter:
    """Photo (uint8 [H, W, 3]) -> class mask [H, W], from a model.keras or a SavedModel folder.

    With `tta` the class probabilities of the photo and of its mirror image are averaged (a
    SavedModel exported with --tta does so already).
    """

    def __init__(self, model_path, tta: bool = False):
        path = Path(model_path)
        if path.is_dir():
            metadata = _export_metadata(path)
            try:
                self._function = tf.saved_model.load(str(path)).signatures["serving_default"]
            except Exception as error:  # TensorFlow reports a damaged SavedModel in many types
                raise ModelFileError(f"--model {path}: the SavedModel cannot be loaded "
                                     f"({type(error).__name__}: {str(error).splitlines()[0][:200]}"
                                     "); export it again") from None
            classes = int(self._function.structured_outputs["probabilities"].shape[-1])
            self.class_names = tuple(metadata.get("class_names",
                                                  [f"class_{i}" for i in range(classes)]))
            self.trained_on = metadata.get("config", {}).get("dataset")
            self.min_object_size = recorded_min_size(metadata)
            self.intensity = _recorded_intensity(metadata.get("intensity"), path)
            self.mirror = tta and not metadata.get("tta", False)
        else:
            model, info = load_model_safely(path)
            self.class_names = info.class_names
            self.trained_on = info.config.get("dataset")
            self.min_object_size = recorded_min_size(info.metrics)  # in the run's metrics.json
            self.intensity = info.intensity
            self._function = tf.function(
                lambda images: dict(zip(("mask", "probabilities"),
                                        segment(model, images, tta, info.policy))),
                input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
            self.mirror = False

    @staticmethod
    def check(model_path) -> None:
        """Refuses a --model that cannot be one, before anything is written or loaded."""
        path = Path(model_path)
        if path.is_dir():
            _export_metadata(path)
        else:
            check_keras_file(path)
            check_model_config(read_model_config(path), path)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.segment(image)[0]

    def segment(self, image: np.ndarray) -> tuple:
        """(mask uint8 [H, W], class probabilities float32 [H, W, C]) at the photo's size."""
        if not self.mirror:
            outputs = self._function(images=tf.constant(image[None]))
            return (outputs["mask"][0].numpy().astype(np.uint8),
                    outputs["probabilities"][0].numpy())
        # A SavedModel without TTA inside: the photo and its mirror image as one batch.
        pair = self._function(images=tf.constant(np.stack([image, image[:, ::-1]])))
        mean = mirror_mean(pair["probabilities"][:1], pair["probabilities"][1:])[0].numpy()
        return np.argmax(mean, axis=-1).astype(np.uint8), mean


def _recorded_intensity(value, path: Path):
    """The (low, high) an export's metadata.json records for photos with more than 8 bits, or
    None (each photo by its own percentiles)."""
    if value is None:
        return None
    try:
        return image_io.parse_intensity(",".join(str(v) for v in value))
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"--model {path}: metadata.json intensity {value!r} ({error}); "
                             "export the model again") from None


def _export_metadata(path: Path) -> dict:
    """The metadata.json of an export this project wrote. A SavedModel runs the operations its
    graph holds, so predict loads only folders that `unet_tf.export` wrote, which carry one: an
    export is code, to be taken only from people you trust (docs/reliability.md)."""
    if not (path / "saved_model.pb").is_file():
        raise ModelFileError(f"--model {path}: not a SavedModel folder (no saved_model.pb); give "
                             "a model.keras or a folder written by python -m unet_tf.export")
    if not is_export(path):
        raise ModelFileError(f"--model {path}: a SavedModel without the metadata.json of "
                             "python -m unet_tf.export; predict loads only exports of this "
                             "project (a SavedModel runs whatever its graph holds)")
    return json.loads((path / "metadata.json").read_text())


def collect_inputs(inputs) -> tuple:
    """(files, problems): the image files named or found in folders, and what was not found."""
    files, problems = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file()
                           and p.suffix.lower() in image_io.IMAGE_SUFFIXES)
            if not found:
                problems.append((path, f"{path}: folder holds no image files "
                                       f"({', '.join(image_io.IMAGE_SUFFIXES)})"))
            files += found
        elif path.is_file():
            files.append(path)
        else:
            problems.append((path, f"{path}: no such file or folder"))
    return files, problems


def output_names(files, out: Path, instances: bool = False) -> list:
    """(mask path, overlay path) per file, with `instances` also (instances path, instances
    overlay path): unique stems within --out, never an input's path, and short enough for the
    file system (long stems are cut)."""
    kinds = ("mask", "overlay") + (("instances", "instances_overlay") if instances else ())
    inputs = {f.resolve() for f in files}
    longest = _name_max(out) - len(f"_{kinds[-1]}.png") - 16  # room for "_<n>" and ".tmp"
    used, names = set(), []
    for f in files:
        base = f.stem.encode()[:longest].decode(errors="ignore")
        stem, n = base, 1
        while stem in used or {(out / f"{stem}_{kind}.png").resolve() for kind in kinds} & inputs:
            n += 1
            stem = f"{base}_{n}"
        used.add(stem)
        names.append(tuple(out / f"{stem}_{kind}.png" for kind in kinds))
    return names


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder if folder.exists() else folder.parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def predict_files(segmenter: Segmenter, files, out: Path, steps=(), max_pixels=image_io.MAX_PIXELS,
                  progress: bool = True, instances: bool = False, min_object_size=None) -> list:
    """Writes masks and overlays into `out` (made ready with outputs.prepare_predictions_folder),
    with `instances` also the objects of each photo and `counts.csv` (see the module's help);
    returns (path, message naming it) for the files that failed, the others still done."""
    failures, counts = [], []
    write_json(out / CLASSES, {"classes": plots.classes_table(segmenter.class_names)})
    if instances:
        separation = instance_io.classes_for_separation(segmenter.class_names)
    pairs = list(zip(files, output_names(files, out, instances)))
    for path, (mask_path, overlay_path, *objects) in (
            report_progress(pairs, "predict", unit="img") if progress and len(files) > 1
            else pairs):
        try:
            image = image_io.read_image(path, max_pixels=max_pixels,
                                        intensity=segmenter.intensity)
            raw, probabilities = segmenter.segment(image) if instances else (segmenter(image),
                                                                             None)
            mask = postprocess.postprocess(raw, segmenter.class_names, steps)
            image_io.write_png(mask_path, mask, plots.mask_palette(segmenter.class_names, mask))
            image_io.write_png(overlay_path,
                               plots.overlay_with_legend(image, mask, segmenter.class_names))
            if instances:
                counts.append(_write_objects(path, image, probabilities, objects, separation,
                                             min_object_size))
        except (image_io.ImageReadError, TooManyObjects) as error:
            failures.append((path, str(error)))
        except OSError as error:  # the output could not be written: this file fails, not the rest
            failures.append((path, f"{path}: writing {error.filename or mask_path} failed "
                                   f"({error.strerror or error})"))
    if instances:
        _write_counts(out / COUNTS, counts)
    return failures


class TooManyObjects(ValueError):
    """More objects in a photo than a 16-bit label PNG holds."""


def _write_objects(path, image, probabilities, paths, separation, min_object_size) -> tuple:
    """Separates the objects of one photo and writes its instances PNG and outline overlay;
    returns its counts.csv row (file, count, median area)."""
    instances_path, outlines_path = paths
    labels = instance_io.separate(probabilities, min_object_size, **separation)
    count = int(labels.max(initial=0))
    if count > image_io.MAX_LABEL:
        raise TooManyObjects(f"{path}: {count} objects, more than a 16-bit instances PNG holds "
                             f"({image_io.MAX_LABEL}); raise --min-object-size to drop specks")
    image_io.write_label_png(instances_path, labels)
    image_io.write_png(outlines_path, plots.instance_outlines(image, labels))
    areas = np.bincount(labels.ravel())[1:]
    median = float(np.median(areas)) if count else None
    return (str(path), count, "" if median is None else f"{median:g}")


def _write_counts(path: Path, rows) -> None:
    """counts.csv: file, count, median_area (pixels; empty for a photo without objects)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("file", "count", "median_area"))
    writer.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode())


def main(argv=None) -> int:
    return run_command(_main, argv)


def build_parser():
    """The command line of this command (every option with its help)."""
    parser = command_parser("unet_tf.predict", __doc__)
    data = parser.add_argument_group("data")
    data.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                      help="photos, and folders whose image files (not their subfolders') to "
                           "segment")
    data.add_argument("--max-pixels", type=positive_int, default=image_io.MAX_PIXELS,
                      help="refuse images above this many pixels, before decoding them "
                           "(default: %(default)s; memory grows with the photo, see the README)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True,
                       help="a model.keras or an exported SavedModel folder")
    add_tta_argument(model)
    postprocess.add_argument(model)
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True,
                        help="folder for the masks and overlays: new or empty, or one predict "
                             "wrote before")
    output.add_argument("--instances", action="store_true",
                        help="also separate and count the objects of each photo: "
                             "<stem>_instances.png (16-bit ids), <stem>_instances_overlay.png "
                             f"and {COUNTS} (touching objects separated with a model whose "
                             "classes are background, interior, boundary; see the module's help)")
    output.add_argument("--min-object-size", type=positive_int, default=None, metavar="N",
                        help="with --instances, objects under N pixels merge into the object "
                             "they touch or are dropped (default: what the model records, "
                             "else none)")
    return parser


def _main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.min_object_size is not None and not args.instances:
        parser.error("--min-object-size applies to the objects of --instances: add --instances")
    postprocess.check(args.postprocess)
    Segmenter.check(args.model)  # a wrong --model leaves no folder behind
    out = prepare_predictions_folder(Path(args.out))  # before any work
    segmenter = Segmenter(args.model, tta=args.tta)
    steps = postprocess.steps_for(args.postprocess, segmenter.trained_on, segmenter.class_names)
    files, problems = collect_inputs(args.inputs)
    min_object_size = (args.min_object_size if args.min_object_size is not None
                       else segmenter.min_object_size)
    failures = problems + predict_files(segmenter, files, out, steps, args.max_pixels,
                                        instances=args.instances, min_object_size=min_object_size)
    done = len(files) - (len(failures) - len(problems))
    objects = (f"<stem>_instances.png, <stem>_instances_overlay.png, {COUNTS}, minimum object "
               f"size {f'{min_object_size} pixels' if min_object_size else 'none'}; "
               if args.instances else "")
    print(f"{done} of {len(files)} images segmented into {out}/ (<stem>_mask.png, "
          f"<stem>_overlay.png, {CLASSES}; {objects}classes {', '.join(segmenter.class_names)}; post-processing "
          f"{','.join(steps) or 'none'}{'; flip test-time augmentation' if args.tta else ''})")
    for _, reason in failures:
        print(f"failed: {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
