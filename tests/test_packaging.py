"""The package as installed: one version, the declared requirements in both files, the console
commands."""

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import unet_tf

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "evaluate", "predict", "export", "benchmark")


def _requirements(lines):
    """{name: specifier} of requirement lines, comments and blanks dropped, names normalized."""
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, specifier = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", line).groups()
            found[re.sub(r"[-_.]+", "-", name).lower()] = specifier.replace(" ", "")
    return found


def test_requirements_txt_states_the_bounds_of_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = _requirements(project["dependencies"])
    assert _requirements((REPO / "requirements.txt").read_text().splitlines()) == declared
    for name in ("tensorflow", "keras"):  # the two stacks CI tests are the floor and the ceiling
        assert re.fullmatch(r">=[\d.]+,<[\d.]+", declared[name]), (name, declared[name])
    assert project["requires-python"] == ">=3.11"


def _declared() -> dict:
    return _requirements(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
                         ["dependencies"])


def test_the_floor_stack_is_the_floor():
    pins = _requirements((REPO / ".ci" / "floor-stack.txt").read_text().splitlines())
    declared = _declared()
    for name in ("tensorflow", "keras", "tensorflow-datasets", "tensorflow-metadata"):
        floor = re.match(r">=([\d.]+)", declared[name]).group(1)
        pinned = pins[name].removeprefix("==")
        # the pin is the floor's release (2.19.0 for >=2.19, 4.9.9 for >=4.9.9)
        assert pinned.split(".")[:len(floor.split("."))] == floor.split("."), (name, pinned, floor)


def _within(version: str, specifier: str) -> bool:
    """Whether `version` meets `specifier` of the form '>=A,<B' (release numbers only)."""
    def key(text):
        return tuple(int(part) for part in text.split("."))

    low, high = re.fullmatch(r">=([\d.]+),<([\d.]+)", specifier).groups()
    return key(low) <= key(version) < key(high)


def test_colabs_runtime_is_inside_the_bounds_but_its_tensorflow_metadata_is_not():
    """The notebook keeps Colab's TensorFlow, Keras and tfds: the bounds must admit them. Colab's
    tensorflow-metadata 1.21 breaks tfds with its protobuf 5, so the bounds move it."""
    pins = {name: spec.removeprefix("==") for name, spec in _requirements(
        (REPO / ".ci" / "colab-runtime.txt").read_text().splitlines()).items()}
    declared = _declared()
    for name in ("tensorflow", "keras", "tensorflow-datasets"):
        assert _within(pins[name], declared[name]), (name, pins[name], declared[name])
    assert not _within(pins["tensorflow-metadata"], declared["tensorflow-metadata"])
    assert pins["protobuf"].startswith("5.")


def test_one_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("unet_tf") == unet_tf.__version__


def test_console_commands_are_installed():
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")
               if e.name.startswith("unet-tf-")}
    assert scripts == {f"unet-tf-{c}": f"unet_tf.{c}:main" for c in COMMANDS}
    executable = shutil.which("unet-tf-train", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.skip("console scripts are not beside this Python (not installed with pip)")
    process = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=120)
    assert process.returncode == 0 and "unet-tf-train" in process.stdout


def test_license_text_ships():
    assert "Apache License" in (REPO / "LICENSE").read_text()
    metadata = importlib.metadata.metadata("unet_tf")
    assert metadata["License-Expression"] == "Apache-2.0"
    assert set(metadata.get_all("License-File")) == {"LICENSE", "NOTICE"}
