"""evaluate: figures checked against a hand-computed case, through the command line."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from unet_tf.evaluate import main
from unet_tf.evaluation import binary_scores

# Two 4x4 images, binary labels (0 background, 1 pet).
TRUTH = np.array([
    [[0, 0, 0, 0],
     [0, 1, 1, 0],
     [0, 1, 1, 0],
     [0, 0, 0, 0]],
    [[1, 1, 0, 0],
     [1, 1, 0, 0],
     [0, 0, 0, 0],
     [0, 0, 0, 0]],
], np.uint8)
PREDICTED = np.array([
    [[0, 0, 0, 0],
     [0, 1, 1, 1],
     [0, 1, 0, 0],
     [0, 0, 0, 0]],
    [[0, 0, 0, 0],
     [0, 0, 0, 0],
     [0, 0, 0, 0],
     [0, 0, 0, 0]],
], np.uint8)
# By hand. Image 1: truth 4 pet, predicted 4 pet, overlap 3. Image 2: truth 4, predicted 0.
# Pet: TP 3, FP 1, FN 5 -> Dice 6/12 = 0.5, IoU 3/9.
# Background: TN-as-TP 23 (32 - 3 - 1 - 5), FP 5, FN 1 -> Dice 46/52, IoU 23/29.
# Pixel accuracy 26/32. Per image pet Dice: 6/8 and 0 -> mean 0.375; IoU 3/5 and 0 -> 0.3.
EXPECTED = {
    "pet_dice": 0.5, "pet_iou": 3 / 9, "background_dice": 46 / 52, "background_iou": 23 / 29,
    "pixel_accuracy": 26 / 32, "mean_dice_per_image": 0.375, "mean_iou_per_image": 0.3,
}


def _one_hot_model(size):
    """A model whose prediction is the image's colour: red -> class 0, green -> class 1."""
    inputs = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(2, 1, use_bias=False)
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.array([[[[1, 0], [0, 1], [0, 0]]]], np.float32)])
    return model


@pytest.fixture()
def hand_case(tmp_path):
    """A model.keras predicting PREDICTED on a folder dataset whose masks are TRUTH (32x32,
    every label pixel blown up 8x8 so resizing to the model size is exact)."""
    size = 32
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i, (truth, predicted) in enumerate(zip(TRUTH, PREDICTED)):
        big_pred = np.kron(predicted, np.ones((8, 8), np.uint8))
        image = np.zeros((size, size, 3), np.uint8)
        image[..., 0] = 255 * (big_pred == 0)
        image[..., 1] = 255 * (big_pred == 1)
        Image.fromarray(image).save(data / "images" / f"ex{i}.png")
        Image.fromarray(255 * np.kron(truth, np.ones((8, 8), np.uint8))).save(
            data / "masks" / f"ex{i}.png")
    model_path = tmp_path / "model.keras"
    _one_hot_model(size).save(model_path)
    return model_path, data


def test_evaluate_cli_hand_computed(hand_case, tmp_path, capsys):
    model_path, data = hand_case
    json_path = tmp_path / "report.json"
    status = main(["--model", str(model_path), "--dataset", "folder", "--data-dir", str(data),
                   "--labels", "binary", "--split", "train", "--json", str(json_path)])
    printed = capsys.readouterr().out
    assert status == 0
    report = json.loads(json_path.read_text())
    # Pixel counts are the hand case's, each pixel blown up 64 times.
    assert report["pixels"] == 32 * 64
    cm = np.array(report["confusion_matrix"]) // 64
    np.testing.assert_array_equal(cm, [[23, 1], [5, 3]])  # rows: true background, true pet
    assert report["dice"]["foreground"] == pytest.approx(EXPECTED["pet_dice"])
    assert report["iou"]["foreground"] == pytest.approx(EXPECTED["pet_iou"])
    assert report["dice"]["background"] == pytest.approx(EXPECTED["background_dice"])
    assert report["iou"]["background"] == pytest.approx(EXPECTED["background_iou"])
    assert report["mean_dice"] == pytest.approx((EXPECTED["pet_dice"]
                                                 + EXPECTED["background_dice"]) / 2)
    assert report["pixel_accuracy"] == pytest.approx(EXPECTED["pixel_accuracy"])
    binary = report["pet_vs_background"]
    assert binary["dice"] == pytest.approx(EXPECTED["pet_dice"])
    assert binary["mean_dice_per_image"] == pytest.approx(EXPECTED["mean_dice_per_image"])
    assert binary["mean_iou_per_image"] == pytest.approx(EXPECTED["mean_iou_per_image"])
    assert (tmp_path / "report_confusion.png").is_file()
    assert "foreground" in printed and "0.5000" in printed
    # A binary model's objects are its foreground class, not pets.
    assert "foreground vs background: Dice 0.5000" in printed and "pet" not in printed


def test_binary_scores_empty_images_score_one():
    empty = np.zeros((1, 4, 4), np.uint8)
    scores = binary_scores(empty, empty, (1,))
    assert scores["mean_dice_per_image"] == 1.0 and scores["dice"] == 1.0


def test_evaluate_defaults_to_the_runs_validation_split(tiny_run, capsys):
    assert main(["--model", str(tiny_run / "model.keras")]) == 0
    report = json.loads((tiny_run / "evaluation_test.json").read_text())
    saved = json.loads((tiny_run / "metrics.json").read_text())
    # The same model on the same split: the same figures training wrote.
    assert report["mean_dice"] == pytest.approx(saved["mean_dice"], abs=1e-9)
    assert report["dice"] == pytest.approx(saved["dice"])
    assert report["examples"] == saved["examples"]


def test_evaluate_on_real_sample(tiny_run, pets_sample, tmp_path):
    json_path = tmp_path / "real.json"
    assert main(["--model", str(tiny_run / "model.keras"), "--data-dir", str(pets_sample),
                 "--split", "test[:20]", "--json", str(json_path)]) == 0
    report = json.loads(json_path.read_text())
    assert report["examples"] == 20
    assert set(report["dice"]) == {"pet", "background", "border"}
    assert 0.0 <= report["pet_vs_background"]["dice"] <= 1.0


def test_evaluate_rejects_label_mode_that_does_not_fit(tiny_run, capsys):
    before = sorted(p.name for p in tiny_run.iterdir())
    assert main(["--model", str(tiny_run / "model.keras"), "--labels", "binary"]) == 2
    err = capsys.readouterr().err
    assert "labels=binary gives 2 classes ('background', 'pet')" in err
    assert "the model predicts 3" in err and "Traceback" not in err
    assert sorted(p.name for p in tiny_run.iterdir()) == before  # no report written


def test_evaluate_defaults_to_the_part_the_run_carved_out_for_validation(tiny_run, tmp_path):
    """A run that held out part of its training split was validated on that part: so is its
    model, not on the dataset's other split."""
    import shutil

    from unet_tf import data
    from unet_tf.config import Config

    run = tmp_path / "carved"
    run.mkdir()
    shutil.copy(tiny_run / "model.keras", run / "model.keras")
    config = json.loads((tiny_run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "validation_fraction": 0.25}))
    _, carved = data.load_splits(Config.load(run / "config.json"))
    assert main(["--model", str(run / "model.keras"), "--postprocess", "none"]) == 0
    (written,) = run.glob("evaluation_*.json")
    report = json.loads(written.read_text())
    assert report["split"] == carved.name == "train (validation part)"
    assert report["examples"] == len(carved) != config["synthetic_val_examples"]


def test_a_score_on_the_photos_that_chose_the_epoch_says_so(tiny_run, tmp_path, capsys):
    """The tiny run validates on synthetic `test` (nothing carved out of training): scored there,
    with or without --split, the table and the JSON say that early stopping chose the epoch on
    these photos; on photos it never validated on, they do not."""
    model = str(tiny_run / "model.keras")
    for args, chose in ((["--json", str(tmp_path / "validation.json")], True),
                        (["--split", "test", "--json", str(tmp_path / "test.json")], True),
                        (["--split", "train[:8]", "--json", str(tmp_path / "train.json")], False)):
        assert main(["--model", model, *args]) == 0
        printed = capsys.readouterr().out
        assert ("chose the epoch kept (early stopping): an optimistic score" in printed) is chose
        assert json.loads(Path(args[-1]).read_text())["chose_the_model"] is chose


def _numpy_scores(truth, predicted):
    """Per-image scores of the hand case, computed directly from the label arrays."""
    def dice(t, p):
        return 2 * (t & p).sum() / (t.sum() + p.sum()) if t.sum() + p.sum() else None

    def iou(t, p):
        return (t & p).sum() / (t | p).sum() if (t | p).sum() else None

    big_t, big_p = (np.kron(a, np.ones((8, 8), np.uint8)) for a in (truth, predicted))
    return {"height": 32, "width": 32,
            "dice_background": dice(big_t == 0, big_p == 0), "dice_foreground": dice(big_t == 1, big_p == 1),
            "iou_background": iou(big_t == 0, big_p == 0), "iou_foreground": iou(big_t == 1, big_p == 1),
            "foreground_dice": dice(big_t == 1, big_p == 1) if (big_t | big_p).any() else 1.0,
            "pixel_accuracy": (big_t == big_p).mean()}


def test_per_image_csv_rows_against_numpy(hand_case, tmp_path):
    import csv

    model_path, data = hand_case
    json_path = tmp_path / "report.json"
    assert main(["--model", str(model_path), "--dataset", "folder", "--data-dir", str(data),
                 "--labels", "binary", "--split", "train", "--json", str(json_path)]) == 0
    with open(tmp_path / "report_per_image.csv", newline="") as file:
        rows = {row["file"]: row for row in csv.DictReader(file)}
    assert sorted(rows) == ["ex0", "ex1"]
    for i, name in enumerate(("ex0", "ex1")):
        expected = _numpy_scores(TRUTH[i], PREDICTED[i])
        for key, value in expected.items():
            assert float(rows[name][key]) == pytest.approx(value, abs=1e-6), (name, key)
    # By hand as well: image 0 overlaps 3 of 4 pet pixels both ways, image 1 misses its pet.
    assert float(rows["ex0"]["foreground_dice"]) == pytest.approx(0.75)
    assert float(rows["ex1"]["foreground_dice"]) == 0.0
    report = json.loads(json_path.read_text())
    assert set(report["files_sha256"]) == {"report_confusion.png", "report_per_image.csv",
                                           "report_worst.png"}


def test_worst_photos_are_the_lowest_scores_lowest_first(hand_case, tmp_path, monkeypatch):
    from unet_tf import plots

    drawn = []
    original = plots.plot_worst
    monkeypatch.setattr(plots, "plot_worst", lambda images, truth, predicted, classes, titles,
                        path: (drawn.append(titles), original(images, truth, predicted, classes,
                                                              titles, path)))
    model_path, data = hand_case
    args = ["--model", str(model_path), "--dataset", "folder", "--data-dir", str(data),
            "--labels", "binary", "--split", "train"]
    assert main(args + ["--json", str(tmp_path / "two.json"), "--worst", "2"]) == 0
    assert main(args + ["--json", str(tmp_path / "one.json"), "--worst", "1"]) == 0
    assert main(args + ["--json", str(tmp_path / "none.json"), "--worst", "0"]) == 0
    assert drawn == [["ex1\nforeground_dice 0.000", "ex0\nforeground_dice 0.750"],
                     ["ex1\nforeground_dice 0.000"]]
    assert (tmp_path / "two_worst.png").is_file() and not (tmp_path / "none_worst.png").exists()


def test_evaluate_scores_each_group_by_hand(hand_case, tmp_path, capsys):
    """--group-by: the hand case's two images as two groups, each scored on its own pixels."""
    model_path, data = hand_case
    json_path = tmp_path / "groups.json"
    assert main(["--model", str(model_path), "--dataset", "folder", "--data-dir", str(data),
                 "--labels", "binary", "--split", "train", "--json", str(json_path),
                 "--group-by", r"ex(\d)"]) == 0
    groups = json.loads(json_path.read_text())["groups"]
    assert list(groups) == ["0", "1"] and [g["examples"] for g in groups.values()] == [1, 1]
    # By hand: image 1 overlaps 3 of 4 + 4 pet pixels (6/8); image 2 predicts no pet (0).
    assert groups["0"]["pet_vs_background"]["dice"] == pytest.approx(6 / 8)
    assert groups["1"]["pet_vs_background"]["dice"] == 0.0
    assert groups["0"]["dice"]["foreground"] == pytest.approx(6 / 8)
    # Background of image 1: 11 pixels right of 12 true and 12 predicted -> 22/24.
    assert groups["0"]["dice"]["background"] == pytest.approx(22 / 24)
    printed = capsys.readouterr().out
    assert "foreground vs background Dice" in printed and "0.7500" in printed
