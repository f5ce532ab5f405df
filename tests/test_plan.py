"""The plan: every automatic choice of a run made once, printed, saved in the run folder, obeyed."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from unet_tf import data
from unet_tf.config import Config, preset
from unet_tf.plan import Plan, make_plan

NERVE_SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/nerve-ultrasound-sample"
TINY = ["--encoder-weights", "none", "--alpha", "0.35", "--decoder-filters", "16", "16", "16",
        "16", "--image-size", "64", "--batch-size", "8"]
AUTOMATIC = ("resize", "cache", "xla", "mixed_precision", "strategy")


def _files(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.slow  # reads the pets sample in a new process
def test_dry_run_prints_the_plan_of_the_pets_sample_and_writes_nothing(pets_sample, tmp_path,
                                                                        run_python):
    before = _files(tmp_path)
    process, _ = run_python(["-m", "unet_tf.train", "--dry-run", "--data-dir", str(pets_sample),
                             "--validation-fraction", "0.2", "--seed", "5", "--run-dir",
                             str(tmp_path / "run"), *TINY], cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-2000:]
    names = data.sources.oxford_list_names(pets_sample / "annotations" / "trainval.txt")
    listed = [n for n in names if (pets_sample / "images" / f"{n}.jpg").is_file()]
    held = data.sources.validation_part(listed, 0.2)
    out = process.stdout
    assert "what this run will do:" in out
    assert f"{(~held).sum()} training (train); validation {held.sum()} examples" in out
    assert f"x {-(-(~held).sum() // 8)} steps" in out and "seed       5" in out
    assert "squash to 64 px" in out and "s a step, measured on this machine" in out
    assert _files(tmp_path) == before  # no run folder, no cache, nothing


@pytest.mark.skipif(not (NERVE_SAMPLE / "images").is_dir(), reason="no nerve sample")
def test_the_plan_of_the_nerve_sample_chooses_its_resize_from_the_masks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = make_plan(preset("own-data", data_dir=str(NERVE_SAMPLE), seed=1))
    assert plan.config.resize in ("squash", "none")  # auto made concrete
    block = plan.block()
    assert "--resize auto: objects about" in block
    assert f"--train-steps 2400: {plan.config.epochs} epochs of {plan.steps_per_epoch}" in block
    assert plan.train_examples + plan.val_examples == len(list((NERVE_SAMPLE / "images").iterdir()))
    assert not any(getattr(plan.config, name) == "auto" for name in AUTOMATIC)
    assert list(tmp_path.iterdir()) == []


def test_the_plan_of_large_photos_streams_them_from_an_estimate_of_their_headers(tmp_path):
    sizes = [(3000, 4000), (2400, 3200), (3000, 2000)]
    for folder in ("images", "masks"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for i, (height, width) in enumerate(sizes):
        Image.new("RGB", (width, height), (90, 120, 30)).save(tmp_path / f"data/images/{i}.jpg")
        Image.new("L", (width, height)).save(tmp_path / f"data/masks/{i}.png")
    before = _files(tmp_path)
    config = preset("own-data", data_dir=str(tmp_path / "data"), resize="none", scale=0.5,
                    patch_size=128, memory_budget_gb=0.01, validation_fraction=0.0,
                    val_split="none", seed=2)
    plan = make_plan(config)
    assert plan.cache_bytes == sum(int(h * w * 0.25) * 4 for h, w in sizes)
    assert plan.config.cache == "disk" and "cached on disk in the run folder" in plan.block()
    assert "native resolution x 0.5, 128 px crops" in plan.block()
    assert _files(tmp_path) == before


@pytest.mark.slow  # a training run in a new process
def test_a_run_prints_its_plan_and_keeps_it_beside_a_config_with_nothing_left_on_auto(
        tmp_path, capsys):
    from unet_tf.train import train

    config = preset("quickstart", image_size=32, alpha=0.35, decoder_filters=(16, 16, 16, 16),
                    synthetic_train_examples=16, synthetic_val_examples=8, batch_size=8,
                    epochs=1, train_steps=5)
    run = train(config, run_dir=tmp_path / "run", verbose=0)
    saved = Plan.load(run / "plan.json")
    block = "\n".join(json.loads((run / "plan.json").read_text())["block"])
    assert block == saved.block() and block in capsys.readouterr().out
    as_saved = json.loads(json.dumps(saved.config.to_dict()))
    assert as_saved == json.loads((run / "config.json").read_text())
    assert saved.steps_per_epoch == 2 and saved.config.epochs == 3  # --train-steps 5
    assert not any(getattr(saved.config, name) == "auto" for name in AUTOMATIC)
    # --config runs/RUN/config.json plans the same run again.
    again = make_plan(Config.load(run / "config.json"))
    assert again.config == saved.config and again.steps_per_epoch == saved.steps_per_epoch


@pytest.mark.slow  # a new process
def test_dry_run_of_resume_shows_the_saved_plan_not_a_new_one(tiny_run, tmp_path, run_python):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    plan = json.loads((run / "plan.json").read_text())
    plan["notes"].append("planned on another machine")
    plan["steps_per_epoch"] = 123
    (run / "plan.json").write_text(json.dumps(plan))
    process, _ = run_python(["-m", "unet_tf.train", "--resume", str(run), "--dry-run"],
                            cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-2000:]
    assert "planned on another machine" in process.stdout and "x 123 steps" in process.stdout


def test_unusable_pairs_found_when_reading_shrink_the_steps_once(tmp_path):
    plan = make_plan(preset("quickstart", train_steps=100, seed=1, batch_size=16))
    assert plan.steps_per_epoch == 24 and plan.config.epochs == 5  # 384 examples
    fewer = plan.with_usable(300)
    assert fewer.steps_per_epoch == 19 and fewer.config.epochs == 6
    assert "300 of the 384 training examples listed are usable: 19 steps" in fewer.notes[-1]
    assert fewer.with_usable(300) is fewer
    assert Plan.from_dict(json.loads(json.dumps(fewer.to_dict()))) == fewer
