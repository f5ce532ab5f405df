"""The Colab notebook: stored clean, and runs top to bottom with its real defaults on a CPU.

The run keeps the tutorial preset of the notebook's "parameters" cell (the papermill convention) and
shrinks only the sizes (epochs, image size); its data comes through tfds' mock of oxford_iiit_pet
(fake_tfds.py: 16 training and 8 test photos) and its ImageNet encoder from a stand-in weights file
in a temporary KERAS_HOME. So every cell runs the code paths it runs on Colab, download aside. It
executes with nbclient, in a temporary working folder, on a kernel that runs this interpreter.
"""

import json
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "colab" / "unet_segmentation.ipynb"
REPO_URL = "https://github.com/unet-tf/unet_tf"

TESTS = Path(__file__).resolve().parent
# The tutorial preset with only the sizes shrunk (the example counts come from the mock).
TEST_PARAMETERS = """\
PRESET = "tutorial"
OVERRIDES = {"epochs": 1, "image_size": 96}
"""
# Run before the notebook's first cell, in its kernel: tfds serves the mock (the download is the
# only thing replaced).
MOCK_CELL = f"""\
import sys
sys.path.insert(0, {str(TESTS)!r})
from fake_tfds import mock_oxford_iiit_pet
_mock = mock_oxford_iiit_pet({{"train": 16, "test": 8}})
_mock.__enter__()
"""
# Cells (by id) that must show a picture.
FIGURE_CELLS = ("data", "model", "curves", "predictions", "evaluate", "own-photo")


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cell(notebook, cell_id):
    return next(c for c in notebook.cells if c.get("id") == cell_id and c.cell_type == "code")


def parameters_cell(notebook):
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def outputs_text(cell, name="stdout"):
    return "".join(o.get("text", "") for o in cell.outputs
                   if o.output_type == "stream" and o.name == name)


def run_source(source):
    values = {}
    exec(source, values)
    return {k: v for k, v in values.items() if k.isupper()}


def test_notebook_is_stored_clean_and_defaults_to_the_full_run():
    notebook = read_notebook()
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id

    source = parameters_cell(notebook).source
    assert run_source(source) == {"PRESET": "tutorial", "OVERRIDES": {}}
    # The comment under "as tests/test_notebook.py runs this notebook" shows what this test runs.
    lines = source.split("tests/test_notebook.py", 1)[1].splitlines()[1:]
    shown = "\n".join(line[1:].strip() for line in lines if line.startswith("#    "))
    assert run_source(shown) == run_source(TEST_PARAMETERS)
    assert f'REPO_URL = "{REPO_URL}"' in code_cell(notebook, "setup").source


@pytest.fixture()
def keras_home(tmp_path):
    """A KERAS_HOME holding a stand-in for the ImageNet weights the tutorial preset downloads."""
    import keras

    from unet_tf.model import imagenet_weights_file

    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    keras.utils.set_random_seed(3)
    stand_in = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False,
                                              weights=None, alpha=1.0)
    stand_in.save(home / "models" / imagenet_weights_file(1.0, 96))
    return home


@pytest.fixture()
def kernel_manager(tmp_path, keras_home):
    """A kernel running this interpreter (whatever `python` is on PATH), which finds the checkout
    through UNET_TF_CHECKOUT and Keras' weights in the stand-in KERAS_HOME."""
    from ipykernel.kernelspec import install
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    prefix = tmp_path / "kernel"
    install(kernel_name="unet-tf-test", prefix=str(prefix),
            env={"UNET_TF_CHECKOUT": str(REPO), "KERAS_HOME": str(keras_home),
                 "TF_CPP_MIN_LOG_LEVEL": "2"})
    specs = KernelSpecManager(kernel_dirs=[str(prefix / "share" / "jupyter" / "kernels")])
    assert specs.get_kernel_spec("unet-tf-test").argv[0] == sys.executable
    return KernelManager(kernel_name="unet-tf-test", kernel_spec_manager=specs)


def test_notebook_runs_the_tutorial_preset_top_to_bottom(tmp_path, kernel_manager):
    from nbclient import NotebookClient

    notebook = read_notebook()
    parameters_cell(notebook).source = TEST_PARAMETERS
    notebook.cells.insert(0, nbformat.v4.new_code_cell(MOCK_CELL))
    workdir = tmp_path / "work"
    workdir.mkdir()
    colab_before = sorted(p.name for p in NOTEBOOK.parent.iterdir())

    client = NotebookClient(notebook, km=kernel_manager, timeout=300, startup_timeout=120,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()

    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None, f"cell {cell.id} did not run"
            errors = [o for o in cell.outputs if o.output_type == "error"]
            assert not errors, f"cell {cell.id}: {errors[0].ename}: {errors[0].evalue}"

    for cell_id in FIGURE_CELLS:
        pictures = [o for o in code_cell(notebook, cell_id).outputs if "image/png" in o.get("data", {})]
        assert pictures, f"cell {cell_id} showed no picture"

    setup = outputs_text(code_cell(notebook, "setup"))
    assert f"({REPO / 'unet_tf'})" in setup, setup  # the checkout's code, not an installed copy
    assert "No GPU" in setup or "GPU:" in setup, setup
    parameters = outputs_text(code_cell(notebook, "config"))
    assert "oxford_iiit_pet, 96 px" in parameters and "encoder weights imagenet" in parameters
    assert "train: 16 examples" in outputs_text(code_cell(notebook, "data"))
    table = outputs_text(code_cell(notebook, "evaluate"))
    for row in ("Dice", "IoU", "pet", "background", "border", "mean", "pixel accuracy"):
        assert row in table, f"evaluation table lacks {row!r}:\n{table}"

    runs = list((workdir / "runs").iterdir())
    assert len(runs) == 1, runs
    export = runs[0] / "export"
    assert (export / "saved_model.pb").is_file()
    metadata = json.loads((export / "metadata.json").read_text())
    assert metadata["class_names"] == ["pet", "background", "border"]
    assert metadata["input_size"] == 96
    assert metadata["config"]["encoder_weights"] == "imagenet"
    assert list((runs[0] / "my_predictions").glob("*_overlay.png"))
    # Nothing was written beside the notebook.
    assert sorted(p.name for p in NOTEBOOK.parent.iterdir()) == colab_before
