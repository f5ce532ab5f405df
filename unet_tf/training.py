"""What training needs besides the data: the compiled model, its numeric settings, and the guard
against a diverging loss.

    >>> from unet_tf.config import preset
    >>> from unet_tf.training import build_model
    >>> model = build_model(preset("quickstart"))   # built and compiled as train() does

`precision_policy` and `use_xla` turn the configuration's `auto` into what this machine gets:
mixed float16 and XLA on a GPU, float32 without XLA on a CPU (both measured: see docs/speed.md).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading

import keras
import tensorflow as tf

from unet_tf import losses, metrics
from unet_tf.config import Config
from unet_tf.data.policy import Policy
from unet_tf.model import batch_norm_layers, build_unet, flexible_twin


def gpu_available() -> bool:
    """Whether TensorFlow sees a GPU: what `auto` precision and XLA decide on."""
    return bool(tf.config.list_physical_devices("GPU"))


def precision_policy(config: Config) -> str:
    """The Keras dtype policy the model is built under: `mixed_float16` for `on` (and for `auto`
    on a GPU), `mixed_bfloat16` for `bfloat16` (TPUs; CPUs with fast bfloat16 units), `float32`
    otherwise."""
    if config.mixed_precision == "bfloat16":
        return "mixed_bfloat16"
    if config.mixed_precision == "on" or (config.mixed_precision == "auto" and gpu_available()):
        return "mixed_float16"
    return "float32"


def use_xla(config: Config) -> bool:
    """XLA pays off on GPUs; on this project's CPU it made training steps 2.5-5x slower. Not
    with deterministic ops, which XLA does not all provide."""
    if config.deterministic or config.xla == "off":
        return False
    return config.xla == "on" or gpu_available()


def build_model(config: Config, strategy: tf.distribute.Strategy | None = None,
                steps_per_epoch: int | None = None) -> keras.Model:
    """The U-Net for a `Config`, compiled with its optimizer, loss and metrics.

    Under mixed precision the layers compute in float16 (or bfloat16) and keep float32 weights;
    the logits layer stays float32. The global Keras policy is restored before returning. With a
    strategy of several replicas everything is built in its scope, BatchNorm statistics are
    synchronized across replicas, and with `scale_learning_rate` the learning rate is multiplied by
    their number.
    `steps_per_epoch` lays out a cosine learning-rate schedule (without it: the peak rate).
    """
    strategy = strategy or tf.distribute.get_strategy()
    with _precision(config), strategy.scope():
        model = build_unet(
            input_size=config.model_size, num_classes=config.num_classes,
            encoder_weights=config.encoder_weights, freeze_encoder=config.freeze_encoder,
            alpha=config.alpha, decoder_filters=config.decoder_filters,
            dropout=config.dropout, encoder_bn_momentum=config.encoder_bn_momentum)
        replicas = strategy.num_replicas_in_sync
        if replicas > 1:
            for layer in batch_norm_layers(model):
                layer.synchronized = True
        compile_model(model, config, replicas if config.scale_learning_rate else 1,
                      steps_per_epoch)
    return model


def training_model(model: keras.Model, config: Config, strategy=None,
                   steps_per_epoch: int | None = None) -> keras.Model:
    """The model `fit` trains: `model` itself, or when training on crops smaller than its input
    its twin of any input size (the same layers and weights), compiled as `model` is. `model`
    stays the one saved and served, at its size."""
    if not Policy.from_config(config).trains_on_smaller_crops:
        return model
    strategy = strategy or tf.distribute.get_strategy()
    with _precision(config), strategy.scope():
        twin = flexible_twin(model)
        replicas = strategy.num_replicas_in_sync
        compile_model(twin, config, replicas if config.scale_learning_rate else 1,
                      steps_per_epoch)
    return twin


@contextlib.contextmanager
def _precision(config: Config):
    """The configuration's Keras dtype policy while models are built and compiled (restored
    after)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision_policy(config))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def make_learning_rate(config: Config, scale: float = 1, steps_per_epoch: int | None = None):
    """The configured learning rate: a number, or a cosine schedule over the training steps."""
    peak = config.learning_rate * scale
    if config.lr_schedule == "constant":
        return peak
    if not steps_per_epoch:
        return peak  # a model built to look at, not to train: train() always knows the steps
    warmup = config.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else peak, decay_steps=max(config.epochs * steps_per_epoch - warmup, 1),
        warmup_steps=warmup, warmup_target=peak if warmup else None)


def compile_model(model: keras.Model, config: Config, learning_rate_scale: float = 1,
                  steps_per_epoch: int | None = None) -> None:
    learning_rate = make_learning_rate(config, learning_rate_scale, steps_per_epoch)
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    model.compile(
        optimizer=optimizer, loss=losses.loss_from_config(config),
        metrics=metrics.metrics_for(config.class_names),
        jit_compile=use_xla(config),
        steps_per_execution=config.steps_per_execution,
    )


class StopOnCtrlC(keras.callbacks.Callback):
    """Ctrl-C while training raises KeyboardInterrupt at the end of the running batch, from this
    callback, the last of the list: every other callback has then finished its epoch (the
    history and the resume state agree), and nothing swallows it. Python's own handler raises
    wherever the program happens to be, which can be a finalizer that ignores it; then Ctrl-C did
    nothing. A second Ctrl-C raises at once. SIGTERM, with which schedulers and Colab stop a job,
    is taken as Ctrl-C. Use as a context manager around `fit`: it holds the SIGINT and SIGTERM
    handlers for that long (in the main thread only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        super().__init__()
        self.pressed = False
        self._previous = {}

    def _handler(self, signum, frame):
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handler)
                              for number in self.SIGNALS}
        return self

    def __exit__(self, *exc_info):
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}

    def _check(self, *args, **kwargs):
        if self.pressed:
            self.pressed = False
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_end = _check


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the best model saved before stays as it was."""


class StopOnDivergence(keras.callbacks.Callback):
    """Raises `TrainingDiverged` at the first batch whose loss is NaN or infinite.

    Raising at once, not at the end of the epoch, keeps the half-finished epoch away from the
    checkpoints. (Keras' `TerminateOnNaN` raises only from Keras 3.13 on.)
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(f"the loss became {float(loss)} at batch {batch + 1}")
