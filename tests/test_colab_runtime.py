"""Colab's runtime after the notebook's install: `.ci/run`'s Colab leg builds the runtime as
published (.ci/colab-runtime.txt), saves its `pip freeze` in UNET_TF_COLAB_RUNTIME_FREEZE, installs
this package as the notebook's setup cell does, and runs the suite; these tests check what that
install changed. Elsewhere they skip."""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_packaging import REPO, _requirements

FREEZE = os.environ.get("UNET_TF_COLAB_RUNTIME_FREEZE")
pytestmark = pytest.mark.skipif(
    not FREEZE, reason="on .ci/run's Colab leg only (UNET_TF_COLAB_RUNTIME_FREEZE names the "
                       "runtime's pip freeze from before the install)")
# Colab's GPU build of TensorFlow goes with these: the install must leave them as they are.
KEPT = ("tensorflow", "keras", "numpy", "protobuf")


@pytest.fixture(scope="module")
def before() -> dict:
    """{name: version} of the runtime before the install."""
    return {name: spec.removeprefix("==")
            for name, spec in _requirements(Path(FREEZE).read_text().splitlines()).items()}


def _installed(name: str) -> str:
    return importlib.metadata.version(name)


def test_the_runtime_was_built_as_published(before):
    pins = _requirements((REPO / ".ci" / "colab-runtime.txt").read_text().splitlines())
    assert {name: "==" + before.get(name, "missing") for name in pins} == pins
    assert sys.version_info[:2] == (3, 13)


def test_the_install_moved_none_of_tensorflow_keras_numpy_protobuf(before):
    assert {name: _installed(name) for name in KEPT} == {name: before[name] for name in KEPT}


def test_the_install_moved_tensorflow_metadata_so_that_tensorflow_datasets_imports(before):
    # 1.21 is built for protobuf >= 6.31; with Colab's protobuf 5.29 importing tfds fails
    # (pyproject.toml caps tensorflow-metadata below 1.18 for this).
    assert before["tensorflow-metadata"] == "1.21.0"
    assert _installed("tensorflow-metadata").startswith("1.17.")
    imported = subprocess.run([sys.executable, "-c", "import tensorflow_datasets as tfds; "
                               "print(tfds.__version__)"], capture_output=True, text=True,
                              timeout=600)
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.strip() == before["tensorflow-datasets"]
