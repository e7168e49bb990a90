"""The centroid set artefact (a class list as data): the only module that reads and writes it.

A set is a folder holding `centroids.safetensors` (tensors, with a JSON description in its
metadata) and `centroids.json` (the same description, for people):
    centroids: (C, Kmax, D) float32, L2-normalised rows; padded rows (k >= K_c) are zero
    ks: (C,) int32, sub-centroids per class
    exemplar_ids: (C, Kmax) int64, dataset id of the real image a sub-centroid is anchored to, -1 none
    exemplar_yx: (C, Kmax, 2) int32, segmentation sets only: the anchoring pixel (y, x) in that image
    thresholds: (C,) float32, optional: each class's abstention threshold on its score (a cosine, in
        [-1, 1]), calibrated on images of the class held out from its sub-centroids (export/abstention.py);
        UNCALIBRATED (-1, the lowest cosine: accepts everything) for a class too small to hold any out
and, in the JSON: the task ("classification", or "segmentation" for a set made from masks: a head of
the one cannot serve the other), class names, exemplar names (file paths or set/split/index), the fingerprint of
the embedding graph the centroids live in, how the set was made, and `set_id`, a content hash that
names this class list version. No pickle. Torch-free (`dnc centroids` runs on onnxruntime only).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from dnc.core import tasks
from dnc.core.class_names import check_class_names
from dnc.core.errors import DNCError
from dnc.core.formats import SET_JSON_FILE, SET_TENSORS_FILE

FORMAT = "dnc-centroid-set"
VERSION = 1
NORM_TOLERANCE = 1e-3
UNCALIBRATED = -1.0  # the threshold of a class with no held-out image to calibrate on: accepts every score


class CentroidSetError(DNCError, ValueError):
    """A centroid set that cannot be used; the message names the set and the reason."""


def fingerprint_file(path: str | Path) -> str:
    """Fingerprint of an embedding graph: sha256 of its bytes ("sha256:<hex>")."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


@dataclass
class CentroidSet:
    centroids: np.ndarray  # (C, Kmax, D) float32
    ks: list[int]
    class_names: list[str]
    embed_fingerprint: str
    exemplar_ids: np.ndarray | None = None  # (C, Kmax) int64, -1 where not anchored
    exemplar_names: list[list[str | None]] | None = None  # (C, K_c) readable ids
    source: dict = field(default_factory=dict)  # how it was made
    task: str = tasks.CLASSIFICATION.name  # or tasks.SEGMENTATION.name (made from masks)
    exemplar_yx: np.ndarray | None = None  # (C, Kmax, 2) int32 (y, x) of a segmentation exemplar, -1 none
    thresholds: np.ndarray | None = None  # (C,) float32 abstention thresholds; None: the set never abstains

    @property
    def num_classes(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[2]

    @property
    def k_mask(self) -> np.ndarray:
        """(C, Kmax) bool, True for real sub-centroids."""
        return np.arange(self.centroids.shape[1])[None, :] < np.asarray(self.ks)[:, None]

    @property
    def class_thresholds(self) -> np.ndarray:
        """(C,) float32: the thresholds, or UNCALIBRATED for every class of a set without them."""
        if self.thresholds is None:
            return np.full(self.num_classes, UNCALIBRATED, np.float32)
        return self.thresholds.astype(np.float32)

    @property
    def anchored(self) -> bool:
        return self.exemplar_ids is not None and bool((self.exemplar_ids[self.k_mask] >= 0).all())

    @property
    def set_id(self) -> str:
        """Content hash naming this class-list version: centroids, K per class and class names."""
        h = hashlib.sha256(np.ascontiguousarray(self.centroids, dtype=np.float32).tobytes())
        h.update(json.dumps([self.ks, self.class_names, self.embed_fingerprint]).encode())
        if tasks.task(self.task).dense:  # (classification sets keep the ids they were written with)
            h.update(self.task.encode())
        if self.thresholds is not None:  # (sets without thresholds keep the ids they were written with)
            h.update(b"thresholds" + np.ascontiguousarray(self.thresholds, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "set_id": self.set_id, "num_classes": self.num_classes,
                "dim": self.dim, "kmax": int(self.centroids.shape[1]), "ks": list(self.ks),
                "class_names": list(self.class_names), "embed_fingerprint": self.embed_fingerprint,
                "anchored": self.anchored, "exemplar_names": self.exemplar_names, "source": self.source,
                "task": self.task,
                "thresholds": None if self.thresholds is None else [float(t) for t in self.thresholds]}


def validate(cs: CentroidSet, where: str = "centroid set") -> None:
    """Refuse a set that cannot be served: shapes, finite values, unit norms, names, K per class."""
    p = cs.centroids
    if p.ndim != 3 or p.shape[0] < 2 or p.shape[1] < 1 or p.shape[2] < 1:
        raise CentroidSetError(f"{where}: centroids must be (C >= 2, K, D), got shape {tuple(p.shape)}")
    c, kmax, _ = p.shape
    try:
        check_class_names(cs.class_names, where)
    except ValueError as e:
        raise CentroidSetError(str(e)) from None
    if len(cs.ks) != c:
        raise CentroidSetError(f"{where}: {len(cs.ks)} K values for {c} classes")
    bad_k = [(i, k) for i, k in enumerate(cs.ks) if not 1 <= k <= kmax]
    if bad_k:
        i, k = bad_k[0]
        raise CentroidSetError(f"{where}: class {i} ({cs.class_names[i] if i < len(cs.class_names) else '?'}) "
                               f"has K={k}; every class needs 1..{kmax} sub-centroids")
    if len(cs.class_names) != c:
        raise CentroidSetError(f"{where}: {len(cs.class_names)} class names for {c} classes")
    if not np.isfinite(p).all():
        c_bad = int(np.argwhere(~np.isfinite(p))[0][0])
        raise CentroidSetError(f"{where}: non-finite values (NaN/inf) in the centroids of class {c_bad} "
                               f"({cs.class_names[c_bad]})")
    norms = np.linalg.norm(p.astype(np.float64), axis=-1)  # (C, Kmax)
    mask = cs.k_mask
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if (off & mask).any():
        c_bad = int(np.argwhere(off & mask)[0][0])
        raise CentroidSetError(f"{where}: sub-centroids of class {c_bad} ({cs.class_names[c_bad]}) are not "
                               "L2-normalised")
    if (norms[~mask] != 0).any():
        raise CentroidSetError(f"{where}: padded sub-centroid slots must be zero")
    if p.dtype != np.float32:
        raise CentroidSetError(f"{where}: centroids must be float32, got {p.dtype}")
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", cs.embed_fingerprint or ""):
        raise CentroidSetError(f"{where}: embedding fingerprint {cs.embed_fingerprint!r} is not sha256:<64 hex>")
    if cs.exemplar_ids is not None and cs.exemplar_ids.shape != (c, kmax):
        raise CentroidSetError(f"{where}: exemplar ids have shape {tuple(cs.exemplar_ids.shape)}, expected {(c, kmax)}")
    if cs.task not in tasks.TASKS:
        raise CentroidSetError(f"{where}: unknown task {cs.task!r} (one of {', '.join(tasks.TASKS)})")
    if cs.exemplar_yx is not None and (not tasks.task(cs.task).dense or cs.exemplar_yx.shape != (c, kmax, 2)):
        raise CentroidSetError(f"{where}: exemplar pixels need a segmentation set and shape {(c, kmax, 2)}")
    if cs.exemplar_names is not None and [len(r) for r in cs.exemplar_names] != list(cs.ks):
        raise CentroidSetError(f"{where}: exemplar names do not match K per class")
    if cs.thresholds is not None:
        _validate_thresholds(cs, where)


def _validate_thresholds(cs: CentroidSet, where: str) -> None:
    """Thresholds a head can compare scores with: one float32 per class, finite, within the cosine's range."""
    t = cs.thresholds
    if t.shape != (cs.num_classes,) or t.dtype != np.float32:
        raise CentroidSetError(f"{where}: thresholds must be float32 of shape ({cs.num_classes},), one per class; got "
                               f"{t.dtype} {tuple(t.shape)}")
    bad = ~np.isfinite(t) | (t < -1.0) | (t > 1.0)
    if bad.any():
        c_bad = int(np.argmax(bad))
        raise CentroidSetError(f"{where}: the threshold of class {c_bad} ({cs.class_names[c_bad]}) is {t[c_bad]!r}; "
                               "a threshold is a cosine, a finite number in [-1, 1]")


def check_pairing(cs: CentroidSet, fingerprint: str, dim: int, where: str = "centroid set") -> None:
    """Refuse a set made in another embedding space than the model it is paired with."""
    if cs.dim != dim:
        raise CentroidSetError(f"{where}: centroids have D={cs.dim} but the embedding model outputs D={dim}")
    if cs.embed_fingerprint != fingerprint:
        raise CentroidSetError(f"{where} was made with embedding model {cs.embed_fingerprint[:19]}..., but it is "
                               f"paired with {fingerprint[:19]}...; recompute it with `dnc centroids` on this "
                               "model's embed.onnx")


def save(cs: CentroidSet, folder: str | Path) -> Path:
    """Validate and write the set into `folder` (created); each file is replaced atomically."""
    validate(cs, str(folder))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kmax = cs.centroids.shape[1]
    ids = cs.exemplar_ids if cs.exemplar_ids is not None else np.full((cs.num_classes, kmax), -1, np.int64)
    tensors = {"centroids": np.ascontiguousarray(cs.centroids, dtype=np.float32),
               "ks": np.asarray(cs.ks, dtype=np.int32), "exemplar_ids": np.ascontiguousarray(ids, dtype=np.int64)}
    if cs.exemplar_yx is not None:
        tensors["exemplar_yx"] = np.ascontiguousarray(cs.exemplar_yx, dtype=np.int32)
    if cs.thresholds is not None:
        tensors["thresholds"] = np.ascontiguousarray(cs.thresholds, dtype=np.float32)
    meta = dict(cs.describe(), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    tmp = folder / f".{SET_TENSORS_FILE}.tmp{os.getpid()}"
    save_file(tensors, str(tmp), metadata={"dnc": json.dumps(meta)})
    os.replace(tmp, folder / SET_TENSORS_FILE)
    tmp = folder / f".{SET_JSON_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, folder / SET_JSON_FILE)
    return folder


def load(path: str | Path, expect_fingerprint: str | None = None, expect_dim: int | None = None) -> CentroidSet:
    """Read a set from its folder (or its .safetensors file) and validate it; with `expect_*`, also
    refuse it unless it pairs with that embedding model (see `check_pairing`)."""
    path = Path(path)
    file = path / SET_TENSORS_FILE if path.is_dir() else path
    if not file.is_file():
        raise CentroidSetError(f"no centroid set at {path} (expected {SET_TENSORS_FILE} in a folder)")
    try:
        with safe_open(str(file), framework="np") as f:
            meta = json.loads((f.metadata() or {}).get("dnc", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CentroidSetError(f"{file} is not a readable centroid set: {e}") from e
    if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise CentroidSetError(f"{file}: not a DNC centroid set (format {meta.get('format')} v{meta.get('version')})")
    missing = {"centroids", "ks"} - set(tensors)
    if missing:
        raise CentroidSetError(f"{file}: missing tensors {sorted(missing)}")
    cs = CentroidSet(centroids=tensors["centroids"], ks=[int(k) for k in tensors["ks"]],
                     class_names=meta.get("class_names", []), embed_fingerprint=meta.get("embed_fingerprint", ""),
                     exemplar_ids=tensors.get("exemplar_ids"), exemplar_names=meta.get("exemplar_names"),
                     source=meta.get("source", {}), task=tasks.of(meta).name,
                     exemplar_yx=tensors.get("exemplar_yx"), thresholds=tensors.get("thresholds"))
    validate(cs, str(file))
    if meta.get("set_id") and meta["set_id"] != cs.set_id:
        raise CentroidSetError(f"{file}: content does not match its recorded set id {meta['set_id']} "
                               "(edited or damaged)")
    if expect_fingerprint is not None or expect_dim is not None:
        check_pairing(cs, expect_fingerprint or cs.embed_fingerprint, expect_dim or cs.dim, str(file))
    return cs

