"""Your own data at its own resolution: the resize policies, patch training, tiled prediction,
masks as they come, streaming, and early stopping that waits for a model to find the objects."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from unet_tf import data
from unet_tf.config import Config, ConfigError
from unet_tf.data import geometry, streaming
from unet_tf.images import write_png

SIZES = [(70, 90), (100, 64), (48, 120), (96, 96), (64, 80), (90, 70)]


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """images/ + masks/ of several sizes, RGB photos with small bright discs (0/255 masks)."""
    root = tmp_path_factory.mktemp("own")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i, (height, width) in enumerate(SIZES * 2):
        image = rng.integers(0, 90, (height, width, 3)).astype(np.uint8)
        mask = np.zeros((height, width), np.uint8)
        yy, xx = np.mgrid[:height, :width]
        for _ in range(2):
            cy, cx, r = rng.integers(8, height - 8), rng.integers(8, width - 8), rng.integers(3, 7)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            mask[disc] = 255
            image[disc] = (230, 200, 60)
        Image.fromarray(image).save(root / "images" / f"p{i:02d}.png")
        write_png(root / "masks" / f"p{i:02d}.png", mask)
    return root


def _large_objects(root, count: int):
    """images/ + masks/ of `count` 64 x 96 photos, each with one object filling most of it."""
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((64, 96, 3), 40 * i, np.uint8)).save(root / "images" / f"{i}.png")
        mask = np.zeros((64, 96), np.uint8)
        mask[10:50, 20:70] = 255
        write_png(root / "masks" / f"{i}.png", mask)
    return root


def _config(root, **values):
    return Config(**{**dict(dataset="folder", data_dir=str(root), labels="binary",
                            encoder_weights="none", image_size=32, validation_fraction=0.25,
                            seed=3), **values})


# --- resize policies --------------------------------------------------------------------------


def test_letterbox_keeps_the_aspect_and_its_box_takes_it_back():
    mask = np.zeros((64, 128), np.uint8)
    mask[20:40, 10:50] = 1
    image = np.repeat(mask[..., None] * 200, 3, axis=2).astype(np.uint8)
    boxed_image, boxed_mask = geometry.letterbox(image, mask, 64, background=0)
    top, left, height, width = (int(v) for v in geometry.letterbox_box(64, 128, 64))
    assert (top, left, height, width) == (16, 0, 32, 64)  # half the size, centred
    boxed_mask = np.asarray(boxed_mask)
    assert boxed_mask[:top].max() == 0 and boxed_mask[top + height:].max() == 0  # background
    assert np.asarray(boxed_image)[:top].max() == 0
    back = tf.image.resize(boxed_mask[top:top + height, left:left + width, None], (64, 128),
                           method="nearest").numpy()[..., 0]
    np.testing.assert_array_equal(back, mask)  # the same mask, the box taken back
    # the trimap's background is class 1: the padding says so
    _, trimap_box = geometry.letterbox(image, mask, 64, background=1)
    assert np.asarray(trimap_box)[0, 0] == 1


def _per_pixel_model(size):
    """Logits from a 1x1 convolution of the pixel's colour: the answer per pixel is known."""
    inputs = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(2, 1, name="logits")
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.array([[[[-4.0, 4.0], [0, 0], [0, 0]]]], np.float32),
                      np.array([2.0, -2.0], np.float32)])  # red > 0.5 -> class 1
    return model


def _expected_mask(image):
    return (image[..., 0] / 255.0 > 0.5).astype(np.int32)


def _blocky_image(height, width, seed=1):
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 2, (-(-height // 8), -(-width // 8)))
    red = np.kron(blocks, np.ones((8, 8)))[:height, :width] * 230 + 10
    return np.dstack([red, np.full_like(red, 90), np.full_like(red, 40)]).astype(np.uint8)


@pytest.mark.parametrize("resize", ["squash", "pad", "none"])
def test_every_policy_answers_at_the_photo_s_size(resize):
    from unet_tf.inference import Policy, segment

    model = _per_pixel_model(32)
    image = _blocky_image(53, 70)
    mask, probabilities = segment(model, image[None], policy=Policy(resize, 32))
    assert mask.shape == (1, 53, 70) and probabilities.shape == (1, 53, 70, 2)
    agreement = np.mean(mask.numpy()[0] == _expected_mask(image))
    if resize == "none":  # tiles at native resolution: exact, whatever the size
        assert agreement == 1.0
    else:  # resized there and back: right but for pixels at the blocks' edges
        assert agreement > 0.9


# --- tiled prediction, end to end ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiled_run(tmp_path_factory, own_data):
    """A --resize none run folder holding the per-pixel model (tiles of 32)."""
    run = tmp_path_factory.mktemp("tiled") / "run"
    run.mkdir()
    model = _per_pixel_model(32)
    model.save(run / "model.keras")
    config = _config(own_data, resize="none", patch_size=32)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    return run


def test_tiled_masks_are_exact_in_predict_and_the_export(tiled_run, tmp_path):
    from unet_tf.export import main as export_main
    from unet_tf.predict import main as predict_main

    image = _blocky_image(53, 70, seed=4)
    photo = tmp_path / "photo.png"
    Image.fromarray(image).save(photo)
    assert predict_main(["--model", str(tiled_run / "model.keras"), "--out",
                         str(tmp_path / "out"), str(photo)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "photo_mask.png")),
                                  _expected_mask(image))
    export = tmp_path / "export"
    assert export_main(["--model", str(tiled_run / "model.keras"), "--out", str(export)]) == 0
    metadata = json.loads((export / "metadata.json").read_text())
    assert metadata["policy"] == {"resize": "none", "size": 32, "scale": 1.0, "overlap": 0.25}
    served = tf.saved_model.load(str(export))
    mask = served.signatures["serving_default"](images=tf.constant(image[None]))["mask"]
    np.testing.assert_array_equal(mask.numpy()[0], _expected_mask(image))


def test_evaluate_a_tiled_model_at_full_resolution(tiled_run, own_data, tmp_path):
    from unet_tf.evaluate import main

    report_path = tmp_path / "r.json"
    assert main(["--model", str(tiled_run / "model.keras"), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["resolution"] == "full" and report["split"] == "train (validation part)"
    _, validation = data.load_splits(_config(own_data, resize="none"))
    assert report["pixels"] == sum(m.size for m in validation.masks)  # every native pixel


# --- patch training ----------------------------------------------------------------------------


def _step_counter():
    """(callback, steps): `steps` gets the number of training steps of each epoch."""
    steps = []
    counter = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: steps.append(0),
        on_train_batch_end=lambda batch, logs: steps.__setitem__(-1, steps[-1] + 1))
    return counter, steps


@pytest.mark.slow  # a training run on patches
def test_patch_training_runs_saves_the_model_size_and_evaluates(own_data, tmp_path):
    """Crops of squashed photos here; native-resolution patches in the resize auto test below."""
    from unet_tf.train import train

    config = _config(own_data, alpha=0.35, decoder_filters=(8, 8, 8, 8), batch_size=4,
                     epochs=2, resize="squash", image_size=64, patch_size=32)
    counter, steps = _step_counter()
    run = train(config, run_dir=tmp_path / "run", verbose=0, callbacks=[counter])
    photos = len(data.load_splits(config)[0])  # one crop of each an epoch (several: below)
    assert steps == [-(-photos // 4)] * 2
    model = keras.models.load_model(run / "model.keras")
    assert model.input_shape[1] == config.model_size  # saved and served at its size
    report = json.loads((run / "metrics.json").read_text())
    assert report["epochs_run"] == 2 and np.isfinite(report["mean_dice"])


def test_patch_crops_see_the_foreground_as_often_as_asked():
    masks = np.zeros((400, 64, 64), np.uint8)
    masks[:, 40:44, 10:14] = 1  # one small object per mask
    offsets = geometry.crop_offsets(tf.constant(masks), 16, 0.5, 0, tf.constant([5, 0], tf.int64))
    crops = geometry.crop_batch(tf.constant(masks[..., None]), tf.constant(masks), offsets, 16)[1]
    seen = np.mean(crops.numpy().reshape(400, -1).max(axis=1) > 0)
    # half the crops centred on the object, and a few of the others by chance (16 / 64 a side)
    assert 0.5 < seen < 0.65


# --- masks as they come ------------------------------------------------------------------------


def test_colour_masks_map_to_classes_and_unknown_colours_are_named(tmp_path):
    root = tmp_path / "colour"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    colours = {"background": (0, 0, 0), "road": (255, 0, 0), "roof": (0, 0, 255)}
    truth = np.zeros((16, 24), np.uint8)
    truth[:, 8:16], truth[:, 16:] = 1, 2
    rgb = np.array(list(colours.values()), np.uint8)[truth]
    for name in ("a", "b"):
        Image.fromarray(np.full((16, 24, 3), 99, np.uint8)).save(root / "images" / f"{name}.png")
    Image.fromarray(rgb).save(root / "masks" / "a.png")
    odd = rgb.copy()
    odd[0, 0] = (10, 200, 30)
    Image.fromarray(odd).save(root / "masks" / "b.png")
    config = Config(dataset="folder", data_dir=str(root), labels="index", image_size=32,
                    encoder_weights="none", resize="none",
                    mask_colors=tuple(f"{n}={','.join(map(str, c))}" for n, c in colours.items()))
    assert config.class_names == ("background", "road", "roof")
    split = data.load_split(config, "train")
    assert split.names == ["a"]
    np.testing.assert_array_equal(split.masks[0], truth)
    assert "10,200,30" in dict(split.skipped)["b"]


def test_jpeg_masks_are_thresholded_and_named(tmp_path):
    root = tmp_path / "jpeg"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(np.full((32, 32, 3), 50, np.uint8)).save(root / "images" / "x.png")
    Image.fromarray(mask).save(root / "masks" / "x.jpg", quality=70)  # blurred values
    split = data.load_split(Config(dataset="folder", data_dir=str(root), labels="binary",
                                   image_size=32, encoder_weights="none"), "train")
    assert set(np.unique(split.masks)) == {0, 1}
    assert np.mean(split.masks[0] == (mask > 0)) > 0.99
    assert "x" in data.summary(split, ("background", "foreground")).split("warning:")[1]


# --- data larger than memory ----------------------------------------------------------------------


@pytest.mark.parametrize("resize,cache", [("squash", "none"), ("squash", "disk"),
                                          ("none", "none")])
def test_streamed_batches_equal_in_memory_batches(own_data, tmp_path, resize, cache):
    config = _config(own_data, resize=resize, image_size=32, patch_size=32)
    kwargs = dict(augment=True, augment_scale=0.2, augment_rotation=10.0, augment_color=0.1,
                  patch_size=32, foreground_crops=0.5, background=0, crops_per_image=2)
    in_memory, _ = data.load_splits(config)
    streamed, _ = data.load_splits(config, stream=True,
                                   cache_dir=tmp_path / "cache" if cache == "disk" else None)
    assert streamed.streamed and streamed.names == in_memory.names
    # (counted at native size when streamed, at the training size in memory)
    np.testing.assert_allclose(streamed.class_shares(2), in_memory.class_shares(2), atol=0.01)
    arrays = data.make_dataset(in_memory.images, in_memory.masks, 3, training=True, seed=7,
                               **kwargs)
    if cache == "disk":  # every training photo decoded once, into the cache
        assert all(f.cached.parent == tmp_path / "cache" and f.cached.is_file()
                   for f in streamed.files)
    files = streaming.make_streamed_dataset(streamed, config, 3, 7, **kwargs)
    for _ in range(2):  # two epochs: the same order and the same changes, anew each epoch
        for (x1, y1), (x2, y2) in zip(arrays, files, strict=True):
            np.testing.assert_array_equal(y1.numpy(), y2.numpy())
            np.testing.assert_allclose(x1.numpy(), x2.numpy(), atol=1e-6)


def test_each_image_gives_crops_per_image_crops_an_epoch_each_placed_anew():
    # Pixels that say where they come from: image number, row, column.
    sizes = [(96, 80), (64, 96), (80, 64), (96, 96), (72, 88)]
    images = []
    for number, (height, width) in enumerate(sizes):
        rows, cols = np.mgrid[:height, :width]
        images.append(np.stack([np.full_like(rows, number * 40), rows, cols], -1).astype(np.uint8))
    masks = [np.zeros(size, np.uint8) for size in sizes]
    dataset = data.make_dataset(images, masks, 4, training=True, augment=False, seed=3,
                                patch_size=32, foreground_crops=0.0, crops_per_image=3)
    epochs = []
    for _ in range(2):
        crops = np.concatenate([np.round(x.numpy()[:, 0, 0] * 255) for x, _ in dataset])
        epochs.append([tuple(int(v) for v in crop) for crop in crops])
    for crops in epochs:
        assert len(crops) == 15  # 4 batches of 4, 4, 4, 3
        numbers = [number // 40 for number, _, _ in crops]
        assert sorted(numbers) == sorted(list(range(5)) * 3)
        assert len(set(crops)) == 15  # every crop of one image at a place of its own
        passes = [numbers[i:i + 5] for i in (0, 5, 10)]
        assert all(sorted(p) == list(range(5)) for p in passes)  # each pass holds every image
        assert len({tuple(p) for p in passes}) > 1  # in new orders
        for number, row, col in crops:
            height, width = sizes[number // 40]
            assert row <= height - 32 and col <= width - 32
    assert epochs[0] != epochs[1]
    with pytest.raises(ConfigError, match="crops_per_image"):
        Config(crops_per_image=2, encoder_weights="none")  # squashed whole images: no crops


def test_the_cache_is_chosen_from_an_estimate_made_before_decoding(own_data):
    files = data.list_files(_config(own_data), "train")
    assert len(files) == 12
    small = _config(own_data, memory_budget_gb=1e-6)  # about 1 KB
    assert streaming.choose_cache(small, files)[0] == "disk"
    config = _config(own_data, memory_budget_gb=1.0)
    assert streaming.choose_cache(config, files) == ("memory", 12 * config.image_size ** 2 * 4)
    from unet_tf.plan import make_plan  # the plan says it, before any photo is decoded

    assert "cached on disk in the run folder" in make_plan(small).block()
    assert make_plan(small).config.cache == "disk"
    native = _config(own_data, resize="none")
    assert streaming.estimate_bytes(native, files) == 4 * sum(h * w for h, w in SIZES * 2)


# --- resize auto and --train-steps ----------------------------------------------------------------


def test_object_width_is_a_square_s_side_and_about_a_disc_s_diameter():
    square = np.zeros((40, 50), np.uint8)
    square[5:15, 20:30] = 1  # 100 pixels, 40 edges
    assert geometry.object_width(square, 0) == 10.0
    assert geometry.object_width(1 - square, 1) == 10.0  # objects are what is not background
    yy, xx = np.mgrid[:200, :200]
    disc = ((yy - 100) ** 2 + (xx - 100) ** 2 <= 40 ** 2).astype(np.uint8)  # diameter 81
    assert 0.75 * 81 < geometry.object_width(disc, 0) < 0.85 * 81
    line = np.zeros((100, 100), np.uint8)
    line[50:53, :] = 1  # 3 px wide, across the image: edges 2 x 100 + 2 x 3
    assert geometry.object_width(line, 0) == pytest.approx(4 * 300 / 206)
    assert np.isnan(geometry.object_width(np.zeros((8, 8)), 0))


def test_resize_auto_squashes_wide_objects_and_patches_narrow_ones():
    choose = geometry.choose_policy
    # 20 px objects in 256 px photos stay 10 px wide squashed to 128: squash.
    assert choose([20.0, 20.0, float("nan")], [(256, 256)] * 3, 128)["resize"] == "squash"
    # 12 px objects become 6 px: patches at native size (16 / 12 > 1 is not enlarged), as many
    # 128 px crops an epoch as fit in a 256 x 256 photo.
    narrow = choose([12.0, 12.0, 12.0], [(256, 256)] * 3, 128)
    assert {k: v for k, v in narrow.items() if k != "reason"} == dict(
        resize="none", scale=1.0, patch_size=128, crops_per_image=4)
    assert "6.0 px squashed to 128 px" in narrow["reason"]
    # 64 px objects in 2048 px photos (4 px squashed): scaled by 16 / 64; 16 crops would fit a
    # 512 px photo, the most is 8. A patch size given is kept.
    large = choose([64.0], [(2048, 2048)], 128)
    assert (large["scale"], large["crops_per_image"]) == (0.25, 8)
    assert choose([64.0], [(2048, 2048)], 128, patch_size=256)["crops_per_image"] == 4
    assert choose([float("nan")], [(64, 64)], 128)["resize"] == "squash"


@pytest.mark.slow  # a training run in a new process
def test_training_with_resize_auto_and_train_steps_writes_what_it_chose(own_data, tmp_path):
    """The discs (radius 3-6) of photos of 48-120 px are about 3 px wide squashed to 32 px: auto
    trains on 32 px patches at native size, 6 crops of each photo (a median photo of 80 x 80
    holds 6.25 crops of 32 x 32) an epoch, so 6 times the steps of one crop each; --train-steps
    sets the epochs."""
    from unet_tf.train import train

    config = _config(own_data, resize="auto", alpha=0.35, decoder_filters=(8, 8, 8, 8),
                     batch_size=8, train_steps=12)
    with pytest.raises(data.DataError, match="chosen from the masks when training starts"):
        data.load_splits(config)
    counter, steps = _step_counter()
    run = train(config, run_dir=tmp_path / "run", verbose=0, callbacks=[counter])
    written = json.loads((run / "config.json").read_text())
    assert (written["resize"], written["scale"], written["patch_size"],
            written["crops_per_image"]) == ("none", 1.0, 32, 6)
    photos = len(data.load_splits(Config.from_dict(written))[0])
    per_epoch = -(-photos * 6 // 8)
    assert steps == [per_epoch] * -(-12 // per_epoch) and len(steps) > 1
    report = json.loads((run / "metrics.json").read_text())
    assert report["epochs_run"] == len(steps) and np.isfinite(report["mean_dice"])
    assert keras.models.load_model(run / "model.keras").input_shape[1] == 32  # the patch
    # Photos whose objects fill them stay squashed.
    big = _large_objects(tmp_path / "big", 3)
    chosen, message = data.choose_resize(_config(big, resize="auto"),
                                         data.list_files(_config(big), "train"))
    assert chosen.resize == "squash" and "squash" in message


def test_patches_train_the_steps_given_for_patches_and_whole_photos_their_own(own_data, tmp_path):
    """own-data trains fewer steps when resize auto chooses native-resolution patches (their
    epochs also validate every photo tile by tile): the plan makes --patch-train-steps the run's
    --train-steps, says so, and config.json keeps what was trained."""
    from unet_tf.plan import make_plan

    patches = make_plan(_config(own_data, resize="auto", train_steps=40, patch_train_steps=12))
    assert patches.config.resize == "none"
    assert (patches.config.train_steps, patches.config.patch_train_steps) == (12, 0)
    assert patches.config.epochs == -(-12 // patches.steps_per_epoch)
    assert "--patch-train-steps 12: native-resolution patches train 12 steps in place of " \
           "--train-steps 40" in patches.block()
    whole = make_plan(_config(_large_objects(tmp_path / "big", 4), resize="auto", train_steps=40, patch_train_steps=12))
    assert whole.config.resize == "squash"
    assert (whole.config.train_steps, whole.config.patch_train_steps) == (40, 0)
    assert "--patch-train-steps" not in whole.block()


# --- a model that has not found the objects yet ----------------------------------------------------


def test_early_stopping_waits_while_validation_predicts_one_class():
    from unet_tf.run.resume import ResumableEarlyStopping
    from unet_tf.train import predicts_one_class

    names = ("background", "foreground")
    stopping = ResumableEarlyStopping(monitor="val_dice", mode="max", patience=2,
                                      restore_best_weights=True,
                                      uncounted=lambda logs: predicts_one_class(logs, names))
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False
    stopping.set_model(model)
    stopping.on_train_begin()
    collapsed = {"val_dice": 0.49, "val_dice_background": 0.98, "val_dice_foreground": 0.0}
    for epoch in range(6):  # only background found: patience is not used up
        stopping.on_epoch_end(epoch, collapsed)
    assert not model.stop_training and stopping.wait == 0
    learning = {"val_dice": 0.6, "val_dice_background": 0.98, "val_dice_foreground": 0.22}
    stopping.on_epoch_end(6, learning)
    for epoch in (7, 8):
        stopping.on_epoch_end(epoch, {**learning, "val_dice": 0.55})
    assert model.stop_training and stopping.best_epoch == 6
