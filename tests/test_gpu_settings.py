"""What `--mixed-precision auto` and `--xla auto` pick on a GPU (mixed float16 with loss scaling,
and XLA compilation), forced on this CPU for a short tutorial-preset run: the main job's numeric
settings, trained, saved, reloaded and exported together."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from unet_tf import training
from unet_tf.config import preset
from unet_tf.data import normalize, resize_image
from unet_tf.data.synthetic import make_examples
from unet_tf.export import tflite_interpreter


class _Inspect(keras.callbacks.Callback):
    """Records how the model fit() trains is set up."""

    seen = {}

    def on_train_begin(self, logs=None):
        model = self.model
        self.seen.update(
            compute_dtype=model.get_layer("encoder").get_layer("Conv1").compute_dtype,
            logits_dtype=model.get_layer("logits").compute_dtype,
            loss_scaling=isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer),
            jit_compile=bool(model.jit_compile))


# XLA compiles the training, validation and prediction steps: about a minute on 2 cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    """One epoch of the tutorial preset with `auto` settings on a machine that reports a GPU."""
    folder = tmp_path_factory.mktemp("gpu_settings")
    config = preset("tutorial", dataset="synthetic", encoder_weights="none", image_size=64,
                    alpha=0.35, decoder_filters=(16, 16, 16, 16), batch_size=8, epochs=1,
                    synthetic_train_examples=16, synthetic_val_examples=8)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "gpu_available", lambda: True)
        assert (config.mixed_precision, config.xla) == ("auto", "auto")
        assert training.precision_policy(config) == "mixed_float16"
        assert training.use_xla(config)
        from unet_tf.train import train

        run = train(config, run_dir=folder / "run", verbose=0, callbacks=[_Inspect()])
    return run, folder


def test_auto_settings_train_in_float16_with_xla(gpu_run):
    run, _ = gpu_run
    assert _Inspect.seen == {"compute_dtype": "float16", "logits_dtype": "float32",
                             "loss_scaling": True, "jit_compile": True}
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 2
    columns = history[0].split(",")
    for row in history[1:]:
        values = dict(zip(columns, row.split(",")))
        assert np.isfinite(float(values["loss"])) and np.isfinite(float(values["val_loss"]))
    assert np.isfinite(json.loads((run / "metrics.json").read_text())["mean_dice"])


def _photos():
    return [e["image"] for e in make_examples(3, seed=8)]


def test_float16_model_reloads_and_exports_what_it_predicts(gpu_run):
    from unet_tf.export import main as export_main
    from unet_tf.inference import segment

    run, folder = gpu_run
    model = keras.models.load_model(run / "model.keras")
    assert model.get_layer("encoder").get_layer("Conv1").compute_dtype == "float16"
    out = folder / "export"
    assert export_main(["--model", str(run / "model.keras"), "--out", str(out), "--tflite"]) == 0

    served = tf.saved_model.load(str(out)).signatures["serving_default"]
    for photo in _photos():
        mask, probabilities = segment(model, photo[None])
        result = served(images=tf.constant(photo[None]))
        np.testing.assert_allclose(result["probabilities"].numpy(), probabilities.numpy(),
                                   atol=1e-3)
        assert np.mean(result["mask"].numpy() == mask.numpy()) > 0.999

    interpreter = tflite_interpreter(out / "model.tflite")
    (inp,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
    for photo in _photos():
        x = normalize(resize_image(photo[None], 64)).numpy()
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        logits = model.predict_on_batch(x)
        tflite = interpreter.get_tensor(output["index"])
        # float16 arithmetic in Keras, float32 in TFLite: close, and the same classes
        assert np.abs(tflite - logits).max() <= 0.02 * np.abs(logits).max()
        assert np.mean(tflite.argmax(-1) == logits.argmax(-1)) > 0.98
