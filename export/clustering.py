"""Offline clustering of one class's embeddings into K sub-centroids (numpy, torch-free).

`sinkhorn` (default) uses the training rule (paper section 3): each round solves the
equipartition transport plan between the class's samples and its sub-centroids with a few
log-domain Sinkhorn-Knopp iterations, assigns each sample to the argmax of the plan, and moves each
sub-centroid to the normalised mean of its samples (the full-batch form of training's momentum
update, with mu = 0 since the whole class is at hand). `kmeans` is spherical k-means (plain
nearest-centroid assignment). Both start from k-means++ seeds drawn with a fixed seed.
"""

from __future__ import annotations

import numpy as np

from dnc.core.errors import InputError

METHODS = ("sinkhorn", "kmeans")


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))


def sinkhorn_log_plan(sim: np.ndarray, epsilon: float = 0.05, iters: int = 3) -> np.ndarray:
    """(N, K) similarities -> (N, K) log of the equipartition plan, each row summing to 1.

    Log domain throughout, so exp(sim / epsilon) never overflows at similarities of +-1."""
    n, k = sim.shape
    log_q = sim.astype(np.float64) / epsilon
    log_q -= _logsumexp(log_q.reshape(1, -1), axis=1)[0, 0]  # total mass 1
    for _ in range(iters):
        log_q = log_q - _logsumexp(log_q, axis=0) - np.log(k)  # each sub-centroid gets 1/K
        log_q = log_q - _logsumexp(log_q, axis=1) - np.log(n)  # each sample gets 1/N
    return log_q + np.log(n)


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds on the sphere (distance 1 - cosine): (N, D) unit rows -> (k, D)."""
    seeds = [int(rng.integers(len(x)))]
    dist = 1.0 - x @ x[seeds[0]]
    for _ in range(1, k):
        p = np.clip(dist, 0, None)
        total = p.sum()
        nxt = int(rng.choice(len(x), p=p / total)) if total > 0 else int(rng.integers(len(x)))
        seeds.append(nxt)
        dist = np.minimum(dist, 1.0 - x @ x[nxt])
    return x[seeds].copy()


def cluster(x: np.ndarray, k: int, method: str = "sinkhorn", epsilon: float = 0.05, sinkhorn_iters: int = 3,
            rounds: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cluster one class: (N, D) embeddings -> ((k', D) unit sub-centroids, (N,) assignment).

    k' = min(k, N): a class with fewer images than K gets fewer sub-centroids. Stops early when the
    assignment no longer changes. Empty clusters keep their previous centroid."""
    if method not in METHODS:
        raise InputError(f"unknown clustering method {method!r}; use one of {', '.join(METHODS)}")
    if len(x) == 0:
        raise InputError("cannot cluster an empty class")
    x = _normalise(x.astype(np.float64))
    k = min(k, len(x))
    rng = np.random.default_rng(seed)
    cents = kmeans_pp(x, k, rng)
    assign = np.full(len(x), -1)
    for _ in range(rounds):
        sim = x @ cents.T  # (N, k)
        new = sinkhorn_log_plan(sim, epsilon, sinkhorn_iters).argmax(1) if method == "sinkhorn" else sim.argmax(1)
        if np.array_equal(new, assign):
            break
        assign = new
        onehot = np.eye(k)[assign]  # (N, k)
        sums = onehot.T @ x  # (k, D)
        has = onehot.sum(0) > 0
        cents = np.where(has[:, None], _normalise(sums), cents)
    return cents.astype(np.float32), assign
