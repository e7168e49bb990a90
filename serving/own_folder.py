"""Folders the server runs from are the serving user's own.

`dnc serve` executes what its repository holds (each python model's model.py) and writes beside it a
run folder (`PARENT/.REPO.server`: the backend's links to the stub it executes, the logs it appends
to, the serve lock). With the repository in a world-writable folder such as /tmp, another local user
could create that run folder first, plant a link as the log, or replace the stub: code run as the
serving user. So a run folder is created 0700, or refused when it exists and is not a real folder of
this user that only this user may write; a repository (and everything in it) must be this user's and
writable by no one else; logs are opened without following links.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dnc.core.errors import DNCError


class FolderError(DNCError, ValueError):
    """A folder (or file in it) the server would run from that another user could change; names it."""


def _check(path: Path, what: str, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise FolderError(f"{what} {path} is a symbolic link; the server runs only from real folders of its "
                          "own user: remove it, or serve from another folder")
    if st.st_uid != os.geteuid():
        raise FolderError(f"{what} {path} belongs to user id {st.st_uid}, not to the user serving (id "
                          f"{os.geteuid()}): another user could change what the server runs; remove it (or ask "
                          "its owner to), or serve from a folder of your own")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise FolderError(f"{what} {path} may be written by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                          f"make it yours alone: chmod go-w {path}")


def run_folder(path: Path) -> Path:
    """Create the server's run folder 0700, or check the existing one (see the module docstring)."""
    path = Path(path)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISLNK(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        raise FolderError(f"the run folder {path} is not a folder; remove it")
    _check(path, "the run folder", st)
    os.chmod(path, 0o700)  # one made by an older version (umask mode): its logs are nobody else's to read
    return path


def own_tree(root: Path, what: str = "the repository") -> None:
    """Refuse a repository if it, or anything in it, is a link, another user's, or writable by others."""
    root = Path(root)
    _check(root, what, os.lstat(root))
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            _check(path, f"{path.relative_to(root)} in {what}", os.lstat(path))


def open_log(path: Path):
    """A log opened for appending, created 0600, never through a link (O_NOFOLLOW)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:  # ELOOP: a link planted at the log's name
        raise FolderError(f"cannot open the log {path} ({e.strerror}): the server never writes through a link; "
                          "remove it") from None
    return os.fdopen(fd, "ab")
