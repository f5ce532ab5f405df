"""Help that helps: every command's --help shows its options in groups and examples that run as
written (each parsed by its own command's parser; a training example's configuration checks out and
starts from a preset), the README's and docs' commands parse too, and no text a user reads names
this project's development data (../shared), a path users do not have."""

import importlib
import re
import shlex
from pathlib import Path

import pytest

from unet_tf.config import config_from_args

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "evaluate", "predict", "export", "benchmark")
GROUPS = ("data", "model", "training", "hardware", "output")  # of the options, in --help's order
COMMAND = re.compile(r"python -m unet_tf\.(\w+)([^&|;\n]*)")
USER_FACING = ("unet_tf", "README.md", "docs", "colab")
DEVELOPMENT_DATA = ("../shared", "shared/data")


def parser_of(command: str):
    return importlib.import_module(f"unet_tf.{command}").build_parser()


def help_examples(text: str) -> list:
    """(command, argv) of every example line of a --help text (`    python -m unet_tf.X ...`),
    with its continuation lines and without its comment."""
    lines = text.replace("\\\n", " ").splitlines()
    return [(match[1], shlex.split(match[2], comments=True))
            for match in (COMMAND.match(line.strip()) for line in lines
                          if re.match(r"\s+python -m unet_tf\.", line)) if match]


def markdown_commands(text: str) -> list:
    """(command, argv) of every `python -m unet_tf.X` in a markdown text's ```bash blocks."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    return [(match[1], shlex.split(match[2], comments=True))
            for block in blocks for match in COMMAND.finditer(block.replace("\\\n", " "))]


def check_parses(command: str, argv: list, capsys):
    """The namespace `command`'s own parser makes of `argv`; a failure names the command line."""
    try:
        args = parser_of(command).parse_args(argv)
    except SystemExit:
        pytest.fail(f"python -m unet_tf.{command} {shlex.join(argv)}: "
                    f"{capsys.readouterr().err.strip()}")
    if command == "train" and not args.resume and not args.config:
        config_from_args(args)  # the configuration itself checks out
    return args


@pytest.mark.parametrize("command", COMMANDS)
def test_every_example_of_every_command_runs_as_written(command, capsys):
    examples = help_examples(parser_of(command).format_help())
    assert len(examples) >= 2, examples
    for name, argv in examples:
        assert name == command, (name, argv)  # a command's help shows its own command
        args = check_parses(name, argv, capsys)
        if name == "train":
            # Training examples start from the presets the README recommends, never a recipe of
            # loose flags (the own-data one measured at Dice 0.106 in docs/own-data.md).
            assert args.resume or "--preset" in argv, argv
            if not args.resume and config_from_args(args).dataset == "folder":
                assert args.preset == "own-data", argv


@pytest.mark.parametrize("page", ["README.md", *sorted(f"docs/{p.name}"
                                                   for p in (REPO / "docs").glob("*.md"))])
def test_the_commands_of_the_readme_and_docs_parse(page, capsys):
    for name, argv in markdown_commands((REPO / page).read_text()):
        check_parses(name, argv, capsys)


def test_train_help_shows_its_options_in_groups():
    text = parser_of("train").format_help()
    sections = {title: body for title, body in re.findall(r"^(\w+):\n(.*?)(?=^\w+:\n|\Z)", text,
                                                         re.MULTILINE | re.DOTALL)}
    assert [t for t in sections if t in GROUPS] == list(GROUPS), list(sections)
    for flag, title in (("--data-dir", "data"), ("--labels", "data"), ("--alpha", "model"),
                        ("--epochs", "training"), ("--seed", "training"), ("--xla", "hardware"),
                        ("--strategy", "hardware"), ("--run-dir", "output")):
        assert re.search(rf"^  {flag} ", sections[title], re.MULTILINE), (flag, title)
    # Outside the groups: help and what chooses the configuration or the run.
    assert re.findall(r"^  (-[-\w]+)", sections["options"], re.MULTILINE) == [
        "-h", "--resume", "--dry-run", "--show-config", "--preset", "--config"]


@pytest.mark.parametrize("command", ("evaluate", "predict", "export", "benchmark"))
def test_every_option_of_the_other_commands_is_in_a_group(command):
    parser = parser_of(command)
    groups = {group.title: [action.dest for action in group._group_actions]  # no public list
              for group in parser._action_groups if group._group_actions}
    assert groups.pop("options") == ["help"], groups
    assert set(groups) <= set(GROUPS) | {"inference"}, groups
    text = parser.format_help()
    assert all(f"\n{title}:\n" in text for title in groups), text


def test_no_user_facing_text_names_the_development_data():
    """Help, docstrings and messages (unet_tf/), the README, docs/ and the notebook name the
    user's own paths (e.g. data/oxford-iiit-pet), not where this project keeps its samples."""
    files = [path for name in USER_FACING for path in
             ((REPO / name).rglob("*") if (REPO / name).is_dir() else [REPO / name])
             if path.is_file() and "__pycache__" not in path.parts]
    assert len(files) > 20, files
    found = [f"{path.relative_to(REPO)}: {text}" for path in files
             for text in DEVELOPMENT_DATA if text.encode() in path.read_bytes()]
    assert not found, "\n".join(found)


def test_readme_says_how_to_get_a_local_copy_of_oxford_iiit_pet():
    text = (REPO / "README.md").read_text()
    assert "https://www.robots.ox.ac.uk/~vgg/data/pets/" in text
    assert "images.tar.gz" in text and "annotations.tar.gz" in text
    assert "--data-dir data/oxford-iiit-pet" in text
