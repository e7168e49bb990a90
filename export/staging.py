"""Write a folder artefact in full beside its destination, then move it into place.

Readers of OUT (a server, a swap) never see a half-written export or centroid set, and a failure
leaves the previous OUT as it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def staging_folder(out: Path) -> Path:
    """A fresh empty folder beside `out` to write into."""
    tmp = out.with_name(f".{out.name}.partial{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, out: Path) -> Path:
    """Move the finished folder `tmp` to `out`, replacing a previous `out`."""
    if out.exists():
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out
