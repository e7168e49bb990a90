"""Independent numpy float64 references for the DNC head and Sinkhorn clustering (tests only)."""

from __future__ import annotations

import numpy as np


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def dnc_scores(emb: np.ndarray, centroids: np.ndarray, ks: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the best cosine over its own K_c sub-centroids, and that sub-centroid's index."""
    x = normalise(emb.astype(np.float64))
    scores = np.zeros((len(x), len(ks)))
    win = np.zeros((len(x), len(ks)), dtype=np.int64)
    for c, k in enumerate(ks):
        p = normalise(centroids[c, :k].astype(np.float64))
        s = x @ p.T  # (N, k)
        scores[:, c], win[:, c] = s.max(1), s.argmax(1)
    return scores, win


def sinkhorn_plan(sim: np.ndarray, epsilon: float, iters: int) -> np.ndarray:
    """Textbook Sinkhorn-Knopp for one class (SwAV form) in float64, with exp max-subtraction.

    sim: (N, K). Returns (N, K) plan whose rows sum to 1.
    """
    q = np.exp((sim - sim.max()) / epsilon).T  # (K, N)
    q /= q.sum()
    k, n = q.shape
    for _ in range(iters):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= n
    return (q * n).T
