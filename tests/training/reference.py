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


def bilinear_resize(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(N, C, h, w) -> (N, C, H, W) bilinear with half-pixel centres, edges clamped, float64: output
    pixel y reads source row (y + 0.5) * h / H - 0.5, written out loop by loop."""
    x = x.astype(np.float64)
    n, c, h, w = x.shape
    out = np.zeros((n, c, out_h, out_w))
    for oy in range(out_h):
        sy = max((oy + 0.5) * h / out_h - 0.5, 0.0)
        y0 = min(int(np.floor(sy)), h - 1)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for ox in range(out_w):
            sx = max((ox + 0.5) * w / out_w - 0.5, 0.0)
            x0 = min(int(np.floor(sx)), w - 1)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            out[:, :, oy, ox] = ((1 - fy) * (1 - fx) * x[:, :, y0, x0] + (1 - fy) * fx * x[:, :, y0, x1]
                                 + fy * (1 - fx) * x[:, :, y1, x0] + fy * fx * x[:, :, y1, x1])
    return out


def segment(emb: np.ndarray, centroids: np.ndarray, ks: list[int], out_h: int, out_w: int) -> dict:
    """The segmentation head in float64: cell embeddings (N, D, h, w) -> per pixel of (H, W) the class
    scores (bilinear upsampling of each cell's best-sub-centroid cosines), label, top score, margin, and
    the winning sub-centroid of the label at the pixel's nearest cell (the cell holding its centre)."""
    n, d, h, w = emb.shape
    flat = emb.transpose(0, 2, 3, 1).reshape(-1, d)
    scores, win = dnc_scores(flat, centroids, ks)  # (N*h*w, C)
    cells = scores.reshape(n, h, w, -1).transpose(0, 3, 1, 2)  # (N, C, h, w)
    up = bilinear_resize(cells, out_h, out_w)  # (N, C, H, W)
    labels = up.argmax(1)
    top = np.sort(up, axis=1)
    rows = np.minimum(np.floor((np.arange(out_h) + 0.5) * h / out_h).astype(int), h - 1)
    cols = np.minimum(np.floor((np.arange(out_w) + 0.5) * w / out_w).astype(int), w - 1)
    win = win.reshape(n, h, w, -1)[:, rows][:, :, cols]  # (N, H, W, C)
    sub = np.take_along_axis(win, labels[..., None], 3)[..., 0]
    return {"scores": up, "labels": labels, "top_score": top[:, -1], "margin": top[:, -1] - top[:, -2],
            "subcentroid": sub}
