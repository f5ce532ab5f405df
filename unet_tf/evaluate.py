"""Measure a trained model on a split: Dice, IoU and pixel accuracy, per class and overall.

    python -m unet_tf.evaluate --model runs/RUN/model.keras
    python -m unet_tf.evaluate --model runs/RUN/model.keras \
        --data-dir ../shared/data/oxford-pets-sample --split test --json test_metrics.json
    python -m unet_tf.evaluate --model runs/RUN/model.keras --postprocess none

Without data flags it evaluates on the validation split of the run the model came from (its
config.json). Masks are compared at the model's input size, as during training, after the
post-processing `predict` applies (`--postprocess auto`: largest pet and filled holes for models
trained on oxford_iiit_pet, none for others; `none` measures the raw masks, as the training's
validation metrics do). Reported:

- per class and mean: Dice, IoU (dataset-level: from pixel counts summed over the split), and
  pixel accuracy;
- pet vs background (every class but background counts as pet, so trimap borders are pet): Dice
  and IoU at dataset level, and their mean over images (an image with no pet, truly and
  predicted, scores 1).

It prints a table, writes the JSON (--json, default <run>/evaluation_<split>.json) and a picture of
the confusion matrix beside it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from unet_tf.cli import add_tta_argument, command_parser
from unet_tf import data, metrics, plots, postprocess
from unet_tf.config import Config, ConfigError, preset
from unet_tf.inference import predict_masks
from unet_tf.run_files import load_model_safely, write_json


def binary_scores(true_masks, predicted_masks, pet_classes) -> dict:
    """Pet-vs-background Dice and IoU: dataset-level, and the mean over images."""
    truth = np.isin(true_masks, pet_classes).reshape(len(true_masks), -1)
    predicted = np.isin(predicted_masks, pet_classes).reshape(len(true_masks), -1)
    overlap = (truth & predicted).sum(1).astype(np.float64)
    sizes = truth.sum(1) + predicted.sum(1).astype(np.float64)
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


def evaluate_split(model: keras.Model, split: data.Split, class_names, steps=(),
                   tta: bool = False) -> tuple:
    """(report, confusion matrix, predicted masks) of a model on a split."""
    predicted = predict_masks(model, split.images, tta=tta)
    if steps:
        predicted = np.stack([postprocess.postprocess(m, class_names, steps) for m in predicted])
    cm = metrics.confusion_matrix(split.masks, predicted, len(class_names))
    report = {"split": split.name, "examples": len(split), "postprocess": list(steps), "tta": tta,
              **metrics.scores_from_confusion(cm, class_names)}
    if "background" in class_names:
        report["pet_vs_background"] = binary_scores(split.masks, predicted,
                                                    postprocess.pet_classes(class_names))
    return report, cm, predicted


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
        rows.append(f"pet vs background: Dice {b['dice']:.4f} (mean per image "
                    f"{b['mean_dice_per_image']:.4f}), IoU {b['iou']:.4f} (mean per image "
                    f"{b['mean_iou_per_image']:.4f})")
    return "\n".join(rows)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def evaluation_config(model_path: Path, input_size: int, num_classes: int, args) -> Config:
    """The run's configuration (or a preset), with the data flags given on the command line."""
    config_path = model_path.with_name("config.json")
    values = Config.load(config_path).to_dict() if config_path.is_file() else {
        **preset("tutorial").to_dict(), "labels": {2: "binary"}.get(num_classes, "trimap")}
    values["image_size"] = input_size
    if args.dataset:
        values["dataset"] = args.dataset
        values["data_dir"] = ""
        values["classes"] = values["classes"] if args.dataset == "folder" else None
    if args.data_dir:
        values["data_dir"] = args.data_dir
        if not args.dataset and values["dataset"] == "synthetic":
            values["dataset"] = "oxford_iiit_pet"
    if args.labels:
        values["labels"] = args.labels
    if args.split:
        values["val_split"] = args.split
        values["validation_fraction"] = 0.0
    return Config.from_dict(values)


def main(argv=None) -> int:
    parser = command_parser("unet_tf.evaluate", __doc__)
    parser.add_argument("--model", required=True, help="a model.keras from a training run")
    parser.add_argument("--dataset", choices=("oxford_iiit_pet", "synthetic", "folder"))
    parser.add_argument("--data-dir", help="a local oxford_iiit_pet copy or an images/+masks/ folder")
    parser.add_argument("--labels", choices=("trimap", "binary", "index"))
    parser.add_argument("--split", help="split to evaluate, e.g. test, train[80%%:] (default: the "
                                        "run's validation split)")
    postprocess.add_argument(parser)
    add_tta_argument(parser)
    parser.add_argument("--json", help="where to write the metrics (default: beside the model)")
    args = parser.parse_args(argv)
    try:
        postprocess.check(args.postprocess)
        model_path = Path(args.model)
        model, info = load_model_safely(model_path)
        steps = postprocess.resolve(args.postprocess, info.config.get("dataset"))
        config = evaluation_config(model_path, info.input_size, int(model.output_shape[-1]), args)
        if config.num_classes != model.output_shape[-1]:
            raise ConfigError(f"labels={config.labels} has {config.num_classes} classes but the "
                              f"model predicts {model.output_shape[-1]}")
        # Without --split: the run's validation data, the part it carved out of its training
        # split included (--validation-fraction).
        split = (data.load_split(config, config.val_split) if args.split
                 else data.load_splits(config, train=False)[1])
    except (ConfigError, data.DataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(data.summary(split, config.class_names))
    report, cm, _ = evaluate_split(model, split, config.class_names, steps, args.tta)
    report["model"] = str(model_path)
    report["dataset"] = config.dataset
    report["data_dir"] = config.data_dir
    report["confusion_matrix"] = cm.tolist()
    report["skipped"] = [list(s) for s in split.skipped]
    slug = (re.sub(r"[^\w-]+", "_", split.name).strip("_") + "".join(f"_{s}" for s in steps)
            + ("_tta" if args.tta else ""))
    json_path = Path(args.json) if args.json else model_path.with_name(f"evaluation_{slug}.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(json_path, report)
    picture = json_path.with_name(json_path.stem + "_confusion.png")
    plots.plot_confusion(cm, config.class_names, picture)
    print(format_report(report, config.class_names))
    print(f"metrics: {json_path}\nconfusion matrix: {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
