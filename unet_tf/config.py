"""The one training configuration: a frozen dataclass, named presets, file and flag overrides.

Precedence, lowest first: the dataclass defaults, the preset (`--preset`), a YAML or JSON file
(`--config`), then command-line flags. Every field is a flag (`image_size` -> `--image-size`), and
an unknown key anywhere is an error. The resolved configuration is written to `config.json` in the
run folder, and `Config.from_dict(json.load(...))` rebuilds it exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path

from unet_tf.errors import UserError

DATASETS = ("oxford_iiit_pet", "synthetic", "folder")
LABEL_MODES = ("trimap", "binary", "index")
LOSSES = ("dice", "ce", "dice_ce")
OPTIMIZERS = ("adam", "adamw")
SWITCHES = ("auto", "on", "off")
SCHEDULES = ("constant", "cosine")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")

# Class names in model-output order, per label mode, for the pet datasets.
CLASS_NAMES = {
    "trimap": ("pet", "background", "border"),
    "binary": ("background", "pet"),
}
FOLDER_BINARY_CLASS_NAMES = ("background", "foreground")
# The tutorial's pix2pix decoder: filters of the four upsample blocks, coarsest first.
DEFAULT_DECODER_FILTERS = (512, 256, 128, 64)
# Keras ships ImageNet MobileNetV2 weights for these widths only.
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def labels_for(num_classes: int) -> str:
    """The label mode a model with `num_classes` outputs was most likely trained with, when its
    run's config.json is not at hand: 3 trimap, 2 binary, otherwise index."""
    return {3: "trimap", 2: "binary"}.get(num_classes, "index")


class ConfigError(UserError):
    """A configuration value or key that cannot be used; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Config:
    # --- data ---------------------------------------------------------------------------------
    dataset: str = "oxford_iiit_pet"  # oxford_iiit_pet | synthetic | folder
    # oxford_iiit_pet: a local copy in the dataset's original layout (images/, annotations/);
    # folder: a folder holding images/ and masks/. Empty: download through tfds.
    data_dir: str = ""
    # trimap: pet/background/border; binary: background/pet (the border band counts as pet);
    # index (folder data): masks hold class indices 0..len(classes)-1.
    labels: str = "trimap"
    # Class names in mask-value order; needed with labels=index, optional with folder data.
    classes: typing.Optional[typing.Tuple[str, ...]] = None
    train_split: str = "train"  # tfds split strings; the local copy names trainval.txt "train"
    val_split: str = "test"
    # > 0 carves this share of the training split out for validation (val_split is then unused).
    validation_fraction: float = 0.0
    synthetic_train_examples: int = 512
    synthetic_val_examples: int = 128
    image_size: int = 128
    shuffle_buffer: int = 1000
    augment: bool = True  # random horizontal flips, identical for image and mask; and:
    augment_scale: float = 0.0  # zoom by up to this factor either way (random resized crops)
    augment_rotation: float = 0.0  # rotate by up to this many degrees either way
    augment_color: float = 0.0  # brightness, contrast and saturation jitter of up to this much

    # --- model --------------------------------------------------------------------------------
    encoder_weights: str = "imagenet"  # imagenet | none | path to a MobileNetV2 .h5 file
    # None: freeze exactly when the encoder is pretrained (the tutorial's choice).
    freeze_encoder: typing.Optional[bool] = None
    alpha: float = 1.0  # MobileNetV2 width multiplier
    decoder_filters: typing.Tuple[int, ...] = DEFAULT_DECODER_FILTERS
    dropout: float = 0.0
    # None: 0.9 when the encoder trains from random weights, Keras' 0.999 otherwise (see model.py).
    encoder_bn_momentum: typing.Optional[float] = None

    # --- training -----------------------------------------------------------------------------
    batch_size: int = 64
    epochs: int = 20
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0  # adamw only
    # With a frozen pretrained encoder: after `epochs`, unfreeze it (its BatchNorm stays frozen)
    # and train this many more epochs at fine_tune_learning_rate.
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 1e-5
    lr_schedule: str = "constant"  # constant | cosine (to 0 at the last epoch)
    warmup_epochs: int = 0  # cosine only: linear warm-up from 0 over these first epochs
    loss: str = "dice"  # dice | ce | dice_ce
    dice_weight: float = 1.0  # dice_ce only
    ce_weight: float = 1.0  # dice_ce only
    class_weights: typing.Optional[typing.Tuple[float, ...]] = None  # Dice weight per class
    patience: int = 5  # epochs without a better validation mean Dice before stopping
    # The final model is the mean of the weights of the best epoch and of every epoch after it,
    # with BatchNorm statistics measured again on the training data (see averaging.py).
    average_weights: bool = False
    # auto: several GPUs -> mirrored, a TPU runtime -> tpu, else one device (see distribute.py).
    strategy: str = "auto"  # auto | default | mirrored | multi_worker | tpu
    # batch_size is per replica; this multiplies the learning rate by the number of replicas.
    scale_learning_rate: bool = False
    # Training steps run per call into TensorFlow: fewer Python round trips for small models.
    steps_per_execution: int = 1
    # auto: XLA on GPUs only (on CPUs it made training steps several times slower).
    xla: str = "auto"  # auto | on | off
    # auto: mixed_float16 on a GPU (about twice as fast on Tensor Cores), float32 on a CPU.
    # bfloat16: mixed_bfloat16, the TPU's mixed precision (on a CPU measure first: see README).
    mixed_precision: str = "auto"  # auto | on | off | bfloat16
    # Seeds the shuffle, the augmentation and the initial weights. None: a new seed per run,
    # drawn at the start and written to config.json, so `--config runs/RUN/config.json` repeats it.
    seed: typing.Optional[int] = None
    # Deterministic TensorFlow ops: the same seed gives the same history on the same machine
    # (somewhat slower; XLA is off).
    deterministic: bool = False
    run_dir: str = ""  # empty: a new folder under runs/

    def __post_init__(self):
        errors = []
        if self.dataset not in DATASETS:
            errors.append(f"dataset={self.dataset!r}: expected one of {', '.join(DATASETS)}")
        if self.labels not in LABEL_MODES:
            errors.append(f"labels={self.labels!r}: expected one of {', '.join(LABEL_MODES)}")
        if self.loss not in LOSSES:
            errors.append(f"loss={self.loss!r}: expected one of {', '.join(LOSSES)}")
        if self.optimizer not in OPTIMIZERS:
            errors.append(f"optimizer={self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if self.labels == "index" and not self.classes:
            errors.append("labels='index' needs classes: the class names in mask-value order, "
                          "e.g. --classes background road building")
        if self.labels == "trimap" and self.dataset == "folder":
            errors.append("labels='trimap' reads Oxford-IIIT Pet trimaps; for a folder of your "
                          "own masks use labels binary (0/1 or 0/255) or index with --classes")
        if self.labels != "index" and self.classes and self.dataset != "folder":
            errors.append(f"classes={self.classes}: the {self.dataset} classes are fixed by "
                          f"labels={self.labels!r} {CLASS_NAMES.get(self.labels)}")
        if self.classes and len(set(self.classes)) != len(self.classes):
            repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
            errors.append(f"classes={self.classes}: {', '.join(repeated)} named twice; each class "
                          "needs its own name")
        if self.encoder_weights == "imagenet" and self.alpha not in IMAGENET_ALPHAS:
            errors.append(f"alpha={self.alpha}: ImageNet weights exist for alpha "
                          f"{', '.join(map(str, IMAGENET_ALPHAS))}; pick one of those, or train "
                          "from random weights with encoder_weights none")
        if self.classes and self.labels == "binary" and len(self.classes) != 2:
            errors.append(f"classes={self.classes}: binary labels have 2 classes")
        if self.xla not in SWITCHES:
            errors.append(f"xla={self.xla!r}: expected auto, on or off")
        if self.steps_per_execution < 1:
            errors.append(f"steps_per_execution={self.steps_per_execution}: expected 1 or more")
        if self.fine_tune_epochs < 0 or self.fine_tune_learning_rate <= 0:
            errors.append("fine_tune_epochs must be 0 or more and fine_tune_learning_rate positive")
        if self.fine_tune_epochs and (not self.pretrained or self.freeze_encoder is False):
            errors.append(f"fine_tune_epochs={self.fine_tune_epochs}: fine-tuning follows training "
                          "with a frozen pretrained encoder (encoder_weights imagenet or a file); "
                          "from random weights the encoder trains from the start")
        if self.lr_schedule not in SCHEDULES:
            errors.append(f"lr_schedule={self.lr_schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if self.warmup_epochs < 0 or self.warmup_epochs >= max(self.epochs, 1):
            errors.append(f"warmup_epochs={self.warmup_epochs}: expected 0 <= x < epochs")
        if self.warmup_epochs and self.lr_schedule != "cosine":
            errors.append("warmup_epochs needs lr_schedule='cosine'")
        for name in ("augment_scale", "augment_color"):
            if not 0.0 <= getattr(self, name) < 1.0:
                errors.append(f"{name}={getattr(self, name)}: expected 0 <= x < 1")
        if not 0.0 <= self.augment_rotation <= 180.0:
            errors.append(f"augment_rotation={self.augment_rotation}: expected 0 to 180 degrees")
        if self.strategy not in STRATEGIES:
            errors.append(f"strategy={self.strategy!r}: expected one of {', '.join(STRATEGIES)}")
        if self.mixed_precision not in SWITCHES + ("bfloat16",):
            errors.append(f"mixed_precision={self.mixed_precision!r}: expected auto, on, off or "
                          "bfloat16")
        if self.dataset == "folder" and not self.data_dir:
            errors.append("dataset='folder' needs data_dir: a folder holding images/ and masks/")
        if self.image_size < 32 or self.image_size % 32:
            errors.append(
                f"image_size={self.image_size}: expected a multiple of 32 that is at least 32 "
                "(the encoder halves the image five times), e.g. 96, 128 or 224"
            )
        for name in ("batch_size", "epochs", "synthetic_train_examples", "synthetic_val_examples",
                     "shuffle_buffer"):
            if getattr(self, name) < 1:
                errors.append(f"{name}={getattr(self, name)}: expected a positive integer")
        if self.seed is not None and not 0 <= self.seed < 2**31:
            errors.append(f"seed={self.seed}: expected an integer from 0 to {2**31 - 1}")
        if self.patience < 0:
            errors.append(f"patience={self.patience}: expected 0 or more")
        if self.learning_rate <= 0:
            errors.append(f"learning_rate={self.learning_rate}: expected a positive number")
        if not 0.0 <= self.validation_fraction < 1.0:
            errors.append(f"validation_fraction={self.validation_fraction}: expected 0 <= x < 1")
        if not 0.0 <= self.dropout < 1.0:
            errors.append(f"dropout={self.dropout}: expected 0 <= x < 1")
        if self.alpha <= 0:
            errors.append(f"alpha={self.alpha}: expected a positive width multiplier, e.g. 0.35 or 1.0")
        if not self.decoder_filters or min(self.decoder_filters) < 1:
            errors.append(f"decoder_filters={self.decoder_filters}: expected positive integers")
        if len(self.decoder_filters) != 4:
            errors.append(
                f"decoder_filters={self.decoder_filters}: expected 4 values, one per decoder stage "
                "(1/32 -> 1/16 -> 1/8 -> 1/4 -> 1/2)"
            )
        if self.encoder_bn_momentum is not None and not 0.0 < self.encoder_bn_momentum < 1.0:
            errors.append(f"encoder_bn_momentum={self.encoder_bn_momentum}: expected 0 < x < 1")
        if self.class_weights is not None and len(self.class_weights) != self.num_classes:
            errors.append(
                f"class_weights={self.class_weights}: expected {self.num_classes} values, one per "
                f"class {self.class_names}"
            )
        if errors:
            raise ConfigError("invalid configuration: " + "; ".join(errors))

    @property
    def class_names(self) -> typing.Tuple[str, ...]:
        if self.classes:
            return tuple(self.classes)
        if self.dataset == "folder":
            return FOLDER_BINARY_CLASS_NAMES
        return CLASS_NAMES.get(self.labels, ())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def pretrained(self) -> bool:
        return self.encoder_weights.lower() != "none"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, base: "Config | None" = None) -> "Config":
        """`base` (default: the defaults) with `values` applied; unknown keys are an error."""
        base = base or cls()
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown configuration key(s) {', '.join(unknown)}; known keys: "
                f"{', '.join(known)}"
            )
        hints = typing.get_type_hints(cls)
        coerced = {k: _coerce(k, hints[k], v) for k, v in values.items()}
        return dataclasses.replace(base, **coerced)

    @classmethod
    def load(cls, path) -> "Config":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _coerce(name: str, kind, value):
    """`value` as the field's type: YAML reads `1e-3` as a string and JSON has no tuples."""
    args = typing.get_args(kind)
    if type(None) in args:
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
    try:
        if typing.get_origin(kind) is tuple:
            if not isinstance(value, (list, tuple)):
                raise TypeError("expected a list")
            return tuple(_coerce(name, typing.get_args(kind)[0], v) for v in value)
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise TypeError("expected true or false")
            return value
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError("expected an integer")
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise TypeError("expected a number")
            return float(value)
        if kind is str:
            if not isinstance(value, str):
                raise TypeError("expected a string")
            return value
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name}={value!r}: {error}") from None
    return value


# Each preset says why its values are what they are; anything not named keeps the default.
PRESETS = {
    # The TensorFlow segmentation tutorial: oxford_iiit_pet 4.0.0 at 128 px, batch 64, 20 epochs,
    # Adam at 1e-3, shuffle buffer 1000, ImageNet MobileNetV2 encoder frozen, trained on `train`
    # and validated on `test`. The project adds the Dice loss and early stopping (--loss ce gives
    # the tutorial's cross-entropy). These are the defaults, so the preset names no values.
    "tutorial": {},
    # Offline in minutes on a CPU: synthetic pets, small images, a slim encoder from scratch.
    "quickstart": {
        "dataset": "synthetic",
        "image_size": 96,
        "batch_size": 16,
        "epochs": 20,
        "encoder_weights": "none",
        "alpha": 0.35,  # the narrowest MobileNetV2: ~6x fewer encoder FLOPs than 1.0
        "decoder_filters": (128, 64, 32, 16),  # a quarter of the tutorial's, to match alpha
        "learning_rate": 2e-3,
        "patience": 4,
        "synthetic_train_examples": 384,
        "synthetic_val_examples": 96,
    },
    # From scratch on a few hundred photos, on a CPU or a small GPU (measured on 200 real photos:
    # see the README). Validation is carved out of the training photos, so a separate test split
    # stays untouched by early stopping.
    "small-data": {
        "encoder_weights": "none",  # encoder BatchNorm momentum 0.9 follows (see model.py)
        "validation_fraction": 0.15,
        "image_size": 128,
        "batch_size": 16,  # 4x the tutorial's steps per epoch: few photos need many steps
        # Half the tutorial's decoder width: the same Dice on the sample within its run-to-run
        # spread, a little faster, a smaller model.
        "decoder_filters": (256, 128, 64, 32),
        # Binary Dice of the best epoch on the sample's test split (README): 60 epochs 0.81;
        # 120 epochs 0.83; 200 epochs with patience 40: 0.83-0.86, early-stopped at epochs
        # 140-190, 12-16 CPU-minutes.
        "epochs": 200,
        "patience": 40,
        # The mean of the best epoch's weights and the 40 after it, BatchNorm statistics measured
        # again: 0.847-0.853 (0.854-0.865 with evaluate --tta) over four runs, +0.01 on average
        # over the best epoch alone, whose choice by 34 validation photos is partly chance.
        "average_weights": True,
        "optimizer": "adamw",
        "weight_decay": 1e-4,
        "learning_rate": 2e-3,
        "lr_schedule": "cosine",
        "warmup_epochs": 5,
        "loss": "dice_ce",  # the cross-entropy term gives every pixel a gradient early on
        "augment_scale": 0.25,
        "augment_rotation": 15.0,
        "augment_color": 0.2,
    },
}


def preset(name: str, **overrides) -> Config:
    """The named preset with `overrides` applied, e.g. preset("quickstart", epochs=2)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return Config.from_dict({**PRESETS[name], **overrides})


def read_config_file(path) -> dict:
    """A YAML or JSON mapping of configuration keys (the same names as Config's fields)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            try:
                values = yaml.safe_load(text) or {}
            except yaml.YAMLError as error:  # a !!python tag is refused here, unrun
                raise ConfigError(f"--config {path}: not valid YAML for this project "
                                  f"({' '.join(str(error).split())})") from None
        else:
            values = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"--config {path}: not valid JSON ({error}); YAML files end in .yaml "
                          "or .yml") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of keys to values, got {type(values).__name__}")
    return values


# --- command-line flags, one per field ---------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Adds --preset, --config and one flag per Config field (default: not given)."""
    parser.add_argument("--preset", default="tutorial", choices=sorted(PRESETS),
                        help="named starting configuration (default: tutorial)")
    parser.add_argument("--config", help="YAML or JSON file of configuration keys")
    group = parser.add_argument_group("configuration (defaults come from the preset)")
    hints = typing.get_type_hints(Config)
    for field in dataclasses.fields(Config):
        kind = hints[field.name]
        args = typing.get_args(kind)
        optional = type(None) in args
        if optional:
            kind = next(a for a in args if a is not type(None))
        flag = _flag(field.name)
        if kind is bool:
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                               default=None)
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag, dest=field.name, nargs="+", type=typing.get_args(kind)[0],
                               default=None, metavar="N")
        else:
            group.add_argument(flag, dest=field.name, type=kind, default=None)


def config_from_args(args: argparse.Namespace) -> Config:
    """Preset, then --config file, then flags; checked once, on the merged values."""
    if args.preset not in PRESETS:
        raise ConfigError(f"unknown preset {args.preset!r}; known presets: {', '.join(PRESETS)}")
    values = dict(PRESETS[args.preset])
    if args.config:
        values.update(read_config_file(args.config))
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                   if getattr(args, f.name, None) is not None})
    return Config.from_dict(values)
