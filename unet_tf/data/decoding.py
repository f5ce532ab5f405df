"""Decoding a photo and its mask into what training uses: class indices checked, then fitted to
the model as the resize policy says (policy.py). One path for every local source, in memory or
streamed.

Plain files (an RGB or grayscale JPEG or PNG photo, a grayscale PNG mask) are decoded by
TensorFlow's own ops in a tf.data graph, as the tutorial's pipeline does: in parallel, one trace
for every photo size. Everything else (CMYK, 16-bit photos, stretched to 8 bits by
`images.to_uint8` as predict reads them, palettes, transparency, GIF or PNG named .jpg, TIFF,
colour-coded masks) and any file that fails a check goes through Pillow
(`decode_pair`), which names the reason a file cannot be used. Both give the same pixels.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from unet_tf.config import parse_color
from unet_tf.data import geometry, preprocess
from unet_tf.data.policy import Policy, background_class, is_chosen
from unet_tf.images import (
    MAX_LABEL,
    MAX_PIXELS,
    ImageReadError,
    _open,
    deep_values,
    intensity_range,
    orientation,
    parse_intensity,
    png_bit_depth,
    read_image,
    read_label_mask,
)


# resize auto looks at this many training masks, spread over the split.
AUTO_SAMPLE = 64


def spread_sample(files: list) -> list:
    """Up to AUTO_SAMPLE of `files`, spread evenly over them from the first to the last: the
    files the run's automatic choices look at."""
    picked = np.unique(np.linspace(0, len(files) - 1, min(AUTO_SAMPLE, len(files))).round())
    return [files[index] for index in picked.astype(int)]


def choose_resize(config, files: list | None) -> tuple:
    """(config, message): `config` with resize auto made concrete (`geometry.choose_policy`) from
    the objects in up to AUTO_SAMPLE of the masks in `files` (`list_files`), before training
    reads the data; any other policy as it is, without a message. Without files (tfds or
    synthetic data): squash."""
    if is_chosen(config):
        return config, None
    if not files:
        chosen = {"resize": "squash", "reason": "masks not listed as files here: squash"}
    else:
        encoding = "trimap" if config.dataset == "oxford_iiit_pet" else "index"
        widths, shapes = [], []
        for pair in spread_sample(files):
            if config.labels == "instance":  # each object's own width, touching or not
                from unet_tf.instances import instance_width

                _, instances, reason = read_instances(Path(pair.image), Path(pair.mask))
                if not reason:
                    widths.append(instance_width(instances))
                    shapes.append(instances.shape)
                continue
            _, mask, reason, _ = decode_pair(Path(pair.image), Path(pair.mask), config, encoding)
            if not reason:  # unusable pairs are named when the split is read
                widths.append(geometry.object_width(mask, background_class(config)))
                shapes.append(mask.shape)
        chosen = geometry.choose_policy(widths, shapes, config.image_size, config.patch_size)
    reason = chosen.pop("reason")
    return dataclasses.replace(config, **chosen), f"--resize auto: {reason}"


def choose_intensity(config, files: list | None) -> tuple:
    """(config, message): with `--intensity auto`, the range that maps photos with more than 8
    bits a channel to 0..255 (`images.intensity_range`), measured on up to AUTO_SAMPLE of the
    training photos in `files` and written into the configuration as LOW,HIGH, so that the run
    records it and predict, evaluate and the export use it; config unchanged and no message when
    the photos have 8 bits (or are not files), or the range is given."""
    if config.intensity != "auto" or not files:
        return config, None
    deep = []
    for pair in spread_sample(files):
        try:
            values = deep_values(pair.image)
        except ImageReadError:  # named when the split is read
            continue
        if values is not None:
            deep.append(values)
    measured = intensity_range(deep)
    if measured is None:
        return config, None
    low, high = (float(f"{value:.6g}") for value in measured)
    if not high > low:
        return config, (f"--intensity auto: the {len(deep)} photos with more than 8 bits looked "
                        f"at are all {low:g}; each is stretched by its own percentiles")
    return (dataclasses.replace(config, intensity=f"{low:g},{high:g}"),
            f"--intensity auto: photos with more than 8 bits a channel are mapped from {low:g} "
            f"(0) to {high:g} (255), the 0.1st and 99.9th percentiles of {len(deep)} training "
            "photos; predict, evaluate and the export use the same range")


# preprocess.trimap_to_classes as lookup tables, for numpy: trimap value -> class index.
TRIMAP_CLASSES = {"trimap": np.array([0, 0, 1, 2] + [0] * 252, np.uint8),
                  "binary": np.array([0, 1, 0, 1] + [0] * 252, np.uint8)}


def decode_pair(image_path: Path, mask_path: Path, config, encoding: str):
    """(image, mask, None, note) at native size, the mask as class indices, or
    (None, None, reason, None) for a pair that cannot be used."""
    if config.labels == "instance":
        image, instances, reason = read_instances(image_path, mask_path,
                                                  parse_intensity(config.intensity))
        if reason:
            return None, None, reason, None
        return image, instance_target(instances, config), None, None
    if not mask_path.is_file():
        return None, None, _missing(mask_path), None
    colors = ([parse_color(entry.split("=", 1)[1]) for entry in config.mask_colors]
              if config.mask_colors else None)
    try:
        image = read_image(image_path, intensity=parse_intensity(config.intensity))
        mask, note = read_label_mask(mask_path, colors)
    except ImageReadError as error:
        return None, None, str(error), None
    if image.shape[:2] != mask.shape:
        return None, None, (f"image is {image.shape[1]}x{image.shape[0]} but its mask is "
                            f"{mask.shape[1]}x{mask.shape[0]}"), None
    values = np.flatnonzero(np.bincount(mask.reshape(-1), minlength=256))  # O(n), not a sort
    if encoding == "trimap":
        bad = values[(values < 1) | (values > 3)]
        if bad.size:
            return None, None, f"trimap values {bad.tolist()} outside 1/2/3", None
        mask = TRIMAP_CLASSES[config.labels][mask]
    else:
        if set(values.tolist()) <= {0, 255}:
            mask = (mask == 255).astype(np.uint8)  # 0/255 binary masks
        elif config.labels == "binary":
            if values.max() > 1:
                return None, None, (f"binary mask values {_listed(values)}: expected 0/1 or "
                                    f"0/255{_instance_hint(values)}"), None
        if mask.max() >= config.num_classes:
            return None, None, (f"mask values {_listed(values)} outside the "
                                f"{config.num_classes} classes {list(config.class_names)}"
                                f"{_instance_hint(values)}"), None
    return image, mask.astype(np.uint8), None, note


def _listed(values: np.ndarray) -> str:
    """A mask's values for a message: listed when few, else their count and range."""
    if values.size <= 8:
        return str(values.tolist())
    return f"{values.size} values from {values.min()} to {values.max()}"


def _instance_hint(values: np.ndarray) -> str:
    """What a mask of many values (one id per object) most likely needs."""
    return "; one id per object? read it with --labels instance" if values.size > 8 else ""


def _missing(mask_path: Path) -> str:
    """Why a photo's mask cannot be read as a file."""
    name = mask_path.name
    if mask_path.is_dir():
        return f"its mask {name} is a folder, not an image"
    if mask_path.is_symlink():
        try:
            mask_path.resolve(strict=True)
        except RuntimeError:
            return f"its mask {name} is a link that leads back to itself"
        except OSError as error:
            if error.errno == errno.ELOOP:
                return f"its mask {name} is a link that leads back to itself"
        return f"its mask {name} is a link to {os.readlink(mask_path)}, which does not exist"
    return f"no mask ({name} missing)"


def decoded_examples(pairs: list, config, encoding: str, fitted: bool = True):
    """Yields (image, mask, reason, note) for each `ExampleFiles` of `pairs`, in order: decoded
    on all cores, then fitted in graph ops (`Policy.fit_graph`, one trace for every photo size)
    unless not `fitted`. A pair that cannot be used comes with its reason (bytes) and empty arrays.

    Plain files (an RGB or grayscale JPEG or PNG, a grayscale PNG mask) are decoded by
    TensorFlow's own ops and checked in the graph; everything else, any file that fails a check,
    and any file TensorFlow cannot decode (damaged inside) goes through Pillow (`decode_pair`),
    which names what is wrong. Both give the same pixels (tests/test_data.py checks it).
    """
    paths = tf.data.Dataset.from_tensor_slices((
        [str(p.image) for p in pairs], [str(p.mask) for p in pairs],
        [_graph_format(p.image, p.mask, config) for p in pairs]))

    def read(image_path, mask_path):
        image, mask, reason, note = decode_pair(Path(image_path.decode()),
                                                Path(mask_path.decode()), config, encoding)
        if reason:
            return np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.uint8), reason, ""
        return image, mask, "", note or ""

    def with_pillow(image_path, mask_path):
        image, mask, reason, note = tf.numpy_function(
            read, [image_path, mask_path], [tf.uint8, tf.uint8, tf.string, tf.string])
        image.set_shape([None, None, 3])
        mask.set_shape([None, None])
        return image, mask, reason, note

    # Fitted to the model's square (--resize squash or pad), every example has one shape, and
    # they leave the graph in batches: far fewer round trips into Python than one per photo.
    policy = Policy.from_config(config)
    side = policy.stored_side if fitted else None

    def unusable(image, mask):
        if side is None:
            return image, mask
        return tf.zeros([side, side, 3], tf.uint8), tf.zeros([side, side], tf.uint8)

    def decode(index, paths_and_format):
        image_path, mask_path, graph_format = paths_and_format
        image, mask, ok = _decode_in_graph(image_path, mask_path, graph_format, config, encoding)
        image, mask, reason, note = tf.cond(
            ok, lambda: (image, mask, tf.constant(""), tf.constant("")),
            lambda: with_pillow(image_path, mask_path))
        if fitted:
            image, mask = tf.cond(tf.equal(reason, ""), lambda: policy.fit_graph(image, mask),
                                  lambda: unusable(image, mask))
        if side is not None:
            image.set_shape([side, side, 3])
            mask.set_shape([side, side])
        return index, (image, mask, reason, note)

    # A file TensorFlow's decoder fails on inside the graph is dropped there, and read here.
    dataset = paths.enumerate().map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                                    deterministic=True).ignore_errors()
    if side is not None:
        dataset = dataset.batch(32)
    expected = 0
    for indices, items in dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
        if side is None:
            indices, items = [indices], [items]
        else:
            items = zip(*items)
        for index, (image, mask, reason, note) in zip(indices, items):
            for missing in range(expected, index):
                yield _with_pillow(pairs[missing], config, encoding, fitted)
            if reason:
                image, mask = np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.uint8)
            yield image, mask, reason, note
            expected = index + 1
    for missing in range(expected, len(pairs)):
        yield _with_pillow(pairs[missing], config, encoding, fitted)


def _with_pillow(pair, config, encoding: str, fitted: bool) -> tuple:
    image, mask, reason, note = decode_pair(pair.image, pair.mask, config, encoding)
    if reason:
        return np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.uint8), reason.encode(), b""
    if fitted:
        image, mask = (np.asarray(a) for a in Policy.from_config(config).fit_graph(image, mask))
    return image, mask, b"", (note or "").encode()


def _graph_format(image_path: Path, mask_path: Path, config) -> str:
    """"jpeg" or "png" when TensorFlow's decoders read this pair as Pillow does, else "" (read
    with Pillow). Looks at the headers only."""
    if config.mask_colors or config.labels == "instance" or not Path(mask_path).is_file():
        return ""
    try:
        with Image.open(image_path) as image, Image.open(mask_path) as mask:
            if mask.format != "PNG" or mask.mode != "L" or image.mode not in ("RGB", "L"):
                return ""
            # A 16-bit colour PNG opens as "RGB" but TensorFlow's uint8 decoding would keep its
            # top 8 bits: Pillow's path (read_image) stretches it as predict does (to_uint8).
            if image.format == "PNG" and (png_bit_depth(image_path) or 8) > 8:
                return ""
            if image.width * image.height > MAX_PIXELS:
                return ""
            if orientation(image) != 1 or orientation(mask) != 1:  # Pillow turns it upright
                return ""
            return {"JPEG": "jpeg", "PNG": "png"}.get(image.format, "")
    except (OSError, SyntaxError, ValueError):
        return ""


def _decode_in_graph(image_path, mask_path, graph_format, config, encoding):
    """(image, class mask, ok) of a plain pair, decoded and checked in graph ops; `ok` False for
    a pair Pillow must read (and name the reason for)."""
    def decode():
        data = tf.io.read_file(image_path)
        image = tf.cond(tf.equal(graph_format, "jpeg"),
                        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                        lambda: tf.io.decode_png(data, channels=3))
        mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)[..., 0]
        same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(mask)))
        # The checks of `decode_pair` as element-wise reductions (a histogram of every mask
        # cost as much as decoding it).
        if encoding == "trimap":
            ok = (tf.reduce_min(mask) >= 1) & (tf.reduce_max(mask) <= 3)
            classes = preprocess.trimap_to_classes(mask, config.labels)
        else:
            zero_or_255 = ~tf.reduce_any((mask > 0) & (mask < 255))
            classes = tf.where(zero_or_255, tf.cast(mask == 255, tf.uint8), mask)
            ok = zero_or_255 | (tf.reduce_max(mask) < config.num_classes)
        return image, classes, same_size & ok

    def skip():
        return tf.zeros([0, 0, 3], tf.uint8), tf.zeros([0, 0], tf.uint8), tf.constant(False)

    return tf.cond(tf.equal(graph_format, ""), skip, decode)


# --- labels instance ----------------------------------------------------------------------------
#
# An instance mask (each object its own id, 0 background: a label image, or a folder of one mask
# per object) becomes the 3-class target of `unet_tf.instances.boundary_target` (background,
# interior, boundary) when it is read, here, so that everything after (fitting, storing,
# streaming, the disk cache, augmentation) handles uint8 class masks as for any other labels.
# The resize policy fits masks by nearest-neighbour sampling, which would drop most of a 1 px
# boundary made at native size when a photo is scaled down: `instance_target` samples the
# instances as the fitting will, draws the boundary on that grid, and writes it back to the pixels
# the fitting samples, so that the fitted mask is exactly the boundary target of the fitted
# instances.



def read_instances(image_path: Path, mask_path: Path, intensity=None) -> tuple:
    """(image uint8 [H, W, 3], instances int32 [H, W], None), or (None, None, reason) for a pair
    that cannot be used (`intensity`: a deep photo's range, `images.read_image`). `mask_path` is a label image (8- or 16-bit PNG, TIFF, ...: each object
    its own id, 0 background) or a folder of one mask per object (nonzero: the object), numbered
    1, 2, ... in file-name order."""
    image_path, mask_path = Path(image_path), Path(mask_path)
    if not mask_path.is_file() and not mask_path.is_dir():
        return None, None, _missing(mask_path)
    try:
        image = read_image(image_path, intensity=intensity)
        instances = (_object_masks(mask_path) if mask_path.is_dir()
                     else _label_image(mask_path))
    except ImageReadError as error:
        return None, None, str(error)
    if image.shape[:2] != instances.shape:
        return None, None, (f"{mask_path}: the mask is {instances.shape[1]}x{instances.shape[0]} "
                            f"but its image {image_path.name} is {image.shape[1]}x"
                            f"{image.shape[0]}")
    return image, instances, None


def _label_image(path: Path) -> np.ndarray:
    """An instance label image's ids as int32 [H, W]."""
    image = _open(path, MAX_PIXELS)
    if image.format == "JPEG":
        raise ImageReadError(f"{path}: a JPEG instance mask (lossy compression changes the ids); "
                             "save instance masks as PNG or TIFF")
    if image.mode in ("1", "L", "P") or image.mode.startswith("I"):
        values = np.asarray(image).astype(np.int64)
    elif image.mode == "F":
        values = np.asarray(image, np.float64)
        if not np.array_equal(values, np.round(values)):
            raise ImageReadError(f"{path}: a floating-point mask with fractional values; expected "
                                 "integer object ids (0: background)")
        values = values.astype(np.int64)
    else:
        array = np.asarray(image.convert("RGB"))
        if not (np.array_equal(array[..., 0], array[..., 1])
                and np.array_equal(array[..., 0], array[..., 2])):
            raise ImageReadError(f"{path}: a colour ({image.mode}) mask; expected one object id "
                                 "per pixel (an 8- or 16-bit grey PNG or TIFF, 0: background)")
        values = array[..., 0].astype(np.int64)
    if values.size and values.min() < 0:
        raise ImageReadError(f"{path}: negative object ids ({values.min()}); expected 0 for "
                             "background and 1, 2, ... for the objects")
    if values.size and values.max() > MAX_LABEL:
        raise ImageReadError(f"{path}: object ids up to {values.max()}, above {MAX_LABEL}; "
                             "number the objects of each image from 1 (16-bit ids)")
    return values.astype(np.int32)


def _object_masks(folder: Path) -> np.ndarray:
    """The instances of a folder of one mask per object (nonzero pixels: the object; a JPEG's at
    128 and above), ids 1, 2, ... in file-name order, as int32 [H, W]."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ImageReadError(f"{folder}: no object masks in the folder")
    if len(files) > MAX_LABEL:
        raise ImageReadError(f"{folder}: {len(files)} object masks, above {MAX_LABEL}")
    instances = None
    for number, path in enumerate(files, start=1):
        image = _open(path, MAX_PIXELS)
        if image.mode not in ("1", "L", "P") and not image.mode.startswith("I"):
            image = image.convert("L")
        array = np.asarray(image)
        objects = array >= 128 if image.format == "JPEG" else array != 0
        if instances is None:
            instances = np.zeros(objects.shape, np.int32)
        elif objects.shape != instances.shape:
            raise ImageReadError(f"{path}: {objects.shape[1]}x{objects.shape[0]}, but "
                                 f"{files[0].name} is {instances.shape[1]}x{instances.shape[0]}; "
                                 "every object mask of an image has its size")
        if not objects.any():
            raise ImageReadError(f"{path}: an empty object mask (no pixel set); remove it")
        taken = instances[objects]
        if taken.any():
            other = files[int(taken[taken > 0][0]) - 1]
            raise ImageReadError(f"{path}: overlaps the object mask {other.name} "
                                 f"({np.count_nonzero(taken)} pixels); each pixel belongs to one "
                                 "object at most")
        instances[objects] = number
    return instances


def instance_target(instances: np.ndarray, config) -> np.ndarray:
    """The 3-class target (background 0, interior 1, boundary 2) of instances [H, W] at their
    native size, made so that the resize policy's nearest-neighbour fitting of it is exactly
    `boundary_target` of the instances fitted the same way.

    Along a side the fitting shrinks, the boundary is drawn on the rows (columns) the fitting
    samples, and written back to them; the pixels it never samples keep the boundary drawn at
    native size (only counted, never trained on). Along a side it enlarges, the boundary is drawn
    at native size and grows with the side (thicker, still separating)."""
    from unet_tf.instances import boundary_target

    height, width = instances.shape
    fitted_height, fitted_width = _fitted_shape(height, width, config)
    rows = (nearest_indices(height, fitted_height) if fitted_height < height
            else np.arange(height))
    cols = nearest_indices(width, fitted_width) if fitted_width < width else np.arange(width)
    sampled = boundary_target(instances[np.ix_(rows, cols)])
    if (rows.size, cols.size) == (height, width):
        return sampled
    target = boundary_target(instances)
    target[np.ix_(rows, cols)] = sampled
    return target


def _fitted_shape(height: int, width: int, config) -> tuple:
    """(height, width) of a photo's mask as the resize policy fits it (before any padding)."""
    if not is_chosen(config):  # auto: measured before it is chosen; nothing is fitted yet
        return height, width
    return Policy.from_config(config).fitted_shape(height, width)


def nearest_indices(size: int, new_size: int) -> np.ndarray:
    """The source index of each of `new_size` positions when `size` positions are resized to them
    by tf.image.resize's nearest neighbour (half-pixel centres, float32 arithmetic)."""
    scale = np.float32(size) / np.float32(new_size)
    positions = np.floor((np.arange(new_size, dtype=np.float32) + np.float32(0.5)) * scale)
    return np.clip(positions.astype(np.int64), 0, size - 1)
