r"""Train the U-Net and leave a run folder with the best model, its history, curves and predictions.

    # offline, in minutes on a CPU: synthetic pets
    python -m unet_tf.train --preset quickstart

    # the tutorial's recipe (downloads oxford_iiit_pet and the ImageNet weights; a GPU helps)
    python -m unet_tf.train --preset tutorial

    # from random weights on a local copy of Oxford-IIIT Pet (its images/ and annotations/):
    # check the recipe on a held-out part, then train the final model on every training photo
    python -m unet_tf.train --preset small-data --data-dir data/oxford-iiit-pet
    python -m unet_tf.train --preset small-data --data-dir data/oxford-iiit-pet --val-split none

    # your own images/ and masks/ (0/255 or 0/1 masks); first only what the run will do
    python -m unet_tf.train --preset own-data --data-dir my_data --labels binary --dry-run
    python -m unet_tf.train --preset own-data --data-dir my_data --labels binary
    python -m unet_tf.train --preset own-data --data-dir my_data --labels index \
        --classes background road building

    # continue a run that was killed or interrupted
    python -m unet_tf.train --resume runs/RUN

The run folder (`--run-dir`, or a new folder under runs/) ends with config.json, plan.json,
history.csv, model.keras (the best epoch by validation mean Dice; see --average-weights and
--val-split), curves.png, predictions.png, metrics.json, report.html with per_image.csv,
worst.png and confusion.png (the validation photos one by one, as `evaluate --report` writes
them), train.log (everything the run printed, a line per epoch; appended to by --resume) and
TensorBoard logs in logs/. Every option at more length: docs/options.md.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from unet_tf import averaging, data, plots
from unet_tf import report as report_page
from unet_tf.cli import command_parser, run_command
from unet_tf.config import Config, ConfigError, add_config_flags, config_from_args
from unet_tf.data import streaming
from unet_tf.distribute import (
    is_chief,
    make_strategy,
    prepare_multi_worker_fit,
    shard_by_data,
)
from unet_tf.data import Policy
from unet_tf.evaluation import (
    evaluate_split,
    per_image_scores,
    photo_title,
    score_column,
    training_min_object_size,
)
from unet_tf.inference import predict_masks
from unet_tf.model import set_encoder_trainable
from unet_tf.previews import EpochPreview
from unet_tf.run.log import HistoryLogger, TrainLog
from unet_tf.run.resume import EpochState, ResumableEarlyStopping, truncate_history
from unet_tf.plan import Plan, make_plan, measure_step_seconds, plan_and_strategy
from unet_tf.run import (
    BEST_EPOCH,
    CONFIG,
    HISTORY,
    METRICS,
    MODEL,
    PLAN,
    TRAIN_LOG,
    Run,
    best_epoch,
    check_new_run_dir,
    open_run,
    read_history,
)
from unet_tf.files import save_model_atomically, write_json
from unet_tf.run.model_file import AtomicModelCheckpoint, load_keras_model, read_run_config
from unet_tf.training import (
    StopOnCtrlC,
    StopOnDivergence,
    TrainingDiverged,
    build_model,
    compile_model,
    training_model,
)

MONITOR = "val_dice"  # early stopping and checkpointing follow validation mean Dice
PREDICTION_EXAMPLES = 6
WORST_EXAMPLES = 8  # the validation photos with the lowest scores, in worst.png and report.html
DIVERGED_ADVICE = "Lower --learning-rate (e.g. by 10x) and check the data."


def train(config: Config, run_dir: str | Path | None = None, verbose=None, callbacks=(),
          resume: bool = False, splits: tuple | None = None) -> Path:
    """Trains as `config` says and returns the run folder.

    Every automatic choice is made first, by `plan.make_plan`, printed, and saved as plan.json in
    the run folder; a resumed run obeys its saved plan. Everything printed meanwhile is also kept
    in the run folder's train.log (appended to by a resumed run).

    Args:
        config: Config. What to train and how.
        run_dir: str or Path. The run folder (default: config.run_dir, else a new one in runs/).
        verbose: Keras' fit verbosity (default: progress bars in terminals and notebooks).
        callbacks: extra Keras callbacks, run after the project's own.
        resume: bool. Continue the run in `run_dir` from its last completed epoch.
        splits: (train, validation) `data.Split`s already loaded for this config (default: load).

    Raises:
        TrainingDiverged: the loss became NaN or infinite (reports of the best model so far are
            still written when an epoch had completed).
    """
    verbose = _progress_verbosity() if verbose is None else verbose
    with TrainLog() as log:
        return _train(config, run_dir, verbose, callbacks, resume, splits, log)


def _train(config: Config, run_dir, verbose, callbacks, resume: bool, splits, log: TrainLog
           ) -> Path:
    """`train`, printing into `log` (opened in the run folder as soon as there is one)."""
    if not resume and is_chief():
        check_new_run_dir(str(run_dir or config.run_dir))  # before any download
    if splits is None:
        data.ensure_available(config)  # offline, the download fails in seconds
    saved = Path(run_dir or "") / PLAN
    if resume and saved.is_file():
        plan, strategy = Plan.load(saved), None
        _check_unchanged(config, plan, Path(run_dir))
    else:
        plan, strategy = plan_and_strategy(config)  # the strategy, where planning made it
    config = plan.config
    print(plan.block())
    with open_run(config, run_dir, resume) as run:
        log.open(run.path, resumed_after=run.state.epochs_completed if run.resumed else None)
        print(f"{'resuming' if run.resumed else 'run folder:'} {run.path}"
              + (f" after epoch {run.state.epochs_completed}" if run.resumed else ""))
        plan.save(run.path / PLAN)
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        if strategy is None:
            strategy = make_strategy(config.strategy)
        if strategy.num_replicas_in_sync != plan.replicas:
            raise ConfigError(f"the plan of {run.path} is for {plan.replicas} replica(s); this "
                              f"machine has {strategy.num_replicas_in_sync}")
        train_split, val_split = splits or _load_data(plan, run.path)
        for split in (train_split, val_split):
            if split is not None:
                print(data.summary(split, config.class_names))
        if groups := data.groups_line(config, train_split, val_split):  # with --group-by
            print(groups)
        if len(train_split) != plan.train_examples:
            plan = plan.with_usable(len(train_split))
            print(plan.notes[-1])
            plan.save(run.path / PLAN)
            write_json(run.path / CONFIG, plan.config.to_dict())
            config = plan.config
        global_batch, steps = plan.global_batch, plan.steps_per_epoch
        if val_split is None:
            print(f"no validation (--val-split none): every training example trains for all "
                  f"{config.epochs} epochs, without early stopping; model.keras is written when "
                  "training ends")
        model = build_model(config, strategy, steps_per_epoch=steps)  # saved and served
        trainer = training_model(model, config, strategy, steps)  # fit (a twin for crops)
        batches = _batches(plan, strategy, train_split, val_split)
        side = config.patch_size or config.model_size
        prepare_multi_worker_fit(trainer, strategy, (
            tf.zeros([global_batch, side, side, 3]), tf.zeros([global_batch, side, side], tf.int32)))
        kit = Callbacks.for_run(run, config, model)
        if run.resumed:
            _restore(run, trainer, kit, config, strategy)
        previews = [_epoch_preview(config, val_split, train_split, run.path)
                    ] if config.epoch_previews else []
        started = time.perf_counter()
        diverged = fit_phases(trainer, run, config, strategy, kit, batches,
                              kit.callbacks + previews + list(callbacks) + [kit.owner], verbose)
        try:
            _finish(run, model, config, strategy, kit, (train_split, val_split),
                    time.perf_counter() - started, diverged)
        except KeyboardInterrupt:
            print(f"\ninterrupted after training, while averaging weights or writing the "
                  f"reports: {run.state.epochs_completed} epoch(s) are saved; finish with\n"
                  f"  python -m unet_tf.train --resume {run.path}", file=sys.stderr)
            raise
    return run.path


def _check_unchanged(config: Config, plan: Plan, run: Path) -> None:
    """A resumed run obeys its plan: refuses a config.json edited since the run started."""
    now, then = (json.loads(json.dumps(c.to_dict())) for c in (config, plan.config))
    changed = sorted(key for key in now if now[key] != then.get(key))
    if changed:
        raise ConfigError(
            f"--resume {run}: {CONFIG} differs from the run's {PLAN} in "
            f"{', '.join(f'{k} ({then.get(k)!r} -> {now[k]!r})' for k in changed[:5])}; a run "
            f"continues as it started: put {CONFIG} back as it was, or train a new run with "
            f"--config {run / CONFIG} --run-dir NEW_RUN_DIR")


def _load_data(plan: Plan, run_path: Path) -> tuple:
    """(train, validation) splits; the training split streamed from its files, or from a disk
    cache in the run folder, as the plan says."""
    cache = plan.config.cache
    return data.load_splits(plan.config, stream=cache != "memory",
                            cache_dir=run_path / "cache" if cache == "disk" else None)


def _progress_verbosity() -> int:
    """Keras progress bars in terminals and notebooks; one line per epoch in log files."""
    return 1 if sys.stdout.isatty() or "ipykernel" in sys.modules else 2


def _batches(plan: Plan, strategy, train_split, val_split) -> tuple:
    """(training, validation) datasets, each worker taking its share of the batches."""
    config, global_batch = plan.config, plan.global_batch
    crops = dict(patch_size=config.patch_size or config.model_size,
                 foreground_crops=config.foreground_crops, crops_per_image=config.crops_per_image,
                 background=data.background_class(config))
    if train_split.streamed:
        training = streaming.make_streamed_dataset(
            train_split, config, global_batch, config.seed, augment=config.augment,
            augment_scale=config.augment_scale, augment_rotation=config.augment_rotation,
            augment_color=config.augment_color,
            drop_remainder=isinstance(strategy, tf.distribute.TPUStrategy), **crops)
    else:
        training = data.make_dataset(
            train_split.images, train_split.masks, global_batch, training=True,
            shuffle_buffer=config.shuffle_buffer, augment=config.augment, seed=config.seed,
            augment_scale=config.augment_scale, augment_rotation=config.augment_rotation,
            augment_color=config.augment_color,
            drop_remainder=isinstance(strategy, tf.distribute.TPUStrategy), **crops)
    if val_split is None:
        return shard_by_data(training), None
    validation = data.make_dataset(val_split.images, val_split.masks, global_batch,
                                   training=False, **crops)
    return shard_by_data(training), shard_by_data(validation)


@dataclasses.dataclass
class Callbacks:
    """The project's callbacks of a run. `callbacks` go first in `fit`'s list, the user's after
    them, and `owner` last of all: it saves what all the others did in the epoch."""

    early_stopping: ResumableEarlyStopping | None  # None without validation
    averager: averaging.PlateauAverage | None
    owner: EpochState
    callbacks: list

    @classmethod
    def for_run(cls, run: Run, config: Config, model) -> "Callbacks":
        """The callbacks of `run`; `model` is the one model.keras saves (fit may train a twin)."""
        # Without validation there is no best epoch: every epoch runs, the last quarter averaged.
        averager = None
        if config.average_weights:
            averager = averaging.PlateauAverage(
                0 if config.validates else averaging.tail_start(config.epochs))
        early_stopping, checkpoint = None, []
        if config.validates:
            early_stopping = ResumableEarlyStopping(
                monitor=MONITOR, mode="max", patience=config.patience, restore_best_weights=True,
                verbose=1, on_new_best=[averager.new_best] if averager else [],
                uncounted=lambda logs: predicts_one_class(logs, config.class_names))
            checkpoint = [AtomicModelCheckpoint(  # after a restart, only a better epoch replaces it
                run.path / MODEL, model_to_save=model, monitor=MONITOR, mode="max",
                save_best_only=True,
                initial_value_threshold=run.state.callbacks.get("early_stopping", {}).get("best"))]
        stateful = [c for c in (early_stopping, averager) if c]
        callbacks = [
            StopOnDivergence(),  # at the first bad batch: the epoch never reaches the files
            *checkpoint,
            *stateful,
            HistoryLogger(run.path / HISTORY, append=True),  # epochs from 1
            keras.callbacks.TensorBoard(run.path / "logs"),
        ]
        return cls(early_stopping, averager, EpochState(run.path, run.state, stateful), callbacks)


def predicts_one_class(logs: dict, class_names) -> bool:
    """Whether validation found (at most) one class: every other class's Dice is 0, as when a
    model with rare objects still predicts background everywhere. Early stopping waits for more:
    such an epoch says nothing yet of what the model can learn."""
    found = [logs.get(f"val_dice_{name}", 1.0) > 0 for name in class_names]
    return sum(found) <= 1


def fit_phases(model, run: Run, config: Config, strategy, kit: Callbacks, batches: tuple,
               callbacks: list, verbose) -> bool:
    """Trains the remaining epochs of each phase: the configured epochs, then with
    `fine_tune_epochs` the whole model at the fine-tuning rate. Returns whether training
    diverged (the best model saved before stays)."""
    training, validation = batches

    def fit(first: int, end: int) -> None:
        with StopOnCtrlC() as ctrl_c:
            model.fit(training, validation_data=validation, initial_epoch=first, epochs=end,
                      callbacks=[*callbacks, ctrl_c], verbose=verbose, shuffle=False)

    state = run.state
    try:
        if state.fine_tune_from is None:
            fit(state.epochs_completed, config.epochs)
            if not config.fine_tune_epochs:
                return False
            _start_fine_tuning(model, config, strategy, kit, state.epochs_completed)
            state.fine_tune_from = state.epochs_completed
        print(f"fine-tuning the whole model from epoch {state.fine_tune_from + 1} for up to "
              f"{config.fine_tune_epochs} epochs at learning rate "
              f"{config.fine_tune_learning_rate:g}")
        fit(state.epochs_completed, state.fine_tune_from + config.fine_tune_epochs)
    except TrainingDiverged:
        return True
    except KeyboardInterrupt:
        done = state.epochs_completed
        print("\ninterrupted before the first epoch ended: nothing was saved" if not done else
              f"\ninterrupted: {done} epoch(s) completed and saved; continue with\n"
              f"  python -m unet_tf.train --resume {run.path}", file=sys.stderr)
        raise
    return False


def _unfreeze_for_fine_tuning(model, config: Config, strategy) -> None:
    """Unfreezes the encoder (not its BatchNorm) and recompiles at the fine-tuning rate."""
    with strategy.scope():
        set_encoder_trainable(model, True)
        compile_model(model, dataclasses.replace(
            config, learning_rate=config.fine_tune_learning_rate, lr_schedule="constant",
            warmup_epochs=0))


def _start_fine_tuning(model, config: Config, strategy, kit: Callbacks, epoch: int) -> None:
    """Phase two: the encoder unfrozen (not its BatchNorm), the fine-tuning rate; early stopping
    goes on from its best epoch (only a better one counts) with a fresh patience, and the weight
    average starts again from the best epoch's weights."""
    values, arrays = kit.early_stopping.state()
    kit.early_stopping.restore({**values, "wait": 0}, arrays)
    _unfreeze_for_fine_tuning(model, config, strategy)
    if kit.averager:
        kit.averager.start_from(model.get_weights(), kit.early_stopping.best_epoch)


def _restore(run: Run, model, kit: Callbacks, config: Config, strategy) -> None:
    """Puts an interrupted run back as its last completed epoch left it."""
    if run.state.fine_tune_from is not None:
        _unfreeze_for_fine_tuning(model, config, strategy)
    kit.owner.restore(model)
    truncate_history(run.path / HISTORY, run.state.epochs_completed)


def _finish(run: Run, model, config: Config, strategy, kit: Callbacks, splits: tuple,
            seconds: float, diverged: bool) -> None:
    """Averages the weights (when asked), writes the reports and marks the run finished."""
    train_split, val_split = splits
    if diverged and val_split is None and run.state.epochs_completed:
        kit.owner.restore(model)  # without validation: the last completed epoch
        save_model_atomically(model, run.path / MODEL)
    if diverged and not (run.path / MODEL).is_file():
        raise TrainingDiverged(f"the loss became NaN or infinite in the first epoch; no model was "
                               f"saved. {DIVERGED_ADVICE}")
    averaged = None
    if kit.averager and not diverged and kit.averager.count > 1:
        averaged = _average_weights(model, kit.averager, run, config, train_split, val_split)
    elif kit.averager:
        print("weights not averaged: " + ("training diverged" if diverged else
                                          "the best epoch was the last one" if val_split
                                          else "the last quarter of the epochs is one epoch"))
    if val_split is None and not averaged and not diverged:
        save_model_atomically(model, run.path / MODEL)  # the last epoch
    if diverged or isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # After divergence the weights in memory are the diverged ones; across workers every
        # worker would predict the whole split and gather all of it. The best model is on disk.
        model = load_keras_model(run.path / MODEL)
    history = read_history(run.path / HISTORY)
    best = best_epoch(history) if val_split is not None else None
    if val_split is None:
        write_unvalidated_reports(model, run.path, config, train_split, history, seconds, averaged)
    else:
        write_reports(model, run.path, config, val_split, history, best, seconds, averaged)
    if config.labels == "instance":
        _record_min_object_size(run.path, config, train_split)
    kit.owner.finish()
    if diverged:
        raise TrainingDiverged(
            f"the loss became NaN or infinite in epoch {len(history['loss']) + 1}; training "
            f"stopped. The best model (epoch {best}) is kept in {run.path / MODEL} and its "
            f"reports are written. {DIVERGED_ADVICE}")


def _record_min_object_size(run: Path, config: Config, train_split) -> None:
    """Adds to metrics.json the smallest object predict and evaluate keep when they separate
    objects (`min_object_size`, chosen from the training objects), and says it."""
    size = training_min_object_size(config, train_split)
    metrics_path = run / METRICS
    write_json(metrics_path, {**json.loads(metrics_path.read_text()), "min_object_size": size})
    if size is not None:
        print(f"objects: fragments under {size} px are merged into a touching object or dropped "
              "when objects are separated (a quarter of the 5th-percentile training object; "
              "predict --min-object-size overrides it)")


def _average_weights(model, averager, run: Run, config: Config, train_split, val_split) -> dict:
    """Replaces the best epoch's weights in `model` and model.keras by the plateau's mean; the
    best epoch's model is kept as best_epoch.keras. Returns what metrics.json records of it."""
    first, last = averager.epochs
    print(f"averaging the weights of epochs {first}-{last} and measuring BatchNorm statistics on "
          f"{len(train_split)} training examples")
    copy = averaging.one_device_copy(model)  # the best epoch's weights (the last one's without
    best_scores = None                        # validation, which has no best epoch to keep)
    if val_split is not None:
        best_scores, _, _ = evaluate_split(copy, val_split, config.class_names,
                                           policy=validation_policy(config))
    averaging.apply_average(copy, averager, _batch_norm_images(config, train_split),
                            config.batch_size)
    model.set_weights(copy.get_weights())
    save_model_atomically(model, run.path / MODEL,
                          keep_old_as=run.path / BEST_EPOCH if best_scores else None)
    if not best_scores:
        return {"epochs": [first, last]}
    return {"epochs": [first, last],
            "best_epoch_validation": {key: best_scores[key] for key in
                                      ("mean_dice", "mean_iou", "pixel_accuracy", "dice")}}


def validation_policy(config: Config) -> Policy:
    """How validation photos, as a split holds them, meet the model: those of resize none are
    already scaled (the split holds them so)."""
    return Policy.from_config(config).for_stored_photos()


def _batch_norm_images(config: Config, split) -> np.ndarray:
    """uint8 [N, S, S, 3] images to measure BatchNorm statistics on: the split's, or for photos
    of any sizes their tiles of the model's size (a sample of a streamed split), shuffled with
    the run's seed. Batches mix photos as training's do: the statistics are means of batch
    statistics, and a batch of one photo's tiles has too small a variance."""
    if split.streamed:
        images = streaming.sample_images(split, config)
    elif not isinstance(split.images, list):
        images = split.images
    else:
        images = np.stack([tile for image, mask in zip(split.images, split.masks)
                           for tile in data.geometry.tiles(image, mask, config.model_size, 0)[0]])
    return images[np.random.default_rng(config.seed).permutation(len(images))]


def write_reports(model, run: Path, config: Config, val_split, history: dict, best: int,
                  seconds: float, averaged: dict | None = None) -> dict:
    """Evaluates the final model on validation and writes metrics.json, curves and predictions.
    `averaged`: how the weights were averaged, when they were."""
    scores, cm, predicted = evaluate_split(model, val_split, config.class_names,
                                           policy=validation_policy(config))
    report = {**scores, "best_epoch": best, "epochs_run": len(history["loss"]),
              "training_seconds": round(seconds, 1),
              **({"averaged_weights": averaged} if averaged else {})}
    write_json(run / METRICS, report)
    plots.plot_curves(history, run / "curves.png", best, averaged and averaged["epochs"],
                      config.class_names)
    picks = plots.spread(len(val_split), PREDICTION_EXAMPLES)
    rows = per_image_scores(val_split.names, val_split.masks, predicted, config.class_names)
    column = score_column(config.class_names)
    plots.plot_predictions([val_split.images[i] for i in picks],
                           [val_split.masks[i] for i in picks], [predicted[i] for i in picks],
                           config.class_names, run / "predictions.png",
                           titles=[photo_title(rows[i], column) for i in picks])
    # The validation photos one by one, the worst of them, and all of it on one page.
    report_page.write_evaluation_files(
        {kind: run / kind for kind in report_page.FILES}, scores, cm, val_split, predicted,
        config.class_names, WORST_EXAMPLES, curves=run / "curves.png",
        title=f"{run.name}: validation", config=config.to_dict(), rows=rows)

    per_class = ", ".join(f"{name} {value:.3f}" for name, value in scores["dice"].items()
                          if value is not None)
    which = (f"weights averaged over epochs {averaged['epochs'][0]}-{averaged['epochs'][1]} "
             f"(best epoch alone: mean Dice {averaged['best_epoch_validation']['mean_dice']:.3f})"
             if averaged else f"best epoch {best}")
    print(f"\n{which}, {len(history['loss'])} epochs ({seconds:.0f} s): validation "
          f"mean Dice {scores['mean_dice']:.3f} ({per_class}), mean IoU {scores['mean_iou']:.3f}, "
          f"pixel accuracy {scores['pixel_accuracy']:.3f}")
    if best == len(history["loss"]):
        print(f"the best epoch is the last one: {plots.STILL_IMPROVING}")
    _list_files(run, [MODEL, *([BEST_EPOCH] if averaged else [])], list(report_page.FILES))
    return report


def write_unvalidated_reports(model, run: Path, config: Config, train_split, history: dict,
                              seconds: float, averaged: dict | None = None) -> dict:
    """metrics.json, curves and predictions of a run without validation (--val-split none): what
    it trained, and the model's masks of a few training photos (no measure of quality)."""
    report = {"validation": None, "best_epoch": None, "epochs_run": len(history["loss"]),
              "training_seconds": round(seconds, 1),
              **({"averaged_weights": averaged} if averaged else {})}
    write_json(run / METRICS, report)
    plots.plot_curves(history, run / "curves.png", None, averaged and averaged["epochs"],
                      config.class_names)
    names, images, masks = _some_examples(train_split, config, PREDICTION_EXAMPLES)
    native = Policy.from_config(config).native  # photos of any sizes, else at the model's size
    predicted = predict_masks(model, images if native else np.stack(images),
                              policy=validation_policy(config))
    plots.plot_predictions(images, masks, predicted, config.class_names, run / "predictions.png",
                           titles=[f"{name} (trained on)" for name in names])
    which = (f"weights averaged over epochs {averaged['epochs'][0]}-{averaged['epochs'][1]}"
             if averaged else "the last epoch's weights")
    print(f"\n{which}, {len(history['loss'])} epochs ({seconds:.0f} s), no validation: score "
          f"the model on photos it never saw with\n  python -m unet_tf.evaluate --model "
          f"{run / MODEL} --split SPLIT")
    _list_files(run, [MODEL])
    return report


def _some_examples(split, config: Config, count: int) -> tuple:
    """(names, images, masks) of `count` examples spread over `split` (of a streamed split, its
    first ones, read from their files)."""
    if split.streamed:
        pairs = list(streaming.examples(split, config, False, None).take(count)
                     .as_numpy_iterator())
        return ([f.name for f in split.files[:len(pairs)]], [i for i, _ in pairs],
                [m for _, m in pairs])
    picks = plots.spread(len(split), count)
    return ([split.names[i] for i in picks], [split.images[i] for i in picks],
            [split.masks[i] for i in picks])


def _epoch_preview(config: Config, val_split, train_split, run_path: Path) -> EpochPreview:
    """--epoch-previews: the first validation photo (a training photo without validation)."""
    names, images, masks = _some_examples(val_split or train_split, config, 1)
    return EpochPreview(names[0] + ("" if val_split else " (trained on)"), images[0], masks[0],
                        config.class_names, validation_policy(config), run_path / "previews")


def _list_files(run: Path, models: list, reports=()) -> None:
    print(f"run folder: {run}")
    for name in (*models, "config.json", HISTORY, METRICS, "curves.png", "predictions.png",
                 *reports, TRAIN_LOG, "logs"):
        print(f"  {run / name}")


def main(argv=None) -> int:
    return run_command(_main, argv)


def build_parser():
    """The command line of this command (every option with its help)."""
    parser = command_parser("unet_tf.train", __doc__)
    parser.usage = "%(prog)s [--preset NAME] [--config FILE] [OPTION ...]"  # all of them below
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run from its last completed epoch (its "
                             "config.json decides everything else)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what the run will do (its plan: every automatic choice "
                             "made, with a duration measured from a few training steps on random "
                             "data) and exit, having written nothing")
    parser.add_argument("--show-config", action="store_true",
                        help="print the resolved configuration (preset, --config, flags) as JSON "
                             "and exit")
    add_config_flags(parser)
    return parser


def _main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.show_config:
        config = config_from_args(args)
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    try:
        if args.dry_run:
            plan = _dry_run(args)
            print(plan.block(measure_step_seconds(plan)))
            return 0
        if args.resume:
            given = [f for f in vars(args)
                     if f not in ("resume", "preset", "show_config", "dry_run")
                     and getattr(args, f) not in (None, False)]
            if given:
                raise ConfigError(f"--resume continues a run with its own config.json; drop "
                                  f"{', '.join('--' + g.replace('_', '-') for g in given)}")
            run = Path(args.resume)
            if not (run / CONFIG).is_file():
                raise ConfigError(f"--resume {run}: no {CONFIG} there; is it a run folder?")
            train(read_run_config(run / CONFIG), run_dir=run, resume=True)
        else:
            train(config_from_args(args))
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0


def _dry_run(args) -> Plan:
    """The plan `train` would make (or, with --resume, the one the run saved), made without
    writing a file."""
    if args.resume:
        saved = Path(args.resume) / PLAN
        if saved.is_file():
            return Plan.load(saved)
        return make_plan(read_run_config(Path(args.resume) / CONFIG))
    config = config_from_args(args)
    if is_chief():
        check_new_run_dir(str(config.run_dir))
    return make_plan(config)


if __name__ == "__main__":
    sys.exit(main())
