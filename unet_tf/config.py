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
import math
import re
import typing
from pathlib import Path

from unet_tf.errors import UserError
from unet_tf.images import parse_intensity

DATASETS = ("oxford_iiit_pet", "synthetic", "folder")
LABEL_MODES = ("trimap", "binary", "index", "instance")
LOSSES = ("dice", "ce", "dice_ce")
OPTIMIZERS = ("adam", "adamw")
SWITCHES = ("auto", "on", "off")
SCHEDULES = ("constant", "cosine")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
RESIZE_POLICIES = ("squash", "pad", "none", "auto")
BREED = "breed"  # group_by: the Oxford-IIIT Pet breed of each photo
NO_VALIDATION = "none"  # val_split: train on every example, without validation
CACHES = ("auto", "memory", "disk", "none")

# Class names in model-output order, per label mode, for the pet datasets.
CLASS_NAMES = {
    "trimap": ("pet", "background", "border"),
    "binary": ("background", "pet"),
    # labels instance: instance label images made into unet_tf.instances.boundary_target's classes
    "instance": ("background", "interior", "boundary"),
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


def option(default, help: str, choices=None, unit: str = "", low=None, high=None,
           low_open: bool = False, high_open: bool = False, more: str = ""):
    """A configuration field with everything said about it in one place: its help text, its
    allowed values (`choices`, or a range [low, high] with open ends where marked) and its unit;
    `more`: what docs/options.md adds to the help (an explanation too long for `--help`).
    Validation, `--help`, the config-file loader and docs/options.md all read it."""
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "unit": unit, "low": low, "high": high,
        "low_open": low_open, "high_open": high_open, "more": more})


@dataclasses.dataclass(frozen=True)
class Config:
    # --- data ---------------------------------------------------------------------------------
    dataset: str = option(
        "oxford_iiit_pet", "where the examples come from: oxford_iiit_pet (through "
        "tensorflow-datasets, or a local copy with --data-dir), folder (your images/ and masks/), "
        "synthetic (generated pets, offline)", choices=DATASETS)
    data_dir: str = option(
        "", "oxford_iiit_pet: a local copy (images/ and annotations/, as the dataset's two "
        "archives unpack); folder: a folder holding images/ and masks/ (or train/ and test/ with "
        "them). Empty: download through tfds", unit="path")
    labels: str = option(
        "trimap", "how masks become classes: trimap (pet, background, border), binary (background, "
        "pet or foreground; the trimap's border counts as pet), index (your masks' values, named "
        "by --classes), instance (folder data: instance label images or one mask per object, "
        "trained as background, interior, boundary)", choices=LABEL_MODES)
    classes: typing.Optional[typing.Tuple[str, ...]] = option(
        None, "class names in mask-value order; needed with --labels index, optional with folder "
        "data", unit="names")
    mask_colors: typing.Optional[typing.Tuple[str, ...]] = option(
        None, "colour-coded RGB masks: each class as NAME=R,G,B or NAME=#RRGGBB, in class order "
        "(e.g. background=0,0,0 road=255,0,0); the names become the classes", unit="NAME=colour")
    train_split: str = option("train", "the training split (tfds split strings, e.g. "
                              "'train[:80%]'; a local copy names trainval.txt 'train')")
    val_split: str = option(
        "test", "the validation split (unused with --validation-fraction); none: no validation "
        "and nothing held out, for the final model of a recipe already chosen",
        more="with none, --validation-fraction is ignored too, every epoch runs (no early "
        "stopping) and model.keras, the last epoch (or with --average-weights the mean of the "
        "last quarter of the epochs), is written when training ends")
    validation_fraction: float = option(
        0.0, "> 0 carves this share of the training split out for validation (the same examples "
        "every time, by name; with --group-by whole groups, chosen by --seed)", low=0.0, high=1.0, high_open=True)
    group_by: str = option(
        "", "with --validation-fraction: hold out whole groups of photos, never part of one (e.g. "
        "all photos of a patient, or of a pet breed). A photo's group is the first match of this "
        "regular expression in its file stem, its group 1 if it has one, e.g. 'patient(\\d+)' "
        "or '^(.+)_\\d+$'; breed: the Oxford-IIIT Pet breed (Abyssinian_34 -> Abyssinian). "
        "Without --validation-fraction it is an error. Empty: off", unit="regex",
        more="the held-out groups come as close to the fraction of the photos as whole groups "
        "allow, at least one group and never all; --seed chooses which (the same seed, the same "
        "groups: runs with seeds 1, 2, 3 are scored on three different splits, and evaluate "
        "finds a run's own); every file stem must match; with --val-split none nothing is held "
        "out and this is ignored too")
    intensity: str = option(
        "auto", "photos with more than 8 bits a channel (16-bit microscopy, ...): how their values "
        "become 0..255. auto: one range for every photo, measured on the training photos (their "
        "0.1st to 99.9th percentile) and written to config.json as LOW,HIGH; LOW,HIGH: this "
        "range; per-image: each photo from its own percentiles. 8-bit photos are read as they are",
        unit="auto|per-image|LOW,HIGH",
        more="predict, evaluate and the export map such photos with the run's range, so an "
        "empty field stays dark; per-image stretches its noise into texture")
    synthetic_train_examples: int = option(512, "synthetic data: training examples", low=1)
    synthetic_val_examples: int = option(128, "synthetic data: validation examples", low=1)
    image_size: int = option(
        128, "the model's input side: photos are resized to it (--resize squash or pad); a "
        "multiple of 32 (larger photos: --resize none, which tiles them)", unit="px", low=32,
        high=2048)
    resize: str = option(
        "squash", "how photos meet the model: squash (to a square), pad (letterboxed), none "
        "(native resolution: --patch-size crops, tiled prediction), auto (folder data: squash, "
        "or none where objects would be under 8 px wide squashed)", choices=RESIZE_POLICIES,
        more="squash loses the aspect ratio, pad keeps it and crops the answer back, none "
        "scales by --scale first, trains on random --patch-size crops and predicts in "
        "overlapping tiles; auto chooses the scale, patch and crops per image from the masks, "
        "says so when training starts and writes them to config.json")
    patch_size: int = option(
        0, "train on random square crops of this side (a multiple of 32; 0: the whole image). "
        "With --resize none also the tile side at prediction", unit="px", low=0, high=2048)
    scale: float = option(
        1.0, "--resize none: scale photos by this factor first (e.g. 0.5 for large photos)",
        low=0.0, low_open=True, high=4.0)
    foreground_crops: float = option(
        0.5, "--patch-size: the share of training crops centred on a foreground pixel (rare, "
        "small objects must be seen); the rest anywhere", low=0.0, high=1.0)
    crops_per_image: int = option(
        1, "--patch-size: random crops taken from each training image per epoch, each placed and "
        "augmented on its own", low=1,
        more="a large image holds many crops' worth, and an epoch of one crop each is short "
        "next to its validation")
    tile_overlap: float = option(
        0.25, "--resize none: overlap of neighbouring prediction tiles, as a share of the tile",
        low=0.0, high=0.9, more="their class probabilities are blended with Gaussian weights")
    cache: str = option(
        "auto", "where training data lives between epochs: memory, disk (in the run folder), "
        "none (decoded every epoch); auto: memory when it fits --memory-budget-gb, else disk",
        choices=CACHES, more="memory holds the decoded arrays; disk is a tf.data cache file; "
        "none decodes the files every epoch")
    memory_budget_gb: float = option(
        0.0, "memory the cached training data may take (0: half of this machine's memory)",
        unit="GB", low=0.0)
    shuffle_buffer: int = option(1000, "examples in the shuffle buffer", low=1)
    augment: bool = option(True, "random changes of every training batch: flips, and the "
                                 "zoom, rotation and colour below")
    augment_scale: float = option(0.0, "zoom by up to this factor either way (random resized "
                                       "crops)", low=0.0, high=1.0, high_open=True)
    augment_rotation: float = option(0.0, "rotate by up to this angle either way", unit="degrees",
                                     low=0.0, high=180.0)
    augment_color: float = option(0.0, "brightness, contrast and saturation jitter of up to "
                                       "this much", low=0.0, high=1.0, high_open=True)

    # --- model --------------------------------------------------------------------------------
    encoder_weights: str = option(
        "imagenet", "MobileNetV2 encoder weights: imagenet (downloaded by Keras), none (random) "
        "or the path to a MobileNetV2 .h5 file without the classifier")
    freeze_encoder: typing.Optional[bool] = option(
        None, "keep the encoder's weights fixed (default: exactly when they are pretrained, the "
        "tutorial's choice)")
    alpha: float = option(1.0, "MobileNetV2 width multiplier (ImageNet weights exist for 0.35, "
                               "0.5, 0.75, 1.0, 1.3, 1.4)", low=0.0, low_open=True)
    decoder_filters: typing.Tuple[int, ...] = option(
        DEFAULT_DECODER_FILTERS, "filters of the four pix2pix upsample blocks, coarsest first",
        unit="4 integers")
    dropout: float = option(0.0, "dropout rate inside each upsample block", low=0.0, high=1.0,
                            high_open=True)
    encoder_bn_momentum: typing.Optional[float] = option(
        None, "momentum of the encoder's BatchNorm statistics (default: 0.9 from random "
        "weights, 0.999 otherwise)", low=0.0, high=1.0, low_open=True, high_open=True,
        more="from random weights, Keras' 0.999 lags far behind the changing weights")

    # --- training -----------------------------------------------------------------------------
    batch_size: int = option(64, "examples per batch (per replica with several devices)", low=1)
    epochs: int = option(20, "training epochs at most (early stopping may end sooner)", low=1)
    train_steps: int = option(
        0, "train about this many steps in place of --epochs (0: --epochs; --epochs given over "
        "a preset that sets this turns it off)", low=0,
        more="as many epochs as make them with this data and its crops per image, so a recipe "
        "takes the same time on any number of photos")
    patch_train_steps: int = option(
        0, "train about this many steps in place of --train-steps when the photos train as "
        "native-resolution patches (--resize none, as resize auto chooses for small objects) "
        "(0: --train-steps; --train-steps or --epochs given over a preset that sets this turns "
        "it off)", low=0,
        more="a patch run's epoch also predicts every validation photo tile by tile at full "
        "size, so its steps take longer")
    learning_rate: float = option(1e-3, "the (peak) learning rate", low=0.0, low_open=True)
    optimizer: str = option("adam", "the optimizer", choices=OPTIMIZERS)
    weight_decay: float = option(0.0, "adamw's decoupled weight decay", low=0.0)
    fine_tune_epochs: int = option(
        0, "with a frozen pretrained encoder: after --epochs, unfreeze it (its BatchNorm stays "
        "frozen) and train this many more epochs at --fine-tune-learning-rate", low=0)
    fine_tune_learning_rate: float = option(1e-5, "the learning rate of fine-tuning", low=0.0,
                                            low_open=True)
    lr_schedule: str = option("constant", "constant, or cosine (to 0 at the last epoch)",
                              choices=SCHEDULES)
    warmup_epochs: int = option(0, "cosine only: linear warm-up from 0 over these first epochs",
                                low=0)
    loss: str = option("dice", "soft Dice, the tutorial's cross-entropy (ce), or both (dice_ce)",
                       choices=LOSSES)
    dice_weight: float = option(1.0, "dice_ce: weight of the Dice term", low=0.0)
    ce_weight: float = option(1.0, "dice_ce: weight of the cross-entropy term", low=0.0)
    class_weights: typing.Optional[typing.Tuple[float, ...]] = option(
        None, "Dice weight of each class in the mean (default: equal)", unit="numbers")
    patience: int = option(
        5, "epochs without a better validation mean Dice before stopping", low=0,
        more="epochs in which validation predicts one class only do not count")
    average_weights: bool = option(
        False, "model.keras: the mean of the weights of the best epoch and of every epoch after "
        "it (best_epoch.keras keeps the best); with --val-split none, of the last quarter",
        more="BatchNorm statistics are measured again for the mean weights")
    strategy: str = option(
        "auto", "tf.distribute strategy: auto (several GPUs: mirrored; a TPU runtime: tpu; else "
        "one device), default, mirrored, multi_worker (TF_CONFIG on every machine), tpu",
        choices=STRATEGIES)
    scale_learning_rate: bool = option(
        False, "multiply the learning rate by the number of replicas")
    steps_per_execution: int = option(
        1, "training steps per call into TensorFlow (fewer Python round trips; try 8 on a GPU)",
        low=1)
    xla: str = option("auto", "XLA compilation: auto (on GPUs only; on CPUs it was slower), on, "
                              "off", choices=SWITCHES)
    mixed_precision: str = option(
        "auto", "auto (mixed float16 on a GPU, float32 on a CPU), on (float16), off (float32), "
        "bfloat16 (the TPU's)", choices=SWITCHES + ("bfloat16",))
    seed: typing.Optional[int] = option(
        None, "seeds the shuffle, the augmentation and the initial weights (default: a new seed "
        "per run, written to config.json)", low=0, high=2**31 - 1,
        more="so --config runs/RUN/config.json repeats the run")
    deterministic: bool = option(
        False, "deterministic TensorFlow ops: the same seed gives the same history on the same "
        "machine (somewhat slower; XLA off)")
    run_dir: str = option("", "the run folder, new or empty (default: a new folder under runs/)",
                          unit="path")
    epoch_previews: bool = option(
        False, "after every epoch, draw the model's mask of one validation photo into "
        "previews/epoch_NNN.png in the run folder (in a notebook also under the training cell)",
        more="without validation, a training photo; as the tutorial's DisplayCallback does")

    def __post_init__(self):
        errors = [*_check_fields(self)]
        if self.labels == "index" and not self.classes and not self.mask_colors:
            errors.append("labels='index' needs classes: the class names in mask-value order, "
                          "e.g. --classes background road building")
        if self.labels == "trimap" and self.dataset == "folder":
            errors.append("labels='trimap' reads Oxford-IIIT Pet trimaps; for a folder of your "
                          "own masks use labels binary (0/1 or 0/255) or index with --classes")
        if self.labels == "instance" and self.dataset != "folder":
            errors.append("labels='instance' reads instance masks of your own (each object its own "
                          "id, or one mask per object): use it with --dataset folder --data-dir")
        if self.labels == "instance" and self.classes:
            errors.append(f"classes={self.classes}: labels='instance' trains the classes "
                          f"{CLASS_NAMES['instance']}")
        if self.labels != "index" and self.classes and self.dataset != "folder":
            errors.append(f"classes={self.classes}: the {self.dataset} classes are fixed by "
                          f"labels={self.labels!r} {CLASS_NAMES.get(self.labels)}")
        if self.classes and len(set(self.classes)) != len(self.classes):
            repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
            errors.append(f"classes={self.classes}: {', '.join(repeated)} named twice; each class "
                          "needs its own name")
        if self.mask_colors:
            errors += _check_mask_colors(self)
        if self.group_by and self.group_by != BREED:
            try:
                re.compile(self.group_by)
            except re.error as error:
                errors.append(f"group_by={self.group_by!r}: not a valid regular expression "
                              f"({error}); e.g. 'patient(\\d+)', or breed")
        try:
            parse_intensity(self.intensity)
        except ValueError as error:
            errors.append(f"{error} (e.g. 0,4095)")
        if self.encoder_weights == "imagenet" and self.alpha not in IMAGENET_ALPHAS:
            errors.append(f"alpha={self.alpha}: ImageNet weights exist for alpha "
                          f"{', '.join(map(str, IMAGENET_ALPHAS))}; pick one of those, or train "
                          "from random weights with encoder_weights none")
        if self.classes and self.labels == "binary" and len(self.classes) != 2:
            errors.append(f"classes={self.classes}: binary labels have 2 classes")
        if self.fine_tune_epochs and (not self.pretrained or self.freeze_encoder is False):
            errors.append(f"fine_tune_epochs={self.fine_tune_epochs}: fine-tuning follows training "
                          "with a frozen pretrained encoder (encoder_weights imagenet or a file); "
                          "from random weights the encoder trains from the start")
        if self.fine_tune_epochs and not self.validates:
            errors.append(f"fine_tune_epochs={self.fine_tune_epochs}: fine-tuning starts from the "
                          "best epoch by validation; with val_split none there is none")
        if self.warmup_epochs >= max(self.epochs, 1):
            errors.append(f"warmup_epochs={self.warmup_epochs}: expected fewer than epochs")
        if self.warmup_epochs and self.lr_schedule != "cosine":
            errors.append("warmup_epochs needs lr_schedule='cosine'")
        if self.dataset == "folder" and not self.data_dir:
            errors.append("dataset='folder' needs data_dir: a folder holding images/ and masks/")
        for name in ("image_size", "patch_size"):
            if getattr(self, name) % 32:
                errors.append(f"{name}={getattr(self, name)}: expected a multiple of 32 (the "
                              "encoder halves the image five times), e.g. 96, 128 or 224")
        if self.patch_size > self.image_size and self.resize != "none":
            errors.append(f"patch_size={self.patch_size}: crops of the {self.resize}d "
                          f"{self.image_size} px images must be smaller than them")
        if self.crops_per_image > 1 and not (self.resize == "none"
                                              or 0 < self.patch_size < self.image_size):
            errors.append(f"crops_per_image={self.crops_per_image}: takes several crops of each "
                          "training image, with --patch-size (and resize none, or a patch "
                          "smaller than image_size)")
        if self.resize != "none" and self.scale != 1.0:
            errors.append(f"scale={self.scale}: scales native-resolution photos, with resize none")
        if len(self.decoder_filters) != 4 or min(self.decoder_filters, default=0) < 1:
            errors.append(
                f"decoder_filters={self.decoder_filters}: expected 4 positive values, one per "
                "decoder stage (1/32 -> 1/16 -> 1/8 -> 1/4 -> 1/2)")
        if self.class_weights is not None and (min(self.class_weights, default=0) < 0
                                               or not sum(self.class_weights) > 0):
            errors.append(f"class_weights={self.class_weights}: expected weights >= 0, not all 0")
        if self.class_weights is not None and len(self.class_weights) != self.num_classes:
            errors.append(
                f"class_weights={self.class_weights}: expected {self.num_classes} values, one per "
                f"class {self.class_names}"
            )
        if errors:
            raise ConfigError("invalid configuration: " + "; ".join(errors))

    @property
    def validates(self) -> bool:
        """Whether training has validation data (a carved part or a validation split): not with
        val_split none, whatever validation_fraction says."""
        return self.val_split != NO_VALIDATION

    @property
    def model_size(self) -> int:
        """The side of the model's input: the image size, or with resize none the patch (tile)
        size."""
        return (self.patch_size or self.image_size) if self.resize == "none" else self.image_size

    @property
    def class_names(self) -> typing.Tuple[str, ...]:
        if self.classes:
            return tuple(self.classes)
        if self.mask_colors:
            return tuple(entry.split("=", 1)[0] for entry in self.mask_colors)
        if self.labels == "instance":
            return CLASS_NAMES["instance"]
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
        values = json.loads(Path(path).read_text())
        if not isinstance(values, dict):
            raise ValueError(f"expected a mapping of keys to values, got {type(values).__name__}")
        return cls.from_dict(values)


def _check_fields(config: Config):
    """Each field against its option(): the allowed choices, or the range."""
    for field in dataclasses.fields(config):
        value, meta = getattr(config, field.name), field.metadata
        if value is None:
            continue
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            yield f"{field.name}={shown(value)}: expected a finite number"  # NaN passes < and >
            continue
        if meta["choices"] and value not in meta["choices"]:
            yield f"{field.name}={shown(value)}: expected one of {', '.join(meta['choices'])}"
            continue
        low, high = meta["low"], meta["high"]
        too_low = low is not None and (value <= low if meta["low_open"] else value < low)
        too_high = high is not None and (value >= high if meta["high_open"] else value > high)
        if too_low or too_high:
            yield f"{field.name}={shown(value)}: expected {_range_text(meta)}"


def _range_text(meta) -> str:
    low, high = meta["low"], meta["high"]
    def number(value):
        return f"{value:,}" if isinstance(value, int) else f"{value:g}"

    parts = []
    if low is not None:
        parts.append(f"{'>' if meta['low_open'] else '>='} {number(low)}")
    if high is not None:
        parts.append(f"{'<' if meta['high_open'] else '<='} {number(high)}")
    return " and ".join(parts)


def parse_color(text: str) -> tuple:
    """'255,0,0' or '#ff0000' -> (255, 0, 0)."""
    text = text.strip()
    if text.startswith("#") and len(text) == 7:
        return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))
    values = tuple(int(v) for v in text.split(","))
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise ValueError(text)
    return values


def _check_mask_colors(config: Config) -> list:
    errors = []
    colors = []
    for entry in config.mask_colors:
        name, equals, color = entry.partition("=")
        try:
            colors.append(parse_color(color) if equals and name else None)
        except ValueError:
            colors.append(None)
        if colors[-1] is None:
            errors.append(f"mask_colors entry {entry!r}: expected NAME=R,G,B or NAME=#RRGGBB, "
                          "e.g. road=255,0,0")
    if len(set(c for c in colors if c)) != len([c for c in colors if c]):
        errors.append(f"mask_colors={config.mask_colors}: two classes share a colour")
    if config.labels != "index" or config.dataset != "folder":
        errors.append("mask_colors reads colour-coded masks of your own: use it with "
                      "--dataset folder --labels index")
    if config.classes and tuple(config.classes) != config.class_names:
        errors.append("give the class names once, in mask_colors (NAME=colour), not in classes")
    return errors


def shown(value, limit: int = 80) -> str:
    """A value as an error message shows it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


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
        raise ConfigError(f"{name}={shown(value)}: {error}") from None
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
    # see docs/small-data.md). Validation is carved out of the training photos, so a separate
    # test split stays untouched by early stopping.
    "small-data": {
        "encoder_weights": "none",  # encoder BatchNorm momentum 0.9 follows (see model.py)
        "validation_fraction": 0.15,
        "image_size": 128,
        "batch_size": 16,  # 4x the tutorial's steps per epoch: few photos need many steps
        # Half the tutorial's decoder width: as good on the sample within its run-to-run spread,
        # a little faster, a smaller model.
        "decoder_filters": (256, 128, 64, 32),
        # Rate and epochs chosen on the validation part (docs/small-data.md has the runs): 140
        # epochs at 6e-3 beat 4e-3 and matched 200 epochs at 2e-3 in half the time. The cosine
        # schedule ends near the last epoch, so early stopping seldom ends the run before it.
        "epochs": 140,
        "patience": 40,
        # The mean of the best epoch's weights and every one after it, BatchNorm statistics
        # measured again: steadier than the best epoch alone, whose choice by a few dozen
        # validation photos is partly chance (docs/small-data.md).
        "average_weights": True,
        "optimizer": "adamw",
        "weight_decay": 1e-4,
        "learning_rate": 6e-3,
        "lr_schedule": "cosine",
        "warmup_epochs": 5,
        "loss": "dice_ce",  # the cross-entropy term gives every pixel a gradient early on
        # Chosen on validation photos of a breed the run does not train on (--group-by breed):
        # zooms of 40%, 30 degrees and colour jitter 0.4 beat 25%, 15 and 0.2 on both held-out
        # breeds of the sample; half the epochs lost on both (docs/small-data.md).
        "augment_scale": 0.4,
        "augment_rotation": 30.0,
        "augment_color": 0.4,
    },
}
# Your own images/ and masks/ (measured on 243 ultrasound images with small nerves: see
# docs/own-data.md): small-data's recipe, a larger validation part (small objects make few
# validation pixels), and as many steps as fit in about 16 CPU-minutes there (200 epochs, a
# little better than 150). Squashing to 128 px beat native-resolution patches
# and 192 px at equal time there; where objects would vanish squashed, resize auto trains on
# native-resolution patches instead.
PRESETS["own-data"] = {
    **PRESETS["small-data"],
    "dataset": "folder",
    "labels": "binary",
    "validation_fraction": 0.2,
    # 200 epochs of the nerve sample's 189 training images, in steps: on more photos (or crops)
    # fewer epochs, the same time.
    "train_steps": 2400,
    # Half as many on native-resolution patches, whose epochs also validate every photo tile by
    # tile at full size: 2400 took 26-28 minutes on the nuclei of docs/objects.md, 1200 keeps to the
    # preset's time (validation F1 of the objects 0.893 against 0.910).
    "patch_train_steps": 1200,
    "learning_rate": 4e-3,  # the rate measured there
    # The augmentation measured there (small-data's strengths before the held-out-breed runs).
    "augment_scale": 0.25,
    "augment_rotation": 15.0,
    "augment_color": 0.2,
    "resize": "auto",  # squash there; patches on the nerve mosaics and on small cells
}


# One line per preset for --help (the values themselves are listed under each flag).
PRESET_SUMMARIES = {
    "tutorial": "the TensorFlow tutorial's recipe: oxford_iiit_pet through tfds, ImageNet encoder "
                "frozen, 128 px, batch 64, up to 20 epochs",
    "quickstart": "synthetic pets, offline, a couple of minutes on a CPU",
    "small-data": "from random weights on a few hundred photos (measured: docs/small-data.md)",
    "own-data": "small-data's recipe for a folder of your own images and masks (binary unless "
                "--labels says otherwise; several images per patient, scene or camera: add "
                "--group-by; measured: docs/own-data.md)",
}


def preset(name: str, **overrides) -> Config:
    """The named preset with `overrides` applied, e.g. preset("quickstart", epochs=2)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    values = dict(PRESETS[name])
    _override(values, overrides)
    return Config.from_dict(values)


MAX_CONFIG_FILE_BYTES = 2**20
MAX_CONFIG_DEPTH = 4  # a mapping of keys to values, lists of numbers or names at most


def _check_yaml_shape(path: Path, events) -> None:
    """Refuses YAML that expands beyond what it shows (aliases: a few hundred bytes can stand for
    gigabytes) or nests deeper than a configuration does, before it is built."""
    import yaml

    depth = 0
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(f"--config {path}: YAML aliases (*name) are not read; write the "
                              "values out")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                raise ConfigError(f"--config {path}: nested deeper than any configuration "
                                  f"(more than {MAX_CONFIG_DEPTH} levels)")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def read_config_file(path) -> dict:
    """A YAML or JSON mapping of configuration keys (the same names as Config's fields)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    if path.stat().st_size > MAX_CONFIG_FILE_BYTES:
        raise ConfigError(f"--config {path}: {path.stat().st_size:,} bytes; a configuration is a "
                          f"few KB (at most {MAX_CONFIG_FILE_BYTES:,} bytes)")
    try:
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            try:
                _check_yaml_shape(path, yaml.parse(text, Loader=yaml.SafeLoader))
                values = yaml.safe_load(text) or {}
            except yaml.YAMLError as error:  # a !!python tag is refused here, unrun
                raise ConfigError(f"--config {path}: not valid YAML for this project "
                                  f"({' '.join(str(error).split())})") from None
        else:
            values = json.loads(text)
    except RecursionError:
        raise ConfigError(f"--config {path}: nested deeper than any configuration") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"--config {path}: not valid JSON ({error}); YAML files end in .yaml "
                          "or .yml") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of keys to values, got {type(values).__name__}")
    return values


# --- command-line flags, one per field ---------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# The groups of the flags in --help and docs/options.md, in their order; a field joins the group
# of the nearest field above it named in SECTIONS.
GROUPS = ("data", "model", "training", "hardware", "output")
SECTIONS = {"dataset": "data", "encoder_weights": "model", "batch_size": "training",
            "strategy": "hardware", "seed": "training", "run_dir": "output"}


def option_groups() -> dict:
    """Each group's name -> its fields, in the order --help shows them."""
    groups, group = {name: [] for name in GROUPS}, None
    for field in dataclasses.fields(Config):
        group = SECTIONS.get(field.name, group)
        groups[group].append(field)
    return groups


def describe_value(value) -> str:
    """A value as a flag would take it: tuples as space-separated items, None as 'none given'."""
    if value is None:
        return "none given"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    if value == "":
        return "''"
    return str(value)


def option_help(field: dataclasses.Field) -> str:
    """The help of a field's flag: meaning, unit, choices, the default, and what each preset sets."""
    meta = field.metadata
    parts = [meta["help"]]
    if meta["unit"]:
        parts[0] += f" [{meta['unit']}]"
    if meta["choices"] is None and (meta["low"] is not None or meta["high"] is not None):
        parts.append(_range_text(meta))
    if "(default:" not in meta["help"]:  # where the help says it, in words
        parts.append(f"default: {describe_value(field.default)}")
    presets = [f"{name} {describe_value(values[field.name])}" for name, values in PRESETS.items()
               if field.name in values]
    if presets:
        parts.append("presets: " + ", ".join(presets))
    return "; ".join(parts)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Adds --preset, --config and one flag per Config field (default: not given) in its group
    (GROUPS), each with its help from the field's option()."""
    parser.add_argument("--preset", default="tutorial", choices=list(PRESETS),
                        help="named starting configuration: " + "; ".join(
                            f"{name}: {PRESET_SUMMARIES[name]}" for name in PRESETS)
                        + " (default: tutorial)")
    parser.add_argument("--config", metavar="FILE",
                        help="YAML or JSON file of configuration keys (the flags' names with _), "
                             "e.g. a run's config.json; it overrides --preset, flags override "
                             "it")
    hints = typing.get_type_hints(Config)
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for group, field in [(groups[name], f) for name, fs in option_groups().items() for f in fs]:
        kind = hints[field.name]
        args = typing.get_args(kind)
        if type(None) in args:
            kind = next(a for a in args if a is not type(None))
        flag, help_text = _flag(field.name), option_help(field).replace("%", "%%")
        if kind is bool:
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        elif typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            group.add_argument(flag, dest=field.name, nargs="+", type=item, default=None,
                               metavar="NAME" if item is str else "N", help=help_text)
        else:
            metavar = ({"path": "PATH", "regex": "REGEX"}.get(field.metadata["unit"]) or
                       {int: "N", float: "X", str: "TEXT"}[kind])
            group.add_argument(flag, dest=field.name, type=kind, default=None,
                               choices=field.metadata["choices"], help=help_text,
                               metavar=None if field.metadata["choices"] else metavar)


def config_from_args(args: argparse.Namespace) -> Config:
    """Preset, then --config file, then flags; checked once, on the merged values."""
    if args.preset not in PRESETS:
        raise ConfigError(f"unknown preset {args.preset!r}; known presets: {', '.join(PRESETS)}")
    values = dict(PRESETS[args.preset])
    if args.config:
        _override(values, read_config_file(args.config))
    _override(values, {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                       if getattr(args, f.name, None) is not None})
    return Config.from_dict(values)


def _override(values: dict, later: dict) -> None:
    """`values` updated with `later`; epochs given without train_steps win over the train_steps
    of what came before (`--preset own-data --epochs 50` trains 50 epochs), and epochs or
    train_steps over its patch_train_steps."""
    if "epochs" in later and "train_steps" not in later:
        values["train_steps"] = 0
    if ("epochs" in later or "train_steps" in later) and "patch_train_steps" not in later:
        values["patch_train_steps"] = 0
    values.update(later)


def options_markdown() -> str:
    """docs/options.md: every training option, from the same source as --help."""
    lines = ["# Training options", "",
             "Every option of `python -m unet_tf.train` (`unet-tf-train`), as `--help` gives it, "
             "some at more length, in the same groups. "
             "Each is also a key of a `--config` file (with `_` for `-`); flags override the file, "
             "which overrides the preset. Presets: "
             + "; ".join(f"`{name}`: {text}" for name, text in PRESET_SUMMARIES.items()) + ".",
             "", "Written by `python -m unet_tf.config > docs/options.md`; a test checks that it "
             "is current.", ""]
    table_head = ["| option | what it does | allowed | default | presets |", "|---|---|---|---|---|"]
    for name, fields in option_groups().items():
        lines += ["", f"## {name.capitalize()}", "", *table_head]
        for field in fields:
            meta = field.metadata
            allowed = (", ".join(f"`{c}`" for c in meta["choices"]) if meta["choices"]
                       else _range_text(meta) or meta["unit"] or "")
            presets = ", ".join(f"{preset_name}: `{describe_value(values[field.name])}`"
                                for preset_name, values in PRESETS.items()
                                if field.name in values)
            text = (meta["help"] + (f"; {meta['more']}" if meta["more"] else "")
                    + (f" [{meta['unit']}]" if meta["unit"] and meta["choices"] else ""))
            lines.append(f"| `{_flag(field.name)}` | {text} | {allowed} | "
                         f"`{describe_value(field.default)}` | {presets} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(options_markdown(), end="")
