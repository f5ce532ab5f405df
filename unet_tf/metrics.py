"""Segmentation metrics on hard predictions (argmax of the logits).

Everything derives from one confusion matrix (rows: true class, columns: predicted class), summed
over all pixels seen: dataset-level scores, not a mean of per-batch scores.

- Dice of class c:  2 TP / (2 TP + FP + FN)
- IoU of class c:   TP / (TP + FP + FN)
- pixel accuracy:   trace / total

A class that is neither present nor predicted has no score (NaN in the per-class functions) and is
left out of the mean, as Keras' `MeanIoU` does.

The Keras metrics are thin: `DiceScore` reuses the confusion matrix that `keras.metrics.IoU`
accumulates and only changes the formula; IoU and accuracy are Keras' own (`metrics_for`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """[num_classes, num_classes] int64 counts of (true, predicted) class pairs (numpy)."""
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    y_pred = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} pixels, y_pred {y_pred.size}")
    return np.bincount(num_classes * y_true + y_pred, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def dice_from_confusion(cm) -> np.ndarray:
    """Dice per class (NaN where the class is neither present nor predicted)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denominator = cm.sum(0) + cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)


def iou_from_confusion(cm) -> np.ndarray:
    """IoU per class (NaN where the class is neither present nor predicted)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denominator = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, tp / denominator, np.nan)


def pixel_accuracy_from_confusion(cm) -> float:
    cm = np.asarray(cm, dtype=np.float64)
    return float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan")


def scores_from_confusion(cm, class_names) -> dict:
    """Per-class and mean Dice and IoU, and pixel accuracy, as plain floats (JSON-ready)."""
    dice, iou = dice_from_confusion(cm), iou_from_confusion(cm)

    def clean(values):
        return {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, values)}

    return {
        "dice": clean(dice),
        "iou": clean(iou),
        "mean_dice": float(np.nanmean(dice)) if not np.all(np.isnan(dice)) else None,
        "mean_iou": float(np.nanmean(iou)) if not np.all(np.isnan(iou)) else None,
        "pixel_accuracy": pixel_accuracy_from_confusion(cm),
        "pixels": int(np.asarray(cm).sum()),
    }


@keras.saving.register_keras_serializable(package="unet_tf")
class DiceScore(keras.metrics.IoU):
    """Dice on argmax predictions, from the confusion matrix `keras.metrics.IoU` accumulates.

    Args:
        num_classes: int. Number of classes.
        target_class_ids: list of ints. Classes averaged into the result (all by default).
        sparse_y_pred: bool. False (the default) takes the argmax of logits or probabilities.

    Example:
        >>> metric = DiceScore(num_classes=3, name="dice")
        >>> metric.update_state(labels, logits); float(metric.result())
    """

    def __init__(self, num_classes, target_class_ids=None, name="dice", dtype=None,
                 ignore_class=None, sparse_y_true=True, sparse_y_pred=False, axis=-1):
        if target_class_ids is None:
            target_class_ids = list(range(num_classes))
        super().__init__(num_classes=num_classes, target_class_ids=target_class_ids, name=name,
                         dtype=dtype, ignore_class=ignore_class, sparse_y_true=sparse_y_true,
                         sparse_y_pred=sparse_y_pred, axis=axis)

    def update_state(self, y_true, y_pred, sample_weight=None):
        # Label maps may come as [..., 1]; predictions as logits [..., C] or class maps [...].
        label_rank = len(y_pred.shape) - (0 if self.sparse_y_pred else 1)
        if len(y_true.shape) == label_rank + 1:
            y_true = ops.squeeze(y_true, axis=-1)
        return super().update_state(y_true, y_pred, sample_weight)

    def result(self):
        cm = ops.cast(self.total_cm, "float32")
        tp = ops.diag(cm)
        denominator = ops.sum(cm, axis=0) + ops.sum(cm, axis=1)
        ids = ops.convert_to_tensor(self.target_class_ids, dtype="int32")
        tp = ops.take(tp, ids)
        denominator = ops.take(denominator, ids)
        valid = ops.greater(denominator, 0.0)
        dice = ops.where(valid, 2.0 * tp / ops.maximum(denominator, 1.0), 0.0)
        return ops.sum(dice) / ops.maximum(ops.sum(ops.cast(valid, "float32")), 1.0)


def metrics_for(class_names) -> list:
    """The metrics training reports: mean Dice (early stopping watches its validation value),
    Dice per class, mean IoU and pixel accuracy."""
    n = len(class_names)
    return [
        DiceScore(n, name="dice"),
        *[DiceScore(n, target_class_ids=[i], name=f"dice_{c}") for i, c in enumerate(class_names)],
        keras.metrics.MeanIoU(n, sparse_y_pred=False, name="iou"),
        keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy"),
    ]
