"""Where examples come from. Every source ends in the same `Split`: resized uint8 arrays in memory.

- `oxford_iiit_pet` through tfds (version 4.0.0), downloaded on first use;
- `oxford_iiit_pet` from a local copy in the dataset's original layout (`--data-dir`);
- `folder`: a user's `images/` + `masks/` (same file stem; masks hold class indices or 0/255);
- `synthetic`: generated pets (see `synthetic.py`).

Decoding and resizing happen once, here, and the result is the cache the training pipeline reads.
A file that cannot be used is skipped and reported with its reason; it never stops the run.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from unet_tf.data import geometry, preprocess, synthetic
from unet_tf.errors import UserError
from unet_tf.config import parse_color
from unet_tf.images import MAX_PIXELS, ImageReadError, read_image, read_label_mask
from unet_tf.progress import progress

TFDS_NAME = "oxford_iiit_pet:4.0.0"
# Where tfds downloads the archives from; checked first so that offline fails in seconds instead
# of after urllib3's minutes of retries.
TFDS_DOWNLOAD_HOST = "thor.robots.ox.ac.uk"
# The local copy's split lists; "train" is tfds' name for trainval.txt.
OXFORD_LISTS = {"train": "trainval.txt", "trainval": "trainval.txt", "test": "test.txt"}


class DataError(UserError):
    """Data that cannot be used at all (nothing to train on, a missing folder or list)."""


class DataUnavailableError(DataError):
    """The dataset could not be downloaded (usually: no network)."""


@dataclasses.dataclass
class Split:
    """Examples of one split, preprocessed and held in memory.

    Attributes:
        name: str. The split string it was read from, e.g. "train" or "train[:80%]".
        images: uint8 [N, S, S, 3], photographs fitted to the model size (--resize squash or
            pad); or with --resize none a list of uint8 [H, W, 3] at native size times --scale.
        masks: uint8 [N, S, S] class indices, or a list of [H, W].
        names: list of str. One identifier per example (file stem or index).
        skipped: list of (name, reason). Examples that could not be used.
        notes: list of (name, note). Examples used after a change worth knowing (e.g. a JPEG
            mask thresholded).
    """

    name: str
    images: np.ndarray | list | None
    masks: np.ndarray | list | None
    names: list
    skipped: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    # Streamed (--cache disk or none): no arrays; the files, read again every epoch.
    files: list | None = None  # (name, image path, mask path) of the usable examples
    encoding: str = ""  # how the masks are read: trimap or index
    counts: list | None = None  # pixels per class of each example, counted when checked

    def __len__(self):
        return len(self.names)

    @property
    def streamed(self) -> bool:
        return self.files is not None

    def class_shares(self, num_classes: int) -> np.ndarray:
        if self.counts is not None:
            counts = np.sum(self.counts, axis=0)[:num_classes]
        else:
            counts = sum(np.bincount(np.asarray(m).reshape(-1), minlength=num_classes)[:num_classes]
                         for m in (self.masks if isinstance(self.masks, list) else [self.masks]))
        return counts / max(counts.sum(), 1)

    def subset(self, keep: np.ndarray, name: str) -> "Split":
        keep = np.asarray(keep, bool)

        def take(items):
            if items is None:
                return None
            return ([item for item, k in zip(items, keep) if k] if isinstance(items, list)
                    else items[keep])

        return Split(name, take(self.images), take(self.masks), take(list(self.names)),
                     list(self.skipped), list(self.notes), take(self.files), self.encoding,
                     take(self.counts))


def background_class(config) -> int:
    """The class padding and crops treat as background: the one named so, else class 0."""
    names = config.class_names
    return names.index("background") if "background" in names else 0


def fit(config, image, mask) -> tuple:
    """uint8 (image, mask) numpy arrays fitted as `config.resize` says (see geometry.py)."""
    if config.resize == "squash":  # the common case in one graph call
        image, mask = preprocess.resize_example(image, mask, config.image_size)
        return image.numpy(), mask.numpy()
    return geometry.fit_to_model(image, mask, config.resize, config.image_size, config.scale,
                                 background_class(config))


def ensure_available(config) -> None:
    """Downloads and prepares oxford_iiit_pet when the configuration needs it; offline, fails in
    seconds with the offline options. Other sources are read where they are."""
    if config.dataset == "oxford_iiit_pet" and not config.data_dir:
        _tfds_builder()


def load_split(config, split: str, stream: bool = False) -> Split:
    """One split of the configured dataset, e.g. "train", "test" or "train[:80%]". With `stream`
    (local files only), the files are checked but not kept in memory: see streaming.py."""
    if config.dataset == "synthetic":
        # Two fixed sets, whatever the training seed: "train" and anything else ("test", ...).
        if parse_split(split)[0] == "train":
            return _synthetic_split(config, split, config.synthetic_train_examples, 0)
        return _synthetic_split(config, split, config.synthetic_val_examples, 10_000)
    if config.dataset == "oxford_iiit_pet" and not config.data_dir:
        return _tfds_split(config, split)
    read = _oxford_split if config.dataset == "oxford_iiit_pet" else _folder_split
    return read(config, split, stream)


def load_splits(config, train: bool = True, stream: bool = False) -> tuple:
    """(train, validation) `Split`s for a `Config`; with `train=False` only the validation split
    is loaded (the first item is None), which costs less when none is carved out of training.
    With `stream` the training split is streamed (its files checked, not kept); validation is
    always held in memory."""
    if not config.validation_fraction:
        return (load_split(config, config.train_split, stream) if train else None,
                load_split(config, config.val_split))
    if config.dataset == "oxford_iiit_pet" and not config.data_dir:
        # tfds slices its (already shuffled) records.
        percent = round(100 * (1 - config.validation_fraction))
        base = config.train_split
        return (_tfds_split(config, f"{base}[:{percent}%]"),
                _tfds_split(config, f"{base}[{percent}%:]"))
    training, validation = _carve(load_split(config, config.train_split, stream),
                                  config.validation_fraction)
    if validation.streamed:  # the carved validation part is read into memory
        validation = _read_pairs(validation.name, validation.files, config, validation.encoding,
                                 [])
    return training, validation


def _carve(split: Split, fraction: float) -> tuple:
    """Deterministic train/validation partition by a hash of each example's name, so the same
    example always lands on the same side whatever the order or the other files."""
    in_val = np.array([zlib.crc32(n.encode()) % 10_000 < fraction * 10_000 for n in split.names])
    if in_val.all() or not in_val.any():
        raise DataError(
            f"validation_fraction={fraction} of {len(split)} examples leaves an empty side; use "
            "more examples or another fraction"
        )
    return (split.subset(~in_val, f"{split.name} (train part)"),
            split.subset(in_val, f"{split.name} (validation part)"))


# --- tfds ---------------------------------------------------------------------------------------


def _network_reachable(host: str, timeout: float = 5.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _offline_message(reason: str) -> str:
    return (
        f"cannot download oxford_iiit_pet: {reason}.\n"
        "  Offline, train on one of:\n"
        "    --data-dir DIR      a local copy in the dataset's original layout (images/,\n"
        "                        annotations/trimaps/, annotations/trainval.txt and test.txt),\n"
        "                        e.g. the unpacked images.tar.gz and annotations.tar.gz\n"
        "    --dataset synthetic generated pets, no download (or --preset quickstart)\n"
        "    --dataset folder --data-dir DIR   your own images/ and masks/"
    )


def _tfds_builder():
    import tensorflow_datasets as tfds

    builder = tfds.builder(TFDS_NAME)
    if not builder.is_prepared():
        if not _network_reachable(TFDS_DOWNLOAD_HOST):
            raise DataUnavailableError(_offline_message(
                f"{TFDS_DOWNLOAD_HOST} is not reachable and no prepared copy is in "
                f"{builder.data_dir}"))
        try:
            builder.download_and_prepare()
        except Exception as error:  # tfds wraps network failures in many types
            raise DataUnavailableError(_offline_message(f"{type(error).__name__}: {error}")) from error
    return builder


def _tfds_split(config, split: str) -> Split:
    builder = _tfds_builder()
    try:
        dataset = builder.as_dataset(split=split)
    except Exception as error:
        raise DataError(
            f"split {split!r} of {TFDS_NAME}: {error}; its splits are "
            f"{', '.join(builder.info.splits)} (slices like 'train[:80%]' work too)"
        ) from None

    def prepare(example):
        mask = preprocess.trimap_to_classes(example["segmentation_mask"][..., 0], config.labels)
        return example["image"], mask, example["file_name"]

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    total = int(dataset.cardinality())
    images, masks, names = [], [], []
    for image, mask, name in progress(dataset.as_numpy_iterator(), f"{split:>10}",
                                      total=total if total >= 0 else None, unit="img"):
        image, mask = fit(config, image, mask)
        images.append(image)
        masks.append(mask)
        names.append(name.decode())
    return _stack(split, images, masks, names, [], config)


# --- local files --------------------------------------------------------------------------------

_SLICE = re.compile(r"^(?P<name>\w+)(?:\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


def parse_split(split: str) -> tuple:
    """'train[10%:]' -> ('train', '10%', None), as tfds writes split slices."""
    match = _SLICE.match(split.replace(" ", ""))
    if not match:
        raise DataError(f"split {split!r}: expected a name with an optional slice, e.g. "
                        "'train', 'train[:80%]', 'test[100:]'")
    return match["name"], match["start"], match["stop"]


def _slice(items: list, start, stop) -> list:
    def index(bound):
        if bound is None:
            return None
        if bound.endswith("%"):
            return round(len(items) * int(bound[:-1]) / 100)
        return int(bound)

    return items[index(start):index(stop)]


# preprocess.trimap_to_classes as lookup tables, for numpy: trimap value -> class index.
TRIMAP_CLASSES = {"trimap": np.array([0, 0, 1, 2] + [0] * 252, np.uint8),
                  "binary": np.array([0, 1, 0, 1] + [0] * 252, np.uint8)}


def decode_pair(image_path: Path, mask_path: Path, config, encoding: str):
    """(image, mask, None, note) at native size, the mask as class indices, or
    (None, None, reason, None) for a pair that cannot be used."""
    if not mask_path.is_file():
        return None, None, f"no mask ({mask_path.name} missing)", None
    colors = ([parse_color(entry.split("=", 1)[1]) for entry in config.mask_colors]
              if config.mask_colors else None)
    try:
        image = read_image(image_path)
        mask, note = read_label_mask(mask_path, colors)
    except ImageReadError as error:
        return None, None, str(error), None
    if image.shape[:2] != mask.shape:
        return None, None, (f"image is {image.shape[1]}x{image.shape[0]} but its mask is "
                            f"{mask.shape[1]}x{mask.shape[0]}"), None
    values = np.flatnonzero(np.bincount(mask.reshape(-1), minlength=256))  # O(n), not a sort
    if encoding == "trimap":
        bad = values[(values < 1) | (values > 3)]
        if bad.size:
            return None, None, f"trimap values {bad.tolist()} outside 1/2/3", None
        mask = TRIMAP_CLASSES[config.labels][mask]
    else:
        if set(values.tolist()) <= {0, 255}:
            mask = (mask == 255).astype(np.uint8)  # 0/255 binary masks
        elif config.labels == "binary":
            if values.max() > 1:
                return None, None, (f"binary mask values {values.tolist()}: expected 0/1 or "
                                    "0/255"), None
        if mask.max() >= config.num_classes:
            return None, None, (f"mask values {values.tolist()} outside the "
                                f"{config.num_classes} classes {list(config.class_names)}"), None
    return image, mask.astype(np.uint8), None, note


def _read_pairs(split: str, pairs: list, config, encoding: str, skipped: list,
                stream: bool = False) -> Split:
    """Reads (name, image path, mask path) triples, decoded in parallel and fitted in one graph
    (`decoded_examples`), with a progress bar. With `stream`, each file is checked and its
    classes counted, and nothing is kept."""
    images, masks, names, notes, files, counts = [], [], [], [], [], []
    dataset = decoded_examples(pairs, config, encoding, fitted=not stream)
    for pair, (image, mask, reason, note) in progress(zip(pairs, dataset.as_numpy_iterator()),
                                                      f"{split:>10}", total=len(pairs),
                                                      unit="img"):
        if reason:
            skipped.append((pair[0], reason.decode()))
            continue
        names.append(pair[0])
        if note:
            notes.append((pair[0], note.decode()))
        if stream:
            files.append(pair)
            counts.append(np.bincount(mask.reshape(-1), minlength=256))
        else:
            images.append(image)
            masks.append(mask)
    if stream:
        if not files:
            _stack(split, [], [], [], skipped, config)  # raises: nothing usable
        return Split(split, None, None, names, skipped, notes, files, encoding, counts)
    return _stack(split, images, masks, names, skipped, config, notes)


def decoded_examples(pairs: list, config, encoding: str, fitted: bool = True) -> tf.data.Dataset:
    """(image, mask, reason, note) of each (name, image path, mask path), in order: decoded on all
    cores, then fitted in graph ops (`fit_graph`, one trace for every photo size) unless not
    `fitted`. A pair that cannot be used comes with its reason and empty arrays.

    Plain files (an RGB or grayscale JPEG or PNG, a grayscale PNG mask) are decoded by
    TensorFlow's own ops, as the tutorial's pipeline does, and checked in the graph; everything
    else, and any file that fails a check, goes through Pillow (`decode_pair`: any format, the
    reason named). Both give the same pixels (tests/test_data.py checks it on real photos).
    """
    paths = tf.data.Dataset.from_tensor_slices((
        [str(p[1]) for p in pairs], [str(p[2]) for p in pairs],
        [_graph_format(p[1], p[2], config) for p in pairs]))

    def read(image_path, mask_path):
        image, mask, reason, note = decode_pair(Path(image_path.decode()),
                                                Path(mask_path.decode()), config, encoding)
        if reason:
            return np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.uint8), reason, ""
        return image, mask, "", note or ""

    def with_pillow(image_path, mask_path):
        image, mask, reason, note = tf.numpy_function(
            read, [image_path, mask_path], [tf.uint8, tf.uint8, tf.string, tf.string])
        image.set_shape([None, None, 3])
        mask.set_shape([None, None])
        return image, mask, reason, note

    def decode(image_path, mask_path, graph_format):
        image, mask, ok = _decode_in_graph(image_path, mask_path, graph_format, config, encoding)
        image, mask, reason, note = tf.cond(
            ok, lambda: (image, mask, tf.constant(""), tf.constant("")),
            lambda: with_pillow(image_path, mask_path))
        if fitted:
            image, mask = tf.cond(tf.equal(reason, ""), lambda: fit_graph(image, mask, config),
                                  lambda: (image, mask))
        return image, mask, reason, note

    return paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
        .prefetch(tf.data.AUTOTUNE)


def _graph_format(image_path: Path, mask_path: Path, config) -> str:
    """"jpeg" or "png" when TensorFlow's decoders read this pair as Pillow does, else "" (read
    with Pillow). Looks at the headers only."""
    if config.mask_colors or not Path(mask_path).is_file():
        return ""
    try:
        with Image.open(image_path) as image, Image.open(mask_path) as mask:
            if mask.format != "PNG" or mask.mode != "L" or image.mode not in ("RGB", "L"):
                return ""
            if image.width * image.height > MAX_PIXELS:
                return ""
            return {"JPEG": "jpeg", "PNG": "png"}.get(image.format, "")
    except (OSError, SyntaxError, ValueError):
        return ""


def _decode_in_graph(image_path, mask_path, graph_format, config, encoding):
    """(image, class mask, ok) of a plain pair, decoded and checked in graph ops; `ok` False for
    a pair Pillow must read (and name the reason for)."""
    def decode():
        data = tf.io.read_file(image_path)
        image = tf.cond(tf.equal(graph_format, "jpeg"),
                        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                        lambda: tf.io.decode_png(data, channels=3))
        mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)[..., 0]
        present = tf.math.bincount(tf.cast(mask, tf.int32), minlength=256, maxlength=256) > 0
        same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(mask)))
        if encoding == "trimap":
            ok = ~tf.reduce_any(present[0:1]) & ~tf.reduce_any(present[4:])
            classes = tf.gather(tf.constant(TRIMAP_CLASSES[config.labels]), tf.cast(mask, tf.int32))
        else:
            zero_or_255 = ~tf.reduce_any(present[1:255])
            classes = tf.where(zero_or_255, tf.cast(mask == 255, tf.uint8), mask)
            ok = zero_or_255 | ~tf.reduce_any(present[config.num_classes:])
        return image, classes, same_size & ok

    def skip():
        return tf.zeros([0, 0, 3], tf.uint8), tf.zeros([0, 0], tf.uint8), tf.constant(False)

    return tf.cond(tf.equal(graph_format, ""), skip, decode)


def fit_graph(image, mask, config):
    """`fit` in graph ops: the same operations, so the same arrays."""
    if config.resize == "squash":
        return (preprocess.resize_image(image, config.image_size),
                preprocess.resize_mask(mask, config.image_size))
    if config.resize == "pad":
        return geometry.letterbox(image, mask, config.image_size, background_class(config))
    return geometry.rescale(image, mask, config.scale)


def _stack(split, images, masks, names, skipped, config, notes=()) -> Split:
    """The split's arrays: stacked when fitted to one size, a list at native sizes."""
    if not images:
        detail = "".join(f"\n  {n}: {r}" for n, r in skipped[:10])
        raise DataError(f"split {split!r} has no usable examples "
                        f"({len(skipped)} skipped){detail}")
    if config.resize != "none":
        images, masks = np.stack(images), np.stack(masks)
    return Split(split, images, masks, names, skipped, list(notes))


def oxford_list_names(list_file: Path) -> list:
    """The image names of an Oxford-IIIT Pet split list ("<Name>_<n> CLASS-ID SPECIES BREED-ID"
    per line; comment lines start with #)."""
    return [line.split()[0] for line in Path(list_file).read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def list_files(config, split: str) -> list | None:
    """(name, image path, mask path) of a split of local files, listed, not read (None for tfds
    and synthetic data)."""
    if config.dataset == "synthetic" or not config.data_dir:
        return None
    return (_oxford_pairs if config.dataset == "oxford_iiit_pet" else _folder_pairs)(
        config, split)[0]


def _oxford_split(config, split: str, stream: bool = False) -> Split:
    """A split of a local copy laid out as the dataset's archives unpack."""
    pairs, skipped = _oxford_pairs(config, split)
    return _read_pairs(split, pairs, config, "trimap", skipped, stream)


def _oxford_pairs(config, split: str) -> tuple:
    """(pairs, skipped) of a split of a local oxford_iiit_pet copy."""
    root = Path(config.data_dir).expanduser()
    images_dir, trimaps_dir = root / "images", root / "annotations" / "trimaps"
    for folder in (images_dir, trimaps_dir):
        if not folder.is_dir():
            hint = (" It holds images/ and masks/: use --dataset folder." if
                    (root / "masks").is_dir() else "")
            raise DataError(
                f"--data-dir {root}: no {folder.relative_to(root)}/ folder; expected the "
                "oxford_iiit_pet layout (images/, annotations/trimaps/, annotations/trainval.txt, "
                f"annotations/test.txt).{hint}"
            )
    name, start, stop = parse_split(split)
    if name not in OXFORD_LISTS:
        raise DataError(f"split {split!r}: a local oxford_iiit_pet copy has the splits "
                        f"{', '.join(OXFORD_LISTS)}")
    list_file = root / "annotations" / OXFORD_LISTS[name]
    if not list_file.is_file():
        raise DataError(f"split {split!r}: the split list {list_file} is missing; the dataset's "
                        "annotations.tar.gz holds it")
    rows = _slice(oxford_list_names(list_file), start, stop)
    skipped = []
    pairs = []
    for row in rows:
        image_path = images_dir / f"{row}.jpg"
        if not image_path.is_file():
            skipped.append((row, f"listed in {list_file.name} but {image_path.name} is missing"))
            continue
        pairs.append((row, image_path, trimaps_dir / f"{row}.png"))
    return pairs, skipped


def _folder_split(config, split: str, stream: bool = False) -> Split:
    """A user's images/ + masks/ (or <split>/images/ + <split>/masks/)."""
    return _read_pairs(split, _folder_pairs(config, split)[0], config, "index", [], stream)


def _folder_pairs(config, split: str) -> tuple:
    """(pairs, no skipped) of a split of a user's images/ + masks/."""
    root = Path(config.data_dir).expanduser()
    name, start, stop = parse_split(split)
    base = root / name if (root / name / "images").is_dir() else root
    images_dir, masks_dir = base / "images", base / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise DataError(
            f"--data-dir {root}: expected images/ and masks/ (or {name}/images/ and "
            f"{name}/masks/) holding files with the same stem, e.g. images/cat1.jpg and "
            "masks/cat1.png"
        )
    if base == root and name not in ("train",):
        raise DataError(
            f"--data-dir {root} has no {name}/ folder for split {split!r}: its one images/ + "
            "masks/ pair is the split 'train' (to train, hold part of it out for validation "
            "with --validation-fraction 0.2; to evaluate on it: --split train)"
        )
    masks = {p.stem: p for p in sorted(masks_dir.iterdir()) if p.is_file()}
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{images_dir} is empty")
    files = _slice(files, start, stop)
    return [(p.stem, p, masks.get(p.stem, masks_dir / f"{p.stem}.png")) for p in files], []


def _synthetic_split(config, name: str, count: int, seed: int) -> Split:
    images, masks = [], []
    for example in synthetic.make_examples(count, seed):
        mask = preprocess.trimap_to_classes(example["segmentation_mask"][..., 0], config.labels)
        image, mask = fit(config, example["image"], mask.numpy())
        images.append(image)
        masks.append(mask)
    return _stack(name, images, masks, [f"synthetic_{seed}_{i}" for i in range(count)], [],
                  config)
