"""predict: every common image format in, a mask at the photo's own size out; bad files named."""

import numpy as np
import pytest
from PIL import Image

from unet_tf.predict import main


def _photo(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture()
def mixed_folder(tmp_path):
    """Good files in every format predict must read, plus two bad ones."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = _photo(45, 70)
    Image.fromarray(photo).save(folder / "rgb.jpg")
    Image.fromarray(photo).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(photo).convert("L").save(folder / "gray.jpg")
    Image.fromarray(np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])).save(
        folder / "rgba.png")
    Image.fromarray(photo).convert("P").save(folder / "palette.png")
    Image.fromarray((photo[..., 0].astype(np.uint16) * 257)).save(folder / "deep16.png")
    Image.fromarray(photo).save(folder / "first_frame.gif")
    Image.fromarray(_photo(33, 31)).save(folder / "odd_size.bmp")
    Image.fromarray(photo).save(folder / "gif_named.jpg", format="GIF")
    (folder / "garbage.jpg").write_bytes(b"not an image at all")
    (folder / "truncated.png").write_bytes((folder / "rgba.png").read_bytes()[:200])
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


GOOD = {"rgb": (45, 70), "cmyk": (45, 70), "gray": (45, 70), "rgba": (45, 70),
        "palette": (45, 70), "deep16": (45, 70), "first_frame": (45, 70), "odd_size": (33, 31),
        "gif_named": (45, 70)}


def test_predict_folder_with_good_and_bad_files(tiny_run, mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["--model", str(tiny_run / "model.keras"), "--out", str(out), str(mixed_folder)])
    err = capsys.readouterr().err
    assert status == 1  # some inputs failed
    assert "garbage.jpg" in err and "truncated.png" in err
    for stem, (height, width) in GOOD.items():
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        overlay = np.asarray(Image.open(out / f"{stem}_overlay.png"))
        assert mask.shape == (height, width), stem
        assert set(np.unique(mask)) <= {0, 1, 2}
        assert overlay.shape[1:] == (width, 3) and overlay.shape[0] > height  # + the legend
    written = {p.name for p in out.iterdir()}
    assert written == {f"{s}_{kind}.png" for s in GOOD for kind in ("mask", "overlay")} | {
        ".unet_tf-predictions", "classes.json"}  # the marker lets predict write here again


def test_predict_masks_agree_between_keras_and_savedmodel(tiny_run, tmp_path):
    from unet_tf.export import main as export_main

    photo = tmp_path / "cat.png"
    Image.fromarray(_photo(50, 80, seed=4)).save(photo)
    export = tmp_path / "export"
    assert export_main(["--model", str(tiny_run / "model.keras"), "--out", str(export)]) == 0
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(tmp_path / "k"),
                 str(photo)]) == 0
    assert main(["--model", str(export), "--out", str(tmp_path / "s"), str(photo)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "k" / "cat_mask.png")),
                                  np.asarray(Image.open(tmp_path / "s" / "cat_mask.png")))


def test_predict_never_writes_into_a_folder_of_other_files(tiny_run, tmp_path, capsys):
    """--out is the photos' own folder: refused before any work, every file as it was."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(_photo(40, 40)).save(folder / "cat.png")
    original = _photo(40, 40, seed=9)
    Image.fromarray(original).save(folder / "cat_mask.png")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(folder),
                 str(folder / "cat.png")]) == 2
    err = capsys.readouterr().err
    assert "holds other files" in err and str(folder) in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_output_names_never_take_an_input_s_name(tmp_path):
    from unet_tf.predict import output_names

    inputs = [tmp_path / "cat.png", tmp_path / "cat_mask.png", tmp_path / "sub" / "cat.jpg"]
    names = output_names(inputs, tmp_path)
    flat = [p for pair in names for p in pair]
    assert len(set(flat)) == 6 and not set(flat) & set(inputs)
    assert names[0][0].name == "cat_2_mask.png"  # cat_mask.png is an input
    assert names[1][0].name == "cat_mask_mask.png"


def test_long_input_names_get_outputs_the_file_system_takes(tiny_run, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    long_name = "x" * 245 + ".png"  # legal; "<stem>_overlay.png" would not be
    Image.fromarray(_photo(20, 20)).save(folder / long_name)
    Image.fromarray(_photo(20, 20, seed=1)).save(folder / "short.png")
    out = tmp_path / "out"
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(out), str(folder)]) == 0
    masks = sorted(p.name for p in out.glob("*_mask.png"))
    assert len(masks) == 2 and "short_mask.png" in masks
    assert all(len(name.encode()) <= 255 for name in masks)


def test_predict_refuses_huge_images_by_name(tiny_run, tmp_path, capsys):
    photo = tmp_path / "huge.png"
    Image.fromarray(_photo(100, 100)).save(photo)
    status = main(["--model", str(tiny_run / "model.keras"), "--out", str(tmp_path / "out"),
                   "--max-pixels", "5000", str(photo)])
    err = capsys.readouterr().err
    assert status == 1
    assert "huge.png" in err and "limit" in err
    assert not (tmp_path / "out" / "huge_mask.png").exists()


def test_predict_missing_input_and_bad_model(tiny_run, tmp_path, capsys):
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(tmp_path / "o"),
                 str(tmp_path / "nope.jpg")]) == 1
    assert "nope.jpg" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "o"),
                 str(tmp_path)]) == 2
    assert "missing.keras" in capsys.readouterr().err


def test_predict_postprocess_applies(tiny_run, tmp_path):
    photo = tmp_path / "p.png"
    Image.fromarray(_photo(64, 64, seed=2)).save(photo)
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(tmp_path / "o"),
                 "--postprocess", "largest,fill", str(photo)]) == 0
    from scipy import ndimage

    mask = np.asarray(Image.open(tmp_path / "o" / "p_mask.png"))
    pet = mask != 1  # trimap labels: 1 is background
    assert ndimage.label(pet)[1] <= 1  # at most one pet component
    assert np.array_equal(ndimage.binary_fill_holes(pet), pet)  # no holes


def test_auto_postprocess_for_a_model_trained_on_pets(tiny_run, tmp_path, capsys):
    """The default (auto) cleans the masks of an oxford_iiit_pet model; none keeps them raw."""
    import json
    import shutil

    from scipy import ndimage

    from unet_tf.inference.postprocess import postprocess

    run = tmp_path / "pets_run"
    run.mkdir()
    shutil.copy(tiny_run / "model.keras", run / "model.keras")
    config = json.loads((tiny_run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "dataset": "oxford_iiit_pet"}))
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(4):
        Image.fromarray(_photo(64, 64, seed=seed)).save(photos / f"p{seed}.png")
    assert main(["--model", str(run / "model.keras"), "--out", str(tmp_path / "raw"),
                 "--postprocess", "none", str(photos)]) == 0
    assert main(["--model", str(run / "model.keras"), "--out", str(tmp_path / "auto"),
                 str(photos)]) == 0
    assert "post-processing largest,fill" in capsys.readouterr().out
    classes = ("pet", "background", "border")
    changed = 0
    for seed in range(4):
        raw = np.asarray(Image.open(tmp_path / "raw" / f"p{seed}_mask.png"))
        auto = np.asarray(Image.open(tmp_path / "auto" / f"p{seed}_mask.png"))
        np.testing.assert_array_equal(auto, postprocess(raw, classes, "largest,fill"))
        assert ndimage.label(auto != 1)[1] <= 1
        changed += not np.array_equal(auto, raw)
    assert changed  # noise photos give ragged raw masks: the clean-up had work to do
    # a model trained on anything else keeps its raw masks by default
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(tmp_path / "other"),
                 str(photos / "p0.png")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "other" / "p0_mask.png")),
                                  np.asarray(Image.open(tmp_path / "raw" / "p0_mask.png")))


def test_predict_tta_averages_a_photo_and_its_mirror(tiny_run, tmp_path):
    """--tta masks equal evaluate's flip TTA at the model's size, and a mirrored photo gets
    exactly the mirrored mask (it does not without --tta)."""
    import keras

    from unet_tf.inference import predict_masks

    photos = tmp_path / "photos"
    photos.mkdir()
    square, wide = _photo(64, 64, seed=5), _photo(50, 80, seed=6)
    for name, image in (("square", square), ("wide", wide), ("wide_mirrored", wide[:, ::-1])):
        Image.fromarray(image).save(photos / f"{name}.png")
    masks = {}
    for flags in ((), ("--tta",)):
        out = tmp_path / ("tta" if flags else "plain")
        assert main(["--model", str(tiny_run / "model.keras"), "--out", str(out), *flags,
                     str(photos)]) == 0
        masks[flags] = {name: np.asarray(Image.open(out / f"{name}_mask.png"))
                        for name in ("square", "wide", "wide_mirrored")}
    tta, plain = masks[("--tta",)], masks[()]
    model = keras.models.load_model(tiny_run / "model.keras")  # trained at 64 px
    np.testing.assert_array_equal(tta["square"], predict_masks(model, square[None], tta=True)[0])
    np.testing.assert_array_equal(tta["wide_mirrored"], tta["wide"][:, ::-1])
    assert not np.array_equal(plain["wide_mirrored"], plain["wide"][:, ::-1])
