"""Soft Dice loss (and Dice + cross-entropy) from logits with sparse integer labels.

The maths lives in pure functions (`soft_dice`, `dice_loss`); the Keras classes around them are
registered for serialization, so a `model.keras` compiled with them loads after `import unet_tf`.

Choices, all explicit arguments:
- `smooth` is added to numerator and denominator: an empty class predicted empty scores 1, and
  gradients stay finite.
- `per_image=False` sums pixels over the whole batch before dividing (one Dice per class for the
  batch, stable when a class is rare); under tf.distribute the sums run over all replicas, so the
  loss is the global batch's. `per_image=True` computes one Dice per image and class and returns
  one loss per image, which Keras averages.
- Classes are averaged with `class_weights` (uniform by default).
- One output channel means binary segmentation: sigmoid, and the Dice of the positive class.
  Two or more channels: softmax, the Dice of every class, then their weighted mean.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


def _probabilities_and_onehot(y_true, logits):
    logits = ops.cast(logits, "float32")
    channels = logits.shape[-1]
    labels = ops.cast(y_true, "int32")
    if len(labels.shape) == len(logits.shape):  # [..., 1] label maps
        labels = ops.squeeze(labels, axis=-1)
    if channels == 1:
        return ops.sigmoid(logits), ops.expand_dims(ops.cast(labels, "float32"), -1)
    return ops.softmax(logits, axis=-1), ops.one_hot(labels, channels, dtype="float32")


def soft_dice(y_true, logits, smooth: float = 1.0, per_image: bool = False):
    """Soft Dice per class: [classes] over the batch, or [batch, classes] with `per_image`.

    Args:
        y_true: int tensor [batch, height, width] or [batch, height, width, 1], class indices.
        logits: float tensor [batch, height, width, classes].
        smooth: float. Added to numerator and denominator.
        per_image: bool. One score per image instead of one for the whole batch.
    """
    probs, onehot = _probabilities_and_onehot(y_true, logits)
    axes = (1, 2) if per_image else (0, 1, 2)
    intersection = ops.sum(probs * onehot, axis=axes)
    total = ops.sum(probs, axis=axes) + ops.sum(onehot, axis=axes)
    if not per_image:
        intersection, total = _sum_over_replicas(intersection, total)
    return (2.0 * intersection + smooth) / (total + smooth)


def _sum_over_replicas(*values):
    """Under tf.distribute each replica sees part of the batch; the Dice of the whole batch needs
    the sums of all of them (all_reduce is differentiable, so gradients stay exact)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, list(values))


def dice_loss(y_true, logits, smooth: float = 1.0, per_image: bool = False, class_weights=None):
    """1 - weighted mean soft Dice over classes: a scalar, or [batch] with `per_image`."""
    dice = soft_dice(y_true, logits, smooth, per_image)
    if class_weights is None:
        return 1.0 - ops.mean(dice, axis=-1)
    weights = ops.convert_to_tensor(class_weights, "float32")
    if weights.shape[-1] != dice.shape[-1]:
        raise ValueError(
            f"class_weights has {weights.shape[-1]} values for {dice.shape[-1]} classes"
        )
    return 1.0 - ops.sum(dice * weights, axis=-1) / ops.sum(weights)


def cross_entropy(y_true, logits):
    """Mean per-pixel cross-entropy from logits; sigmoid for one channel, softmax otherwise."""
    logits = ops.cast(logits, "float32")
    labels = ops.cast(y_true, "int32")
    if len(labels.shape) == len(logits.shape):
        labels = ops.squeeze(labels, axis=-1)
    if logits.shape[-1] == 1:
        per_pixel = keras.losses.binary_crossentropy(
            ops.expand_dims(ops.cast(labels, "float32"), -1), logits, from_logits=True)
    else:
        per_pixel = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return ops.mean(per_pixel)


@keras.saving.register_keras_serializable(package="unet_tf")
class DiceLoss(keras.losses.Loss):
    """Soft Dice loss from logits and sparse labels (see the module docstring for the options).

    Args:
        smooth: float. Added to numerator and denominator.
        per_image: bool. Average per-image Dice instead of one Dice over the batch.
        class_weights: list of floats or None. Weight of each class in the mean.

    Example:
        >>> model.compile(optimizer="adam", loss=DiceLoss(class_weights=[1.0, 0.5, 1.0]))
    """

    def __init__(self, smooth=1.0, per_image=False, class_weights=None, name="dice_loss",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = smooth
        self.per_image = per_image
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true, y_pred):
        loss = dice_loss(y_true, y_pred, self.smooth, self.per_image, self.class_weights)
        if self.per_image:
            return loss
        # One value per image, all the batch's Dice loss: Keras averages them and, under
        # tf.distribute, divides by the number of replicas, as it does for any per-example loss
        # (a scalar would be left unscaled and count once per replica).
        return loss * ops.ones_like(y_pred[:, 0, 0, 0])

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth, "per_image": self.per_image,
                "class_weights": self.class_weights}


@keras.saving.register_keras_serializable(package="unet_tf")
class DiceCELoss(DiceLoss):
    """`dice_weight * DiceLoss + ce_weight * cross-entropy`, both from logits.

    Args:
        dice_weight: float. Weight of the Dice term.
        ce_weight: float. Weight of the per-pixel cross-entropy term.
        smooth, per_image, class_weights: as in `DiceLoss`.
    """

    def __init__(self, dice_weight=1.0, ce_weight=1.0, smooth=1.0, per_image=False,
                 class_weights=None, name="dice_ce_loss", **kwargs):
        super().__init__(smooth, per_image, class_weights, name=name, **kwargs)
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight

    def call(self, y_true, y_pred):
        return (self.dice_weight * super().call(y_true, y_pred)
                + self.ce_weight * cross_entropy(y_true, y_pred))

    def get_config(self):
        return {**super().get_config(), "dice_weight": self.dice_weight,
                "ce_weight": self.ce_weight}


def loss_from_config(config) -> keras.losses.Loss:
    """The loss a `Config` names: dice, ce (the tutorial's) or dice_ce."""
    if config.loss == "dice":
        return DiceLoss(class_weights=config.class_weights)
    if config.loss == "dice_ce":
        return DiceCELoss(config.dice_weight, config.ce_weight, class_weights=config.class_weights)
    if config.loss == "ce":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    raise ValueError(f"unknown loss {config.loss!r}; expected dice, ce or dice_ce")
