"""The augmentation as training runs it: inside the tf.data pipeline `make_dataset` builds, over a
few hundred examples. Every random value is measured back from the output, independently of the
code that drew it, and checked for its range and its independence from the others.

Each example is a 128 px image of 16 x 16 cells of 8 x 8 pixels, each cell one flat colour, with a
mask holding each cell's index (0..255). The warped mask then says for every output pixel which
source cell it came from: a least-squares fit of that map gives the flip, zoom, rotation and shift.
Where the output pixel lies well inside a cell, its colour is the cell's colour after the colour
changes, which a fit per image gives: saturation from the chroma, contrast from the gray levels,
brightness from their mean.
"""

import numpy as np
import pytest

from unet_tf.data import make_dataset

SIZE, CELL = 128, 8
GRID = SIZE // CELL
EXAMPLES, BATCH = 320, 16
SCALE, ROTATION, COLOR = 0.25, 15.0, 0.2


def _source(seed=0):
    """The same cell picture for every example (colours in 90..170: no clipping after jitter)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(90, 171, (GRID, GRID, 3)).astype(np.uint8)
    image = np.kron(colours, np.ones((CELL, CELL, 1), np.uint8))
    cells = np.arange(GRID * GRID, dtype=np.uint8).reshape(GRID, GRID)
    mask = np.kron(cells, np.ones((CELL, CELL), np.uint8))
    return image, mask, colours.reshape(-1, 3) / 255.0


def _measure(image, mask, colours):
    """The draws behind one augmented example, and the share of its inner pixels whose colour
    matches the cell its mask names."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    centre = (SIZE - 1) / 2
    cell_x = (mask % GRID) * CELL + (CELL - 1) / 2  # source position of each pixel's cell
    cell_y = (mask // GRID) * CELL + (CELL - 1) / 2
    # Pixels near the centre map inside the source whatever the draw (no mirrored borders).
    near = (xx - centre) ** 2 + (yy - centre) ** 2 < (0.15 * SIZE) ** 2
    design = np.stack([xx[near], yy[near], np.ones(near.sum())], axis=1)
    fit, *_ = np.linalg.lstsq(design, np.stack([cell_x[near], cell_y[near]], axis=1), rcond=None)
    linear = fit[:2].T  # source = linear @ output + offset
    flip = np.linalg.det(linear) < 0
    rotation = linear @ np.diag([-1.0, 1.0]) if flip else linear  # undo the mirror's x
    zoom = 1 / np.sqrt(abs(np.linalg.det(linear)))
    angle = np.degrees(np.arctan2(rotation[0, 1] * -1, rotation[0, 0]))
    source_centre = np.array([centre, centre, 1.0]) @ fit
    shift = (source_centre - centre) / SIZE

    # Colour: pixels whose 5 x 5 neighbourhood is one cell show that cell's colour, changed
    # (bilinear sampling there reads that cell only).
    padded = np.pad(mask.astype(np.int64), 2, constant_values=-1)  # not at the output's edge
    inner = np.all([padded[2 + dy:SIZE + 2 + dy, 2 + dx:SIZE + 2 + dx] == mask
                    for dy in range(-2, 3) for dx in range(-2, 3)], axis=0)
    source = colours[mask[inner]]  # before the colour changes
    out = image[inner]
    chroma_in = source - source.mean(1, keepdims=True)
    chroma_out = out - out.mean(1, keepdims=True)
    chroma_gain = np.sum(chroma_in * chroma_out) / np.sum(chroma_in ** 2)  # (1+s)(1+c)
    gray_in, gray_out = source.mean(1), out.mean(1)
    contrast_gain, intercept = np.polyfit(gray_in, gray_out, 1)  # 1 + c
    # intercept = m - (1 + c) m + b / 2, with m the image's mean gray before contrast
    mean_gray = colours[mask].mean()
    brightness = 2 * (intercept + (contrast_gain - 1) * mean_gray)
    contrast = contrast_gain - 1
    saturation = chroma_gain / contrast_gain - 1
    predicted = (mean_gray + ((gray_in - mean_gray) * contrast_gain + brightness / 2))[:, None] \
        + chroma_in * chroma_gain
    follows = np.mean(np.abs(predicted - out).max(axis=1) < 0.02)
    return {"flip": float(flip), "zoom": zoom, "angle": angle, "shift_x": shift[0],
            "shift_y": shift[1], "saturation": saturation, "contrast": contrast,
            "brightness": brightness}, follows


@pytest.fixture(scope="module")
def measured():
    image, mask, colours = _source()
    images = np.repeat(image[None], EXAMPLES, axis=0)
    masks = np.repeat(mask[None], EXAMPLES, axis=0)
    dataset = make_dataset(images, masks, BATCH, training=True, seed=5, augment_scale=SCALE,
                           augment_rotation=ROTATION, augment_color=COLOR)
    draws, follows = [], []
    for x, y in dataset:
        for out_image, out_mask in zip(x.numpy(), y.numpy()):
            values, share = _measure(out_image.astype(np.float64), out_mask, colours)
            draws.append(values)
            follows.append(share)
    return {key: np.array([d[key] for d in draws]) for key in draws[0]}, np.array(follows)


RANGES = {"zoom": (1 - SCALE, 1 + SCALE), "angle": (-ROTATION, ROTATION),
          "shift_x": (-0.1, 0.1), "shift_y": (-0.1, 0.1), "saturation": (-COLOR, COLOR),
          "contrast": (-COLOR, COLOR), "brightness": (-COLOR, COLOR)}


def test_every_draw_is_uniform_over_its_range(measured):
    draws, _ = measured
    assert len(draws["zoom"]) == EXAMPLES
    assert 0.4 < draws["flip"].mean() < 0.6
    for name, (low, high) in RANGES.items():
        values, width = draws[name], high - low
        # within the range (up to the measurement's error) and spread over all of it
        assert values.min() > low - 0.03 * width and values.max() < high + 0.03 * width, name
        assert values.min() < low + 0.1 * width and values.max() > high - 0.1 * width, name
        assert np.std(values) == pytest.approx(width / np.sqrt(12), rel=0.15), name


def test_draws_are_pairwise_uncorrelated(measured):
    draws, _ = measured
    names = sorted(draws)
    correlation = np.corrcoef(np.stack([draws[n] for n in names]))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert abs(correlation[i, j]) < 0.2, (names[i], names[j], correlation[i, j])


def test_the_mask_follows_the_image_exactly(measured):
    _, follows = measured
    # Inside every cell, the image shows the colour of the cell the mask names.
    assert follows.min() > 0.995


def test_a_seed_repeats_the_augmentation_and_epochs_differ():
    image, mask, _ = _source()
    images, masks = np.repeat(image[None], 32, axis=0), np.repeat(mask[None], 32, axis=0)

    def epochs(seed, count=2):
        dataset = make_dataset(images, masks, BATCH, training=True, seed=seed,
                               augment_scale=SCALE, augment_rotation=ROTATION,
                               augment_color=COLOR)
        return [np.concatenate([y.numpy() for _, y in dataset]) for _ in range(count)]

    first, again, other = epochs(3), epochs(3), epochs(4)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1])  # each epoch draws anew
    assert not np.array_equal(first[0], other[0])
