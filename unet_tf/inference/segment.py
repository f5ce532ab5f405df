"""From pixels to masks with a trained model: the one path that evaluate, predict and the exported
SavedModel share.

    >>> mask, probabilities = segment(model, photos, policy=Policy.from_config(config))
    >>> masks = predict_masks(model, split.images, tta=True)  # at the model's size, batched

How a photo meets the model follows the run's resize policy (`data.Policy`): squash (resized to
the model's square), pad (letterboxed, the answer cropped back) or none (scaled by --scale, then
overlapping tiles of the model's size, blended: see tiling.py). Either way the answer comes back
at the photo's own size.

Flip test-time augmentation (`tta`) averages the class probabilities of each image and of its
mirror image, mirrored back: twice the work, and a mask that is exactly symmetric under mirroring.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from unet_tf.inference import tiling
from unet_tf.data import Policy, normalize
from unet_tf.progress import progress


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


def segment(model: keras.Model, images, tta: bool = False, policy: Policy | None = None):
    """(mask, probabilities) at the images' own size for uint8 images [B, H, W, 3].

    Fitted to the model as `policy` says (default: squashed to the model's input size, as in the
    tutorial) and scaled to [0, 1] as in training; the probabilities come back to the images' size
    (bilinear) before the argmax. With `tta` the mirror images go through the same path and their
    probabilities, mirrored back, are averaged in: a mirrored photo then gets exactly the mirrored
    mask.
    """
    policy = policy or Policy(size=model.input_shape[1])
    probabilities = _probabilities_at_size(model, images, policy)
    if tta:
        probabilities = mirror_mean(
            probabilities, _probabilities_at_size(model, tf.reverse(images, axis=[2]), policy))
    return tf.argmax(probabilities, axis=-1, output_type=tf.int32), probabilities


def _probabilities_at_size(model: keras.Model, images, policy: Policy):
    height, width = tf.shape(images)[1], tf.shape(images)[2]

    def predict(batch):
        return class_probabilities(model, batch)

    if policy.native:
        probabilities = tiling.tiled_probabilities(
            predict, normalize(policy.scaled_photos(images)), policy.size, policy.overlap)
        if policy.scale == 1.0:
            return probabilities
    else:
        fitted, crop_back = policy.fitted_photos(images)
        probabilities = crop_back(predict(normalize(fitted)))
    return tf.image.resize(probabilities, tf.stack([height, width]), method="bilinear")


def predict_masks(model: keras.Model, images, batch_size: int = 32, tta: bool = False,
                  policy: Policy | None = None, each=None):
    """Class indices for images as a split holds them: [N, S, S] for uint8 [N, S, S, 3] at the
    model's size (batched), or a list of [H, W] for a list of photos of any sizes (each through
    `segment` with `policy`). With `each`, (masks, [each(i, probabilities of image i), ...]): a
    function of every image's class probabilities [H, W, C] (numpy), from the same prediction."""
    kept = []
    if isinstance(images, (list, tuple)):
        step = tf.function(lambda image: [t[0] for t in segment(model, image[None], tta, policy)],
                           input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        masks = []
        for image in progress(images, "predict", unit="img"):
            mask, probabilities = step(image)
            masks.append(mask.numpy())
            if each is not None:
                kept.append(each(len(kept), probabilities.numpy()))
        return (masks, kept) if each is not None else masks
    batches = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(normalize)
    def masks_and_probabilities(batch):
        probabilities = class_probabilities(model, batch, tta)
        return tf.argmax(probabilities, axis=-1), probabilities

    step = tf.function(masks_and_probabilities)
    masks = []
    for batch in progress(batches, "predict", total=-(-len(images) // batch_size), unit="batch"):
        mask, probabilities = step(batch)
        masks.append(mask.numpy())
        if each is not None:
            for one in probabilities.numpy():
                kept.append(each(len(kept), one))
    masks = np.concatenate(masks)
    return (masks, kept) if each is not None else masks
