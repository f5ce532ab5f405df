"""Confusion-matrix metrics: hand-counted examples, numpy references, and the Keras metrics that
training reports."""

import math

import keras
import numpy as np
import pytest

from unet_tf import metrics

# Six pixels, three classes, counted by hand:
#   true 0 -> predicted 0, 1;  true 1 -> predicted 1;  true 2 -> predicted 2, 0, 2
HAND_TRUE = [0, 0, 1, 2, 2, 2]
HAND_PRED = [0, 1, 1, 2, 0, 2]
HAND_CM = [[1, 1, 0],
           [0, 1, 0],
           [1, 0, 2]]
# Dice 2TP / (2TP + FP + FN): class 0 2/4, class 1 2/3, class 2 4/5.
HAND_DICE = [0.5, 2 / 3, 0.8]
# IoU TP / (TP + FP + FN): class 0 1/3, class 1 1/2, class 2 2/3.
HAND_IOU = [1 / 3, 0.5, 2 / 3]


def np_confusion(labels, predicted, num_classes):
    """Counting loop, the slow obvious way."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    for t, p in zip(np.ravel(labels), np.ravel(predicted)):
        cm[t, p] += 1
    return cm


def np_dice(cm):
    cm = np.asarray(cm, float)
    out = []
    for c in range(len(cm)):
        tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c, :].sum() - cm[c, c]
        out.append(2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else math.nan)
    return np.array(out)


def np_iou(cm):
    cm = np.asarray(cm, float)
    out = []
    for c in range(len(cm)):
        tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c, :].sum() - cm[c, c]
        out.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
    return np.array(out)


def test_confusion_matrix_hand_counted():
    cm = metrics.confusion_matrix(np.array(HAND_TRUE).reshape(2, 3), np.array(HAND_PRED).reshape(2, 3), 3)
    np.testing.assert_array_equal(cm, HAND_CM)
    assert cm.shape == (3, 3)


def test_confusion_matrix_matches_counting_loop_on_random_maps():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(3, 7, 5))
    predicted = rng.integers(0, 4, size=(3, 7, 5))
    cm = metrics.confusion_matrix(labels, predicted, 4)
    np.testing.assert_array_equal(cm, np_confusion(labels, predicted, 4))
    assert cm.sum() == labels.size


def test_confusion_matrix_rejects_different_sizes():
    with pytest.raises(ValueError, match="6 pixels"):
        metrics.confusion_matrix(np.zeros(6, int), np.zeros(5, int), 2)


def test_dice_and_iou_from_confusion_hand_computed():
    np.testing.assert_allclose(metrics.dice_from_confusion(HAND_CM), HAND_DICE)
    np.testing.assert_allclose(metrics.iou_from_confusion(HAND_CM), HAND_IOU)


def test_dice_and_iou_are_nan_for_a_class_neither_present_nor_predicted():
    cm = np.zeros((4, 4), int)
    cm[:3, :3] = HAND_CM
    dice, iou = metrics.dice_from_confusion(cm), metrics.iou_from_confusion(cm)
    np.testing.assert_allclose(dice[:3], HAND_DICE)
    np.testing.assert_allclose(iou[:3], HAND_IOU)
    assert math.isnan(dice[3]) and math.isnan(iou[3])
    # Present but never predicted: a real 0, not NaN.
    cm[3, 0] = 2
    assert metrics.dice_from_confusion(cm)[3] == 0.0
    assert metrics.iou_from_confusion(cm)[3] == 0.0


def test_scores_from_confusion():
    cm = np.zeros((4, 4), int)
    cm[:3, :3] = HAND_CM
    scores = metrics.scores_from_confusion(cm, ["a", "b", "c", "d"])
    assert list(scores["dice"]) == ["a", "b", "c", "d"]
    assert scores["dice"]["d"] is None and scores["iou"]["d"] is None
    assert [scores["dice"][k] for k in "abc"] == pytest.approx(HAND_DICE)
    assert [scores["iou"][k] for k in "abc"] == pytest.approx(HAND_IOU)
    assert scores["mean_dice"] == pytest.approx(sum(HAND_DICE) / 3)  # absent class left out
    assert scores["mean_iou"] == pytest.approx(sum(HAND_IOU) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 6)
    assert scores["pixels"] == 6
    assert all(type(v) is float for v in scores["dice"].values() if v is not None)


def test_scores_from_an_empty_confusion_matrix():
    scores = metrics.scores_from_confusion(np.zeros((2, 2), int), ["a", "b"])
    assert scores["mean_dice"] is None and scores["mean_iou"] is None
    assert scores["dice"] == {"a": None, "b": None}
    assert math.isnan(scores["pixel_accuracy"]) and scores["pixels"] == 0


def test_pixel_accuracy():
    assert metrics.pixel_accuracy_from_confusion(HAND_CM) == pytest.approx(4 / 6)


# --- the Keras metrics -------------------------------------------------------------------------


def random_batches(seed, count=3, num_classes=3, shape=(2, 8, 8)):
    """Batches whose class balance differs a lot, so a mean of per-batch scores differs from the
    dataset-level score."""
    rng = np.random.default_rng(seed)
    batches = []
    for i in range(count):
        share = np.roll(np.array([0.7, 0.2, 0.1])[:num_classes], i)
        labels = rng.choice(num_classes, size=shape, p=share / share.sum()).astype(np.int32)
        logits = rng.normal(0, 1, size=shape + (num_classes,)).astype(np.float32)
        logits[..., 0] += 0.8 * i  # each batch leans on its own class
        logits += 1.5 * np.eye(num_classes)[labels]  # better than chance
        batches.append((labels, logits))
    return batches


def accumulated_confusion(batches, num_classes):
    return sum(np_confusion(labels, logits.argmax(-1), num_classes) for labels, logits in batches)


def test_dice_score_accumulates_over_the_dataset():
    batches = random_batches(1)
    metric = metrics.DiceScore(num_classes=3)
    for labels, logits in batches:
        metric.update_state(labels, logits)
    expected = np.nanmean(np_dice(accumulated_confusion(batches, 3)))
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
    per_batch_mean = np.mean([np.nanmean(np_dice(np_confusion(l, g.argmax(-1), 3)))
                              for l, g in batches])
    assert abs(per_batch_mean - expected) > 1e-3  # the batches really do differ
    metric.reset_state()
    metric.update_state(*batches[0])
    assert float(metric.result()) == pytest.approx(
        np.nanmean(np_dice(np_confusion(batches[0][0], batches[0][1].argmax(-1), 3))), abs=1e-6)


@pytest.mark.parametrize("class_id", [0, 1, 2])
def test_dice_score_per_class(class_id):
    batches = random_batches(2)
    metric = metrics.DiceScore(num_classes=3, target_class_ids=[class_id], name=f"dice_{class_id}")
    for labels, logits in batches:
        metric.update_state(labels, logits)
    expected = np_dice(accumulated_confusion(batches, 3))[class_id]
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)


def test_dice_score_accepts_label_maps_with_a_channel_axis():
    labels, logits = random_batches(3, count=1)[0]
    plain, channel = metrics.DiceScore(3), metrics.DiceScore(3)
    plain.update_state(labels, logits)
    channel.update_state(labels[..., None], logits)
    assert float(channel.result()) == pytest.approx(float(plain.result()), abs=1e-7)


def test_dice_score_leaves_out_a_class_absent_from_the_data():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, size=(2, 6, 6)).astype(np.int32)  # class 2 never present
    logits = rng.normal(0, 1, size=(2, 6, 6, 3)).astype(np.float32)
    logits[..., 2] = -10.0  # ... and never predicted
    metric = metrics.DiceScore(3)
    metric.update_state(labels, logits)
    dice = np_dice(np_confusion(labels, logits.argmax(-1), 3))
    assert math.isnan(dice[2])
    assert float(metric.result()) == pytest.approx((dice[0] + dice[1]) / 2, abs=1e-6)


def test_keras_mean_iou_agrees_with_iou_from_confusion():
    batches = random_batches(5)
    keras_iou = keras.metrics.MeanIoU(3, sparse_y_pred=False)
    for labels, logits in batches:
        keras_iou.update_state(labels, logits)
    cm = metrics.confusion_matrix(np.concatenate([b[0] for b in batches]),
                                  np.concatenate([b[1].argmax(-1) for b in batches]), 3)
    np.testing.assert_array_equal(cm, accumulated_confusion(batches, 3))
    assert float(keras_iou.result()) == pytest.approx(np.nanmean(metrics.iou_from_confusion(cm)),
                                                      abs=1e-6)
    np.testing.assert_allclose(metrics.iou_from_confusion(cm), np_iou(cm))
    np.testing.assert_allclose(metrics.dice_from_confusion(cm), np_dice(cm))


def test_metrics_for_names_and_values():
    names = ("pet", "background", "border")
    reported = metrics.metrics_for(names)
    assert [m.name for m in reported] == ["dice", "dice_pet", "dice_background", "dice_border",
                                          "iou", "pixel_accuracy"]
    batches = random_batches(6)
    for metric in reported:
        for labels, logits in batches:
            metric.update_state(labels, logits)
    cm = accumulated_confusion(batches, 3)
    dice, iou = np_dice(cm), np_iou(cm)
    values = {m.name: float(m.result()) for m in reported}
    assert values["dice"] == pytest.approx(np.nanmean(dice), abs=1e-6)
    for i, name in enumerate(names):
        assert values[f"dice_{name}"] == pytest.approx(dice[i], abs=1e-6)
    assert values["iou"] == pytest.approx(np.nanmean(iou), abs=1e-6)
    assert values["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-6)


def test_dice_score_serialization_round_trip():
    metric = metrics.DiceScore(4, target_class_ids=[1, 3], name="dice_some")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(restored) is metrics.DiceScore
    assert restored.name == "dice_some" and list(restored.target_class_ids) == [1, 3]
    assert restored.num_classes == 4


def test_dice_score_with_sparse_predictions():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, size=(2, 5, 6)).astype(np.int32)
    predicted = rng.integers(0, 3, size=(2, 5, 6)).astype(np.int32)
    metric = metrics.DiceScore(3, sparse_y_pred=True)
    metric.update_state(labels, predicted)
    expected = np.nanmean(np_dice(np_confusion(labels, predicted, 3)))
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
