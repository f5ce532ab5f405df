"""Mixed precision (`mixed_float16`, the default on GPUs; `mixed_bfloat16` on request) checked on
the CPU: the same weights give the same predictions and loss as float32, the logits stay float32,
the optimizer scales the loss (float16 only), and a few training steps follow the float32 ones."""

import keras
import numpy as np
import pytest

from unet_tf import data
from unet_tf.config import preset
from unet_tf.data import synthetic
from unet_tf.training import build_model, precision_policy


def _config(mixed_precision):
    return preset("quickstart", image_size=64, alpha=0.35, decoder_filters=(16, 16, 16, 16),
                  batch_size=4, mixed_precision=mixed_precision, lr_schedule="constant")


@pytest.fixture(scope="module")
def batch():
    examples = list(synthetic.make_examples(8, seed=3))
    images = np.stack([data.resize_image(e["image"], 64).numpy() for e in examples])
    masks = np.stack([data.resize_mask(e["segmentation_mask"][..., 0], 64).numpy() - 1
                      for e in examples]).astype("int32")
    return data.normalize(images).numpy(), masks


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    full = build_model(_config("off"))
    half = build_model(_config("on"))
    half.set_weights(full.get_weights())
    return full, half


@pytest.mark.parametrize("gpu,auto_policy", [(False, "float32"), (True, "mixed_float16")])
def test_auto_follows_the_device_and_explicit_values_do_not(monkeypatch, gpu, auto_policy):
    """`auto` is float16 exactly when a GPU is seen (checked for both answers, on any machine)."""
    from unet_tf import training

    monkeypatch.setattr(training, "gpu_available", lambda: gpu)
    assert precision_policy(_config("auto")) == auto_policy
    assert precision_policy(_config("on")) == "mixed_float16"
    assert precision_policy(_config("bfloat16")) == "mixed_bfloat16"
    assert precision_policy(_config("off")) == "float32"


def test_layers_compute_in_float16_and_the_logits_in_float32(models):
    full, half = models
    assert half.get_layer("encoder").get_layer("Conv1").compute_dtype == "float16"
    assert half.get_layer("encoder").get_layer("Conv1").variable_dtype == "float32"
    assert half.get_layer("logits").compute_dtype == "float32"
    assert all(w.dtype == "float32" for w in half.weights)
    assert isinstance(half.optimizer, keras.optimizers.LossScaleOptimizer)
    assert not isinstance(full.optimizer, keras.optimizers.LossScaleOptimizer)
    # the global policy is restored after building
    assert keras.mixed_precision.global_policy().name == "float32"


def test_same_weights_give_the_same_predictions_and_loss(models, batch):
    full, half = models
    images, masks = batch
    logits_full = full.predict_on_batch(images)
    logits_half = half.predict_on_batch(images)
    assert logits_half.dtype == np.float32
    scale = np.abs(logits_full).max()
    assert np.abs(logits_half - logits_full).max() <= 0.02 * scale
    agree = (logits_half.argmax(-1) == logits_full.argmax(-1)).mean()
    assert agree >= 0.98
    loss_full = full.evaluate(images, masks, batch_size=4, verbose=0, return_dict=True)["loss"]
    loss_half = half.evaluate(images, masks, batch_size=4, verbose=0, return_dict=True)["loss"]
    assert loss_half == pytest.approx(loss_full, rel=0.01)


@pytest.mark.slow  # four epochs in each precision: about half a minute on 2 cores
def test_training_steps_follow_float32(batch):
    images, masks = batch
    keras.utils.set_random_seed(1)
    full = build_model(_config("off"))
    half = build_model(_config("on"))
    half.set_weights(full.get_weights())
    losses = {}
    for name, model in (("full", full), ("half", half)):
        history = model.fit(images, masks, batch_size=4, epochs=4, shuffle=False, verbose=0)
        losses[name] = np.array(history.history["loss"])
    assert np.isfinite(losses["half"]).all()
    # both learn, and by about the same amount
    assert losses["half"][-1] < losses["half"][0]
    np.testing.assert_allclose(losses["half"], losses["full"], atol=0.03)


def test_bfloat16_predicts_as_float32_with_the_same_weights(models, batch):
    full, _ = models
    images, masks = batch
    bf16 = build_model(_config("bfloat16"))
    bf16.set_weights(full.get_weights())
    assert bf16.get_layer("encoder").get_layer("Conv1").compute_dtype == "bfloat16"
    assert bf16.get_layer("logits").compute_dtype == "float32"
    assert not isinstance(bf16.optimizer, keras.optimizers.LossScaleOptimizer)
    logits_full = full.predict_on_batch(images)
    logits_bf16 = bf16.predict_on_batch(images)
    assert logits_bf16.dtype == np.float32
    # bfloat16 keeps 8 bits of mantissa (float16: 11), so the tolerance is wider
    assert np.abs(logits_bf16 - logits_full).max() <= 0.05 * np.abs(logits_full).max()
    assert (logits_bf16.argmax(-1) == logits_full.argmax(-1)).mean() >= 0.95
    loss_full = full.evaluate(images, masks, batch_size=4, verbose=0, return_dict=True)["loss"]
    loss_bf16 = bf16.evaluate(images, masks, batch_size=4, verbose=0, return_dict=True)["loss"]
    assert loss_bf16 == pytest.approx(loss_full, rel=0.03)
