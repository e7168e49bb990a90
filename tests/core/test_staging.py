"""core/staging.py: a folder artefact is written beside OUT under a name nobody can guess or plant, and
moved into place whole; a failure leaves the previous OUT as it was."""

import os
import stat
from pathlib import Path

import pytest

from dnc.core.staging import staged, staging_folder


def _write(folder: Path, text: str) -> None:
    (folder / "marker").write_text(text)


def test_staged_replaces_out_whole_and_leaves_nothing_beside_it(tmp_path):
    out = tmp_path / "set"
    with staged(out) as tmp:
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o700  # private while written
        _write(tmp, "one")
    with staged(out) as tmp:
        _write(tmp, "two")
    assert (out / "marker").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask  # as mkdir would have made it


def test_a_failure_leaves_the_previous_out(tmp_path):
    out = tmp_path / "set"
    with staged(out) as tmp:
        _write(tmp, "one")
    with pytest.raises(RuntimeError), staged(out) as tmp:
        _write(tmp, "half")
        raise RuntimeError("stopped")
    assert (out / "marker").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_names_planted_in_advance_are_neither_used_nor_written_through(tmp_path):
    """What another user of a shared parent could plant at the names the old code used (.OUT.partialPID and
    .OUT.oldPID): a link to a folder of theirs and a folder of theirs. Neither is written into or removed."""
    victim = tmp_path / "theirs"
    victim.mkdir()
    (victim / "keep").write_text("x")
    out = tmp_path / "set"
    pid = os.getpid()
    (tmp_path / f".set.partial{pid}").symlink_to(victim)
    (tmp_path / f".set.old{pid}").mkdir()
    with staged(out) as tmp:
        assert tmp.parent == tmp_path and not tmp.is_symlink() and tmp.name.startswith(".set.partial")
        assert tmp.name != f".set.partial{pid}"
        _write(tmp, "one")
    with staged(out) as tmp:
        _write(tmp, "two")
    assert sorted(p.name for p in victim.iterdir()) == ["keep"]
    assert (tmp_path / f".set.partial{pid}").is_symlink() and (tmp_path / f".set.old{pid}").is_dir()
    assert (out / "marker").read_text() == "two" and not out.is_symlink()


def test_staging_folders_are_distinct(tmp_path):
    a, b = staging_folder(tmp_path / "x"), staging_folder(tmp_path / "x")
    assert a != b and a.is_dir() and b.is_dir() and not any(a.iterdir())
