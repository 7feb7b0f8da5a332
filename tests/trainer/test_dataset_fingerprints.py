"""Data set fingerprints, as a version's lineage records them: one per data set kind the trainer reads."""

from __future__ import annotations

import hashlib
import os
import shutil
from importlib import metadata
from pathlib import Path

from maas.trainer import datasets


def _folder(root: Path) -> Path:
    folder = root / "pets"
    for label, payload in (("cat", b"meow"), ("dog", b"woof")):
        (folder / label).mkdir(parents=True)
        (folder / label / "a.png").write_bytes(payload)
    (folder / "dog" / "b.png").write_bytes(b"bark")
    return folder


def _expected(folder: Path) -> str:
    """The documented form, computed independently: 'path NUL sha256 LF' per file, sorted by path."""
    lines = sorted(
        f"{p.relative_to(folder).as_posix()}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
        for p in folder.rglob("*")
        if p.is_file()
    )
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def test_imagefolder_fingerprint_covers_every_files_path_and_content(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "root")
    info = datasets.describe("imagefolder", "pets", {}, tmp_path / "root")
    first = datasets.fingerprint(info, tmp_path / "root", seed=0)
    assert first == _expected(folder)
    # The same files elsewhere give the same fingerprint; the seed does not enter it.
    shutil.copytree(folder, tmp_path / "copy" / "pets")
    assert datasets.fingerprint(info, tmp_path / "copy", seed=9) == first

    (folder / "dog" / "b.png").write_bytes(b"BARK")
    changed = datasets.fingerprint(info, tmp_path / "root", seed=0)
    (folder / "dog" / "b.png").rename(folder / "cat" / "b.png")
    moved = datasets.fingerprint(info, tmp_path / "root", seed=0)
    assert len({first, changed, moved}) == 3
    assert moved == _expected(folder)


def test_a_link_out_of_the_folder_does_not_enter_the_fingerprint(tmp_path: Path) -> None:
    _folder(tmp_path / "root")
    info = datasets.describe("imagefolder", "pets", {}, tmp_path / "root")
    before = datasets.fingerprint(info, tmp_path / "root", seed=0)
    (tmp_path / "secret").write_bytes(b"outside")
    os.symlink(tmp_path / "secret", tmp_path / "root" / "pets" / "cat" / "z.png")
    assert datasets.fingerprint(info, tmp_path / "root", seed=0) == before


def test_downloaded_sets_are_fingerprinted_by_their_files_under_the_data_root(tmp_path: Path) -> None:
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(16))
    (raw / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(8))
    info = datasets.describe("mnist", "", {}, tmp_path)
    assert datasets.fingerprint(info, tmp_path, seed=0) == _expected(tmp_path / "mnist")


def test_packaged_and_generated_sets_name_their_source(tmp_path: Path) -> None:
    digits = datasets.describe("digits", "", {}, tmp_path)
    assert datasets.fingerprint(digits, tmp_path, seed=3) == f"scikit-learn=={metadata.version('scikit-learn')}:digits"
    fake = datasets.describe("fake", "", {"num_samples": 50, "image_size": 8}, tmp_path)
    assert (
        datasets.fingerprint(fake, tmp_path, seed=3)
        == "fake:channels=3,image_size=8,num_classes=10,num_samples=50,seed=3"
    )
    assert datasets.fingerprint(fake, tmp_path, seed=4) != datasets.fingerprint(fake, tmp_path, seed=3)
