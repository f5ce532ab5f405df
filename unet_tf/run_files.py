"""The files of a run folder: writing them atomically, and reading a model with what describes it.

A file is written to a temporary name beside its target and renamed over it, so a crash leaves
either the old complete file or the new complete one, never a half-written file that looks whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import keras

from unet_tf.config import CLASS_NAMES, Config


def atomic_write_bytes(path, content: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path, value) -> None:
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def _tmp_keras_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp.keras")  # Keras insists on the .keras suffix


def save_model_atomically(model: keras.Model, path, keep_old_as=None) -> None:
    """Saves `model` to `path` through a temporary file; with `keep_old_as`, the file it replaces
    is first renamed to that path."""
    path = Path(path)
    tmp = _tmp_keras_path(path)
    model.save(tmp)
    if keep_old_as and path.exists():
        os.replace(path, keep_old_as)
    os.replace(tmp, path)


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint, writing each new best model to a temporary name and renaming it
    over `filepath`: a crash mid-save never leaves a truncated model.keras."""

    def __init__(self, filepath, **kwargs):
        self.final_path = Path(filepath)
        super().__init__(str(_tmp_keras_path(self.final_path)), **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        tmp = _tmp_keras_path(self.final_path)
        if tmp.exists():
            os.replace(tmp, self.final_path)


@dataclasses.dataclass
class RunInfo:
    """What a model needs beside its weights: classes, input size, and where it came from."""

    class_names: tuple
    input_size: int
    labels: str
    config: dict
    metrics: dict


def load_model_safely(path) -> tuple:
    """(model, RunInfo) for a `model.keras`, loaded in Keras' safe mode (no arbitrary code).

    `config.json` and `metrics.json` beside the model describe it; without them the classes are
    inferred from the number of outputs (3: the trimap classes, 2: background/pet).
    """
    path = Path(path)
    if not path.is_file():
        hint = " (a SavedModel folder is for serving; give the model.keras it came from)" \
            if path.is_dir() else ""
        raise FileNotFoundError(f"--model {path}: no such model file{hint}")
    if path.suffix != ".keras":
        raise ValueError(f"--model {path}: expected a .keras file written by unet_tf.train")
    model = keras.models.load_model(path, safe_mode=True)
    size, classes = int(model.input_shape[1]), int(model.output_shape[-1])
    config_path, metrics_path = path.with_name("config.json"), path.with_name("metrics.json")
    if config_path.is_file():
        config = Config.load(config_path)
        info = RunInfo(config.class_names, size, config.labels, config.to_dict(), {})
    else:
        labels = {3: "trimap", 2: "binary"}.get(classes, "index")
        names = CLASS_NAMES.get(labels, tuple(f"class_{i}" for i in range(classes)))
        info = RunInfo(names, size, labels, {}, {})
    if len(info.class_names) != classes:
        raise ValueError(f"{config_path} names {len(info.class_names)} classes but the model has "
                         f"{classes} outputs")
    if metrics_path.is_file():
        info.metrics = json.loads(metrics_path.read_text())
    return model, info
