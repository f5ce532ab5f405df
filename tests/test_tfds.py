"""oxford_iiit_pet through tensorflow-datasets, as the tutorial preset loads it on Colab, offline:
tfds' own mock serves real photos in the dataset's 4.0.0 feature layout (see fake_tfds.py)."""

import json

import numpy as np
import pytest
import tensorflow as tf
from fake_tfds import examples, mock_oxford_iiit_pet

from unet_tf import data
from unet_tf.config import preset

SMALL = dict(encoder_weights="none", image_size=64, alpha=0.35, decoder_filters=(16, 16, 16, 16))


def _expected(split, count, labels="trimap"):
    """Names, images and class masks computed here from the raw examples (tf.image, not the
    project's preprocessing functions)."""
    raw = examples(split, count)
    names = [e["file_name"] for e in raw]
    images = np.stack([tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
        e["image"], (64, 64))), 0, 255), tf.uint8).numpy() for e in raw])
    trimaps = np.stack([tf.image.resize(e["segmentation_mask"], (64, 64), method="nearest")
                        .numpy()[..., 0] for e in raw])
    masks = trimaps - 1 if labels == "trimap" else (trimaps != 2).astype(np.uint8)
    return names, images, masks


def test_train_and_test_splits_through_tfds():
    config = preset("tutorial", **SMALL)
    with mock_oxford_iiit_pet({"train": 12, "test": 8}) as asked:
        data.ensure_available(config)
        train, val = data.load_splits(config)
    assert asked == ["train", "test"]  # the tutorial's splits, as tfds split strings
    for split, name, count in ((train, "train", 12), (val, "test", 8)):
        names, images, masks = _expected(name, count)
        assert split.names == names and split.name == name
        np.testing.assert_array_equal(split.images, images)
        np.testing.assert_array_equal(split.masks, masks)
    assert set(np.unique(train.masks)) == {0, 1, 2}
    assert not set(train.names) & set(val.names)


def test_validation_fraction_slices_the_train_split_through_tfds():
    config = preset("tutorial", **SMALL, validation_fraction=0.25, labels="binary")
    with mock_oxford_iiit_pet({"train": 12, "test": 8}) as asked:
        train, val = data.load_splits(config)
    assert asked == ["train[:75%]", "train[75%:]"]  # the test split stays untouched
    names, images, masks = _expected("train", 12, labels="binary")
    assert train.names == names[:9] and val.names == names[9:]
    np.testing.assert_array_equal(np.concatenate([train.images, val.images]), images)
    np.testing.assert_array_equal(np.concatenate([train.masks, val.masks]), masks)
    assert set(np.unique(train.masks)) == {0, 1}


def test_a_split_tfds_does_not_have_is_a_data_error():
    config = preset("tutorial", **SMALL, val_split="validation")
    with mock_oxford_iiit_pet({"train": 4, "test": 4}):
        with pytest.raises(data.DataError, match="validation"):
            data.load_splits(config)


def test_tutorial_preset_trains_on_tfds_from_the_command_line(tmp_path, capsys):
    from unet_tf.train import main

    run = tmp_path / "run"
    flags = ["--preset", "tutorial", "--encoder-weights", "none", "--image-size", "64",
             "--alpha", "0.35", "--decoder-filters", "16", "16", "16", "16", "--epochs", "2",
             "--batch-size", "4", "--run-dir", str(run)]
    with mock_oxford_iiit_pet({"train": 8, "test": 6}):
        assert main(flags) == 0
    assert "train: 8 examples" in capsys.readouterr().out
    report = json.loads((run / "metrics.json").read_text())
    assert report["examples"] == 6 and report["split"] == "test"
    assert report["epochs_run"] == 2 and np.isfinite(report["mean_dice"])
    config = json.loads((run / "config.json").read_text())
    assert (config["dataset"], config["data_dir"]) == ("oxford_iiit_pet", "")
