"""Averaging the weights of the epochs early stopping waited through (`--average-weights`).

On a few hundred photos the validation Dice of single epochs is noisy, and so is the choice of the
best epoch by a few dozen validation photos. The mean of the weights of the best epoch and of
every epoch after it (the plateau that early stopping waited through before it stopped) is
steadier than any one of them; on the Oxford-IIIT Pet sample it scored higher on the test split
than the best epoch alone (docs/small-data.md). Without validation (`--val-split none`) there is
no best epoch: the last quarter of the epochs is averaged (`tail_start`), about the plateau that
the sample's validated runs averaged (their best epochs were 103-121 of 140).

BatchNorm's moving statistics do not average: a mean of weights is a new network whose layers see
new inputs. So after averaging they are measured again, in one pass over the training photos.

The running sum is saved with the run's state after every epoch (run/resume.py), so `--resume`
continues it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from unet_tf.data import normalize
from unet_tf.model import batch_norm_layers
from unet_tf.progress import progress


class PlateauAverage(keras.callbacks.Callback):
    """Running mean of the weights from the best epoch so far to the latest one.

    Early stopping tells it of each new best epoch (`new_best`), which starts the mean again from
    that epoch's weights; every other epoch's weights are added. Without validation there is no
    best epoch: `from_epoch` (0-based) is the first epoch it averages, and it averages every one
    after it. Its place in the callback list does not matter. Its state (the running sum, how
    many epochs it holds, the first of them) is saved with the run's (`state()`, `restore()`; see
    run/resume.py).
    """

    state_name = "average"

    def __init__(self, from_epoch: int = 0):
        super().__init__()
        self.from_epoch = from_epoch
        self.sum = None
        self.count = 0
        self.first_epoch = None
        self._last_epoch = None  # the epoch whose weights the sum holds last (0-based)

    def on_epoch_end(self, epoch, logs=None):
        if self._last_epoch == epoch or epoch < self.from_epoch:
            return  # early stopping restarted it from this epoch already, or not yet averaging
        weights = self.model.get_weights()
        if self.sum is None:
            self.start_from(weights, epoch)
            return
        for total, w in zip(self.sum, weights):
            total += w
        self.count += 1
        self._last_epoch = epoch

    def new_best(self, epoch: int) -> None:
        """`epoch` (0-based), just ended, is the best so far: the mean starts again from it."""
        self.start_from(self.model.get_weights(), epoch)

    def start_from(self, weights: list, epoch: int) -> None:
        """Starts the mean again with `weights`, those of `epoch` (0-based)."""
        self.sum = [np.asarray(w, np.float64) for w in weights]
        self.count, self.first_epoch, self._last_epoch = 1, epoch + 1, epoch

    def state(self) -> tuple:
        return ({"count": self.count, "first_epoch": self.first_epoch},
                {f"sum_{i}": total for i, total in enumerate(self.sum or [])})

    def restore(self, values: dict, arrays: dict) -> None:
        self.sum = [arrays[f"sum_{i}"] for i in range(len(arrays))] or None
        self.count, self.first_epoch = values.get("count", 0), values.get("first_epoch")

    @property
    def epochs(self) -> tuple:
        """(first, last) epoch of the mean, counted from 1."""
        return self.first_epoch, self.first_epoch + self.count - 1

    def average(self) -> list:
        """The mean weights, in the model's `get_weights()` order and dtypes."""
        return [(total / self.count).astype(w.dtype)
                for total, w in zip(self.sum, self.model.get_weights())]


def tail_start(epochs: int) -> int:
    """The first epoch (0-based) averaged without validation: the last quarter of `epochs`."""
    return epochs - max(1, epochs // 4)


def reestimate_batch_norm(model: keras.Model, images: np.ndarray, batch_size: int) -> None:
    """Sets the moving mean and variance of every trainable BatchNorm layer to the mean of its
    batch statistics over `images` (uint8 [N, S, S, 3]), in batches of `batch_size` as in training.

    Frozen BatchNorm layers (a pretrained encoder's, while fine-tuning) keep their statistics.
    The model is run eagerly on one device; under a distribution strategy pass a copy.
    """
    layers = [layer for layer in batch_norm_layers(model) if layer.trainable]
    momenta = [layer.momentum for layer in layers]
    seen = 0
    try:
        for start in progress(range(0, len(images), batch_size), "BatchNorm statistics",
                              unit="batch"):
            batch = normalize(tf.constant(images[start:start + batch_size]))
            for layer in layers:  # a running mean weighted by batch size
                layer.momentum = seen / (seen + len(batch))
            model(batch, training=True)
            seen += len(batch)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def one_device_copy(model: keras.Model) -> keras.Model:
    """A copy of `model` with its weights, outside whatever distribution strategy it is under."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def apply_average(model: keras.Model, averager: PlateauAverage, images: np.ndarray,
                  batch_size: int) -> None:
    """Puts the averaged weights into `model` (one device), with BatchNorm statistics measured on
    `images`."""
    model.set_weights(averager.average())
    reestimate_batch_norm(model, images, batch_size)
