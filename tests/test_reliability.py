"""Careless and hostile use: outputs never destroy what they point at, one process per run, memory
bounded by the limits, and every user error one line (exit 2, nothing written, no traceback).

Each case is a row of docs/reliability.md.
"""

import errno
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

from unet_tf.config import preset

TINY = ["--preset", "quickstart", "--image-size", "32", "--epochs", "1", "--batch-size", "2",
        "--synthetic-train-examples", "4", "--synthetic-val-examples", "2", "--alpha", "0.35",
        "--decoder-filters", "8", "8", "8", "8"]


def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def _one_line_error(err, *needles):
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture()
def run_copy(tiny_run, tmp_path):
    """A copy of a finished run folder, to point commands at."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


# --- 1. export --out ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["run", "photos", "file", "cwd"])
def test_export_never_replaces_what_it_did_not_write(run_copy, tmp_path, capsys, monkeypatch,
                                                     target):
    from unet_tf.export import main

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "cat.jpg")
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(photos)
    out = {"run": run_copy, "photos": photos, "file": tmp_path / "notes.txt",
           "cwd": os.path.abspath(".")}[target]
    before = _snapshot(tmp_path)
    assert main(["--model", str(run_copy / "model.keras"), "--out", str(out), "--force"]) == 2
    _one_line_error(capsys.readouterr().err, str(out))
    assert _snapshot(tmp_path) == before  # not a byte lost, nothing added


def test_export_replaces_an_earlier_export_only_with_force(tiny_run, tmp_path, capsys):
    from unet_tf.export import main

    out = tmp_path / "exports" / "pets"
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(out)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not private to the process
    first = _snapshot(out)
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(out)]) == 2
    _one_line_error(capsys.readouterr().err, "--force")
    assert _snapshot(out) == first
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(out), "--force",
                 "--tta"]) == 0
    assert json.loads((out / "metadata.json").read_text())["tta"] is True
    assert sorted(p.name for p in out.parent.iterdir()) == ["pets"]  # no staging left


# --- 2. evaluate --json ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.keras", "config.json", "history.csv"])
def test_evaluate_json_never_overwrites_other_files(run_copy, capsys, name):
    from unet_tf.evaluate import main

    before = _snapshot(run_copy)
    assert main(["--model", str(run_copy / "model.keras"), "--json", str(run_copy / name)]) == 2
    _one_line_error(capsys.readouterr().err, name)
    assert _snapshot(run_copy) == before


def test_evaluate_json_replaces_its_own_report(run_copy):
    from unet_tf.evaluate import main

    report = run_copy / "reports" / "val.json"
    for _ in range(2):
        assert main(["--model", str(run_copy / "model.keras"), "--json", str(report),
                     "--postprocess", "none"]) == 0
    assert json.loads(report.read_text())["format"] == "unet_tf evaluation"


# --- 3. one process per run ---------------------------------------------------------------------


def test_a_run_in_use_is_refused_and_a_dead_process_does_not_block(run_copy, tmp_path, capsys):
    from unet_tf.run.resume import RunState
    from unet_tf.run import open_run
    from unet_tf.train import main

    state = RunState(epochs_completed=1)
    state.write(run_copy)  # as if interrupted after epoch 1 (the files it names are not needed)
    config = preset("quickstart")
    with open_run(config, run_copy, resume=False) if False else _held(run_copy):
        assert main(["--resume", str(run_copy)]) == 2
        _one_line_error(capsys.readouterr().err, "in use", f"process {os.getpid()}")
        empty = tmp_path / "new_run"
        empty.mkdir()
        with _held(empty):
            assert main([*TINY, "--run-dir", str(empty)]) == 2
            _one_line_error(capsys.readouterr().err, "in use")
    # A lock left by a killed process: the kernel dropped it with the process.
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_copy)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    with _held(run_copy):
        pass  # taken at once


HOLD_LOCK = """
import fcntl, sys, time
handle = open(sys.argv[1] + "/.lock", "a+")
fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
time.sleep(60)
"""


class _held:
    """Holds a run folder's lock as a training process would."""

    def __init__(self, folder):
        self.folder = folder

    def __enter__(self):
        from unet_tf.run.folder import _lock

        self.handle = _lock(self.folder)
        return self

    def __exit__(self, *exc):
        self.handle.close()


# --- 4. memory ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    """A 97 KB PNG of 10000 x 10000 black pixels: 300 MB once decoded."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("L", (10000, 10000)).save(path, optimize=True)
    return path


def test_predict_refuses_a_huge_photo_before_decoding_it(tiny_run, huge_png, tmp_path, capsys,
                                                          monkeypatch):
    """Its size is read from the header and refused there: no pixel is decoded (300 MB for this
    photo; a decompression bomb could ask for far more)."""
    from PIL import ImageFile

    from unet_tf.predict import main

    assert huge_png.stat().st_size < 200_000
    decoded = []
    original_load = ImageFile.ImageFile.load

    def load(image):
        decoded.append(image.size)
        return original_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    status = main(["--model", str(tiny_run / "model.keras"), "--out", str(tmp_path / "out"),
                   str(huge_png)])
    err = capsys.readouterr().err
    assert status == 1 and "limit of 40,000,000" in err
    assert "Traceback" not in err
    assert (10000, 10000) not in decoded


@pytest.fixture(scope="module")
def export(tiny_run, tmp_path_factory):
    from unet_tf.export import main

    out = tmp_path_factory.mktemp("export") / "pets"
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(out),
                 "--max-pixels", "1000000"]) == 0
    import tensorflow as tf

    return out, tf.saved_model.load(str(out))


def _encoded(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_serving_refuses_images_above_its_limit_before_decoding(export, huge_png):
    import tensorflow as tf

    folder, served = export
    assert json.loads((folder / "metadata.json").read_text())["max_pixels"] == 1_000_000
    for data in (huge_png.read_bytes(), _encoded(Image.new("RGB", (1100, 1000)), "JPEG"),
                 _encoded(Image.new("RGB", (1100, 1000)), "BMP")):
        with pytest.raises(tf.errors.InvalidArgumentError, match="limit of 1,000,000 pixels"):
            served.signatures["serve_bytes"](images=tf.constant([data]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit of 1,000,000 pixels"):
        served.signatures["serving_default"](images=tf.zeros([1, 1001, 1000, 3], tf.uint8))
    small = served.signatures["serve_bytes"](
        images=tf.constant([_encoded(Image.new("RGB", (100, 90)), "BMP")]))
    assert small["mask"].shape == (1, 90, 100)


def test_serving_refuses_gifs_whose_frames_could_exceed_its_limit_unread(export):
    """A GIF's header gives its screen's size, not its frames', and TensorFlow decodes every
    frame: serve_bytes takes no GIF (predict, which reads the first frame with Pillow, does)."""
    import tensorflow as tf

    _, served = export
    big_frame = bytearray(_encoded(Image.new("RGB", (2000, 1000)), "GIF"))
    big_frame[6:10] = (16).to_bytes(2, "little") * 2  # the screen says 16 x 16
    frames = [Image.new("RGB", (200, 100), (i, 0, 0)) for i in range(100)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    small = _encoded(Image.new("RGB", (20, 10)), "GIF")
    for data in (bytes(big_frame), buffer.getvalue(), small):
        with pytest.raises(tf.errors.InvalidArgumentError, match="send its pixels to "
                                                                 "serving_default"):
            served.signatures["serve_bytes"](images=tf.constant([data]))


def test_serving_refuses_16_bit_pngs_that_predict_would_stretch(export):
    """predict stretches a 16-bit photo by its own percentiles; TensorFlow's decoder would keep
    its top byte (12-bit microscopy: values 0-15) and serve another mask: refused, with what to
    do. 8-bit PNGs, grey and colour, are served."""
    import tensorflow as tf

    _, served = export
    deep = np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 3  # values up to 3597
    for data in (_encoded(Image.fromarray(deep), "PNG"),
                 tf.io.encode_png(np.repeat(deep[..., None], 3, axis=2)).numpy()):
        with pytest.raises(tf.errors.InvalidArgumentError, match="16-bit PNG.*serving_default"):
            served.signatures["serve_bytes"](images=tf.constant([data]))
    for image in (Image.new("L", (40, 30), 90), Image.new("RGB", (40, 30), (9, 80, 200))):
        out = served.signatures["serve_bytes"](images=tf.constant([_encoded(image, "PNG")]))
        assert out["mask"].shape == (1, 30, 40)


def test_a_keras_zip_bomb_is_refused_unread(tmp_path, capsys):
    from unet_tf.evaluate import main

    bomb = tmp_path / "model.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("config.json", "w", force_zip64=True) as member:
            chunk = b" " * 2**20
            for _ in range(64):  # 64 MiB of spaces, 64 KiB on disk
                member.write(chunk)
        archive.writestr("model.weights.h5", b"")
    assert bomb.stat().st_size < 2**20
    assert main(["--model", str(bomb)]) == 2
    _one_line_error(capsys.readouterr().err, "unpacks to", "refused")


# --- 5. user errors: one line, exit 2, nothing written --------------------------------------------


def _train_error(args, tmp_path, monkeypatch, capsys, *needles):
    from unet_tf.train import main

    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    before = _snapshot(tmp_path)
    assert main(args) == 2
    _one_line_error(capsys.readouterr().err, *needles)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("text,suffix,needle", [
    ("epochs: [1, 2\n", ".yaml", "not valid YAML"),
    ('{"epochs": 2,}', ".json", "not valid JSON"),
    ("!!python/object/apply:os.system ['echo hacked']\n", ".yaml", "not valid YAML"),
    ("\xff\xfe", ".json", "not valid JSON"),
])
def test_bad_config_files(tmp_path, monkeypatch, capsys, text, suffix, needle):
    path = tmp_path / f"run{suffix}"
    path.write_text(text, errors="surrogateescape") if "\xff" not in text else \
        path.write_bytes(b"\xff\xfe")
    _train_error(["--config", str(path)], tmp_path, monkeypatch, capsys, needle, str(path))


@pytest.mark.parametrize("flags,needles", [
    (["--seed", "-1"], ["seed=-1"]),
    (["--alpha", "0.1", "--encoder-weights", "imagenet"], ["alpha=0.1", "ImageNet"]),
    (["--classes", "a", "a", "--dataset", "folder", "--data-dir", "d", "--labels", "index"],
     ["named twice"]),
])
def test_bad_values(tmp_path, monkeypatch, capsys, flags, needles):
    _train_error([*TINY, *flags], tmp_path, monkeypatch, capsys, *needles)


def test_run_dir_below_a_file_or_not_writable(tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("x")
    _train_error([*TINY, "--run-dir", str(tmp_path / "a_file" / "run")], tmp_path, monkeypatch,
                 capsys, "a_file")
    if os.access("/sys", os.W_OK) and not os.path.isdir("/sys/class"):
        pytest.skip("no read-only file system to try")
    from unet_tf.train import main

    assert main([*TINY, "--run-dir", "/sys/unet_tf_run"]) == 2
    _one_line_error(capsys.readouterr().err, "/sys/unet_tf_run", "cannot create")


@pytest.mark.slow  # a training run
def test_a_full_disk_mid_run_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch,
                                                                       capsys):
    from unet_tf.train import main

    def full(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(filepath))

    monkeypatch.setattr(keras.Model, "save", full)
    run = tmp_path / "run"
    assert main([*TINY, "--run-dir", str(run)]) == 2
    _one_line_error(capsys.readouterr().err, "the disk is full")
    assert not run.exists() or not list(run.rglob(".*tmp*"))


@pytest.mark.parametrize("content", [b"garbage, not HDF5", "wrong"])
def test_bad_encoder_weights_files(tmp_path, monkeypatch, capsys, content):
    path = tmp_path / "weights.h5"
    if content == "wrong":  # a real weights file, of another network
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.save_weights(tmp_path / "other.weights.h5")
        path = tmp_path / "other.weights.h5"
    else:
        path.write_bytes(content)
    _train_error([*TINY, "--encoder-weights", str(path)], tmp_path, monkeypatch, capsys,
                 str(path), "MobileNetV2")


def test_a_damaged_resume_state(run_copy, capsys):
    from unet_tf.train import main

    (run_copy / "resume" / "state.json").write_text("{not json")
    before = _snapshot(run_copy)
    assert main(["--resume", str(run_copy)]) == 2
    _one_line_error(capsys.readouterr().err, "state.json", "damaged")
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize("case", ["no_config", "unknown_class", "truncated", "not_a_zip"])
def test_bad_model_files(tiny_run, tmp_path, capsys, case):
    from unet_tf.predict import main

    path = tmp_path / "model.keras"
    original = (tiny_run / "model.keras").read_bytes()
    if case == "truncated":
        path.write_bytes(original[:len(original) // 2])
    elif case == "not_a_zip":
        path.write_bytes(b"hello")
    else:
        with zipfile.ZipFile(tiny_run / "model.keras") as source, \
                zipfile.ZipFile(path, "w") as target:
            for item in source.infolist():
                content = source.read(item)
                if item.filename == "config.json":
                    if case == "no_config":
                        continue
                    content = content.replace(b'"class_name": "Functional"',
                                              b'"class_name": "NoSuchModel"')
                target.writestr(item, content)
    photo = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(photo)
    assert main(["--model", str(path), "--out", str(tmp_path / "out"), str(photo)]) == 2
    err = capsys.readouterr().err
    _one_line_error(err, str(path))
    assert "File not found" not in err
    assert not (tmp_path / "out" / "p_mask.png").exists()


def test_postprocess_without_a_background_class_is_refused_once(tiny_run, tmp_path, capsys):
    from unet_tf.predict import main

    run = tmp_path / "index_run"
    run.mkdir()
    shutil.copy(tiny_run / "model.keras", run / "model.keras")
    config = json.loads((tiny_run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({
        **config, "dataset": "folder", "data_dir": "d", "labels": "index",
        "classes": ["sky", "road", "car"]}))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(photos / f"{i}.png")
    assert main(["--model", str(run / "model.keras"), "--out", str(tmp_path / "out"),
                 "--postprocess", "largest", str(photos)]) == 2
    _one_line_error(capsys.readouterr().err, "background")


@pytest.mark.parametrize("where", ["file", "below_file"])
def test_predict_out_that_is_a_file(tiny_run, tmp_path, capsys, where):
    from unet_tf.predict import main

    (tmp_path / "x.txt").write_text("mine")
    out = tmp_path / "x.txt" if where == "file" else tmp_path / "x.txt" / "out"
    photo = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(photo)
    before = _snapshot(tmp_path)
    assert main(["--model", str(tiny_run / "model.keras"), "--out", str(out), str(photo)]) == 2
    _one_line_error(capsys.readouterr().err, "x.txt")
    assert _snapshot(tmp_path) == before


def test_a_bug_shows_its_traceback_and_asks_for_a_report(capsys):
    from unet_tf.cli import run_command

    def broken(argv):
        raise KeyError("an internal mistake")

    assert run_command(broken) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err and "please report it" in err


# --- 6. smaller cases -----------------------------------------------------------------------------


def test_evaluate_advice_names_only_options_evaluate_has(tmp_path, capsys, tiny_run):
    from unet_tf.evaluate import main

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    Image.new("RGB", (8, 8)).save(data / "images" / "a.png")
    Image.new("L", (8, 8)).save(data / "masks" / "a.png")
    assert main(["--model", str(tiny_run / "model.keras"), "--dataset", "folder", "--data-dir",
                 str(data), "--labels", "index", "--classes", "a", "b", "c"]) == 2
    err = capsys.readouterr().err
    _one_line_error(err, "--split train")  # the advice for evaluating names evaluate's option
    assert main(["--model", str(tiny_run / "model.keras"), "--dataset", "folder", "--data-dir",
                 str(data), "--labels", "index", "--split", "train"]) == 2
    _one_line_error(capsys.readouterr().err, "--classes")  # which evaluate has
    assert main(["--model", str(tiny_run / "model.keras"), "--dataset", "folder", "--data-dir",
                 str(data), "--labels", "index", "--classes", "a", "b", "c", "--split",
                 "train", "--postprocess", "none", "--json", str(tmp_path / "r.json")]) == 0


def test_serve_bytes_composites_transparency_over_white_as_predict_does(export, tmp_path):
    import tensorflow as tf

    from unet_tf.images import read_image

    _, served = export
    rgba = np.random.default_rng(0).integers(0, 256, (40, 50, 4), dtype=np.uint8)
    rgba[::2, :, 3] = 0  # every other row transparent
    data = _encoded(Image.fromarray(rgba, "RGBA"), "PNG")
    path = tmp_path / "transparent.png"
    path.write_bytes(data)
    pixels = read_image(path)
    from_bytes = served.signatures["serve_bytes"](images=tf.constant([data]))
    from_pixels = served.signatures["serving_default"](images=tf.constant(pixels[None]))
    np.testing.assert_allclose(from_bytes["probabilities"].numpy(),
                               from_pixels["probabilities"].numpy(), atol=1e-5)


def test_serve_bytes_names_what_it_cannot_decode(export):
    import tensorflow as tf

    _, served = export
    tiff = _encoded(Image.new("RGB", (20, 20)), "TIFF")
    with pytest.raises(tf.errors.InvalidArgumentError, match="serving_default"):
        served.signatures["serve_bytes"](images=tf.constant([tiff]))


def test_an_empty_batch_gives_empty_answers(export):
    import tensorflow as tf

    _, served = export
    out = served.signatures["serving_default"](images=tf.zeros([0, 30, 40, 3], tf.uint8))
    assert out["mask"].shape == (0, 30, 40) and out["probabilities"].shape == (0, 30, 40, 3)
    out = served.signatures["serve_bytes"](images=tf.constant([], tf.string))
    assert out["mask"].shape[0] == 0 and out["probabilities"].shape[0] == 0
