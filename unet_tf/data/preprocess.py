"""The shared preprocessing path, as small TensorFlow functions usable eagerly and in graphs.

    raw example --resize--> uint8 image + class mask --(cache)--> shuffle --> batch
                --> normalize --augment_batch--> prefetch

Caching happens on uint8 (a quarter of float32's memory); scaling to [0, 1] comes after. Export
uses the same `resize_image` and `normalize`, so a served photo is preprocessed exactly as in
training.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from unet_tf.data.geometry import (  # noqa: F401  (resize_* are part of this path)
    crop_batch,
    crop_offsets,
    pad_to_patch,
    resize_example,
    resize_image,
    resize_mask,
    tiles,
)

TRIMAP_BACKGROUND = 2  # Oxford-IIIT Pet trimaps: 1 pet, 2 background, 3 border


def trimap_to_classes(mask, labels: str):
    """Trimap values 1/2/3 to class indices.

    trimap: 1 pet -> 0, 2 background -> 1, 3 border -> 2 (the tutorial's order).
    binary: background -> 0, pet and border -> 1 (the border band lies on the pet's outline).
    """
    mask = tf.cast(mask, tf.uint8)
    if labels == "trimap":
        return mask - 1
    if labels == "binary":
        return tf.cast(mask != TRIMAP_BACKGROUND, tf.uint8)
    raise ValueError(f"labels={labels!r}: expected trimap or binary")


def normalize(image):
    """uint8 pixels to float32 in [0, 1], the model's input."""
    return tf.cast(image, tf.float32) / 255.0


# The random draws of one batch, each from its own stateless seed (see `augmentation_draws`).
DRAWS = ("flip", "zoom", "angle", "shift", "saturation", "contrast", "brightness")


def batch_seed(seed):
    """A stateless seed, int64 [2], from an int (eager use, tests) or a [2] tensor (the pipeline)."""
    if seed is None:
        return tf.random.uniform([2], maxval=2**62, dtype=tf.int64)
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    return tf.cast(seed, tf.int64)


def augmentation_draws(seed, batch, scale=0.0, rotation=0.0, color=0.0) -> dict:
    """The random values of one batch's augmentation, each drawn from its own seed split off
    `seed`, so that they are independent of each other (and reproducible from `seed`).

    Returns float32 tensors: flip [B] (1 or 0), zoom [B] in [1 - scale, 1 + scale], angle [B] in
    radians within +-rotation degrees, shift [B, 2] as a share of the side within +-0.1, and
    saturation, contrast, brightness [B] within +-color.
    """
    keys = tf.random.experimental.stateless_split(batch_seed(seed), num=len(DRAWS))
    draw = dict(zip(DRAWS, tf.unstack(keys)))

    def uniform(name, shape, bound):
        return tf.random.stateless_uniform(shape, draw[name], -bound, bound)

    return {
        "flip": tf.cast(tf.random.stateless_uniform([batch], draw["flip"]) < 0.5, tf.float32),
        "zoom": 1.0 + uniform("zoom", [batch], scale),
        "angle": uniform("angle", [batch], rotation) * (3.141592653589793 / 180),
        "shift": uniform("shift", [batch, 2], 0.1),
        "saturation": uniform("saturation", [batch], color),
        "contrast": uniform("contrast", [batch], color),
        "brightness": uniform("brightness", [batch], color),
    }


def augment_batch(images, masks, seed=None, scale=0.0, rotation=0.0, color=0.0):
    """Random changes to a batch, the same geometry for each image and its mask.

    Args:
        images: float32 [B, S, S, 3] in [0, 1].
        masks: [B, S, S] class indices.
        seed: int, [2] int tensor, or None. The batch's stateless seed: the same seed gives the
            same changes; None draws one.
        scale: float. Zoom by a factor in [1 - scale, 1 + scale] about a point near the centre
            (zooming in is a random resized crop; zooming out mirrors the borders).
        rotation: float. Rotate by up to this many degrees either way.
        color: float. Brightness shift, and contrast and saturation factors, up to this much.

    Every example is also flipped left-right with probability 1/2. Masks follow with
    nearest-neighbour sampling, so they keep only their class values. Each random value has a seed
    of its own (`augmentation_draws`).
    """
    batch = tf.shape(images)[0]
    draws = augmentation_draws(seed, batch, scale, rotation, color)
    flip = draws["flip"] > 0
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    masks = tf.where(flip[:, None, None], tf.reverse(masks, axis=[2]), masks)
    if scale or rotation:
        transforms = _affine(draws, tf.shape(images)[1])
        images = _warp(images, transforms, "bilinear")
        masks = tf.cast(_warp(tf.cast(masks, tf.float32)[..., None], transforms, "nearest")[..., 0],
                        masks.dtype)
    if color:
        def factor(name):
            return draws[name][:, None, None, None]

        gray = tf.reduce_mean(images, axis=-1, keepdims=True)
        images = gray + (images - gray) * (1.0 + factor("saturation"))
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = mean + (images - mean) * (1.0 + factor("contrast"))
        images = tf.clip_by_value(images + factor("brightness") / 2, 0.0, 1.0)
    return images, masks


def _affine(draws, size):
    """Projective transforms [B, 8] mapping output pixels to input pixels: a zoom by `zoom` and a
    rotation by `angle` about the centre moved by `shift`."""
    size = tf.cast(size, tf.float32)
    centre = (size - 1) / 2
    shift = draws["shift"] * size
    cos, sin = tf.cos(draws["angle"]) / draws["zoom"], tf.sin(draws["angle"]) / draws["zoom"]
    a2 = centre - cos * centre + sin * centre + shift[:, 0]
    b2 = centre - sin * centre - cos * centre + shift[:, 1]
    zeros = tf.zeros_like(cos)
    return tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)


def _warp(images, transforms, interpolation):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation=interpolation.upper(), fill_mode="REFLECT")


def make_dataset(images, masks, batch_size: int, training: bool, shuffle_buffer: int = 1000,
                 augment: bool = True, seed: int | None = None, augment_scale: float = 0.0,
                 augment_rotation: float = 0.0, augment_color: float = 0.0,
                 drop_remainder: bool = False, patch_size: int = 0,
                 foreground_crops: float = 0.0, background: int = 0,
                 crops_per_image: int = 1) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 1], int32 class masks) from cached uint8 arrays.

    Args:
        images: uint8 [N, S, S, 3] resized photographs, or (--resize none) a list of uint8
            [H, W, 3] photographs of any sizes.
        masks: uint8 [N, S, S] class indices, or a list of [H, W].
        batch_size: int. Examples per batch (the last batch may be smaller).
        training: bool. Shuffle every epoch and augment.
        shuffle_buffer: int. Size of the shuffle buffer.
        augment: bool. Random changes of the training batches (see `augment_batch`).
        seed: int or None. Seed of the shuffle, the crops and the augmentation.
        augment_scale, augment_rotation, augment_color: `augment_batch`'s scale, rotation, color.
        drop_remainder: bool. Drop a last, smaller batch (TPUs need equal batches).
        patch_size: int. Training on random crops of this side (0: whole images). Photos of any
            sizes are cut into `patch_size` tiles for validation.
        foreground_crops: float. Share of the crops centred on a foreground pixel.
        background: int. The background class (foreground is every other class; padding).
        crops_per_image: int. Training: every image this many times an epoch (each time in a new
            shuffled order, with its own crop and augmentation).
    """
    native = isinstance(images, (list, tuple))
    if native and not training:  # validation of native-size photos: tiles of the model's size
        tiled = [tiles(i, m, patch_size, background) for i, m in zip(images, masks)]
        images = np.stack([t for ts, _ in tiled for t in ts])
        masks = np.stack([t for _, ts in tiled for t in ts])
        native = False
    examples = (_ragged_examples(images, masks) if native
                else tf.data.Dataset.from_tensor_slices((images, masks)))
    if training:
        examples = examples.shuffle(min(shuffle_buffer, len(images)), seed=seed,
                                    reshuffle_each_iteration=True)
    return batch_examples(
        examples, batch_size, training, native=native,
        side=None if native else images.shape[1], augment=augment, seed=seed,
        augment_scale=augment_scale, augment_rotation=augment_rotation,
        augment_color=augment_color, drop_remainder=drop_remainder, patch_size=patch_size,
        foreground_crops=foreground_crops, background=background,
        crops_per_image=crops_per_image)


def batch_examples(examples: tf.data.Dataset, batch_size: int, training: bool, native: bool,
                   side: int | None, augment: bool = True, seed: int | None = None,
                   augment_scale: float = 0.0, augment_rotation: float = 0.0,
                   augment_color: float = 0.0, drop_remainder: bool = False,
                   patch_size: int = 0, foreground_crops: float = 0.0,
                   background: int = 0, crops_per_image: int = 1) -> tf.data.Dataset:
    """`make_dataset`'s batches from a dataset of uint8 (image, mask) examples, already shuffled
    when training: of one size `side`, or of any sizes (`native`, cropped to `patch_size`). The
    streamed training data of streaming.py comes through here too."""
    if training and crops_per_image > 1:  # a new shuffled order each time, new keys below
        # Unfused: tf.data would otherwise fuse an in-memory split's shuffle with this repeat,
        # which shuffles later epochs differently from a streamed split's.
        options = tf.data.Options()
        options.experimental_optimization.shuffle_and_repeat_fusion = False
        examples = examples.repeat(crops_per_image).with_options(options)
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def fold(key, salt):  # independent keys for the crops and the augmentation of one draw
        return tf.random.experimental.stateless_fold_in(tf.cast(key, tf.int64), salt)

    if native:
        def crop(example, key):
            image, mask = pad_to_patch(*example, patch_size, background)
            offsets = crop_offsets(mask[None], patch_size, foreground_crops, background,
                                            fold(key, 1))
            image, mask = crop_batch(image[None], mask[None], offsets, patch_size)
            return image[0], mask[0]

        examples = tf.data.Dataset.zip((examples, keys)).map(crop,
                                                             num_parallel_calls=tf.data.AUTOTUNE)
    dataset = examples.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(lambda x, y: (normalize(x), tf.cast(y, tf.int32)),
                          num_parallel_calls=tf.data.AUTOTUNE)
    crops = training and not native and 0 < patch_size < side
    if crops or (training and augment):
        # One stateless seed per batch, new every epoch; from `seed` (or the global seed), so a
        # seeded run repeats whatever order parallel calls finish in.
        def change(batch, key):
            x, y = batch
            if crops:
                offsets = crop_offsets(y, patch_size, foreground_crops, background,
                                                fold(key, 1))
                x, y = crop_batch(x, y, offsets, patch_size)
            if augment:
                x, y = augment_batch(x, y, fold(key, 2), augment_scale, augment_rotation,
                                     augment_color)
            return x, y

        dataset = tf.data.Dataset.zip((dataset, keys)).map(change,
                                                           num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _ragged_examples(images: list, masks: list) -> tf.data.Dataset:
    """(image [H, W, 3], mask [H, W]) uint8 examples of different sizes, from one flat buffer
    each (no Python in the pipeline)."""
    shapes = np.array([image.shape[:2] for image in images], np.int32)
    flat_images = tf.RaggedTensor.from_row_lengths(
        np.concatenate([image.reshape(-1) for image in images]), [image.size for image in images])
    flat_masks = tf.RaggedTensor.from_row_lengths(
        np.concatenate([mask.reshape(-1) for mask in masks]), [mask.size for mask in masks])
    return tf.data.Dataset.from_tensor_slices((flat_images, flat_masks, shapes)).map(
        lambda image, mask, shape: (tf.reshape(image, tf.concat([shape, [3]], 0)),
                                    tf.reshape(mask, shape)))
