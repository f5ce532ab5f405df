"""Data: preprocessing, synthetic pets, splits, the folder and Oxford sources, and image reading."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from unet_tf import data
from unet_tf.config import Config
from unet_tf.data import synthetic
from unet_tf.images import ImageReadError, read_image, read_mask, write_png

# --- preprocessing ------------------------------------------------------------------------------


@pytest.mark.parametrize("labels,expected", [("trimap", [[0, 1, 2], [2, 1, 0]]),
                                             ("binary", [[1, 0, 1], [1, 0, 1]])])
def test_trimap_to_classes(labels, expected):
    trimap = tf.constant([[1, 2, 3], [3, 2, 1]], tf.uint8)
    classes = data.trimap_to_classes(trimap, labels)
    assert classes.dtype == tf.uint8
    np.testing.assert_array_equal(classes.numpy(), expected)


def test_trimap_to_classes_rejects_other_modes():
    with pytest.raises(ValueError, match="index"):
        data.trimap_to_classes(tf.constant([[1]], tf.uint8), "index")


def test_resize_mask_is_nearest_neighbour():
    mask = tf.constant([[0, 1], [2, 3]], tf.uint8)
    np.testing.assert_array_equal(data.resize_mask(mask, 4).numpy(), [[0, 0, 1, 1], [0, 0, 1, 1],
                                                                     [2, 2, 3, 3], [2, 2, 3, 3]])


@pytest.mark.parametrize("size", [3, 16, 32])
def test_resize_mask_keeps_only_existing_label_values(size):
    mask = np.random.default_rng(size).choice(np.array([0, 3, 7], np.uint8), size=(7, 5))
    resized = data.resize_mask(tf.constant(mask), size).numpy()
    assert resized.shape == (size, size) and resized.dtype == np.uint8
    assert set(np.unique(resized)) <= {0, 3, 7}


def test_resize_image_dtype_shape_and_values():
    # One row [0, 200] widened to 4 columns, bilinear with half-pixel centres:
    # sample points 0, 0.25, 0.75, 1 -> 0, 50, 150, 200 (every row alike).
    image = np.zeros((1, 2, 3), np.uint8)
    image[0, 1] = 200
    resized = data.resize_image(tf.constant(image), 4).numpy()
    assert resized.shape == (4, 4, 3) and resized.dtype == np.uint8
    np.testing.assert_array_equal(resized[..., 0], [[0, 50, 150, 200]] * 4)
    # No wrap-around at the ends of the uint8 range, batched input works.
    batch = np.stack([np.full((10, 7, 3), 255, np.uint8), np.full((10, 7, 3), 37, np.uint8)])
    resized = data.resize_image(tf.constant(batch), 8).numpy()
    assert resized.shape == (2, 8, 8, 3) and resized.dtype == np.uint8
    assert np.all(resized[0] == 255) and np.all(resized[1] == 37)


def test_normalize():
    out = data.normalize(tf.constant([0, 51, 255], tf.uint8))
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), [0.0, 0.2, 1.0], atol=1e-7)


def distinct_examples(count=8, side=6, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, side, side, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, size=(count, side, side), dtype=np.uint8)
    masks[:, 0, 0], masks[:, 0, -1] = 0, 2  # never symmetric: a flip always shows
    return images, masks


def flip_state(image, mask, original_image, original_mask):
    """'same', 'flipped', or None when image and mask disagree."""
    if np.array_equal(image, original_image) and np.array_equal(mask, original_mask):
        return "same"
    if (np.array_equal(image, original_image[:, ::-1])
            and np.array_equal(mask, original_mask[:, ::-1])):
        return "flipped"
    return None


def test_augment_batch_flips_image_and_mask_together():
    images, masks = distinct_examples(count=16)
    states = []
    for seed in (1, 2):
        out_images, out_masks = data.augment_batch(tf.constant(images), tf.constant(masks), seed)
        for i in range(len(images)):
            state = flip_state(out_images[i].numpy(), out_masks[i].numpy(), images[i], masks[i])
            assert state is not None, f"example {i}: image and mask flipped differently"
            states.append(state)
    assert {"same", "flipped"} == set(states)  # both outcomes occur


def match_example(image_float, mask, images, masks):
    """(index, state) of the source example an output example came from."""
    image = np.round(image_float * 255).astype(np.uint8)
    for i in range(len(images)):
        state = flip_state(image, mask, images[i], masks[i])
        if state:
            return i, state
    raise AssertionError("an output example matches no input example")


def test_make_dataset_for_evaluation_keeps_order_and_scales():
    images, masks = distinct_examples(count=10)
    batches = list(data.make_dataset(images, masks, batch_size=4, training=False))
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert x.shape == (10, 6, 6, 3) and y.shape == (10, 6, 6)
    np.testing.assert_allclose(x, images / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y, masks)


def test_make_dataset_for_training_shuffles_and_augments_every_example_once():
    images, masks = distinct_examples(count=12)
    dataset = data.make_dataset(images, masks, batch_size=5, training=True, seed=0)
    orders, states = [], []
    for _ in range(2):  # two epochs
        order = []
        for x, y in dataset:
            x, y = x.numpy(), y.numpy()
            assert x.dtype == np.float32 and y.dtype == np.int32
            assert 0.0 <= x.min() and x.max() <= 1.0
            for image, mask in zip(x, y):
                index, state = match_example(image, mask, images, masks)
                order.append(index)
                states.append(state)
        assert sorted(order) == list(range(12))  # every example exactly once per epoch
        orders.append(order)
    assert orders[0] != list(range(12)) and orders[0] != orders[1]  # shuffled, anew each epoch
    assert {"same", "flipped"} == set(states)


def test_make_dataset_without_augmentation_never_flips():
    images, masks = distinct_examples(count=12)
    dataset = data.make_dataset(images, masks, batch_size=12, training=True, augment=False, seed=0)
    for x, y in dataset:
        assert {match_example(i, m, images, masks)[1] for i, m in zip(x.numpy(), y.numpy())} == {
            "same"}


# --- synthetic pets -----------------------------------------------------------------------------


def test_synthetic_examples_are_deterministic_by_seed():
    first, again, other = (synthetic.make_examples(3, seed=s) for s in (5, 5, 6))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["segmentation_mask"], b["segmentation_mask"])
    def same(a, b):
        return a.shape == b.shape and np.array_equal(a, b)

    assert not any(same(a["image"], b["image"]) for a, b in zip(first, other))


def test_synthetic_examples_look_like_oxford_pets():
    for example in synthetic.make_examples(6, seed=0):
        image, mask = example["image"], example["segmentation_mask"]
        height, width = image.shape[:2]
        assert image.dtype == np.uint8 and image.shape == (height, width, 3)
        assert 80 <= height <= 160 and 80 <= width <= 160
        assert mask.dtype == np.uint8 and mask.shape == (height, width, 1)
        assert set(np.unique(mask)) == {1, 2, 3}  # pet, background, border, nothing else
        # The border band separates pet from background: no pet pixel touches a background
        # pixel, even diagonally.
        trimap = np.pad(mask[..., 0], 1, constant_values=0)
        pet = trimap == 1
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                neighbour = np.roll(np.roll(trimap, dy, axis=0), dx, axis=1)
                assert not np.any(pet & (neighbour == 2))
        # The band is thin: well under a third of the pixels.
        assert 0 < np.mean(mask == 3) < 0.3


def synthetic_config(**overrides):
    values = dict(dataset="synthetic", image_size=32, encoder_weights="none",
                  synthetic_train_examples=6, synthetic_val_examples=3)
    return Config(**{**values, **overrides})


def test_load_splits_synthetic():
    train, val = data.load_splits(synthetic_config())
    assert (len(train), len(val)) == (6, 3)
    assert train.images.shape == (6, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.masks.shape == (6, 32, 32) and train.masks.dtype == np.uint8
    assert set(np.unique(train.masks)) == {0, 1, 2}
    assert len(set(train.names)) == 6 and not set(train.names) & set(val.names)
    assert train.skipped == [] and val.skipped == []
    again, _ = data.load_splits(synthetic_config())
    np.testing.assert_array_equal(again.images, train.images)
    # The validation examples are other pets, not copies of training ones.
    assert not any(np.array_equal(v, t) for v in val.images for t in train.images)
    binary, _ = data.load_splits(synthetic_config(labels="binary"))
    np.testing.assert_array_equal(binary.masks, (train.masks != 1).astype(np.uint8))
    np.testing.assert_allclose(train.class_shares(3).sum(), 1.0)


def test_validation_fraction_is_deterministic_and_disjoint():
    config = synthetic_config(synthetic_train_examples=20, validation_fraction=0.3)
    train, val = data.load_splits(config)
    assert len(train) + len(val) == 20 and len(val) > 0 and len(train) > 0
    assert not set(train.names) & set(val.names)
    full, _ = data.load_splits(synthetic_config(synthetic_train_examples=20))
    assert set(train.names) | set(val.names) == set(full.names)
    for part in (train, val):  # images stay with their names
        for name, image in zip(part.names, part.images):
            np.testing.assert_array_equal(image, full.images[full.names.index(name)])
    train2, val2 = data.load_splits(config)
    assert (train2.names, val2.names) == (train.names, val.names)
    # An example's side depends on its name only, not on how many others there are.
    bigger_train, bigger_val = data.load_splits(
        synthetic_config(synthetic_train_examples=30, validation_fraction=0.3))
    assert set(val.names) == set(bigger_val.names) & set(full.names)
    assert set(train.names) == set(bigger_train.names) & set(full.names)


@pytest.mark.parametrize("split,expected", [
    ("train", ("train", None, None)),
    ("train[:80%]", ("train", None, "80%")),
    ("train[80%:]", ("train", "80%", None)),
    ("test[10:20]", ("test", "10", "20")),
    ("trainval[-5:]", ("trainval", "-5", None)),
    (" train [ :50% ] ", ("train", None, "50%")),
])
def test_parse_split(split, expected):
    assert data.parse_split(split) == expected


@pytest.mark.parametrize("split", ["", "train[80%]", "train[a:b]", "train/test", "train[:80%"])
def test_parse_split_rejects_malformed(split):
    with pytest.raises(data.DataError, match="train\\[:80%\\]"):
        data.parse_split(split)


# --- the folder source ----------------------------------------------------------------------------


def random_photo(rng, height, width):
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture
def folder_dataset(tmp_path):
    """train/ with two good pairs and four bad ones, test/ with two good pairs (binary masks)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "my_data"
    for split in ("train", "test"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
    train_images, train_masks = root / "train" / "images", root / "train" / "masks"
    expected = {}
    # good1: lossless 32x32 (the model size, so no resizing): 0/255 mask, left half foreground.
    photo = random_photo(rng, 32, 32)
    Image.fromarray(photo).save(train_images / "good1.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255
    write_png(train_masks / "good1.png", mask)
    expected["good1"] = (photo, (mask == 255).astype(np.uint8))
    # good2: a 64x48 JPEG with a 0/1 mask, resized on loading.
    Image.fromarray(random_photo(rng, 48, 64)).save(train_images / "good2.jpg", quality=90)
    mask = np.zeros((48, 64), np.uint8)
    mask[10:40, 20:50] = 1
    write_png(train_masks / "good2.png", mask)
    # nomask: an image without its mask.
    Image.fromarray(random_photo(rng, 32, 32)).save(train_images / "nomask.jpg")
    # broken: not an image at all, with a valid mask.
    (train_images / "broken.jpg").write_bytes(b"this is not a JPEG" * 10)
    write_png(train_masks / "broken.png", np.zeros((32, 32), np.uint8))
    # mismatch: a 32x32 image with a 20x24 mask.
    Image.fromarray(random_photo(rng, 32, 32)).save(train_images / "mismatch.png")
    write_png(train_masks / "mismatch.png", np.zeros((24, 20), np.uint8))
    # badvalues: a binary mask holding 7.
    Image.fromarray(random_photo(rng, 32, 32)).save(train_images / "badvalues.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[0, :3] = (1, 7, 1)
    write_png(train_masks / "badvalues.png", mask)
    for name in ("val1", "val2"):
        Image.fromarray(random_photo(rng, 32, 32)).save(root / "test" / "images" / f"{name}.png")
        write_png(root / "test" / "masks" / f"{name}.png",
                  rng.choice(np.array([0, 255], np.uint8), size=(32, 32)))
    return root, expected


def folder_config(root, **overrides):
    return Config(**{**dict(dataset="folder", data_dir=str(root), labels="binary", image_size=32,
                            encoder_weights="none"), **overrides})


def test_folder_source_loads_good_pairs_and_reports_the_rest(folder_dataset):
    root, expected = folder_dataset
    train, val = data.load_splits(folder_config(root))
    assert train.names == ["good1", "good2"]
    assert train.images.shape == (2, 32, 32, 3) and train.masks.shape == (2, 32, 32)
    photo, mask = expected["good1"]
    np.testing.assert_array_equal(train.images[0], photo)
    np.testing.assert_array_equal(train.masks[0], mask)  # 0/255 -> 0/1
    assert set(np.unique(train.masks[1])) == {0, 1}
    reasons = dict(train.skipped)
    assert sorted(reasons) == ["badvalues", "broken", "mismatch", "nomask"]
    assert "nomask.png missing" in reasons["nomask"]
    assert "broken.jpg" in reasons["broken"] and "not a readable image" in reasons["broken"]
    assert "32x32" in reasons["mismatch"] and "20x24" in reasons["mismatch"]
    assert "7" in reasons["badvalues"]
    assert val.names == ["val1", "val2"] and val.skipped == []
    assert set(np.unique(val.masks)) == {0, 1}
    summary = data.summary(train, ("background", "foreground"))
    assert "2 examples" in summary and "skipped 4" in summary
    assert all(name in summary for name in reasons)


def test_folder_source_with_index_masks(tmp_path):
    rng = np.random.default_rng(1)
    layout = {"train": (("a", 2), ("b", 3)), "test": (("c", 1),)}  # name, largest mask value
    for split, pairs in layout.items():
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir(parents=True)
        for name, top in pairs:
            Image.fromarray(random_photo(rng, 32, 32)).save(tmp_path / split / "images" / f"{name}.png")
            write_png(tmp_path / split / "masks" / f"{name}.png",
                      np.arange(32 * 32).reshape(32, 32) % (top + 1))
    config = folder_config(tmp_path, labels="index", classes=("sky", "road", "car"))
    train, val = data.load_splits(config)
    assert train.names == ["a"] and val.names == ["c"]
    np.testing.assert_array_equal(train.masks[0], np.arange(32 * 32).reshape(32, 32) % 3)
    np.testing.assert_array_equal(val.masks[0], np.arange(32 * 32).reshape(32, 32) % 2)
    assert [n for n, _ in train.skipped] == ["b"]
    assert "3 classes" in train.skipped[0][1]
    np.testing.assert_allclose(train.class_shares(3), np.bincount(
        np.arange(32 * 32) % 3, minlength=3) / 1024)


def test_folder_source_with_one_folder_needs_a_validation_fraction(folder_dataset):
    root, _ = folder_dataset
    single = root / "train"  # images/ and masks/ directly inside
    with pytest.raises(data.DataError, match="--validation-fraction"):
        data.load_splits(folder_config(single))
    train, val = data.load_splits(folder_config(single, validation_fraction=0.5))
    assert sorted(train.names + val.names) == ["good1", "good2"]


def test_folder_source_without_the_layout_is_a_helpful_error(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"")
    with pytest.raises(data.DataError) as error:
        data.load_splits(folder_config(tmp_path))
    message = str(error.value)
    assert str(tmp_path) in message
    assert "images/" in message and "masks/" in message and "same stem" in message


def test_label_images_read_as_binary_masks_say_to_read_them_as_instances(tmp_path):
    """A mask with one id per object, read with the default --labels binary: every pair fails
    with one short line per photo that names --labels instance, not hundreds of values."""
    for folder in ("images", "masks"):
        (tmp_path / "train" / folder).mkdir(parents=True)
    ids = np.zeros((32, 32), np.uint8)
    for index in range(40):
        ids[(index // 8) * 6:(index // 8) * 6 + 4, (index % 8) * 4:(index % 8) * 4 + 3] = index + 1
    Image.new("RGB", (32, 32)).save(tmp_path / "train" / "images" / "cells.png")
    Image.fromarray(ids).save(tmp_path / "train" / "masks" / "cells.png")
    with pytest.raises(data.DataError) as error:
        data.load_splits(folder_config(tmp_path / "train", validation_fraction=0.0,
                                       val_split="none"))
    message = str(error.value)
    assert "cells: binary mask values 41 values from 0 to 40" in message
    assert "--labels instance" in message and ", 39," not in message
    with pytest.raises(data.DataError, match="41 values from 0 to 40 outside the 3 classes"):
        data.load_splits(folder_config(tmp_path / "train", validation_fraction=0.0,
                                       val_split="none", labels="index",
                                       classes=("background", "a", "b")))


def test_folder_source_with_no_usable_example_is_an_error(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir(parents=True)
        (tmp_path / split / "images" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(data.DataError, match="no usable examples"):
        data.load_splits(folder_config(tmp_path))


# --- the Oxford-IIIT Pet layout -----------------------------------------------------------------


def make_oxford_copy(root, names, lists):
    """A tiny copy in the dataset's layout, from synthetic pets (trimaps 1/2/3)."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    for i, (name, example) in enumerate(zip(names, synthetic.make_examples(len(names), 3))):
        Image.fromarray(example["image"]).save(root / "images" / f"{name}.jpg", quality=95)
        write_png(root / "annotations" / "trimaps" / f"{name}.png", example["segmentation_mask"][..., 0])
    for list_name, rows in lists.items():
        (root / "annotations" / list_name).write_text(
            "".join(f"{row} {i + 1} 1 1\n" for i, row in enumerate(rows)))


def oxford_config(root, **overrides):
    return Config(**{**dict(data_dir=str(root), image_size=32, encoder_weights="none"),
                     **overrides})


def test_local_oxford_copy_without_test_list_names_the_file(tmp_path):
    make_oxford_copy(tmp_path, ["cat_1", "cat_2"], {"trainval.txt": ["cat_1", "cat_2"]})
    with pytest.raises(data.DataError) as error:
        data.load_splits(oxford_config(tmp_path))
    assert str(tmp_path / "annotations" / "test.txt") in str(error.value)


def test_local_oxford_copy_skips_bad_rows(tmp_path):
    make_oxford_copy(tmp_path, ["cat_1", "cat_2", "cat_3", "dog_1"],
                     {"trainval.txt": ["cat_1", "cat_2", "cat_9", "cat_3"], "test.txt": ["dog_1"]})
    width, height = Image.open(tmp_path / "images" / "cat_3.jpg").size
    trimap = np.full((height, width), 2, np.uint8)
    trimap[0, 0] = 0  # not a trimap value
    write_png(tmp_path / "annotations" / "trimaps" / "cat_3.png", trimap)
    train, val = data.load_splits(oxford_config(tmp_path))
    assert train.names == ["cat_1", "cat_2"] and val.names == ["dog_1"]
    reasons = dict(train.skipped)
    assert "cat_9.jpg is missing" in reasons["cat_9"]
    assert "[0]" in reasons["cat_3"] and "1/2/3" in reasons["cat_3"]
    sliced, _ = data.load_splits(oxford_config(tmp_path, train_split="train[:1]"))
    assert sliced.names == ["cat_1"]


def test_folder_layout_given_as_oxford_gets_a_hint(folder_dataset):
    root, _ = folder_dataset
    with pytest.raises(data.DataError, match="--dataset folder"):
        data.load_splits(oxford_config(root / "train"))


def test_real_oxford_sample_loads_completely(pets_sample):
    train, val = data.load_splits(oxford_config(pets_sample))
    listed = {name: [line.split()[0] for line in
                     (pets_sample / "annotations" / name).read_text().splitlines() if line.strip()]
              for name in ("trainval.txt", "test.txt")}
    assert (len(train), len(val)) == (200, 198)
    assert train.names == listed["trainval.txt"] and val.names == listed["test.txt"]
    assert train.skipped == [] and val.skipped == []
    # Abyssinian_5.jpg is really an RGBA PNG: it loads like any photo.
    assert "Abyssinian_5" in val.names
    rgba = val.images[val.names.index("Abyssinian_5")]
    assert rgba.shape == (32, 32, 3) and rgba.std() > 10
    for split in (train, val):
        assert split.images.shape[1:] == (32, 32, 3) and split.masks.shape[1:] == (32, 32)
        assert set(np.unique(split.masks)) == {0, 1, 2}
        pet, background, border = split.class_shares(3)
        assert 0.15 < pet < 0.5 and 0.4 < background < 0.75 and 0.05 < border < 0.25


def test_real_oxford_sample_binary_labels_and_slices(pets_sample):
    train, val = data.load_splits(oxford_config(pets_sample, labels="binary",
                                                train_split="trainval[:10]", val_split="test[95%:]"))
    assert len(train) == 10 and len(val) == 198 - round(198 * 0.95)
    assert set(np.unique(train.masks)) == {0, 1}
    background, pet = train.class_shares(2)
    assert 0.4 < background < 0.75 and 0.25 < pet < 0.6


def test_real_oxford_sample_gif_named_jpg_reads(pets_sample):
    gif = pets_sample / "images" / "Abyssinian_34.jpg"
    assert gif.read_bytes()[:3] == b"GIF"
    image = read_image(gif)
    assert image.dtype == np.uint8 and image.shape == (202, 250, 3)
    assert image.std() > 10  # a photograph, not a blank frame
    stray = pets_sample / "images" / "Abyssinian_100.mat"
    with pytest.raises(ImageReadError, match="Abyssinian_100.mat"):
        read_image(stray)


# --- reading images in the wild ---------------------------------------------------------------------


def save_cmyk_jpeg(path):
    Image.new("CMYK", (16, 8), (0, 255, 255, 0)).save(path, format="JPEG", quality=95)
    return (255, 0, 0)  # pure red


def save_gray_jpeg(path):
    Image.new("L", (16, 8), 100).save(path, format="JPEG", quality=95)
    return (100, 100, 100)


def save_palette_png(path):
    image = Image.new("P", (16, 8), 1)
    image.putpalette([0, 0, 0, 30, 140, 220] + [0] * 762)
    image.save(path, format="PNG")
    return (30, 140, 220)


def save_rgba_png(path):
    Image.new("RGBA", (16, 8), (200, 100, 50, 255)).save(path, format="PNG")
    return (200, 100, 50)


def save_16bit_png(path):
    Image.fromarray(np.full((8, 16), 51400, np.uint16)).save(path, format="PNG")
    return (0, 0, 0)  # a constant 16-bit photo: nothing to stretch (images.to_uint8)


def save_gif(path):
    first = Image.new("RGB", (16, 8), (200, 10, 10))
    second = Image.new("RGB", (16, 8), (10, 200, 10))
    first.save(path, format="GIF", save_all=True, append_images=[second])
    return (200, 10, 10)  # the first frame


def save_bmp(path):
    Image.new("RGB", (16, 8), (1, 2, 3)).save(path, format="BMP")
    return (1, 2, 3)


@pytest.mark.parametrize("writer,name", [
    (save_cmyk_jpeg, "cmyk.jpg"), (save_gray_jpeg, "gray.jpg"), (save_palette_png, "palette.png"),
    (save_rgba_png, "rgba.png"), (save_16bit_png, "deep.png"), (save_gif, "anim.gif"),
    (save_bmp, "plain.bmp"),
    # The content decides, never the name.
    (save_16bit_png, "deep.jpg"), (save_gif, "anim.jpg"),
])
def test_read_image_formats(tmp_path, writer, name):
    expected = writer(tmp_path / name)
    image = read_image(tmp_path / name)
    assert image.dtype == np.uint8 and image.shape == (8, 16, 3)
    assert np.abs(image.astype(int) - expected).max() <= 2  # JPEG rounding


def test_read_image_composites_transparency_over_white(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    rgba[0, 1] = (10, 20, 30, 0)  # transparent -> white
    rgba[0, 2] = (0, 0, 0, 128)  # half black -> mid grey
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(image[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(image[0, 1], (255, 255, 255))
    assert np.all(np.abs(image[0, 2].astype(int) - 127) <= 1)


def test_read_image_refuses_huge_images_before_decoding(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    with pytest.raises(ImageReadError, match="big.png.*40x30"):
        read_image(tmp_path / "big.png", max_pixels=1000)
    assert read_image(tmp_path / "big.png", max_pixels=1200).shape == (30, 40, 3)


def test_read_image_errors_name_the_file(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(ImageReadError, match="junk.jpg"):
        read_image(tmp_path / "junk.jpg")
    with pytest.raises(ImageReadError, match="absent.png.*no such file"):
        read_image(tmp_path / "absent.png")


def test_read_mask_keeps_palette_indices_and_refuses_colour(tmp_path):
    mask = Image.new("P", (4, 2), 0)
    mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    mask.putdata([0, 1, 2, 1, 2, 0, 0, 1])
    mask.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "palette.png"), [[0, 1, 2, 1], [2, 0, 0, 1]])
    Image.fromarray(np.full((8, 16), 2, np.uint16)).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "deep.png"), np.full((8, 16), 2))
    Image.new("RGB", (4, 2), (255, 0, 0)).save(tmp_path / "colour.png")
    with pytest.raises(ImageReadError, match="colour"):
        read_mask(tmp_path / "colour.png")


def test_config_json_of_a_folder_run_reloads_the_same_data(folder_dataset, tmp_path):
    root, _ = folder_dataset
    config = folder_config(root)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    train, _ = data.load_splits(Config.load(path))
    expected, _ = data.load_splits(config)
    assert train.names == expected.names
    np.testing.assert_array_equal(train.images, expected.images)
    np.testing.assert_array_equal(train.masks, expected.masks)


def test_plain_files_decode_in_the_graph_as_pillow_reads_them(tmp_path, pets_sample_or_synthetic):
    """The fast path (TensorFlow's decoders) and the Pillow path give the same pixels and classes
    for every pair, odd files included (those go through Pillow)."""
    from unet_tf.data.decoding import _graph_format, decode_pair, decoded_examples
    from unet_tf.data.sources import _oxford_pairs

    config = oxford_config(pets_sample_or_synthetic)
    pairs, _ = _oxford_pairs(config, "train")
    formats = [_graph_format(p.image, p.mask, config) for p in pairs]
    assert formats.count("jpeg") > len(pairs) // 2  # most take the fast path
    fast = list(decoded_examples(pairs, config, "trimap", fitted=False))
    for (name, image_path, mask_path, _), (image, mask, reason, _) in zip(pairs, fast):
        expected_image, expected_mask, expected_reason, _ = decode_pair(image_path, mask_path,
                                                                        config, "trimap")
        assert reason.decode() == (expected_reason or ""), name
        if not expected_reason:
            np.testing.assert_array_equal(image, expected_image, err_msg=name)
            np.testing.assert_array_equal(mask, expected_mask, err_msg=name)


def test_fitted_examples_leave_the_graph_in_order_with_every_reason(tmp_path):
    """Fitted to the model's size, examples leave the graph in batches: over several batches, with
    a file TensorFlow fails to decode and a mask that fails its check in different batches, every
    example keeps its place and its reason, and its arrays are Pillow's, fitted."""
    from unet_tf.data.decoding import decode_pair
    from unet_tf.data.policy import Policy

    names = [f"cat_{i}" for i in range(70)]
    make_oxford_copy(tmp_path, names, {"trainval.txt": names, "test.txt": names[:1]})
    damaged = tmp_path / "images" / "cat_5.jpg"
    damaged.write_bytes(damaged.read_bytes()[:400])  # a header, then nothing
    trimap_path = tmp_path / "annotations" / "trimaps" / "cat_40.png"
    trimap = np.asarray(Image.open(trimap_path)).copy()
    trimap[0, 0] = 7
    write_png(trimap_path, trimap)
    config = oxford_config(tmp_path)
    train = data.load_split(config, "train")
    assert train.names == [n for n in names if n not in ("cat_5", "cat_40")]
    reasons = dict(train.skipped)
    assert sorted(reasons) == ["cat_40", "cat_5"]
    assert "[7]" in reasons["cat_40"] and "cat_5.jpg" in reasons["cat_5"]
    for row, name in enumerate(train.names):
        image, mask, _, _ = decode_pair(tmp_path / "images" / f"{name}.jpg",
                                        tmp_path / "annotations" / "trimaps" / f"{name}.png",
                                        config, "trimap")
        expected_image, expected_mask = Policy.from_config(config).fit(image, mask)
        np.testing.assert_array_equal(train.images[row], expected_image, err_msg=name)
        np.testing.assert_array_equal(train.masks[row], expected_mask, err_msg=name)


@pytest.fixture
def pets_sample_or_synthetic(tmp_path):
    from conftest import PETS_SAMPLE

    if (PETS_SAMPLE / "images").is_dir():
        return PETS_SAMPLE
    make_oxford_copy(tmp_path, [f"cat_{i}" for i in range(12)],
                     {"trainval.txt": [f"cat_{i}" for i in range(12)], "test.txt": ["cat_0"]})
    return tmp_path
