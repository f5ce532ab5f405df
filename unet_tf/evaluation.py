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

from unet_tf import data, instances, metrics
from unet_tf.config import Config, preset
from unet_tf.data import Policy, Split, geometry
from unet_tf.data.decoding import nearest_indices, read_instances, spread_sample
from unet_tf.data.policy import NATIVE, PAD, SQUASH
from unet_tf.inference import postprocess, predict_masks
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
                   tta: bool = False, policy: Policy | None = None, predicted=None) -> tuple:
    """(report, confusion matrix, predicted masks) of a model on a split: at the model's size
    when the split holds photos fitted to it, at each photo's size (through `policy`) when it
    holds photos of any sizes. `predicted`: the model's raw masks of the split when already
    predicted (`predict_objects`), before any post-processing `steps`."""
    if predicted is None:
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


def group_scores(groups, true_masks, predicted_masks, class_names) -> dict:
    """Scores per group of images (`groups`: the group of each image, as `--group-by` finds it):
    {group: {"examples", "dice", "iou", "mean_dice", "mean_iou", "pixel_accuracy"} and, where
    the classes have a background, "pet_vs_background"}, each pooled over the group's pixels as
    the dataset-level scores are; groups in name order."""
    members = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    out = {}
    for group in sorted(members):
        true = [true_masks[i] for i in members[group]]
        predicted = [predicted_masks[i] for i in members[group]]
        cm = sum(metrics.confusion_matrix(t, p, len(class_names)) for t, p in zip(true, predicted))
        out[group] = {"examples": len(true), **metrics.scores_from_confusion(cm, class_names)}
        if "background" in class_names:
            out[group]["pet_vs_background"] = binary_scores(
                true, predicted, postprocess.pet_classes(class_names))
    return out


def format_groups(groups: dict, class_names) -> str:
    """The per-group scores as a short table: photos and the objects' (or mean) Dice per group."""
    binary = "background" in class_names
    heading = f"{objects_name(class_names)} vs background Dice" if binary else "mean Dice"
    width = max(12, *(len(str(g)) + 2 for g in groups))
    rows = [f"{'group':<{width}}{'photos':>7}  {heading}"]
    for group, scores in groups.items():
        dice = scores["pet_vs_background"]["dice"] if binary else scores["mean_dice"]
        rows.append(f"{group:<{width}}{scores['examples']:>7}  {_fmt(dice)}")
    return "\n".join(rows)


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


def per_image_scores(names, true_masks, predicted_masks, class_names, objects=None) -> list:
    """One row per image (a dict, in split order): file, height, width, Dice and IoU of every
    class (None where the class is neither true nor predicted in the image), the score that ranks
    photos (`score_column`: objects vs background Dice, or the mean Dice) and pixel accuracy;
    with `objects` (each image's `instances.object_scores`, labels instance) also the columns of
    `OBJECT_COLUMNS`: true and predicted object counts, F1 at IoU 0.5, panoptic quality, AP."""
    rows = []
    for index, (name, true, predicted) in enumerate(zip(names, true_masks, predicted_masks)):
        true, predicted = np.asarray(true), np.asarray(predicted)
        scores = metrics.scores_from_confusion(
            metrics.confusion_matrix(true, predicted, len(class_names)), class_names)
        rows.append({"file": name, "height": int(true.shape[0]), "width": int(true.shape[1]),
                     **{f"dice_{c}": scores["dice"][c] for c in class_names},
                     **{f"iou_{c}": scores["iou"][c] for c in class_names},
                     score_column(class_names): photo_score(true, predicted, class_names)[1],
                     "pixel_accuracy": scores["pixel_accuracy"]})
        if objects is not None:
            rows[-1].update({column: objects[index][key]
                             for column, key in OBJECT_COLUMNS.items()})
    return rows


# The per-image CSV's object columns (labels instance): column -> `instances.object_scores` key.
OBJECT_COLUMNS = {"true_count": "true", "predicted_count": "predicted", "f1_50": "f1", "pq": "pq",
                  "ap": "ap"}


def worst_first(rows: list, count: int, column: str) -> list:
    """The indices of the `count` rows lowest in `column`, lowest first (ties in file order)."""
    return sorted(range(len(rows)), key=lambda i: (rows[i][column], i))[:count]


def photo_title(row: dict, column: str) -> str:
    """A photo's title in pictures: the file of a per-image `row` and its score in `column`."""
    return f"{row['file']}\n{column} {row[column]:.3f}"


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


# --- objects (labels instance) ------------------------------------------------------------------
#
# A labels-instance split holds the 3-class target (background, interior, boundary), not the
# objects: the true objects are read again from the split's mask files (`read_instances`, as
# training reads them) and fitted to the model as its masks were (nearest neighbour, squash or
# pad), or kept as read at full resolution. The predicted objects are `instances.separate` of the
# model's class probabilities, from the same prediction as the masks (`predict_objects`).


def scores_objects(config: Config) -> bool:
    """Whether evaluate scores objects as well as pixels: instance labels (the run's, or
    --labels instance)."""
    return config.labels == "instance"


def example_files(config: Config, split: Split) -> list:
    """The `data.ExampleFiles` (name, image, mask path) of each example of a local split, in its
    order: a split read as `config.val_split` lists that split's files, the validation part
    carved out of training (`data.load_splits`) the training split's."""
    source = config.val_split if split.name == config.val_split else config.train_split
    listed = {pair.name: pair for pair in data.list_files(config, source) or []}
    missing = [name for name in split.names if name not in listed]
    if missing:
        raise data.DataError(f"split {split.name!r}: the files of {', '.join(missing[:5])} are "
                             f"not among those of split {source!r}; cannot read their objects")
    return [listed[name] for name in split.names]


def fit_instances(labels: np.ndarray, policy: Policy) -> np.ndarray:
    """An instance image [H, W] fitted to the model's square as the policy fits masks (squash, or
    pad with background 0): nearest-neighbour sampling as tf.image.resize's, ids kept (int32)."""
    height, width = labels.shape
    size = policy.size
    if policy.resize == SQUASH:
        return labels[np.ix_(nearest_indices(height, size), nearest_indices(width, size))]
    if policy.resize == PAD:
        top, left, new_height, new_width = (
            int(v) for v in geometry.letterbox_box(height, width, size))
        fitted = np.zeros((size, size), np.int32)
        fitted[top:top + new_height, left:left + new_width] = labels[
            np.ix_(nearest_indices(height, new_height), nearest_indices(width, new_width))]
        return fitted
    raise ValueError(f"resize {policy.resize}: photos are scored at their own size, not fitted")


def true_objects(config: Config, split: Split, full: bool) -> tuple:
    """(instance images, native shapes) of a labels-instance split's examples, read again from
    their mask files: as read with `full` (photos at their own size), else fitted to the model
    as the split's masks are (`Policy.from_config(config)`)."""
    policy = None if full else Policy.from_config(config)
    labels, shapes = [], []
    for pair in example_files(config, split):
        _, read, reason = read_instances(pair.image, pair.mask)
        if reason:
            raise data.DataError(f"{pair.name}: {reason}")
        shapes.append(read.shape)
        labels.append(read if policy is None else fit_instances(read, policy))
    for name, fitted, mask in zip(split.names, labels, split.masks):
        if fitted.shape != np.shape(mask):
            raise data.DataError(f"{name}: its objects are {fitted.shape} but its mask "
                                 f"{np.shape(mask)}")
    return labels, shapes


def training_min_object_size(config: Config, train_split: Split) -> int | None:
    """The `min_object_size` a labels-instance run records (pixels at the photos' own size): from
    `instances.min_object_size` of the training label images that resize auto and intensity
    auto look at (`decoding.spread_sample`), so that a large folder is not read again in full."""
    labels = []
    for pair in spread_sample(example_files(config, train_split)):
        _, read, reason = read_instances(pair.image, pair.mask)
        if not reason:  # unusable pairs were named and skipped when the split was read
            labels.append(read)
    return instances.min_object_size(labels)


def recorded_min_size(metrics_record: dict):
    """The `min_object_size` (pixels at the photos' own size) a run's metrics.json records: a
    positive whole number, else None."""
    value = (metrics_record or {}).get("min_object_size")
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1
          and float(value).is_integer())
    return int(value) if ok else None


def min_sizes(min_size, shapes, policy: Policy | None) -> list:
    """`separate`'s min_size for each image: `min_size` (pixels at the photo's own size) as it is
    at full resolution (`policy` None), else scaled by the area the photo takes once fitted to the
    model (squash: the square; pad: its letterboxed part), at least 1; None without one."""
    if min_size is None:
        return [None] * len(shapes)
    if policy is None:
        return [min_size] * len(shapes)
    sizes = []
    for height, width in shapes:
        new_height, new_width = policy.fitted_shape(height, width)
        sizes.append(max(1, int(round(min_size * new_height * new_width / (height * width)))))
    return sizes


def predict_objects(model: keras.Model, images, separation: dict, sizes, tta: bool = False,
                    policy: Policy | None = None) -> tuple:
    """(masks, predicted instance images) of a split's images from one prediction: the masks as
    `predict_masks` gives them, the instances `instances.separate` of the same probabilities with
    `separation` (`instances.classes_for_separation`) and each image's min size from `sizes`."""
    return predict_masks(model, images, tta=tta, policy=policy, each=lambda index, probabilities:
                         instances.separate(probabilities, sizes[index], **separation))


def score_objects(model: keras.Model, info: RunInfo, config: Config, split: Split, full: bool,
                  policy: Policy | None, tta: bool = False) -> tuple:
    """(masks, true instance images, predicted instance images, per-image object scores, the
    report's "objects") of a split of instance data (`scores_objects`), from one prediction: the
    objects separated with the min size the run records (`info.metrics`), at the model's size or
    with `full` through `policy` at each photo's own."""
    true, shapes = true_objects(config, split, full)
    separation = instances.classes_for_separation(config.class_names)
    min_size = recorded_min_size(info.metrics)
    sizes = min_sizes(min_size, shapes, None if full else Policy.from_config(config))
    masks, predicted = predict_objects(model, split.images, separation, sizes, tta, policy)
    per_image = [instances.object_scores(t, p) for t, p in zip(true, predicted)]
    return masks, true, predicted, per_image, object_report(per_image, separation, min_size)


def object_report(per_image: list, separation: dict, min_size) -> dict:
    """The JSON report's "objects": `instances.aggregate_scores` of the images' object scores
    (counts summed, then the ratios), how objects were separated and the min size asked for
    (pixels at the photos' own size, as the run records it; None: none)."""
    return {"separation": separation["method"], "min_object_size": min_size,
            **instances.aggregate_scores(per_image)}


def format_objects(objects: dict) -> str:
    """A few lines of the object scores."""
    size = objects.get("min_object_size")
    return "\n".join([
        f"objects ({objects['separation']}, min size "
        f"{f'{size} px of the photo' if size else 'none'}): "
        f"{objects['true']} true, {objects['predicted']} predicted; at IoU 0.5: "
        f"{objects['tp']} matched, precision {_fmt(objects['precision'])}, recall "
        f"{_fmt(objects['recall'])}, F1 {_fmt(objects['f1'])}",
        f"objects: mean matched IoU {_fmt(objects['mean_matched_iou'])}, panoptic quality "
        f"{_fmt(objects['pq'])}, AP@[0.5:0.95] {_fmt(objects['ap'])}"])
