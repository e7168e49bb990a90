"""Write a folder artefact in full beside its destination, then move it into place.

Readers of OUT (a server, a swap) never see a half-written export or centroid set, and a failure
leaves the previous OUT as it was. OUT is only ever replaced when it is absent, empty, or an
artefact of the same kind (it holds `marker`), so a mistyped --out cannot delete unrelated files.

The staging folder and the folder the previous OUT is moved aside into are made with `mkdtemp` (an
unpredictable name, created exclusively, mode 0700): in a world-writable parent such as /tmp another
user cannot plant a folder or a link at the name we are about to write into. The published folder is
given the mode a plain `mkdir` would have (0777 less the umask).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dnc.core.errors import InputError
from dnc.core.safe_files import umask


def check_destination(out: Path, marker: str, refuse_if: tuple[str, ...] = ()) -> None:
    """Refuse to replace `out` unless it is absent, empty or holds `marker` (and none of `refuse_if`)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"`out` {out} is a file, not a folder")
    names = {p.name for p in out.iterdir()}
    clash = [n for n in refuse_if if n in names]
    if clash:
        raise InputError(f"`out` {out} holds {clash[0]}: it is another kind of artefact; write to a folder of its own")
    if names and marker not in names:
        raise InputError(f"`out` {out} is a non-empty folder without {marker}; refusing to replace it")


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """Yield a fresh folder beside `out` to write into; on success move it to `out` (see `publish`),
    on an exception remove whatever of it is left and re-raise (`out` is untouched)."""
    tmp = staging_folder(out)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, out)


def staging_folder(out: Path) -> Path:
    """A fresh empty folder beside `out` to write into: created exclusively under an unpredictable name
    (0700 while it is written)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial", dir=out.parent))


def publish(tmp: Path, out: Path) -> Path:
    """Move the finished folder `tmp` to `out`, replacing a previous `out` (restored if the move fails)."""
    tmp.chmod(0o777 & ~umask())
    if not out.exists():
        os.replace(tmp, out)
        return out
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old", dir=out.parent))  # exclusive, unpredictable
    old = aside / "old"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return out
