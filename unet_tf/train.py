"""Train the U-Net and leave a run folder with the best model, its history, curves and predictions.

    # offline, in minutes on a CPU: synthetic pets
    python -m unet_tf.train --preset quickstart

    # the real photographs of a local copy (here the 400-image sample), from scratch
    python -m unet_tf.train --data-dir ../shared/data/oxford-pets-sample --encoder-weights none \
        --image-size 128 --batch-size 16 --epochs 15

    # the tutorial's recipe on oxford_iiit_pet (downloads the data and ImageNet weights; a GPU helps)
    python -m unet_tf.train

    # your own images/ and masks/ (0/255 masks), a fifth held out for validation
    python -m unet_tf.train --dataset folder --data-dir my_data --labels binary \
        --validation-fraction 0.2 --encoder-weights none

The run folder (`--run-dir`, or a new folder under runs/) ends with config.json, history.csv,
model.keras (the best epoch by validation mean Dice), curves.png, predictions.png, metrics.json and
TensorBoard logs in logs/. With --average-weights (on in the small-data preset) model.keras is the
mean of the weights of the best epoch and of the epochs after it, and best_epoch.keras keeps the
best epoch.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from unet_tf.cli import command_parser
from unet_tf import averaging, data, plots
from unet_tf import resume as resume_lib
from unet_tf.config import Config, ConfigError, add_config_flags, config_from_args
from unet_tf.evaluate import evaluate_split
from unet_tf.distribute import (is_chief, make_strategy, prepare_multi_worker_fit,
                                shard_by_data)
from unet_tf.model import WeightsUnavailableError, set_encoder_trainable
from unet_tf.training import StopOnDivergence, TrainingDiverged, build_model, compile_model
from unet_tf.run_files import AtomicModelCheckpoint, save_model_atomically, write_json

# MultiWorkerMirroredStrategy's class is named after its implementation.
STRATEGY_NAMES = {"CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy"}
MONITOR = "val_dice"  # early stopping and checkpointing follow validation mean Dice
PREDICTION_EXAMPLES = 6


def check_run_dir(run_dir: str) -> None:
    """A run folder given must be new or empty: never mix two runs' files."""
    path = Path(run_dir)
    if run_dir and path.exists() and (not path.is_dir() or any(path.iterdir())):
        hint = (f"; to continue the run it holds: python -m unet_tf.train --resume {path}"
                if (path / "config.json").is_file() else "")
        raise ConfigError(f"--run-dir {path} is not empty (it may hold another run); give a new "
                          f"folder or empty this one{hint}")


def make_run_dir(run_dir: str, config: Config) -> Path:
    """The folder given (must be new or empty), or a new timestamped folder under runs/."""
    if run_dir:
        check_run_dir(run_dir)
        path = Path(run_dir)
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{stamp}-{config.dataset}-{config.image_size}px"
        suffix = 1
        while path.exists():
            suffix += 1
            path = Path("runs") / f"{stamp}-{config.dataset}-{config.image_size}px-{suffix}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _progress_verbosity() -> int:
    """Keras progress bars in terminals and notebooks; one line per epoch in log files."""
    return 1 if sys.stdout.isatty() or "ipykernel" in sys.modules else 2


def train(config: Config, run_dir: str | Path | None = None, verbose=None, callbacks=(),
          resume: bool = False, splits: tuple | None = None) -> Path:
    """Trains as `config` says and returns the run folder.

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
    if not resume and is_chief():
        check_run_dir(str(run_dir or config.run_dir))  # before any work
    config = with_seed(config)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    if splits is None:
        data.ensure_available(config)  # offline, the data and the weights fail in seconds
    strategy = make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    if replicas > 1:
        name = STRATEGY_NAMES.get(type(strategy).__name__, type(strategy).__name__)
        print(f"{name}: {replicas} replicas x batch {config.batch_size} = "
              f"global batch {global_batch}; learning rate "
              f"{config.learning_rate * (replicas if config.scale_learning_rate else 1):g}")
    train_split, val_split = splits or data.load_splits(config)
    for split in (train_split, val_split):
        print(data.summary(split, config.class_names))
    steps_per_epoch = -(-len(train_split) // global_batch)
    model = build_model(config, strategy, steps_per_epoch)

    chief = is_chief()
    state = None
    if not chief:
        # Other workers train in step with the chief but write into a scratch folder.
        run = Path(tempfile.mkdtemp(prefix="unet_tf-worker-"))
        initial_epoch, restored = 0, None
    elif resume:
        run = Path(run_dir)
        state = resume_lib.read_state(run)
        initial_epoch, restored = _restore(model, run, state, config, strategy)
        print(f"resuming {run} after epoch {initial_epoch}")
    else:
        run = make_run_dir(str(run_dir or config.run_dir), config)
        write_json(run / "config.json", config.to_dict())
        initial_epoch, restored = 0, None
        print(f"run folder: {run}")
    train_batches = shard_by_data(data.make_dataset(
        train_split.images, train_split.masks, global_batch, training=True,
        shuffle_buffer=config.shuffle_buffer, augment=config.augment, seed=config.seed,
        augment_scale=config.augment_scale, augment_rotation=config.augment_rotation,
        augment_color=config.augment_color,
        drop_remainder=isinstance(strategy, tf.distribute.TPUStrategy)))
    val_batches = shard_by_data(data.make_dataset(val_split.images, val_split.masks, global_batch,
                                                  training=False))
    prepare_multi_worker_fit(model, strategy, (
        tf.zeros([global_batch, config.image_size, config.image_size, 3]),
        tf.zeros([global_batch, config.image_size, config.image_size], tf.int32)))
    state_callback = resume_lib.EpochState(run, early_stopping=None,
                                           extra=(state or {}).get("extra", {}) if resume else {})
    early_stopping = resume_lib.ResumableEarlyStopping(
        monitor=MONITOR, mode="max", patience=config.patience, restore_best_weights=True,
        verbose=1, restored=restored)
    state_callback.early_stopping = early_stopping
    averager = averaging.PlateauAverage(early_stopping, run / resume_lib.FOLDER,
                                        state_callback.extra) if config.average_weights else None
    project_callbacks = [
        StopOnDivergence(),  # first: the half-finished epoch must not reach the checkpoints
        AtomicModelCheckpoint(run / "model.keras", monitor=MONITOR, mode="max",
                              save_best_only=True,
                              initial_value_threshold=restored and restored["best"]),
        early_stopping,
        *([averager] if averager else []),  # after early stopping, which names the best epoch
        keras.callbacks.CSVLogger(run / "history.csv", append=resume),
        keras.callbacks.TensorBoard(run / "logs"),
        state_callback,  # last: it records what the others did
    ]
    started = time.perf_counter()
    diverged = False
    fit_callbacks = project_callbacks + list(callbacks)
    try:
        if "fine_tune_from" not in state_callback.extra:
            model.fit(train_batches, validation_data=val_batches, epochs=config.epochs,
                      initial_epoch=initial_epoch, callbacks=fit_callbacks, verbose=verbose,
                      shuffle=False)
        if config.fine_tune_epochs:
            start = state_callback.extra.get("fine_tune_from")
            if start is None:  # phase one just ended (early or not)
                start = len(read_history(run / "history.csv")["loss"])
                _start_fine_tuning(model, config, strategy, early_stopping, project_callbacks)
                if averager:  # phase two starts again from the best epoch
                    averager.start_from(model.get_weights(), early_stopping.best_epoch)
                state_callback.extra["fine_tune_from"] = start
            print(f"fine-tuning the whole model from epoch {start + 1} for up to "
                  f"{config.fine_tune_epochs} epochs at learning rate "
                  f"{config.fine_tune_learning_rate:g}")
            model.fit(train_batches, validation_data=val_batches,
                      epochs=start + config.fine_tune_epochs,
                      initial_epoch=max(start, initial_epoch), callbacks=fit_callbacks,
                      verbose=verbose, shuffle=False)
    except KeyboardInterrupt:
        state = resume_lib.read_state(run)
        done = state["epochs_completed"] if state else 0
        print(f"\ninterrupted: {done} epoch(s) completed and saved; continue with\n"
              f"  python -m unet_tf.train --resume {run}", file=sys.stderr)
        raise
    except TrainingDiverged:
        diverged = True
    seconds = time.perf_counter() - started
    history = read_history(run / "history.csv")
    advice = "Lower --learning-rate (e.g. by 10x) and check the data."
    if diverged and not (run / "model.keras").is_file():
        raise TrainingDiverged(f"the loss became NaN or infinite in the first epoch; no model was "
                               f"saved. {advice}")
    averaged = None
    if averager and not diverged and averager.count > 1:
        averaged = _average_weights(model, averager, run, config, train_split, val_split)
    elif averager:
        print("weights not averaged: " + ("training diverged" if diverged else
                                          "the best epoch was the last one"))
    if diverged or isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # After divergence the weights in memory are the diverged ones; across workers every
        # worker would predict the whole split and gather all of it. The best model is on disk.
        model = keras.models.load_model(run / "model.keras", safe_mode=True)
    report = finish_run(model, run, config, val_split, history, seconds, averaged)
    resume_lib.mark_finished(run)
    if not chief:
        shutil.rmtree(run, ignore_errors=True)
    if diverged:
        raise TrainingDiverged(
            f"the loss became NaN or infinite in epoch {len(history['loss']) + 1}; training "
            f"stopped. The best model (epoch {report['best_epoch']}) is kept in "
            f"{run / 'model.keras'} and its reports are written. {advice}")
    return run


def with_seed(config: Config) -> Config:
    """`config` with a seed: its own, or a new one drawn now (and said, so it can be repeated)."""
    if config.seed is not None:
        return config
    if config.strategy == "multi_worker":
        raise ConfigError("--strategy multi_worker needs --seed, the same on every worker, so "
                          "that every worker shuffles and augments the data alike")
    seed = secrets.randbelow(2**31)
    print(f"seed {seed} (drawn for this run; --seed {seed} repeats it)")
    return dataclasses.replace(config, seed=seed)


def _average_weights(model, averager, run: Path, config: Config, train_split, val_split) -> dict:
    """Replaces the best epoch's weights in `model` and model.keras by the plateau's mean; the
    best epoch's model is kept as best_epoch.keras. Returns what metrics.json records of it."""
    first, last = averager.epochs
    print(f"averaging the weights of epochs {first}-{last} and measuring BatchNorm statistics on "
          f"{len(train_split)} training examples")
    copy = averaging.one_device_copy(model)  # holds the best epoch's weights
    best_scores, _, _ = evaluate_split(copy, val_split, config.class_names)
    averaging.apply_average(copy, averager, train_split.images, config.batch_size)
    model.set_weights(copy.get_weights())
    # --resume of a run stopped from here on puts best_epoch.keras back first (see _restore).
    save_model_atomically(model, run / "model.keras", keep_old_as=run / "best_epoch.keras")
    return {"epochs": [first, last],
            "best_epoch_validation": {key: best_scores[key] for key in
                                      ("mean_dice", "mean_iou", "pixel_accuracy", "dice")}}


def _unfreeze_for_fine_tuning(model, config: Config, strategy) -> None:
    """Unfreezes the encoder (not its BatchNorm) and recompiles at the fine-tuning rate."""
    with strategy.scope():
        set_encoder_trainable(model, True)
        compile_model(model, dataclasses.replace(config, learning_rate=config.fine_tune_learning_rate,
                                                 lr_schedule="constant", warmup_epochs=0))


def _start_fine_tuning(model, config: Config, strategy, early_stopping, callbacks) -> None:
    """Phase two: unfreeze the encoder (not its BatchNorm), recompile at the fine-tuning rate,
    and carry the early-stopping state over so that only a better epoch counts as best."""
    restored = {"best": early_stopping.best, "wait": 0, "best_epoch": early_stopping.best_epoch,
                "best_weights": early_stopping.best_weights}
    _unfreeze_for_fine_tuning(model, config, strategy)
    early_stopping.restored = restored
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.CSVLogger):
            callback.append = True


def _restore(model: keras.Model, run: Path, state: dict | None, config: Config,
             strategy) -> tuple:
    """(initial epoch, early-stopping state) of an interrupted run, with the model's weights and
    optimizer state put back."""
    if state is None:
        raise ConfigError(f"--resume {run}: no saved state ({run / resume_lib.FOLDER}/state.json); "
                          "the run stopped before its first epoch ended: start it again")
    if state["finished"]:
        raise ConfigError(f"--resume {run}: this run finished; its results are in {run}")
    if "fine_tune_from" in state.get("extra", {}):  # it was fine-tuning
        _unfreeze_for_fine_tuning(model, config, strategy)
    model.optimizer.build(model.trainable_variables)
    model.load_weights(run / resume_lib.FOLDER / state["weights"])
    if (run / "best_epoch.keras").is_file():  # stopped while averaging: the best epoch goes back
        os.replace(run / "best_epoch.keras", run / "model.keras")
    resume_lib.truncate_history(run / "history.csv", state["epochs_completed"])
    restored = dict(state["early_stopping"])
    best = run / "model.keras"
    if best.is_file():
        restored["best_weights"] = keras.models.load_model(best, safe_mode=True).get_weights()
    return state["epochs_completed"], restored


def read_history(path: Path) -> dict:
    """history.csv as {column: [float per epoch]}."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})
            if key != "epoch"}


def finish_run(model, run: Path, config: Config, val_split, history: dict, seconds: float,
               averaged: dict | None = None) -> dict:
    """Evaluates the final model on validation and writes metrics.json, curves and predictions.
    `averaged`: how the weights were averaged, when they were."""
    scores, _, predicted = evaluate_split(model, val_split, config.class_names)
    best_epoch = int(np.nanargmax(history[MONITOR])) + 1
    report = {**scores, "best_epoch": best_epoch, "epochs_run": len(history["loss"]),
              "training_seconds": round(seconds, 1),
              **({"averaged_weights": averaged} if averaged else {})}
    write_json(run / "metrics.json", report)
    plots.plot_curves(history, run / "curves.png", MONITOR, averaged and averaged["epochs"])
    picks = np.linspace(0, len(val_split) - 1, min(PREDICTION_EXAMPLES, len(val_split))).astype(int)
    plots.plot_predictions(val_split.images[picks], val_split.masks[picks], predicted[picks],
                           config.class_names, run / "predictions.png",
                           titles=[val_split.names[i] for i in picks])

    per_class = ", ".join(f"{name} {value:.3f}" for name, value in scores["dice"].items()
                          if value is not None)
    which = (f"weights averaged over epochs {averaged['epochs'][0]}-{averaged['epochs'][1]} "
             f"(best epoch alone: mean Dice {averaged['best_epoch_validation']['mean_dice']:.3f})"
             if averaged else f"best epoch {best_epoch}")
    print(f"\n{which}, {len(history['loss'])} epochs ({seconds:.0f} s): validation "
          f"mean Dice {scores['mean_dice']:.3f} ({per_class}), mean IoU {scores['mean_iou']:.3f}, "
          f"pixel accuracy {scores['pixel_accuracy']:.3f}")
    print(f"run folder: {run}")
    for name in ("model.keras", *(["best_epoch.keras"] if averaged else []), "config.json",
                 "history.csv", "metrics.json", "curves.png", "predictions.png", "logs"):
        print(f"  {run / name}")
    return report


def main(argv=None) -> int:
    parser = command_parser("unet_tf.train", __doc__)
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run from its last completed epoch (its "
                             "config.json decides everything else)")
    add_config_flags(parser)
    args = parser.parse_args(argv)
    try:
        if args.resume:
            given = [f for f in vars(args) if f not in ("resume", "preset")
                     and getattr(args, f) is not None]
            if given:
                raise ConfigError(f"--resume continues a run with its own config.json; drop "
                                  f"{', '.join('--' + g.replace('_', '-') for g in given)}")
            run = Path(args.resume)
            if not (run / "config.json").is_file():
                raise ConfigError(f"--resume {run}: no config.json there; is it a run folder?")
            train(Config.load(run / "config.json"), run_dir=run, resume=True)
        else:
            train(config_from_args(args))
    except (ConfigError, data.DataError, WeightsUnavailableError, FileNotFoundError,
            TrainingDiverged) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if not isinstance(error, TrainingDiverged) else 3
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
