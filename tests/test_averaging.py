"""--average-weights: the mean of the weights from the best epoch on, BatchNorm measured again."""

import csv
import json

import keras
import numpy as np
import pytest

from unet_tf import averaging, data
from unet_tf.run import resume as resume_lib
from unet_tf.config import preset
from unet_tf.evaluation import evaluate_split
from unet_tf.model import batch_norm_layers


class RecordWeights(keras.callbacks.Callback):
    """Keeps the weights of every epoch (`epochs[i]`: those at the end of epoch i + 1)."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(self.model.get_weights())


def _is_batch_norm_statistic(model):
    statistics = {id(v) for layer in batch_norm_layers(model)
                  for v in (layer.moving_mean, layer.moving_variance)}
    return [id(w) in statistics for w in model.weights]


@pytest.mark.slow  # a training run
def test_average_weights_is_the_mean_from_the_best_epoch_with_batch_norm_measured_again(
        tmp_path, monkeypatch):
    from unet_tf import train as train_lib

    class SecondEpochIsBest(resume_lib.ResumableEarlyStopping):
        """Early stopping that records epoch 2 as the best, whatever the scores."""

        def on_epoch_end(self, epoch, logs=None):
            self.epoch = epoch
            super().on_epoch_end(epoch, logs)

        def _is_improvement(self, monitor_value, reference_value):
            return self.epoch <= 1

    monkeypatch.setattr(train_lib, "ResumableEarlyStopping", SecondEpochIsBest)
    # A model this small may still predict one class at epoch 2, which early stopping would not
    # count (tested in test_own_data); here every epoch counts, whatever the seed.
    monkeypatch.setattr(train_lib, "predicts_one_class", lambda logs, class_names: False)
    recorder = RecordWeights()

    config = preset("quickstart", epochs=4, patience=10, image_size=64, batch_size=8, alpha=0.35,
                    decoder_filters=(16, 16, 16, 16), synthetic_train_examples=16,
                    synthetic_val_examples=8, average_weights=True)
    splits = data.load_splits(config)
    run = train_lib.train(config, run_dir=tmp_path / "run", verbose=0, callbacks=[recorder],
                          splits=splits)

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["averaged_weights"]["epochs"] == [2, 4]
    best = keras.models.load_model(run / "best_epoch.keras")  # the checkpoint, kept
    for got, want in zip(best.get_weights(), recorder.epochs[metrics["best_epoch"] - 1]):
        np.testing.assert_array_equal(got, want)
    best.set_weights(recorder.epochs[1])  # the epoch early stopping chose: its scores are reported
    scores, _, _ = evaluate_split(best, splits[1], config.class_names)
    assert metrics["averaged_weights"]["best_epoch_validation"]["mean_dice"] == pytest.approx(
        scores["mean_dice"], abs=1e-6)

    model = keras.models.load_model(run / "model.keras")
    mean = [np.mean([epoch[i] for epoch in recorder.epochs[1:]], axis=0)
            for i in range(len(recorder.epochs[0]))]
    statistic = _is_batch_norm_statistic(model)
    for got, want, is_statistic in zip(model.get_weights(), mean, statistic):
        if not is_statistic:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert sum(statistic) > 0

    # The first BatchNorm layer's statistics, measured independently: the mean (and the mean of
    # the two batches' variances) of the averaged first convolution's output on the training photos,
    # in batches of the order the run's seed shuffles them into.
    encoder = model.get_layer("encoder")
    conv = keras.Model(encoder.inputs, encoder.get_layer("Conv1").output)
    seed = json.loads((run / "config.json").read_text())["seed"]
    order = np.random.default_rng(seed).permutation(16)
    features = np.asarray(conv(data.normalize(splits[0].images[order]) * 2.0 - 1.0))
    bn = encoder.get_layer("bn_Conv1")
    np.testing.assert_allclose(bn.moving_mean.numpy(), features.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-5)
    variance = np.mean([features[i:i + 8].var(axis=(0, 1, 2)) for i in (0, 8)], axis=0)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variance, rtol=1e-3, atol=1e-5)
    assert not np.allclose(bn.moving_mean.numpy(), mean[statistic.index(True)])
    assert not list((run / "resume").glob("epoch_*"))  # dropped when the run finished


def test_plateau_average_restarts_at_a_new_best_and_resumes_from_its_state():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    averager = averaging.PlateauAverage()
    averager.set_model(model)
    for epoch in range(5):  # epoch 3 (0-based 2) becomes the best
        model.set_weights([np.full(w.shape, float(epoch + 1), w.dtype)
                           for w in model.get_weights()])
        if epoch == 2:  # early stopping tells it before its own epoch end...
            averager.new_best(epoch)
        averager.on_epoch_end(epoch)
        if epoch == 3:  # a run killed here resumes from the state saved after this epoch
            values, arrays = averager.state()
            resumed = averaging.PlateauAverage()
            resumed.restore(json.loads(json.dumps(values)), {k: a.copy() for k, a in arrays.items()})
            resumed.set_model(model)
    assert averager.epochs == (3, 5)
    for w in averager.average():
        np.testing.assert_allclose(w, (3 + 4 + 5) / 3)
    resumed.on_epoch_end(4)
    assert resumed.epochs == (3, 5)
    for got, want in zip(resumed.average(), averager.average()):
        np.testing.assert_array_equal(got, want)

    # ...or after it: the same mean either way.
    other = averaging.PlateauAverage()
    other.set_model(model)
    for epoch in range(5):
        model.set_weights([np.full(w.shape, float(epoch + 1), w.dtype)
                           for w in model.get_weights()])
        other.on_epoch_end(epoch)
        if epoch == 2:
            other.new_best(epoch)
    assert other.epochs == (3, 5)
    for got, want in zip(other.average(), averager.average()):
        np.testing.assert_array_equal(got, want)

    # Fine-tuning starts the mean again from the best epoch's weights (here, epoch 3's).
    averager.start_from([np.full(w.shape, 3.0, w.dtype) for w in model.get_weights()], 2)
    averager.on_epoch_end(5)  # the weights are still epoch 5's, and not a new best
    assert averager.epochs == (3, 4)
    for w in averager.average():
        np.testing.assert_allclose(w, (3 + 5) / 2)


@pytest.mark.slow  # a training run
def test_without_validation_every_example_trains_and_the_last_quarter_is_averaged(
        tmp_path, monkeypatch, capsys):
    from unet_tf import train as train_lib
    from unet_tf.config import ConfigError
    from unet_tf.data import sources
    from unet_tf.evaluate import main as evaluate

    loaded = []
    load_split = sources.load_split
    monkeypatch.setattr(sources, "load_split", lambda config, split, *args, **kwargs: (
        loaded.append(split) or load_split(config, split, *args, **kwargs)))
    recorder = RecordWeights()

    config = preset("quickstart", epochs=8, patience=1, image_size=64, batch_size=8, alpha=0.35,
                    decoder_filters=(16, 16, 16, 16), synthetic_train_examples=16,
                    average_weights=True, validation_fraction=0.25, val_split="none", seed=0)
    run = train_lib.train(config, run_dir=tmp_path / "run", verbose=0, callbacks=[recorder])

    out = capsys.readouterr().out
    assert loaded == ["train"]  # the validation split is never read, and nothing is held out:
    assert "BatchNorm statistics on 16 training examples" in out
    assert "no validation: score the model on photos it never saw" in out
    with open(run / "history.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 8  # every epoch ran, patience 1 notwithstanding
    assert {row["val_loss"] for row in rows} == {"NA"} and "NA" not in {row["loss"] for row in rows}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["averaged_weights"] == {"epochs": [7, 8]} and metrics["validation"] is None
    assert not (run / "best_epoch.keras").exists()
    assert (run / "predictions.png").is_file() and (run / "curves.png").is_file()
    model = keras.models.load_model(run / "model.keras")
    statistic = _is_batch_norm_statistic(model)
    mean = [np.mean([epoch[i] for epoch in recorder.epochs[6:]], axis=0)
            for i in range(len(recorder.epochs[0]))]
    for got, want, is_statistic in zip(model.get_weights(), mean, statistic):
        if not is_statistic:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # Such a model has no validation part to be scored on: evaluate asks for a split, and scores
    # the one it is given.
    assert evaluate(["--model", str(run / "model.keras")]) == 2
    assert "trained without validation" in capsys.readouterr().err
    assert evaluate(["--model", str(run / "model.keras"), "--split", "test",
                     "--json", str(tmp_path / "test.json")]) == 0
    scored = json.loads((tmp_path / "test.json").read_text())
    assert scored["examples"] == config.synthetic_val_examples

    with pytest.raises(ConfigError, match="fine-tuning starts from the best epoch"):
        preset("tutorial", val_split="none", fine_tune_epochs=2)


def test_batch_norm_is_measured_on_batches_that_mix_photos_as_training_does():
    """Tiles of photos of any sizes (--resize none) come shuffled: batches of one photo's tiles
    would measure a variance near 0 for photos that differ from each other but not inside."""
    from types import SimpleNamespace

    from unet_tf.train import _batch_norm_images

    config = preset("quickstart", resize="none", patch_size=32, seed=0)
    levels = (0, 80, 160, 240)  # four flat photos of 64 x 128: 8 tiles of 32 px each
    split = SimpleNamespace(
        streamed=False, images=[np.full((64, 128, 3), v, np.uint8) for v in levels],
        masks=[np.zeros((64, 128), np.uint8)] * 4)
    tiles = _batch_norm_images(config, split)
    assert sorted(int(t[0, 0, 0]) for t in tiles) == sorted(list(levels) * 8)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.BatchNormalization()])
    averaging.reestimate_batch_norm(model, tiles, batch_size=4)
    values = data.normalize(np.array(levels, np.uint8)).numpy()
    mean_in_batches = np.mean([data.normalize(tiles[i:i + 4, 0, 0, 0]).numpy().var()
                               for i in range(0, 32, 4)])
    assert mean_in_batches > 0.5 * values.var()  # in photo order it would be 0
    variance = model.layers[0].moving_variance.numpy()
    assert variance == pytest.approx(np.full(3, mean_in_batches), rel=1e-4)
