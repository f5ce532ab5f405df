"""A run's model file: saved whole at each better epoch, and read back safely with what describes
it (`RunInfo`: classes, input size, the run's configuration and its resize policy).

    >>> model, info = load_model_safely("runs/pets/model.keras")
    >>> masks = predict_masks(model, photos, policy=info.policy)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import zipfile
from pathlib import Path

import keras

from unet_tf.config import CLASS_NAMES, Config, labels_for
from unet_tf.data.policy import Policy
from unet_tf.errors import UserError
from unet_tf.files import ensure_free_space, temporary_path, variables_bytes
from unet_tf.images import parse_intensity


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint, writing each new best model to a temporary name and renaming it
    over `filepath`: a crash mid-save never leaves a truncated model.keras, and a failed save
    (a full disk) leaves no temporary file behind."""

    def __init__(self, filepath, model_to_save=None, **kwargs):
        self.final_path = Path(filepath)
        self.model_to_save = model_to_save  # when fit trains a twin sharing its weights
        super().__init__(str(temporary_path(self.final_path)), **kwargs)

    def set_model(self, model):
        super().set_model(self.model_to_save or model)

    def on_epoch_end(self, epoch, logs=None):
        tmp = temporary_path(self.final_path)
        ensure_free_space(self.final_path, variables_bytes(self.model.weights))
        try:
            super().on_epoch_end(epoch, logs)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if tmp.exists():  # a better epoch was saved
            os.replace(tmp, self.final_path)


@dataclasses.dataclass
class RunInfo:
    """What a model needs beside its weights: classes, input size, and where it came from."""

    class_names: tuple
    input_size: int
    labels: str
    config: dict
    metrics: dict

    @property
    def policy(self) -> Policy:
        """How photos meet the model: the run's resize policy, or squash without a run."""
        if not self.config:
            return Policy(size=self.input_size)
        return Policy.from_config(Config.from_dict(self.config), size=self.input_size)

    @property
    def intensity(self) -> tuple | None:
        """(low, high): how the run maps photos with more than 8 bits a channel to 0..255
        (`--intensity`, measured on its training photos), or None: each photo by its own
        percentiles (a run of 8-bit photos, or one made before runs recorded it)."""
        return parse_intensity(self.config.get("intensity", "auto")) if self.config else None


class ModelFileError(UserError):
    """A model file that cannot be loaded: missing, damaged, unsafe or not one of ours."""


# A .keras file is a zip; Keras unpacks config.json into memory and the weights to a file. A model
# of this project holds well under these sizes: larger members are refused unread.
MAX_CONFIG_BYTES = 16 * 2**20
MAX_UNPACKED_BYTES = 4 * 2**30
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first bytes of every .h5 file (Keras 2's format)


def check_keras_file(path: Path) -> None:
    """Refuses a path that is not a complete, reasonably sized .keras archive, before Keras reads
    it."""
    if not path.is_file():
        hint = (" (a SavedModel folder is for serving; give the model.keras it came from)"
                if path.is_dir() else "")
        raise ModelFileError(f"--model {path}: no such model file{hint}")
    if path.suffix != ".keras":
        raise ModelFileError(f"--model {path}: expected a .keras file written by unet_tf.train")
    with open(path, "rb") as handle:
        if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            raise ModelFileError(f"--model {path}: an HDF5 (.h5) file named .keras; give the "
                                 "model.keras that unet_tf.train wrote (a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info.file_size for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelFileError(f"--model {path}: not a complete .keras file ({error}); it may be "
                             "truncated: copy it again") from None
    if "config.json" not in members:
        raise ModelFileError(f"--model {path}: a zip without config.json, not a Keras model")
    if members["config.json"] > MAX_CONFIG_BYTES or sum(members.values()) > MAX_UNPACKED_BYTES:
        raise ModelFileError(
            f"--model {path}: unpacks to {sum(members.values()) / 2**30:.1f} GiB (config.json "
            f"{members['config.json'] / 2**20:.0f} MiB), far beyond any model of this project; "
            "refused")


# What the config.json of a unet_tf model may name: the Keras classes its U-Net, optimizers, losses
# and metrics are made of, by their registered names, and this package's own registered objects.
# Keras' safe mode refuses Lambda layers, but Keras before 3.11 let a config call any function of
# a Keras module by reference (keras.utils.get_file: a download into any folder), and later
# releases fixed further ways around it (TFSMLayer, 3.14): a file is read against this list before
# Keras sees it, so whatever Keras lets through next, only what our models contain is built.
ALLOWED_KERAS_CLASSES = frozenset({
    # the model: MobileNetV2's encoder, the pix2pix decoder, the head
    "Functional", "Sequential", "Model", "InputLayer", "Conv2D", "Conv2DTranspose",
    "DepthwiseConv2D", "BatchNormalization", "ReLU", "Add", "Concatenate", "ZeroPadding2D",
    "Rescaling", "Dropout", "Activation", "Softmax", "RandomFlip", "DTypePolicy",
    "FloatDTypePolicy",
    # how its weights start and are regularized
    "GlorotUniform", "GlorotNormal", "HeNormal", "HeUniform", "Ones", "Zeros", "Constant",
    "RandomNormal", "RandomUniform", "TruncatedNormal", "VarianceScaling", "L1", "L2", "L1L2",
    # how it is compiled
    "Adam", "AdamW", "SGD", "LossScaleOptimizer", "CosineDecay", "MeanIoU", "IoU",
    "SparseCategoricalAccuracy", "SparseCategoricalCrossentropy", "Mean",
})
# Values that Keras writes as typed objects of no code: the functional graph's tensors, constants.
ALLOWED_VALUE_TYPES = frozenset({"__keras_tensor__", "__tensor__", "__numpy__"})
# Activations are written by name ("relu"), or by reference to keras.activations.
ALLOWED_ACTIVATIONS = frozenset({"linear", "relu", "relu6", "softmax", "sigmoid"})


def _registered_unet_tf_names() -> frozenset:
    """The registered names (`unet_tf>DiceLoss`) of this package's own Keras objects."""
    from unet_tf import losses, metrics

    return frozenset(keras.saving.get_registered_name(item) for module in (losses, metrics)
                     for item in vars(module).values()
                     if isinstance(item, type) and item.__module__ == module.__name__
                     and keras.saving.get_registered_name(item).startswith("unet_tf>"))


def _refusal(entry: dict, layer: str) -> str | None:
    """Why one serialized object of a model's config.json is not what a unet_tf model holds, or
    None when it is."""
    module, name = entry.get("module"), entry.get("class_name")
    registered = entry.get("registered_name")
    what = f"{module}.{name}" if module else str(name)
    if name == "Lambda" or name == "__lambda__":
        return f"layer {layer!r} is a Lambda layer (Python code stored in the file)"
    if not isinstance(name, str) or not (module is None or isinstance(module, str)):
        return f"layer {layer!r} names a class that is not a name ({what!r})"
    if module is None:
        return None if name in ALLOWED_VALUE_TYPES else (
            f"layer {layer!r} holds {name!r}, which no unet_tf model contains")
    package = module.split(".")[0]
    if package not in ("keras", "unet_tf"):
        return f"layer {layer!r} calls into module {module!r} (only keras and unet_tf are read)"
    if name == "function":
        if module == "keras.activations" and entry.get("config") in ALLOWED_ACTIVATIONS:
            return None
        return f"layer {layer!r} calls the function {module}.{entry.get('config')!r} by reference"
    if package == "unet_tf" or (isinstance(registered, str) and ">" in registered):
        if registered in _registered_unet_tf_names():
            return None
        return f"layer {layer!r} uses {registered or what!r}, which unet_tf does not register"
    if name in ALLOWED_KERAS_CLASSES and registered in (None, name):
        return None
    return f"layer {layer!r} is a {what}, which no unet_tf model contains"


def check_model_config(config, path) -> None:
    """Refuses, in one line naming the layer, a model configuration that holds anything beyond
    the allow-list above: a Lambda, a function called by reference, a module outside keras and
    unet_tf, a class our models never contain."""
    pending = [(config, "model")]
    while pending:
        item, layer = pending.pop()
        if isinstance(item, list):
            pending.extend((value, layer) for value in item)
        elif isinstance(item, dict):
            inner = item.get("config")
            if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                layer = inner["name"]
            elif isinstance(item.get("name"), str):
                layer = item["name"]
            if "class_name" in item or "module" in item:
                reason = _refusal(item, layer)
                if reason:
                    raise ModelFileError(f"--model {path}: refused, not loaded: {reason}; "
                                         "only models written by unet_tf.train are read")
            pending.extend((value, layer) for value in item.values())


def read_model_config(path: Path) -> dict:
    """The config.json inside a checked .keras archive, parsed."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, OSError, ValueError, RecursionError) as error:
        raise ModelFileError(f"--model {path}: its config.json cannot be read "
                             f"({type(error).__name__}: {str(error)[:200]})") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"--model {path}: its config.json is not a Keras model")
    return config


def load_keras_model(path) -> keras.Model:
    """A .keras file of this project, read in Keras' safe mode after its archive and its
    configuration were checked against what unet_tf models contain. Every model this package
    loads goes through here."""
    path = Path(path)
    check_keras_file(path)
    check_model_config(read_model_config(path), path)
    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as error:  # Keras reports bad files with many types
        raise ModelFileError(f"--model {path}: cannot be loaded safely ({type(error).__name__}: "
                             f"{(str(error).splitlines() or [''])[0][:300]})") from None


def load_model_safely(path) -> tuple:
    """(model, RunInfo) for a `model.keras`, loaded in Keras' safe mode (no arbitrary code).

    `config.json` and `metrics.json` beside the model describe it; without them the label mode
    is guessed from the number of outputs (config.labels_for).
    """
    path = Path(path)
    model = load_keras_model(path)
    size, classes = int(model.input_shape[1]), int(model.output_shape[-1])
    config_path, metrics_path = path.with_name("config.json"), path.with_name("metrics.json")
    if config_path.is_file():
        config = read_run_config(config_path)
        info = RunInfo(config.class_names, size, config.labels, config.to_dict(), {})
    else:
        labels = labels_for(classes)
        names = CLASS_NAMES.get(labels, tuple(f"class_{i}" for i in range(classes)))
        info = RunInfo(names, size, labels, {}, {})
    if len(info.class_names) != classes:
        raise ModelFileError(f"{config_path} names {len(info.class_names)} classes but the model "
                             f"has {classes} outputs")
    if metrics_path.is_file():
        try:
            info.metrics = json.loads(metrics_path.read_text())
        except ValueError as error:  # truncated or edited: the model itself is fine
            print(f"warning: {metrics_path} is not valid JSON ({error}); its scores are left "
                  "out", file=sys.stderr)
    return model, info


def read_run_config(path: Path) -> Config:
    """A run's config.json as a Config; a damaged one is a one-line error naming it."""
    try:
        return Config.load(path)
    except (ValueError, TypeError) as error:
        raise ModelFileError(f"{path} is not a usable run configuration ({error})") from None
