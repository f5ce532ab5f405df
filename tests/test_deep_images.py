"""Photos with more than 8 bits a channel (16-bit microscopy PNGs holding 12-bit camera values,
16-bit colour PNGs, 32-bit and float TIFFs) are stretched per image from their 0.1st to 99.9th
percentile to 0..255 (`images.to_uint8`), the same pixels in training, evaluation and predict;
8-bit photos are read exactly as before."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from unet_tf import data
from unet_tf.config import preset
from unet_tf.data.policy import Policy
from unet_tf.images import read_image, to_uint8, write_png


def stretched(values):
    """The rule, computed here on its own: percentiles over all values (all channels together),
    linear, clipped, rounded."""
    values = np.asarray(values, np.float64)
    low, high = np.percentile(values, 0.1), np.percentile(values, 99.9)
    if high == low:
        return np.zeros(values.shape, np.uint8)
    return np.rint(np.clip((values - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def camera_grey(height=64, width=64, seed=0):
    """12-bit camera values 0..4095 in 16 bits, in random order, with a few hot pixels."""
    rng = np.random.default_rng(seed)
    values = rng.permutation(np.arange(height * width) % 4096).reshape(height, width)
    return values.astype(np.uint16)


def save_rgb16_png(path, values):
    """A 16-bit colour PNG (Pillow cannot write one)."""
    path.write_bytes(tf.io.encode_png(tf.constant(values, tf.uint16)).numpy())


def test_16bit_grey_png_is_stretched_to_the_full_range(tmp_path):
    values = camera_grey()
    Image.fromarray(values).save(tmp_path / "nuclei.png")
    assert Image.open(tmp_path / "nuclei.png").mode == "I;16"
    image = read_image(tmp_path / "nuclei.png")
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    assert image.min() == 0 and image.max() == 255  # not 0..15, the top 8 bits of 12-bit values
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], stretched(values))


def test_16bit_rgb_png_is_stretched_over_all_channels_together(tmp_path):
    rng = np.random.default_rng(1)
    values = np.stack([rng.integers(0, 1000, (20, 30)), rng.integers(0, 4096, (20, 30)),
                       rng.integers(500, 2000, (20, 30))], axis=-1).astype(np.uint16)
    save_rgb16_png(tmp_path / "colour.png", values)
    assert Image.open(tmp_path / "colour.png").mode == "RGB"  # Pillow would keep 8 bits of 16
    image = read_image(tmp_path / "colour.png")
    np.testing.assert_array_equal(image, stretched(values))
    # One stretch for the three channels: red (darker) stays darker than green.
    assert image[..., 0].mean() < image[..., 1].mean()


def test_16bit_rgba_png_is_composited_over_white_then_stretched(tmp_path):
    values = np.zeros((4, 5, 4), np.uint16)
    values[..., :3] = np.arange(20, dtype=np.uint16).reshape(4, 5, 1) * 100
    values[..., 3] = 65535
    values[0, 0, 3] = 0  # transparent: white
    save_rgb16_png(tmp_path / "alpha.png", values)
    expected = values[..., :3].astype(np.float64)
    expected[0, 0] = 65535
    np.testing.assert_array_equal(read_image(tmp_path / "alpha.png"), stretched(expected))


def test_constant_16bit_image_gives_zeros(tmp_path):
    Image.fromarray(np.full((8, 16), 3000, np.uint16)).save(tmp_path / "flat.png")
    np.testing.assert_array_equal(read_image(tmp_path / "flat.png"),
                                  np.zeros((8, 16, 3), np.uint8))
    save_rgb16_png(tmp_path / "flat_rgb.png", np.full((8, 16, 3), 70, np.uint16))
    np.testing.assert_array_equal(read_image(tmp_path / "flat_rgb.png"),
                                  np.zeros((8, 16, 3), np.uint8))
    assert not to_uint8(np.full((3, 3), np.nan, np.float32)).any()


def test_deep_tiffs_are_stretched(tmp_path):
    import tifffile

    values = camera_grey(16, 24, seed=2)
    as_float = values.astype(np.float32) / 7.0
    Image.fromarray(as_float).save(tmp_path / "float.tif")
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "int32.tif")
    colour = np.stack([values, values // 2, 4095 - values], axis=-1)
    tifffile.imwrite(tmp_path / "colour16.tif", colour, photometric="rgb")
    for name, expected in [("float.tif", stretched(as_float)), ("int32.tif", stretched(values))]:
        image = read_image(tmp_path / name)
        for channel in range(3):
            np.testing.assert_array_equal(image[..., channel], expected, err_msg=name)
    np.testing.assert_array_equal(read_image(tmp_path / "colour16.tif"), stretched(colour))


@pytest.mark.parametrize("mode,name", [("RGB", "rgb.png"), ("L", "grey.png"), ("RGB", "rgb.jpg"),
                                       ("L", "grey.tif")])
def test_8bit_photos_are_read_as_pillow_reads_them(tmp_path, mode, name):
    rng = np.random.default_rng(3)
    shape = (12, 20, 3) if mode == "RGB" else (12, 20)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(tmp_path / name)
    with Image.open(tmp_path / name) as image:
        expected = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / name), expected)
    array = np.arange(6, dtype=np.uint8)
    assert to_uint8(array) is array  # uint8: untouched


def test_training_stores_what_read_image_and_the_resize_give(tmp_path):
    """A folder dataset of 16-bit photos (grey and colour) and an 8-bit one: the split holds
    read_image's pixels fitted as the policy fits them, whichever decoder read the file."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(4)
    for i in range(8):
        height, width = 40 + 4 * i, 48
        if i % 3 == 0:
            Image.fromarray(camera_grey(height, width, seed=i)).save(
                tmp_path / "images" / f"p{i}.png")
        elif i % 3 == 1:
            save_rgb16_png(tmp_path / "images" / f"p{i}.png",
                           rng.integers(0, 4096, (height, width, 3)).astype(np.uint16))
        else:
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
                tmp_path / "images" / f"p{i}.png")
        mask = np.zeros((height, width), np.uint8)
        mask[10:20, 10:30] = 255
        write_png(tmp_path / "masks" / f"p{i}.png", mask)
    config = preset("own-data", data_dir=str(tmp_path), labels="binary", image_size=32,
                    resize="squash", encoder_weights="none", seed=0)
    policy = Policy.from_config(config)
    from unet_tf.data.decoding import _graph_format

    formats = [_graph_format(tmp_path / "images" / f"p{i}.png", tmp_path / "masks" / f"p{i}.png",
                             config) for i in range(8)]
    assert formats == ["", "", "png"] * 2 + ["", ""]  # 16-bit: Pillow's path; 8-bit: the graph's
    stored = {}
    for split in data.load_splits(config):
        if split is not None:
            for name, image in zip(split.names, split.images):
                stored[name] = np.asarray(image)
    assert len(stored) == 8
    for name, image in stored.items():
        stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        path = tmp_path / "images" / f"{stem}.png"
        photo = read_image(path)
        mask = np.zeros(photo.shape[:2], np.uint8)
        expected = np.asarray(policy.fit_graph(photo, mask)[0])
        np.testing.assert_array_equal(image, expected, err_msg=name)
        assert image.max() > 200  # full range, not the top 8 bits of 12-bit values
