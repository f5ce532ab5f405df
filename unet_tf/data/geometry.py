"""The geometry of photos meeting the model: resizing, letterboxing (--resize pad), scaling
(--resize none), the crops and tiles of patch training, and the object widths resize auto is
chosen from. Which of them a run uses is the resize policy's call (policy.py).

The same functions shape training data and served photos, so a model sees at prediction what it
saw in training. Geometry is computed once, in `letterbox_box`, for both directions.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# resize auto (measured in docs/own-data.md): objects narrower than MIN_SQUASHED_WIDTH px once
# squashed to the model's input lose their shape there (a nerve sample's 14 px were learned,
# 5-6 px nerves and cells were not), so such data trains on native-resolution patches, scaled
# down only as far as keeps its objects TARGET_WIDTH px wide.
MIN_SQUASHED_WIDTH = 8.0
TARGET_WIDTH = 16.0
MAX_CROPS_PER_IMAGE = 8


def resize_image(image, size: int):
    """Bilinear resize of uint8 images ([H, W, 3] or [B, H, W, 3]) to size x size, kept uint8."""
    resized = tf.image.resize(image, (size, size), method="bilinear")
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def resize_mask(mask, size: int):
    """Nearest-neighbour resize of a [H, W] label map, so no new label values appear."""
    resized = tf.image.resize(mask[..., None], (size, size), method="nearest")
    return tf.cast(resized[..., 0], tf.uint8)


@tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                              tf.TensorSpec([None, None], tf.uint8),
                              tf.TensorSpec([], tf.int32)])
def resize_example(image, mask, size):
    """`resize_image` and `resize_mask` of one photo and its mask in a single graph call: loading
    files one by one, this is about 1.6x faster than running the same ops one at a time."""
    return resize_image(image, size), resize_mask(mask, size)


def letterbox_box(height, width, size: int):
    """(top, left, new_height, new_width) int32 of a `height` x `width` photo letterboxed into
    `size` x `size`: scaled so its longer side is `size`, centred."""
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    ratio = size / tf.maximum(height, width)
    new_height = tf.maximum(tf.cast(tf.round(height * ratio), tf.int32), 1)
    new_width = tf.maximum(tf.cast(tf.round(width * ratio), tf.int32), 1)
    return (size - new_height) // 2, (size - new_width) // 2, new_height, new_width


def letterbox(image, mask, size: int, background: int):
    """uint8 image [H, W, 3] and mask [H, W] letterboxed into `size` x `size`; the mask's padding
    is the `background` class. `mask` may be None (prediction)."""
    shape = tf.shape(image)
    top, left, new_height, new_width = letterbox_box(shape[0], shape[1], size)
    resized = tf.image.resize(image, tf.stack([new_height, new_width]), method="bilinear")
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    image = tf.image.pad_to_bounding_box(resized, top, left, size, size)
    if mask is None:
        return image, None
    # Shifted by one so that the zeros of the padding can be told from class 0.
    shifted = tf.image.resize(tf.cast(mask, tf.int32)[..., None] + 1,
                              tf.stack([new_height, new_width]), method="nearest")
    padded = tf.image.pad_to_bounding_box(shifted, top, left, size, size)[..., 0]
    return image, tf.cast(tf.where(padded == 0, background, padded - 1), tf.uint8)


def rescale(image, mask, scale: float):
    """An image [H, W, 3] and mask [H, W] (or None) scaled by `scale` (--resize none)."""
    if scale == 1.0:
        return image, mask
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    size = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)
    resized = tf.image.resize(image, size, method="bilinear")
    image = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    if mask is None:
        return image, None
    return image, tf.image.resize(mask[..., None], size, method="nearest")[..., 0]


def crop_offsets(masks, patch: int, foreground_share: float, background: int, seed):
    """int32 [B, 2] top-left corners of random `patch` crops of masks [B, H, W] (H, W >= patch):
    with probability `foreground_share` centred on a random foreground pixel (when the mask has
    one), otherwise anywhere."""
    shape = tf.shape(masks)
    batch, height, width = shape[0], shape[1], shape[2]
    keys = tf.random.experimental.stateless_split(seed, num=4)
    flat = tf.reshape(tf.cast(masks, tf.int32) != background, [batch, -1])
    logits = tf.where(flat, 0.0, -1e9)
    picked = tf.random.stateless_categorical(logits, 1, keys[0], dtype=tf.int32)[:, 0]
    centre = tf.stack([picked // width, picked % width], axis=1) - patch // 2
    anywhere = tf.stack([
        tf.random.stateless_uniform([batch], keys[1], 0, height - patch + 1, tf.int32),
        tf.random.stateless_uniform([batch], keys[2], 0, width - patch + 1, tf.int32)], axis=1)
    use_centre = (tf.random.stateless_uniform([batch], keys[3]) < foreground_share) & \
        tf.reduce_any(flat, axis=1)
    offsets = tf.where(use_centre[:, None], centre, anywhere)
    return tf.clip_by_value(offsets, 0, tf.stack([height - patch, width - patch]))


def crop_batch(images, masks, offsets, patch: int):
    """Crops `patch` x `patch` windows at `offsets` [B, 2] out of images [B, S, S, C] and masks
    [B, S, S]."""
    rows = offsets[:, :1] + tf.range(patch)[None]  # [B, P]
    cols = offsets[:, 1:] + tf.range(patch)[None]
    images = tf.gather(tf.gather(images, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    masks = tf.gather(tf.gather(masks, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    return images, masks


def pad_to_patch(image, mask, patch: int, background: int):
    """An image and mask smaller than `patch` in a side padded (bottom, right) to at least it;
    the image with zeros, the mask with the background class."""
    shape = tf.shape(image)
    height, width = tf.maximum(shape[0], patch), tf.maximum(shape[1], patch)
    image = tf.image.pad_to_bounding_box(image, 0, 0, height, width)
    padded = tf.image.pad_to_bounding_box(tf.cast(mask, tf.int32)[..., None] + 1, 0, 0, height,
                                          width)[..., 0]
    return image, tf.cast(tf.where(padded == 0, background, padded - 1), mask.dtype)


def tiles(image: np.ndarray, mask: np.ndarray, patch: int, background: int) -> tuple:
    """Non-overlapping `patch` tiles covering a native-size image and mask (numpy), the last ones
    moved back to end at the edge; for validation with --resize none."""
    image, mask = (np.asarray(a) for a in pad_to_patch(tf.constant(image), tf.constant(mask),
                                                       patch, background))
    height, width = mask.shape

    def starts(length):
        return sorted({min(start, length - patch) for start in range(0, length, patch)})

    pairs = [(image[y:y + patch, x:x + patch], mask[y:y + patch, x:x + patch])
             for y in starts(height) for x in starts(width)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def object_width(mask: np.ndarray, background: int) -> float:
    """The typical width in pixels of a mask's objects: 4 x area / boundary length, counted on
    the pixel grid (a square of side s gives s, a disc about 0.8 of its diameter, a line about
    twice its width); nan for a mask without objects."""
    objects = np.asarray(mask) != background
    area = objects.sum()
    if not area:
        return float("nan")
    # Edges between an object pixel and a background pixel, the image border included.
    padded = np.pad(objects, 1)
    edges = (padded[1:] != padded[:-1]).sum() + (padded[:, 1:] != padded[:, :-1]).sum()
    return 4.0 * area / edges


def choose_policy(widths, shapes, size: int, patch_size: int = 0) -> dict:
    """The resize auto settings for masks whose objects are `widths` px wide (`object_width`,
    nan for none) in photos of `shapes` (height, width): squash when the median object stays
    MIN_SQUASHED_WIDTH px wide squashed to `size`, else native-resolution patches of
    `patch_size` (default `size`) px: scaled so the median object is TARGET_WIDTH px wide (never
    enlarged), as many crops per image an epoch as patches fit in the median scaled photo (at
    most MAX_CROPS_PER_IMAGE). Also says why, as `reason`."""
    widths, shapes = np.asarray(widths, float), np.asarray(shapes, float).reshape(-1, 2)
    seen = ~np.isnan(widths)
    if not seen.any():
        return {"resize": "squash", "reason": "no objects in the masks looked at"}
    native = float(np.median(widths[seen]))
    squashed = float(np.median(widths[seen] * size / np.sqrt(shapes[seen].prod(axis=1))))
    said = f"objects about {native:.0f} px wide, {squashed:.1f} px squashed to {size} px"
    if squashed >= MIN_SQUASHED_WIDTH:
        return {"resize": "squash", "reason": f"{said}: squash"}
    patch = patch_size or size
    scale = min(1.0, round(TARGET_WIDTH / native, 2))
    crops = int(np.clip(round(np.median(shapes.prod(axis=1)) * scale ** 2 / patch ** 2), 1,
                        MAX_CROPS_PER_IMAGE))
    return {"resize": "none", "scale": scale, "patch_size": patch, "crops_per_image": crops,
            "reason": f"{said}: native-resolution patches (scale {scale:g}, {patch} px crops, "
                      f"{crops} of each image an epoch)"}
