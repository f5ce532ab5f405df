"""Careless and hostile use, round two (docs/reliability.md): no dead ends, no silently wrong
pairs, no limits walked around, one line for every user or disk error."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from unet_tf import data
from unet_tf.config import Config, ConfigError, preset, read_config_file

from tiny import TINY, StopAtEpoch


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run of 3 epochs stopped (Ctrl-C) as its second began: epoch 1 is saved."""
    from unet_tf.train import train

    run = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises(KeyboardInterrupt):
        train(preset("quickstart", epochs=3, **TINY), run_dir=run, verbose=0,
              callbacks=[StopAtEpoch(2)])
    assert json.loads((run / "resume" / "state.json").read_text())["epochs_completed"] == 1
    return run


@pytest.fixture()
def run_copy(interrupted, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(interrupted, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


# 2: --resume without the best model
def test_resume_refuses_a_run_whose_model_was_deleted_and_keeps_its_weights(run_copy, capsys):
    from unet_tf.train import main

    (run_copy / "model.keras").unlink()
    weights = sorted((run_copy / "resume").glob("epoch_*"))
    assert main(["--resume", str(run_copy)]) == 2
    err = capsys.readouterr().err
    assert "model.keras (the best epoch so far) is missing" in err and "Traceback" not in err
    assert sorted((run_copy / "resume").glob("epoch_*")) == weights  # nothing lost
    assert not json.loads((run_copy / "resume" / "state.json").read_text())["finished"]


# 7: --resume after config.json was edited
def test_resume_refuses_a_config_json_edited_since_the_run_started(run_copy, capsys):
    from unet_tf.train import main

    config = json.loads((run_copy / "config.json").read_text())
    config["decoder_filters"] = [32, 32, 32, 32]
    (run_copy / "config.json").write_text(json.dumps(config))
    assert main(["--resume", str(run_copy)]) == 2
    err = capsys.readouterr().err
    assert "differs from the run's plan.json in decoder_filters" in err
    assert "Traceback" not in err


# 9: a run killed before its first epoch was saved is no dead end
@pytest.mark.slow  # a training run resumed
def test_resume_of_a_run_killed_before_its_first_epoch_starts_it_again(tiny_run, tmp_path,
                                                                      capsys):
    from unet_tf.train import main

    run = tmp_path / "run"
    run.mkdir()
    config = json.loads((tiny_run / "config.json").read_text())
    config.update(epochs=1, synthetic_train_examples=8, synthetic_val_examples=8, image_size=32)
    (run / "config.json").write_text(json.dumps(config))
    (run / "history.csv").write_text("epoch,loss\n")  # as a kill during epoch 1 leaves them
    (run / "logs").mkdir()
    assert main(["--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "no epoch was saved before the run stopped; starting it again" in out
    assert (run / "model.keras").is_file()
    assert json.loads((run / "resume" / "state.json").read_text())["finished"]


# 9: SIGTERM is Ctrl-C
@pytest.mark.slow  # a training process, started and stopped: a minute on a busy 2-core machine
def test_sigterm_stops_training_as_ctrl_c_does(tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "unet_tf.train", "--preset", "quickstart", "--epochs", "40",
         "--patience", "40", "--image-size", "32", "--alpha", "0.35", "--decoder-filters", "16",
         "16", "16", "16", "--synthetic-train-examples", "16", "--synthetic-val-examples", "8",
         "--batch-size", "8", "--seed", "1", "--run-dir", str(run)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = run / "resume" / "state.json"
    while not state.is_file():  # the state this test is about: the first epoch saved
        assert process.poll() is None, process.communicate()[1][-2000:]
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130, err[-2000:]
    assert f"python -m unet_tf.train --resume {run}" in err and "Traceback" not in err
    assert not list(run.rglob(".*tmp*"))


# 11: Ctrl-C while the weights are averaged still names the command that finishes the run
@pytest.mark.slow  # a training run
def test_ctrl_c_during_weight_averaging_prints_the_resume_command(tmp_path, capsys,
                                                                   monkeypatch):
    from unet_tf import averaging
    from unet_tf.train import train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(averaging, "apply_average", interrupted)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(preset("quickstart", epochs=3, patience=3, average_weights=True, **TINY),
              run_dir=run, verbose=0)
    assert f"python -m unet_tf.train --resume {run}" in capsys.readouterr().err


# 6: NaN, infinity and negative weights
@pytest.mark.parametrize("values", [
    dict(learning_rate=float("nan")), dict(learning_rate=float("inf")),
    dict(encoder_bn_momentum=float("nan")), dict(dropout=float("nan")),
    dict(alpha=float("nan"), encoder_weights="none"),
    dict(memory_budget_gb=float("nan")), dict(augment_scale=float("nan")),
    dict(class_weights=(float("nan"), 1.0, 1.0)), dict(class_weights=(-5.0, 1.0, 1.0)),
    dict(class_weights=(0.0, 0.0, 0.0)), dict(image_size=100000), dict(image_size=3200000000)])
def test_numbers_that_no_comparison_catches_are_refused(values):
    with pytest.raises(ConfigError):
        Config(**values)


def test_a_nan_learning_rate_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from unet_tf.train import main

    monkeypatch.chdir(tmp_path)
    assert main(["--preset", "quickstart", "--learning-rate", "nan"]) == 2
    err = capsys.readouterr().err
    assert "learning_rate=nan: expected a finite number" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# 8: configurations that expand or nest beyond what they show; error lines of bounded length
def test_a_billion_laughs_config_is_refused_before_it_expands(tmp_path):
    laughs = tmp_path / "laughs.yaml"
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for this, last in zip("bcdefghij", "abcdefghi"):
        lines.append(f"{this}: &{this} [{','.join([f'*{last}'] * 9)}]")
    laughs.write_text("\n".join(lines) + "\n")
    assert laughs.stat().st_size < 1000
    with pytest.raises(ConfigError, match="aliases"):
        read_config_file(laughs)
    deep = tmp_path / "deep.yaml"
    deep.write_text("x: " + "[" * 1000 + "]" * 1000 + "\n")
    with pytest.raises(ConfigError, match="nested deeper"):
        read_config_file(deep)
    deep_json = tmp_path / "deep.json"
    deep_json.write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ConfigError, match="nested deeper"):
        read_config_file(deep_json)


def test_an_error_shows_a_long_value_cut_short():
    with pytest.raises(ConfigError) as error:
        Config.from_dict({"dataset": "x" * 10**6})
    assert len(str(error.value)) < 400 and "1,000,002 characters" in str(error.value)


# 7: a full disk, wherever it is met, is one line
@pytest.mark.slow  # a training run
def test_a_full_disk_while_saving_a_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    import collections

    from unet_tf import files
    from unet_tf.train import main

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    monkeypatch.chdir(tmp_path)
    status = main(["--preset", "quickstart", "--epochs", "2", "--image-size", "32", "--alpha",
                   "0.35", "--decoder-filters", "16", "16", "16", "16",
                   "--synthetic-train-examples", "8", "--synthetic-val-examples", "8",
                   "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and "the disk is full" in err and "Traceback" not in err
    assert not list(tmp_path.rglob(".*tmp*"))


def test_a_full_disk_reported_inside_another_error_is_one_line(capsys):
    from unet_tf.cli import run_command

    def body(argv):
        try:
            raise OSError(28, "No space left on device")
        except OSError as error:
            raise RuntimeError("Unable to synchronously create file") from error

    assert run_command(body) == 2
    assert "the disk is full" in capsys.readouterr().err


# 4a: photos stored turned, with an EXIF orientation, are turned upright
def _exif(orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_photos_with_an_exif_orientation_are_read_upright(tmp_path):
    from unet_tf.images import read_image

    stored = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(stored).save(tmp_path / "turned.png", exif=_exif(6))
    # Orientation 6: shown turned 90 degrees clockwise, as every viewer shows it.
    np.testing.assert_array_equal(read_image(tmp_path / "turned.png"), np.rot90(stored, k=-1))
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    Image.fromarray(stored).save(tmp_path / "data/images/a.jpg", exif=_exif(6))
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(tmp_path / "data/masks/a.png")
    config = preset("own-data", data_dir=str(tmp_path / "data"), resize="none", seed=1)
    split = data.load_split(config, "train")
    assert split.skipped == [] and split.images[0].shape == (40, 30, 3)


# 4b and 11: ambiguous names and broken links are named, never silently paired
def test_ambiguous_names_and_broken_links_are_skipped_with_their_reason(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    photo, mask = Image.new("RGB", (32, 32)), Image.new("L", (32, 32))
    for name in ("0000.jpg", "0000.png", "0001.jpg", "0002.jpg", "0003.jpg", "0004.jpg"):
        photo.save(images / name)
    for name in ("0000.png", "0001.png", "0001.bmp", "0002.png"):
        mask.save(masks / name)
    (masks / "0003.png").mkdir()
    os.symlink("0004.png", masks / "0004.png")  # a link to itself
    os.symlink(tmp_path / "gone.jpg", images / "0005.jpg")
    config = preset("own-data", data_dir=str(tmp_path), resize="squash", image_size=32, seed=1)
    split = data.load_split(config, "train")
    reasons = dict(split.skipped)
    assert split.names == ["0002"]
    assert "2 photos share the name 0000 (0000.jpg, 0000.png)" in reasons["0000"]
    assert "2 masks share the name 0001 (0001.bmp, 0001.png)" in reasons["0001"]
    assert "its mask 0003.png is a folder" in reasons["0003"]
    assert "its mask 0004.png is a link that leads back to itself" in reasons["0004"]
    assert "a link to" in reasons["0005.jpg"] and "which does not exist" in reasons["0005.jpg"]


# 3 and 11: predict loads only this project's exports, and a wrong --model leaves nothing
def test_predict_refuses_a_savedmodel_that_is_not_an_export_before_writing(tmp_path, capsys):
    import tensorflow as tf

    from unet_tf.predict import main

    module = tf.Module()
    module.f = tf.function(lambda images: {"mask": images}, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8)])
    tf.saved_model.save(module, str(tmp_path / "foreign"), signatures={"serving_default": module.f})
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(photo)
    for model, expected in [(tmp_path / "foreign", "without the metadata.json"),
                            (tmp_path / "empty", "no saved_model.pb")]:
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert main(["--model", str(model), "--out", str(tmp_path / "out"), str(photo)]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
        assert not (tmp_path / "out").exists()


def test_a_damaged_export_is_one_line(tiny_run, tmp_path, capsys):
    from unet_tf.export import main as export
    from unet_tf.predict import main

    assert export(["--model", str(tiny_run / "model.keras"), "--out", str(tmp_path / "e")]) == 0
    (tmp_path / "e" / "saved_model.pb").write_bytes(b"not a protocol buffer")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(photo)
    capsys.readouterr()
    assert main(["--model", str(tmp_path / "e"), "--out", str(tmp_path / "out"), str(photo)]) == 2
    err = capsys.readouterr().err
    assert "the SavedModel cannot be loaded" in err and "Traceback" not in err


def test_an_h5_file_named_keras_is_called_what_it_is(tmp_path):
    from unet_tf.run.model_file import ModelFileError, check_keras_file

    fake = tmp_path / "model.keras"
    fake.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(ModelFileError, match=r"an HDF5 \(.h5\) file named .keras"):
        check_keras_file(fake)


# 7: files beside a model that are damaged
def test_a_config_json_that_is_not_a_mapping_or_damaged_metrics_are_one_line(run_copy, capsys):
    from unet_tf.run.model_file import ModelFileError, load_model_safely

    (run_copy / "metrics.json").write_text('{"mean_dice": 0.5')  # truncated
    _, info = load_model_safely(run_copy / "model.keras")
    assert info.metrics == {} and "metrics.json is not valid JSON" in capsys.readouterr().err
    (run_copy / "config.json").write_text("[]")
    with pytest.raises(ModelFileError, match="not a usable run configuration"):
        load_model_safely(run_copy / "model.keras")


# 5a: evaluate never replaces a picture it did not write
def test_evaluate_keeps_a_users_file_where_its_picture_would_go(tiny_run, tmp_path, capsys):
    from unet_tf.evaluate import main

    report = tmp_path / "r.json"
    args = ["--model", str(tiny_run / "model.keras"), "--json", str(report)]
    assert main(args) == 0
    assert main(args) == 0  # its own picture: replaced
    (tmp_path / "r_confusion.png").write_bytes(b"the user's own file")
    capsys.readouterr()
    assert main(args) == 2
    assert "is not what an earlier evaluate wrote there" in capsys.readouterr().err
    assert (tmp_path / "r_confusion.png").read_bytes() == b"the user's own file"


# 5b: an export lands where a link leads, and into an empty folder given as .
@pytest.mark.slow  # three exports
def test_export_follows_a_link_and_writes_into_an_empty_current_folder(tiny_run, tmp_path,
                                                                       monkeypatch):
    from unet_tf.export import main

    target = tmp_path / "target"
    target.mkdir()
    os.symlink(target, tmp_path / "link")
    model = str(tiny_run / "model.keras")
    assert main(["--model", model, "--out", str(tmp_path / "link")]) == 0
    assert (tmp_path / "link").is_symlink() and (target / "saved_model.pb").is_file()
    assert main(["--model", model, "--out", str(tmp_path / "link"), "--force"]) == 0
    assert (tmp_path / "link").is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == [
        "link", "target"]
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["--model", model, "--out", "."]) == 0
    assert (here / "saved_model.pb").is_file() and os.getcwd() == str(here)
