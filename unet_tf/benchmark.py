r"""Measure speed and memory, side by side with a pipeline built the way the tutorial builds it.

    python -m unet_tf.benchmark                                    # synthetic photos, ~5 minutes
    python -m unet_tf.benchmark --data-dir data/oxford-iiit-pet --json bench.json   # real photos
    python -m unet_tf.benchmark --examples 64 --epochs 2 --skip-tflite   # a quick look

In one run, on the same model and the same photos read from files on disk, it measures:

a. input pipeline: images/s delivered as training batches, on the first pass (decoding, filling
   the cache) and on later passes (from the cache);
b. training: images/s in steady state (the median epoch after the first, which compiles; the
   variants' epochs are interleaved, so a drift in the machine's speed hits them alike);
c. inference: latency at batch 1 and batch 8 of the Keras model, the exported SavedModel (resize,
   scaling and argmax included), model.onnx in ONNX Runtime and model.tflite in LiteRT (float32
   and quantized), each also as a ratio to Keras;
d. memory: the bytes the training data takes in each cache, and the process's peak RSS.

The reference is the tutorial's pipeline: map(load_image) -> cache (float32 images) -> shuffle
-> batch -> repeat -> map(Augment) -> prefetch. Every figure of this project's pipeline is also
given as a ratio to it. The table is printed and, with --json, written.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from unet_tf import data
from unet_tf.cli import command_parser, positive_int, run_command
from unet_tf.config import preset
from unet_tf.data import synthetic
from unet_tf.data.sources import oxford_list_names
from unet_tf.images import write_png
from unet_tf.run.outputs import BENCHMARK_FORMAT, check_report_file
from unet_tf.progress import progress
from unet_tf.files import write_json
from unet_tf.training import build_model

# --- the tutorial-style reference pipeline ------------------------------------------------------


class _TutorialAugment(keras.layers.Layer):
    """The tutorial's Augment layer: one RandomFlip for inputs, one for labels, same seed."""

    def __init__(self, seed=42):
        super().__init__(name="tutorial_augment")
        self.augment_inputs = keras.layers.RandomFlip(mode="horizontal", seed=seed)
        self.augment_labels = keras.layers.RandomFlip(mode="horizontal", seed=seed)

    def call(self, inputs, labels):
        return self.augment_inputs(inputs), self.augment_labels(labels)


def reference_pipeline(image_paths, mask_paths, size, batch_size, buffer=1000):
    """The tutorial's pipeline over files: float32 images in the cache, per-example mapping.
    Returns (the cached examples, the training batches)."""

    def load_image(image_path, mask_path):
        image = tf.io.decode_image(tf.io.read_file(image_path), channels=3,
                                   expand_animations=False)
        mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)
        image = tf.image.resize(image, (size, size))
        mask = tf.image.resize(mask, (size, size), method="nearest")
        return tf.cast(image, tf.float32) / 255.0, mask[..., 0] - 1

    dataset = tf.data.Dataset.from_tensor_slices((image_paths, mask_paths))
    cached = dataset.map(load_image, num_parallel_calls=tf.data.AUTOTUNE).cache()
    return cached, (cached.shuffle(buffer).batch(batch_size).repeat()
                    .map(_TutorialAugment()).prefetch(tf.data.AUTOTUNE))


# --- measurements -------------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_photos(folder: Path, count: int, seed: int, scale: float = 3.5) -> Path:
    """Synthetic photos as JPEG files and trimaps as PNG, in the oxford_iiit_pet layout, enlarged
    `scale` times: from 80-160 px to about the real photos' 300-500 px, so that decoding costs
    what it costs on real data."""
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    (folder / "annotations" / "trimaps").mkdir(parents=True)
    names = []
    for i, example in enumerate(synthetic.make_examples(count, seed)):
        name = f"synthetic_{i}"
        height, width = example["image"].shape[:2]
        size = (round(width * scale), round(height * scale))
        image = Image.fromarray(example["image"]).resize(size, Image.Resampling.BILINEAR)
        image.save(folder / "images" / f"{name}.jpg", quality=92)
        mask = Image.fromarray(example["segmentation_mask"][..., 0])
        write_png(folder / "annotations" / "trimaps" / f"{name}.png",
                  np.asarray(mask.resize(size, Image.Resampling.NEAREST)))
        names.append(name)
    listing = "".join(f"{n} 1 1 1\n" for n in names)
    (folder / "annotations" / "trainval.txt").write_text(listing)
    (folder / "annotations" / "test.txt").write_text(listing)
    return folder


def _pairs(root: Path):
    rows = oxford_list_names(root / "annotations" / "trainval.txt")
    images = [root / "images" / f"{r}.jpg" for r in rows]
    keep = [i for i, p in enumerate(images)
            if p.is_file() and (root / "annotations" / "trimaps" / f"{rows[i]}.png").is_file()]
    return ([str(images[i]) for i in keep],
            [str(root / "annotations" / "trimaps" / f"{rows[i]}.png") for i in keep])


def _throughput(batches, count: int, batch_size: int) -> float:
    """Images/s of iterating `count` images' worth of batches."""
    steps = -(-count // batch_size)
    started = time.perf_counter()
    seen = 0
    for x, _ in batches.take(steps):
        seen += int(x.shape[0])
    return seen / (time.perf_counter() - started)


def measure_pipelines(root: Path, config, rounds: int = 3) -> tuple:
    """(results, split, reference pipeline): first passes over the files (decoding into the
    cache), then passes over the cache, of both pipelines. A first pass is timed from building
    the pipeline to its last example, for both (the reference's without its building is kept
    too: `first_pass_unbuilt_images_per_s`). The first passes alternate, `rounds` of each, and their medians are reported: one pass takes a
    fraction of a second, so a single one mostly measures the machine's mood (and the first to
    read the files would pay for the disk alone)."""
    image_paths, mask_paths = _pairs(root)
    # Both pipelines once over a few photos first: the process's one-time start-up (TensorFlow's
    # runtime, the first traces) is then paid by neither first pass.
    data.load_split(config, "train[:8]")
    _throughput(reference_pipeline(image_paths[:8], mask_paths[:8], config.image_size,
                                   config.batch_size)[1], 8, config.batch_size)
    first = {"ours": [], "reference": []}
    unbuilt = []  # the reference's first passes without building the pipeline
    rss = {"ours": 0.0, "reference": 0.0}
    for _ in progress(range(rounds), "first passes", unit="round"):
        before = _rss_mb()
        started = time.perf_counter()
        split = data.load_split(config, "train")
        first["ours"].append(len(split) / (time.perf_counter() - started))
        rss["ours"] = max(rss["ours"], _rss_mb() - before)
        # Timed from building it (tf.data traces its map function then), as ours is. The
        # tutorial's masks are trimap values 1/2/3 (it subtracts 1): those of the local layout.
        before = _rss_mb()
        started = time.perf_counter()
        cached, reference = reference_pipeline(image_paths, mask_paths, config.image_size,
                                               config.batch_size)
        build_seconds = time.perf_counter() - started
        pass_seconds = len(split) / _throughput(reference, len(split), config.batch_size)
        first["reference"].append(len(split) / (build_seconds + pass_seconds))
        unbuilt.append(len(split) / pass_seconds)
        rss["reference"] = max(rss["reference"], _rss_mb() - before)
    ours = data.make_dataset(split.images, split.masks, config.batch_size, training=True,
                             seed=0).repeat()
    n = len(split)
    results = {
        "ours": {
            "first_pass_images_per_s": statistics.median(first["ours"]),
            "cached_images_per_s": statistics.median(
                _throughput(ours, n, config.batch_size) for _ in range(3)),
            "cache_mb": (split.images.nbytes + split.masks.nbytes) / 2**20,
        },
        "reference": {
            "first_pass_images_per_s": statistics.median(first["reference"]),
            "cached_images_per_s": statistics.median(
                _throughput(reference, n, config.batch_size) for _ in range(3)),
            # What its cache holds, element by element (read back from the filled cache).
            "cache_mb": sum(x.nbytes + y.nbytes for x, y in cached.as_numpy_iterator()) / 2**20,
        },
    }
    results["reference"]["first_pass_unbuilt_images_per_s"] = statistics.median(unbuilt)
    for name in results:
        results[name]["first_pass_rounds_images_per_s"] = first[name]
        results[name]["rss_growth_mb"] = rss[name]
    return results, split, reference


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


def measure_training(variants: dict, rounds: int) -> dict:
    """Steady-state training images/s of each variant, {name: (config, batches, steps)}.

    Every variant first trains one epoch (which compiles, untimed); then `rounds` rounds of one
    epoch per variant, interleaved, so that a change in the machine's speed during the run (on
    shared machines it drifts by tens of percent) hits every variant alike. Reported: the median
    epoch of each.
    """
    models, timers = {}, {}
    for name, (config, batches, steps) in variants.items():
        keras.utils.set_random_seed(0)
        models[name], timers[name] = build_model(config), _EpochTimer()
        models[name].fit(batches, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    for _ in progress(range(rounds), "training rounds", unit="round"):
        for name, (config, batches, steps) in variants.items():
            models[name].fit(batches, epochs=1, steps_per_epoch=steps, callbacks=[timers[name]],
                             verbose=0, shuffle=False)
    return {name: steps * config.batch_size / statistics.median(timers[name].seconds)
            for name, (config, batches, steps) in variants.items()}


def _latencies_ms(runners: dict, repeats: int, rounds: int = 5) -> dict:
    """The median latency (ms) of each of `runners` ({name: call}): each called twice first
    (tracing, first allocations), then `rounds` rounds of `repeats / rounds` calls of each in
    turn, so that a change in the machine's speed during the measurement hits them alike."""
    for run in runners.values():
        run()
        run()
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(max(repeats // rounds, 1)):
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


BATCHES = (1, 8)  # the batch sizes every runtime's latency is measured at


def _interpreter_runner(path, batch: int):
    """A function running a .tflite file on float32 [batch, S, S, 3] in LiteRT (TensorFlow's
    interpreter where ai-edge-litert is missing), and the runtime's name."""
    from unet_tf.export import tflite_interpreter

    interpreter = tflite_interpreter(path)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    if batch != inp["shape"][0]:
        interpreter.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
        interpreter.allocate_tensors()

    def run(x):
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    return run, type(interpreter).__module__.split(".")[0]


def _onnx_session(model, policy) -> tuple:
    """(an ONNX Runtime session of the model as `export --onnx` writes it, the file's bytes), or
    (None, 0) with a note where tf2onnx or onnxruntime is not installed."""
    try:
        import onnxruntime
        import tf2onnx  # noqa: F401  (export --onnx converts with it)
    except ImportError:
        print('ONNX Runtime left out: pip install "unet_tf[onnx]" to measure it', flush=True)
        return None, 0
    from unet_tf.export import onnx_model

    content, _ = onnx_model(model, policy)
    return onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"]), len(content)


def measure_inference(model, images: np.ndarray, folder: Path, repeats: int, tflite: bool,
                      onnx: bool = True) -> dict:
    """Latency at batch 1 and 8 of each runtime (median of `repeats` calls, interleaved): Keras
    (float input, logits out), the SavedModel (uint8 pixels in; resize, scaling, softmax and
    argmax inside), ONNX Runtime (uint8 at the model's size; scaling, softmax and argmax inside)
    and LiteRT (float input, logits out; float32 and quantized)."""
    from unet_tf.export import export_saved_model, export_tflite
    from unet_tf.run.model_file import RunInfo

    size = model.input_shape[1]
    info = RunInfo(("pet", "background", "border"), size, "trimap", {}, {})
    export = export_saved_model(model, folder / "export", info)
    served = tf.saved_model.load(str(export)).signatures["serving_default"]
    pixels = {batch: images[:batch] for batch in BATCHES}
    floats = {batch: data.normalize(pixels[batch]).numpy() for batch in BATCHES}
    runners = {
        "keras": {batch: (lambda x=floats[batch]: model.predict_on_batch(x)) for batch in BATCHES},
        "savedmodel": {batch: (lambda x=tf.constant(pixels[batch]): served(images=x))
                       for batch in BATCHES},
    }
    sizes = {"savedmodel": sum(p.stat().st_size for p in export.rglob("*") if p.is_file())}
    runtimes = {}
    session, sizes["onnxruntime"] = _onnx_session(model, info.policy) if onnx else (None, 0)
    if session is not None:
        runners["onnxruntime"] = {batch: (lambda x=pixels[batch]: session.run(None, {"images": x}))
                                  for batch in BATCHES}
        runtimes["onnxruntime"] = "onnxruntime"
    if tflite:
        for name, quantize in (("tflite", False), ("tflite_quantized", True)):
            path = export_tflite(model, folder / f"{name}.tflite", quantize=quantize)
            sizes[name] = path.stat().st_size
            runners[name] = {}
            for batch in BATCHES:
                run, runtimes[name] = _interpreter_runner(path, batch)
                runners[name][batch] = (lambda run=run, x=floats[batch]: run(x))
    latency = {batch: _latencies_ms({name: by_batch[batch] for name, by_batch in runners.items()},
                                    repeats) for batch in BATCHES}
    results = {}
    for name in runners:
        results[name] = {"latency_ms": latency[1][name], "batch8_latency_ms": latency[8][name],
                         "images_per_s": 8 / latency[8][name] * 1000}
        if sizes.get(name):
            results[name]["size_mb"] = sizes[name] / 2**20
        if name in runtimes:
            results[name]["runtime"] = runtimes[name]
    return results


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a benchmark run measures (the command's options)."""

    data_dir: str = ""  # a local oxford_iiit_pet copy; empty: synthetic photos written for it
    examples: int = 256
    image_size: int = 128
    batch_size: int = 16
    alpha: float = 1.0
    epochs: int = 5
    steps_per_execution: tuple = (4,)
    xla: bool = False
    bfloat16: bool = False
    repeats: int = 30
    tflite: bool = True
    onnx: bool = True


def run(setup: Setup) -> dict:
    with tempfile.TemporaryDirectory(prefix="unet_tf-benchmark-") as scratch:
        scratch = Path(scratch)
        root = Path(setup.data_dir) if setup.data_dir else write_photos(
            scratch / "photos", setup.examples, seed=0)
        # The tutorial's model and recipe, from random weights (no download), in float32.
        config = preset("tutorial", encoder_weights="none", image_size=setup.image_size,
                        batch_size=setup.batch_size, alpha=setup.alpha, data_dir=str(root),
                        mixed_precision="off", seed=0)
        print(f"data: {root} ({'local copy' if setup.data_dir else 'synthetic'}), "
              f"{config.image_size} px, batch {config.batch_size}, MobileNetV2 alpha {config.alpha}")
        print("1/3 input pipelines ...", flush=True)
        pipelines, split, reference = measure_pipelines(root, config)
        steps = max(len(split) // config.batch_size, 1)
        ours = data.make_dataset(split.images, split.masks, config.batch_size, training=True,
                                 seed=0).repeat()
        print(f"2/3 training, {setup.epochs} epochs of {steps} steps per variant, interleaved ...",
              flush=True)
        variants = {"reference": (config, reference, steps), "ours": (config, ours, steps)}
        for spe in setup.steps_per_execution:
            spe_config = dataclasses.replace(config, steps_per_execution=spe)
            variants[f"ours, steps_per_execution={spe}"] = (spe_config, ours,
                                                            steps - steps % spe or spe)
        if setup.xla:
            variants["ours, XLA"] = (dataclasses.replace(config, xla="on"), ours, steps)
        if setup.bfloat16:
            variants["ours, mixed_bfloat16"] = (
                dataclasses.replace(config, mixed_precision="bfloat16"), ours, steps)
        training = measure_training(variants, setup.epochs - 1)
        print("3/3 inference: Keras, SavedModel" + (", ONNX Runtime" if setup.onnx else "")
              + (", LiteRT" if setup.tflite else "") + " ...", flush=True)
        model = build_model(config)
        inference = measure_inference(model, split.images, scratch, setup.repeats, setup.tflite,
                                      setup.onnx)
    result = {
        "format": BENCHMARK_FORMAT,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "gpus": len(tf.config.list_physical_devices("GPU")),
                    "tensorflow": tf.__version__, "keras": keras.__version__},
        "setup": {**dataclasses.asdict(setup), "examples": len(split),
                  "data": setup.data_dir or "synthetic JPEG/PNG files"},
        "pipeline": pipelines, "training_images_per_s": training, "inference": inference,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    return {**result, "ratios": ratios(result)}


def ratios(result: dict) -> dict:
    """Every comparison as one number, ours over the reference (for inference: over Keras)."""
    p, t, i = result["pipeline"], result["training_images_per_s"], result["inference"]
    out = {f"{key}_ratio": p["ours"][field] / p["reference"][field] for key, field in (
        ("first_pass", "first_pass_images_per_s"), ("cached", "cached_images_per_s"),
        ("cache_memory", "cache_mb"))}
    for name, value in t.items():
        if name != "reference":
            key = "training" if name == "ours" else "training_" + re.sub(
                r"\W+", "_", name.split(", ", 1)[1]).strip("_")
            out[f"{key}_ratio"] = value / t["reference"]
    for name, values in i.items():
        if name != "keras":
            out[f"{name}_latency_ratio"] = values["latency_ms"] / i["keras"]["latency_ms"]
            out[f"{name}_batch8_latency_ratio"] = (values["batch8_latency_ms"]
                                                   / i["keras"]["batch8_latency_ms"])
    return out


def format_table(result: dict) -> str:
    p, t, i = result["pipeline"], result["training_images_per_s"], result["inference"]
    ours_train, ref_train = t["ours"], t["reference"]
    rows = [
        "| measure | this project | tutorial-style reference | ratio |",
        "|---|---|---|---|",
        f"| input pipeline, first pass (img/s) | {p['ours']['first_pass_images_per_s']:.0f} | "
        f"{p['reference']['first_pass_images_per_s']:.0f} | "
        f"{p['ours']['first_pass_images_per_s'] / p['reference']['first_pass_images_per_s']:.2f}x |",
        f"| input pipeline, cached (img/s) | {p['ours']['cached_images_per_s']:.0f} | "
        f"{p['reference']['cached_images_per_s']:.0f} | "
        f"{p['ours']['cached_images_per_s'] / p['reference']['cached_images_per_s']:.2f}x |",
        f"| training (img/s, steady state) | {ours_train:.1f} | {ref_train:.1f} | "
        f"{ours_train / ref_train:.2f}x |",
    ]
    for name, value in t.items():
        if name not in ("ours", "reference"):
            rows.append(f"| training, {name.split(', ', 1)[1]} (img/s) | {value:.1f} | | "
                        f"{value / ref_train:.2f}x |")
    rows += [
        f"| cached training data (MB) | {p['ours']['cache_mb']:.1f} | "
        f"{p['reference']['cache_mb']:.1f} | {p['ours']['cache_mb'] / p['reference']['cache_mb']:.2f}x |",
        f"| pipeline's cached data / training consumption | "
        f"{p['ours']['cached_images_per_s'] / ours_train:.0f}x | "
        f"{p['reference']['cached_images_per_s'] / ref_train:.0f}x | |",
        "",
        "| inference | batch 1 (ms) | batch 8 (ms) | img/s at batch 8 | size (MB) | "
        "batch 1 vs Keras | batch 8 vs Keras |",
        "|---|---|---|---|---|---|---|",
    ]
    keras = i["keras"]
    for name, values in i.items():
        size = f"{values['size_mb']:.1f}" if "size_mb" in values else ""
        label = f"{name} ({values['runtime']})" if "runtime" in values else name
        rows.append(f"| {label} | {values['latency_ms']:.1f} | {values['batch8_latency_ms']:.1f} | "
                    f"{values['images_per_s']:.0f} | {size} | "
                    f"{values['latency_ms'] / keras['latency_ms']:.2f}x | "
                    f"{values['batch8_latency_ms'] / keras['batch8_latency_ms']:.2f}x |")
    rows.append("")
    rows.append(f"peak process memory {result['peak_rss_mb']:.0f} MB; machine: "
                f"{result['machine']['cpu_count']} CPUs, {result['machine']['gpus']} GPUs, "
                f"TensorFlow {result['machine']['tensorflow']}")
    return "\n".join(rows)


def main(argv=None) -> int:
    return run_command(_main, argv)


def build_parser():
    """The command line of this command (every option with its help)."""
    parser = command_parser("unet_tf.benchmark", __doc__)
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", help="a local oxford_iiit_pet copy (default: synthetic "
                                         "photos written for the run)")
    data.add_argument("--examples", type=positive_int, default=256,
                      help="synthetic photos to write (default: %(default)s)")
    model = parser.add_argument_group("model")
    model.add_argument("--image-size", type=positive_int, default=128,
                       help="the model's input side in px (default: %(default)s)")
    model.add_argument("--alpha", type=float, default=1.0,
                       help="MobileNetV2 width multiplier (default: %(default)s)")
    training = parser.add_argument_group("training")
    training.add_argument("--batch-size", type=positive_int, default=16,
                          help="examples per batch (default: %(default)s)")
    training.add_argument("--epochs", type=positive_int, default=5,
                          help="training epochs per variant, at least 2: the first compiles and "
                               "is not timed (default: %(default)s)")
    training.add_argument("--steps-per-execution", type=positive_int, nargs="*", default=[4],
                          help="extra training variants with these steps_per_execution "
                               "(default: 4)")
    training.add_argument("--xla", action="store_true", help="also measure training with XLA")
    training.add_argument("--bfloat16", action="store_true",
                          help="also measure training with --mixed-precision bfloat16")
    inference = parser.add_argument_group("inference")
    inference.add_argument("--repeats", type=positive_int, default=30,
                           help="timed inference calls (default: %(default)s)")
    inference.add_argument("--skip-tflite", action="store_true",
                           help="leave out the TFLite conversions and their latency")
    inference.add_argument("--skip-onnx", action="store_true",
                           help="leave out the ONNX conversion and ONNX Runtime's latency")
    output = parser.add_argument_group("output")
    output.add_argument("--json", help="a new file for the results (every comparison also as a "
                                       "*_ratio field, ours over the reference)")
    return parser


def _main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch compiles and is not timed")
    if args.json:
        check_report_file(Path(args.json), kind=BENCHMARK_FORMAT)
    result = run(Setup(args.data_dir or "", args.examples, args.image_size, args.batch_size,
                       args.alpha, args.epochs, tuple(args.steps_per_execution), args.xla,
                       args.bfloat16, args.repeats, not args.skip_tflite, not args.skip_onnx))
    print(format_table(result))
    if args.json:
        write_json(args.json, result)
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
