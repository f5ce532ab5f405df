"""The levers of the training recipe: augmentation, learning-rate schedule, test-time flips, and
when fine-tuning applies (its two phases run in tests/test_imagenet.py)."""

import numpy as np
import pytest
import tensorflow as tf

from unet_tf.config import PRESETS, ConfigError, preset
from unet_tf.data import augment_batch


def _blocky_examples(count=6, size=64, seed=0):
    """Images whose red channel spells their mask: mask value v <-> red = v / 2."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 3, size=(count, 8, 8))
    masks = np.kron(coarse, np.ones((size // 8, size // 8), np.int64)).astype(np.int32)
    images = np.zeros((count, size, size, 3), np.float32)
    images[..., 0] = masks / 2.0
    images[..., 1] = 0.5
    return images, masks


def test_geometric_augmentation_moves_image_and_mask_together():
    images, masks = _blocky_examples()
    out_images, out_masks = augment_batch(tf.constant(images), tf.constant(masks), seed=3,
                                          scale=0.3, rotation=20.0)
    out_images, out_masks = out_images.numpy(), out_masks.numpy()
    assert out_masks.dtype == np.int32 and set(np.unique(out_masks)) <= {0, 1, 2}
    # The augmentation really moved pixels...
    assert np.mean(out_masks != masks) > 0.05
    # ...and the mask says what the warped image says, except on region edges where bilinear
    # image values blend two classes.
    from_image = np.rint(out_images[..., 0] * 2).astype(np.int32)
    assert np.mean(from_image == out_masks) > 0.93


def test_colour_augmentation_keeps_masks_and_range():
    images, masks = _blocky_examples()
    out_images, out_masks = augment_batch(tf.constant(images), tf.constant(masks), seed=1,
                                          color=0.4)
    flipped = np.array([np.array_equal(m, o[:, ::-1]) and not np.array_equal(m, o)
                        for m, o in zip(masks, out_masks.numpy())])
    unflipped = out_masks.numpy()[~flipped]
    np.testing.assert_array_equal(unflipped, masks[~flipped])  # colour leaves masks alone
    values = out_images.numpy()
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert not np.allclose(values[~flipped], images[~flipped], atol=1e-3)


def test_cosine_schedule_with_warmup():
    from unet_tf.training import make_learning_rate

    config = preset("quickstart", epochs=10, learning_rate=1e-3, lr_schedule="cosine",
                    warmup_epochs=2)
    schedule = make_learning_rate(config, steps_per_epoch=5)
    values = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert values[0] == pytest.approx(0.0, abs=1e-9)
    assert values[1] == pytest.approx(0.5e-3, rel=1e-4)  # half-way through warm-up
    assert values[2] == pytest.approx(1e-3, rel=1e-4)  # the peak
    # cosine over the remaining 40 steps: half-way (step 30) is half the peak, the end is 0
    assert values[3] == pytest.approx(0.5e-3, rel=1e-3)
    assert values[4] == pytest.approx(0.0, abs=1e-7)
    assert make_learning_rate(preset("quickstart", learning_rate=3e-3)) == 3e-3


def test_warmup_needs_cosine_and_small_data_is_a_preset():
    with pytest.raises(ConfigError, match="warmup_epochs"):
        preset("quickstart", warmup_epochs=2)
    assert "small-data" in PRESETS
    config = preset("small-data")
    assert config.encoder_weights == "none" and config.validation_fraction > 0
    assert config.average_weights and not preset("tutorial").average_weights


def test_flip_tta_is_the_mean_of_an_image_and_its_mirror(tiny_run):
    import keras

    from unet_tf.inference import predict_masks

    model = keras.models.load_model(tiny_run / "model.keras")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    x = images.astype(np.float32) / 255
    expected = (tf.nn.softmax(model.predict_on_batch(x)) +
                tf.nn.softmax(model.predict_on_batch(x[:, :, ::-1]))[:, :, ::-1]) / 2
    np.testing.assert_array_equal(predict_masks(model, images, tta=True),
                                  np.argmax(expected, axis=-1))
    # A mirrored photo gets the mirrored mask exactly: the averaged probabilities are symmetric.
    np.testing.assert_array_equal(predict_masks(model, images[:, :, ::-1], tta=True),
                                  predict_masks(model, images, tta=True)[:, :, ::-1])


def test_fine_tuning_needs_a_frozen_pretrained_encoder():
    with pytest.raises(ConfigError, match="fine_tune_epochs"):
        preset("quickstart", fine_tune_epochs=3)  # random weights: nothing to fine-tune
