"""plugins/module_utils/_atomic.py: the one atomic writer of the collection."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.hostmesh.cluster.plugins.module_utils import _atomic

PLUGINS = ROOT / "plugins"


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_new_file_gets_the_mode_and_no_temp_file_stays(tmp_path):
    target = tmp_path / "secret"
    _atomic.write_atomic(str(target), "s3cret\n")
    assert target.read_text() == "s3cret\n"
    assert mode(target) == 0o600
    _atomic.write_atomic(str(target), "x", mode=0o644)
    assert mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_keep_mode_carries_an_existing_files_mode_over(tmp_path):
    target = tmp_path / "hostmesh.yml"
    target.write_text("old")
    target.chmod(0o640)
    _atomic.write_atomic(str(target), "new", mode=0o600, keep_mode=True)
    assert (target.read_text(), mode(target)) == ("new", 0o640)
    fresh = tmp_path / "fresh.yml"
    _atomic.write_atomic(str(fresh), "x", mode=0o644, keep_mode=True)
    assert mode(fresh) == 0o644


def test_replaces_the_inode_so_a_reader_sees_old_or_new(tmp_path):
    target = tmp_path / "wg0.conf"
    target.write_text("old")
    with target.open() as reader:
        _atomic.write_atomic(str(target), "new")
        assert reader.read() == "old"  # the open file is the old one, whole
    assert target.read_text() == "new"


def test_missing_directory_is_created_only_when_asked(tmp_path):
    target = tmp_path / "wireguard" / "wg0.key"
    with pytest.raises(FileNotFoundError):
        _atomic.write_atomic(str(target), "k")
    _atomic.write_atomic(str(target), "k", dir_mode=0o700)
    assert mode(target.parent) == 0o700 and target.read_text() == "k"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "hostmesh.yml"
    target.write_text("last good")

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_atomic.os, "replace", boom)
    with pytest.raises(OSError):
        _atomic.write_atomic(str(target), "half")
    assert target.read_text() == "last good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostmesh.yml"]


def test_temp_files_are_hidden_from_yaml_watchers(tmp_path, monkeypatch):
    seen = []
    real = _atomic.os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        real(src, dst)

    monkeypatch.setattr(_atomic.os, "replace", spy)
    _atomic.write_atomic(str(tmp_path / "hostmesh.yml"), "x")
    assert seen[0].startswith(".hostmesh.yml.") and seen[0].endswith(".tmp")


def test_read_text_of_a_missing_file_is_none(tmp_path):
    assert _atomic.read_text(str(tmp_path / "nope")) is None


def test_every_writer_of_the_collection_uses_it():
    """No second implementation: the modules' file writers go through _atomic.py."""
    offenders = []
    files = [p for sub in ("modules", "module_utils", "action") for p in (PLUGINS / sub).glob("*.py")]
    for path in sorted(files):
        text = path.read_text()
        if path.name == "_atomic.py":
            continue
        for needle in ("tempfile.mkstemp", "os.replace(", "atomic_move("):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offenders, offenders
