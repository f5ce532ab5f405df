"""The ImageNet encoder route (`--encoder-weights imagenet`, the tutorial's), offline: a stand-in
weights file under the exact name Keras downloads, in a temporary KERAS_HOME, is loaded instead of
the network. Checked in a new process, as a user runs it (Keras reads KERAS_HOME when imported):
the weights are the file's, the encoder sees the pixels those weights expect, it is frozen, and
fine-tuning unfreezes it with its BatchNorm statistics kept."""

import json

import numpy as np
import pytest

from unet_tf.model import imagenet_weights_file

ALPHA, SIZE = 0.35, 96

SCRIPT = r"""
import json, sys
from pathlib import Path
import keras, numpy as np
from unet_tf.config import preset
from unet_tf.data import normalize
from unet_tf.train import train

out = Path(sys.argv[1])
photos = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
snapshots = {}

class Snapshot(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        if "start" in snapshots:
            return
        snapshots["start"] = self.encoder_state()
        # What the encoder's first skip layer computes from our input scaling...
        scaled = self.model.get_layer("to_minus1_1")(normalize(photos))
        ours = self.model.get_layer("encoder")(scaled)[0]
        # ...and from Keras' own MobileNetV2 preprocessing, with the same (cached) weights.
        reference = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False,
                                                   weights="imagenet", alpha=0.35)
        skip = keras.Model(reference.input, reference.get_layer("block_1_expand_relu").output)
        expected = skip(keras.applications.mobilenet_v2.preprocess_input(photos.astype("float32")))
        np.savez(out / "preprocessing.npz", ours=np.asarray(ours), expected=np.asarray(expected))

    def on_epoch_end(self, epoch, logs=None):
        snapshots[str(epoch)] = self.encoder_state()

    def encoder_state(self):
        encoder = self.model.get_layer("encoder")
        return {"weights": [np.asarray(w) for w in encoder.get_weights()],
                "bn_trainable": [bool(l.trainable) for l in encoder.layers
                                 if isinstance(l, keras.layers.BatchNormalization)],
                "trainable": len(encoder.trainable_weights)}

config = preset("tutorial", dataset="synthetic", image_size=96, alpha=0.35,
                decoder_filters=(16, 16, 16, 16), batch_size=8, epochs=1, fine_tune_epochs=1,
                fine_tune_learning_rate=1e-3, synthetic_train_examples=16,
                synthetic_val_examples=8)
assert config.encoder_weights == "imagenet"
train(config, run_dir=out / "run", verbose=0, callbacks=[Snapshot()])
for name, state in snapshots.items():
    np.savez(out / f"encoder_{name}.npz", *state["weights"])
json.dump({name: {"trainable": s["trainable"], "bn_trainable": s["bn_trainable"]}
           for name, s in snapshots.items()}, open(out / "summary.json", "w"))
"""


@pytest.fixture(scope="module")
def stand_in_run(tmp_path_factory, run_python):
    """Writes the stand-in weights into a fresh KERAS_HOME, then trains with them in a new
    process; returns (output folder, the stand-in's weights)."""
    import keras

    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    keras.utils.set_random_seed(11)
    stand_in = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), include_top=False,
                                              weights=None, alpha=ALPHA)
    # The legacy HDF5 layout of Keras' published weight files.
    stand_in.save(home / "models" / imagenet_weights_file(ALPHA, SIZE))
    out = tmp_path_factory.mktemp("imagenet_run")
    process, _ = run_python(["-c", SCRIPT, str(out)], cwd=out, timeout=300,
                            env={"KERAS_HOME": str(home)})
    assert process.returncode == 0, process.stderr[-3000:]
    return out, stand_in.get_weights()


def _encoder(out, name):
    with np.load(out / f"encoder_{name}.npz") as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


@pytest.mark.slow  # a training run with the stand-in weights in a new process (`stand_in_run`)
def test_imagenet_weights_come_from_the_cached_file(stand_in_run):
    out, stand_in = stand_in_run
    start = _encoder(out, "start")
    # The encoder is MobileNetV2 up to block_16_project: the first weights of the full network.
    assert 200 < len(start) < len(stand_in)
    for got, want in zip(start, stand_in):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow  # a training run with the stand-in weights in a new process (`stand_in_run`)
def test_encoder_sees_the_pixels_imagenet_weights_expect(stand_in_run):
    out, _ = stand_in_run
    with np.load(out / "preprocessing.npz") as arrays:
        assert np.abs(arrays["expected"]).max() > 0.1  # the comparison has something to compare
        np.testing.assert_allclose(arrays["ours"], arrays["expected"], atol=1e-5)


@pytest.mark.slow  # a training run with the stand-in weights in a new process (`stand_in_run`)
def test_encoder_is_frozen_then_fine_tuned_with_batch_norm_kept(stand_in_run):
    out, stand_in = stand_in_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["start"]["trainable"] == 0 and summary["0"]["trainable"] == 0
    for got, want in zip(_encoder(out, "0"), stand_in):  # phase one: the decoder only
        np.testing.assert_array_equal(got, want)
    assert summary["1"]["trainable"] > 0 and not any(summary["1"]["bn_trainable"])
    import keras

    reference = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), include_top=False,
                                               weights=None, alpha=ALPHA)
    names = [w.path for w in reference.weights]
    statistics = [("moving_mean" in n or "moving_variance" in n) for n in names]
    assert sum(statistics) > 0
    changed = [not np.array_equal(a, b) for a, b in zip(_encoder(out, "1"), stand_in)]
    # Phase two trains the convolutions; the ImageNet BatchNorm statistics stay as loaded.
    assert any(c for c, s in zip(changed, statistics) if not s)
    assert not any(c for c, s in zip(changed, statistics) if s)
