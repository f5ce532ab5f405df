"""Careless and hostile zips to notebook.own_data (docs/reliability.md): nothing it did not unpack
is deleted, a failure leaves the earlier unpacking whole, and every bad zip is one line."""

import errno
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from unet_tf import notebook as nb
from unet_tf.errors import UserError

PAIR = {"images/a.png": b"photo", "masks/a.png": b"mask"}


def _zip(path: Path, members: dict, compression=zipfile.ZIP_STORED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def _everything(folder: Path) -> dict:
    """{relative path: content (None for a folder)} of all under `folder`, hidden files too."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
            for p in sorted(folder.rglob("*"))}


def _one_line(caught) -> str:
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, UserError), message
    return message


@pytest.fixture()
def work(tmp_path, monkeypatch):
    """The working folder own_data/ goes under (the zips are kept beside it, in tmp_path)."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


# 1: own_data replaces only a folder an earlier own_data unpacking wrote, and only what it wrote
def test_own_data_replaces_only_its_own_earlier_unpacking(work, tmp_path):
    mine = _zip(tmp_path / "mine.zip", {**PAIR, "images/old.png": b"x", "masks/old.png": b"x"})
    assert nb.own_data(mine) == Path("own_data/mine")
    _zip(mine, PAIR)  # a new version of the zip replaces the earlier unpacking as a whole
    assert nb.own_data(mine) == Path("own_data/mine")
    assert not (work / "own_data/mine/images/old.png").exists()
    # A user's file put into that unpacking since, or a folder of the user's under the same name.
    (work / "own_data/mine/images/keep.csv").write_text("my notes")
    with pytest.raises(UserError) as caught:
        nb.own_data(mine)
    assert "own_data/mine holds images/keep.csv, which no unpacking of a zip wrote" in _one_line(
        caught)
    assert (work / "own_data/mine/images/keep.csv").read_text() == "my notes"
    theirs = _zip(tmp_path / "theirs.zip", PAIR)
    (work / "own_data/theirs").mkdir()
    (work / "own_data/theirs/keep.csv").write_text("my table")
    with pytest.raises(UserError) as caught:
        nb.own_data(theirs)
    assert "own_data/theirs holds keep.csv" in _one_line(caught)
    assert "rename the zip" in str(caught.value)
    assert _everything(work / "own_data/theirs") == {"keep.csv": b"my table"}


# 1: a zip whose name is no folder name
@pytest.mark.parametrize("name", ["..zip", "...zip", ".hidden.zip"])
def test_own_data_refuses_a_zip_named_like_a_folder_it_must_not_replace(work, tmp_path, name):
    _zip(work / "own_data/earlier.zip", PAIR)
    (work / "notes.txt").write_text("beside own_data")
    before = _everything(work)
    with pytest.raises(UserError) as caught:
        nb.own_data(_zip(tmp_path / name, PAIR))
    assert f"{name} is not a name to unpack into: rename the zip" in _one_line(caught)
    assert _everything(work) == before


# 1: the zip lies in the folder it would unpack into
def test_own_data_never_deletes_the_zip_it_unpacks(work):
    data = _zip(work / "own_data/data/data.zip", PAIR)
    (work / "own_data/data/labels.csv").write_text("a,1")
    before = _everything(work)
    with pytest.raises(UserError) as caught:
        nb.own_data(data)
    assert "lies inside own_data/data, the folder it unpacks into" in _one_line(caught)
    assert _everything(work) == before


# 1: own_data/<stem> is a link to a folder elsewhere
def test_own_data_never_unpacks_through_a_link(work, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    (work / "own_data").mkdir()
    (work / "own_data/mine").symlink_to(elsewhere)
    with pytest.raises(UserError) as caught:
        nb.own_data(_zip(tmp_path / "mine.zip", PAIR))
    assert "own_data/mine is a link" in _one_line(caught)
    assert _everything(elsewhere) == {"precious.txt": b"keep"}
    assert (work / "own_data/mine").is_symlink()


def _encrypted(path: Path) -> Path:
    """A zip whose member says it is encrypted (zipfile writes no encrypted zips)."""
    raw = bytearray(_zip(path, PAIR).read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        while at >= 0:
            raw[at + offset] |= 0x01
            at = raw.find(signature, at + 4)
    path.write_bytes(bytes(raw))
    return path


def _bad_crc(path: Path) -> Path:
    raw = _zip(path, {**PAIR, "masks/b.png": b"hello world", "images/b.png": b"x"}).read_bytes()
    path.write_bytes(raw.replace(b"hello world", b"hellO world"))
    return path


# 2 and 1: what zipfile raises raw, as one line; a failure leaves the earlier unpacking whole
@pytest.mark.parametrize("make, problem", [
    (_encrypted, "images/a.png is encrypted (password-protected)"),
    (_bad_crc, "is damaged (Bad CRC-32 for file 'masks/b.png')"),
    (lambda path: _zip(path, {"images": b"x", **PAIR}),
     "images is both a file and a folder in it"),
    (lambda path: _zip(path, {}), "holds no files"),
    (lambda path: _zip(path, {"__MACOSX/._a.png": b"x", "data/": b""}), "holds no files"),
], ids=["encrypted", "bad-crc", "file-and-folder", "empty", "macosx-only"])
def test_a_zip_python_cannot_unpack_is_one_line_and_keeps_the_earlier_unpacking(
        work, tmp_path, make, problem):
    mine = _zip(tmp_path / "mine.zip", PAIR)
    nb.own_data(mine)
    before = _everything(work / "own_data")
    with pytest.raises(UserError) as caught:
        nb.own_data(make(mine))
    message = _one_line(caught)
    assert message.startswith(f"own data {mine}: ") and problem in message, message
    assert _everything(work / "own_data") == before  # no partial or staging folder either


def _statvfs(free_bytes: int, free_inodes: int, block: int = 4096):
    """An os.statvfs answer: `free_bytes` in blocks of `block` and `free_inodes` files free."""
    def statvfs(path):
        return os.statvfs_result((block, block, 2**30, free_bytes // block, free_bytes // block,
                                  2**30, free_inodes, free_inodes, 0, 255))
    return statvfs


# 2: many tiny members take a block and an inode each, not their bytes
def test_many_tiny_members_are_counted_by_the_room_they_take_on_disk(work, tmp_path,
                                                                     monkeypatch):
    tiny = _zip(tmp_path / "tiny.zip", {f"images/{i}.png": b"x" for i in range(3000)}
                | {f"masks/{i}.png": b"x" for i in range(3000)})
    monkeypatch.setattr(os, "statvfs", _statvfs(16 * 2**20, 10**6))  # 6,000 bytes fit, not blocks
    with pytest.raises(UserError) as caught:
        nb.own_data(tiny)
    message = _one_line(caught)
    assert ("unpacks to 24 MiB, more than the 16 MiB free here (6,000 files, each taking at "
            "least 4,096 bytes on this disk)") in message
    monkeypatch.setattr(os, "statvfs", _statvfs(2**40, 5000))  # room, but too few inodes
    with pytest.raises(UserError) as caught:
        nb.own_data(tiny)
    assert "6,000 files and 2 folders, more than the 5,000 this disk has room for" in _one_line(
        caught)
    monkeypatch.setattr(os, "statvfs", _statvfs(2**40, 10**9))
    monkeypatch.setattr(nb, "MAX_ZIP_MEMBERS", 5000, raising=False)
    with pytest.raises(UserError) as caught:
        nb.own_data(tiny)
    assert "holds 6,000 files, more than the 5,000 own_data unpacks" in _one_line(caught)
    assert _everything(work) == {"own_data": None}


# 2: the disk fills all the same (another process wrote meanwhile)
def test_a_disk_that_fills_while_unpacking_is_one_line_and_leaves_nothing(work, tmp_path,
                                                                         monkeypatch):
    mine = _zip(tmp_path / "mine.zip", {f"images/{i}.png": b"x" for i in range(20)}
                | {f"masks/{i}.png": b"x" for i in range(20)})
    copy, calls = shutil.copyfileobj, []

    def fills_up(source, target, *args, **kwargs):
        calls.append(1)
        if len(calls) > 10:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return copy(source, target, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfileobj", fills_up)
    with pytest.raises(UserError) as caught:
        nb.own_data(mine)
    assert "the disk filled while unpacking it" in _one_line(caught)
    assert _everything(work) == {"own_data": None}


# 2: images/ and masks/ two folders down
def test_a_data_root_two_folders_deep_is_found(work, tmp_path, capsys):
    deep = _zip(tmp_path / "deep.zip", {"outer/inner/images/a.png": b"x",
                                        "outer/inner/images/b.png": b"x",
                                        "outer/inner/masks/a.png": b"x",
                                        "outer/inner/masks/b.png": b"x",
                                        "outer/README.txt": b"read me"})
    assert nb.own_data(deep) == Path("own_data/deep/outer/inner")
    assert "own data: own_data/deep/outer/inner (2 images, 2 masks)" in capsys.readouterr().out
    # Two folders where one was looked for: each is named in the error.
    split = _zip(tmp_path / "split.zip", {"outer/one/images/a.png": b"x",
                                          "outer/two/masks/a.png": b"x"})
    with pytest.raises(UserError) as caught:
        nb.own_data(split)
    assert "no images/ and masks/ folders in it (found: outer/one, outer/two)" in _one_line(caught)
