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


def live_counts(emb: np.ndarray, labels: np.ndarray, centroids: np.ndarray, ks: list[int], share: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per class: live sub-centroids (nearest own-class sub-centroid for >= share of the class's
    samples) and mean pairwise cosine of its sub-centroids (NaN when K is 1)."""
    x = normalise(emb.astype(np.float64))
    live, cos = np.zeros(len(ks), dtype=np.int64), np.full(len(ks), np.nan)
    for c, k in enumerate(ks):
        p = normalise(centroids[c, :k].astype(np.float64))
        rows = x[labels == c]
        if len(rows):
            wins = np.bincount((rows @ p.T).argmax(1), minlength=k)
            live[c] = int((wins >= share * len(rows)).sum())
        if k > 1:
            g = p @ p.T
            cos[c] = (g.sum() - np.trace(g)) / (k * (k - 1))
    return live, cos


def sinkhorn_kmeans(x: np.ndarray, init: np.ndarray, rounds: int, epsilon: float, iters: int) -> np.ndarray:
    """One class: rounds of (Sinkhorn-plan argmax, normalised mean) from init (K, D); an empty
    cluster keeps its centroid; stops when the assignment no longer changes."""
    x, cents, assign = normalise(x.astype(np.float64)), init.astype(np.float64), None
    for _ in range(rounds):
        new = sinkhorn_plan(x @ cents.T, epsilon, iters).argmax(1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(len(cents)):
            if (assign == j).any():
                cents[j] = normalise(x[assign == j].sum(0))
    return cents
