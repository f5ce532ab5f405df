r"""Measure a trained model on a split: Dice, IoU and pixel accuracy, per class and overall.

    python -m unet_tf.evaluate --model runs/RUN/model.keras --report
    python -m unet_tf.evaluate --model runs/RUN/model.keras \
        --data-dir data/oxford-iiit-pet --split test --json test_metrics.json --report
    python -m unet_tf.evaluate --model runs/RUN/model.keras --split test --tta --worst 16
    python -m unet_tf.evaluate --model runs/RUN/model.keras --full-resolution --postprocess none
    python -m unet_tf.evaluate --model runs/RUN/model.keras --split test --group-by breed

Without data flags it evaluates on the validation split of the run the model came from (its
config.json). Masks are compared at the model's input size, as during training (with
`--full-resolution`, and always for `--resize none` models, at each photo's own size, predicted
exactly as predict and the export predict), after the
post-processing `predict` applies (`--postprocess auto`: largest pet and filled holes for models
trained on oxford_iiit_pet, none for others; `none` measures the raw masks, as the training's
validation metrics do). Reported:

- per class and mean: Dice, IoU (dataset-level: from pixel counts summed over the split), and
  pixel accuracy;
- with `--group-by REGEX` (or `breed`), the same per group of photos (patient, scene, breed):
  which kinds of photos the model fails on;
- pet vs background (every class but background counts as pet, so trimap borders are pet): Dice
  and IoU at dataset level, and their mean over images (an image with no pet, truly and
  predicted, scores 1);
- with instance labels (the run's, or `--labels instance`), objects: true and predicted counts,
  precision, recall and F1 at IoU 0.5, the mean IoU of matched objects, panoptic quality and AP
  over IoU 0.5-0.95 (`unet_tf.instances.object_scores`; dataset-level: counts summed over the
  images, then the ratios), in the JSON's "objects". The true objects are read again from the
  split's mask files (fitted to the model nearest-neighbour as its masks are, or as they are at
  full resolution); the predicted ones are separated (`instances.separate`, watershed on the
  interior probability) from the class probabilities of the same prediction, with the
  `min_object_size` the run's metrics.json records (pixels at the photo's size, scaled to the
  model's size with the photo), else none (working one out would read the training masks again).

It prints a table and writes, beside the JSON (--json, default <run>/evaluation_<split>.json):

- `<json name>_confusion.png`: the confusion matrix;
- `<json name>_per_image.csv`: one row per image (file, size, Dice and IoU per class, objects vs
  background Dice or the mean Dice, pixel accuracy; with instance labels also true_count,
  predicted_count, f1_50, pq and ap): which photos fail;
- `<json name>_worst.png`: the --worst N photos by that score (default 8): photo, truth,
  prediction and a map of the errors (missed object, object where there is none, wrong class),
  each titled with its file and score;
- with `--report`, `<json name>_report.html`: all of it on one page that opens offline (the
  per-image table sortable by any column, the learning curves of the model's run).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from unet_tf import data, report as report_page
from unet_tf.inference import postprocess
from unet_tf.cli import add_tta_argument, command_parser, non_negative_int, run_command
from unet_tf.config import DATASETS, LABEL_MODES, ConfigError
from unet_tf.evaluation import (
    chose_the_model,
    evaluate_split,
    evaluation_config,
    evaluation_data,
    format_groups,
    format_objects,
    format_report,
    group_scores,
    per_image_scores,
    score_objects,
    scores_objects,
)
from unet_tf.run.outputs import REPORT_FORMAT, check_report_file, file_sha256, make_folder
from unet_tf.files import write_json
from unet_tf.run.model_file import load_model_safely


def main(argv=None) -> int:
    return run_command(_main, argv)


def build_parser():
    """The command line of this command (every option with its help)."""
    parser = command_parser("unet_tf.evaluate", __doc__)
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True, help="a model.keras from a training run")
    postprocess.add_argument(model)
    add_tta_argument(model)
    data = parser.add_argument_group("data", "default: the run's own, its validation part")
    data.add_argument("--dataset", choices=DATASETS, help="the data's source")
    data.add_argument("--data-dir", help="a local oxford_iiit_pet copy or an images/+masks/ folder")
    data.add_argument("--labels", choices=LABEL_MODES, help="how masks map to classes")
    data.add_argument("--classes", nargs="+", metavar="NAME",
                      help="with --labels index: the class names in mask-value order")
    data.add_argument("--split", help="split to evaluate, e.g. test, train[80%%:]")
    data.add_argument("--full-resolution", action="store_true",
                      help="compare masks at each photo's own size, predicted as predict and the "
                           "export do (always so for --resize none models; default: at the "
                           "model's size, as training's validation)")
    data.add_argument("--group-by", metavar="REGEX",
                      help="also score each group of photos: the first match of this regular "
                           "expression in a file stem (its group 1 if it has one), or breed for "
                           "the Oxford-IIIT Pet breed; e.g. --group-by 'patient(\\d+)'")
    output = parser.add_argument_group("output")
    output.add_argument("--json", help="a new file for the metrics, or an earlier report to "
                                       "replace (default: beside the model, named after the split)")
    output.add_argument("--worst", type=non_negative_int, default=8, metavar="N",
                        help="picture the N photos with the lowest score (default: %(default)s; "
                             "0: none)")
    output.add_argument("--report", action="store_true",
                        help="also write <json name>_report.html: scores, confusion matrix, "
                             "curves, the per-image table and the worst photos on one page")
    return parser


def _main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    postprocess.check(args.postprocess)
    if args.json:  # before any work
        check_report_file(Path(args.json), _outputs(Path(args.json)).values())
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
    outputs = _outputs(json_path)
    check_report_file(json_path, outputs.values())
    print(data.summary(split, config.class_names))
    raw, per_image = None, None
    if scores_objects(config):  # objects too: one prediction gives the masks and the objects
        raw, _, _, per_image, objects = score_objects(model, info, config, split, full, policy,
                                                      args.tta)
    report, cm, predicted = evaluate_split(model, split, config.class_names, steps, args.tta,
                                           policy, predicted=raw)
    if per_image is not None:
        report["objects"] = objects
    report["chose_the_model"] = chose_the_model(info.config, args.split)
    if args.group_by:
        groups = data.example_groups(dataclasses.replace(config, group_by=args.group_by),
                                     split.names)
        report["groups"] = group_scores(groups, split.masks, predicted, config.class_names)
    report = {"format": REPORT_FORMAT, **report, "resolution": "full" if full else "model",
              "policy": (policy or info.policy).to_dict(), "model": str(model_path),
              "dataset": config.dataset, "data_dir": config.data_dir,
              "confusion_matrix": cm.tolist(), "skipped": [list(s) for s in split.skipped]}
    make_folder(json_path.parent, "--json")
    written = report_page.write_evaluation_files(
        outputs, report, cm, split, predicted, config.class_names, args.worst, args.report,
        curves=model_path.with_name("curves.png"),  # the model's run, when it has one
        title=f"{model_path.parent.name}: {report['split']}", config=info.config,
        rows=per_image_scores(split.names, split.masks, predicted, config.class_names, per_image))
    # The files' checksums: a later evaluate replaces them only while they are these.
    report["files_sha256"] = {path.name: file_sha256(path) for path in written.values()}
    write_json(json_path, report)
    print(format_report(report, config.class_names))
    if "objects" in report:
        print(format_objects(report["objects"]))
    if args.group_by:
        print(format_groups(report["groups"], config.class_names))
    print(f"metrics: {json_path}")
    for kind, path in written.items():
        print(f"{report_page.FILES[kind]}: {path}")
    return 0


def _outputs(json_path: Path) -> dict:
    """The files evaluate writes beside `json_path`, by kind."""
    return {kind: json_path.with_name(f"{json_path.stem}_{kind}") for kind in report_page.FILES}


if __name__ == "__main__":
    sys.exit(main())
