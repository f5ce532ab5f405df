"""The configuration: presets, validation, config files and flags, and the config.json round trip."""

import argparse
import dataclasses
import json
import re

import pytest

from unet_tf.config import (
    PRESETS,
    Config,
    ConfigError,
    add_config_flags,
    config_from_args,
    preset,
)


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return config_from_args(parser.parse_args(list(argv)))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_its_model(name):
    """Each preset's values go together: its model builds (from random weights, offline) with the
    input size, classes and decoder the preset says."""
    from unet_tf.training import build_model

    needs_folder = PRESETS[name].get("dataset") == "folder"
    config = preset(name, **({"data_dir": "my_data"} if needs_folder else {}))
    model = build_model(dataclasses.replace(config, encoder_weights="none"))
    assert model.output_shape == (None, config.image_size, config.image_size, config.num_classes)
    up_blocks = [layer for layer in model.layers if layer.name.startswith("up_")]
    assert [block.layers[0].filters for block in up_blocks] == list(config.decoder_filters)


def test_tutorial_preset_has_the_tutorial_values():
    config = preset("tutorial")
    assert config.dataset == "oxford_iiit_pet"
    assert config.image_size == 128
    assert config.batch_size == 64
    assert config.epochs == 20
    assert config.optimizer == "adam"
    assert config.learning_rate == 1e-3
    assert config.shuffle_buffer == 1000
    assert config.encoder_weights == "imagenet"
    assert config.freeze_encoder is None  # "auto": frozen exactly when pretrained
    assert config.pretrained is True
    assert (config.train_split, config.val_split) == ("train", "test")
    assert config.class_names == ("pet", "background", "border")
    assert config.num_classes == 3


def test_own_data_preset_reads_a_folder_of_binary_masks():
    """The README's own-data command: a folder, binary masks unless --labels says otherwise, and
    small-data's recipe with validation carved from the training images."""
    config = parse("--preset", "own-data", "--data-dir", "my_data")
    assert (config.dataset, config.labels, config.data_dir) == ("folder", "binary", "my_data")
    assert config.validation_fraction == 0.2 and config.encoder_weights == "none"
    indexed = parse("--preset", "own-data", "--data-dir", "my_data", "--labels", "index",
                    "--classes", "background", "road", "building")
    assert indexed.class_names == ("background", "road", "building")
    with pytest.raises(ConfigError, match="needs data_dir"):
        parse("--preset", "own-data")
    # The preset's length is in steps; epochs given later win, and steps given with them stay.
    assert (config.train_steps, config.resize) == (2400, "auto")
    assert parse("--preset", "own-data", "--data-dir", "d", "--epochs", "50").train_steps == 0
    assert preset("own-data", data_dir="d", epochs=50).train_steps == 0
    both = parse("--preset", "own-data", "--data-dir", "d", "--epochs", "8", "--train-steps", "9")
    assert (both.epochs, both.train_steps) == (8, 9)
    # Fewer steps on native-resolution patches, unless the length is given.
    assert config.patch_train_steps == 1200
    assert both.patch_train_steps == 0
    assert parse("--preset", "own-data", "--data-dir", "d", "--train-steps", "3000"
                 ).patch_train_steps == 0
    assert preset("own-data", data_dir="d", epochs=50).patch_train_steps == 0
    assert parse("--preset", "own-data", "--data-dir", "d", "--train-steps", "3000",
                 "--patch-train-steps", "900").patch_train_steps == 900


def test_quickstart_preset_is_offline_and_small():
    config = preset("quickstart", epochs=2)
    assert config.dataset == "synthetic"
    assert config.encoder_weights == "none" and config.pretrained is False
    assert config.epochs == 2  # overrides win over the preset
    assert config.image_size == 96 and config.alpha == 0.35


@pytest.mark.parametrize("labels,dataset,classes,expected", [
    ("trimap", "oxford_iiit_pet", None, ("pet", "background", "border")),
    ("binary", "synthetic", None, ("background", "pet")),
    ("binary", "folder", None, ("background", "foreground")),
    ("index", "folder", ("sky", "road", "car", "tree"), ("sky", "road", "car", "tree")),
])
def test_class_names(labels, dataset, classes, expected):
    config = Config(labels=labels, dataset=dataset, classes=classes,
                    data_dir="x" if dataset == "folder" else "")
    assert config.class_names == expected
    assert config.num_classes == len(expected)


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="fastest"):
        preset("fastest")


def test_unknown_key_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="image_sise"):
        Config.from_dict({"image_sise": 64})
    with pytest.raises(ConfigError, match="lr"):
        preset("quickstart", lr=0.1)


@pytest.mark.parametrize("values,named", [
    ({"image_size": 100}, "image_size=100"),
    ({"image_size": 16}, "image_size=16"),
    ({"epochs": 0}, "epochs=0"),
    ({"batch_size": -1}, "batch_size=-1"),
    ({"dataset": "imagenet"}, "dataset='imagenet'"),
    ({"loss": "focal"}, "loss='focal'"),
    ({"optimizer": "sgd"}, "optimizer='sgd'"),
    ({"labels": "rgb"}, "labels='rgb'"),
    ({"learning_rate": 0.0}, "learning_rate=0.0"),
    ({"validation_fraction": 1.0}, "validation_fraction=1.0"),
    ({"dropout": 1.5}, "dropout=1.5"),
    ({"alpha": 0}, "alpha=0"),
    ({"decoder_filters": (8, 8, 8)}, "decoder_filters=(8, 8, 8)"),
    ({"decoder_filters": (8, 8, 0, 8)}, "decoder_filters=(8, 8, 0, 8)"),
    ({"encoder_bn_momentum": 1.0}, "encoder_bn_momentum=1.0"),
    ({"class_weights": (1.0, 2.0)}, "class_weights=(1.0, 2.0)"),
    ({"seed": -1}, "seed=-1"),
    ({"seed": 2**31}, f"seed={2**31}"),
    ({"labels": "index"}, "needs classes"),
    ({"dataset": "folder", "labels": "binary"}, "needs data_dir"),
    ({"dataset": "folder", "data_dir": "d"}, "labels='trimap'"),
    ({"classes": ("a", "b")}, "classes=('a', 'b')"),
])
def test_bad_values_are_config_errors(values, named):
    with pytest.raises(ConfigError) as error:
        Config.from_dict(values)
    assert named in str(error.value)


def test_all_errors_are_reported_at_once():
    with pytest.raises(ConfigError) as error:
        Config(image_size=100, epochs=0, batch_size=-1)
    message = str(error.value)
    assert "image_size=100" in message and "multiple of 32" in message
    assert "epochs=0" in message and "batch_size=-1" in message


# --- files and flags ---------------------------------------------------------------------------


def test_json_config_file_over_preset_and_flags_over_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"image_size": 64, "epochs": 3, "decoder_filters": [8, 8, 8, 8],
                                "learning_rate": 0.01}))
    config = parse("--preset", "quickstart", "--config", str(path), "--epochs", "5")
    assert config.epochs == 5  # flag beats file
    assert config.image_size == 64  # file beats preset (96)
    assert config.learning_rate == 0.01  # file beats preset (2e-3)
    assert config.decoder_filters == (8, 8, 8, 8)  # lists become tuples
    assert config.batch_size == 16  # preset beats default (64)
    assert config.dataset == "synthetic"


def test_yaml_config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("image_size: 64\nepochs: 3\nbatch_size: 4\nclass_weights: [1.0, 0.5, 2.0]\n"
                    "learning_rate: 0.005\naugment: false\n")
    config = parse("--preset", "quickstart", "--config", str(path), "--batch-size", "2")
    assert (config.image_size, config.epochs, config.batch_size) == (64, 3, 2)
    assert config.class_weights == (1.0, 0.5, 2.0)
    assert config.learning_rate == 0.005
    assert config.augment is False
    assert config.alpha == 0.35  # untouched preset value


def test_unknown_key_in_a_config_file_is_named(tmp_path):
    path = tmp_path / "run.yml"
    path.write_text("image_size: 64\nepochz: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        parse("--config", str(path))


def test_missing_or_malformed_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        parse("--config", str(tmp_path / "absent.yaml"))
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        parse("--config", str(path))


def test_values_given_by_a_file_are_validated(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"image_size": 100}))
    with pytest.raises(ConfigError, match="image_size=100"):
        parse("--config", str(path))


@pytest.mark.parametrize("text,field,expected", [
    ("learning_rate: 1e-3\n", "learning_rate", 0.001),
    ("epochs: '5'\n", "epochs", 5),
])
def test_config_file_values_are_converted_to_the_field_types(tmp_path, text, field, expected):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    config = parse("--preset", "quickstart", "--config", str(path))
    assert getattr(config, field) == expected


@pytest.mark.parametrize("text,message", [
    ("epochs: many\n", "epochs='many'"),
    ("augment: 3\n", "augment=3"),
    ("epochs: 2.5\n", "epochs=2.5"),
    ("decoder_filters: 16\n", "decoder_filters=16"),
])
def test_config_file_values_of_the_wrong_type_are_named(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse("--preset", "quickstart", "--config", str(path))


@pytest.mark.parametrize("flags,freeze", [((), None), (("--freeze-encoder",), True),
                                          (("--no-freeze-encoder",), False)])
def test_freeze_encoder_flag(flags, freeze):
    assert parse(*flags).freeze_encoder is freeze


def test_list_flags():
    config = parse("--decoder-filters", "8", "8", "8", "8", "--class-weights", "1", "2.5", "1")
    assert config.decoder_filters == (8, 8, 8, 8)
    assert all(type(f) is int for f in config.decoder_filters)
    assert config.class_weights == (1.0, 2.5, 1.0)
    config = parse("--dataset", "folder", "--data-dir", "d", "--labels", "index",
                   "--classes", "sky", "road", "car")
    assert config.classes == ("sky", "road", "car") and config.num_classes == 3


def test_scalar_and_boolean_flags():
    config = parse("--preset", "quickstart", "--image-size", "64", "--learning-rate", "0.01",
                   "--no-augment", "--encoder-bn-momentum", "0.95", "--validation-fraction", "0.2")
    assert config.image_size == 64 and config.learning_rate == 0.01
    assert config.augment is False
    assert config.encoder_bn_momentum == 0.95
    assert config.validation_fraction == 0.2
    assert parse().augment is True


def test_bad_flag_value_is_a_config_error():
    with pytest.raises(ConfigError, match="image_size=100"):
        parse("--image-size", "100")
    with pytest.raises(SystemExit):  # argparse rejects non-integers itself
        parse("--image-size", "big")


def test_config_json_round_trip(tmp_path):
    config = preset("quickstart", image_size=64, class_weights=(1.0, 0.5, 2.0),
                    freeze_encoder=False, decoder_filters=(8, 16, 24, 32), dropout=0.1,
                    encoder_bn_momentum=0.95, validation_fraction=0.25, seed=7)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict(), indent=2))  # what a run folder holds
    saved = json.loads(path.read_text())
    assert saved["image_size"] == 64 and saved["decoder_filters"] == [8, 16, 24, 32]
    assert saved["freeze_encoder"] is False and saved["classes"] is None
    assert Config.load(path) == config
    assert Config.load(path).decoder_filters == (8, 16, 24, 32)
