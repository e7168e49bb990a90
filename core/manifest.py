"""The export folder artefact: `manifest.json`, the only module that reads and writes it.

An export folder holds the graphs (formats.EMBED_FILE, EMBED_FP16_FILE, HEAD_FILE, MERGED_FILE,
optional *.plan engines), the centroid set it was exported with, and this manifest: versions,
tensor names and shapes, the preprocessing (core/preprocess.py's description), the embedding fingerprint and the
parity figures measured before the export was declared done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dnc.core import preprocessing_check
from dnc.core.errors import InputError
from dnc.core.formats import MANIFEST_FILE

FORMAT = "dnc-export"
VERSION = 1


def write(folder: str | Path, manifest: dict) -> Path:
    path = Path(folder) / MANIFEST_FILE
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(dict(manifest, format=FORMAT, version=VERSION), indent=1))
    os.replace(tmp, path)
    return path


def read(folder: str | Path) -> dict:
    """Read an export folder's manifest (folder, or the manifest file itself), its preprocessing checked
    against what `dnc export` writes and against the embed.onnx beside it (core/preprocessing_check.py)."""
    path = Path(folder)
    path = path / MANIFEST_FILE if path.is_dir() else path
    if not path.is_file():
        raise InputError(f"no export manifest at {path}: export a checkpoint with `dnc export`")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not a JSON export manifest ({e}): export the checkpoint again") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path} is not a DNC export manifest (a JSON {type(meta).__name__}, not an object)")
    if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise InputError(f"{path}: not a DNC export manifest (format {meta.get('format')} v{meta.get('version')})")
    preprocessing_check.check(meta, path.parent, path)
    return meta
