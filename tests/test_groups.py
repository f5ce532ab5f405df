"""--group-by: validation holds out whole groups of photos (a patient's, a breed's), never part of
one, on every source: a folder, a local Oxford-IIIT Pet copy and oxford_iiit_pet through tfds."""

import numpy as np
import pytest
from fake_tfds import mock_oxford_iiit_pet
from PIL import Image

from unet_tf import data
from unet_tf.config import Config, ConfigError, config_from_args
from unet_tf.data import sources, synthetic
from unet_tf.images import write_png

PATIENT = r"patient(\d+)"
TINY = dict(encoder_weights="none", image_size=32, alpha=0.35, decoder_filters=(16, 16, 16, 16))


def _side_groups(config, train, val):
    return (set(data.example_groups(config, train.names)),
            set(data.example_groups(config, val.names)))


def _check_split(config, train, val, total):
    """No group on both sides, nothing lost, the held-out photos within one group's size of the
    fraction, and planned_sizes counting what load_splits carved."""
    train_groups, val_groups = _side_groups(config, train, val)
    assert train_groups and val_groups and not train_groups & val_groups
    assert len(train) + len(val) == total and not set(train.names) & set(val.names)
    groups = data.example_groups(config, train.names + val.names)
    largest = max(groups.count(g) for g in set(groups))
    assert abs(len(val) - config.validation_fraction * total) <= largest
    assert data.planned_sizes(config)[:2] == (len(train), len(val))


# --- choosing the groups ----------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5, 0.9])
def test_whole_groups_near_the_fraction(fraction):
    rng = np.random.default_rng(0)
    for _ in range(20):
        count = int(rng.integers(2, 30))
        groups = [f"g{g}" for g in range(count) for _ in range(int(rng.integers(1, 40)))]
        held = sources.group_validation_part(groups, fraction)
        held_groups = {g for g, h in zip(groups, held) if h}
        kept_groups = {g for g, h in zip(groups, held) if not h}
        assert held_groups and kept_groups and not held_groups & kept_groups  # 1 <= held < all
        largest = max(groups.count(g) for g in set(groups))
        assert abs(held.sum() - fraction * len(groups)) <= largest


def test_same_groups_whatever_the_order():
    sizes = {f"breed{i}": 10 + 7 * i % 13 for i in range(12)}
    first = sources.held_out_groups(sizes, 0.2 * sum(sizes.values()))
    again = sources.held_out_groups(dict(reversed(list(sizes.items()))), 0.2 * sum(sizes.values()))
    assert first == again
    # close: 37 breeds of about 100 photos reach 20% within a few photos
    breeds = {f"b{i}": 90 + (i * 37) % 21 for i in range(37)}
    target = 0.2 * sum(breeds.values())
    assert abs(sum(breeds[b] for b in sources.held_out_groups(breeds, target)) - target) < 10


def test_breed_names_the_breed_of_oxford_stems():
    config = Config(group_by="breed", validation_fraction=0.2)
    assert data.example_groups(config, ["Abyssinian_34", "american_bulldog_10",
                                        "Abyssinian_1.jpg", "great_pyrenees_7"]) == [
        "Abyssinian", "american_bulldog", "Abyssinian", "great_pyrenees"]


def test_a_capturing_group_or_else_the_whole_match():
    config = Config(group_by=PATIENT, validation_fraction=0.2)
    assert data.example_groups(config, ["patient07_a", "x_patient12"]) == ["07", "12"]
    config = Config(group_by=r"[a-z]+\d", validation_fraction=0.2)
    assert data.example_groups(config, ["scan_ab1_3", "cd2"]) == ["ab1", "cd2"]


# --- the option -------------------------------------------------------------------------------


def test_group_by_from_a_flag_and_from_a_yaml_file(tmp_path):
    from unet_tf.train import build_parser

    args = build_parser().parse_args(["--group-by", "breed", "--validation-fraction", "0.2"])
    assert config_from_args(args).group_by == "breed"
    path = tmp_path / "run.yaml"
    path.write_text("group_by: 'patient(\\d+)'\nvalidation_fraction: 0.3\n")
    args = build_parser().parse_args(["--config", str(path)])
    assert config_from_args(args).group_by == PATIENT
    assert Config().group_by == ""  # off


def test_an_invalid_regex_is_a_config_error():
    from unet_tf.train import build_parser

    with pytest.raises(ConfigError, match=r"group_by='patient\(': not a valid regular expression"):
        config_from_args(build_parser().parse_args(["--group-by", "patient("]))


# --- a folder ---------------------------------------------------------------------------------


def _write_pair(images, masks, stem, rng, side=16):
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
        images / f"{stem}.png")
    mask = np.zeros((side, side), np.uint8)
    mask[4:10, 4:10] = 255
    write_png(masks / f"{stem}.png", mask)


@pytest.fixture
def patients(tmp_path):
    """images/ + masks/ of 5 patients with 1 to 5 slices each (15 pairs)."""
    root = tmp_path / "scans"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for patient, slices in enumerate([3, 1, 5, 2, 4]):
        for index in range(slices):
            _write_pair(root / "images", root / "masks", f"patient{patient:02d}_slice{index}", rng)
    return root


def _folder_config(root, **values):
    return Config(**{**dict(dataset="folder", data_dir=str(root), labels="binary",
                            validation_fraction=0.3, group_by=PATIENT, seed=1, **TINY), **values})


def test_folder_split_by_group(patients):
    config = _folder_config(patients)
    train, val = data.load_splits(config)
    _check_split(config, train, val, 15)
    again = data.load_splits(config)  # the same seed: the same split
    assert (again[0].names, again[1].names) == (train.names, val.names)
    streamed = data.load_splits(config, stream=True)  # streamed or held in memory alike
    assert (streamed[0].names, streamed[1].names) == (train.names, val.names)
    line = data.groups_line(config, train, val)
    assert line == (f"--group-by {PATIENT}: {len(_side_groups(config, train, val)[0])} groups "
                    f"({len(train)} photos) for training, {len(_side_groups(config, train, val)[1])}"
                    f" groups ({len(val)} photos) held out for validation")


def test_each_seed_holds_out_its_own_groups(patients):
    """Several splits over the groups: another seed, other held-out groups (each split whole and
    near the fraction); the same seed, the same groups."""
    held = {}
    for seed in range(6):
        config = _folder_config(patients, seed=seed)
        train, val = data.load_splits(config)
        _check_split(config, train, val, 15)
        held[seed] = frozenset(_side_groups(config, train, val)[1])
        assert frozenset(_side_groups(config, *data.load_splits(config))[1]) == held[seed]
    assert len(set(held.values())) >= 3, held
    breeds = {f"b{i}": 90 + (i * 37) % 21 for i in range(37)}
    target = 0.2 * sum(breeds.values())
    splits = [sources.held_out_groups(breeds, target, seed) for seed in range(5)]
    assert len({frozenset(s) for s in splits}) == 5
    assert all(abs(sum(breeds[b] for b in s) - target) < 10 for s in splits)


def test_an_unusable_pair_moves_no_group(patients):
    config = _folder_config(patients)
    train, val = data.load_splits(config)
    broken = sorted(train.names)[0]
    (patients / "images" / f"{broken}.png").write_bytes(b"not a photo")
    train_after, val_after = data.load_splits(config)
    assert val_after.names == val.names and set(train_after.names) == set(train.names) - {broken}
    assert data.planned_sizes(config)[:2] == (len(train), len(val))  # listed, not read


@pytest.mark.slow  # a training run in a new process
def test_a_run_prints_the_groups_on_each_side(patients, tmp_path, capsys):
    from unet_tf.train import main

    flags = ["--preset", "own-data", "--data-dir", str(patients), "--group-by", PATIENT,
             "--validation-fraction", "0.3", "--seed", "1", "--image-size", "32", "--resize",
             "squash", "--alpha", "0.35", "--decoder-filters", "16", "16", "16", "16",
             "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4", "--run-dir", str(tmp_path / "run")]
    assert main(flags) == 0
    config = _folder_config(patients, validation_fraction=0.3)
    train, val = data.load_splits(config)
    assert data.groups_line(config, train, val) in capsys.readouterr().out.splitlines()


# --- errors, each one line ----------------------------------------------------------------------


def _error(kind, config, call=data.load_splits):
    with pytest.raises(kind) as error:
        call(config)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_a_pattern_matching_no_stem_names_one(patients):
    for call in (data.load_splits, data.planned_sizes):
        message = _error(data.DataError, _folder_config(patients, group_by=r"case(\d+)"), call)
        assert "matches no file stem" in message and "'patient00_slice0'" in message


def test_stems_that_do_not_match_are_counted_and_one_named(patients):
    _write_pair(patients / "images", patients / "masks", "control_a", np.random.default_rng(1))
    message = _error(data.DataError, _folder_config(patients))
    assert "does not match 1 of the 16 file stems" in message and "'control_a'" in message


def test_one_group_is_too_few(patients):
    message = _error(data.DataError, _folder_config(patients, group_by="patient"))
    assert "finds 1 group ('patient')" in message and "at least 2" in message


def test_group_by_without_a_validation_fraction_is_an_error(patients):
    config = _folder_config(patients, validation_fraction=0.0)
    for call in (data.load_splits, data.planned_sizes):
        assert "give --validation-fraction too" in _error(ConfigError, config, call)
    # With --val-split none nothing is held out: ignored, as the fraction is.
    train, val = data.load_splits(_folder_config(patients, val_split="none"))
    assert len(train) == 15 and val is None


# --- a local Oxford-IIIT Pet copy ---------------------------------------------------------------


BREEDS = {"Abyssinian": 1, "american_bulldog": 2, "Bengal": 6, "beagle": 11}


def _oxford_copy(root):
    """4 breeds of 3 photos, one whose name's case differs from its breed's (the list says)."""
    names = [f"{breed}_{i}" for breed in BREEDS for i in range(1, 4)] + ["abyssinian_9"]
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    for name, example in zip(names, synthetic.make_examples(len(names), 3)):
        Image.fromarray(example["image"]).save(root / "images" / f"{name}.jpg", quality=95)
        write_png(root / "annotations" / "trimaps" / f"{name}.png",
                  example["segmentation_mask"][..., 0])
    class_ids = {**{n: BREEDS[n.rsplit("_", 1)[0]] for n in names[:-1]}, "abyssinian_9": 1}
    (root / "annotations" / "trainval.txt").write_text(
        "#Image CLASS-ID SPECIES BREED ID\n"
        + "".join(f"{n} {class_ids[n]} 1 {class_ids[n]}\n" for n in names))
    (root / "annotations" / "test.txt").write_text("")
    return names


def test_local_oxford_copy_split_by_breed(tmp_path):
    names = _oxford_copy(tmp_path)
    config = Config(data_dir=str(tmp_path), group_by="breed", validation_fraction=0.25, seed=2,
                    **TINY)
    assert data.example_groups(config, ["abyssinian_9", "beagle_2"]) == ["Abyssinian", "beagle"]
    train, val = data.load_splits(config)
    _check_split(config, train, val, len(names))
    assert set().union(*_side_groups(config, train, val)) == set(BREEDS)


# --- oxford_iiit_pet through tfds -----------------------------------------------------------------


def test_tfds_split_by_group():
    config = Config(group_by=r"(\d)$", validation_fraction=0.25, seed=0, **TINY)
    with mock_oxford_iiit_pet({"train": 12, "test": 4}) as asked:
        train, val = data.load_splits(config)
        assert asked == ["train"]  # the whole split, carved here; test stays untouched
        assert all(name.endswith(".jpg") for name in train.names)  # tfds names its files
        _check_split(config, train, val, 12)


def test_tfds_split_by_breed(pets_sample):
    config = Config(group_by="breed", validation_fraction=0.2, seed=0, **TINY)
    with mock_oxford_iiit_pet({"train": 104, "test": 2}, sample=pets_sample):
        planned = data.planned_sizes(config)[:2]
        names = sources._tfds_names(config, "train")
    groups = data.example_groups(config, names)
    assert set(groups) == {"Abyssinian", "american_bulldog"}  # the sample's first two breeds
    assert sorted(planned) == sorted([groups.count("Abyssinian"), groups.count("american_bulldog")])
