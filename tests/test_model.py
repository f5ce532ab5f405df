"""The U-Net: shapes, encoder wiring, BatchNorm and freezing, decoder blocks, weights errors, and
saving / loading (in this process and in a fresh one)."""

import json
import os
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from unet_tf import losses, metrics
from unet_tf.model import (
    SCRATCH_BN_MOMENTUM,
    SKIP_LAYERS,
    WeightsUnavailableError,
    build_unet,
    imagenet_weights_file,
    set_encoder_trainable,
)

CLASS_NAMES = ("pet", "background", "border")


def encoder_of(model):
    return model.get_layer("encoder")


def batchnorms(layer):
    return [sub for sub in layer._flatten_layers() if isinstance(sub, keras.layers.BatchNormalization)]


@pytest.fixture(scope="module")
def model64(tiny_model_kwargs):
    return build_unet(input_size=64, num_classes=3, **tiny_model_kwargs)


@pytest.mark.parametrize("size,classes", [(32, 1), (64, 2), (96, 5)])
def test_output_has_the_input_resolution(size, classes, tiny_model_kwargs):
    model = build_unet(input_size=size, num_classes=classes, **tiny_model_kwargs)
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, size, size, classes)
    images = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype(np.float32)
    logits = np.asarray(model(images, training=False))
    assert logits.shape == (2, size, size, classes)
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("size", [0, 16, 31, 48, 100, 64.0, "64"])
def test_input_size_must_be_a_multiple_of_32(size, tiny_model_kwargs):
    with pytest.raises(ValueError, match="multiple of 32"):
        build_unet(input_size=size, num_classes=2, **tiny_model_kwargs)


def test_decoder_filters_need_four_values():
    with pytest.raises(ValueError, match="expected 4 values"):
        build_unet(32, 2, encoder_weights=None, alpha=0.35, decoder_filters=(16, 16, 16))


def test_skip_layer_resolutions_match_the_encoder_outputs(model64):
    encoder = encoder_of(model64)
    outputs = encoder(np.zeros((1, 64, 64, 3), np.float32), training=False)
    assert len(outputs) == len(SKIP_LAYERS)
    for (name, fraction), output in zip(SKIP_LAYERS, outputs):
        side = round(64 * fraction)
        assert tuple(output.shape[1:3]) == (side, side), name
    # Finest first, each half the previous, down to 1/32 of the input.
    sides = [int(o.shape[1]) for o in outputs]
    assert sides == [32, 16, 8, 4, 2]
    # The encoder takes any multiple of 32 (a model trained on patches predicts on more).
    larger = encoder(np.zeros((1, 96, 160, 3), np.float32), training=False)
    assert [tuple(o.shape[1:3]) for o in larger] == [(48, 80), (24, 40), (12, 20), (6, 10), (3, 5)]


def test_random_encoder_trains_with_scratch_batchnorm_momentum(model64):
    encoder = encoder_of(model64)
    assert encoder.trainable
    encoder_bns = batchnorms(encoder)
    assert len(encoder_bns) > 30  # MobileNetV2 has one after every convolution
    assert {bn.momentum for bn in encoder_bns} == {SCRATCH_BN_MOMENTUM} == {0.9}
    trainable = {id(v) for v in model64.trainable_weights}
    assert all(id(v) in trainable for v in encoder.trainable_weights)
    assert len(encoder.trainable_weights) > 100
    # Only the encoder's momentum is changed; the decoder keeps Keras' default.
    decoder_bns = [bn for layer in model64.layers if layer.name.startswith("up_")
                   for bn in batchnorms(layer)]
    assert len(decoder_bns) == 4
    assert {bn.momentum for bn in decoder_bns} == {keras.layers.BatchNormalization().momentum}


def test_explicit_encoder_bn_momentum_is_used(tiny_model_kwargs):
    model = build_unet(32, 2, encoder_bn_momentum=0.97, **tiny_model_kwargs)
    assert {bn.momentum for bn in batchnorms(encoder_of(model))} == {0.97}


def test_decoder_blocks_are_pix2pix_upsampling(tiny_model_kwargs):
    kwargs = {**tiny_model_kwargs, "decoder_filters": (20, 12, 8, 4)}
    model = build_unet(32, 2, **kwargs)
    blocks = [layer for layer in model.layers if layer.name.startswith("up_")]
    # Coarsest first: 1/32 -> 1/16 (2 px at 32 px input) ... 1/4 -> 1/2 (16 px).
    assert [(int(b.output.shape[1]), int(b.output.shape[-1])) for b in blocks] == [
        (2, 20), (4, 12), (8, 8), (16, 4)]
    for block in blocks:
        conv = block.layers[0]
        assert isinstance(conv, keras.layers.Conv2DTranspose)
        assert conv.use_bias is False and conv.bias is None
        assert tuple(conv.strides) == (2, 2) and tuple(conv.kernel_size) == (3, 3)
        init = conv.kernel_initializer
        assert isinstance(init, keras.initializers.RandomNormal)
        assert (init.mean, init.stddev) == (0.0, 0.02)
        assert isinstance(block.layers[1], keras.layers.BatchNormalization)
        assert isinstance(block.layers[-1], keras.layers.ReLU)
    # The largest kernel has thousands of entries: its spread shows the N(0, 0.02) draw.
    kernel = np.asarray(blocks[0].layers[0].kernel)
    assert kernel.size > 2000
    assert abs(kernel.mean()) < 0.003 and 0.018 < kernel.std() < 0.022


def test_dropout_goes_into_every_upsample_block(tiny_model_kwargs):
    model = build_unet(32, 2, dropout=0.3, **tiny_model_kwargs)
    blocks = [layer for layer in model.layers if layer.name.startswith("up_")]
    rates = [sub.rate for b in blocks for sub in b.layers if isinstance(sub, keras.layers.Dropout)]
    assert rates == [0.3] * 4


def _one_step_changes(model):
    """{variable path: changed?} after one training step on random data."""
    before = {v.path: v.numpy() for v in model.weights}
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=losses.DiceLoss())
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 2, (2, 32, 32)).astype(np.int32)
    model.train_on_batch(images, labels)
    return {v.path: not np.array_equal(before[v.path], v.numpy()) for v in model.weights}


def test_frozen_encoder_does_not_change_when_training(tiny_model_kwargs):
    model = build_unet(32, 2, freeze_encoder=True, **tiny_model_kwargs)
    encoder = encoder_of(model)
    assert not encoder.trainable
    assert encoder.trainable_weights == []
    encoder_ids = {id(v) for v in encoder.weights}
    assert not any(id(v) in encoder_ids for v in model.trainable_weights)
    changed = _one_step_changes(model)
    encoder_paths = {v.path for v in encoder.weights}
    # Kernels and BatchNorm statistics alike: a frozen encoder runs in inference mode.
    assert not any(changed[p] for p in encoder_paths)
    assert changed[model.get_layer("logits").kernel.path]


def test_set_encoder_trainable(tiny_model_kwargs):
    model = build_unet(32, 2, **tiny_model_kwargs)
    count = len(model.trainable_weights)
    encoder_trainable = len(encoder_of(model).trainable_weights)
    assert encoder_trainable > 100
    set_encoder_trainable(model, False)
    assert not encoder_of(model).trainable
    assert len(model.trainable_weights) == count - encoder_trainable
    # Unfreezing keeps the encoder's BatchNorm frozen (its gamma and beta stay fixed)...
    from unet_tf.model import batch_norm_layers

    set_encoder_trainable(model, True)
    norms = list(batch_norm_layers(encoder_of(model)))
    assert norms and not any(layer.trainable for layer in norms)
    assert len(model.trainable_weights) == count - 2 * len(norms)
    # ...unless asked to train it too.
    set_encoder_trainable(model, True, batch_norm_trainable=True)
    assert len(model.trainable_weights) == count


# --- encoder weights ----------------------------------------------------------------------------


@pytest.mark.parametrize("alpha,size,expected", [
    (0.35, 96, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"),
    (1, 128, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5"),
    (1.4, 224, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.4_224_no_top.h5"),
    # Keras has no 64 px weights and loads the 224 px file instead.
    (0.5, 64, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"),
])
def test_imagenet_weights_file_names(alpha, size, expected):
    assert imagenet_weights_file(alpha, size) == expected


def test_imagenet_weights_for_an_unsupported_alpha_is_an_error():
    with pytest.raises(ValueError, match="alpha=0.2"):
        build_unet(32, 2, encoder_weights="imagenet", alpha=0.2)


def _keras_models_folder() -> Path:
    """Where Keras itself caches downloaded weights."""
    try:
        from keras.src.backend.config import keras_home
    except ImportError:  # pragma: no cover - older or newer Keras layouts
        return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return Path(keras_home()) / "models"


def test_imagenet_weights_offline_fail_fast_with_instructions(network_reachable):
    if network_reachable("storage.googleapis.com"):
        pytest.skip("the network is reachable: the weights would download")
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    folder = _keras_models_folder()
    if (folder / name).exists():
        pytest.skip(f"{name} is cached in {folder}")
    started = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as error:
        build_unet(96, 3, encoder_weights="imagenet", alpha=0.35, decoder_filters=(16,) * 4)
    assert time.perf_counter() - started < 20
    message = str(error.value)
    assert name in message
    assert str(folder) in message
    assert "--encoder-weights none" in message


def test_encoder_weights_from_a_file_are_loaded_and_frozen(tmp_path):
    keras.utils.set_random_seed(4)
    source = keras.applications.MobileNetV2(input_shape=(64, 64, 3), include_top=False,
                                            weights=None, alpha=0.35)
    path = tmp_path / "mobilenet_v2.weights.h5"
    source.save_weights(path)
    model = build_unet(64, 3, encoder_weights=str(path), alpha=0.35, decoder_filters=(16,) * 4)
    encoder = model.get_layer("encoder")
    assert not encoder.trainable and encoder.trainable_weights == []
    # The encoder is MobileNetV2 up to block_16_project: the first weights of the full network.
    loaded = encoder.get_weights()
    assert 100 < len(loaded) < len(source.weights)
    for got, want in zip(loaded, source.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_encoder_weights_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "nowhere" / "mobilenet.h5"
    with pytest.raises(WeightsUnavailableError, match="nowhere"):
        build_unet(32, 2, encoder_weights=str(missing), alpha=0.35, decoder_filters=(16,) * 4)


# --- saving and loading --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(model64, tmp_path_factory):
    """The 64 px model compiled as training compiles it, saved as .keras, with probe data."""
    folder = tmp_path_factory.mktemp("saved_model")
    model64.compile(optimizer="adam", loss=losses.DiceLoss(class_weights=[1.0, 2.0, 0.5]),
                    metrics=metrics.metrics_for(CLASS_NAMES))
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 1, (4, 64, 64, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (4, 64, 64)).astype(np.int32)
    path = folder / "model.keras"
    model64.save(path)
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", labels)
    return path, images, labels, model64.predict(images, verbose=0)


def test_save_and_load_in_the_same_process(saved_model):
    path, images, _, expected = saved_model
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-5)
    assert isinstance(loaded.loss, losses.DiceLoss)
    assert loaded.loss.class_weights == [1.0, 2.0, 0.5]


LOAD_SCRIPT = """
import json, sys
import numpy as np
import unet_tf, keras
folder = sys.argv[1]
model = keras.models.load_model(folder + "/model.keras")
images, labels = np.load(folder + "/images.npy"), np.load(folder + "/labels.npy")
np.save(folder + "/predicted.npy", model.predict(images, verbose=0))
scores = model.evaluate(images, labels, verbose=0, return_dict=True)
print(json.dumps({"loss": type(model.loss).__name__, "loss_config": model.loss.get_config(),
                  "scores": {k: float(v) for k, v in scores.items()}}))
"""


def test_load_in_a_new_python_process(saved_model, run_python):
    path, images, labels, expected = saved_model
    process, _ = run_python(["-c", LOAD_SCRIPT, str(path.parent)], cwd=path.parent)
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads(process.stdout.strip().splitlines()[-1])
    predicted = np.load(path.parent / "predicted.npy")
    np.testing.assert_allclose(predicted, expected, atol=1e-5)
    assert report["loss"] == "DiceLoss"
    assert report["loss_config"]["class_weights"] == [1.0, 2.0, 0.5]
    # The compiled loss and metrics work there and agree with this process's computation.
    scores = report["scores"]
    expected_loss = float(losses.dice_loss(labels, expected, class_weights=[1.0, 2.0, 0.5]))
    assert scores["loss"] == pytest.approx(expected_loss, abs=1e-4)
    cm = metrics.confusion_matrix(labels, expected.argmax(-1), 3)
    assert scores["dice"] == pytest.approx(np.nanmean(metrics.dice_from_confusion(cm)), abs=1e-5)
    for i, name in enumerate(CLASS_NAMES):
        assert scores[f"dice_{name}"] == pytest.approx(metrics.dice_from_confusion(cm)[i], abs=1e-5)
    assert scores["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-5)
