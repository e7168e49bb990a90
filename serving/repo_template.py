"""The checked-in template of a model repository: what a fresh clone's `model_repository/` holds.

Git keeps its README and the configs a build writes, as examples (the code a build copies, the weights,
the centroid sets and `repository.json` are not kept). So a copy of that folder is neither empty nor a
built repository; `dnc repo build` recognises it here, and clears its model folders before the first
build: a template family left beside the one built (say `dnc` when only a segmenter `scenes` is built)
has no weights, and the polling server would try to load it. (Repositories are best built outside the
checkout: `--repo` has no default.)
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

README_TITLE = "# DNC model repository"
TEMPLATE_FILES = frozenset({"README.md", "config.pbtxt", ".lock"})


def is_template(repo: Path) -> bool:
    """Whether `repo` holds only the text files a build writes and git keeps (README first, no links, no
    other file names; compiled code in __pycache__ is allowed): a repository waiting for its first build."""
    readme = repo / "README.md"
    if readme.is_symlink() or not readme.is_file() or not readme.read_text(errors="replace").startswith(README_TITLE):
        return False
    for path in repo.rglob("*"):
        if path.is_symlink():
            return False
        if path.is_file() and path.name not in TEMPLATE_FILES and not (
                "__pycache__" in path.parts and path.suffix == ".pyc"):
            return False
    return True


def clear_template(repo: Path) -> list[str]:
    """Remove the template's model folders (configs and code only: checked by `is_template` first); returns
    their names. The build then writes the families it builds."""
    removed = sorted(d.name for d in repo.iterdir() if d.is_dir())
    for name in removed:
        shutil.rmtree(repo / name)
    if removed:
        log.info("%s held the checked-in template (%s): cleared before its first build", repo, ", ".join(removed))
    return removed
