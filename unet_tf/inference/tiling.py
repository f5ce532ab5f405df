"""Tiled prediction at full resolution: a model of a fixed input size on a photo of any size.

    >>> probabilities = tiled_probabilities(fn, images, tile=256)   # float32 [B, H, W, C]

`segment` (inference.py) resizes the whole photo to the model's size, which loses fine detail on a
large photo. Here a square window of `tile` pixels slides over the photo instead, the model sees
every part of it at its own resolution, and the class probabilities of the tiles are put back
together:

- overlap: neighbouring tiles share `overlap` of their width, and the last tile of a row or column
  ends exactly at the photo's edge (it overlaps its neighbour more), so no tile reaches outside the
  photo. A photo smaller than the tile is padded with 0 (bottom and right) and cropped back.
- blending: a model is least sure near a tile's edges, where it sees the least context. Each
  pixel's probabilities are the weighted mean over the tiles that cover it, with weights highest at
  a tile's centre (a Gaussian, as nnU-Net uses, or a pyramid) and never 0, so there are no seams
  and a pixel that only a tile's edge covers still gets an answer.
- memory: tiles go through the model `batch_size` at a time, one batch after another (never in
  parallel). Besides the model's work on one batch, what is held is the images (a padded copy only
  of those smaller than the tile), a float32 accumulator the size of the answer, [B, H, W, C], and
  the sum of the weights, [H, W]. On a CPU, a 4000 x 3000 photo with 2 classes and 256-pixel tiles
  peaked at about 0.4 GB (0.5 GB inside a `tf.function`) above the photo's own float32 copy.

It is TensorFlow graph code (`tf.while_loop`, `tf.tensor_scatter_nd_add`), so it runs eagerly and
inside a `tf.function` of images whose height and width are unknown until run time, as in the
exported SavedModel's signatures.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

BLENDS = ("gaussian", "linear")
_FLOOR = 1e-3  # the smallest weight, as a share of the peak


def _stride(tile: int, overlap: float) -> int:
    """Pixels from one tile's origin to the next; checks `tile` and `overlap`."""
    if not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile!r}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    return max(1, int(tile) - round(tile * float(overlap)))


def tile_origins(length, tile: int, overlap: float):
    """Start offsets (int32 [n]) of the windows of `tile` pixels that cover [0, length).

    Args:
        length: the image's height or width; a Python int or an int scalar tensor.
        tile: the window's size in pixels.
        overlap: the share of a window its neighbour covers too; the stride is
            tile - round(tile * overlap), at least 1.

    The last window ends exactly at `length` (it may overlap its neighbour more than the others
    do); a length shorter than the tile gives [0]: the image is padded up to the tile.
    """
    stride = _stride(tile, overlap)
    length = tf.cast(length, tf.int32)
    last = tf.maximum(length - tile, 0)  # where the last window starts
    count = (last + stride - 1) // stride + 1
    return tf.minimum(tf.range(count, dtype=tf.int32) * stride, last)


def blending_weights(tile: int, kind: str = "gaussian"):
    """Weights (float32 [tile, tile]) of a tile's pixels when overlapping tiles are averaged.

    Args:
        tile: the tile's size in pixels.
        kind: 'gaussian' (sigma = tile / 8, as nnU-Net uses) or 'linear' (a pyramid: 1 at the
            centre, falling in straight lines to the edges).

    Both peak at 1 in the centre, are symmetric under mirroring and transposing, and are floored
    at 1e-3 of the peak so that pixels near a tile's edges still count where nothing else covers
    them.
    """
    _stride(tile, 0.0)
    distance = np.abs(np.arange(tile, dtype=np.float64) - (tile - 1) / 2)  # from the centre
    if kind == "gaussian":
        sigma = tile / 8
        weights = np.exp(-(distance[:, None] ** 2 + distance[None, :] ** 2) / (2 * sigma ** 2))
    elif kind == "linear":
        profile = 1 - distance / (tile / 2)  # > 0 everywhere: the edges are half a pixel inside
        weights = np.minimum(profile[:, None], profile[None, :])
    else:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {kind!r}")
    weights = np.maximum(weights / weights.max(), _FLOOR)
    return tf.constant(weights, tf.float32)


def tiled_probabilities(probabilities_fn, images, tile: int, overlap: float = 0.25,
                        batch_size: int = 8, blend: str = "gaussian"):
    """Class probabilities (float32 [B, H, W, C]) of images of any size, tile by tile.

    Args:
        probabilities_fn: maps float32 tiles [N, tile, tile, 3] to class probabilities
            [N, tile, tile, C]; C must be known statically from its output.
        images: float32 [B, H, W, 3], any H and W (also unknown until run time).
        tile: the tiles' size in pixels, usually the model's input size.
        overlap: the share of a tile its neighbour covers too (`tile_origins`).
        batch_size: how many tiles go through `probabilities_fn` at a time.
        blend: the weights of `blending_weights`, 'gaussian' or 'linear'.

    Each pixel's probabilities are the weighted mean of those of every tile that covers it. An
    image smaller than the tile in a dimension is padded there (bottom or right, with 0) and the
    answer cropped back.
    """
    _stride(tile, overlap)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    weights = blending_weights(tile, blend)
    images = tf.cast(images, tf.float32)
    static_shape = images.shape[:3]
    count, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    padded_height, padded_width = tf.maximum(height, tile), tf.maximum(width, tile)
    images = tf.pad(images, [[0, 0], [0, padded_height - height], [0, padded_width - width],
                             [0, 0]])  # no copy when there is nothing to pad
    rows, columns = tile_origins(height, tile, overlap), tile_origins(width, tile, overlap)
    per_image = tf.size(rows) * tf.size(columns)
    classes = []  # C, known once probabilities_fn has been called (traced)

    def with_classes(total):
        """`total`, or zeros with C channels if it has none yet."""
        if not classes:  # only eagerly, for no images: a graph traces the loop's body first
            classes.append(_classes(probabilities_fn(tf.zeros([0, tile, tile, 3]))))
        return tf.cond(tf.equal(tf.shape(total)[3], 0),
                       lambda: tf.zeros(tf.concat([tf.shape(total)[:3], [classes[0]]], 0)),
                       lambda: total)

    def add_weights(start, total_weight):  # the same for every image: summed once
        k = tf.range(start, tf.minimum(start + batch_size, per_image))
        return start + batch_size, tf.tensor_scatter_nd_add(
            total_weight, _places(k, rows, columns, tile),
            tf.broadcast_to(weights, [tf.size(k), tile, tile]))

    def add_probabilities(start, total):  # tiles numbered image by image, row by row
        k = tf.range(start, tf.minimum(start + batch_size, count * per_image))
        image = tf.broadcast_to((k // per_image)[:, None, None, None], [tf.size(k), tile, tile, 1])
        where = tf.concat([image, _places(k % per_image, rows, columns, tile)], axis=-1)
        probabilities = tf.cast(probabilities_fn(tf.gather_nd(images, where)), tf.float32)
        if not classes:
            classes.append(_classes(probabilities))
        # `total` starts with no channels: how many it needs is only known here, once
        # probabilities_fn has been called (traced) and not before, to trace it only once.
        return start + batch_size, tf.tensor_scatter_nd_add(
            with_classes(total), where, probabilities * weights[:, :, None])

    loop = {"parallel_iterations": 1}  # one tile batch after another: memory for one
    _, total_weight = tf.while_loop(lambda start, _: start < per_image, add_weights,
                                    [0, tf.zeros([padded_height, padded_width])], **loop)
    _, total = tf.while_loop(lambda start, _: start < count * per_image, add_probabilities,
                             [0, tf.zeros([count, padded_height, padded_width, 0])],
                             shape_invariants=[tf.TensorShape([]), tf.TensorShape([None] * 4)],
                             **loop)
    probabilities = (with_classes(total) / total_weight[None, :, :, None])[:, :height, :width]
    probabilities.set_shape(static_shape.concatenate([classes[0]]))
    return probabilities


def _classes(probabilities) -> int:
    """C, from probabilities [N, tile, tile, C] whose C must be known statically."""
    if probabilities.shape.rank != 4 or probabilities.shape[-1] is None:
        raise ValueError("probabilities_fn must return probabilities [N, tile, tile, C] with C "
                         f"known statically, got shape {probabilities.shape}")
    return int(probabilities.shape[-1])


def _places(k, rows, columns, tile: int):
    """(row, column) of every pixel of the tiles numbered `k` (row by row) of the grid of
    origins `rows` x `columns`: int32 [n, tile, tile, 2]."""
    offsets = tf.range(tile, dtype=tf.int32)
    top = tf.gather(rows, k // tf.size(columns))[:, None] + offsets  # [n, tile]
    left = tf.gather(columns, k % tf.size(columns))[:, None] + offsets
    shape = [tf.size(k), tile, tile]
    return tf.stack([tf.broadcast_to(top[:, :, None], shape),
                     tf.broadcast_to(left[:, None, :], shape)], axis=-1)
