"""Objects from class probabilities and their scores, on hand-made arrays (numpy only, no model).
Expected values are worked out by hand in the comments."""

import numpy as np
import pytest

from unet_tf.instances import (
    THRESHOLDS,
    aggregate_scores,
    boundary_target,
    min_object_size,
    object_scores,
    separate,
)

BG, IN, BD = 0, 1, 2


def one_hot(classes, confidence=0.8):
    """Probabilities [H, W, 3] whose most likely class is `classes` [H, W]."""
    other = (1 - confidence) / 2
    probabilities = np.full(classes.shape + (3,), other, np.float32)
    np.put_along_axis(probabilities, classes[..., None].astype(np.int64), confidence, axis=-1)
    return probabilities


def test_boundary_target_of_two_touching_rectangles():
    instances = np.zeros((7, 8), np.int32)
    instances[1:6, 1:4] = 1
    instances[1:6, 4:7] = 2
    expected = np.array([[0, 0, 0, 0, 0, 0, 0, 0],
                         [0, 2, 2, 2, 2, 2, 2, 0],
                         [0, 2, 1, 2, 2, 1, 2, 0],
                         [0, 2, 1, 2, 2, 1, 2, 0],
                         [0, 2, 1, 2, 2, 1, 2, 0],
                         [0, 2, 2, 2, 2, 2, 2, 0],
                         [0, 0, 0, 0, 0, 0, 0, 0]], np.uint8)
    target = boundary_target(instances)
    assert target.dtype == np.uint8
    np.testing.assert_array_equal(target, expected)


def test_boundary_target_width_and_the_image_edge():
    square = np.zeros((9, 9), np.int64)
    square[1:8, 1:8] = 5  # 7x7; with width 2 the interior is the 3x3 centre
    expected = np.zeros((9, 9), np.uint8)
    expected[1:8, 1:8] = 2
    expected[3:6, 3:6] = 1
    np.testing.assert_array_equal(boundary_target(square, width=2), expected)
    # an object filling the image has no boundary: the image's edge is not one
    np.testing.assert_array_equal(boundary_target(np.ones((3, 3), np.int32)), np.ones((3, 3)))
    # a diagonal contact is a boundary; the corners see only their own object (and the edge)
    diagonal = np.array([[1, 1, 0, 0],
                         [1, 1, 0, 0],
                         [0, 0, 2, 2],
                         [0, 0, 2, 2]])
    np.testing.assert_array_equal(boundary_target(diagonal), [[1, 2, 0, 0],
                                                              [2, 2, 0, 0],
                                                              [0, 0, 2, 2],
                                                              [0, 0, 2, 1]])
    with pytest.raises(ValueError, match="at least 1"):
        boundary_target(square, width=0)


# Two 6x6 squares side by side, touching: A in columns 2..7, B in columns 8..13 (rows 2..7).
SQUARES = np.zeros((10, 16), np.int32)
SQUARES[2:8, 2:8] = 1
SQUARES[2:8, 8:14] = 2
# A 3-class map by hand: each square's outer ring is boundary (the two rings meet in columns 7
# and 8), the 4x4 inside is interior.
SQUARE_CLASSES = np.zeros((10, 16), np.int64)
SQUARE_CLASSES[2:8, 2:14] = BD
SQUARE_CLASSES[3:7, 3:7] = IN
SQUARE_CLASSES[3:7, 9:13] = IN


def test_touching_squares_are_separated_by_the_three_class_path():
    labels = separate(one_hot(SQUARE_CLASSES))
    assert labels.dtype == np.int32 and labels.shape == (10, 16)
    assert sorted(np.unique(labels)) == [0, 1, 2]
    # every boundary pixel is nearer to its own square's seed: the split is exact
    a, b = labels[2, 2], labels[2, 13]
    assert a != b and a > 0 and b > 0
    np.testing.assert_array_equal(labels == a, SQUARES == 1)
    np.testing.assert_array_equal(labels == b, SQUARES == 2)


def test_connected_components_merge_the_touching_squares():
    labels = separate(one_hot(SQUARE_CLASSES), method="components")
    np.testing.assert_array_equal(labels, (SQUARES > 0).astype(np.int32))


def test_binary_probabilities_default_to_connected_components():
    foreground = np.zeros((6, 9), bool)
    foreground[1:3, 1:3] = True
    foreground[3:5, 5:8] = True
    probabilities = np.stack([1 - 0.9 * foreground, 0.9 * foreground], -1)
    expected = np.zeros((6, 9), np.int32)
    expected[1:3, 1:3] = 1
    expected[3:5, 5:8] = 2
    np.testing.assert_array_equal(separate(probabilities), expected)
    # another class order: background last
    np.testing.assert_array_equal(separate(probabilities[..., ::-1], background=1), expected)


def test_a_batch_gives_one_label_image_per_image():
    batch = np.stack([one_hot(SQUARE_CLASSES), one_hot(np.zeros((10, 16), np.int64))])
    labels = separate(batch)
    assert labels.shape == (2, 10, 16) and labels.dtype == np.int32
    assert labels[0].max() == 2 and labels[1].max() == 0


def test_another_class_order():
    # the trimap order: interior (pet) 0, background 1, boundary (border) 2
    classes = np.choose(SQUARE_CLASSES, [1, 0, 2])
    labels = separate(one_hot(classes), interior=0, background=1, boundary=2)
    assert labels.max() == 2
    np.testing.assert_array_equal(labels > 0, SQUARES > 0)
    with pytest.raises(ValueError, match="different class"):
        separate(one_hot(classes), interior=0, background=0)


def test_min_size_drops_a_speck():
    classes = np.zeros((10, 10), np.int64)
    classes[1:6, 1:6] = BD
    classes[2:5, 2:5] = IN
    classes[8, 8] = IN  # a one-pixel speck, far from the square
    assert separate(one_hot(classes)).max() == 2
    labels = separate(one_hot(classes), min_size=4)
    expected = np.zeros((10, 10), np.int32)
    expected[1:6, 1:6] = 1
    np.testing.assert_array_equal(labels, expected)


def test_min_size_merges_a_fragment_into_its_neighbour():
    classes = np.zeros((10, 10), np.int64)
    classes[1:9, 1:9] = BD
    classes[3:7, 3:7] = IN
    classes[1, 8] = IN  # a stray seed in the square's corner grows a small fragment
    split = separate(one_hot(classes))
    assert split.max() == 2 and 0 < np.count_nonzero(split == split[1, 8]) < 10
    labels = separate(one_hot(classes), min_size=10)
    expected = np.zeros((10, 10), np.int32)
    expected[1:9, 1:9] = 1
    np.testing.assert_array_equal(labels, expected)


def test_min_object_size_is_a_quarter_of_the_5th_percentile_area():
    images = []
    for _ in range(4):  # 4 images x 5 squares of 10x10 = 20 objects of area 100
        image = np.zeros((12, 60), np.int32)
        for k in range(5):
            image[1:11, 12 * k:12 * k + 10] = k + 1
        images.append(image)
    images[0][11, 59] = 9  # and one speck of area 1
    # 21 areas sorted [1, 100, ...]: the 5th percentile sits at rank 0.05 * 20 = 1, area 100
    assert min_object_size(images) == 25
    assert min_object_size([np.zeros((4, 4), np.int32)]) is None


def reference_f1(true, predicted):
    """F1 at IoU 0.5 by brute force over every pair of objects."""
    t_ids, p_ids = np.unique(true[true > 0]), np.unique(predicted[predicted > 0])
    tp = 0
    for t in t_ids:
        for p in p_ids:
            a, b = true == t, predicted == p
            tp += np.count_nonzero(a & b) / np.count_nonzero(a | b) > 0.5
    return tp, len(p_ids) - tp, len(t_ids) - tp


def touching_discs(rng, size=80):
    """An instance image of 3..8 discs, each overlapping or touching an earlier one; a pixel
    covered by two discs goes to the one it lies deeper in (d^2 - r^2 smallest)."""
    yy, xx = np.mgrid[:size, :size]
    count = rng.integers(3, 9)
    centres, radii = [], []
    while len(centres) < count:
        r = rng.uniform(7, 11)
        if centres:
            k = rng.integers(len(centres))
            angle = rng.uniform(0, 2 * np.pi)
            d = (radii[k] + r) * rng.uniform(0.8, 1.0)
            c = centres[k] + d * np.array([np.sin(angle), np.cos(angle)])
        else:
            c = rng.uniform(r, size - r, 2)
        if not (r <= c[0] <= size - 1 - r and r <= c[1] <= size - 1 - r):
            continue
        if any(np.hypot(*(c - o)) < 0.8 * (r + q) for o, q in zip(centres, radii)):
            continue
        centres.append(c)
        radii.append(r)
    power = np.stack([(yy - c[0]) ** 2 + (xx - c[1]) ** 2 - r ** 2 for c, r in zip(centres, radii)])
    return np.where(power.min(0) <= 0, power.argmin(0) + 1, 0).astype(np.int32)


def test_touching_discs_are_separated_and_components_are_not():
    rng = np.random.default_rng(0)
    images = [touching_discs(rng) for _ in range(20)]
    counts = {"watershed": np.zeros(3, int), "components": np.zeros(3, int)}
    scores = {"watershed": [], "components": []}
    for true in images:
        probabilities = one_hot(boundary_target(true), confidence=0.9)
        for method in counts:
            predicted = separate(probabilities, method=method)
            counts[method] += reference_f1(true, predicted)
            scores[method].append(object_scores(true, predicted))
    f1 = {}
    for method, (tp, fp, fn) in counts.items():
        f1[method] = 2 * tp / (2 * tp + fp + fn)
        dataset = aggregate_scores(scores[method])  # agrees with the brute-force count
        assert (dataset["tp"], dataset["fp"], dataset["fn"]) == (tp, fp, fn)
        assert dataset["f1"] == pytest.approx(f1[method])
    assert f1["watershed"] >= 0.95
    assert f1["components"] < 0.5 < f1["watershed"]


def squares_image(shape, boxes):
    """An instance image with object k + 1 filling boxes[k] = (row0, row1, col0, col1)."""
    image = np.zeros(shape, np.int32)
    for k, (r0, r1, c0, c1) in enumerate(boxes):
        image[r0:r1, c0:c1] = k + 1
    return image


def test_a_split_object_in_two_equal_halves_matches_nothing():
    true = squares_image((6, 6), [(0, 4, 0, 4)])                    # 16 pixels
    predicted = squares_image((6, 6), [(0, 4, 0, 2), (0, 4, 2, 4)])  # 8 + 8: IoU 8/16 = 0.5 each
    s = object_scores(true, predicted)
    assert (s["true"], s["predicted"], s["tp"], s["fp"], s["fn"]) == (1, 2, 0, 2, 1)
    assert s["precision"] == s["recall"] == s["f1"] == s["pq"] == s["ap"] == 0.0
    assert s["mean_matched_iou"] is None


def test_a_split_object_with_a_bigger_part_matches_it():
    true = squares_image((6, 6), [(0, 4, 0, 4)])                    # 16 pixels
    predicted = squares_image((6, 6), [(0, 4, 0, 3), (0, 4, 3, 4)])  # 12 + 4: IoU 0.75 and 0.25
    s = object_scores(true, predicted)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 0)
    assert s["precision"] == 0.5 and s["recall"] == 1.0
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["mean_matched_iou"] == 0.75
    assert s["pq"] == pytest.approx(0.75 / (1 + 0.5))  # 0.5
    # t = 0.5 .. 0.7: TP 1, FP 1, FN 0 -> 1/2; t = 0.75 .. 0.95: TP 0, FP 2, FN 1 -> 0
    assert list(s["ap_at"].values()) == pytest.approx([0.5] * 5 + [0.0] * 5)
    assert s["ap"] == pytest.approx(0.25)


def test_a_merged_pair():
    true = squares_image((4, 8), [(0, 4, 0, 6), (0, 4, 6, 8)])  # 24 + 8 pixels
    predicted = squares_image((4, 8), [(0, 4, 0, 8)])           # 32: IoU 24/32 = 0.75, 8/32
    s = object_scores(true, predicted)
    assert (s["true"], s["predicted"], s["tp"], s["fp"], s["fn"]) == (2, 1, 1, 0, 1)
    assert s["precision"] == 1.0 and s["recall"] == 0.5
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["pq"] == pytest.approx(0.75 / 1.5)
    # an equal pair merged: IoU 16/32 = 0.5 with each, not above 0.5
    halves = squares_image((4, 8), [(0, 4, 0, 4), (0, 4, 4, 8)])
    assert object_scores(halves, predicted)["tp"] == 0


def test_average_precision_by_hand():
    shape = (12, 12)
    true = squares_image(shape, [(0, 4, 0, 4),     # T1: 16 px, predicted exactly (IoU 1)
                                 (5, 8, 0, 6),     # T2: 18 px, predicted 12 of them (IoU 2/3)
                                 (9, 12, 9, 12)])  # T3: missed
    predicted = squares_image(shape, [(0, 4, 0, 4), (5, 8, 0, 4),
                                      (0, 2, 8, 12)])  # and a false positive
    s = object_scores(true, predicted)
    # t in 0.5 .. 0.65: TP 2, FP 1, FN 1 -> 2/4; t in 0.7 .. 0.95: TP 1, FP 2, FN 2 -> 1/5
    assert tuple(s["ap_at"]) == THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9,
                                               0.95)
    assert list(s["ap_at"].values()) == pytest.approx([0.5] * 4 + [0.2] * 6)
    assert s["ap"] == pytest.approx(0.32)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 1, 1)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["mean_matched_iou"] == pytest.approx(5 / 6)
    assert s["pq"] == pytest.approx((1 + 2 / 3) / 3)  # 5/9
    # the object ids need not be consecutive or ordered
    assert object_scores(true * 7, np.where(predicted, 10 - predicted, 0))["ap"] == \
        pytest.approx(0.32)


def test_empty_images():
    empty = np.zeros((5, 5), np.int32)
    square = squares_image((5, 5), [(1, 3, 1, 3)])
    both = object_scores(empty, empty)
    assert (both["true"], both["predicted"], both["tp"], both["fp"], both["fn"]) == (0, 0, 0, 0, 0)
    for key in ("precision", "recall", "f1", "pq", "ap"):
        assert both[key] == 1.0, key
    assert set(both["ap_at"].values()) == {1.0} and both["mean_matched_iou"] is None
    invented = object_scores(empty, square)  # objects predicted on an empty truth
    assert (invented["tp"], invented["fp"], invented["fn"]) == (0, 1, 0)
    missed = object_scores(square, empty)    # nothing predicted on a truth with objects
    assert (missed["tp"], missed["fp"], missed["fn"]) == (0, 0, 1)
    for s in (invented, missed):
        for key in ("precision", "recall", "f1", "pq", "ap"):
            assert s[key] == 0.0, key


def test_dataset_scores_sum_the_counts():
    split = object_scores(squares_image((6, 6), [(0, 4, 0, 4)]),
                          squares_image((6, 6), [(0, 4, 0, 3), (0, 4, 3, 4)]))  # TP 1 FP 1 FN 0
    merged = object_scores(squares_image((4, 8), [(0, 4, 0, 6), (0, 4, 6, 8)]),
                           squares_image((4, 8), [(0, 4, 0, 8)]))               # TP 1 FP 0 FN 1
    empty = object_scores(np.zeros((3, 3), np.int32), np.zeros((3, 3), np.int32))
    d = aggregate_scores([split, merged, empty])
    assert (d["images"], d["true"], d["predicted"], d["tp"], d["fp"], d["fn"]) == (3, 3, 3, 2, 1, 1)
    assert d["precision"] == pytest.approx(2 / 3) and d["recall"] == pytest.approx(2 / 3)
    assert d["f1"] == pytest.approx(2 / 3)
    assert d["mean_matched_iou"] == pytest.approx(0.75)
    assert d["pq"] == pytest.approx(1.5 / 3)  # (0.75 + 0.75) / (2 + 1/2 + 1/2)
    # t = 0.5 .. 0.7: TP 2, FP 1, FN 1 -> 2/4; t = 0.75 .. 0.95: TP 0, FP 3, FN 3 -> 0
    assert d["ap"] == pytest.approx(0.25)
    assert aggregate_scores([empty, empty])["f1"] == 1.0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        object_scores(np.zeros((3, 3), np.int32), np.zeros((3, 4), np.int32))
    with pytest.raises(ValueError, match="int label image"):
        object_scores(np.zeros((3, 3)), np.zeros((3, 3), np.int32))
    with pytest.raises(ValueError, match="thresholds"):
        object_scores(np.zeros((3, 3), np.int32), np.zeros((3, 3), np.int32), thresholds=[0.3])
    with pytest.raises(ValueError, match="expected"):
        separate(np.zeros((3, 3)))
