"""From pixels to masks with a trained model: the one path that evaluate, predict and the exported
SavedModel share.

    >>> mask, probabilities = segment(model, photos)          # uint8 [B, H, W, 3], any size
    >>> masks = predict_masks(model, split.images, tta=True)  # at the model's size, batched

Flip test-time augmentation (`tta`) averages the class probabilities of each image and of its
mirror image, mirrored back: twice the work, and a mask that is exactly symmetric under mirroring.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from unet_tf.data import normalize, resize_image


def mirror_mean(probabilities, of_mirrored):
    """Flip TTA's one rule: the mean of an image's class probabilities [B, H, W, C] and those of
    its mirror image, mirrored back."""
    return (probabilities + tf.reverse(of_mirrored, axis=[2])) / 2


def class_probabilities(model: keras.Model, images, tta: bool = False):
    """Softmax class probabilities [B, S, S, C] (float32) for float images [B, S, S, 3] in [0, 1]
    at the model's size; with `tta`, averaged with those of the mirror images."""
    def probabilities(x):
        return tf.nn.softmax(tf.cast(model(x, training=False), tf.float32), axis=-1)

    if not tta:
        return probabilities(images)
    return mirror_mean(probabilities(images), probabilities(tf.reverse(images, axis=[2])))


def segment(model: keras.Model, images, tta: bool = False):
    """(mask, probabilities) at the images' own size for uint8 images [B, H, W, 3].

    Resized (bilinear) to the model's size and scaled to [0, 1] as in training; the probabilities
    are resized back (bilinear) before the argmax. With `tta` the mirror images go through the same
    path and their probabilities, mirrored back, are averaged in: a mirrored photo then gets
    exactly the mirrored mask.
    """
    probabilities = _probabilities_at_size(model, images)
    if tta:
        probabilities = mirror_mean(
            probabilities, _probabilities_at_size(model, tf.reverse(images, axis=[2])))
    return tf.argmax(probabilities, axis=-1, output_type=tf.int32), probabilities


def _probabilities_at_size(model: keras.Model, images):
    size = model.input_shape[1]
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    probabilities = class_probabilities(model, normalize(resize_image(images, size)))
    return tf.image.resize(probabilities, tf.stack([height, width]), method="bilinear")


def predict_masks(model: keras.Model, images: np.ndarray, batch_size: int = 32,
                  tta: bool = False) -> np.ndarray:
    """Class indices [N, S, S] for uint8 images [N, S, S, 3] at the model's input size."""
    batches = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(normalize)
    step = tf.function(lambda batch: tf.argmax(class_probabilities(model, batch, tta), axis=-1))
    return np.concatenate([step(batch).numpy() for batch in batches])
