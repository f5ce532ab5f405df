"""Export: the SavedModel reloaded in a new process serves what the Keras model predicts."""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unet_tf.data import synthetic


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    from unet_tf.export import main

    out = tmp_path_factory.mktemp("export") / "pets"
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(out), "--tflite"]) == 0
    return out


@pytest.fixture(scope="module")
def photos(pets_sample_or_none):
    """Photos of several sizes and aspect ratios: synthetic ones, and a real one if available."""
    rng = np.random.default_rng(3)
    images = [synthetic.make_example(rng)["image"] for _ in range(3)]
    if pets_sample_or_none is not None:
        from unet_tf.images import read_image

        images.append(read_image(pets_sample_or_none / "images" / "Abyssinian_1.jpg"))
    return images


@pytest.fixture(scope="module")
def pets_sample_or_none():
    sample = Path(__file__).resolve().parents[2] / "shared/data/oxford-pets-sample"
    return sample if (sample / "images").is_dir() else None


def _keras_outputs(run, images):
    import keras

    import unet_tf  # noqa: F401
    from unet_tf.inference import segment

    model = keras.models.load_model(run / "model.keras")
    return [tuple(t.numpy() for t in segment(model, image[None])) for image in images]


def test_export_writes_savedmodel_and_metadata(exported, tiny_run):
    assert (exported / "saved_model.pb").is_file()
    metadata = json.loads((exported / "metadata.json").read_text())
    assert metadata["class_names"] == ["pet", "background", "border"]
    assert metadata["input_size"] == 64
    assert metadata["labels"] == "trimap"
    assert metadata["config"] == json.loads((tiny_run / "config.json").read_text())
    assert metadata["validation_metrics"] == json.loads((tiny_run / "metrics.json").read_text())
    # Written whole, then renamed: no staging folders are left beside it.
    assert [p.name for p in exported.parent.iterdir()] == ["pets"]


def test_reload_in_new_process_matches_keras(exported, tiny_run, photos, tmp_path, run_python):
    for i, image in enumerate(photos):
        np.save(tmp_path / f"in_{i}.npy", image)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "from pathlib import Path\n"
        "d = Path(sys.argv[2]); served = tf.saved_model.load(sys.argv[1])\n"
        "f = served.signatures['serving_default']\n"
        "for p in sorted(d.glob('in_*.npy')):\n"
        "    out = f(images=tf.constant(np.load(p)[None]))\n"
        "    np.save(d / p.name.replace('in_', 'mask_'), out['mask'].numpy())\n"
        "    np.save(d / p.name.replace('in_', 'prob_'), out['probabilities'].numpy())\n"
    )
    process, _ = run_python(["-c", script, str(exported), str(tmp_path)], cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-2000:]
    for i, (mask, probabilities) in enumerate(_keras_outputs(tiny_run, photos)):
        served_mask = np.load(tmp_path / f"mask_{i}.npy")
        served_probabilities = np.load(tmp_path / f"prob_{i}.npy")
        height, width = photos[i].shape[:2]
        assert served_mask.shape == (1, height, width) and served_mask.dtype == np.int32
        assert served_probabilities.shape == (1, height, width, 3)
        np.testing.assert_allclose(served_probabilities, probabilities, atol=1e-5)
        # argmax can flip only where two classes tie within float noise
        flips = served_mask != mask
        top2 = np.sort(probabilities, axis=-1)[..., -2:]
        assert np.all(top2[..., 1][flips] - top2[..., 0][flips] < 1e-5)


def _png_bytes(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_serve_bytes_equals_serving_default(exported, photos):
    import tensorflow as tf

    served = tf.saved_model.load(str(exported))
    pixels, encoded = served.signatures["serving_default"], served.signatures["serve_bytes"]
    # A batch of two photos of one size, as serve_bytes requires.
    batch = np.stack([photos[0], photos[0][::-1]])
    from_pixels = pixels(images=tf.constant(batch))
    from_bytes = encoded(images=tf.constant([_png_bytes(b) for b in batch]))
    np.testing.assert_array_equal(from_bytes["mask"].numpy(), from_pixels["mask"].numpy())
    np.testing.assert_allclose(from_bytes["probabilities"].numpy(),
                               from_pixels["probabilities"].numpy(), atol=1e-6)


def test_tfsmlayer_loads_export_in_plain_keras(exported, photos):
    import keras
    import tensorflow as tf

    layer = keras.layers.TFSMLayer(str(exported), call_endpoint="serving_default")
    outputs = layer(tf.constant(photos[1][None]))
    served = tf.saved_model.load(str(exported)).signatures["serving_default"]
    expected = served(images=tf.constant(photos[1][None]))
    np.testing.assert_array_equal(outputs["mask"].numpy(), expected["mask"].numpy())


def _litert_or_skip():
    """LiteRT's interpreter class; where ai-edge-litert does not install, a skip."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        pytest.skip("ai-edge-litert is not installed (pip install -e '.[test]')")
    return Interpreter


@pytest.mark.parametrize("quantized", (False, True))
def test_tflite_agrees_with_keras_through_litert(tiny_run, photos, tmp_path, quantized):
    """The files as phones and boards run them: through LiteRT, not TensorFlow's interpreter."""
    import warnings

    import keras

    from unet_tf.data import normalize, resize_image
    from unet_tf.export import main, tflite_interpreter

    litert = _litert_or_skip()
    out = tmp_path / "lite"
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(out), "--tflite"]
                + (["--quantize"] if quantized else [])) == 0
    model = keras.models.load_model(tiny_run / "model.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation notice: TensorFlow's interpreter unused
        interpreter = tflite_interpreter(
            out / ("model_quantized.tflite" if quantized else "model.tflite"))
    assert isinstance(interpreter, litert)
    (input_detail,), (output_detail,) = (interpreter.get_input_details(),
                                         interpreter.get_output_details())
    assert list(input_detail["shape"]) == [1, 64, 64, 3]
    for image in photos:
        x = normalize(resize_image(image[None], 64)).numpy()
        interpreter.set_tensor(input_detail["index"], x)
        interpreter.invoke()
        logits, expected = interpreter.get_tensor(output_detail["index"]), model.predict_on_batch(x)
        if not quantized:
            np.testing.assert_allclose(logits, expected, atol=1e-4)
        else:  # int8 weights: close, and the same mask almost everywhere
            assert np.abs(logits - expected).max() <= 0.05 * np.abs(expected).max()
            assert np.mean(logits.argmax(-1) == expected.argmax(-1)) > 0.98


def test_saved_model_cli_lists_both_signatures(exported):
    cli = shutil.which("saved_model_cli", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.skip("saved_model_cli is not installed beside this Python")
    shown = subprocess.run([cli, "show", "--dir", str(exported), "--all"], capture_output=True,
                           text=True, timeout=120).stdout
    default = shown[shown.index("signature_def['serving_default']"):]
    assert "inputs['images']" in default and "DT_UINT8" in default
    assert "outputs['mask']" in default and "DT_INT32" in default
    assert "outputs['probabilities']" in default
    by_bytes = shown[shown.index("signature_def['serve_bytes']"):]
    assert "DT_STRING" in by_bytes.split("outputs[")[0]


def test_export_refuses_a_folder_as_model(tmp_path, capsys):
    from unet_tf.export import main

    assert main(["--model", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "model.keras" in capsys.readouterr().err


def test_export_tta_serves_what_evaluate_tta_measures(tiny_run, tmp_path):
    """Both signatures of an --tta export give evaluate --tta's masks (at the model's size)."""
    import keras
    import tensorflow as tf

    from unet_tf.export import main
    from unet_tf.inference import predict_masks

    out = tmp_path / "tta"
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(out), "--tta"]) == 0
    assert json.loads((out / "metadata.json").read_text())["tta"] is True
    model = keras.models.load_model(tiny_run / "model.keras")
    images = np.random.default_rng(7).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    expected = predict_masks(model, images, tta=True)
    assert not np.array_equal(expected, predict_masks(model, images))  # TTA changes masks here
    served = tf.saved_model.load(str(out))
    from_pixels = served.signatures["serving_default"](images=tf.constant(images))["mask"]
    from_bytes = served.signatures["serve_bytes"](
        images=tf.constant([_png_bytes(image) for image in images]))["mask"]
    for masks in (from_pixels.numpy(), from_bytes.numpy()):
        assert np.mean(masks == expected) > 0.999  # argmax ties within float noise may differ


def test_a_client_with_tensorflow_only_gets_predicts_masks(exported, tiny_run, tmp_path,
                                                           run_python, pets_sample_or_none):
    """The README's client, run as written in a new process where unet_tf cannot be imported,
    sends JPEG bytes to serve_bytes and gets the masks `predict` writes for the same photo."""
    import re

    from unet_tf.predict import main as predict_main

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    client = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S)
                  if "serve_bytes" in block)
    (tmp_path / "exports").mkdir()
    shutil.copytree(exported, tmp_path / "exports" / "pets")
    photo = (pets_sample_or_none / "images" / "Abyssinian_1.jpg" if pets_sample_or_none
             else None)
    if photo is None:
        Image.fromarray(synthetic.make_example(np.random.default_rng(5))["image"]).save(
            tmp_path / "photo.jpg", quality=90)
    else:
        shutil.copy(photo, tmp_path / "photo.jpg")
    # No unet_tf in the client's process: importing it fails there.
    guard = ("import sys\nsys.modules['unet_tf'] = None\n"
             "try:\n    import unet_tf\nexcept ImportError:\n    pass\n"
             "else:\n    raise SystemExit('unet_tf importable')\n")
    (tmp_path / "client.py").write_text(guard + client)
    process, _ = run_python(["client.py"], cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-2000:]
    assert predict_main(["--model", str(exported), "--out", str(tmp_path / "predicted"),
                         "--postprocess", "none", str(tmp_path / "photo.jpg")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "photo_mask.png")),
                                  np.asarray(Image.open(tmp_path / "predicted" / "photo_mask.png")))


@pytest.fixture(scope="module")
def onnx_exported(tiny_run, tmp_path_factory):
    """An export with model.onnx (skips where tf2onnx is not installed)."""
    pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (pip install -e '.[test]')")
    from unet_tf.export import main

    out = tmp_path_factory.mktemp("onnx") / "pets"
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(out), "--onnx"]) == 0
    return out


def test_onnx_runs_in_onnx_runtime_with_keras_masks(onnx_exported, tiny_run, photos,
                                                    pets_sample_or_none):
    """model.onnx as ONNX Runtime runs it: uint8 photos fitted to the model's size in, the
    Keras model's probabilities (within TFLite's tolerance) and masks out, on real photos."""
    import keras
    import onnxruntime

    from unet_tf.data import normalize, resize_image
    from unet_tf.export import ONNX_OPSET
    from unet_tf.images import read_image

    out = onnx_exported
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["onnx"]["opset"] == ONNX_OPSET
    assert metadata["onnx"]["inputs"] == {"images": "uint8 [batch, 64, 64, 3]"}
    assert metadata["onnx"]["outputs"] == {"mask": "int32 [batch, 64, 64]",
                                           "probabilities": "float32 [batch, 64, 64, classes]"}
    session = onnxruntime.InferenceSession(out / "model.onnx",
                                           providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    real = ([] if pets_sample_or_none is None else
            [read_image(pets_sample_or_none / "images" / f"{name}.jpg") for name in
             ("Abyssinian_2", "american_bulldog_10", "american_bulldog_100")])
    batch = np.stack([resize_image(image, 64).numpy() for image in [*photos, *real]])
    mask, probabilities = session.run(["mask", "probabilities"], {"images": batch})
    model = keras.models.load_model(tiny_run / "model.keras")
    expected = keras.ops.softmax(model.predict_on_batch(normalize(batch))).numpy()
    assert mask.dtype == np.int32 and mask.shape == batch.shape[:3]
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    top2 = np.sort(expected, axis=-1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 1e-4  # argmax may differ only within float noise
    np.testing.assert_array_equal(mask[decided], expected.argmax(-1)[decided])
    assert decided.mean() > 0.99


def test_onnx_names_the_layer_that_does_not_convert():
    pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (pip install -e '.[test]')")
    import keras
    import tensorflow as tf

    from unet_tf.data import Policy
    from unet_tf.export import OnnxConversionError, onnx_model

    class Bessel(keras.layers.Layer):  # an operation ONNX has no counterpart for
        def call(self, x):
            return tf.math.bessel_i1e(x)

    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(Bessel(name="odd_layer")(inputs)))
    with pytest.raises(OnnxConversionError, match=r"layer odd_layer uses TensorFlow's BesselI1e"):
        onnx_model(model, Policy(size=32))


def test_served_graph_holds_the_weights_as_constants(exported):
    """The signatures compute with the weights as constants, so TensorFlow folds each batch
    normalization into its convolution when it loads them (a quarter less time per photo on a
    CPU, docs/speed.md): no variable is read while serving."""
    import tensorflow as tf

    served = tf.saved_model.load(str(exported))
    assert list(served.variables) == []
    graph = served.signatures["serving_default"].graph.as_graph_def()
    ops = {node.op for node in graph.node} | {node.op for function in graph.library.function
                                              for node in function.node_def}
    assert "ReadVariableOp" not in ops and {"Conv2D", "DepthwiseConv2dNative"} <= ops


def test_the_readmes_onnx_client_gets_the_keras_models_mask(onnx_exported, tiny_run, tmp_path,
                                                           run_python, pets_sample_or_none):
    """The README's ONNX Runtime client, run as written where neither unet_tf nor TensorFlow can
    be imported, gets the Keras model's mask of the pixels it sends, at the photo's size."""
    import re

    import keras

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    client = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S)
                  if "onnxruntime" in block)
    (tmp_path / "exports").mkdir()
    shutil.copytree(onnx_exported, tmp_path / "exports" / "pets")
    if pets_sample_or_none is None:
        Image.fromarray(synthetic.make_example(np.random.default_rng(5))["image"]).save(
            tmp_path / "photo.jpg", quality=90)
    else:
        shutil.copy(pets_sample_or_none / "images" / "american_bulldog_10.jpg",
                    tmp_path / "photo.jpg")
    guard = "import sys\nsys.modules['unet_tf'] = None\nsys.modules['tensorflow'] = None\n"
    (tmp_path / "client.py").write_text(guard + client)
    process, _ = run_python(["client.py"], cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-2000:]
    # The same pixels through the Keras model, the mask brought back as the client does.
    photo = Image.open(tmp_path / "photo.jpg").convert("RGB")
    pixels = np.asarray(photo.resize((64, 64), Image.Resampling.BILINEAR))[None]
    model = keras.models.load_model(tiny_run / "model.keras")
    logits = model.predict_on_batch(pixels / np.float32(255))[0]
    expected = Image.fromarray(logits.argmax(-1).astype(np.uint8)).resize(
        photo.size, Image.Resampling.NEAREST)
    top2 = np.sort(logits, axis=-1)[..., -2:]
    decided = np.asarray(Image.fromarray(top2[..., 1] - top2[..., 0] > 1e-4).resize(
        photo.size, Image.Resampling.NEAREST))  # argmax may differ only within float noise
    client_mask = np.asarray(Image.open(tmp_path / "photo_mask_onnx.png"))
    assert client_mask.shape == decided.shape
    np.testing.assert_array_equal(client_mask[decided], np.asarray(expected)[decided])
