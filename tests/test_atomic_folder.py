"""A folder filled under a temporary name appears whole or not at all, and a lost race keeps the winner's."""

from __future__ import annotations

import pytest

from saeembed.fsutil import atomic_folder


def test_the_folder_appears_only_when_complete(tmp_path):
    target = tmp_path / "model"
    with atomic_folder(target) as tmp:
        tmp.mkdir()
        (tmp / "weights.bin").write_bytes(b"1234")
        assert not target.exists()
    assert (target / "weights.bin").read_bytes() == b"1234"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_failure_leaves_nothing_behind(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            tmp.mkdir()
            (tmp / "half").write_text("x")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_another_process_put_first_is_kept(tmp_path):
    target = tmp_path / "model"
    with atomic_folder(target) as tmp:
        tmp.mkdir()
        (tmp / "ours").write_text("late")
        target.mkdir()
        (target / "theirs").write_text("first")
    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
