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
from unet_tf.data.decoding import decode_pair
from unet_tf.data.policy import Policy


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
    if not Policy.from_config(config).native:
        return len(files) * config.image_size ** 2 * 4
    total = 0
    for example in files:
        with Image.open(example.image) as image:
            width, height = image.size
        total += int(width * height * config.scale ** 2) * 4
    return total


def choose_cache(config, files: list) -> tuple:
    """(cache, estimated bytes): where the training photos will live, before any is decoded."""
    need, cache = estimate_bytes(config, files), config.cache
    if cache == "auto":
        cache = "memory" if need <= budget_bytes(config) else "disk"
    return cache, need


def examples(split, config, training: bool, seed: int | None):
    """uint8 (image, mask) examples of a streamed split, fitted as training stores them, in the
    order the in-memory arrays would take (shuffled when `training`): read back from the disk
    cache when the split was decoded into one, else decoded from the files."""
    cached = split.files[0].cached is not None
    policy = Policy.from_config(config)
    sources = [str(f.cached if cached else f.image) for f in split.files]
    paths = tf.data.Dataset.from_tensor_slices((sources, [str(f.mask) for f in split.files]))
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
        return (image, mask) if cached else policy.fit_graph(image, mask)

    return paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_streamed_dataset(split, config, batch_size: int, seed: int | None,
                          **batching) -> tf.data.Dataset:
    """Training batches of a streamed split, as `preprocess.make_dataset` makes them from arrays
    (`batching`: its augmentation, crop and background arguments)."""
    policy = Policy.from_config(config)
    return preprocess.batch_examples(
        examples(split, config, True, seed), batch_size, training=True, native=policy.native,
        side=policy.stored_side, seed=seed, **batching)


def sample_images(split, config, count: int = 512) -> np.ndarray:
    """uint8 [N, S, S, 3] of up to `count` of a streamed split's photos at the model's size (tiles
    for --resize none): enough to measure BatchNorm statistics on."""
    images, native = [], Policy.from_config(config).native
    for image, mask in examples(split, config, False, None).take(count).as_numpy_iterator():
        if native:
            images += geometry.tiles(image, mask, config.model_size, 0)[0]
        else:
            images.append(image)
    return np.stack(images[:count])
