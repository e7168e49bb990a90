"""The sub-centroids a DNC checkpoint carries, as a centroid set; and the error of a failed export.

It needs the checkpoint only, not the graphs; `dnc export` (exporter.py) writes what it returns.
"""

from __future__ import annotations

import numpy as np

from dnc.core import tasks
from dnc.core.centroid_set import CentroidSet
from dnc.core.errors import DNCError
from dnc.core.seg_folder import pixel_of, source_pixel
from dnc.training import checkpoint as ckpt_io


class ExportError(DNCError, ValueError):
    """An export that failed its checks; the message gives the figures and where they are kept."""


def set_from_checkpoint(ck: ckpt_io.Checkpoint, fingerprint: str) -> CentroidSet:
    """The trained sub-centroids of a DNC checkpoint (classifier or segmenter) as a centroid set paired
    with `fingerprint`."""
    state = ck.model_state
    k_mask = state["head.k_mask"].numpy()  # (C, Kmax)
    ids = state["head.exemplar_ids"].numpy()  # (C, Kmax)
    names = ck.extra.get("exemplar_names") if ck.extra.get("anchored") else None
    if names is not None:
        names = [[n for n, real in zip(row, mask, strict=True) if real]
                 for row, mask in zip(names, k_mask, strict=True)]
    centroids = state["head.centroids"].float().numpy() * k_mask[..., None]
    norms = np.linalg.norm(centroids, axis=-1, keepdims=True)
    centroids = np.where(k_mask[..., None], centroids / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
    if tasks.task(ck.model_config.task).dense:  # pixel ids -> the image's id (the pixel goes to exemplar_yx)
        ids = np.where(ids >= 0, ids // ck.model_config.image_size**2, -1)
    return CentroidSet(centroids=centroids, ks=[int(k) for k in k_mask.sum(1)],
                       class_names=list(ck.model_config.class_names), embed_fingerprint=fingerprint,
                       exemplar_ids=ids if ck.extra.get("anchored") else None, exemplar_names=names,
                       source={"from": "checkpoint", "step": ck.step, "epoch": ck.epoch,
                               "anchor_data": ck.extra.get("anchor_data")}, task=ck.model_config.task,
                       exemplar_yx=_exemplar_pixels(ck) if ck.extra.get("anchored") else None)


def _exemplar_pixels(ck: ckpt_io.Checkpoint) -> np.ndarray | None:
    """(C, Kmax, 2) anchoring pixels (y, x) of an anchored segmenter in its exemplar files' own
    coordinates (training saw each file resized and centre-cropped to image_size); None for classifiers."""
    if not tasks.task(ck.model_config.task).dense:
        return None
    pid = ck.model_state["head.exemplar_ids"].numpy()
    names = ck.extra.get("exemplar_names") or []
    size = ck.model_config.image_size
    out = np.full((*pid.shape, 2), -1, np.int32)
    for c, k in zip(*np.nonzero(pid >= 0), strict=True):
        _, y, x = pixel_of(int(pid[c, k]), size)
        out[c, k] = source_pixel(names[c][k], size, y, x) if names and names[c][k] else (y, x)
    return out
