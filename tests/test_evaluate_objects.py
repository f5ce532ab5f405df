"""evaluate on instance labels: object scores checked against hand-computed values, through the
command line, on a hand-made dataset and a model whose answer is fixed by the photos' colours."""

import csv
import json

import keras
import numpy as np
import pytest
from PIL import Image

from unet_tf.evaluate import main
from unet_tf.evaluation import fit_instances, min_sizes
from unet_tf.data import Policy
from unet_tf.instances import boundary_target

SIZE = 32  # the model's input


def _labels():
    """Instance images (32x32): two touching 8x8 squares (16-bit ids), one separate square, an
    empty image."""
    pair = np.zeros((SIZE, SIZE), np.int32)
    pair[4:12, 4:12] = 1000
    pair[4:12, 12:20] = 2000
    single = np.zeros((SIZE, SIZE), np.int32)
    single[16:26, 8:18] = 7
    return {"pair": pair, "single": single, "empty": np.zeros((SIZE, SIZE), np.int32)}


def _class_model():
    """A model whose prediction is the photo's colour: red -> background, green -> interior,
    blue -> boundary (logits 10x the colour, so the probabilities are nearly one-hot)."""
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(3, 1, use_bias=False)
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([10 * np.eye(3, dtype=np.float32)[None, None]])
    return model


def _photo(target, scale):
    """A photo coloured by a 3-class target, blown up `scale` x `scale` per pixel."""
    target = np.kron(target, np.ones((scale, scale), np.uint8))
    return (255 * np.eye(3, dtype=np.uint8)[target]).astype(np.uint8)


def _case(tmp_path, merged: bool, scale: int = 1, min_object_size=None):
    """(model path, data folder): the label PNGs (16-bit) and photos the model answers with the
    true 3-class target, or, `merged`, with the touching pair as one object. Photos and masks
    are `scale` times the model's size (each pixel blown up, so fitting them back is exact)."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for name, labels in _labels().items():
        answer = (labels > 0).astype(np.int32) if merged and name == "pair" else labels
        Image.fromarray(_photo(boundary_target(answer), scale)).save(data / "images" / f"{name}.png")
        big = np.kron(labels, np.ones((scale, scale), np.int32)).astype(np.uint16)
        Image.fromarray(big).save(data / "masks" / f"{name}.png")
    model_path = tmp_path / "run" / "model.keras"
    model_path.parent.mkdir()
    _class_model().save(model_path)
    if min_object_size is not None:
        (model_path.parent / "metrics.json").write_text(
            json.dumps({"min_object_size": min_object_size}))
    return model_path, data


def _evaluate(tmp_path, model_path, data, *extra, labels="instance"):
    json_path = tmp_path / "report.json"
    assert main(["--model", str(model_path), "--dataset", "folder", "--data-dir", str(data),
                 "--labels", labels, "--split", "train", "--json", str(json_path),
                 "--worst", "0", *extra]) == 0
    with open(tmp_path / "report_per_image.csv") as file:
        rows = {row["file"]: row for row in csv.DictReader(file)}
    return json.loads(json_path.read_text()), rows


def _check(objects, true, predicted, tp, iou_sum, ap):
    """The report's object scores against counts worked out by hand."""
    fp, fn = predicted - tp, true - tp
    assert (objects["true"], objects["predicted"]) == (true, predicted)
    assert (objects["tp"], objects["fp"], objects["fn"]) == (tp, fp, fn)
    assert objects["precision"] == pytest.approx(tp / (tp + fp))
    assert objects["recall"] == pytest.approx(tp / (tp + fn))
    assert objects["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert objects["mean_matched_iou"] == pytest.approx(iou_sum / tp)
    assert objects["pq"] == pytest.approx(iou_sum / (tp + fp / 2 + fn / 2))
    assert objects["ap"] == pytest.approx(ap)


@pytest.mark.parametrize("scale, extra", [(1, ()), (2, ()), (2, ("--full-resolution",))])
def test_objects_of_a_correct_model(tmp_path, capsys, scale, extra):
    model_path, data = _case(tmp_path, merged=False, scale=scale)
    report, rows = _evaluate(tmp_path, model_path, data, *extra)
    printed = capsys.readouterr().out
    objects = report["objects"]
    # Every object found exactly: 3 true, 3 predicted, 3 matched with IoU 1.
    _check(objects, true=3, predicted=3, tp=3, iou_sum=3.0, ap=1.0)
    assert objects["separation"] == "watershed" and objects["min_object_size"] is None
    assert objects["images"] == 3
    assert report["resolution"] == ("full" if extra else "model")
    assert (rows["pair"]["true_count"], rows["pair"]["predicted_count"]) == ("2", "2")
    assert float(rows["pair"]["f1_50"]) == 1.0 and float(rows["pair"]["pq"]) == 1.0
    # The empty image: nothing to find, nothing found, a perfect answer.
    assert (rows["empty"]["true_count"], rows["empty"]["predicted_count"]) == ("0", "0")
    assert float(rows["empty"]["ap"]) == 1.0
    assert "objects (watershed, min size none): 3 true, 3 predicted" in printed
    assert "panoptic quality 1.0000" in printed


def test_objects_of_a_model_merging_a_touching_pair(tmp_path, capsys):
    model_path, data = _case(tmp_path, merged=True)
    report, rows = _evaluate(tmp_path, model_path, data, "--report")
    objects = report["objects"]
    # By hand. pair: the two 64-pixel squares predicted as one of 128 pixels; its IoU with each
    # is 64/128 = 0.5, not above 0.5: no match (TP 0, FP 1, FN 2). single: matched exactly
    # (IoU 1). empty: nothing. Summed: 3 true, 2 predicted, TP 1, FP 1, FN 2 ->
    # precision 1/2, recall 1/3, F1 2/5, PQ 1/(1 + 1/2 + 2/2) = 0.4; at every threshold
    # TP 1 of 3 + 2 - 1 = 4: AP 0.25.
    _check(objects, true=3, predicted=2, tp=1, iou_sum=1.0, ap=0.25)
    assert objects["precision"] == pytest.approx(0.5) and objects["f1"] == pytest.approx(0.4)
    assert objects["pq"] == pytest.approx(0.4)
    pair, single = rows["pair"], rows["single"]
    assert (pair["true_count"], pair["predicted_count"]) == ("2", "1")
    assert [float(pair[c]) for c in ("f1_50", "pq", "ap")] == [0.0, 0.0, 0.0]
    assert (single["true_count"], single["predicted_count"]) == ("1", "1")
    assert [float(single[c]) for c in ("f1_50", "pq", "ap")] == [1.0, 1.0, 1.0]
    page = (tmp_path / "report_report.html").read_text()
    assert "<th title='sort by true_count'>true_count</th>" in page


def test_a_recorded_min_object_size_is_scaled_to_the_model(tmp_path):
    # 40 pixels at the photos' size (64x64) are 10 at the model's (32x32): no object is that
    # small, so the scores stay perfect; the report names the size recorded.
    model_path, data = _case(tmp_path, merged=False, scale=2, min_object_size=40)
    report, _ = _evaluate(tmp_path, model_path, data)
    assert report["objects"]["min_object_size"] == 40
    _check(report["objects"], true=3, predicted=3, tp=3, iou_sum=3.0, ap=1.0)
    assert min_sizes(40, [(64, 64), (64, 32)], Policy("squash", 32)) == [10, 20]
    assert min_sizes(40, [(64, 32)], Policy("pad", 32)) == [10]
    assert min_sizes(40, [(64, 32)], None) == [40] and min_sizes(None, [(8, 8)], None) == [None]


def test_fitted_instances_give_the_split_masks_target():
    """Fitted as the masks are: the boundary target of the fitted objects is the fitted mask."""
    labels = np.zeros((50, 70), np.int32)
    labels[5:30, 5:40] = 300
    labels[5:30, 40:66] = 301
    for resize in ("squash", "pad"):
        fitted = fit_instances(labels, Policy(resize, 32))
        assert fitted.shape == (32, 32) and set(np.unique(fitted)) == {0, 300, 301}
    padded = fit_instances(labels, Policy("pad", 32))
    assert not padded[:4].any() and not padded[-4:].any()  # 50x70 -> 23x32, centred


def test_other_labels_get_no_object_scores(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:20, 8:20] = 255
    Image.fromarray(_photo((mask > 0).astype(np.uint8), 1)).save(data / "images" / "a.png")
    Image.fromarray(mask).save(data / "masks" / "a.png")
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(2, 1, use_bias=False)
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.array([[[[1, 0], [0, 1], [0, 0]]]], np.float32)])
    model_path = tmp_path / "model.keras"
    model.save(model_path)
    report, rows = _evaluate(tmp_path, model_path, data, labels="binary")
    assert "objects" not in report
    assert "true_count" not in rows["a"] and "f1_50" not in rows["a"]
    assert report["dice"]["foreground"] == pytest.approx(1.0)


@pytest.mark.parametrize("resize", ["squash", "pad"])
def test_true_objects_are_fitted_as_the_split_masks(tmp_path, resize):
    """Read again and fitted to the model: their boundary target is the split's mask, pixel for
    pixel (non-square photos, objects cut unevenly by the resizing)."""
    from unet_tf import data as data_module
    from unet_tf.config import Config, preset
    from unet_tf.evaluation import true_objects

    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    labels = np.zeros((50, 70), np.int32)
    labels[5:30, 5:40] = 300
    labels[5:30, 40:66] = 301
    labels[35:47, 10:20] = 302
    Image.fromarray(np.zeros((50, 70, 3), np.uint8)).save(folder / "images" / "a.png")
    Image.fromarray(labels.astype(np.uint16)).save(folder / "masks" / "a.png")
    config = Config.from_dict({**preset("tutorial").to_dict(), "dataset": "folder",
                               "data_dir": str(folder), "labels": "instance", "classes": None,
                               "image_size": SIZE, "resize": resize, "val_split": "train",
                               "validation_fraction": 0.0})
    split = data_module.load_split(config, "train")
    true, shapes = true_objects(config, split, full=False)
    assert shapes == [(50, 70)]
    np.testing.assert_array_equal(boundary_target(true[0]), split.masks[0])


def test_the_notebook_scores_and_outlines_the_objects_of_an_instance_run(tmp_path, monkeypatch,
                                                                          capsys):
    """The notebook's evaluate_run on an instance run: the same object scores as evaluate (by
    hand above), printed, and a picture of each photo with its true and found objects."""
    from unet_tf import notebook as nb
    from unet_tf.config import preset

    model_path, data = _case(tmp_path, merged=True)
    config = preset("own-data", data_dir=str(data), labels="instance", image_size=SIZE,
                    resize="squash")
    (model_path.parent / "config.json").write_text(json.dumps(config.to_dict()))
    figures = []
    monkeypatch.setattr(nb, "_show_figure", figures.append)
    report = nb.evaluate_run(model_path.parent, split="train", full_resolution=True)
    _check(report["objects"], true=3, predicted=2, tp=1, iou_sum=1.0, ap=0.25)
    assert "objects (watershed, min size none): 3 true, 2 predicted" in capsys.readouterr().out
    titles = [[ax.get_title() for ax in figure.axes] for figure in figures]
    outlined = next(t for t in titles if "pair" in t)
    assert outlined == ["empty", "true: 0 objects", "found: 0 objects",
                        "pair", "true: 2 objects", "found: 1 object",
                        "single", "true: 1 object", "found: 1 object"]


def test_predict_masks_gives_each_image_s_probabilities_from_the_same_prediction():
    """predict_masks(each=...) hands every image's class probabilities to `each` (with its index)
    and returns what it gave beside the masks, which are those probabilities' argmax: batched at
    the model's size and one photo at a time at the photos' own sizes."""
    from unet_tf.inference import predict_masks

    model = _class_model()
    targets = [t % 3 for t in (np.arange(SIZE * SIZE).reshape(SIZE, SIZE),
                               np.eye(SIZE, dtype=np.int64), np.zeros((SIZE, SIZE), np.int64))]
    batched = np.stack([_photo(t.astype(np.uint8), 1) for t in targets])
    seen = []
    masks, kept = predict_masks(model, batched, batch_size=2,
                                each=lambda i, p: seen.append(i) or (i, p.shape, p.argmax(-1)))
    assert seen == [0, 1, 2] and [k[:2] for k in kept] == [(i, (SIZE, SIZE, 3)) for i in range(3)]
    for target, mask, (_, _, argmax) in zip(targets, masks, kept):
        np.testing.assert_array_equal(mask, target)
        np.testing.assert_array_equal(argmax, target)
    np.testing.assert_array_equal(predict_masks(model, batched, batch_size=2), masks)
    photos = [_photo(targets[0].astype(np.uint8), 2), _photo(targets[1].astype(np.uint8), 1)]
    masks, kept = predict_masks(model, photos, policy=Policy(size=SIZE),
                                each=lambda i, p: (i, p))
    assert [i for i, _ in kept] == [0, 1]
    for mask, (_, probabilities), target, scale in zip(masks, kept, targets, (2, 1)):
        expected = np.kron(target, np.ones((scale, scale), np.int64))
        assert probabilities.shape == (*expected.shape, 3)  # 3 classes
        np.testing.assert_array_equal(mask, expected)
        np.testing.assert_array_equal(mask, probabilities.argmax(-1))
