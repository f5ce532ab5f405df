"""Where examples come from. Every source ends in the same `Split`: photos fitted as the resize
policy says (policy.py), held in memory as uint8 arrays, or for a streamed split its files.

- `oxford_iiit_pet` through tfds (version 4.0.0), downloaded on first use;
- `oxford_iiit_pet` from a local copy in the dataset's original layout (`--data-dir`);
- `folder`: a user's `images/` + `masks/` (same file stem; masks hold class indices or 0/255);
- `synthetic`: generated pets (see `synthetic.py`).

Every file is decoded and checked once, here (decoding.py does the decoding); the arrays, or a
streamed split's files, are what the training pipeline reads. A file that cannot be used is
skipped and reported with its reason; it never stops the run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import typing
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from unet_tf.config import BREED, ConfigError
from unet_tf.data import preprocess, synthetic
from unet_tf.data.decoding import decoded_examples
from unet_tf.data.policy import Policy, is_chosen
from unet_tf.errors import UserError
from unet_tf.progress import progress

TFDS_NAME = "oxford_iiit_pet:4.0.0"
TFDS_SIZES = {"train": 3680, "test": 3669}  # its splits' examples, known before the download
# Where tfds downloads the archives from; checked first so that offline fails in seconds instead
# of after urllib3's minutes of retries.
TFDS_DOWNLOAD_HOST = "thor.robots.ox.ac.uk"
# The local copy's split lists; "train" is tfds' name for trainval.txt.
OXFORD_LISTS = {"train": "trainval.txt", "trainval": "trainval.txt", "test": "test.txt"}


class DataError(UserError):
    """Data that cannot be used at all (nothing to train on, a missing folder or list)."""


class DataUnavailableError(DataError):
    """The dataset could not be downloaded (usually: no network)."""


class ExampleFiles(typing.NamedTuple):
    """The files of one example: its photo and mask, and once decoded into a disk cache
    (--cache disk) the uint8 .npz file read back instead."""

    name: str
    image: Path
    mask: Path
    cached: Path | None = None


@dataclasses.dataclass
class Split:
    """Examples of one split: fitted and held in memory, or (streamed) their files.

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
    files: list | None = None  # ExampleFiles of the usable examples
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


def ensure_available(config) -> None:
    """Downloads and prepares oxford_iiit_pet when the configuration needs it; offline, fails in
    seconds with the offline options. Other sources are read where they are."""
    if config.dataset == "oxford_iiit_pet" and not config.data_dir:
        _tfds_builder()


def load_split(config, split: str, stream: bool = False, cache_dir: Path | None = None) -> Split:
    """One split of the configured dataset, e.g. "train", "test" or "train[:80%]". With `stream`
    (local files only), the files are checked but not kept in memory: see streaming.py."""
    if not is_chosen(config):
        raise DataError("resize auto is chosen from the masks when training starts; load the "
                        "data with the chosen configuration: data.choose_resize(config, "
                        "data.list_files(config, config.train_split))[0]")
    if config.dataset == "synthetic":
        # Two fixed sets, whatever the training seed: "train" and anything else ("test", ...).
        if parse_split(split)[0] == "train":
            return _synthetic_split(config, split, config.synthetic_train_examples, 0)
        return _synthetic_split(config, split, config.synthetic_val_examples, 10_000)
    if config.dataset == "oxford_iiit_pet" and not config.data_dir:
        return _tfds_split(config, split)
    read = _oxford_split if config.dataset == "oxford_iiit_pet" else _folder_split
    return read(config, split, stream, cache_dir)


def load_splits(config, train: bool = True, stream: bool = False,
                cache_dir: Path | None = None) -> tuple:
    """(train, validation) `Split`s for a `Config`; with `train=False` only the validation split
    is loaded (the first item is None), which costs less when none is carved out of training.
    With `stream` the training split is streamed (its files checked, not kept); validation is
    always held in memory. With `cache_dir` a streamed split is decoded once, into it.
    Without validation (val_split none) nothing is held out and the second item is None."""
    if not _grouped(config) and (not config.validation_fraction or not config.validates):
        return (load_split(config, config.train_split, stream, cache_dir) if train else None,
                load_split(config, config.val_split) if config.validates else None)
    tfds = config.dataset == "oxford_iiit_pet" and not config.data_dir
    if tfds and not config.group_by:
        # tfds slices its (already shuffled) records.
        percent = round(100 * (1 - config.validation_fraction))
        base = config.train_split
        return (_tfds_split(config, f"{base}[:{percent}%]"),
                _tfds_split(config, f"{base}[{percent}%:]"))
    # --group-by: whole groups, chosen among the names listed as planned_sizes does (a pair
    # found unusable moves no group); a local split's before a photo is read.
    files = list_files(config, config.train_split) if config.group_by else None
    held = None if files is None else _held_names(config, [f.name for f in files])
    whole = (_tfds_split(config, config.train_split) if tfds
             else load_split(config, config.train_split, stream, cache_dir))
    if config.group_by and held is None:  # tfds and synthetic: every example listed is read
        held = _held_names(config, whole.names)
    in_val = None if held is None else np.array([name in held for name in whole.names], bool)
    training, validation = _carve(whole, config.validation_fraction, in_val)
    if validation.streamed:  # the carved validation part is read into memory
        validation = _read_pairs(validation.name, validation.files, config, validation.encoding,
                                 [])
    return training, validation


def validation_part(names, fraction: float) -> np.ndarray:
    """Which examples `--validation-fraction` holds out: a deterministic partition by a hash of
    each example's name, so the same example always lands on the same side whatever the order or
    the other files."""
    return np.array([zlib.crc32(n.encode()) % 10_000 < fraction * 10_000 for n in names], bool)


def _carve(split: Split, fraction: float, in_val: np.ndarray | None = None) -> tuple:
    """(train part, validation part) of `split`: `in_val` held out (default: by name)."""
    in_val = validation_part(split.names, fraction) if in_val is None else in_val
    if in_val.all() or not in_val.any():
        raise DataError(
            f"validation_fraction={fraction} of {len(split)} examples leaves an empty side; use "
            "more examples or another fraction"
        )
    return (split.subset(~in_val, f"{split.name} (train part)"),
            split.subset(in_val, f"{split.name} (validation part)"))


# --- --group-by ---------------------------------------------------------------------------------

BREED_PATTERN = re.compile(r"^(.+)_")  # group_by breed without a list: the stem before the last _
TRIES = 8  # searches for the groups nearest the fraction, each from another order


def _grouped(config) -> bool:
    """Whether validation is carved by groups; group_by without a fraction (with validation) is
    an error: the user asked for a split that would not happen."""
    if not config.group_by or not config.validates:
        return False
    if not config.validation_fraction:
        raise ConfigError(f"--group-by {config.group_by} holds out whole groups of the training "
                          f"split for validation: give --validation-fraction too (e.g. 0.2), or "
                          f"drop --group-by to validate on --val-split {config.val_split}")
    return True


def file_stem(name: str) -> str:
    """An example's file stem: tfds names its examples by file name ("Abyssinian_34.jpg")."""
    return re.sub(r"\.(jpe?g|png)$", "", name, flags=re.IGNORECASE)


def example_groups(config, names) -> list:
    """The group of each example (`names` as a split holds them) by `config.group_by`: the first
    match of the regular expression in its file stem (its group 1 if it has one); with breed,
    the Oxford-IIIT Pet breed from the local copy's list files, else the stem before the last _.
    Every stem must match: one that does not would belong to no side."""
    stems = [file_stem(n) for n in names]
    breed = config.group_by == BREED
    pattern = BREED_PATTERN if breed else re.compile(config.group_by)
    known = _listed_breeds(config) if breed else {}
    groups, unmatched = [], []
    for stem in stems:
        if stem in known:
            groups.append(known[stem])
            continue
        match = pattern.search(stem)
        group = match and (match.group(1) if pattern.groups else match.group(0))
        groups.append(group)
        if not group:
            unmatched.append(stem)
    what = ("breed (the stem before its last _, e.g. Abyssinian_34)" if breed else
            f"'{config.group_by}'")
    if unmatched and len(unmatched) == len(stems):
        raise DataError(f"--group-by {what} matches no file stem of {config.train_split}, e.g. "
                        f"{stems[0]!r}; write a pattern that finds each photo's group in its "
                        "name")
    if unmatched:
        raise DataError(f"--group-by {what} does not match {len(unmatched)} of the {len(stems)} "
                        f"file stems of {config.train_split}, e.g. {unmatched[0]!r}: every photo "
                        "needs a group; widen the pattern or rename those files")
    return groups


def _listed_breeds(config) -> dict:
    """Image name -> breed, from a local Oxford-IIIT Pet copy's list files ("<Name>_<n> CLASS-ID
    SPECIES BREED-ID"): each class is named by the stem of its first photo listed."""
    if config.dataset != "oxford_iiit_pet" or not config.data_dir:
        return {}
    breeds, names = {}, {}
    for list_name in sorted(set(OXFORD_LISTS.values())):
        path = Path(config.data_dir).expanduser() / "annotations" / list_name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) < 2 or line.startswith("#"):
                continue
            match = BREED_PATTERN.search(fields[0])
            names.setdefault(fields[1], match.group(1) if match else fields[0])
            breeds[fields[0]] = names[fields[1]]
    return breeds


def held_out_groups(sizes: dict, target: float, seed: int = 0) -> set:
    """The groups to hold out: their photos (`sizes`: group -> photos) as close to `target` as a
    greedy pick and then single moves (a group in, out, or swapped) find, best of a few orders;
    at least one group and never all, within the largest group's size of `target`. The same
    groups for the same sizes and `seed`, whatever the order of `sizes`."""
    first = sorted(sizes, key=lambda g: (zlib.crc32(f"{seed}:{g}".encode()), g))
    rng = np.random.default_rng(seed)
    best, best_gap = None, None
    for attempt in range(TRIES):
        order = first if attempt == 0 else [first[i] for i in rng.permutation(len(first))]
        held = np.zeros(len(order), bool)
        counts = np.array([sizes[g] for g in order], np.int64)
        total, taken = 0, 0
        for index, size in enumerate(counts):
            if taken == len(order) - 1:
                break
            if abs(total + size - target) < abs(total - target):
                held[index], total, taken = True, total + size, taken + 1
        if not held.any():  # every group is far larger than the target: the nearest one
            held[np.argmin(np.abs(counts - target))] = True
        held = _improve(counts, held, target)
        gap = abs(counts[held].sum() - target)
        if best is None or gap < best_gap - 1e-9:
            best, best_gap = {g for g, h in zip(order, held) if h}, gap
        if best_gap < 0.5:  # no closer in whole photos
            break
    return best


def _improve(counts: np.ndarray, held: np.ndarray, target: float, rounds: int = 200) -> np.ndarray:
    """`held` moved nearer `target` one group at a time (one in, one out, or one of each) while
    a move helps; never empty, never all."""
    held = held.copy()
    for _ in range(rounds):
        gap = counts[held].sum() - target
        ins, outs = np.flatnonzero(held), np.flatnonzero(~held)
        moves = []  # (new gap, group out or -1, group in or -1)
        if len(ins) > 1:
            i = ins[np.argmin(np.abs(gap - counts[ins]))]
            moves.append((abs(gap - counts[i]), i, -1))
        if len(outs) > 1:
            o = outs[np.argmin(np.abs(gap + counts[outs]))]
            moves.append((abs(gap + counts[o]), -1, o))
        order = outs[np.argsort(counts[outs], kind="stable")]
        if len(order):
            wanted = counts[ins] - gap  # the size that, swapped in for each, closes the gap
            at = np.searchsorted(counts[order], wanted)
            for near in (np.clip(at - 1, 0, len(order) - 1), np.clip(at, 0, len(order) - 1)):
                after = np.abs(gap - counts[ins] + counts[order[near]])
                k = int(np.argmin(after))
                moves.append((after[k], ins[k], order[near[k]]))
        new_gap, out, into = min(moves, key=lambda move: move[0])
        if new_gap >= abs(gap) - 1e-9:
            break
        if out >= 0:
            held[out] = False
        if into >= 0:
            held[into] = True
    return held


def group_validation_part(groups, fraction: float, seed: int = 0,
                          what: str = "--group-by") -> np.ndarray:
    """Which examples (`groups`: the group of each) are held out: whole groups, as close to
    `fraction` of the examples as whole groups allow (see held_out_groups)."""
    sizes = {}
    for group in groups:
        sizes[group] = sizes.get(group, 0) + 1
    if len(sizes) < 2:
        raise DataError(f"{what} finds {len(sizes)} group ({next(iter(sizes), 'none')!r}) in "
                        f"{len(groups)} photos; holding out whole groups for validation needs "
                        "at least 2: use a pattern that tells more groups apart")
    held = held_out_groups(sizes, fraction * len(groups), seed)
    return np.array([group in held for group in groups], bool)


def _held_names(config, names) -> set:
    """The names among `names` (a split's listed examples) --group-by holds out: the groups
    `config.seed` chooses (the run's seed, recorded in its config.json, so that evaluate finds
    the same ones; no seed: those of seed 0)."""
    seed = config.seed if config.seed is not None else 0
    in_val = group_validation_part(example_groups(config, names), config.validation_fraction,
                                   seed, what=f"--group-by {config.group_by}")
    return {name for name, held in zip(names, in_val) if held}


def _planned_names(config) -> list:
    """The names of the training split's examples, listed without reading a photo (tfds: its
    records' file names, their photos not decoded)."""
    if config.dataset == "synthetic":
        return [f"synthetic_0_{i}" for i in range(config.synthetic_train_examples)]
    files = list_files(config, config.train_split)
    return [f.name for f in files] if files is not None else _tfds_names(config, config.train_split)


def groups_line(config, training: Split | None, validation: Split | None) -> str | None:
    """One line on a split by --group-by: the groups (and photos) on each side; None without."""
    if training is None or validation is None or not _grouped(config):
        return None
    train_groups, val_groups = (len(set(example_groups(config, split.names)))
                                for split in (training, validation))
    return (f"--group-by {config.group_by}: {_groups(train_groups)} ({len(training)} photos) "
            f"for training, {_groups(val_groups)} ({len(validation)} photos) held out for "
            "validation")


def _groups(count: int) -> str:
    return f"{count} group{'' if count == 1 else 's'}"


# --- tfds ---------------------------------------------------------------------------------------


def planned_sizes(config) -> tuple:
    """(training examples, validation examples or None, the training split's files or None),
    counted from the lists and folders without reading a photo: what a run is planned by. Pairs
    found unusable when the photos are read are taken out then."""
    files = list_files(config, config.train_split)
    if config.dataset == "synthetic":
        names = [f"synthetic_0_{i}" for i in range(config.synthetic_train_examples)]
    else:
        names = None if files is None else [f.name for f in files]
    if not config.validates:
        return _count(config, config.train_split, names), None, files
    if _grouped(config):
        listed = _planned_names(config) if names is None else names
        held_names = _held_names(config, listed)
        held = sum(name in held_names for name in listed)
        return len(listed) - held, held, files
    if config.validation_fraction:
        if names is None:  # tfds slices its records
            total = _count(config, config.train_split, None)
            train = len(range(total)[:round(total * (1 - config.validation_fraction))])
            return train, total - train, files
        held = validation_part(names, config.validation_fraction)
        return int((~held).sum()), int(held.sum()), files
    val_files = list_files(config, config.val_split)
    val_names = ([None] * config.synthetic_val_examples if config.dataset == "synthetic" else
                 None if val_files is None else val_files)
    return (_count(config, config.train_split, names), _count(config, config.val_split, val_names),
            files)


def _count(config, split: str, names) -> int:
    if names is not None:
        return len(names)
    name, start, stop = parse_split(split)  # tfds
    if name not in TFDS_SIZES:
        raise DataError(f"split {split!r} of {TFDS_NAME}: its splits are "
                        f"{', '.join(TFDS_SIZES)} (slices like 'train[:80%]' work too)")
    return len(_slice(range(TFDS_SIZES[name]), start, stop))


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


def _tfds_dataset(split: str, **options):
    builder = _tfds_builder()
    try:
        return builder.as_dataset(split=split, **options)
    except Exception as error:
        raise DataError(
            f"split {split!r} of {TFDS_NAME}: {error}; its splits are "
            f"{', '.join(builder.info.splits)} (slices like 'train[:80%]' work too)"
        ) from None


def _tfds_names(config, split: str) -> list:
    """The file names of a tfds split's examples, read without decoding a photo."""
    import tensorflow_datasets as tfds

    skip = tfds.decode.SkipDecoding()
    dataset = _tfds_dataset(split, decoders={"image": skip, "segmentation_mask": skip})

    def file_name(example):
        return example["file_name"]

    return [name.decode() for name in dataset.map(file_name).as_numpy_iterator()]


def _tfds_split(config, split: str) -> Split:
    dataset = _tfds_dataset(split)

    def prepare(example):
        mask = preprocess.trimap_to_classes(example["segmentation_mask"][..., 0], config.labels)
        return example["image"], mask, example["file_name"]

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    total = int(dataset.cardinality())
    images, masks, names, policy = [], [], [], Policy.from_config(config)
    for image, mask, name in progress(dataset.as_numpy_iterator(), f"{split:>10}",
                                      total=total if total >= 0 else None, unit="img"):
        image, mask = policy.fit(image, mask)
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


def _read_pairs(split: str, pairs: list, config, encoding: str, skipped: list,
                stream: bool = False, cache_dir: Path | None = None) -> Split:
    """Reads the `ExampleFiles` of `pairs`, decoded in parallel and fitted in one graph
    (`decoded_examples`), with a progress bar. With `stream`, each file is checked and its
    classes counted, and nothing is kept in memory; with `cache_dir` too, each example is
    written there fitted (uint8 .npz), for the epochs to read back instead of decoding."""
    images, masks, names, notes, files, counts = [], [], [], [], [], []
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    decoded = decoded_examples(pairs, config, encoding, fitted=not stream or cache_dir is not None)
    for index, (pair, (image, mask, reason, note)) in enumerate(progress(
            zip(pairs, decoded), f"{split:>10}", total=len(pairs), unit="img")):
        if reason:
            skipped.append((pair.name, reason.decode()))
            continue
        names.append(pair.name)
        if note:
            notes.append((pair.name, note.decode()))
        if not stream:
            images.append(image)
            masks.append(mask)
            continue
        if cache_dir is not None:
            cached = Path(cache_dir) / f"{index:06d}.npz"
            np.savez(cached, image=image, mask=mask)
            pair = pair._replace(cached=cached)
        files.append(pair)
        counts.append(np.bincount(mask.reshape(-1), minlength=256))
    if stream:
        if not files:
            _stack(split, [], [], [], skipped, config)  # raises: nothing usable
        return Split(split, None, None, names, skipped, notes, files, encoding, counts)
    return _stack(split, images, masks, names, skipped, config, notes)


def _stack(split, images, masks, names, skipped, config, notes=()) -> Split:
    """The split's arrays: stacked when fitted to one size, a list at native sizes."""
    if not images:
        detail = "".join(f"\n  {n}: {r}" for n, r in skipped[:10])
        raise DataError(f"split {split!r} has no usable examples "
                        f"({len(skipped)} skipped){detail}")
    if not Policy.from_config(config).native:
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


def _oxford_split(config, split: str, stream: bool = False, cache_dir=None) -> Split:
    """A split of a local copy laid out as the dataset's archives unpack."""
    pairs, skipped = _oxford_pairs(config, split)
    return _read_pairs(split, pairs, config, "trimap", skipped, stream, cache_dir)


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
        pairs.append(ExampleFiles(row, image_path, trimaps_dir / f"{row}.png"))
    return pairs, skipped


def _folder_split(config, split: str, stream: bool = False, cache_dir=None) -> Split:
    """A user's images/ + masks/ (or <split>/images/ + <split>/masks/)."""
    pairs, skipped = _folder_pairs(config, split)
    return _read_pairs(split, pairs, config, "index", skipped, stream, cache_dir)


def _folder_pairs(config, split: str) -> tuple:
    """(pairs, skipped) of a split of a user's images/ + masks/: a photo whose name another photo
    or two masks share is skipped with its reason, and so is a link to a missing file."""
    root = Path(config.data_dir).expanduser()
    name, start, stop = parse_split(split)
    base = root / name if (root / name / "images").is_dir() else root
    images_dir, masks_dir = base / "images", base / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        per_object = _per_object_pairs(config, root, split)
        if per_object is not None:
            return per_object
        raise DataError(
            f"--data-dir {root}: expected images/ and masks/ (or {name}/images/ and "
            f"{name}/masks/) holding files with the same stem, e.g. images/cat1.jpg and "
            "masks/cat1.png" + (", or (--labels instance) one folder per image, ID/images/ID.png "
                                "and ID/masks/*.png with one mask per object"
                                if config.labels == "instance" else "")
        )
    if base == root and name not in ("train",):
        raise DataError(
            f"--data-dir {root} has no {name}/ folder for split {split!r}: its one images/ + "
            "masks/ pair is the split 'train' (to train, hold part of it out for validation "
            "with --validation-fraction 0.2; to evaluate on it: --split train)"
        )
    masks = _by_stem(p for p in masks_dir.iterdir() if p.is_file())
    entries = sorted(p for p in images_dir.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    if not files:
        raise DataError(f"{images_dir} is empty")
    photos = _by_stem(_slice(files, start, stop))
    skipped = [(p.name, f"a link to {os.readlink(p)}, which does not exist") for p in entries
               if p.is_symlink() and not p.exists()]
    pairs = []
    for stem, found in photos.items():
        mask = masks.get(stem, [masks_dir / f"{stem}.png"])
        if len(found) > 1 or len(mask) > 1:
            which, named = ("photos", found) if len(found) > 1 else ("masks", mask)
            skipped.append((stem, f"{len(named)} {which} share the name {stem} "
                                  f"({', '.join(p.name for p in named)}): which pair is meant is "
                                  "unclear; rename or remove all but one"))
            continue
        pairs.append(ExampleFiles(stem, found[0], mask[0]))
    return pairs, skipped


def object_folders(folder: Path) -> list:
    """The ID/ folders of a one-folder-per-image layout (ID/images/ID.png and ID/masks/*.png, one
    mask per object, as the 2018 Data Science Bowl ships), sorted; [] for any other folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")
                  and (p / "images").is_dir() and (p / "masks").is_dir())


def _per_object_pairs(config, root: Path, split: str) -> tuple | None:
    """(pairs, skipped) of a split of a one-folder-per-image layout, each pair's mask the
    folder of its objects' masks (decoding.read_instances reads it); None for another layout."""
    name, start, stop = parse_split(split)
    base = root / name if object_folders(root / name) else root
    folders = object_folders(base)
    if not folders:
        return None
    example = folders[0].name
    if config.labels != "instance":
        raise DataError(f"--data-dir {root} holds one folder per image with one mask per object "
                        f"({example}/images/, {example}/masks/): read it with --labels instance")
    if base == root and name != "train":
        raise DataError(f"--data-dir {root} has no {name}/ folder for split {split!r}: its image "
                        "folders are the split 'train' (to train, hold part of it out for "
                        "validation with --validation-fraction 0.2; to evaluate on it: --split "
                        "train)")
    pairs, skipped = [], []
    for folder in _slice(folders, start, stop):
        photos = sorted(p for p in (folder / "images").iterdir()
                        if p.is_file() and not p.name.startswith("."))
        if len(photos) != 1:
            skipped.append((folder.name, f"{folder / 'images'} holds {len(photos)} photos; "
                                         f"expected one ({folder.name}.png)"))
            continue
        pairs.append(ExampleFiles(folder.name, photos[0], folder / "masks"))
    return pairs, skipped


def _by_stem(paths) -> dict:
    """File stem -> the paths with that stem, in the order of the sorted paths."""
    found = {}
    for path in sorted(paths):
        found.setdefault(path.stem, []).append(path)
    return found


def _synthetic_split(config, name: str, count: int, seed: int) -> Split:
    images, masks, policy = [], [], Policy.from_config(config)
    for example in synthetic.make_examples(count, seed):
        mask = preprocess.trimap_to_classes(example["segmentation_mask"][..., 0], config.labels)
        image, mask = policy.fit(example["image"], mask.numpy())
        images.append(image)
        masks.append(mask)
    return _stack(name, images, masks, [f"synthetic_{seed}_{i}" for i in range(count)], [],
                  config)
