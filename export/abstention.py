"""Abstention: per-class score thresholds, calibrated on held-out images, and the decision they give.

The groundwork of issue 25, item 3 (not yet carried by sets or served). A class's score for an image is
the head's: the best cosine between the image's embedding and the class's sub-centroids (max over K).
`calibrate` sets each class's threshold from images of that class that its sub-centroids were not built
from, so that a chosen share of them (`accept`, default 0.95) clears it; `decide` answers the best class
and whether its score clears that class's threshold ("unknown" when not).
"""

from __future__ import annotations

import numpy as np

from dnc.core.centroid_set import CentroidSet
from dnc.core.errors import InputError

DEFAULT_ACCEPT = 0.95


def class_scores(cs: CentroidSet, x: np.ndarray) -> np.ndarray:
    """(N, D) embeddings -> (N, C) float32 scores: each class's best sub-centroid cosine."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = np.einsum("nd,ckd->nck", unit.astype(np.float32), cs.centroids.astype(np.float32))  # (N, C, Kmax)
    return np.where(cs.k_mask[None], sims, -np.inf).max(axis=2)


def calibrate(cs: CentroidSet, x: np.ndarray, labels: np.ndarray, accept: float = DEFAULT_ACCEPT) -> np.ndarray:
    """(C,) float32 thresholds: for each class, the largest score that `accept` of its held-out images
    (x (N, D) with labels (N,)) reach or pass. Every class needs held-out images."""
    if not 0.0 < accept <= 1.0:
        raise InputError(f"`accept` is the share of a class's images to accept, in (0, 1]; got {accept}")
    scores = class_scores(cs, x)
    out = np.empty(cs.num_classes, np.float32)
    for c, name in enumerate(cs.class_names):
        own = np.sort(scores[labels == c, c])  # ascending
        if len(own) == 0:
            raise InputError(f"class {name!r} has no held-out images to calibrate its threshold on")
        out[c] = own[int(np.floor((1.0 - accept) * len(own) + 1e-9))]  # at least `accept` of them are >= it
    return out


def decide(scores: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) scores -> (best class (N,) int32, accepted (N,) bool: its score clears its threshold)."""
    best = scores.argmax(axis=1)
    return best.astype(np.int32), scores[np.arange(len(best)), best] >= thresholds[best]
