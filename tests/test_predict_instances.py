"""predict --instances: objects separated and counted, written as 16-bit label PNGs, outline
overlays and counts.csv; nothing new without the flag.

The models here are hand-built 1x1 convolutions whose prediction is the photo's colour (red
class 0, green class 1, blue class 2), saved as run folders (model.keras + config.json) so that
predict knows their class names and resize policy.
"""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from unet_tf import instances
from unet_tf.images import write_label_png
from unet_tf.predict import main

SIZE = 32  # the models' input (with resize none: the tile)


def _colour_run(folder, classes, resize="none"):
    """A run folder whose model predicts class c where the photo's channel c is bright."""
    import keras

    from unet_tf.config import preset

    folder.mkdir(parents=True)
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(len(classes), 1, use_bias=False)
    model = keras.Model(inputs, conv(inputs))
    weights = np.zeros((1, 1, 3, len(classes)), np.float32)
    for c in range(min(3, len(classes))):
        weights[0, 0, c, c] = 20.0  # logits 20 apart: probabilities ~1 and ~0
    conv.set_weights([weights])
    model.save(folder / "model.keras")
    config = preset("own-data", data_dir=str(folder), labels="index", classes=tuple(classes),
                    resize=resize, patch_size=SIZE, image_size=SIZE, scale=1.0)
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return folder / "model.keras"


def _photo(class_map):
    """The photo a colour model reads as `class_map` (class c: channel c at 255)."""
    return np.stack([255 * (class_map == c) for c in range(3)], axis=-1).astype(np.uint8)


def _square(class_map, top, left, height, width, interior=1, boundary=2):
    """An object: a 1-pixel boundary ring around its interior."""
    class_map[top:top + height, left:left + width] = boundary
    class_map[top + 1:top + height - 1, left + 1:left + width - 1] = interior


def _counts(out):
    with open(out / "counts.csv", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def trio_model(tmp_path_factory):
    """Background, interior, boundary: a patch model (resize none), predicting in tiles."""
    return _colour_run(tmp_path_factory.mktemp("trio") / "run",
                       ("background", "interior", "boundary"))


def test_two_touching_squares_are_two_objects(trio_model, tmp_path):
    """Squares sharing a boundary band: the watershed of a background/interior/boundary model
    separates them (connected components of the foreground would give one)."""
    class_map = np.zeros((40, 64), np.uint8)
    _square(class_map, 5, 4, 24, 24)
    _square(class_map, 5, 28, 24, 24)  # its ring touches the first's
    assert ndimage.label(class_map > 0)[1] == 1
    photo = tmp_path / "touching.png"
    Image.fromarray(_photo(class_map)).save(photo)
    out = tmp_path / "out"
    assert main(["--model", str(trio_model), "--out", str(out), "--instances", str(photo)]) == 0
    labels = np.asarray(Image.open(out / "touching_instances.png"))
    assert Image.open(out / "touching_instances.png").mode == "I;16"
    assert labels.shape == (40, 64) and labels.dtype == np.uint16
    assert set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_array_equal(labels > 0, class_map > 0)  # every object pixel, no more
    assert len(np.unique(labels[5:29, 4:26])) == 1 and len(np.unique(labels[5:29, 30:52])) == 1
    assert _counts(out)[str(photo)]["count"] == "2"


def test_an_object_across_tile_seams_is_one_object(trio_model, tmp_path, capsys):
    """A patch model predicts a 40x100 photo in overlapping 32-pixel tiles; objects are separated
    once, on the stitched full-size probabilities, so the long object crossing every seam comes
    out whole and the two touching ones straddling seams come out as two."""
    from unet_tf.run.model_file import load_model_safely

    assert load_model_safely(trio_model)[1].policy.native  # really tiled
    class_map = np.zeros((40, 100), np.uint8)
    _square(class_map, 2, 3, 10, 94)     # across every tile
    _square(class_map, 16, 10, 20, 20)   # these two touch at x = 29..30, near a seam
    _square(class_map, 16, 30, 20, 30)
    photo = tmp_path / "long.png"
    Image.fromarray(_photo(class_map)).save(photo)
    out = tmp_path / "out"
    assert main(["--model", str(trio_model), "--out", str(out), "--instances", str(photo)]) == 0
    assert "minimum object size none" in capsys.readouterr().out
    labels = np.asarray(Image.open(out / "long_instances.png"))
    assert labels.max() == 3
    assert len(np.unique(labels[2:12, 3:97])) == 1 and labels[5, 50] > 0
    # the same objects as separating the hand-made probabilities of the whole photo at once (the
    # interiors exactly; a boundary pixel between two seeds equally near may go either way)
    whole = instances.separate(np.eye(3, dtype=np.float32)[class_map])
    np.testing.assert_array_equal(labels > 0, whole > 0)
    np.testing.assert_array_equal(labels[class_map == 1], whole[class_map == 1])
    row = _counts(out)[str(photo)]
    areas = np.bincount(labels.ravel().astype(np.int64))[1:]
    assert row["count"] == "3" and float(row["median_area"]) == np.median(areas)


def test_outputs_sizes_types_and_counts_match_the_label_images(trio_model, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    shapes = {"a": (40, 70), "b": (33, 31), "c": (64, 64), "empty": (35, 50)}
    for name, shape in shapes.items():
        class_map = np.zeros(shape, np.uint8)
        if name != "empty":
            for _ in range(4):
                top, left = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
                _square(class_map, top, left, *rng.integers(4, 9, 2))
        Image.fromarray(_photo(class_map)).save(photos / f"{name}.png")
    out = tmp_path / "out"
    assert main(["--model", str(trio_model), "--out", str(out), "--instances", str(photos)]) == 0
    counts = _counts(out)
    assert len(counts) == len(shapes)
    for name, shape in shapes.items():
        labels = np.asarray(Image.open(out / f"{name}_instances.png"))
        overlay = np.asarray(Image.open(out / f"{name}_instances_overlay.png"))
        assert labels.shape == shape and labels.dtype == np.uint16
        assert overlay.shape == (*shape, 3) and overlay.dtype == np.uint8
        ids = np.unique(labels)
        ids = ids[ids > 0]
        np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # consecutive
        row = counts[str(photos / f"{name}.png")]
        assert int(row["count"]) == len(ids)
        if len(ids):
            areas = np.array([np.count_nonzero(labels == k) for k in ids])
            assert float(row["median_area"]) == np.median(areas)
            outlined = np.any(overlay != np.asarray(Image.open(photos / f"{name}.png")), -1)
            assert outlined.any() and not outlined[labels == 0].any()
        else:
            assert row["median_area"] == "" and not labels.any()
    # the mask and overlay are written as always
    assert (out / "a_mask.png").is_file() and (out / "a_overlay.png").is_file()


def test_binary_model_counts_connected_components(tmp_path):
    model = _colour_run(tmp_path / "binary", ("background", "foreground"), resize="squash")
    class_map = np.zeros((SIZE, SIZE), np.uint8)
    class_map[2:10, 2:10] = 1
    class_map[2:10, 10:20] = 1   # touching the first: one component
    class_map[20:30, 5:12] = 1
    class_map[25:27, 25:27] = 1  # a 4-pixel speck
    photo = tmp_path / "blobs.png"
    Image.fromarray(_photo(class_map)).save(photo)
    for flags, expected in (((), 3), (("--min-object-size", "5"), 2)):
        out = tmp_path / f"out{len(flags)}"
        assert main(["--model", str(model), "--out", str(out), "--instances", *flags,
                     str(photo)]) == 0
        labels = np.asarray(Image.open(out / "blobs_instances.png"))
        assert labels.max() == expected == int(_counts(out)[str(photo)]["count"])
        assert ndimage.label(labels > 0)[1] == expected
    # a size the run records (metrics.json) is the default; --min-object-size overrides it
    (model.parent / "metrics.json").write_text(json.dumps({"min_object_size": 5}))
    for flags, expected in (((), 2), (("--min-object-size", "1"), 3)):
        out = tmp_path / f"recorded{len(flags)}"
        assert main(["--model", str(model), "--out", str(out), "--instances", *flags,
                     str(photo)]) == 0
        assert np.asarray(Image.open(out / "blobs_instances.png")).max() == expected


def test_without_instances_nothing_new_and_the_same_mask(trio_model, tmp_path, capsys):
    class_map = np.zeros((40, 50), np.uint8)
    _square(class_map, 4, 4, 20, 20)
    photo = tmp_path / "p.png"
    Image.fromarray(_photo(class_map)).save(photo)
    assert main(["--model", str(trio_model), "--out", str(tmp_path / "plain"), str(photo)]) == 0
    plain_line = capsys.readouterr().out
    assert "_instances.png" not in plain_line and "counts.csv" not in plain_line
    assert {p.name for p in (tmp_path / "plain").iterdir()} == {
        "p_mask.png", "p_overlay.png", "classes.json", ".unet_tf-predictions"}
    assert main(["--model", str(trio_model), "--out", str(tmp_path / "inst"), "--instances",
                 str(photo)]) == 0
    for name in ("p_mask.png", "p_overlay.png", "classes.json"):
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "inst" / name).read_bytes()
    with pytest.raises(SystemExit):  # --min-object-size means nothing without --instances
        main(["--model", str(trio_model), "--out", str(tmp_path / "x"), "--min-object-size", "3",
              str(photo)])
    assert "--instances" in capsys.readouterr().err


def test_more_objects_than_16_bits_fail_that_photo_in_one_line(trio_model, tmp_path, capsys,
                                                               monkeypatch):
    photo = tmp_path / "p.png"
    Image.fromarray(_photo(np.zeros((40, 40), np.uint8))).save(photo)
    monkeypatch.setattr(instances, "separate",
                        lambda probabilities, *args, **kwargs: np.full(
                            probabilities.shape[:2], 70000, np.int32))
    out = tmp_path / "out"
    assert main(["--model", str(trio_model), "--out", str(out), "--instances", str(photo)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "70000 objects" in err[0] and "65535" in err[0]
    assert not (out / "p_instances.png").exists()


def test_label_png_round_trip_beyond_255(tmp_path):
    labels = np.zeros((20, 30), np.int32)
    labels[0, :5] = [1, 255, 256, 40000, 65535]
    labels[5:10, 5:10] = 300
    write_label_png(tmp_path / "l.png", labels)
    image = Image.open(tmp_path / "l.png")
    assert image.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(image), labels)
    with pytest.raises(ValueError, match="65535"):
        write_label_png(tmp_path / "bad.png", labels + 65535)


@pytest.mark.parametrize("names, expected", [
    (("background", "interior", "boundary"),
     dict(method="watershed", background=0, interior=1, boundary=2)),
    (("boundary", "Background", "interior"),
     dict(method="watershed", background=1, interior=2, boundary=0)),
    (("pet", "background", "border"),
     dict(method="watershed", background=1, interior=0, boundary=2)),
    (("background", "pet"), dict(method="components", background=0, interior=1, boundary=None)),
    (("foreground", "background"),
     dict(method="components", background=1, interior=0, boundary=None)),
    (("background", "road", "building"),
     dict(method="components", background=0, interior=None, boundary=None)),
    (("class_0", "class_1"), dict(method="components", background=0, interior=1, boundary=None)),
])
def test_classes_for_separation(names, expected):
    assert instances.classes_for_separation(names) == expected


def test_classes_for_separation_keywords_work_with_separate():
    winner = np.zeros((10, 12), np.int64)
    winner[1:5, 1:11] = 1  # road
    winner[5:9, 1:11] = 2  # building, touching the road
    probabilities = np.eye(3)[winner]
    labels = instances.separate(probabilities, **instances.classes_for_separation(
        ("background", "road", "building")))
    assert labels.max() == 1  # everything not background, as one component
    with pytest.raises(ValueError):
        instances.classes_for_separation(("background",))


def test_savedmodel_export_with_tta_gives_the_same_objects(trio_model, tmp_path):
    """An export's `probabilities` (here averaged with the mirror image's by predict --tta) give
    the objects the model.keras gives."""
    from unet_tf.export import main as export_main

    class_map = np.zeros((40, 64), np.uint8)
    _square(class_map, 5, 4, 24, 24)
    _square(class_map, 5, 28, 24, 24)
    photo = tmp_path / "touching.png"
    Image.fromarray(_photo(class_map)).save(photo)
    export = tmp_path / "export"
    assert export_main(["--model", str(trio_model), "--out", str(export)]) == 0
    for model, flags, name in ((trio_model, (), "k"), (export, ("--tta",), "s")):
        assert main(["--model", str(model), "--out", str(tmp_path / name), "--instances", *flags,
                     str(photo)]) == 0
    keras_labels = np.asarray(Image.open(tmp_path / "k" / "touching_instances.png"))
    export_labels = np.asarray(Image.open(tmp_path / "s" / "touching_instances.png"))
    assert keras_labels.max() == export_labels.max() == 2
    np.testing.assert_array_equal(keras_labels[class_map == 1], export_labels[class_map == 1])


def test_pet_trimap_run_counts_match_its_label_images(tiny_run, tmp_path):
    """A real (tiny, barely trained) U-Net of the pet trimap: whatever it predicts, counts.csv
    agrees with the label images, and the instances come from the raw probabilities (the
    largest-pet post-processing of --postprocess applies to the mask only)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for k, shape in enumerate(((64, 64), (45, 70))):
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(
            photos / f"p{k}.png")
    out = tmp_path / "out"
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(out), "--instances",
                 "--postprocess", "largest,fill", str(photos)]) == 0
    from unet_tf.predict import Segmenter

    segmenter = Segmenter(tiny_run / "model.keras")
    separation = instances.classes_for_separation(segmenter.class_names)
    assert separation == dict(method="watershed", background=1, interior=0, boundary=2)
    counts = _counts(out)
    for k, shape in enumerate(((64, 64), (45, 70))):
        labels = np.asarray(Image.open(out / f"p{k}_instances.png"))
        assert labels.shape == shape
        probabilities = segmenter.segment(np.asarray(Image.open(photos / f"p{k}.png")))[1]
        np.testing.assert_array_equal(labels, instances.separate(probabilities, **separation))
        assert int(counts[str(photos / f"p{k}.png")]["count"]) == len(np.unique(labels[labels > 0]))
        mask = np.asarray(Image.open(out / f"p{k}_mask.png"))
        assert ndimage.label(mask != 1)[1] <= 1  # the mask: the largest pet only


def test_instance_outlines_colour_each_object_s_own_edge():
    from unet_tf.plots import instance_color, instance_outlines

    labels = np.zeros((12, 20), np.int32)
    labels[2:10, 2:10] = 1
    labels[2:10, 10:18] = 2  # touching the first
    photo = np.full((12, 20, 3), 7, np.uint8)
    outlined = instance_outlines(photo, labels)
    changed = np.any(outlined != photo, axis=-1)
    assert not changed[labels == 0].any() and not changed[4:8, 4:8].any()  # inside untouched
    assert changed[2:10, 9].all() and changed[2:10, 10].all()  # both sides of the contact
    np.testing.assert_array_equal(outlined[5, 9], instance_color(1))
    np.testing.assert_array_equal(outlined[5, 10], instance_color(2))
    assert not np.array_equal(instance_color(1), instance_color(2))
    np.testing.assert_array_equal(instance_color(11), instance_color(1))  # the palette cycles
