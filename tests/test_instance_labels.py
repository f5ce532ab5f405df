"""--labels instance: instance masks (label images, or one mask per object) read into the 3-class
target of unet_tf.instances.boundary_target (background, interior, boundary), exact after the
resize policy's nearest-neighbour fitting; their errors; resize auto measuring each object."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from unet_tf import data
from unet_tf.config import Config, ConfigError, preset
from unet_tf.data import geometry
from unet_tf.data.decoding import decode_pair, nearest_indices, read_instances
from unet_tf.data.policy import Policy
from unet_tf.instances import boundary_target, instance_width

from tiny import TINY

SIZES = [(48, 40), (40, 56), (64, 64), (36, 44)]


def _instances(height, width, seed, first_id=300):
    """An int32 label image of touching rectangles (ids above 255) and a separate disc."""
    rng = np.random.default_rng(seed)
    instances = np.zeros((height, width), np.int32)
    top, left = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    half = width // 3
    instances[top:top + height // 2, left:left + half] = first_id
    instances[top:top + height // 2, left + half:left + 2 * half] = first_id + 1000  # touching
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - (3 * height) // 4) ** 2 + (xx - width // 2) ** 2 <= (min(height, width) // 8) ** 2
    instances[disc] = 65535
    return instances


def _photo(instances):
    photo = np.where(instances[..., None] > 0, 200, 30).astype(np.uint8)
    return np.repeat(photo, 3, axis=2)


def _write_16bit(path, array):
    Image.fromarray(np.asarray(array, np.uint16)).save(path)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """images/ + masks/ with 16-bit label PNGs; returns (root, {stem: instances})."""
    root = tmp_path_factory.mktemp("labelled")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    truth = {}
    for i, (height, width) in enumerate(SIZES * 2):
        instances = _instances(height, width, i)
        Image.fromarray(_photo(instances)).save(root / "images" / f"p{i}.png")
        _write_16bit(root / "masks" / f"p{i}.png", instances)
        truth[f"p{i}"] = instances
    return root, truth


def _config(root, **values):
    return Config(**{**dict(dataset="folder", data_dir=str(root), labels="instance",
                            encoder_weights="none", image_size=32, resize="squash", seed=3),
                     **values})


def _fitted_target(instances, config):
    """The target computed independently: the instances fitted as the policy fits masks
    (nearest neighbour in TensorFlow, kept int32), then boundary_target; padding background."""
    policy = Policy.from_config(config)
    height, width = instances.shape
    if policy.resize == "squash":
        size = (policy.size, policy.size)
    elif policy.resize == "pad":
        top, left, new_height, new_width = (int(v) for v in
                                            geometry.letterbox_box(height, width, policy.size))
        size = (new_height, new_width)
    else:
        size = tuple(int(v) for v in geometry.rescale(tf.zeros([height, width, 3], tf.uint8),
                                                      None, policy.scale)[0].shape[:2])
    fitted = tf.image.resize(tf.constant(instances)[..., None], size,
                             method="nearest")[..., 0].numpy()
    target = boundary_target(fitted)
    if policy.resize == "pad":
        target = np.pad(target, ((top, policy.size - top - size[0]),
                                 (left, policy.size - left - size[1])))
    return target


def test_nearest_indices_are_tensorflow_s():
    for size in (1, 5, 31, 32, 33, 47, 100, 520, 696):
        for new_size in (7, 32, 64, 128):
            expected = tf.image.resize(tf.reshape(tf.range(size), [size, 1, 1]), (new_size, 1),
                                       method="nearest")[:, 0, 0].numpy()
            np.testing.assert_array_equal(nearest_indices(size, new_size), expected)


def test_16_bit_label_pngs_become_the_boundary_target_of_the_fitted_instances(labelled):
    root, truth = labelled
    config = _config(root)
    image, instances, reason = read_instances(root / "images" / "p0.png", root / "masks" / "p0.png")
    assert reason is None and instances.dtype == np.int32
    np.testing.assert_array_equal(instances, truth["p0"])  # ids above 255 kept
    assert config.class_names == ("background", "interior", "boundary")
    split = data.load_split(config, "train")
    assert len(split) == len(truth) and not split.skipped
    for name, mask in zip(split.names, split.masks):
        np.testing.assert_array_equal(mask, _fitted_target(truth[name], config))
    assert set(np.unique(split.masks)) == {0, 1, 2}


@pytest.mark.parametrize("resize,extra", [("pad", {}), ("none", {"scale": 0.6})])
def test_the_target_is_exact_after_pad_and_scaled_native_fitting(labelled, resize, extra):
    root, truth = labelled
    config = _config(root, resize=resize, **extra)
    policy = Policy.from_config(config)
    for name in ("p0", "p1", "p3"):
        image, mask, reason, _ = decode_pair(root / "images" / f"{name}.png",
                                             root / "masks" / f"{name}.png", config, "index")
        assert reason is None
        fitted = policy.fit(image, mask)[1]
        np.testing.assert_array_equal(fitted, _fitted_target(truth[name], config))


def test_without_resizing_the_target_is_boundary_target_itself(tmp_path):
    instances = _instances(32, 32, 0)
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    Image.fromarray(_photo(instances)).save(tmp_path / "images" / "a.png")
    Image.fromarray(instances.astype(np.uint16)).save(tmp_path / "masks" / "a.tif")  # TIFF
    _, mask, reason, _ = decode_pair(tmp_path / "images" / "a.png", tmp_path / "masks" / "a.tif",
                                     _config(tmp_path), "index")
    assert reason is None
    np.testing.assert_array_equal(mask, boundary_target(instances))


def test_8_bit_label_images_are_read_too(tmp_path):
    instances = _instances(40, 40, 1, first_id=1)
    instances[instances == 1001] = 2
    instances[instances == 65535] = 7
    image_path, mask_path = tmp_path / "a.png", tmp_path / "a_mask.png"
    Image.fromarray(_photo(instances)).save(image_path)
    Image.fromarray(instances.astype(np.uint8)).save(mask_path)
    np.testing.assert_array_equal(read_instances(image_path, mask_path)[1], instances)


def _per_object_layout(root, truth):
    """The 2018 Data Science Bowl layout of the same examples: ID/images/ID.png and one binary
    mask per object in ID/masks/."""
    for name, instances in truth.items():
        (root / name / "images").mkdir(parents=True)
        (root / name / "masks").mkdir()
        Image.fromarray(_photo(instances)).save(root / name / "images" / f"{name}.png")
        for number, value in enumerate(np.unique(instances)[1:]):
            Image.fromarray(((instances == value) * 255).astype(np.uint8)).save(
                root / name / "masks" / f"object{number}.png")


def test_one_folder_per_image_reads_as_the_equivalent_label_image(labelled, tmp_path):
    root, truth = labelled
    _per_object_layout(tmp_path, truth)
    per_object = data.load_split(_config(tmp_path), "train")
    label_images = data.load_split(_config(root), "train")
    assert per_object.names == label_images.names and not per_object.skipped
    np.testing.assert_array_equal(per_object.masks, label_images.masks)
    np.testing.assert_array_equal(per_object.images, label_images.images)
    # read as one mask per object: ids 1, 2, ... in file-name order, the same objects
    _, instances, _ = read_instances(tmp_path / "p0" / "images" / "p0.png",
                                     tmp_path / "p0" / "masks")
    np.testing.assert_array_equal(np.unique(instances), [0, 1, 2, 3])
    # Other labels are told what the layout needs.
    with pytest.raises(data.DataError, match="one mask per object.*--labels instance"):
        data.load_split(_config(tmp_path, labels="binary"), "train")


def _pair(root):
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "photo.png")
    return root / "photo.png"


def test_overlapping_and_empty_object_masks_are_named(tmp_path):
    photo = _pair(tmp_path)
    masks = tmp_path / "masks"
    masks.mkdir()
    first = np.zeros((32, 32), np.uint8)
    first[2:10, 2:10] = 255
    second = np.zeros((32, 32), np.uint8)
    second[8:16, 8:16] = 255
    Image.fromarray(first).save(masks / "a.png")
    Image.fromarray(second).save(masks / "b.png")
    reason = read_instances(photo, masks)[2]
    assert reason == (f"{masks / 'b.png'}: overlaps the object mask a.png (4 pixels); each pixel "
                      "belongs to one object at most")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(masks / "b.png")
    assert read_instances(photo, masks)[2] == (f"{masks / 'b.png'}: an empty object mask (no "
                                               "pixel set); remove it")


def test_ids_above_65535_and_a_mask_of_another_size_are_named(tmp_path):
    photo = _pair(tmp_path)
    large = np.zeros((32, 32), np.int32)
    large[4:8, 4:8] = 70_000
    Image.fromarray(large).save(tmp_path / "large.tif")  # a 32-bit TIFF
    reason = read_instances(photo, tmp_path / "large.tif")[2]
    assert reason.startswith(f"{tmp_path / 'large.tif'}: object ids up to 70000, above 65535")
    _write_16bit(tmp_path / "wide.png", np.zeros((32, 40)))
    assert read_instances(photo, tmp_path / "wide.png")[2] == (
        f"{tmp_path / 'wide.png'}: the mask is 40x32 but its image photo.png is 32x32")
    # in a split, the pair is skipped with its reason, the rest is used
    root = tmp_path / "split"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for name, mask in (("good", _instances(32, 32, 0)), ("bad", np.zeros((32, 40)))):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "images" / f"{name}.png")
        _write_16bit(root / "masks" / f"{name}.png", mask)
    split = data.load_split(_config(root), "train")
    assert split.names == ["good"]
    assert split.skipped == [("bad", f"{root / 'masks' / 'bad.png'}: the mask is 40x32 but its "
                                     "image bad.png is 32x32")]


def test_resize_auto_measures_each_touching_object():
    touching = np.zeros((64, 64), np.int32)
    for k in range(4):  # four 8 px wide strips side by side: one 32 px block as a plain mask
        touching[8:40, 16 + 8 * k:24 + 8 * k] = k + 1
    assert geometry.object_width((touching > 0).astype(np.uint8), 0) == pytest.approx(32.0)
    assert instance_width(touching) == pytest.approx(4 * 32 * 32 / (4 * 2 * (32 + 8)))
    assert np.isnan(instance_width(np.zeros((8, 8), np.int32)))


def test_resize_auto_chooses_from_the_instances(tmp_path):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    touching = np.zeros((128, 128), np.int32)
    for k in range(8):  # 4 px wide strips touching: 32 px wide merged, 1 px squashed to 32 px
        touching[32:96, 32 + 4 * k:36 + 4 * k] = k + 1
    for i in range(2):
        Image.fromarray(_photo(touching)).save(tmp_path / "images" / f"{i}.png")
        _write_16bit(tmp_path / "masks" / f"{i}.png", touching)
    config = _config(tmp_path, resize="auto", image_size=64)
    chosen, message = data.choose_resize(config, data.list_files(config, "train"))
    assert chosen.resize == "none" and "objects about 8 px wide" in message


def test_presets_accept_instance_labels_and_other_datasets_do_not(tmp_path):
    own = preset("own-data", data_dir=str(tmp_path), labels="instance")
    assert own.num_classes == 3 and own.class_names == ("background", "interior", "boundary")
    small = preset("small-data", dataset="folder", data_dir=str(tmp_path), labels="instance")
    assert small.num_classes == 3
    with pytest.raises(ConfigError, match="labels='instance'.*--dataset folder"):
        preset("small-data", labels="instance")
    with pytest.raises(ConfigError, match="labels='instance' trains the classes"):
        preset("own-data", data_dir=str(tmp_path), labels="instance", classes=("a", "b", "c"))


@pytest.mark.slow  # a training run
def test_a_tiny_run_trains_a_3_class_model(labelled, tmp_path):
    from unet_tf.train import train

    from unet_tf import data

    root, truth = labelled
    settings = {k: v for k, v in TINY.items() if not k.startswith("synthetic")}
    config = _config(root, **settings, epochs=1, validation_fraction=0.25)
    run = train(config, run_dir=tmp_path / "run", verbose=0)
    model = keras.models.load_model(run / "model.keras")
    assert model.output_shape[-1] == 3
    written = json.loads((run / "config.json").read_text())
    assert written["labels"] == "instance"
    report = json.loads((run / "metrics.json").read_text())
    assert report["epochs_run"] == 1 and np.isfinite(report["mean_dice"])
    # The smallest object kept when objects are separated: a quarter of the 5th-percentile area
    # of the training part's objects, at the photos' own size.
    training, _ = data.load_splits(config)
    areas = np.concatenate([np.bincount(truth[name].ravel())[1:] for name in training.names])
    assert report["min_object_size"] == max(1, int(np.percentile(areas[areas > 0], 5) / 4))


def test_the_min_object_size_reads_a_sample_of_a_large_training_part(labelled, monkeypatch):
    """The areas come from at most AUTO_SAMPLE label files spread over the training part (here 3
    of them), not from every file read again."""
    from unet_tf import evaluation
    from unet_tf.data import decoding
    from unet_tf.instances import min_object_size

    root, truth = labelled
    config = _config(root)
    training = data.load_split(config, "train")
    read = []

    def counted(image, mask, *args, **kwargs):
        read.append(Path(mask).stem)
        return read_instances(image, mask, *args, **kwargs)

    monkeypatch.setattr(decoding, "AUTO_SAMPLE", 3)
    monkeypatch.setattr(evaluation, "read_instances", counted)
    size = evaluation.training_min_object_size(config, training)
    assert len(training) > 3 and len(read) == 3
    assert read[0] == training.names[0] and read[-1] == training.names[-1]  # spread over the part
    assert size == min_object_size([truth[name] for name in read])


def test_a_run_records_its_min_object_size_beside_its_scores(labelled, tmp_path, capsys):
    """What training adds to metrics.json once it ends (the whole run is a slow test): the
    smallest object kept, a quarter of the 5th-percentile area of the training objects at the
    photos' own size, computed here with numpy; the scores already there stay; the run says it."""
    from unet_tf.train import _record_min_object_size

    root, truth = labelled
    config = _config(root)
    training = data.load_split(config, "train")
    (tmp_path / "metrics.json").write_text(json.dumps({"mean_dice": 0.5}))
    _record_min_object_size(tmp_path, config, training)
    areas = np.concatenate([np.bincount(truth[name].ravel())[1:] for name in training.names])
    expected = max(1, int(np.percentile(areas[areas > 0], 5) / 4))
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        "mean_dice": 0.5, "min_object_size": expected}
    assert f"fragments under {expected} px" in capsys.readouterr().out


def test_streamed_examples_equal_the_examples_held_in_memory(labelled):
    from unet_tf.data import streaming

    root, _ = labelled
    config = _config(root, resize="pad")
    held = data.load_split(config, "train")
    streamed = data.load_split(config, "train", stream=True)
    masks = [mask for _, mask in streaming.examples(streamed, config, False, None)
             .as_numpy_iterator()]
    np.testing.assert_array_equal(np.stack(masks), held.masks)
