r"""Export a trained model as a TF SavedModel that takes raw pixels (and optionally TFLite).

    python -m unet_tf.export --model runs/RUN/model.keras --out exports/pets --tta
    python -m unet_tf.export --model runs/RUN/model.keras --out exports/lite --tflite --quantize
    python -m unet_tf.export --model runs/RUN/model.keras --out exports/onnx --onnx
    saved_model_cli show --dir exports/pets --all

The SavedModel's signatures put the preprocessing inside the graph, so a client sends pixels and
gets a mask at its own resolution:

- `serving_default(images)`: uint8 [batch, height, width, 3], any height and width;
- `serve_bytes(images)`: string [batch], encoded JPEG / PNG / BMP images of one size;

both returning `mask` (int32 [batch, height, width], class indices) and `probabilities` (float32
[batch, height, width, classes]). Inside: bilinear resize to the model's input size and scaling to
[0, 1] exactly as in training, the U-Net, softmax, and a bilinear resize of the probabilities back to
the input's size before the argmax. With `--tta` the U-Net also sees each photo's mirror image and
the two probability maps are averaged (what `evaluate --tta` measures).

`metadata.json` beside it records the class names in output order (with the colours of predict's
masks), the input size, the label mode, the training configuration and the validation metrics.
`--tflite` adds `model.tflite` (float32 input [1, S, S, 3] in [0, 1], output logits
[1, S, S, classes]: resize and scale on the device);
`--quantize` also writes `model_quantized.tflite` (dynamic-range int8 weights). Both run in LiteRT
(`pip install "unet_tf[litert]"`), the runtime phones and boards load them with.
`--onnx` adds `model.onnx` (`pip install "unet_tf[onnx]"`, converted by tf2onnx): `images` uint8
[batch, S, S, 3] in, the scaling to [0, 1] inside, `mask` int32 [batch, S, S] and `probabilities`
float32 [batch, S, S, classes] out, for ONNX Runtime, TensorRT or OpenVINO. S is the model's size:
the client fits each photo to it as metadata.json's `policy` says (squash: a bilinear resize);
a model trained with `--resize none` takes any size whose sides are multiples of 32. Its opset and
input and output names are in metadata.json under `onnx`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

import unet_tf  # noqa: F401  (registers the custom losses and metrics for loading)
from unet_tf import plots, serving
from unet_tf.cli import command_parser, positive_int, run_command
from unet_tf.data import normalize
from unet_tf.errors import UserError
from unet_tf.images import MAX_PIXELS
from unet_tf.inference import class_probabilities
from unet_tf.model import all_layers, flexible_twin
from unet_tf.run.outputs import (
    EXPORT_FORMAT,
    check_export_folder,
    default_mode_folder,
    make_folder,
)
from unet_tf.files import atomic_write_bytes, write_json
from unet_tf.run.model_file import RunInfo, load_model_safely


def export_saved_model(model: keras.Model, out: Path, info: RunInfo, tta: bool = False,
                       max_pixels: int = MAX_PIXELS) -> Path:
    """Writes the SavedModel and metadata.json to `out` (replaced as a whole, never half-written;
    the caller checks with `outputs.check_export_folder` that `out` may be replaced).

    With `tta` both signatures average each photo's and its mirror image's class probabilities,
    as `evaluate --tta` and `predict --tta` do. Images above `max_pixels` are refused.
    """
    archive = keras.export.ExportArchive()
    policy = info.policy
    functions = dict(zip(serving.SIGNATURES, serving.signatures(model, tta, max_pixels, policy,
                                                                         info.intensity)))
    for name, signature in serving.SIGNATURES.items():
        archive.add_endpoint(name, functions[name], input_signature=signature)

    out = Path(os.path.realpath(out))  # a link to a folder: the export lands where it leads
    make_folder(out.parent, "--out")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        default_mode_folder(staging)
        archive.write_out(str(staging), verbose=False)
        metadata = {
            "format": EXPORT_FORMAT,
            "class_names": list(info.class_names),
            "classes": plots.classes_table(info.class_names),  # predict's classes.json, colours
            "input_size": info.input_size,
            "labels": info.labels,
            "tta": tta,
            "max_pixels": max_pixels,
            "policy": policy.to_dict(),
            # photos with more than 8 bits: value low -> 0, high -> 255 (images.to_uint8); null:
            # each photo from its own 0.1st to 99.9th percentile
            "intensity": list(info.intensity) if info.intensity else None,
            # --labels instance: instances.separate's min_size (pixels at the photo's own size)
            "min_object_size": info.metrics.get("min_object_size"),
            "signatures": {
                "serving_default": "images: uint8 [batch, height, width, 3]",
                "serve_bytes": "images: string [batch] of encoded JPEG, PNG or BMP images of "
                               "one size",
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
    """Moves `staging` to `out`: into an empty `out` (the folder itself stays), or in its place
    when `out` is new or an earlier export, which is swapped away first, then removed."""
    if out.is_dir() and not any(out.iterdir()):
        for item in staging.iterdir():
            os.replace(item, out / item.name)
        return
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


ONNX_OPSET = 17  # what ONNX Runtime, TensorRT and OpenVINO all take


class OnnxConversionError(UserError):
    """A model tf2onnx cannot convert (an operation without an ONNX counterpart)."""


def onnx_model(model: keras.Model, policy) -> tuple:
    """(the ONNX model as bytes, what metadata.json records of it) for `model` with its input
    scaling: uint8 `images` in, `mask` and `probabilities` out (see the module's help). A
    TensorFlow operation that does not convert is named, with its layer, in an
    OnnxConversionError."""
    try:
        import tf2onnx
    except ImportError:
        raise UserError('--onnx needs tf2onnx and onnx: pip install "unet_tf[onnx]"') from None
    model = float32_copy(model)
    if policy.native:  # photos at their own size: the same U-Net, any multiple of 32
        model = flexible_twin(model)
    side = model.input_shape[1]
    spec = tf.TensorSpec([None, side, side, 3], tf.uint8, name="images")

    @tf.function(input_signature=[spec])
    def segment_pixels(images):
        probabilities = class_probabilities(model, normalize(images))
        return {"mask": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
                "probabilities": probabilities}

    unconverted = _ErrorRecords()
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(unconverted)
    level = logger.level
    logger.setLevel(logging.ERROR)  # its progress lines are not the user's business
    try:
        proto, _ = tf2onnx.convert.from_function(segment_pixels, input_signature=[spec],
                                                 opset=ONNX_OPSET)
    except Exception as error:  # tf2onnx raises what its op handlers raise
        raise OnnxConversionError(f"model.onnx not written: tf2onnx {tf2onnx.__version__} failed "
                                  f"at opset {ONNX_OPSET}: {error}") from error
    finally:
        logger.removeHandler(unconverted)
        logger.setLevel(level)
    if unconverted.unsupported:
        node, op = unconverted.unsupported[0]
        layer = _layer_of(node, model)
        raise OnnxConversionError(
            f"model.onnx not written: layer {layer} uses TensorFlow's {op}, which tf2onnx "
            f"{tf2onnx.__version__} cannot express in ONNX opset {ONNX_OPSET} ({node}; "
            f"{len(unconverted.unsupported)} unsupported operation(s) in all)")
    size = "height, width" if side is None else f"{side}, {side}"
    metadata = {
        "file": "model.onnx", "opset": ONNX_OPSET, "converter": f"tf2onnx {tf2onnx.__version__}",
        "inputs": {item.name: f"uint8 [batch, {size}, 3]" for item in proto.graph.input},
        "outputs": {item.name: (f"int32 [batch, {size}]" if item.name == "mask" else
                                f"float32 [batch, {size}, classes]")
                    for item in proto.graph.output},
        "fit": ("any height and width that are multiples of 32" if side is None else
                f"photos fitted to {side} x {side} as `policy` says"),
    }
    return proto.SerializeToString(), metadata


def _layer_of(node: str, model: keras.Model) -> str:
    """The model's layer a converted graph's node comes from (its name), or the node's name."""
    names = {layer.name for layer in all_layers(model)}
    for part in reversed(node.split("/")):
        for name in (part, re.sub(r"_\d+$", "", part)):  # scopes get a "_1" when traced
            if name in names:
                return name
    return node


class _ErrorRecords(logging.Handler):
    """tf2onnx's "op is not supported" errors, as (node, op) pairs: it logs them and carries on."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.unsupported = []

    def emit(self, record):
        if record.msg == "Tensorflow op [%s: %s] is not supported":
            self.unsupported.append(record.args)


def tflite_interpreter(path, num_threads: int | None = None):
    """An interpreter of a .tflite file, tensors allocated: LiteRT's (the ai-edge-litert package,
    what phones and boards run the file with), or where that is not installed TensorFlow's own,
    which TensorFlow deprecates (it warns so)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pip install "unet_tf[litert]"
        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def main(argv=None) -> int:
    return run_command(_main, argv)


def build_parser():
    """The command line of this command (every option with its help)."""
    parser = command_parser("unet_tf.export", __doc__)
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True, help="a model.keras from a training run")
    model.add_argument("--tta", action="store_true",
                       help="flip test-time augmentation inside both signatures: each photo's "
                            "and its mirror image's class probabilities averaged, as evaluate "
                            "--tta measures (twice the work per photo; TFLite stays the bare "
                            "model)")
    model.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS,
                       help="the signatures refuse images above this many pixels (recorded in "
                            "metadata.json; default: %(default)s)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", required=True,
                        help="the SavedModel folder to write: new or empty (or an earlier export, "
                             "with --force)")
    output.add_argument("--force", action="store_true",
                        help="replace an earlier export at --out (never other files)")
    output.add_argument("--tflite", action="store_true", help="also write model.tflite (float32)")
    output.add_argument("--quantize", action="store_true",
                        help="with --tflite: also write model_quantized.tflite (dynamic range)")
    output.add_argument("--onnx", action="store_true",
                        help="also write model.onnx for ONNX Runtime, TensorRT or OpenVINO "
                             "(uint8 pixels at the model's size in; needs pip install "
                             '"unet_tf[onnx]")')
    return parser


def _main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.out)
    check_export_folder(out, force=args.force)  # before any work
    model, info = load_model_safely(args.model)
    parts = 1 + bool(args.tflite or args.quantize) + bool(args.quantize) + args.onnx
    step = iter(range(1, parts + 1))
    onnx = None
    if args.onnx:  # first: the conversion that can fail, before anything is written
        print(f"export {next(step)}/{parts}: ONNX (tf2onnx, opset {ONNX_OPSET})",
              file=sys.stderr, flush=True)
        onnx = onnx_model(model, info.policy)
    print(f"export {next(step)}/{parts}: the SavedModel (tracing both signatures, then writing)",
          file=sys.stderr, flush=True)
    export_saved_model(model, out, info, tta=args.tta, max_pixels=args.max_pixels)
    print(f"SavedModel: {out} (signatures serving_default, serve_bytes; classes "
          f"{', '.join(info.class_names)}{'; flip test-time augmentation' if args.tta else ''})")
    if onnx is not None:
        content, described = onnx
        atomic_write_bytes(out / described["file"], content)
        metadata = json.loads((out / "metadata.json").read_text())
        write_json(out / "metadata.json", {**metadata, "onnx": described})
        print(f"ONNX (opset {ONNX_OPSET}): {out / described['file']} "
              f"({len(content) / 2**20:.1f} MiB)")
    if args.tflite or args.quantize:
        print(f"export {next(step)}/{parts}: TFLite float32", file=sys.stderr, flush=True)
        path = export_tflite(model, out / "model.tflite")
        print(f"TFLite float32: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        if args.quantize:
            print(f"export {next(step)}/{parts}: TFLite quantized", file=sys.stderr, flush=True)
            path = export_tflite(model, out / "model_quantized.tflite", quantize=True)
            print(f"TFLite dynamic-range quantized: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
