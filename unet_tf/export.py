"""Export a trained model as a TF SavedModel that takes raw pixels (and optionally TFLite).

    python -m unet_tf.export --model runs/RUN/model.keras --out exports/pets
    python -m unet_tf.export --model runs/RUN/model.keras --out exports/pets --tflite --quantize
    saved_model_cli show --dir exports/pets --all

The SavedModel's signatures put the preprocessing inside the graph, so a client sends pixels and
gets a mask at its own resolution:

- `serving_default(images)`: uint8 [batch, height, width, 3], any height and width;
- `serve_bytes(images)`: string [batch], encoded JPEG / PNG / GIF / BMP images of one size;

both returning `mask` (int32 [batch, height, width], class indices) and `probabilities` (float32
[batch, height, width, classes]). Inside: bilinear resize to the model's input size and scaling to
[0, 1] exactly as in training, the U-Net, softmax, and a bilinear resize of the probabilities back to
the input's size before the argmax. With `--tta` the U-Net also sees each photo's mirror image and
the two probability maps are averaged (what `evaluate --tta` measures).

`metadata.json` beside it records the class names in output order, the input size, the label mode,
the training configuration and the validation metrics. `--tflite` adds `model.tflite` (float32
input [1, S, S, 3] in [0, 1], output logits [1, S, S, classes]: resize and scale on the device);
`--quantize` also writes `model_quantized.tflite` (dynamic-range int8 weights).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

import unet_tf  # noqa: F401  (registers the custom losses and metrics for loading)
from unet_tf.cli import command_parser
from unet_tf.inference import segment
from unet_tf.model import all_layers
from unet_tf.run_files import RunInfo, atomic_write_bytes, load_model_safely


def _decode(encoded):
    return tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)


def export_saved_model(model: keras.Model, out: Path, info: RunInfo, tta: bool = False) -> Path:
    """Writes the SavedModel and metadata.json to `out` (replaced as a whole, never half-written).

    With `tta` both signatures average each photo's and its mirror image's class probabilities,
    as `evaluate --tta` and `predict --tta` do.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serving_default(images):
        mask, probabilities = segment(model, images, tta)
        return {"mask": mask, "probabilities": probabilities}

    def serve_bytes(images):
        decoded = tf.map_fn(_decode, images, fn_output_signature=tf.TensorSpec(
            [None, None, 3], tf.uint8))
        return serving_default(decoded)

    archive.add_endpoint("serving_default", serving_default, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.add_endpoint("serve_bytes", serve_bytes, input_signature=[
        tf.TensorSpec([None], tf.string, name="images")])

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        archive.write_out(str(staging), verbose=False)
        metadata = {
            "class_names": list(info.class_names),
            "input_size": info.input_size,
            "labels": info.labels,
            "tta": tta,
            "signatures": {
                "serving_default": "images: uint8 [batch, height, width, 3]",
                "serve_bytes": "images: string [batch] of encoded images of one size",
                "outputs": "mask: int32 [batch, height, width]; probabilities: float32 "
                           "[batch, height, width, classes]",
            },
            "config": info.config,
            "validation_metrics": info.metrics,
        }
        (staging / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
        _replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _replace_dir(staging: Path, out: Path) -> None:
    """Moves `staging` to `out`; an existing `out` is swapped away first, then removed."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _float32_config(value):
    """A model config with every mixed-precision dtype policy replaced by float32."""
    if isinstance(value, dict):
        if value.get("class_name") == "DTypePolicy" and "config" in value:
            return {**value, "config": {**value["config"], "name": "float32"}}
        return {key: ("float32" if key == "dtype" and isinstance(item, str) else
                      _float32_config(item)) for key, item in value.items()}
    if isinstance(value, list):
        return [_float32_config(item) for item in value]
    return value


def float32_copy(model: keras.Model) -> keras.Model:
    """`model` computing in float32: itself, or for a mixed-precision model a copy with the same
    (float32) weights. TFLite cannot convert float16 convolutions; the float32 model gives the
    same classes (checked in tests/test_gpu_settings.py)."""
    if all(layer.dtype_policy.name == "float32" for layer in all_layers(model)):
        return model
    copy = keras.Model.from_config(_float32_config(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def export_tflite(model: keras.Model, path: Path, quantize: bool = False) -> Path:
    """A TFLite flatbuffer of the bare model: float32 [1, S, S, 3] in [0, 1] -> logits."""
    model = float32_copy(model)
    size = model.input_shape[1]
    with tempfile.TemporaryDirectory() as staging:
        # Converting through Keras' own SavedModel export: converting a concrete function of the
        # model directly produced NaN outputs with TF 2.21.
        model.export(staging, format="tf_saved_model", verbose=False,
                     input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])
        converter = tf.lite.TFLiteConverter.from_saved_model(staging)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range int8 weights
        atomic_write_bytes(path, converter.convert())
    return path


def main(argv=None) -> int:
    parser = command_parser("unet_tf.export", __doc__)
    parser.add_argument("--model", required=True, help="a model.keras from a training run")
    parser.add_argument("--out", required=True, help="the SavedModel folder to write (replaced)")
    parser.add_argument("--tflite", action="store_true", help="also write model.tflite (float32)")
    parser.add_argument("--quantize", action="store_true",
                        help="with --tflite: also write model_quantized.tflite (dynamic range)")
    parser.add_argument("--tta", action="store_true",
                        help="flip test-time augmentation inside both signatures: each photo's "
                             "and its mirror image's class probabilities averaged, as evaluate "
                             "--tta measures (twice the work per photo; TFLite stays the bare "
                             "model)")
    args = parser.parse_args(argv)
    try:
        model, info = load_model_safely(args.model)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = export_saved_model(model, Path(args.out), info, tta=args.tta)
    print(f"SavedModel: {out} (signatures serving_default, serve_bytes; classes "
          f"{', '.join(info.class_names)}{'; flip test-time augmentation' if args.tta else ''})")
    if args.tflite or args.quantize:
        path = export_tflite(model, out / "model.tflite")
        print(f"TFLite float32: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        if args.quantize:
            path = export_tflite(model, out / "model_quantized.tflite", quantize=True)
            print(f"TFLite dynamic-range quantized: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
