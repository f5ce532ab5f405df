"""What a training run will do, decided once, before anything is written: every automatic choice
of the configuration made concrete from the data and the machine, printed as one block, saved as
plan.json in the run folder, and obeyed by everything after it (and by --resume).

    >>> plan = make_plan(preset("quickstart"))
    >>> print(plan.block())          # what `python -m unet_tf.train --dry-run` prints
    >>> plan.config.seed, plan.policy.native, plan.steps_per_epoch

The choices, in the order they are made:
    seed          the configuration's, or one drawn now (said, so that it can be repeated);
    resize        auto becomes squash, or native-resolution patches with a scale, a patch side and
                  crops per image, from the objects in the training masks (data/policy.py);
    devices       the tf.distribute strategy, its replicas and the global batch;
    examples      counted from the lists and folders (no photo read), then steps per epoch, and the
                  epochs that make --train-steps;
    cache         where the training photos live between epochs, from their estimated size;
    precision     mixed float16 and XLA on a GPU, float32 without XLA on a CPU.
The plan's configuration has none of them left on auto: `--config runs/RUN/config.json` repeats
the run as planned.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from unet_tf import data, training
from unet_tf.config import Config, ConfigError
from unet_tf.data import streaming
from unet_tf.data.policy import Policy
from unet_tf.distribute import make_strategy, resolve_strategy
from unet_tf.files import write_json

# What the configuration's precision option is set to for each Keras dtype policy.
PRECISION_OPTIONS = {"mixed_float16": "on", "mixed_bfloat16": "bfloat16", "float32": "off"}
STRATEGY_NAMES = {"default": "one device", "mirrored": "MirroredStrategy",
                  "multi_worker": "MultiWorkerMirroredStrategy", "tpu": "TPUStrategy"}


@dataclasses.dataclass(frozen=True)
class Plan:
    """A training run's decisions. `config` has every automatic option made concrete; the rest
    is what follows from it on this machine and this data."""

    config: Config
    replicas: int
    train_examples: int
    val_examples: int | None  # None: no validation
    steps_per_epoch: int
    cache_bytes: int  # the training photos as arrays, estimated before any is decoded
    budget_bytes: int
    notes: tuple = ()  # why: each automatic choice said in a line

    @property
    def policy(self) -> Policy:
        """How photos meet the model (the resize policy)."""
        return Policy.from_config(self.config)

    @property
    def global_batch(self) -> int:
        return self.config.batch_size * self.replicas

    @property
    def learning_rate(self) -> float:
        scale = self.replicas if self.config.scale_learning_rate else 1
        return self.config.learning_rate * scale

    @property
    def streamed(self) -> bool:
        return self.config.cache != "memory"

    def with_usable(self, train_examples: int) -> "Plan":
        """The plan once the training photos are read, when some pairs proved unusable: steps
        per epoch (and the epochs of --train-steps) follow the examples there are."""
        if train_examples == self.train_examples:
            return self
        planned = _schedule(self.config, self.train_examples, self.replicas)[2]
        steps, config, note = _schedule(self.config, train_examples, self.replicas)
        notes = tuple(n for n in self.notes if n != planned)
        return dataclasses.replace(
            self, config=config, train_examples=train_examples, steps_per_epoch=steps,
            notes=notes + ((note,) if note else ()) + (
                f"{train_examples} of the {self.train_examples} training examples listed are "
                f"usable: {steps} steps per epoch",))

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["config"] = self.config.to_dict()
        values["notes"] = list(self.notes)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "Plan":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in fields},
                      "config": Config.from_dict(values["config"]),
                      "notes": tuple(values.get("notes", ()))})

    def save(self, path) -> None:
        """plan.json: the plan, and the block the run printed (as lines, to read)."""
        write_json(path, {**self.to_dict(), "block": self.block().splitlines()})

    @classmethod
    def load(cls, path) -> "Plan":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (ValueError, TypeError, KeyError) as error:
            raise ConfigError(f"{path} is not a usable plan ({error})") from None

    def block(self, seconds_per_step: float | None = None) -> str:
        """The plan as a short block of lines, as a run prints it before it starts."""
        c = self.config
        policy = self.policy
        source = c.dataset + (f" from {c.data_dir}" if c.data_dir else "")
        validation = ("none (--val-split none)" if self.val_examples is None else
                      f"{self.val_examples} examples ("
                      + (f"{c.validation_fraction:.0%} of {c.train_split}, "
                         f"{f'whole groups by --group-by {c.group_by}' if c.group_by else 'by name'})"
                         if c.validation_fraction else f"{c.val_split})"))
        if policy.native:
            fit = (f"native resolution x {c.scale:g}, {c.patch_size or c.model_size} px crops "
                   f"({c.crops_per_image} per photo an epoch); {c.model_size} px tiles at "
                   f"prediction")
        else:
            fit = f"{c.resize} to {c.image_size} px" + (
                f", {c.patch_size} px crops" if c.patch_size else "")
        where = {"memory": "held in memory", "disk": "cached on disk in the run folder",
                 "none": "read from the files every epoch"}[c.cache]
        total = self.steps_per_epoch * c.epochs
        lines = [
            "what this run will do:",
            f"  data       {source}",
            f"  examples   {self.train_examples} training ({c.train_split}); validation "
            f"{validation}",
            f"  photos     {fit}",
            f"  cache      {where}: about {self.cache_bytes / 2**20:,.0f} MiB as arrays (budget "
            f"{self.budget_bytes / 2**20:,.0f} MiB)",
            f"  devices    {STRATEGY_NAMES.get(c.strategy, c.strategy)}, {self.replicas} "
            f"replica(s) x batch {c.batch_size} = global batch {self.global_batch}; learning "
            f"rate {self.learning_rate:g}",
            f"  precision  {training.precision_policy(c)}, XLA {c.xla}",
            f"  schedule   up to {c.epochs} epochs x {self.steps_per_epoch} steps = {total} steps"
            + (f"; early stopping after {c.patience} epochs without a better validation Dice"
               if c.validates else "")
            + (f"; then up to {c.fine_tune_epochs} fine-tuning epochs" if c.fine_tune_epochs
               else ""),
            f"  seed       {c.seed}",
        ]
        if seconds_per_step:
            lines.append(f"  duration   about {_duration(seconds_per_step * total)} at most "
                         f"({seconds_per_step:.3f} s a step, measured on this machine)")
        lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)


def make_plan(config: Config, strategy=None) -> Plan:
    """The plan of a training run of `config` on this machine (`strategy`: the tf.distribute
    strategy, when one is made already). Reads the lists and folders of the data and the headers
    of local photos; decodes no photo except the few masks resize auto looks at; writes
    nothing."""
    return plan_and_strategy(config, strategy)[0]


def plan_and_strategy(config: Config, strategy=None) -> tuple:
    """(`make_plan`'s plan, the tf.distribute strategy): `strategy` when given, else the one made
    to count the replicas (multi_worker, tpu), else None (default and mirrored are counted without
    making one)."""
    notes = []
    config = _with_seed(config, notes)
    measure_intensity = config.intensity == "auto" and config.dataset == "folder"
    if measure_intensity or not data.policy.is_chosen(config):
        files = data.list_files(config, config.train_split)
        for choose in (data.choose_resize, data.choose_intensity):
            config, message = choose(config, files)
            if message:
                notes.append(message)
    config = dataclasses.replace(config, strategy=resolve_strategy(config.strategy))
    if strategy is None:
        replicas, strategy = _replicas(config)
    else:
        replicas = strategy.num_replicas_in_sync
    train_examples, val_examples, files = data.planned_sizes(config)
    config = _patch_steps(config, notes)
    steps, config, note = _schedule(config, train_examples, replicas)
    if note:
        notes.append(note)
    config, cache_bytes, budget = _cache(config, files, train_examples)
    config = dataclasses.replace(
        config, mixed_precision=PRECISION_OPTIONS[training.precision_policy(config)],
        xla="on" if training.use_xla(config) else "off")
    return Plan(config, replicas, train_examples, val_examples, steps, cache_bytes, budget,
                tuple(notes)), strategy


def _with_seed(config: Config, notes: list) -> Config:
    if config.seed is not None:
        return config
    if config.strategy == "multi_worker":
        raise ConfigError("--strategy multi_worker needs --seed, the same on every worker, so "
                          "that every worker shuffles and augments the data alike")
    seed = secrets.randbelow(2**31)
    notes.append(f"seed {seed} drawn for this run; --seed {seed} repeats it")
    return dataclasses.replace(config, seed=seed)


def _replicas(config: Config) -> tuple:
    """(replicas of the strategy, the strategy where it had to be made to count them, else
    None): counted without making it where that is possible."""
    if config.strategy == "default":
        return 1, None
    if config.strategy == "mirrored":
        return max(len(tf.config.list_logical_devices("GPU")), 1), None
    strategy = make_strategy(config.strategy)
    return strategy.num_replicas_in_sync, strategy


def measure_step_seconds(plan: Plan, steps: int = 3) -> float:
    """Seconds a training step of the planned model takes on this machine: `steps` steps on
    random batches of the global batch's shape, after one that builds the graph. The encoder's
    weights are not loaded (the same work, and nothing is downloaded)."""
    config = dataclasses.replace(plan.config, encoder_weights="none")
    model = training.training_model(training.build_model(config, steps_per_epoch=1), config)
    side = config.patch_size or config.model_size
    rng = np.random.default_rng(0)
    images = rng.random((plan.global_batch, side, side, 3), np.float32)
    masks = rng.integers(0, config.num_classes, (plan.global_batch, side, side)).astype(np.int32)
    model.train_on_batch(images, masks)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, masks)
    return (time.perf_counter() - started) / steps


def _patch_steps(config: Config, notes: list) -> Config:
    """The config with --patch-train-steps made its --train-steps where the photos train as
    native-resolution patches; turned off either way, so config.json says what was trained."""
    steps = config.patch_train_steps
    if not steps:
        return config
    if Policy.from_config(config).native:
        instead = (f"--train-steps {config.train_steps}" if config.train_steps
                   else f"--epochs {config.epochs}")
        notes.append(f"--patch-train-steps {steps}: native-resolution patches train {steps} "
                     f"steps in place of {instead} (every patch epoch also validates each photo "
                     "tile by tile)")
        return dataclasses.replace(config, train_steps=steps, patch_train_steps=0)
    return dataclasses.replace(config, patch_train_steps=0)


def _schedule(config: Config, train_examples: int, replicas: int) -> tuple:
    """(steps per epoch, config with the epochs of --train-steps, what was decided or None)."""
    steps = -(-train_examples * config.crops_per_image // (config.batch_size * replicas))
    if not config.train_steps:
        return steps, config, None
    epochs = max(-(-config.train_steps // steps), config.warmup_epochs + 1)
    return steps, dataclasses.replace(config, epochs=epochs), (
        f"--train-steps {config.train_steps}: {epochs} epochs of {steps} steps")


def _cache(config: Config, files, train_examples: int) -> tuple:
    """(config with the cache chosen, estimated bytes, budget bytes): photos of local files may
    be streamed (see streaming.py); tfds and synthetic data are always held in memory."""
    budget = streaming.budget_bytes(config)
    if files is None:
        return (dataclasses.replace(config, cache="memory"),
                train_examples * config.image_size ** 2 * 4, budget)
    cache, need = streaming.choose_cache(config, files)
    return dataclasses.replace(config, cache=cache), need, budget


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
