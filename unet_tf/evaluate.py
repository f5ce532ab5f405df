r"""Measure a trained model on a split: Dice, IoU and pixel accuracy, per class and overall.

    python -m unet_tf.evaluate --model runs/RUN/model.keras
    python -m unet_tf.evaluate --model runs/RUN/model.keras \
        --data-dir ../shared/data/oxford-pets-sample --split test --json test_metrics.json
    python -m unet_tf.evaluate --model runs/RUN/model.keras --postprocess none

Without data flags it evaluates on the validation split of the run the model came from (its
config.json). Masks are compared at the model's input size, as during training (with
`--full-resolution`, and always for `--resize none` models, at each photo's own size, predicted
exactly as predict and the export predict), after the
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

from unet_tf import data, plots
from unet_tf.inference import postprocess
from unet_tf.cli import add_tta_argument, command_parser, run_command
from unet_tf.config import DATASETS, LABEL_MODES, ConfigError
from unet_tf.evaluation import (
    chose_the_model,
    evaluate_split,
    evaluation_config,
    evaluation_data,
    format_report,
)
from unet_tf.run.outputs import REPORT_FORMAT, check_report_file, file_sha256, make_folder
from unet_tf.files import write_json
from unet_tf.run.model_file import load_model_safely


def main(argv=None) -> int:
    return run_command(_main, argv)


def build_parser():
    """The command line of this command (every option with its help)."""
    parser = command_parser("unet_tf.evaluate", __doc__)
    parser.add_argument("--model", required=True, help="a model.keras from a training run")
    parser.add_argument("--dataset", choices=DATASETS,
                        help="the data's source (default: the run's)")
    parser.add_argument("--data-dir", help="a local oxford_iiit_pet copy or an images/+masks/ "
                                           "folder (default: the run's)")
    parser.add_argument("--labels", choices=LABEL_MODES, help="how masks map to classes "
                                                              "(default: the run's)")
    parser.add_argument("--classes", nargs="+", metavar="NAME",
                        help="with --labels index: the class names in mask-value order")
    parser.add_argument("--split", help="split to evaluate, e.g. test, train[80%%:] (default: the "
                                        "run's validation data)")
    postprocess.add_argument(parser)
    add_tta_argument(parser)
    parser.add_argument("--full-resolution", action="store_true",
                        help="compare masks at each photo's own size, predicted as predict and "
                             "the export do (always so for --resize none models; default: at the "
                             "model's size, as training's validation)")
    parser.add_argument("--json", help="a new file for the metrics, or an earlier report to "
                                       "replace (default: beside the model, named after the split)")
    return parser


def _main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    postprocess.check(args.postprocess)
    if args.json:  # before any work
        check_report_file(Path(args.json), _picture(Path(args.json)))
    model_path = Path(args.model)
    model, info = load_model_safely(model_path)
    config = evaluation_config(info, args.dataset, args.data_dir, args.labels, args.classes,
                               args.split)
    if config.num_classes != model.output_shape[-1]:
        raise ConfigError(f"labels={config.labels} gives {config.num_classes} classes "
                          f"{config.class_names} but the model predicts {model.output_shape[-1]}; "
                          "give the --labels (and --classes) the model was trained with")
    steps = postprocess.steps_for(args.postprocess, info.config.get("dataset"), config.class_names)
    # Without --split: the run's validation data, the part it carved out of its training split
    # included (--validation-fraction).
    if not args.split and not config.validates:
        raise ConfigError(f"{model_path} was trained without validation (--val-split none), so "
                          "it has no validation data to score it on: name a split it never saw "
                          "with --split, e.g. --split test")
    split, policy, full = evaluation_data(info, config, bool(args.split), args.full_resolution)
    slug = (re.sub(r"[^\w-]+", "_", split.name).strip("_") + "".join(f"_{s}" for s in steps)
            + ("_tta" if args.tta else "") + ("_full" if full else ""))
    json_path = Path(args.json) if args.json else model_path.with_name(f"evaluation_{slug}.json")
    check_report_file(json_path, _picture(json_path))
    print(data.summary(split, config.class_names))
    report, cm, _ = evaluate_split(model, split, config.class_names, steps, args.tta, policy)
    report["chose_the_model"] = chose_the_model(info.config, args.split)
    report = {"format": REPORT_FORMAT, **report, "resolution": "full" if full else "model",
              "policy": (policy or info.policy).to_dict(), "model": str(model_path),
              "dataset": config.dataset, "data_dir": config.data_dir,
              "confusion_matrix": cm.tolist(), "skipped": [list(s) for s in split.skipped]}
    make_folder(json_path.parent, "--json")
    plots.plot_confusion(cm, config.class_names, _picture(json_path))
    # The picture's checksum: a later evaluate replaces the picture only while it is this one.
    report["picture_sha256"] = file_sha256(_picture(json_path))
    write_json(json_path, report)
    print(format_report(report, config.class_names))
    print(f"metrics: {json_path}\nconfusion matrix: {_picture(json_path)}")
    return 0


def _picture(json_path: Path) -> Path:
    return json_path.with_name(json_path.stem + "_confusion.png")


if __name__ == "__main__":
    sys.exit(main())
