"""Training data larger than memory (`--cache`).

    memory  every training photo decoded once and held as uint8 arrays (the default while they
            fit --memory-budget-gb: the fastest);
    disk    decoded once, when the run starts, into one uint8 file per photo in the run folder's
            cache/, read back from there every epoch;
    none    decoded from the files again every epoch, in parallel.

`auto` picks memory when the estimate, printed before any photo is decoded, fits the budget (half
of this machine's memory unless given), and disk otherwise. Streamed or not, the batches are the
same for the same seed: the files are shuffled as the arrays would be, then decoded and fitted by
the same functions. Validation data is always held in memory (it is usually a fifth of the data
or less); only the training split is streamed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from unet_tf.data import geometry, preprocess
from unet_tf.data.decoding import decode_pair, fit_graph


def machine_memory() -> int:
    """Bytes of memory of this machine (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def budget_bytes(config) -> int:
    return int(config.memory_budget_gb * 2**30) or machine_memory() // 2


def estimate_bytes(config, files: list) -> int:
    """Bytes the training photos take as arrays at their training size: 4 a pixel (uint8 RGB and
    the mask); for --resize none from each photo's header, without decoding it."""
    if config.resize != "none":
        return len(files) * config.image_size ** 2 * 4
    total = 0
    for _, image_path, _ in files:
        with Image.open(image_path) as image:
            width, height = image.size
        total += int(width * height * config.scale ** 2) * 4
    return total


def choose_cache(config, files: list) -> tuple:
    """(cache, message): where the training photos will live, and why, before any is decoded."""
    need, budget = estimate_bytes(config, files), budget_bytes(config)
    cache = config.cache
    if cache == "auto":
        cache = "memory" if need <= budget else "disk"
    where = {"memory": "held in memory", "disk": "cached on disk in the run folder",
             "none": "read from the files every epoch"}[cache]
    message = (f"training data: {len(files)} photos, about {need / 2**20:,.0f} MiB as arrays "
               f"(memory budget {budget / 2**20:,.0f} MiB): {where}")
    return cache, message


def examples(split, config, training: bool, seed: int | None):
    """uint8 (image, mask) examples of a streamed split, fitted as training stores them, in the
    order the in-memory arrays would take (shuffled when `training`): read back from the disk
    cache when the split was decoded into one, else decoded from the files."""
    cached = len(split.files[0]) > 3
    sources = [str(f[3]) for f in split.files] if cached else [str(f[1]) for f in split.files]
    paths = tf.data.Dataset.from_tensor_slices((sources, [str(f[2]) for f in split.files]))
    if training:  # cheap: paths, not photos, so the whole split is one buffer, as in memory
        paths = paths.shuffle(min(config.shuffle_buffer, len(split.files)), seed=seed,
                              reshuffle_each_iteration=True)

    def read(source, mask_path):
        if cached:
            with np.load(source.decode()) as arrays:
                return arrays["image"], arrays["mask"]
        image, mask, reason, _ = decode_pair(Path(source.decode()), Path(mask_path.decode()),
                                             config, split.encoding)
        if reason:  # checked when the split was loaded: the file changed since
            raise ValueError(f"{source.decode()}: {reason}")
        return image, mask

    def decode(source, mask_path):
        image, mask = tf.numpy_function(read, [source, mask_path], [tf.uint8, tf.uint8])
        image.set_shape([None, None, 3])
        mask.set_shape([None, None])
        return (image, mask) if cached else fit_graph(image, mask, config)

    return paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_streamed_dataset(split, config, batch_size: int, seed: int | None,
                          **batching) -> tf.data.Dataset:
    """Training batches of a streamed split, as `preprocess.make_dataset` makes them from arrays
    (`batching`: its augmentation, crop and background arguments)."""
    native = config.resize == "none"
    return preprocess.batch_examples(
        examples(split, config, True, seed), batch_size, training=True, native=native,
        side=None if native else config.image_size, seed=seed, **batching)


def sample_images(split, config, count: int = 512) -> np.ndarray:
    """uint8 [N, S, S, 3] of up to `count` of a streamed split's photos at the model's size (tiles
    for --resize none): enough to measure BatchNorm statistics on."""
    images = []
    for image, mask in examples(split, config, False, None).take(count).as_numpy_iterator():
        if config.resize == "none":
            images += geometry.tiles(image, mask, config.model_size, 0)[0]
        else:
            images.append(image)
    return np.stack(images[:count])
