"""Tiled prediction (unet_tf/inference/tiling.py) against independent references: the function applied to the
whole image at once, hand-computed window origins, and a numpy blend with explicit loops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from unet_tf.inference.tiling import blending_weights, tile_origins, tiled_probabilities

TILE = 32
MIX = np.random.RandomState(0).normal(size=(3, 2)).astype(np.float32)  # colour -> 2 logits


def per_pixel(tiles):
    """Softmax of a fixed 1x1 linear map of each pixel's colour: depends on the pixel only."""
    return tf.nn.softmax(tf.einsum("nhwc,ck->nhwk", tiles, tf.constant(MIX)), axis=-1)


def tile_mean(tiles):
    """The same answer over a whole tile: its mean pixel value in class 0, the rest in class 1."""
    mean = tf.reduce_mean(tiles, axis=[1, 2, 3], keepdims=True) * tf.ones_like(tiles[..., :1])
    return tf.concat([mean, 1 - mean], axis=-1)


def random_images(batch, height, width, seed=0):
    return np.random.RandomState(seed).uniform(size=(batch, height, width, 3)).astype(np.float32)


def gaussian_reference(tile):
    """nnU-Net's Gaussian importance map: sigma tile / 8, peak 1, floored at 1e-3."""
    centre = (tile - 1) / 2
    y, x = np.mgrid[:tile, :tile]
    weights = np.exp(-((y - centre) ** 2 + (x - centre) ** 2) / (2 * (tile / 8) ** 2))
    return np.maximum(weights / weights.max(), 1e-3)


@pytest.mark.parametrize("height, width, batch, overlap, batch_size, blend", [
    (70, 53, 1, 0.25, 8, "gaussian"),  # not multiples of the tile
    (70, 53, 2, 0.5, 3, "linear"),     # two images; batches that split an image's tiles
    (20, 45, 1, 0.25, 8, "gaussian"),  # smaller than the tile in one dimension
    (20, 17, 2, 0.0, 1, "linear"),     # smaller than the tile in both
])
def test_per_pixel_function_matches_the_whole_image(height, width, batch, overlap, batch_size,
                                                    blend):
    images = random_images(batch, height, width)
    tiled = tiled_probabilities(per_pixel, images, TILE, overlap, batch_size, blend).numpy()
    whole = per_pixel(tf.constant(images)).numpy()
    assert tiled.shape == (batch, height, width, 2) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(tiled.argmax(-1), whole.argmax(-1))


def test_a_keras_layer_as_the_function():
    layer = keras.layers.Conv2D(2, 1, activation="softmax")
    layer.build((None, None, None, 3))
    layer.set_weights([MIX[None, None], np.array([0.1, -0.2], np.float32)])
    images = random_images(1, 45, 70, seed=1)
    tiled = tiled_probabilities(layer, images, TILE).numpy()
    whole = keras.ops.convert_to_numpy(layer(images))
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("length, tile, overlap, expected", [
    (70, 32, 0.25, [0, 24, 38]),  # stride 24; the last window moved back to end at 70
    (56, 32, 0.25, [0, 24]),      # 24 + 32 = 56: ends exactly there
    (57, 32, 0.25, [0, 24, 25]),
    (32, 32, 0.25, [0]),
    (20, 32, 0.25, [0]),          # shorter than the tile: padded
    (64, 32, 0.0, [0, 32]),
    (80, 32, 0.5, [0, 16, 32, 48]),
    (5, 4, 0.99, [0, 1]),         # stride at least 1
])
def test_tile_origins_by_hand(length, tile, overlap, expected):
    assert tile_origins(length, tile, overlap).numpy().tolist() == expected
    assert tile_origins(tf.constant(length), tile, overlap).numpy().tolist() == expected


@pytest.mark.parametrize("tile, overlap", [(32, 0.25), (7, 0.5), (16, 0.0), (10, 0.9)])
def test_tile_origins_cover_every_pixel(tile, overlap):
    stride = max(1, tile - round(tile * overlap))
    for length in range(1, 150):
        origins = tile_origins(length, tile, overlap).numpy()
        extent = max(length, tile)
        covered = np.zeros(extent, bool)
        for start in origins:
            assert 0 <= start and start + tile <= extent
            covered[start:start + tile] = True
        assert covered.all()
        assert origins[0] == 0 and origins[-1] + tile == extent
        assert np.all(np.diff(origins) > 0) and np.all(np.diff(origins) <= stride)


@pytest.mark.parametrize("tile", [32, 33])
@pytest.mark.parametrize("kind", ["gaussian", "linear"])
def test_blending_weights_shape_symmetry_and_centre(tile, kind):
    weights = blending_weights(tile, kind).numpy()
    assert weights.shape == (tile, tile) and weights.dtype == np.float32
    np.testing.assert_array_equal(weights, weights.T)
    np.testing.assert_array_equal(weights, weights[::-1])
    np.testing.assert_array_equal(weights, weights[:, ::-1])
    assert np.all(weights > 0)
    low, high = (tile - 1) // 2, tile // 2  # the centre pixel(s)
    assert np.all(weights[low:high + 1, low:high + 1] == weights.max())
    assert weights.max() > weights[0, 0] and weights.max() > weights[0, low]
    middle = weights[low, :low + 1]  # from the edge to the centre along the middle row
    assert np.all(np.diff(middle) >= 0)
    if kind == "gaussian":
        np.testing.assert_allclose(weights, gaussian_reference(tile), rtol=1e-6)
        assert weights.min() == pytest.approx(1e-3)


def test_unknown_blend_and_bad_arguments():
    with pytest.raises(ValueError, match="blend"):
        blending_weights(32, "cosine")
    with pytest.raises(ValueError, match="overlap"):
        tile_origins(70, 32, 1.0)
    with pytest.raises(ValueError, match="tile"):
        tiled_probabilities(per_pixel, random_images(1, 8, 8), 0)
    with pytest.raises(ValueError, match="batch_size"):
        tiled_probabilities(per_pixel, random_images(1, 8, 8), 8, batch_size=0)


def test_overlapping_tiles_are_blended():
    """One answer per tile: the result is a weighted mean where tiles overlap, not the last tile."""
    height, width = 56, 70  # origins: rows [0, 24], columns [0, 24, 38]
    images = random_images(1, height, width, seed=2)
    images[:, :, 40:] += 1  # tiles further right see a larger mean
    tiled = tiled_probabilities(tile_mean, images, TILE, 0.25).numpy()[0, :, :, 0]

    weights = gaussian_reference(TILE)
    total, weight_sum = np.zeros((height, width)), np.zeros((height, width))
    means = {}
    for top in (0, 24):
        for left in (0, 24, 38):
            window = (slice(top, top + TILE), slice(left, left + TILE))
            means[top, left] = images[0][window].mean()
            total[window] += weights * means[top, left]
            weight_sum[window] += weights
    np.testing.assert_allclose(tiled, total / weight_sum, rtol=1e-5)

    # Row 10 lies in the top tiles only; column 30 in the tiles starting at 0 and 24, column 50 in
    # those starting at 24 and 38: strictly between their tiles' values.
    assert tiled[10, 5] == pytest.approx(means[0, 0], rel=1e-6)
    for column, (a, b) in ((30, (0, 24)), (50, (24, 38))):
        low, high = sorted([means[0, a], means[0, b]])
        assert low < tiled[10, column] < high
        assert low + 1e-4 < tiled[10, column] < high - 1e-4  # a real mean, not one of them


def test_inside_a_tf_function_of_unknown_size():
    calls = []

    def counted(tiles):
        calls.append(1)
        return per_pixel(tiles)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def probabilities(images):
        return tiled_probabilities(counted, images, TILE, batch_size=4)

    for batch, height, width in ((2, 70, 53), (1, 20, 45)):
        images = random_images(batch, height, width, seed=height)
        tiled = probabilities(tf.constant(images)).numpy()
        np.testing.assert_allclose(tiled, per_pixel(tf.constant(images)).numpy(), rtol=0,
                                   atol=1e-6)
    assert len(calls) == 1  # one trace, and the function appears once in the graph
    assert probabilities.get_concrete_function().structured_outputs.shape.as_list() == [
        None, None, None, 2]
    assert probabilities(tf.zeros([0, 40, 30, 3])).shape == (0, 40, 30, 2)


def test_no_images_eagerly():
    assert tiled_probabilities(per_pixel, tf.zeros([0, 40, 30, 3]), TILE).shape == (0, 40, 30, 2)


def test_large_image_shape():
    images = random_images(1, 1000, 700, seed=3)
    tiled = tiled_probabilities(per_pixel, images, 128)
    assert tiled.shape == (1, 1000, 700, 2)
    np.testing.assert_allclose(tiled.numpy(), per_pixel(tf.constant(images)).numpy(), rtol=0,
                               atol=1e-6)
