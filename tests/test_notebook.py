"""The Colab notebook: stored clean, calls only the package's public notebook API, and runs top to
bottom on a CPU, the pets with its real defaults and the own-data section on a zip of images.

The run keeps the tutorial preset of the notebook's "parameters" cell (the papermill convention) and
shrinks only the sizes (epochs, image size); its data comes through tfds' mock of oxford_iiit_pet
(fake_tfds.py: 16 training and 8 test photos) and its ImageNet encoder from a stand-in weights file
in a temporary KERAS_HOME. Its own-data section trains the own-data preset, with a tiny step budget,
on a zip of 12 ultrasound images of the nerve sample (generated images where the sample is
absent). So every cell runs the code paths it runs on Colab, downloads aside. It executes with
nbclient, in a temporary working folder, on a kernel that runs this interpreter and imports the
unet_tf installed there, as Colab does after the setup cell's install.
"""

import ast
import inspect
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "colab" / "unet_segmentation.ipynb"
INSTALL_URL = "git+https://github.com/unet-tf/unet_tf"
NERVE_SAMPLE = REPO.parent / "shared" / "data" / "nerve-ultrasound-sample"

TESTS = Path(__file__).resolve().parent
# The tutorial preset with only the sizes shrunk (the example counts come from the mock).
TEST_PARAMETERS = """\
PRESET = "tutorial"
OVERRIDES = {"epochs": 1, "image_size": 96}
"""
# The own-data section on a test zip, with a tiny step budget and a slim model.
OWN_DATA_PARAMETERS = """\
OWN_DATA = {zip!r}
OWN_LABELS = "binary"
OWN_OVERRIDES = {{"train_steps": 2, "warmup_epochs": 0, "image_size": 96, "batch_size": 4,
                 "alpha": 0.35, "decoder_filters": (64, 32, 16, 8)}}
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
FIGURE_CELLS = ("data", "model", "train", "results", "evaluate", "own-photo", "own-data",
                "own-results")
MAX_SETUP_LINES = 15


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
    # The own-data section is off until a zip is named.
    assert run_source(code_cell(notebook, "own-data-parameters").source) == {
        "OWN_DATA": "", "OWN_LABELS": "binary", "OWN_OVERRIDES": {}}


def _imports_and_uses(notebook) -> tuple:
    """({module: imported names}, {names used as nb.<name>}) of the notebook's code cells."""
    tree = ast.parse("\n".join(c.source for c in notebook.cells if c.cell_type == "code"))
    imported, used = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.setdefault(node.module, set()).update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            imported.setdefault("", set()).update(a.name for a in node.names)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "nb"):
            used.add(node.attr)
    return imported, used


def test_setup_is_short_and_the_notebook_calls_only_the_public_notebook_api():
    import unet_tf.notebook

    notebook = read_notebook()
    setup = code_cell(notebook, "setup").source
    assert len(setup.splitlines()) <= MAX_SETUP_LINES, setup
    assert INSTALL_URL in setup
    # It keeps Colab's TensorFlow, Keras, NumPy and protobuf by naming their installed versions.
    assert '("tensorflow", "keras", "numpy", "protobuf")' in setup

    imported, used = _imports_and_uses(notebook)
    package = {module: names for module, names in imported.items()
               if module and module.startswith("unet_tf")}
    assert package == {"unet_tf": {"data", "notebook"}, "unet_tf.config": {"preset"},
                       "unet_tf.train": {"train"}, "unet_tf.training": {"build_model"}}, package
    public = unet_tf.notebook.__all__
    assert len(public) <= 8, public
    assert used <= set(public), used - set(public)
    for name in public:
        function = getattr(unet_tf.notebook, name)
        assert not name.startswith("_") and inspect.getdoc(function), name
    # The module docstring shows every one of them.
    assert all(f"nb.{name}(" in unet_tf.notebook.__doc__ for name in public)


def own_data_zip(folder: Path) -> Path:
    """A zip of my_data/images/ and my_data/masks/: 12 ultrasound images of the nerve sample (their
    files as they are), or where it is absent 12 generated grey images with a bright disc each."""
    path = folder / "my_data.zip"
    with zipfile.ZipFile(path, "w") as archive:
        if (NERVE_SAMPLE / "images").is_dir():
            for image in sorted((NERVE_SAMPLE / "images").glob("*.png"))[:12]:
                archive.write(image, f"my_data/images/{image.name}")
                archive.write(NERVE_SAMPLE / "masks" / image.name, f"my_data/masks/{image.name}")
            return path
        rng = np.random.default_rng(0)
        rows, cols = np.mgrid[:120, :140]
        for i in range(12):
            y, x, r = rng.integers(30, 90), rng.integers(30, 110), rng.integers(12, 25)
            mask = ((rows - y) ** 2 + (cols - x) ** 2 < r * r).astype(np.uint8) * 255
            image = (rng.integers(0, 80, (120, 140)) + 0.6 * mask).astype(np.uint8)
            for kind, array in (("images", image), ("masks", mask)):
                png = folder / f"{kind}_{i}.png"
                Image.fromarray(array).save(png)
                archive.write(png, f"my_data/{kind}/{i:04d}.png")
    return path


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
    """A kernel running this interpreter (whatever `python` is on PATH), which finds Keras' weights
    in the stand-in KERAS_HOME."""
    from ipykernel.kernelspec import install
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    prefix = tmp_path / "kernel"
    install(kernel_name="unet-tf-test", prefix=str(prefix),
            env={"KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "2"})
    specs = KernelSpecManager(kernel_dirs=[str(prefix / "share" / "jupyter" / "kernels")])
    assert specs.get_kernel_spec("unet-tf-test").argv[0] == sys.executable
    return KernelManager(kernel_name="unet-tf-test", kernel_spec_manager=specs)


def installed_package(workdir: Path) -> Path:
    """The unet_tf folder this interpreter imports in `workdir`, as the notebook's kernel does."""
    found = subprocess.run([sys.executable, "-c", "import unet_tf; print(unet_tf.__file__)"],
                           cwd=workdir, capture_output=True, text=True, timeout=600)
    if found.returncode:
        pytest.skip("unet_tf is not installed in this interpreter (pip install -e .), so the "
                    "notebook's setup cell would install it from GitHub")
    return Path(found.stdout.strip()).parent


@pytest.mark.slow  # two training runs and two exports in a kernel: over two minutes on 2 cores
def test_notebook_runs_top_to_bottom_with_the_pets_and_own_data(tmp_path, kernel_manager):
    from nbclient import NotebookClient

    notebook = read_notebook()
    parameters_cell(notebook).source = TEST_PARAMETERS
    zip_path = own_data_zip(tmp_path)
    code_cell(notebook, "own-data-parameters").source = OWN_DATA_PARAMETERS.format(
        zip=str(zip_path))
    notebook.cells.insert(0, nbformat.v4.new_code_cell(MOCK_CELL))
    workdir = tmp_path / "work"
    workdir.mkdir()
    package = installed_package(workdir)
    colab_before = sorted(p.name for p in NOTEBOOK.parent.iterdir())

    client = NotebookClient(notebook, km=kernel_manager, timeout=600, startup_timeout=300,
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
    assert f"({package})" in setup, (setup, package)  # the package it imports, wherever it is
    assert "No GPU" in setup or "GPU:" in setup, setup
    parameters = outputs_text(code_cell(notebook, "config"))
    assert "oxford_iiit_pet, 96 px" in parameters and "encoder weights imagenet" in parameters
    assert "train: 16 examples" in outputs_text(code_cell(notebook, "data"))
    model = outputs_text(code_cell(notebook, "model"))
    for line in ("block_1_expand_relu    48x48", "block_16_project       3x3",
                 "up_6_512       3x3 -> 6x6, 512 filters, + block_13_expand_relu", "logits"):
        assert line in model, f"the model cell lacks {line!r}:\n{model}"
    table = outputs_text(code_cell(notebook, "evaluate"))
    for row in ("Dice", "IoU", "pet", "background", "border", "mean", "pixel accuracy"):
        assert row in table, f"evaluation table lacks {row!r}:\n{table}"
    # The tutorial validates on test: the score of test says that test chose the epoch.
    assert "test: 8 examples" in table and "chose the epoch kept" in table, table

    runs = sorted((workdir / "runs").iterdir())
    assert len(runs) == 2, runs
    pets, own = (runs if json.loads((runs[0] / "config.json").read_text())["dataset"]
                 != "folder" else runs[::-1])
    assert sorted(p.name for p in (pets / "previews").iterdir()) == ["epoch_001.png"]
    export = pets / "export"
    assert (export / "saved_model.pb").is_file()
    metadata = json.loads((export / "metadata.json").read_text())
    assert metadata["class_names"] == ["pet", "background", "border"]
    assert metadata["input_size"] == 96
    assert metadata["config"]["encoder_weights"] == "imagenet"
    assert list((pets / "my_predictions").glob("*_overlay.png"))

    # Own data: unpacked from the zip, trained with the own-data preset and its chosen policy,
    # scored at full resolution on the held-out fifth (which says it chose the epoch), exported.
    own_output = outputs_text(code_cell(notebook, "own-data"))
    assert "own data: own_data/my_data/my_data (12 images, 12 masks)" in own_output, own_output
    assert "--resize auto:" in own_output and "--train-steps 2: 1 epochs of 2 steps" in own_output, own_output
    config = json.loads((own / "config.json").read_text())
    assert config["dataset"] == "folder" and config["labels"] == "binary"
    assert config["resize"] in ("squash", "none") and config["train_steps"] == 2
    results = outputs_text(code_cell(notebook, "own-results"))
    assert "foreground vs background: Dice" in results and "chose the epoch kept" in results
    assert "at their own size" in results, results
    assert (own / "export" / "saved_model.pb").is_file()
    # Nothing was written beside the notebook.
    assert sorted(p.name for p in NOTEBOOK.parent.iterdir()) == colab_before


def test_own_data_unpacks_a_zip_and_finds_its_images_and_masks(tmp_path, monkeypatch, capsys):
    from unet_tf import notebook as nb

    monkeypatch.chdir(tmp_path)
    with zipfile.ZipFile(tmp_path / "cells.zip", "w") as archive:
        for name in ("images/a.png", "masks/a.png", "__MACOSX/._a.png"):
            archive.writestr(name, b"x")
    assert nb.own_data(tmp_path / "cells.zip") == Path("own_data/cells")
    assert "own data: own_data/cells (1 images, 1 masks)" in capsys.readouterr().out
    assert not (tmp_path / "own_data" / "cells" / "__MACOSX").exists()
    # A folder is used where it is; nothing given skips the section.
    assert nb.own_data(tmp_path / "own_data") == tmp_path / "own_data" / "cells"
    assert nb.own_data("") is None
    # One folder per image with one mask per object (--labels instance), zipped as it comes.
    with zipfile.ZipFile(tmp_path / "nuclei.zip", "w") as archive:
        for name in ("stage1/n1/images/n1.png", "stage1/n1/masks/o1.png",
                     "stage1/n2/images/n2.png", "stage1/n2/masks/o1.png"):
            archive.writestr(name, b"x")
    assert nb.own_data(tmp_path / "nuclei.zip") == Path("own_data/nuclei/stage1")
    assert "(2 image folders with one mask per object)" in capsys.readouterr().out


@pytest.mark.parametrize("members, message", [
    (["photos/a.png", "labels/a.png"], "no images/ and masks/ folders in it (found: labels, photos)"),
    (["../evil/images/a.png", "masks/a.png"], "refused, it would write outside its folder"),
])
def test_own_data_says_what_is_wrong_with_a_zip(tmp_path, monkeypatch, members, message):
    from unet_tf import notebook as nb
    from unet_tf.data import DataError

    monkeypatch.chdir(tmp_path)
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as archive:
        for name in members:
            archive.writestr(name, b"x")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        nb.own_data(tmp_path / "bad.zip")
    (tmp_path / "notes.txt").write_text("not a zip")
    with pytest.raises(DataError, match="not a zip file"):
        nb.own_data(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="no such file or folder"):
        nb.own_data(tmp_path / "missing.zip")


def test_own_data_refuses_a_zip_larger_than_the_free_disk(tmp_path, monkeypatch):
    import shutil

    from unet_tf import notebook as nb
    from unet_tf.data import DataError

    monkeypatch.chdir(tmp_path)
    with zipfile.ZipFile(tmp_path / "big.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images/a.png", bytes(3 * 2**20))  # 3 MiB of zeros, a few KiB packed
        archive.writestr("masks/a.png", b"x")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(
        10 * 2**20, 9 * 2**20, 2**20))
    with pytest.raises(DataError, match="unpacks to 3 MiB, more than the 1 MiB free here"):
        nb.own_data(tmp_path / "big.zip")
    assert not (tmp_path / "own_data" / "big").exists()
