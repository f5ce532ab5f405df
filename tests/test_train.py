"""Training end to end: the run folder, its numbers recomputed independently, and the command line's
failures (clear messages, exit code 2, nothing written)."""

import csv
import json

import keras
import numpy as np
import pytest

from unet_tf import data
from unet_tf.config import Config
from unet_tf.train import main

CLASS_NAMES = ["pet", "background", "border"]
TINY_FLAGS = ["--preset", "quickstart", "--image-size", "32", "--epochs", "1",
              "--synthetic-train-examples", "4", "--synthetic-val-examples", "2",
              "--batch-size", "2", "--decoder-filters", "8", "8", "8", "8"]


def read_history(run):
    with open(run / "history.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_run_folder_holds_everything(tiny_run):
    for name in ("config.json", "history.csv", "model.keras", "curves.png", "predictions.png",
                 "metrics.json"):
        assert (tiny_run / name).is_file(), name
        assert (tiny_run / name).stat().st_size > 0, name
    assert (tiny_run / "logs").is_dir() and any((tiny_run / "logs").rglob("*tfevents*"))
    for name in ("curves.png", "predictions.png"):
        assert (tiny_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tiny_run.glob(".*tmp*"))  # no temporary files left behind


def test_config_json_is_the_run_configuration(tiny_run):
    config = Config.load(tiny_run / "config.json")
    assert (config.dataset, config.image_size, config.epochs, config.batch_size) == (
        "synthetic", 64, 1, 8)
    assert config.decoder_filters == (16, 16, 16, 16) and config.alpha == 0.35
    assert (config.synthetic_train_examples, config.synthetic_val_examples) == (32, 16)


def test_history_has_one_row_per_epoch(tiny_run):
    rows = read_history(tiny_run)
    report = json.loads((tiny_run / "metrics.json").read_text())
    assert len(rows) == report["epochs_run"] == 1
    assert [int(row["epoch"]) for row in rows] == [1]  # from 1, as metrics.json counts
    for column in ["loss", "dice", "val_loss", "val_dice", "val_iou", "val_pixel_accuracy"] + [
            f"val_dice_{name}" for name in CLASS_NAMES]:
        value = float(rows[0][column])
        assert np.isfinite(value), column
    assert 0.0 <= float(rows[0]["val_dice"]) <= 1.0
    assert 0.0 <= float(rows[0]["val_loss"]) <= 1.0  # a Dice loss
    assert report["best_epoch"] == 1


def np_dice_per_class(true_masks, predicted_masks, num_classes):
    dice = []
    for c in range(num_classes):
        t, p = true_masks == c, predicted_masks == c
        denominator = t.sum() + p.sum()
        dice.append(2.0 * np.logical_and(t, p).sum() / denominator if denominator else np.nan)
    return np.array(dice)


def test_metrics_json_matches_an_independent_evaluation(tiny_run):
    report = json.loads((tiny_run / "metrics.json").read_text())
    assert list(report["dice"]) == CLASS_NAMES
    assert list(report["iou"]) == CLASS_NAMES

    config = Config.load(tiny_run / "config.json")
    _, val = data.load_splits(config)
    assert len(val) == 16
    model = keras.models.load_model(tiny_run / "model.keras")
    logits = model.predict(val.images.astype(np.float32) / 255.0, verbose=0)
    predicted = logits.argmax(axis=-1)
    dice = np_dice_per_class(val.masks, predicted, 3)

    assert report["mean_dice"] == pytest.approx(float(np.nanmean(dice)), abs=1e-6)
    for name, value in zip(CLASS_NAMES, dice):
        if np.isnan(value):
            assert report["dice"][name] is None
        else:
            assert report["dice"][name] == pytest.approx(float(value), abs=1e-6)
    assert report["pixel_accuracy"] == pytest.approx(float(np.mean(predicted == val.masks)),
                                                     abs=1e-6)
    # The Keras metric training logged for the (only, hence best) epoch is the same number.
    logged = float(read_history(tiny_run)[0]["val_dice"])
    assert logged == pytest.approx(report["mean_dice"], abs=1e-4)


def test_run_dir_that_is_not_empty_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "old_run"
    run_dir.mkdir()
    (run_dir / "model.keras").write_text("another run's model")
    assert main(TINY_FLAGS + ["--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and str(run_dir) in err
    assert [p.name for p in run_dir.iterdir()] == ["model.keras"]
    assert (run_dir / "model.keras").read_text() == "another run's model"


def test_bad_image_size_on_the_command_line(tmp_path, run_python):
    process, _ = run_python(["-m", "unet_tf.train", "--preset", "quickstart", "--image-size", "100"],
                            cwd=tmp_path)
    assert process.returncode == 2
    assert "image_size=100" in process.stderr and "32" in process.stderr
    assert "Traceback" not in process.stderr
    assert list(tmp_path.iterdir()) == []  # no run folder


@pytest.fixture(scope="module")
def offline_default_run(tmp_path_factory, network_reachable, run_python):
    """`python -m unet_tf.train` with no flags, offline, with empty weight and dataset caches."""
    if network_reachable("storage.googleapis.com") or network_reachable("thor.robots.ox.ac.uk"):
        pytest.skip("the network is reachable: the default run would download")
    folder = tmp_path_factory.mktemp("offline_default")
    env = {"KERAS_HOME": str(folder / "keras_home"), "TFDS_DATA_DIR": str(folder / "tfds")}
    work = folder / "work"
    work.mkdir()
    process, seconds = run_python(["-m", "unet_tf.train"], cwd=work, timeout=60, env=env)
    return process, seconds, work


def test_default_run_offline_fails_fast_and_cleanly(offline_default_run):
    process, seconds, work = offline_default_run
    assert process.returncode == 2
    assert seconds < 30
    assert "Traceback" not in process.stderr
    assert "error:" in process.stderr
    assert list(work.iterdir()) == []  # no run folder


def test_default_run_offline_points_to_offline_data(offline_default_run):
    process, _, _ = offline_default_run
    assert "--data-dir" in process.stderr and "synthetic" in process.stderr


def test_download_offline_names_the_offline_data_options(tmp_path, network_reachable, run_python):
    if network_reachable("thor.robots.ox.ac.uk"):
        pytest.skip("the dataset host is reachable: the run would download")
    env = {"TFDS_DATA_DIR": str(tmp_path / "tfds")}
    work = tmp_path / "work"
    work.mkdir()
    process, seconds = run_python(["-m", "unet_tf.train", "--encoder-weights", "none",
                                   "--image-size", "32", "--alpha", "0.35",
                                   "--decoder-filters", "8", "8", "8", "8"],
                                  cwd=work, timeout=60, env=env)
    assert process.returncode == 2 and seconds < 30
    assert "Traceback" not in process.stderr
    assert "--data-dir" in process.stderr and "--dataset synthetic" in process.stderr
    assert list(work.iterdir()) == []


def test_a_run_without_a_seed_draws_one_and_records_it():
    from unet_tf.config import ConfigError, preset
    from unet_tf.plan import make_plan

    config = preset("quickstart")
    assert config.seed is None
    plans = [make_plan(config) for _ in range(3)]
    drawn = [plan.config.seed for plan in plans]
    assert len(set(drawn)) == 3 and all(0 <= s < 2**31 for s in drawn)
    assert f"--seed {drawn[-1]} repeats it" in plans[-1].block()
    assert make_plan(preset("quickstart", seed=7)).config.seed == 7
    with pytest.raises(ConfigError, match="multi_worker needs --seed"):
        make_plan(preset("quickstart", strategy="multi_worker"))


def test_the_seed_of_a_run_is_in_its_config_json(tiny_run):
    assert json.loads((tiny_run / "config.json").read_text())["seed"] == 0
