"""The command line a user meets: every option explained, the presets' values in --help, the
options table in docs/ current, and a run that prints no TensorFlow log noise."""

import argparse
import importlib
import json
import re
from pathlib import Path

import pytest

from unet_tf.config import PRESETS, options_markdown

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "evaluate", "predict", "export", "benchmark")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_of_every_command_has_help(command):
    parser = importlib.import_module(f"unet_tf.{command}").build_parser()
    for action in parser._actions:  # argparse keeps no public list of its actions
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 15, (command, action.dest)
    text = parser.format_help()
    assert "    python -m unet_tf." in text  # the examples, as written
    if command in ("train", "evaluate"):  # their line continuations intact
        assert re.search(r"\S \\\n {8}--", text), text


def test_train_help_shows_choices_defaults_units_and_what_each_preset_sets(capsys):
    from unet_tf.train import build_parser

    text = " ".join(build_parser().format_help().split("options:", 1)[1].split())
    assert "--loss {dice,ce,dice_ce}" in text and "--labels {trimap,binary,index,instance}" in text
    assert "--classes NAME [NAME ...]" in text
    # the default and every preset's value, under the flag
    epochs = text.split("--epochs N ", 1)[1].split("--learning-rate", 1)[0]
    assert "default: 20" in epochs and "quickstart 20" in epochs
    assert f"small-data {PRESETS['small-data']['epochs']}" in epochs
    assert "[degrees]" in text and "[px]" in text  # units


def test_show_config_prints_the_resolved_configuration(capsys, tmp_path):
    from unet_tf.train import main

    path = tmp_path / "run.yaml"
    path.write_text("epochs: 7\n")
    assert main(["--preset", "small-data", "--config", str(path), "--batch-size", "4",
                 "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["epochs"], shown["batch_size"]) == (7, 4)
    assert shown["average_weights"] is PRESETS["small-data"]["average_weights"]
    assert list(tmp_path.iterdir()) == [path]  # nothing run, nothing written


def test_docs_options_table_is_current():
    assert (REPO / "docs" / "options.md").read_text() == options_markdown(), (
        "regenerate it: python -m unet_tf.config > docs/options.md")


LOG_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|retracing|cuInit", re.MULTILINE)


@pytest.mark.slow  # a training run in a new process
def test_a_run_prints_no_tensorflow_log_lines(tmp_path, run_python):
    args = ["-m", "unet_tf.train", "--preset", "quickstart", "--image-size", "32", "--epochs",
            "1", "--synthetic-train-examples", "4", "--synthetic-val-examples", "2",
            "--batch-size", "2", "--alpha", "0.35", "--decoder-filters", "8", "8", "8", "8",
            "--run-dir", str(tmp_path / "run")]
    quiet, _ = run_python(args, cwd=tmp_path, env={"TF_CPP_MIN_LOG_LEVEL": ""})
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert not LOG_LINE.search(quiet.stdout + quiet.stderr), (quiet.stdout + quiet.stderr)[:3000]
    # The same run with UNET_TF_VERBOSE shows them: the check above can fail.
    verbose, _ = run_python(["-c", "import unet_tf, tensorflow as tf; tf.constant(1)"],
                            cwd=tmp_path, env={"TF_CPP_MIN_LOG_LEVEL": "", "UNET_TF_VERBOSE": "1"})
    assert LOG_LINE.search(verbose.stdout + verbose.stderr)
