"""Decoding a photo and its mask into what training uses: class indices checked, then fitted to
the model as the resize policy says (policy.py). One path for every local source, in memory or
streamed.

Plain files (an RGB or grayscale JPEG or PNG photo, a grayscale PNG mask) are decoded by
TensorFlow's own ops in a tf.data graph, as the tutorial's pipeline does: in parallel, one trace
for every photo size. Everything else (CMYK, 16-bit, palettes, transparency, GIF or PNG named
.jpg, TIFF, colour-coded masks) and any file that fails a check goes through Pillow
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
from unet_tf.images import MAX_PIXELS, ImageReadError, orientation, read_image, read_label_mask


# resize auto looks at this many training masks, spread over the split.
AUTO_SAMPLE = 64


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
        picked = np.unique(np.linspace(0, len(files) - 1, min(AUTO_SAMPLE, len(files))).round())
        encoding = "trimap" if config.dataset == "oxford_iiit_pet" else "index"
        widths, shapes = [], []
        for index in picked.astype(int):
            pair = files[index]
            _, mask, reason, _ = decode_pair(Path(pair.image), Path(pair.mask), config, encoding)
            if not reason:  # unusable pairs are named when the split is read
                widths.append(geometry.object_width(mask, background_class(config)))
                shapes.append(mask.shape)
        chosen = geometry.choose_policy(widths, shapes, config.image_size, config.patch_size)
    reason = chosen.pop("reason")
    return dataclasses.replace(config, **chosen), f"--resize auto: {reason}"


# preprocess.trimap_to_classes as lookup tables, for numpy: trimap value -> class index.
TRIMAP_CLASSES = {"trimap": np.array([0, 0, 1, 2] + [0] * 252, np.uint8),
                  "binary": np.array([0, 1, 0, 1] + [0] * 252, np.uint8)}


def decode_pair(image_path: Path, mask_path: Path, config, encoding: str):
    """(image, mask, None, note) at native size, the mask as class indices, or
    (None, None, reason, None) for a pair that cannot be used."""
    if not mask_path.is_file():
        return None, None, _missing(mask_path), None
    colors = ([parse_color(entry.split("=", 1)[1]) for entry in config.mask_colors]
              if config.mask_colors else None)
    try:
        image = read_image(image_path)
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
                return None, None, (f"binary mask values {values.tolist()}: expected 0/1 or "
                                    "0/255"), None
        if mask.max() >= config.num_classes:
            return None, None, (f"mask values {values.tolist()} outside the "
                                f"{config.num_classes} classes {list(config.class_names)}"), None
    return image, mask.astype(np.uint8), None, note


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
    if config.mask_colors or not Path(mask_path).is_file():
        return ""
    try:
        with Image.open(image_path) as image, Image.open(mask_path) as mask:
            if mask.format != "PNG" or mask.mode != "L" or image.mode not in ("RGB", "L"):
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
