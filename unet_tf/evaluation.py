"""Scores of a model on a split: Dice, IoU and pixel accuracy per class and overall, and pet
against background; what `python -m unet_tf.evaluate`, training's final report and the notebook
print.

    >>> report, confusion, masks = evaluate_split(model, split, ("pet", "background", "border"))
    >>> print(format_report(report, ("pet", "background", "border")))

Dice and IoU per class come from one confusion matrix summed over every pixel of the split
(dataset-level, see metrics.py). Pet vs background counts every class but background as pet (so
the trimap's border is pet), at dataset level and as a mean over images (an image with no pet,
truly and predicted, scores 1).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from unet_tf import data, metrics
from unet_tf.inference import postprocess
from unet_tf.config import Config, preset
from unet_tf.data import Policy, Split
from unet_tf.data.policy import NATIVE
from unet_tf.inference import predict_masks
from unet_tf.run.model_file import RunInfo


def evaluation_config(info: RunInfo, dataset: str | None = None, data_dir: str | None = None,
                      labels: str | None = None, classes: tuple | None = None,
                      split: str | None = None) -> Config:
    """The configuration of the run a model came from (`info`), with the data it is to be
    evaluated on: any of `dataset`, `data_dir`, `labels`, `classes` replace the run's, and `split`
    names a split instead of the run's validation data."""
    values = dict(info.config) or {**preset("tutorial").to_dict(), "labels": info.labels,
                                   "classes": None if info.labels != "index" else info.class_names}
    values["image_size"] = info.input_size
    if dataset:
        values.update(dataset=dataset, data_dir="",
                      classes=values["classes"] if dataset == "folder" else None)
    if data_dir:
        values["data_dir"] = data_dir
        if not dataset and values["dataset"] == "synthetic":
            values["dataset"] = "oxford_iiit_pet"
    if labels:
        values["labels"] = labels
    if classes:
        values["classes"] = tuple(classes)
    if split:
        values.update(val_split=split, validation_fraction=0.0)
    return Config.from_dict(values)


def evaluation_data(info: RunInfo, config: Config, named_split: bool,
                    full_resolution: bool = False) -> tuple:
    """(split, policy, full) to score a model on: `config.val_split` when `named_split`, else the
    run's validation data (the part carved out of its training split included). At the model's
    size as training's validation, or with `full_resolution` (always for --resize none models)
    the photos as they are, fitted to the model by the run's policy and scored at their size."""
    full = full_resolution or info.policy.native
    if full:  # the photos as they are (native, unscaled); the run's policy fits them to the model
        config = dataclasses.replace(config, resize=NATIVE, scale=1.0)
    split = (data.load_split(config, config.val_split) if named_split
             else data.load_splits(config, train=False)[1])
    return split, info.policy if full else None, full


def chose_the_model(run_config: dict, split: str | None) -> bool:
    """Whether early stopping chose the model's epoch on these photos: the run's validation data
    (`split` None), or a split named as the run's validation split when nothing was carved out of
    training for validation (the tutorial validates on `test`). Its score is then optimistic."""
    if not run_config or run_config.get("val_split") == "none":
        return False
    if split is None:
        return True
    return (not run_config.get("validation_fraction")
            and data.parse_split(split) == data.parse_split(run_config["val_split"]))


SELECTION_NOTE = ("these photos chose the epoch kept (early stopping): an optimistic score; "
                  "photos the run never saw give an honest one")


def binary_scores(true_masks, predicted_masks, pet_classes) -> dict:
    """Pet-vs-background Dice and IoU: dataset-level, and the mean over images (masks of one
    size stacked, or lists of masks of any sizes)."""
    pairs = [(np.isin(t, pet_classes), np.isin(p, pet_classes))
             for t, p in zip(true_masks, predicted_masks)]
    overlap = np.array([(t & p).sum() for t, p in pairs], np.float64)
    sizes = np.array([t.sum() + p.sum() for t, p in pairs], np.float64)
    union = sizes - overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(sizes > 0, 2 * overlap / sizes, 1.0)
        iou = np.where(union > 0, overlap / union, 1.0)
    return {
        "dice": float(2 * overlap.sum() / sizes.sum()) if sizes.sum() else 1.0,
        "iou": float(overlap.sum() / union.sum()) if union.sum() else 1.0,
        "mean_dice_per_image": float(dice.mean()),
        "mean_iou_per_image": float(iou.mean()),
    }


def evaluate_split(model: keras.Model, split: Split, class_names, steps=(),
                   tta: bool = False, policy: Policy | None = None) -> tuple:
    """(report, confusion matrix, predicted masks) of a model on a split: at the model's size
    when the split holds photos fitted to it, at each photo's size (through `policy`) when it
    holds photos of any sizes."""
    predicted = predict_masks(model, split.images, tta=tta, policy=policy)
    if steps:
        predicted = [postprocess.postprocess(m, class_names, steps) for m in predicted]
    if not isinstance(split.images, list):
        predicted = np.asarray(predicted)
    cm = sum(metrics.confusion_matrix(t, p, len(class_names))
             for t, p in zip(split.masks, predicted)) if isinstance(predicted, list) else \
        metrics.confusion_matrix(split.masks, predicted, len(class_names))
    report = {"split": split.name, "examples": len(split), "postprocess": list(steps), "tta": tta,
              **metrics.scores_from_confusion(cm, class_names)}
    if "background" in class_names:
        report["pet_vs_background"] = binary_scores(split.masks, predicted,
                                                    postprocess.pet_classes(class_names))
    return report, cm, predicted


def objects_name(class_names) -> str:
    """What every class but background is, together: "pet" for the pet models (the trimap's
    border is pet), else the classes' names joined by " + "."""
    return "pet" if "pet" in class_names else " + ".join(
        name for name in class_names if name != "background")


def photo_score(true_mask, predicted_mask, class_names) -> tuple:
    """(what, score) of one photo: the objects' Dice against background where the classes have a
    background (e.g. ("foreground Dice", 0.82)), else the mean Dice over the classes."""
    if "background" in class_names:
        scores = binary_scores([true_mask], [predicted_mask],
                               postprocess.pet_classes(class_names))
        return f"{objects_name(class_names)} Dice", scores["dice"]
    cm = metrics.confusion_matrix(true_mask, predicted_mask, len(class_names))
    return "mean Dice", metrics.scores_from_confusion(cm, class_names)["mean_dice"] or 0.0


def score_column(class_names) -> str:
    """The per-image column that ranks photos (`photo_score`): the objects' Dice against
    background where the classes have a background, else the mean Dice over the classes."""
    return "foreground_dice" if "background" in class_names else "mean_dice"


def per_image_scores(names, true_masks, predicted_masks, class_names) -> list:
    """One row per image (a dict, in split order): file, height, width, Dice and IoU of every
    class (None where the class is neither true nor predicted in the image), the score that ranks
    photos (`score_column`: objects vs background Dice, or the mean Dice) and pixel accuracy."""
    rows = []
    for name, true, predicted in zip(names, true_masks, predicted_masks):
        true, predicted = np.asarray(true), np.asarray(predicted)
        scores = metrics.scores_from_confusion(
            metrics.confusion_matrix(true, predicted, len(class_names)), class_names)
        rows.append({"file": name, "height": int(true.shape[0]), "width": int(true.shape[1]),
                     **{f"dice_{c}": scores["dice"][c] for c in class_names},
                     **{f"iou_{c}": scores["iou"][c] for c in class_names},
                     score_column(class_names): photo_score(true, predicted, class_names)[1],
                     "pixel_accuracy": scores["pixel_accuracy"]})
    return rows


def worst_first(rows: list, count: int, column: str) -> list:
    """The indices of the `count` rows lowest in `column`, lowest first (ties in file order)."""
    return sorted(range(len(rows)), key=lambda i: (rows[i][column], i))[:count]


def format_report(report: dict, class_names) -> str:
    rows = [f"{report['split']}: {report['examples']} examples"
            + (f", post-processing {'+'.join(report['postprocess'])}" if report["postprocess"] else "")
            + (", flip test-time augmentation" if report.get("tta") else ""),
            f"{'class':<14}{'Dice':>8}{'IoU':>8}"]
    for name in class_names:
        dice, iou = report["dice"][name], report["iou"][name]
        rows.append(f"{name:<14}{_fmt(dice):>8}{_fmt(iou):>8}")
    rows.append(f"{'mean':<14}{_fmt(report['mean_dice']):>8}{_fmt(report['mean_iou']):>8}")
    rows.append(f"pixel accuracy {report['pixel_accuracy']:.4f}")
    if "pet_vs_background" in report:
        b = report["pet_vs_background"]
        # The JSON key keeps its name; the line names what it measures for this model's classes.
        rows.append(f"{objects_name(class_names)} vs background: Dice {b['dice']:.4f} (mean per image "
                    f"{b['mean_dice_per_image']:.4f}), IoU {b['iou']:.4f} (mean per image "
                    f"{b['mean_iou_per_image']:.4f})")
    if report.get("chose_the_model"):
        rows.append(f"note: {SELECTION_NOTE}")
    return "\n".join(rows)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
