"""A fingerprint of what the package does, recorded in tests/fingerprint.json: the first training
batches for a fixed seed, photos of the real sample as training stores them, the weights after
one epoch, a patch model's tiled predictions and an exported SavedModel's outputs. Refactoring
keeps every figure equal (pixels and masks exactly; floats to float32 noise).

Recording a new fingerprint is a decision about behaviour, not a fix for a failing test:

    python tests/test_fingerprint.py --record
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

RECORD = Path(__file__).with_name("fingerprint.json")
SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/oxford-pets-sample"
TINY = dict(alpha=0.35, decoder_filters=(16, 16, 16, 16), synthetic_train_examples=16,
            synthetic_val_examples=8, batch_size=8, epochs=1, seed=3, deterministic=True)


def _digest(array) -> str:
    array = np.ascontiguousarray(array)
    return hashlib.sha256(str((array.dtype, array.shape)).encode() + array.tobytes()).hexdigest()[:16]


def _floats(array) -> list:
    """Sum, sum of squares and the first values of a float array: enough to see any change."""
    array = np.asarray(array, np.float64).reshape(-1)
    return [float(array.sum()), float((array ** 2).sum()), *map(float, array[:3])]


def batches(tmp_path) -> dict:
    """The first training batches of the quickstart preset for seed 3, as train() makes them."""
    import keras

    from unet_tf import data
    from unet_tf.config import preset

    found = {}
    for name, overrides in {"squash": {}, "patches": dict(resize="none", patch_size=32,
                                                          crops_per_image=2)}.items():
        config = preset("quickstart", image_size=64, **{**TINY, **overrides})
        keras.utils.set_random_seed(config.seed)  # as train() does: the shuffle depends on it
        train, _ = data.load_splits(config)
        dataset = data.make_dataset(
            train.images, train.masks, 8, training=True, seed=config.seed,
            augment=config.augment, augment_scale=config.augment_scale,
            augment_rotation=config.augment_rotation, augment_color=config.augment_color,
            patch_size=config.patch_size or config.model_size,
            foreground_crops=config.foreground_crops, crops_per_image=config.crops_per_image,
            background=data.background_class(config))
        for i, (images, masks) in enumerate(dataset.take(2).as_numpy_iterator()):
            found[f"batch {name} {i} masks"] = _digest(masks)
            found[f"batch {name} {i} images"] = _floats(images)
    return found


def sample_photos() -> dict:
    """Photos of the real sample as a split holds them: padded to 64 px, and native at scale 0.3."""
    from unet_tf import data
    from unet_tf.config import preset

    found = {}
    for resize, overrides in {"pad": dict(image_size=64), "none": dict(scale=0.3, patch_size=64,
                                                                      image_size=64)}.items():
        config = preset("quickstart", dataset="oxford_iiit_pet", data_dir=str(SAMPLE),
                        resize=resize, **overrides)
        split = data.load_split(config, "test[:5]")
        found[f"sample {resize} names"] = list(split.names)
        for name, image, mask in zip(split.names, split.images, split.masks):
            found[f"sample {resize} {name}"] = [_digest(image), _digest(mask)]
    return found


def trained(tmp_path) -> dict:
    """Weights after one epoch, a patch model's tiled predictions, the SavedModel's outputs."""
    import keras
    import tensorflow as tf

    from unet_tf import data
    from unet_tf.config import preset
    from unet_tf.export import export_saved_model
    from unet_tf.inference import predict_masks
    from unet_tf.run.model_file import load_model_safely
    from unet_tf.train import train

    found = {}
    config = preset("quickstart", image_size=32, **TINY)
    run = train(config, run_dir=tmp_path / "squash", verbose=0)
    model, info = load_model_safely(run / "model.keras")
    for i, weight in enumerate(model.weights):  # by position: layer names count the models made
        found[f"weights {i:03d}"] = _floats(keras.ops.convert_to_numpy(weight))
    found["metrics"] = {k: v for k, v in json.loads((run / "metrics.json").read_text()).items()
                        if k not in ("training_seconds",)}
    photos = [data.synthetic.make_example(np.random.default_rng(i))["image"] for i in (1, 2)]
    served = tf.saved_model.load(str(export_saved_model(model, tmp_path / "export", info)))
    for i, photo in enumerate(photos):
        out = served.signatures["serving_default"](images=tf.constant(photo[None]))
        found[f"savedmodel {i} probabilities"] = _floats(out["probabilities"].numpy())

    config = preset("quickstart", resize="none", patch_size=32, crops_per_image=2, image_size=64,
                    **TINY)
    run = train(config, run_dir=tmp_path / "patches", verbose=0)
    model, info = load_model_safely(run / "model.keras")
    found["patch model metrics"] = json.loads((run / "metrics.json").read_text())["mean_dice"]
    for i, mask in enumerate(predict_masks(model, photos, policy=info.policy)):
        found[f"patch model tiled {i}"] = [int(np.bincount(mask.reshape(-1), minlength=3)[c])
                                           for c in range(3)]
    return found


def fingerprint(tmp_path, with_sample: bool) -> dict:
    return {**batches(tmp_path), **(sample_photos() if with_sample else {}), **trained(tmp_path)}


def _same(recorded, now, where: str, problems: list) -> None:
    if isinstance(recorded, list) and recorded and isinstance(recorded[0], float):
        if not np.allclose(now, recorded, rtol=2e-4, atol=2e-4):
            problems.append(f"{where}: {now} != recorded {recorded}")
    elif isinstance(recorded, dict):
        for key in recorded:
            _same(recorded[key], now.get(key), f"{where}.{key}", problems)
    elif isinstance(recorded, float):
        if now is None or abs(now - recorded) > 2e-4:
            problems.append(f"{where}: {now} != recorded {recorded}")
    elif isinstance(recorded, list) and recorded and isinstance(recorded[0], int):
        # Pixel counts of an argmax: a pixel may flip where two classes tie within float noise.
        if len(now) != len(recorded) or np.abs(np.subtract(now, recorded)).sum() > 2:
            problems.append(f"{where}: {now} != recorded {recorded}")
    elif now != recorded:
        problems.append(f"{where}: {now} != recorded {recorded}")


@pytest.mark.slow  # a seeded run on the pets sample: two minutes on 2 cores
def test_behaviour_matches_the_recorded_fingerprint(tmp_path):
    recorded = json.loads(RECORD.read_text())
    with_sample = (SAMPLE / "images").is_dir()
    now = fingerprint(tmp_path, with_sample)
    expected = {k: v for k, v in recorded.items() if with_sample or not k.startswith("sample ")}
    assert sorted(now) == sorted(expected)
    problems = []
    for key, value in expected.items():
        _same(value, now[key], key, problems)
    assert not problems, "\n".join(problems)


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--record"]:
        sys.exit(__doc__)
    if not (SAMPLE / "images").is_dir():
        sys.exit(f"the Oxford-IIIT Pet sample is not at {SAMPLE}: record with it")
    with tempfile.TemporaryDirectory() as folder:
        found = fingerprint(Path(folder), True)
    RECORD.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}"
                                          for k, v in found.items()) + "\n}\n")
    print(f"recorded {RECORD}")
