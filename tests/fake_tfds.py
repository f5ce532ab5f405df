"""oxford_iiit_pet through tensorflow-datasets, offline: `tfds.testing.mock_data` serving examples in
the dataset's real 4.0.0 feature layout, built from real photos.

The examples are the Oxford-IIIT Pet sample's photographs and trimaps when it is present (its
`trainval` list for tfds' `train` split, `test` for `test`), converted as tfds stores them (RGB
uint8 images, uint8 [H, W, 1] trimaps of 1/2/3); otherwise synthetic pets of the same layout.
Split slices ("train[:85%]", "test[10:]") are resolved by tfds' own `ReadInstruction`.

Only the download is replaced: the project's code calls `tfds.builder`, `download_and_prepare` and
`as_dataset` as it does on Colab. Its check that the download host is reachable is answered "yes",
since this machine is offline.

    with mock_oxford_iiit_pet(counts={"train": 12, "test": 8}):
        train, val = data.load_splits(config)
"""

from __future__ import annotations

import contextlib
import types
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

PETS_SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/oxford-pets-sample"
LISTS = {"train": "trainval.txt", "test": "test.txt"}


def _sample_rows(sample: Path, split: str, count: int) -> list:
    """(name, class id, species id) of the first `count` listed photos that exist as images."""
    rows = []
    for line in (sample / "annotations" / LISTS[split]).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, class_id, species, _ = line.split()
        if (sample / "images" / f"{name}.jpg").is_file():
            rows.append((name, int(class_id), int(species)))
        if len(rows) == count:
            break
    return rows


def _from_sample(sample: Path, split: str, count: int) -> list:
    examples = []
    for name, class_id, species in _sample_rows(sample, split, count):
        # tfds 4.0.0 re-encodes the odd files (a GIF and an RGBA PNG named .jpg) as RGB JPEGs.
        image = np.asarray(Image.open(sample / "images" / f"{name}.jpg").convert("RGB"), np.uint8)
        trimap = np.asarray(Image.open(sample / "annotations" / "trimaps" / f"{name}.png"), np.uint8)
        examples.append(_example(image, trimap, f"{name}.jpg", class_id - 1, species - 1))
    return examples


def _synthetic(split: str, count: int) -> list:
    from unet_tf.data import synthetic

    seed = {"train": 1, "test": 2}[split]
    return [_example(e["image"], e["segmentation_mask"][..., 0], f"synthetic_{split}_{i}.jpg", i % 37,
                     i % 2)
            for i, e in enumerate(synthetic.make_examples(count, seed))]


def _example(image, trimap, file_name, label, species) -> dict:
    return {"image": image, "segmentation_mask": trimap[..., None], "file_name": file_name,
            "label": np.int64(label), "species": np.int64(species),
            "head_bbox": np.zeros(4, np.float32)}


def examples(split: str, count: int, sample: Path | None = PETS_SAMPLE) -> list:
    """`count` examples of tfds' `train` or `test` split, as numpy dicts."""
    if sample is not None and (sample / "annotations" / LISTS[split]).is_file():
        return _from_sample(sample, split, count)
    return _synthetic(split, count)


@contextlib.contextmanager
def mock_oxford_iiit_pet(counts=None, sample: Path | None = PETS_SAMPLE):
    """Within the block, `oxford_iiit_pet:4.0.0` through tfds serves `counts[split]` examples per
    split (default: 12 train, 8 test)."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    counts = dict(counts or {"train": 12, "test": 8})
    cache = {split: examples(split, n, sample) for split, n in counts.items()}
    read_splits = []  # what the code asked for, for tests to check

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
        spec = split if isinstance(split, str) else str(split)
        instruction = tfds.core.ReadInstruction.from_spec(spec)
        infos = {name: types.SimpleNamespace(num_examples=len(rows)) for name, rows in cache.items()}
        (absolute,) = instruction.to_absolute(infos)
        rows = cache[absolute.splitname][absolute.from_:absolute.to]
        read_splits.append(spec)
        features = self.info.features

        def generate():
            yield from rows

        dataset = tf.data.Dataset.from_generator(
            generate, output_signature={
                key: tf.TensorSpec(features[key].shape, features[key].dtype)
                for key in rows[0]})
        return dataset.apply(tf.data.experimental.assert_cardinality(len(rows)))

    with tfds.testing.mock_data(as_dataset_fn=as_dataset), \
            mock.patch("unet_tf.data.sources._network_reachable", lambda host, timeout=5.0: True):
        yield read_splits
