"""Training data larger than memory (`--cache`).

    memory  every training photo decoded once and held as uint8 arrays (the default while they
            fit --memory-budget-gb: the fastest);
    disk    decoded in the first epoch into a tf.data cache file in the run folder, read back
            from it in the others;
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
from unet_tf.data.sources import decode_pair, fit_graph


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


def examples(split, config, training: bool, seed: int | None, cache_file: Path | None = None):
    """uint8 (image, mask) examples of a streamed split, fitted as training stores them, in the
    order the in-memory arrays would take (shuffled when `training`); with `cache_file` decoded
    once into it."""
    names, images, masks = zip(*split.files)
    paths = tf.data.Dataset.from_tensor_slices(([str(p) for p in images], [str(p) for p in masks]))
    shuffle = dict(buffer_size=min(config.shuffle_buffer, len(names)), seed=seed,
                   reshuffle_each_iteration=True)
    if training and cache_file is None:
        paths = paths.shuffle(**shuffle)  # cheap: paths, not photos
    def read(image_path, mask_path):
        image, mask, reason, _ = decode_pair(Path(image_path.decode()), Path(mask_path.decode()),
                                             config, split.encoding)
        if reason:  # checked when the split was loaded: the file changed since
            raise ValueError(f"{image_path.decode()}: {reason}")
        return image, mask

    def decode(image_path, mask_path):
        image, mask = tf.numpy_function(read, [image_path, mask_path], [tf.uint8, tf.uint8])
        image.set_shape([None, None, 3])
        mask.set_shape([None, None])
        return fit_graph(image, mask, config)

    dataset = paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache_file is not None:
        Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
        dataset = dataset.cache(str(cache_file))
        if training:
            dataset = dataset.shuffle(**shuffle)
    return dataset


def make_streamed_dataset(split, config, batch_size: int, seed: int | None,
                          cache_file: Path | None = None, **batching) -> tf.data.Dataset:
    """Training batches of a streamed split, as `preprocess.make_dataset` makes them from arrays
    (`batching`: its augmentation, crop and background arguments)."""
    native = config.resize == "none"
    return preprocess.batch_examples(
        examples(split, config, True, seed, cache_file), batch_size, training=True,
        native=native, side=None if native else config.image_size, seed=seed, **batching)


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
