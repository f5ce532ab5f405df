"""The run's record of itself: history.csv numbers epochs from 1 as metrics.json and the curves do,
train.log keeps what the run printed (progress bars as their last state, appended to by --resume),
and curves.png shows each class's Dice and says when training was still improving."""

import csv
import io
import json
import sys

import numpy as np
import pytest
from matplotlib.text import Text

from unet_tf import plots
from unet_tf.config import preset
from unet_tf.run.log import TrainLog

from tiny import TINY, StopAtEpoch

TRIMAP = ["pet", "background", "border"]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A run of 3 epochs with Keras' progress bars (verbose 1), stopped (Ctrl-C) as its second
    epoch began, then finished with `--resume` (one line per epoch: standard output is no
    terminal). Returns (run folder, train.log as the stopped run left it)."""
    from unet_tf.train import main, train

    run = tmp_path_factory.mktemp("resumed") / "run"
    streams = sys.stdout, sys.stderr
    with pytest.raises(KeyboardInterrupt):
        train(preset("quickstart", epochs=3, **TINY), run_dir=run, verbose=1,
              callbacks=[StopAtEpoch(2)])
    assert (sys.stdout, sys.stderr) == streams  # put back, even after Ctrl-C
    stopped = (run / "train.log").read_text()
    assert main(["--resume", str(run)]) == 0
    return run, stopped


def _rows(run):
    with open(run / "history.csv", newline="") as file:
        return list(csv.DictReader(file))


def _epoch_lines(log: str) -> list:
    """Keras' line of each epoch (its progress bar's last state, or the line of verbose 2)."""
    return [line for line in log.splitlines() if "val_dice:" in line]


def test_history_numbers_epochs_from_1_as_metrics_json_does(tiny_run):
    rows = _rows(tiny_run)
    assert [int(row["epoch"]) for row in rows] == [1]
    assert json.loads((tiny_run / "metrics.json").read_text())["best_epoch"] == 1


@pytest.mark.slow  # the run stopped and resumed (`resumed`)
def test_history_numbering_goes_on_after_resume_and_agrees_with_the_best_epoch(resumed):
    run, _ = resumed
    rows = _rows(run)
    report = json.loads((run / "metrics.json").read_text())
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3] and report["epochs_run"] == 3
    best_row = max(rows, key=lambda row: float(row["val_dice"]))  # the first on a tie, as Keras
    assert int(best_row["epoch"]) == report["best_epoch"]


def test_train_log_holds_the_plan_the_summary_and_the_files(tiny_run):
    log = (tiny_run / "train.log").read_text()
    lines = log.splitlines()
    assert lines[0].startswith("=== run started ")
    assert lines[1] == "what this run will do:"  # printed before the run folder existed
    assert f"run folder: {tiny_run}" in lines
    assert any(line.startswith("best epoch 1, 1 epochs") for line in lines)
    # a one-epoch run's best epoch is its last
    assert f"the best epoch is the last one: {plots.STILL_IMPROVING}" in lines
    assert f"  {tiny_run / 'train.log'}" in lines


@pytest.mark.slow  # the run stopped and resumed (`resumed`)
def test_train_log_keeps_each_progress_bar_as_one_line(resumed):
    _, stopped = resumed
    assert "\r" not in stopped and "\b" not in stopped and "\x1b" not in stopped
    assert "what this run will do:" in stopped and "Epoch 1/3" in stopped
    (epoch_1,) = _epoch_lines(stopped)  # hundreds of redraws in a terminal, one line here
    assert epoch_1.startswith("1/2 ") or epoch_1.startswith("2/2 ")
    # the run's last words: the message to the terminal, then how it ended
    assert "interrupted: 1 epoch(s) completed and saved; continue with" in stopped
    assert stopped.splitlines()[-1] == "stopped: interrupted (Ctrl-C or SIGTERM)"


@pytest.mark.slow  # the run stopped and resumed (`resumed`)
def test_train_log_is_appended_to_on_resume(resumed):
    run, stopped = resumed
    log = (run / "train.log").read_text()
    assert log.startswith(stopped)  # the first run's lines stay as they were
    added = log[len(stopped):].splitlines()
    header = next(i for i, line in enumerate(added) if line)
    assert added[header].startswith("=== run resumed ")
    assert added[header].endswith(", after epoch 1 ===")
    assert added[header + 1] == "what this run will do:"
    assert f"resuming {run} after epoch 1" in added
    assert len(_epoch_lines("\n".join(added))) == 2  # epochs 2 and 3
    assert "Epoch 2/3" in added and "Epoch 3/3" in added
    assert any(line.startswith("best epoch ") and ", 3 epochs (" in line for line in added)
    assert "\r" not in log and "\b" not in log


class _Notebook(io.StringIO):
    """A stream as a notebook's: no terminal, attributes of its own."""

    encoding = "utf-8"
    echo = None

    def isatty(self):
        return False

    def fileno(self):
        return 42


def test_train_log_leaves_the_streams_as_they_were(tmp_path, monkeypatch):
    out, err = _Notebook(), _Notebook()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    with pytest.raises(ValueError):
        with TrainLog() as log:
            print("held until the folder is known")
            assert sys.stdout is not out
            assert (sys.stdout.isatty(), sys.stdout.fileno(), sys.stdout.encoding,
                    sys.stdout.echo) == (False, 42, "utf-8", None)
            log.open(tmp_path)
            sys.stdout.write("step 1/2\rstep 2/2 - loss 0.5")
            sys.stdout.write("\b" * 30 + "\rstep 2/2 - loss 0.4\n")
            print("a warning", file=sys.stderr)
            raise ValueError("broken")
    assert (sys.stdout, sys.stderr) == (out, err)
    assert out.getvalue().startswith("held until the folder is known\nstep 1/2\r")  # unchanged
    assert err.getvalue() == "a warning\n"
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert lines[1:4] == ["held until the folder is known", "step 2/2 - loss 0.4", "a warning"]
    assert "Traceback (most recent call last):" in lines
    assert lines[-1] == "error: ValueError: broken"


def _history(epochs: int, best: int, validation: bool = True) -> dict:
    """A history of `epochs` epochs whose validation mean Dice peaks at `best`."""
    dice = list(0.8 - 0.1 * np.abs(np.arange(1, epochs + 1) - best))
    history = {"loss": list(np.linspace(1, 0.5, epochs)), "dice": dice}
    history.update({f"dice_{name}": dice for name in sorted(TRIMAP)})  # as history.csv has them
    if validation:
        history.update({"val_loss": history["loss"], "val_dice": dice})
        history.update({f"val_dice_{name}": dice for name in sorted(TRIMAP)})
    return history


def _texts(figure) -> list:
    return [text.get_text() for text in figure.findobj(Text)]


def test_curves_show_each_class_in_a_panel_of_its_own():
    figure = plots.curves_figure(_history(4, best=2), best=2, class_names=TRIMAP)
    assert len(figure.axes) == 3
    panel = figure.axes[2]
    assert panel.get_title() == "Dice per class (validation)"
    assert [line.get_label() for line in panel.get_lines()][:3] == TRIMAP  # in class order
    colors = [np.round(np.array(line.get_color()) * 255) for line in panel.get_lines()[:3]]
    np.testing.assert_array_equal(colors, plots.class_colors(TRIMAP))  # as in the mask pictures
    assert not any(plots.STILL_IMPROVING in text for text in _texts(figure))

    unvalidated = plots.curves_figure(_history(4, best=2, validation=False))
    assert unvalidated.axes[2].get_title() == "Dice per class (train)"
    assert [line.get_label() for line in unvalidated.axes[2].get_lines()] == sorted(TRIMAP)


def test_curves_say_when_the_best_epoch_is_the_last():
    figure = plots.curves_figure(_history(4, best=4), best=4, class_names=TRIMAP)
    assert any(plots.STILL_IMPROVING in text for text in _texts(figure))
