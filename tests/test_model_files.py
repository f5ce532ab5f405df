"""Model files that could run code are refused before Keras reads them, on every supported Keras
(docs/reliability.md, "Whose files run"): config.json is read against what unet_tf models hold."""

import copy
import json
import tomllib
import zipfile
from pathlib import Path

import keras
import pytest

from unet_tf.config import preset
from unet_tf.run.model_file import ModelFileError, check_model_config, load_model_safely

from tiny import TINY


# A Lambda layer whose function is Keras' own download helper, called by reference: before Keras
# 3.11 safe mode let it run, writing the payload into any folder while the model loaded.
def get_file_lambda(payload, target):
    return {
        "module": "keras.layers", "class_name": "Lambda", "registered_name": None,
        "config": {
            "name": "evil", "trainable": True, "dtype": "float32",
            "function": {"module": "keras.utils", "class_name": "function",
                         "config": "get_file", "registered_name": "function"},
            "arguments": {"origin": f"file://{payload}", "cache_dir": str(target),
                          "cache_subdir": "."},
            "output_shape": [32, 32, 3], "mask": None},
    }


def rewrite_config(path, edit):
    """The .keras archive at `path` with its config.json changed by `edit(config)`."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny U-Net compiled as training compiles it, saved as model.keras."""
    from unet_tf.training import build_model

    path = tmp_path_factory.mktemp("model") / "model.keras"
    build_model(preset("quickstart", **TINY)).save(path)
    return path


def crafted(saved_model, tmp_path, edit):
    path = tmp_path / "evil" / "model.keras"
    path.parent.mkdir()
    path.write_bytes(saved_model.read_bytes())
    rewrite_config(path, edit)
    return path


def add_layer(layer):
    """An edit that adds `layer` to the functional model, called on the model's input."""
    def edit(config):
        inputs = config["config"]["layers"][0]
        entry = dict(copy.deepcopy(layer), name=layer["config"]["name"])
        entry["inbound_nodes"] = [{"args": [{"class_name": "__keras_tensor__", "config": {
            "shape": inputs["config"]["batch_shape"], "dtype": "float32",
            "keras_history": [inputs["name"], 0, 0]}}], "kwargs": {}}]
        config["config"]["layers"].append(entry)
    return edit


def test_a_lambda_calling_get_file_is_refused_by_predict_and_nothing_is_written(
        saved_model, tmp_path, run_python):
    payload = tmp_path / "payload.pth"
    payload.write_text("import os; os.system('echo owned')\n")
    target = tmp_path / "target"
    target.mkdir()
    path = crafted(saved_model, tmp_path, add_layer(get_file_lambda(payload, target)))
    photo = tmp_path / "x.png"
    keras.utils.save_img(photo, [[[0, 0, 0]] * 8] * 8)

    result, _ = run_python(["-m", "unet_tf.predict", "--model", str(path),
                            "--out", str(tmp_path / "o"), str(photo)], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "layer 'evil' is a Lambda layer" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(target.iterdir()) == []  # the payload was never fetched
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("entry, reason", [
    ({"module": "keras.utils", "class_name": "function", "config": "get_file"},
     "calls the function keras.utils.'get_file' by reference"),
    ({"module": "os", "class_name": "system", "config": {"name": "x"}}, "module 'os'"),
    ({"module": "builtins", "class_name": "eval", "config": {}}, "module 'builtins'"),
    ({"module": "keras.layers", "class_name": "TFSMLayer", "config": {"name": "served"}},
     "layer 'served' is a keras.layers.TFSMLayer"),
    ({"module": "keras.layers", "class_name": "Dense", "config": {"name": "d"},
      "registered_name": "evil>Dense"}, "'evil>Dense', which unet_tf does not register"),
    ({"module": "unet_tf.losses", "class_name": "Anything", "config": {"name": "a"},
      "registered_name": "unet_tf>Anything"}, "unet_tf>Anything"),
    ({"module": None, "class_name": "__lambda__", "config": {"code": "..."}}, "Lambda"),
    ({"module": None, "class_name": "__typespec__", "config": {}}, "'__typespec__'"),
])
def test_anything_beyond_what_unet_tf_models_hold_is_refused_by_name(entry, reason):
    model = {"module": "keras", "class_name": "Functional", "config": {"name": "unet", "layers": [
        {"module": "keras.layers", "class_name": "Conv2D",
         "config": {"name": "head", "activation": entry}}]}}
    with pytest.raises(ModelFileError, match="refused, not loaded") as error:
        check_model_config(model, "m.keras")
    assert reason in str(error.value)


@pytest.mark.parametrize("name, settings", [
    ("quickstart", {}),
    ("tutorial", dict(loss="dice_ce", dropout=0.2, weight_decay=0.01)),
    ("small-data", dict(mixed_precision="bfloat16", class_weights=(1.0, 2.0, 3.0))),
    ("quickstart", dict(loss="ce", mixed_precision="on", lr_schedule="cosine")),
])
def test_every_model_the_project_builds_passes_the_check_and_loads(name, settings, tmp_path):
    from unet_tf.training import build_model

    values = dict(TINY, **settings, encoder_weights="none")
    model = build_model(preset(name, **values))
    model.save(tmp_path / "model.keras")
    loaded, info = load_model_safely(tmp_path / "model.keras")
    assert loaded.count_params() == model.count_params()


def test_the_check_runs_before_keras_loads_anything(saved_model, tmp_path, monkeypatch):
    """Whatever Keras would do with a file, it is never asked to read a refused one."""
    calls = []
    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: calls.append(a))
    path = crafted(saved_model, tmp_path, add_layer(
        {"module": "keras.layers", "class_name": "TFSMLayer",
         "config": {"name": "served", "filepath": str(tmp_path)}}))
    with pytest.raises(ModelFileError, match="layer 'served'"):
        load_model_safely(path)
    assert calls == []


def test_the_supported_keras_has_no_known_safe_mode_bypass():
    """The floor of the supported range (pyproject.toml) is where the Lambda-by-reference and
    HDF5 advisories are fixed: 3.13.2, Colab's Keras."""
    version = tuple(int(part) for part in keras.__version__.split(".")[:3])
    assert version >= (3, 13, 2), f"Keras {keras.__version__} is below the supported floor"
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "keras>=3.13.2,<3.16" in project["project"]["dependencies"]
