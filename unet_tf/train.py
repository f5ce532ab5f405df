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
TensorBoard logs in logs/.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from unet_tf import data, losses, metrics, plots
from unet_tf.config import Config, ConfigError, add_config_flags, config_from_args
from unet_tf.evaluate import evaluate_split
from unet_tf.model import WeightsUnavailableError, build_unet
from unet_tf.run_files import AtomicModelCheckpoint, write_json

MONITOR = "val_dice"  # early stopping and checkpointing follow validation mean Dice
PREDICTION_EXAMPLES = 6


def make_run_dir(run_dir: str, config: Config) -> Path:
    """The folder given (must be new or empty), or a new timestamped folder under runs/."""
    if run_dir:
        path = Path(run_dir)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(
                f"--run-dir {path} is not empty (it may hold another run); give a new folder or "
                "empty this one"
            )
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{stamp}-{config.dataset}-{config.image_size}px"
        suffix = 1
        while path.exists():
            suffix += 1
            path = Path("runs") / f"{stamp}-{config.dataset}-{config.image_size}px-{suffix}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def use_mixed_precision(config: Config) -> bool:
    if config.mixed_precision == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return config.mixed_precision == "on"


def build_model(config: Config) -> keras.Model:
    """The U-Net for a `Config`, compiled with its optimizer, loss and metrics.

    Under mixed precision the layers compute in float16 and keep float32 weights; the logits
    layer stays float32. The global Keras policy is restored before returning.
    """
    previous = keras.mixed_precision.global_policy()
    if use_mixed_precision(config):
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _build_model(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return model


def _build_model(config: Config) -> keras.Model:
    model = build_unet(
        input_size=config.image_size, num_classes=config.num_classes,
        encoder_weights=config.encoder_weights, freeze_encoder=config.freeze_encoder,
        alpha=config.alpha, decoder_filters=config.decoder_filters, dropout=config.dropout,
        encoder_bn_momentum=config.encoder_bn_momentum,
    )
    compile_model(model, config)
    return model


def compile_model(model: keras.Model, config: Config) -> None:
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(config.learning_rate)
    model.compile(
        optimizer=optimizer, loss=losses.loss_from_config(config),
        metrics=metrics.metrics_for(config.class_names),
        # XLA pays off on GPUs; on CPUs it made training steps several times slower.
        jit_compile=bool(tf.config.list_physical_devices("GPU")),
    )


def _progress_verbosity() -> int:
    """Keras progress bars in terminals and notebooks; one line per epoch in log files."""
    return 1 if sys.stdout.isatty() or "ipykernel" in sys.modules else 2


def train(config: Config, run_dir: str | Path | None = None, verbose=None) -> Path:
    """Trains as `config` says and returns the run folder."""
    verbose = _progress_verbosity() if verbose is None else verbose
    keras.utils.set_random_seed(config.seed)
    model = build_model(config)  # first: a missing weights file fails in seconds
    train_split, val_split = data.load_splits(config)
    for split in (train_split, val_split):
        print(data.summary(split, config.class_names))

    run = make_run_dir(str(run_dir or config.run_dir), config)
    write_json(run / "config.json", config.to_dict())
    print(f"run folder: {run}")
    train_batches = data.make_dataset(train_split.images, train_split.masks, config.batch_size,
                                      training=True, shuffle_buffer=config.shuffle_buffer,
                                      augment=config.augment, seed=config.seed)
    val_batches = data.make_dataset(val_split.images, val_split.masks, config.batch_size,
                                    training=False)
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        AtomicModelCheckpoint(run / "model.keras", monitor=MONITOR, mode="max",
                              save_best_only=True),
        keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=config.patience,
                                      restore_best_weights=True, verbose=1),
        keras.callbacks.CSVLogger(run / "history.csv"),
        keras.callbacks.TensorBoard(run / "logs"),
    ]
    started = time.perf_counter()
    history = model.fit(train_batches, validation_data=val_batches, epochs=config.epochs,
                        callbacks=callbacks, verbose=verbose, shuffle=False).history
    seconds = time.perf_counter() - started

    scores, _, predicted = evaluate_split(model, val_split, config.class_names)
    best_epoch = int(np.nanargmax(history[MONITOR])) + 1
    report = {**scores, "best_epoch": best_epoch, "epochs_run": len(history["loss"]),
              "training_seconds": round(seconds, 1)}
    write_json(run / "metrics.json", report)
    plots.plot_curves(history, run / "curves.png", MONITOR)
    picks = np.linspace(0, len(val_split) - 1, min(PREDICTION_EXAMPLES, len(val_split))).astype(int)
    plots.plot_predictions(val_split.images[picks], val_split.masks[picks], predicted[picks],
                           config.class_names, run / "predictions.png",
                           titles=[val_split.names[i] for i in picks])

    per_class = ", ".join(f"{name} {value:.3f}" for name, value in scores["dice"].items()
                          if value is not None)
    print(f"\nbest epoch {best_epoch} of {len(history['loss'])} ({seconds:.0f} s): validation "
          f"mean Dice {scores['mean_dice']:.3f} ({per_class}), mean IoU {scores['mean_iou']:.3f}, "
          f"pixel accuracy {scores['pixel_accuracy']:.3f}")
    print(f"run folder: {run}")
    for name in ("model.keras", "config.json", "history.csv", "metrics.json", "curves.png",
                 "predictions.png", "logs"):
        print(f"  {run / name}")
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unet_tf.train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    add_config_flags(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        train(config)
    except (ConfigError, data.DataError, WeightsUnavailableError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
