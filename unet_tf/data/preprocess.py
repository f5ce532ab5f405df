"""The shared preprocessing path, as small TensorFlow functions usable eagerly and in graphs.

    raw example --resize_example--> uint8 image + class mask --(cache)--> shuffle --> batch
                --augment_batch--> normalize --> prefetch

Caching happens on uint8 (a quarter of float32's memory); scaling to [0, 1] comes after. Export
uses the same `resize_image` and `normalize`, so a served photo is preprocessed exactly as in
training.
"""

from __future__ import annotations

import tensorflow as tf

# Oxford-IIIT Pet trimap values.
TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3


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


def resize_image(image, size: int):
    """Bilinear resize of uint8 images ([H, W, 3] or [B, H, W, 3]) to size x size, kept uint8."""
    resized = tf.image.resize(image, (size, size), method="bilinear")
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def resize_mask(mask, size: int):
    """Nearest-neighbour resize of a [H, W] label map, so no new label values appear."""
    resized = tf.image.resize(mask[..., None], (size, size), method="nearest")
    return tf.cast(resized[..., 0], tf.uint8)


def normalize(image):
    """uint8 pixels to float32 in [0, 1], the model's input."""
    return tf.cast(image, tf.float32) / 255.0


def augment_batch(images, masks, seed=None):
    """Random horizontal flip of each example in a batch, identical for image and mask."""
    flip = tf.random.uniform([tf.shape(images)[0]], seed=seed) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    masks = tf.where(flip[:, None, None], tf.reverse(masks, axis=[2]), masks)
    return images, masks


def make_dataset(images, masks, batch_size: int, training: bool, shuffle_buffer: int = 1000,
                 augment: bool = True, seed: int | None = None) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 1], int32 class masks) from cached uint8 arrays.

    Args:
        images: uint8 [N, S, S, 3]. Resized photographs.
        masks: uint8 [N, S, S]. Class indices.
        batch_size: int. Examples per batch (the last batch may be smaller).
        training: bool. Shuffle every epoch and augment.
        shuffle_buffer: int. Size of the shuffle buffer.
        augment: bool. Random horizontal flips (training only).
        seed: int or None. Seed of the shuffle and of the augmentation.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, masks))
    if training:
        dataset = dataset.shuffle(min(shuffle_buffer, len(images)), seed=seed,
                                  reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if training and augment:
        dataset = dataset.map(lambda x, y: augment_batch(x, y, seed),
                              num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(lambda x, y: (normalize(x), tf.cast(y, tf.int32)),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
