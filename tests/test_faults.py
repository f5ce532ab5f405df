"""Faults injected into training: a kill, Ctrl-C, a diverging loss, a crash mid-write, unsafe
model files, and the same seed twice."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from unet_tf.config import preset

# Small enough for seconds per epoch on 2 cores, big enough to be killed inside an epoch.
TINY = ["--preset", "quickstart", "--image-size", "64", "--batch-size", "8", "--alpha", "0.35",
        "--decoder-filters", "16", "16", "16", "16", "--synthetic-train-examples", "96",
        "--synthetic-val-examples", "16"]


def _history_epochs(run):
    with open(run / "history.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _start_training(args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "unet_tf.train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _saved_epochs(run) -> int:
    """Epochs the run's resume state says are saved (0 before the first; a state being replaced
    reads as the one before)."""
    try:
        return json.loads((run / "resume" / "state.json").read_text())["epochs_completed"]
    except (OSError, ValueError, KeyError):
        return 0


def _wait_for_epochs(run, process, count, timeout=900):
    """Waits until the run's saved state holds `count` epochs: the state the test is about, which
    a busy machine reaches late but never early. The timeout only catches a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _saved_epochs(run) >= count:
            return
        if process.poll() is not None:
            pytest.fail(f"training ended early: {process.communicate()[1][-2000:]}")
        time.sleep(0.2)
    process.kill()
    pytest.fail("training did not reach the epoch in time")


@pytest.mark.slow  # a training process killed and resumed: two minutes on 2 cores
def test_sigkill_then_resume_loses_at_most_one_epoch(tmp_path, run_python):
    run = tmp_path / "run"
    # Six epochs to spare after the two waited for: still training when the kill comes, even if
    # a busy machine lets the test notice the second epoch late.
    process = _start_training([*TINY, "--epochs", "8", "--patience", "10", "--average-weights",
                               "--run-dir", str(run)], tmp_path)
    _wait_for_epochs(run, process, 2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = json.loads((run / "resume" / "state.json").read_text())
    assert state["epochs_completed"] >= 2 and not state["finished"]
    assert (run / "model.keras").is_file()
    assert state["callbacks"]["average"]["count"] >= 1  # the running mean, saved with the run
    with np.load(run / "resume" / state["arrays"]) as arrays:
        assert "average/sum_0" in arrays.files and "early_stopping/best_0" in arrays.files

    resumed, _ = run_python(["-m", "unet_tf.train", "--resume", str(run)], cwd=tmp_path,
                            timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"after epoch {state['epochs_completed']}" in resumed.stdout
    assert _history_epochs(run) == list(range(1, 9))  # no gap, no duplicate
    for name in ("model.keras", "metrics.json", "curves.png", "predictions.png"):
        assert (run / name).is_file()
    assert json.loads((run / "resume" / "state.json").read_text())["finished"]
    assert not list(run.rglob(".*tmp*"))  # no half-written files left behind
    assert not list((run / "resume").glob("epoch_*"))


@pytest.mark.slow  # a training process, stopped and resumed
def test_ctrl_c_saves_and_prints_the_resume_command(tmp_path):
    run = tmp_path / "run"
    # Far more epochs than the test waits for: on a busy machine the test may notice the first
    # epoch late, and the run must still be training when Ctrl-C comes.
    process = _start_training([*TINY, "--epochs", "40", "--patience", "40", "--run-dir", str(run)],
                              tmp_path)
    _wait_for_epochs(run, process, 1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130
    assert f"python -m unet_tf.train --resume {run}" in err
    assert "Traceback" not in err
    state = json.loads((run / "resume" / "state.json").read_text())
    assert state["epochs_completed"] == len(_history_epochs(run)) >= 1


class _PoisonWeights(keras.callbacks.Callback):
    """Makes every weight NaN at the end of one epoch, so the next one diverges."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])


@pytest.mark.slow  # a training run in a new process
def test_divergence_stops_and_keeps_the_best_model(tmp_path):
    from unet_tf.train import train
    from unet_tf.training import TrainingDiverged

    config = preset("quickstart", epochs=4, image_size=64, batch_size=8, alpha=0.35,
                    decoder_filters=(16, 16, 16, 16), synthetic_train_examples=16,
                    synthetic_val_examples=8)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="epoch 3.*learning-rate"):
        train(config, run_dir=run, verbose=0, callbacks=[_PoisonWeights(epoch=1)])
    assert _history_epochs(run) == [1, 2]
    best = keras.models.load_model(run / "model.keras")
    assert all(np.all(np.isfinite(w)) for w in best.get_weights())
    report = json.loads((run / "metrics.json").read_text())
    assert report["epochs_run"] == 2 and report["mean_dice"] is not None


@pytest.mark.slow  # a training run in a new process
def test_divergence_without_validation_keeps_the_last_completed_epoch(tmp_path):
    from unet_tf.train import train
    from unet_tf.training import TrainingDiverged

    recorded = []

    class PoisonThirdEpoch(keras.callbacks.Callback):
        """Records each epoch's weights; NaN weights from the third epoch's first batch on."""

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if self.epoch == 2 and batch == 0:
                self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])

        def on_epoch_end(self, epoch, logs=None):
            recorded.append(self.model.get_weights())

    config = preset("quickstart", epochs=4, image_size=64, batch_size=8, alpha=0.35,
                    decoder_filters=(16, 16, 16, 16), synthetic_train_examples=16,
                    val_split="none", average_weights=True)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="epoch 3"):
        train(config, run_dir=run, verbose=0, callbacks=[PoisonThirdEpoch()])
    assert _history_epochs(run) == [1, 2]
    kept = keras.models.load_model(run / "model.keras")  # the second epoch's weights
    for got, want in zip(kept.get_weights(), recorded[1]):
        np.testing.assert_array_equal(got, want)
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2
    assert (run / "predictions.png").is_file()


def test_atomic_write_leaves_the_old_file_on_a_crash(tmp_path, monkeypatch):
    from unet_tf import files

    target = tmp_path / "metrics.json"
    files.write_json(target, {"version": 1})

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError):
        files.write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}


def test_model_checkpoint_never_truncates_model_keras(tmp_path, monkeypatch):
    """A crash inside model.save leaves the previous best model.keras whole and loadable."""
    from unet_tf.run.model_file import AtomicModelCheckpoint

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    path = tmp_path / "model.keras"
    checkpoint = AtomicModelCheckpoint(path, monitor="loss", mode="min", save_best_only=True)
    x, y = np.ones((4, 2)), np.zeros((4, 1))
    model.fit(x, y, epochs=1, verbose=0, callbacks=[checkpoint])
    before = path.read_bytes()

    def crash_while_writing(filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise OSError("killed mid-save")

    monkeypatch.setattr(model, "save", crash_while_writing)
    with pytest.raises(OSError):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[checkpoint])
    assert path.read_bytes() == before
    keras.models.load_model(path)


def test_unsafe_model_files_are_refused(tmp_path):
    from unet_tf.run.model_file import load_model_safely

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    path = tmp_path / "model.keras"
    model.save(path)
    with pytest.raises(ValueError, match="(?i)unsafe|lambda"):
        load_model_safely(path)


TWO_RUNS_WITH_ONE_SEED = r"""
import sys
from unet_tf.train import main
for run in sys.argv[1:]:
    assert main(["--preset", "quickstart", "--image-size", "64", "--batch-size", "8",
                 "--alpha", "0.35", "--decoder-filters", "16", "16", "16", "16",
                 "--synthetic-train-examples", "24", "--synthetic-val-examples", "16",
                 "--epochs", "2", "--seed", "7", "--deterministic", "--run-dir", run]) == 0
"""


@pytest.mark.slow  # two trainings from scratch: about a minute on 2 cores
def test_same_seed_gives_the_same_history(tmp_path, run_python):
    # Both runs in one fresh process: deterministic ops stay on for the rest of a process.
    runs = [tmp_path / "a", tmp_path / "b"]
    process, _ = run_python(["-c", TWO_RUNS_WITH_ONE_SEED, *map(str, runs)], cwd=tmp_path,
                            timeout=300)
    assert process.returncode == 0, process.stderr[-2000:]
    first, second = [(run / "history.csv").read_text() for run in runs]
    assert len(first.splitlines()) == 3  # header + 2 epochs
    assert first == second


def test_truncated_files_are_skipped_by_name(tmp_path):
    """A photo cut short by a failed copy, and a truncated trimap: both skipped and named."""
    from PIL import Image

    from unet_tf import data
    from unet_tf.config import Config
    from unet_tf.data.synthetic import make_examples
    from unet_tf.images import write_png

    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "trimaps").mkdir(parents=True)
    names = ["cat_1", "cat_2", "cat_3", "dog_1"]
    for name, example in zip(names, make_examples(len(names), 0)):
        Image.fromarray(example["image"]).save(tmp_path / "images" / f"{name}.jpg")
        write_png(tmp_path / "annotations" / "trimaps" / f"{name}.png",
                  example["segmentation_mask"][..., 0])
    photo = tmp_path / "images" / "cat_2.jpg"
    photo.write_bytes(photo.read_bytes()[:300])
    trimap = tmp_path / "annotations" / "trimaps" / "cat_3.png"
    trimap.write_bytes(trimap.read_bytes()[:100])
    (tmp_path / "annotations" / "trainval.txt").write_text("cat_1\ncat_2\ncat_3\n")
    (tmp_path / "annotations" / "test.txt").write_text("dog_1\n")
    train, _ = data.load_splits(Config(data_dir=str(tmp_path), image_size=32,
                                       encoder_weights="none"))
    assert train.names == ["cat_1"]
    reasons = dict(train.skipped)
    assert set(reasons) == {"cat_2", "cat_3"}
    assert "cat_2.jpg" in reasons["cat_2"] and "cat_3.png" in reasons["cat_3"]
    summary = data.summary(train, ("pet", "background", "border"))
    assert "skipped 2" in summary and "cat_2" in summary


def test_empty_image_folder_is_an_error_not_a_crash(tmp_path):
    from unet_tf import data
    from unet_tf.config import Config

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(data.DataError, match="empty"):
        data.load_splits(Config(dataset="folder", data_dir=str(tmp_path), labels="binary",
                                validation_fraction=0.2, encoder_weights="none"))


def test_run_dir_of_another_run_is_refused_before_any_work(tiny_run, capsys):
    from unet_tf.train import main

    before = sorted(p.name for p in tiny_run.iterdir())
    assert main(["--preset", "quickstart", "--run-dir", str(tiny_run)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and f"--resume {tiny_run}" in err
    assert sorted(p.name for p in tiny_run.iterdir()) == before
