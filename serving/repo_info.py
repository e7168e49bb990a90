"""The repository's description, `repository.json`: the one module that reads and writes it.

Kept apart from repository.py (which builds repositories) so that the server, which only needs to know
which entry models a repository serves, does not import the builder, and the builder's check for a
running server (state.py -> server.py) closes no import circle.
"""

from __future__ import annotations

import json
from pathlib import Path

from dnc.core import formats as F
from dnc.core.errors import InputError

FORMAT = "dnc-model-repository"
VERSION = 2  # 1: one model, its description at the top level of repository.json
INFO_FILE = "repository.json"


def write_info(repo: Path, whole: dict) -> None:
    """Replace the description atomically (a reader sees the old one or the new one, never a part)."""
    tmp = Path(repo) / f".{INFO_FILE}.tmp"
    tmp.write_text(json.dumps(dict(whole, format=FORMAT, version=VERSION), indent=1))
    tmp.replace(Path(repo) / INFO_FILE)


def read_info(repo: str | Path) -> dict:
    """The repository's description, {"models": {NAME: description}}; refuses a folder that is not a DNC
    model repository. A version-1 description (one model, named dnc) reads as a version-2 one."""
    path = Path(repo) / INFO_FILE
    if not path.is_file():
        raise InputError(f"{repo} is not a built DNC model repository (no {INFO_FILE}): run `dnc repo build` first")
    try:
        info = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        info = None
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("version", 0) > VERSION:
        raise InputError(f"{path}: not a DNC model repository description")
    if info.get("version", 1) == 1:
        one = {k: v for k, v in info.items() if k not in ("format", "version")}
        info = {"format": FORMAT, "version": VERSION, "models": {F.DEFAULT_MODEL: one}}
    return info
