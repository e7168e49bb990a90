"""Output files never written through a link: each is written to a temporary file created exclusively
beside its final name, then renamed onto that name.

    t = Temp(folder / "x.labels.png")   # .x.labels.png.PID-RANDOM.dnc-tmp, created O_CREAT|O_EXCL|O_NOFOLLOW
    with t.open("wb") as f: ...         # written through the descriptor created, never by name
    t.commit()                          # os.replace onto the final name; t.discard() instead on failure

Why: an output folder may be shared (or a job's predictable hidden names guessed): a symlink planted at a
name we open by name is written through, to wherever it points. Here no name is opened that was not just
created by this process (mkstemp: exclusive, no link followed, an unpredictable name), libraries that open
by name (PyAV) are given the descriptor's /proc/self/fd path (the very file created, whatever the folder's
names say meanwhile), and os.replace puts the file in place of the final name: a link there is replaced,
its target never touched. Before the rename the temporary's name must still be the file written (else
OutputError: someone renamed or replaced it; nothing is put in place).

The folder itself is taken as named: a --out that is a link (or under one) is followed, as the user chose
it; links inside it are replaced, not refused (refusing would let anyone who can write there stop a job).

Files get the permissions a plain open would give (0666 less the umask), not mkstemp's 0600. A stopped
process leaves its temporaries: `remove_stale` (run before writing again) removes those of processes no
longer running, recognised by their name (leading dot, the final name, the writer's pid, .dnc-tmp).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
from pathlib import Path

from dnc.core.errors import DNCError

log = logging.getLogger(__name__)

TAG = ".dnc-tmp"
_STALE = re.compile(r"^\..+\.(\d+)-[^.]+" + re.escape(TAG) + "$")


class OutputError(DNCError, OSError):
    """A temporary output was renamed or replaced under us, so it cannot be put in place."""


def umask() -> int:
    """The process's umask, read from /proc (0o022 where unreadable)."""
    try:  # (os.umask can only be read by setting it: not thread-safe)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


class Temp:
    """A temporary file for `final`, created exclusively in its folder (see the module docstring)."""

    def __init__(self, final: str | Path):
        self.final = Path(final)
        fd, name = tempfile.mkstemp(dir=self.final.parent, prefix=f".{self.final.name}.{os.getpid()}-", suffix=TAG)
        self.fd: int | None = fd
        self.path = Path(name)
        os.fchmod(fd, 0o666 & ~umask())

    @property
    def target(self) -> str:
        """A name to hand to a library that opens files by name: the created file itself (Linux), else its
        temporary name (checked again by commit)."""
        proc = f"/proc/self/fd/{self.fd}"
        return proc if os.path.exists(proc) else str(self.path)

    def open(self, mode: str = "wb"):
        """A file object writing the created file (its own descriptor: close it before commit)."""
        return os.fdopen(os.dup(self.fd), mode, encoding=None if "b" in mode else "utf-8")

    def commit(self) -> Path:
        """Rename the temporary onto the final name (replacing a link there, not following it)."""
        st, now = os.fstat(self.fd), os.lstat(self.path) if os.path.lexists(self.path) else None
        if now is None or not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            self.discard()
            raise OutputError(f"{self.path}: the temporary file for {self.final} was renamed or replaced while it "
                              "was written (by another process?); not put in place")
        if self.final.is_symlink():
            log.warning("replacing the symbolic link %s (to %s) with a file; its target is left as it is",
                        self.final, os.readlink(self.final))
        os.replace(self.path, self.final)
        self._close()
        return self.final

    def discard(self) -> None:
        """Remove the temporary (when it is still ours) and close it; harmless twice."""
        if self.fd is not None:
            try:
                now, st = os.lstat(self.path), os.fstat(self.fd)
                if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    self.path.unlink()
            except FileNotFoundError:
                pass
        self._close()

    def _close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(folder: Path, names: str = "*") -> list[Path]:
    """Remove the temporaries in `folder` (of finals matching the glob `names`) left by processes no longer
    running; returns those removed. A link or another user's file is unlinked if the folder allows it (the
    link's target is never touched), else left with a warning."""
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.glob(f".{names}.*{TAG}"):
        m = _STALE.match(p.name)
        if not m or int(m.group(1)) == os.getpid() or _running(int(m.group(1))):
            continue
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove the stale temporary %s: %s", p, e)
    if removed:
        log.info("removed %d stale temporary file(s) in %s", len(removed), folder)
    return removed
