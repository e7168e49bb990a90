"""Abstention: per-class score thresholds, calibrated on held-out images, and the decision they give.

A class's score for an image is the head's: the best cosine between the image's embedding and the
class's sub-centroids (max over K). When a set is built (`dnc centroids`) or a class is added to one
(`--from SET --add`), `hold_out` sets aside a share of each class's images before its sub-centroids are
made, and `class_threshold` puts the class's threshold where a chosen share of those held-out images
(`accept`, default 0.95) still clears it: the threshold is calibrated on images its sub-centroids never
saw, so it predicts how the class's unseen images score. The served head answers, per image, whether
its best class clears that class's threshold (`decide`; "unknown" when not). A class with a single
image has nothing to hold out: it gets UNCALIBRATED (-1, accepts everything) and a warning.
"""

from __future__ import annotations

import logging

import numpy as np

from dnc.core.centroid_set import UNCALIBRATED, CentroidSet
from dnc.core.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_ACCEPT = 0.95  # the share of a class's held-out images its threshold accepts
DEFAULT_SHARE = 0.2  # the share of each class's images held out to calibrate on (0: no thresholds)


def check_calibration(accept: float, share: float) -> None:
    """Refuse an accepted share outside (0, 1] or a held-out share outside [0, 1), naming the parameter."""
    if not 0.0 < accept <= 1.0:
        raise InputError(f"`accept` is the share of a class's held-out images to accept, in (0, 1]; got {accept}")
    if not 0.0 <= share < 1.0:
        raise InputError(f"`calibration_share` is the share of each class's images held out to calibrate its "
                         f"threshold on, in [0, 1) (0: no thresholds); got {share}")


def hold_out(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """(N,) bool: the images held out of each class (seeded): floor(share x n) of a class of n, at least one
    when the class has two or more images and share > 0, never all of them."""
    held = np.zeros(len(labels), bool)
    if share <= 0:
        return held
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = len(members)
        take = 0 if n < 2 else min(n - 1, max(1, int(np.floor(share * n + 1e-9))))
        held[members[:take]] = True
    return held


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_threshold(subcentroids: np.ndarray, held: np.ndarray, accept: float) -> float:
    """One class's threshold: (k, D) unit sub-centroids, (n, D) embeddings of its held-out images -> the
    largest score that at least `accept` of them reach (UNCALIBRATED when n is 0)."""
    if len(held) == 0:
        return UNCALIBRATED
    own = np.sort((unit(held).astype(np.float32) @ subcentroids.astype(np.float32).T).max(axis=1))  # (n,) ascending
    return float(own[int(np.floor((1.0 - accept) * len(own) + 1e-9))])


def class_scores(cs: CentroidSet, x: np.ndarray) -> np.ndarray:
    """(N, D) embeddings -> (N, C) float32 scores: each class's best sub-centroid cosine."""
    sims = np.einsum("nd,ckd->nck", unit(x).astype(np.float32), cs.centroids.astype(np.float32))  # (N, C, Kmax)
    return np.where(cs.k_mask[None], sims, -np.inf).max(axis=2)


def calibrate(cs: CentroidSet, x: np.ndarray, labels: np.ndarray, accept: float = DEFAULT_ACCEPT) -> np.ndarray:
    """(C,) float32 thresholds from held-out images x (N, D) with labels (N,): for each class, the largest
    score that `accept` of its held-out images reach; UNCALIBRATED (with a warning) for a class with none."""
    check_calibration(accept, 0.0)
    out = np.empty(cs.num_classes, np.float32)
    for c in range(cs.num_classes):
        out[c] = class_threshold(cs.centroids[c, :cs.ks[c]], x[labels == c], accept)
    none = [cs.class_names[c] for c in range(cs.num_classes) if not (labels == c).any()]
    if none:
        log.warning("no held-out image to calibrate the threshold of %s (a class needs 2 images or more): it "
                    "accepts every image it wins", ", ".join(map(repr, none)))
    return out


def decide(scores: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) scores -> (best class (N,) int32, accepted (N,) bool: its score clears its threshold)."""
    best = scores.argmax(axis=1)
    return best.astype(np.int32), scores[np.arange(len(best)), best] >= thresholds[best]
