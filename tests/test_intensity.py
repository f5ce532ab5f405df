"""Photos with more than 8 bits a channel are mapped to 0..255 with one range a run measures on
its training photos (`--intensity auto`) and records in config.json; training, predict and the
export's serve_bytes map every photo with it, so that an empty field stays dark instead of having
its noise stretched into texture."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from unet_tf import data
from unet_tf.config import ConfigError, preset
from unet_tf.images import intensity_range, read_image, write_png
from unet_tf.plan import make_plan

SIZE = 32


def _noise_field(seed, height=40, width=48):
    """An empty microscope field: camera offset 100 plus a little noise."""
    return (100 + np.random.default_rng(seed).integers(0, 20, (height, width))).astype(np.uint16)


def _with_nucleus(seed, height=40, width=48):
    values = _noise_field(seed, height, width)
    values[10:25, 12:30] = 2500 + np.random.default_rng(seed).integers(0, 1500, (15, 18))
    return values


def _folder(root):
    """Eight 16-bit grey photos (two of them empty fields) with binary masks."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    photos = {}
    for i in range(8):
        values = _noise_field(i) if i in (3, 6) else _with_nucleus(i)
        Image.fromarray(values).save(root / "images" / f"f{i}.png")
        write_png(root / "masks" / f"f{i}.png", np.where(values > 1000, 255, 0).astype(np.uint8))
        photos[f"f{i}"] = values
    return photos


def _expected(values, low, high):
    """The mapping, computed here on its own."""
    scaled = (values.astype(np.float64) - low) / (high - low)
    return np.rint(np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def test_intensity_range_pools_the_photos_percentiles():
    a = np.arange(1000, dtype=np.uint16).reshape(25, 40)
    b = np.full((10, 10), 5000, np.uint16)
    low, high = intensity_range([a, b])
    pooled = np.concatenate([a.ravel(), b.ravel()]).astype(np.float64)
    assert (low, high) == (np.percentile(pooled, 0.1), np.percentile(pooled, 99.9))
    assert intensity_range([]) is None


def test_the_run_records_one_range_and_trains_on_it(tmp_path):
    photos = _folder(tmp_path)
    config = preset("own-data", data_dir=str(tmp_path), image_size=SIZE, resize="squash",
                    encoder_weights="none", seed=0)
    plan = make_plan(config)
    pooled = np.concatenate([v.ravel() for v in photos.values()]).astype(np.float64)
    low, high = np.percentile(pooled, [0.1, 99.9])
    assert plan.config.intensity == f"{float(f'{low:.6g}'):g},{float(f'{high:.6g}'):g}"
    assert any("--intensity auto" in note for note in plan.notes)
    low, high = (float(v) for v in plan.config.intensity.split(","))
    stored = {}
    for split in data.load_splits(dataclasses.replace(plan.config, resize="none")):
        if split is not None:
            stored.update({n.rsplit("/", 1)[-1].split(".")[0]: np.asarray(i)
                           for n, i in zip(split.names, split.images)})
    assert set(stored) == set(photos)
    for name, values in photos.items():
        np.testing.assert_array_equal(stored[name][..., 0], _expected(values, low, high),
                                      err_msg=name)
    assert stored["f3"].max() < 10  # the empty field stays dark (per image it spans 0..255)
    assert read_image(tmp_path / "images" / "f3.png").max() == 255


def test_eight_bit_photos_and_a_given_range_are_left_as_they_are(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(4):
        Image.fromarray(np.full((40, 48, 3), 30 * i, np.uint8)).save(
            tmp_path / "images" / f"p{i}.png")
        write_png(tmp_path / "masks" / f"p{i}.png", np.zeros((40, 48), np.uint8))
    config = preset("own-data", data_dir=str(tmp_path), image_size=SIZE, resize="squash",
                    encoder_weights="none", seed=0)
    plan = make_plan(config)
    assert plan.config.intensity == "auto"
    assert not any("intensity" in note for note in plan.notes)
    for given in ("per-image", "0,4095"):
        assert make_plan(dataclasses.replace(config, intensity=given)).config.intensity == given


@pytest.mark.parametrize("value", ["3", "5,1", "a,b", "1,2,3", "nan,4"])
def test_a_wrong_intensity_is_one_line(value):
    with pytest.raises(ConfigError, match="--intensity"):
        preset("own-data", data_dir="x", intensity=value)


def _threshold_run(folder, intensity):
    """A run folder whose model says foreground where the photo is brighter than 127.5, recording
    `intensity`."""
    import keras

    folder.mkdir(parents=True)
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(2, 1)
    model = keras.Model(inputs, conv(inputs))
    weights = np.zeros((1, 1, 3, 2), np.float32)
    weights[0, 0, :, 1] = 40.0 / 3  # logit(foreground) - logit(background) = 40 * mean - 20
    conv.set_weights([weights, np.array([0.0, -20.0], np.float32)])
    model.save(folder / "model.keras")
    config = preset("own-data", data_dir=str(folder), resize="squash", image_size=SIZE,
                    intensity=intensity)
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return folder / "model.keras"


def test_predict_and_the_export_map_deep_photos_with_the_run_s_range(tmp_path):
    from unet_tf.export import main as export_main
    from unet_tf.predict import main as predict_main

    model = _threshold_run(tmp_path / "run", "100,4000")
    empty, nucleus = _noise_field(1), _with_nucleus(2)
    for name, values in (("empty", empty), ("nucleus", nucleus)):
        Image.fromarray(values).save(tmp_path / f"{name}.png")
    assert predict_main(["--model", str(model), "--out", str(tmp_path / "masks"),
                         str(tmp_path / "empty.png"), str(tmp_path / "nucleus.png")]) == 0
    empty_mask = np.asarray(Image.open(tmp_path / "masks" / "empty_mask.png"))
    nucleus_mask = np.asarray(Image.open(tmp_path / "masks" / "nucleus_mask.png"))
    assert not empty_mask.any()  # per image, half its noise would be foreground
    assert nucleus_mask[12:23, 14:28].all() and nucleus_mask.mean() < 0.2

    export = tmp_path / "export"
    assert export_main(["--model", str(model), "--out", str(export)]) == 0
    assert json.loads((export / "metadata.json").read_text())["intensity"] == [100.0, 4000.0]
    served = tf.saved_model.load(str(export))
    colour = np.stack([nucleus, nucleus // 2, empty], axis=-1)
    for values in (empty, nucleus, colour):
        encoded = tf.io.encode_png(tf.constant(values if values.ndim == 3 else values[..., None],
                                               tf.uint16)).numpy()
        from_bytes = served.signatures["serve_bytes"](images=tf.constant([encoded]))
        pixels = _expected(values if values.ndim == 3 else np.repeat(values[..., None], 3, -1),
                           100.0, 4000.0)
        from_pixels = served.signatures["serving_default"](images=tf.constant(pixels[None]))
        np.testing.assert_array_equal(from_bytes["mask"], from_pixels["mask"])
        np.testing.assert_allclose(from_bytes["probabilities"], from_pixels["probabilities"],
                                   atol=1e-6)
    # an 8-bit PNG is served as before
    eight = np.full((20, 30, 3), 200, np.uint8)
    out = served.signatures["serve_bytes"](images=tf.constant([tf.io.encode_png(eight).numpy()]))
    assert out["mask"].numpy().all()
