"""Soft Dice and Dice + cross-entropy: hand-computed tables, an independent numpy implementation,
Keras' own Dice, serialization and gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from unet_tf import losses
from unet_tf.config import preset

CONFIDENT = 30.0  # logit margin that makes softmax / sigmoid probabilities 0 or 1 to ~1e-13


def confident_logits(predicted, channels):
    """Logits whose softmax (or sigmoid, one channel) is ~one-hot on `predicted` [B, H, W]."""
    predicted = np.asarray(predicted)
    if channels == 1:
        return (CONFIDENT * (2.0 * predicted - 1.0))[..., None].astype(np.float32)
    onehot = np.eye(channels)[predicted]
    return (CONFIDENT * (2.0 * onehot - 1.0)).astype(np.float32)


# --- an independent float64 numpy implementation ----------------------------------------------


def np_probabilities_and_onehot(labels, logits):
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    if labels.ndim == logits.ndim:
        labels = labels[..., 0]
    if logits.shape[-1] == 1:
        return 1.0 / (1.0 + np.exp(-logits)), labels[..., None].astype(np.float64)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True), np.eye(logits.shape[-1])[labels]


def np_soft_dice(labels, logits, smooth=1.0, per_image=False):
    probs, onehot = np_probabilities_and_onehot(labels, logits)
    axes = (1, 2) if per_image else (0, 1, 2)
    intersection = (probs * onehot).sum(axis=axes)
    total = probs.sum(axis=axes) + onehot.sum(axis=axes)
    return (2 * intersection + smooth) / (total + smooth)


def np_dice_loss(labels, logits, smooth=1.0, per_image=False, class_weights=None):
    dice = np_soft_dice(labels, logits, smooth, per_image)
    weights = np.ones(dice.shape[-1]) if class_weights is None else np.asarray(class_weights, float)
    return 1.0 - (dice * weights).sum(axis=-1) / weights.sum()


def np_cross_entropy(labels, logits):
    probs, onehot = np_probabilities_and_onehot(labels, logits)
    if probs.shape[-1] == 1:
        return float(np.mean(-(onehot * np.log(probs) + (1 - onehot) * np.log(1 - probs))))
    return float(np.mean(-np.log((probs * onehot).sum(axis=-1))))


def random_batch(rng, batch=2, side=6, channels=3, scale=2.0):
    labels = rng.integers(0, max(channels, 2), size=(batch, side, side))
    logits = rng.normal(0.0, scale, size=(batch, side, side, channels)).astype(np.float32)
    return labels.astype(np.int32), logits


# --- hand-computed tables --------------------------------------------------------------------

PARTIAL_TRUE = [[[0, 0], [1, 1]]]
PARTIAL_PRED = [[[0, 1], [1, 1]]]
# Two images: A all class 0 predicted right; B all class 1 predicted as class 0.
BATCH_TRUE = [[[0, 0], [0, 0]], [[1, 1], [1, 1]]]
BATCH_PRED = [[[0, 0], [0, 0]], [[0, 0], [0, 0]]]

HAND_CASES = [
    # id, labels, predicted, channels, smooth, per_image, class_weights, expected loss
    ("perfect-2-classes", [[[0, 1], [1, 1]]], [[[0, 1], [1, 1]]], 2, 0.0, False, None, 0.0),
    ("perfect-3-classes", [[[0, 1], [2, 2]]], [[[0, 1], [2, 2]]], 3, 0.0, False, None, 0.0),
    ("disjoint", [[[0, 1], [0, 1]]], [[[1, 0], [1, 0]]], 2, 0.0, False, None, 1.0),
    # class 0: 2*1 / (1 + 2) = 2/3; class 1: 2*2 / (3 + 2) = 4/5; loss 1 - (2/3 + 4/5) / 2
    ("partial", PARTIAL_TRUE, PARTIAL_PRED, 2, 0.0, False, None, 4 / 15),
    # class 0: (2 + 1) / (3 + 1) = 3/4; class 1: (4 + 1) / (5 + 1) = 5/6
    ("partial-smooth-1", PARTIAL_TRUE, PARTIAL_PRED, 2, 1.0, False, None, 1 - (3 / 4 + 5 / 6) / 2),
    # (3 * 2/3 + 1 * 4/5) / 4 = 0.7
    ("partial-weighted", PARTIAL_TRUE, PARTIAL_PRED, 2, 0.0, False, (3.0, 1.0), 0.3),
    # batch-wide: class 0: 2*4 / (8 + 4) = 2/3; class 1: 0 / 4 = 0
    ("batch-level", BATCH_TRUE, BATCH_PRED, 2, 0.0, False, None, 1 - (2 / 3 + 0) / 2),
    # per image (smooth 1): A: class 0 9/9, class 1 (absent, not predicted) 1/1 -> loss 0;
    # B: class 0 1/5, class 1 1/5 -> loss 0.8; mean over images 0.4
    ("per-image", BATCH_TRUE, BATCH_PRED, 2, 1.0, True, None, 0.4),
    ("binary-perfect", [[[1, 0], [0, 1]]], [[[1, 0], [0, 1]]], 1, 0.0, False, None, 0.0),
    ("binary-disjoint", [[[1, 0], [0, 1]]], [[[0, 1], [1, 0]]], 1, 0.0, False, None, 1.0),
    # all-empty prediction of a 3-class problem where only class 0 is present, smooth 1:
    # class 0 (all 4 pixels, predicted as class 2): 1/5; class 1 (absent, unpredicted): 1/1;
    # class 2 (absent, predicted everywhere): 1/5
    ("absent-class-predicted", [[[0, 0], [0, 0]]], [[[2, 2], [2, 2]]], 3, 1.0, False, None,
     1 - (0.2 + 1.0 + 0.2) / 3),
]


@pytest.mark.parametrize("labels,predicted,channels,smooth,per_image,weights,expected",
                         [case[1:] for case in HAND_CASES], ids=[case[0] for case in HAND_CASES])
def test_dice_loss_hand_computed(labels, predicted, channels, smooth, per_image, weights, expected):
    logits = confident_logits(predicted, channels)
    loss = losses.DiceLoss(smooth=smooth, per_image=per_image, class_weights=weights)
    assert float(loss(np.asarray(labels), logits)) == pytest.approx(expected, abs=1e-6)


def test_soft_dice_per_class_values_hand_computed():
    dice = losses.soft_dice(np.asarray(PARTIAL_TRUE), confident_logits(PARTIAL_PRED, 2), smooth=0.0)
    np.testing.assert_allclose(np.asarray(dice), [2 / 3, 4 / 5], atol=1e-6)
    per_image = losses.soft_dice(np.asarray(BATCH_TRUE), confident_logits(BATCH_PRED, 2),
                                 smooth=1.0, per_image=True)
    np.testing.assert_allclose(np.asarray(per_image), [[1.0, 1.0], [0.2, 0.2]], atol=1e-6)
    assert losses.dice_loss(np.asarray(BATCH_TRUE), confident_logits(BATCH_PRED, 2),
                            smooth=1.0, per_image=True).shape == (2,)


def test_soft_probabilities_binary_hand_computed():
    # logits 0 -> p = 0.5 everywhere; one positive pixel of four: 2 * 0.5 / (2 + 1) = 1/3.
    labels = np.array([[[1, 0], [0, 0]]])
    logits = np.zeros((1, 2, 2, 1), np.float32)
    assert float(losses.DiceLoss(smooth=0.0)(labels, logits)) == pytest.approx(2 / 3, abs=1e-6)


def test_empty_class_not_predicted_scores_one_with_smooth():
    # Three classes, only class 0 in the batch and predicted everywhere with confidence:
    # classes 1 and 2 are absent and not predicted, so their Dice is (0 + 1) / (0 + 1) = 1.
    labels = np.zeros((2, 4, 4), np.int32)
    logits = confident_logits(labels, 3)
    dice = np.asarray(losses.soft_dice(labels, logits, smooth=1.0))
    np.testing.assert_allclose(dice, [1.0, 1.0, 1.0], atol=1e-6)
    assert float(losses.DiceLoss()(labels, logits)) == pytest.approx(0.0, abs=1e-6)
    per_image = np.asarray(losses.soft_dice(labels, logits, smooth=1.0, per_image=True))
    np.testing.assert_allclose(per_image, np.ones((2, 3)), atol=1e-6)


# --- the independent numpy implementation ----------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 4])
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("weights", [None, "random"])
@pytest.mark.parametrize("smooth", [1.0, 0.5])
def test_dice_loss_matches_numpy(channels, per_image, weights, smooth):
    rng = np.random.default_rng(channels * 100 + per_image * 10 + int(smooth * 4))
    labels, logits = random_batch(rng, batch=3, side=5, channels=channels)
    class_weights = None if weights is None else rng.uniform(0.1, 3.0, size=channels).tolist()
    expected = np_dice_loss(labels, logits, smooth, per_image, class_weights)
    function = losses.dice_loss(labels, logits, smooth, per_image, class_weights)
    np.testing.assert_allclose(np.asarray(function), expected, rtol=1e-5, atol=1e-6)
    # The Keras loss averages the per-image losses (sum over batch size).
    loss = losses.DiceLoss(smooth=smooth, per_image=per_image, class_weights=class_weights)
    assert float(loss(labels, logits)) == pytest.approx(float(np.mean(expected)), rel=1e-5)


def test_labels_with_trailing_channel_axis_give_the_same_loss():
    labels, logits = random_batch(np.random.default_rng(1), channels=3)
    plain = float(losses.DiceLoss()(labels, logits))
    assert float(losses.DiceLoss()(labels[..., None], logits)) == pytest.approx(plain, rel=1e-6)
    assert plain == pytest.approx(float(np_dice_loss(labels, logits)), rel=1e-5)


def test_wrong_number_of_class_weights_is_an_error():
    labels, logits = random_batch(np.random.default_rng(2), channels=3)
    with pytest.raises(ValueError, match="2 values for 3 classes"):
        losses.dice_loss(labels, logits, class_weights=[1.0, 2.0])


# --- Keras' own Dice, for the binary (sigmoid) case -------------------------------------------
# keras.losses.dice: 1 - 2 sum(t p) / (sum(t) + sum(p) + epsilon), no smoothing, summed over
# `axis` (None: everything). smooth=0 makes ours the same formula.


def binary_batch(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(3, 8, 8)).astype(np.int32)
    logits = rng.normal(0.0, 2.0, size=(3, 8, 8, 1)).astype(np.float32)
    probabilities = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return labels, logits, labels[..., None].astype(np.float32), probabilities.astype(np.float32)


def test_binary_dice_loss_matches_keras_dice_over_the_batch():
    labels, logits, targets, probabilities = binary_batch(3)
    ours = float(losses.DiceLoss(smooth=0.0)(labels, logits))
    theirs = float(keras.losses.Dice(axis=None)(targets, probabilities))
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_binary_dice_loss_matches_keras_dice_per_image():
    labels, logits, targets, probabilities = binary_batch(4)
    ours = np.asarray(losses.dice_loss(labels, logits, smooth=0.0, per_image=True))
    theirs = np.asarray(keras.losses.Dice(axis=(1, 2, 3), reduction=None)(targets, probabilities))
    assert theirs.shape == (3,)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    mean_ours = float(losses.DiceLoss(smooth=0.0, per_image=True)(labels, logits))
    mean_theirs = float(keras.losses.Dice(axis=(1, 2, 3))(targets, probabilities))
    assert mean_ours == pytest.approx(mean_theirs, rel=1e-5)


# --- Dice + cross-entropy ----------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("per_image", [False, True])
def test_dice_ce_is_the_weighted_sum_of_its_parts(channels, per_image):
    labels, logits = random_batch(np.random.default_rng(5 + channels), channels=channels)
    weights = [0.5, 2.0, 1.0][:channels] if channels > 1 else None
    loss = losses.DiceCELoss(dice_weight=0.3, ce_weight=0.7, per_image=per_image,
                             class_weights=weights)
    dice = float(np.mean(np_dice_loss(labels, logits, 1.0, per_image, weights)))
    ce = np_cross_entropy(labels, logits)
    assert float(loss(labels, logits)) == pytest.approx(0.3 * dice + 0.7 * ce, rel=1e-5)
    assert float(losses.cross_entropy(labels, logits)) == pytest.approx(ce, rel=1e-5)


def test_cross_entropy_matches_keras_sparse_categorical():
    labels, logits = random_batch(np.random.default_rng(9), channels=3)
    keras_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert float(losses.cross_entropy(labels, logits)) == pytest.approx(float(keras_ce), rel=1e-5)


@pytest.mark.parametrize("name,expected_type", [("dice", losses.DiceLoss),
                                                ("dice_ce", losses.DiceCELoss),
                                                ("ce", keras.losses.SparseCategoricalCrossentropy)])
def test_loss_from_config(name, expected_type):
    config = preset("quickstart", loss=name, dice_weight=0.25, ce_weight=2.0,
                    class_weights=(1.0, 0.5, 2.0))
    loss = losses.loss_from_config(config)
    assert type(loss) is expected_type
    labels, logits = random_batch(np.random.default_rng(11), channels=3)
    dice = np_dice_loss(labels, logits, class_weights=(1.0, 0.5, 2.0))
    ce = np_cross_entropy(labels, logits)
    expected = {"dice": dice, "dice_ce": 0.25 * dice + 2.0 * ce, "ce": ce}[name]
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)


# --- serialization -----------------------------------------------------------------------------

LOSS_OBJECTS = [
    losses.DiceLoss(smooth=0.5, per_image=True, class_weights=[1.0, 2.0, 0.5]),
    losses.DiceLoss(),
    losses.DiceCELoss(dice_weight=0.3, ce_weight=1.7, smooth=2.0, class_weights=[1, 2, 3]),
]


@pytest.mark.parametrize("loss", LOSS_OBJECTS, ids=["dice-options", "dice-default", "dice-ce"])
def test_get_config_round_trip(loss):
    labels, logits = random_batch(np.random.default_rng(12), channels=3)
    clone = type(loss).from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    assert float(clone(labels, logits)) == pytest.approx(float(loss(labels, logits)), rel=1e-6)


@pytest.mark.parametrize("loss", LOSS_OBJECTS, ids=["dice-options", "dice-default", "dice-ce"])
def test_keras_serialize_deserialize(loss):
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized["registered_name"] == f"unet_tf>{type(loss).__name__}"
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(loss)
    assert (restored.smooth, restored.per_image, restored.class_weights) == (
        loss.smooth, loss.per_image, loss.class_weights)
    if isinstance(loss, losses.DiceCELoss):
        assert (restored.dice_weight, restored.ce_weight) == (0.3, 1.7)
    labels, logits = random_batch(np.random.default_rng(13), channels=3)
    assert float(restored(labels, logits)) == pytest.approx(float(loss(labels, logits)), rel=1e-6)


# --- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [losses.DiceLoss(), losses.DiceLoss(per_image=True),
                                  losses.DiceCELoss()], ids=["dice", "dice-per-image", "dice-ce"])
def test_gradients_finite_even_for_saturated_logits_and_empty_classes(loss):
    labels = np.zeros((2, 4, 4), np.int32)
    labels[0, :2] = 1  # class 2 never present
    logits = confident_logits(np.full((2, 4, 4), 2), 3) * 3  # +-90: saturated, and wrong
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = loss(labels, variable)
    gradient = tape.gradient(value, variable).numpy()
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(gradient))


def test_dice_gradient_matches_finite_differences():
    rng = np.random.default_rng(14)
    labels, logits = random_batch(rng, batch=1, side=3, channels=3, scale=1.0)
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = losses.DiceLoss(class_weights=[1.0, 2.0, 0.5])(labels, variable)
    gradient = tape.gradient(value, variable).numpy()
    step = 1e-4
    numeric = np.zeros_like(gradient, dtype=np.float64)
    for index in np.ndindex(*logits.shape):
        up, down = logits.astype(np.float64), logits.astype(np.float64)
        up[index] += step
        down[index] -= step
        numeric[index] = (np_dice_loss(labels, up, class_weights=[1.0, 2.0, 0.5])
                          - np_dice_loss(labels, down, class_weights=[1.0, 2.0, 0.5])) / (2 * step)
    assert np.abs(numeric).max() > 1e-3  # the check below is not comparing zeros
    np.testing.assert_allclose(gradient, numeric, atol=2e-5, rtol=1e-3)
