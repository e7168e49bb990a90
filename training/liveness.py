"""Which sub-centroids a DNC model actually uses: the live-sub-centroid measure.

A sub-centroid of class c is *live* when it is the nearest of class c's sub-centroids (cosine) for
at least `share` (5%) of class c's samples, counted by true label. A class whose K sub-centroids
collapse onto one has 1 live sub-centroid and behaves as K=1 at the cost of K. Reported beside
accuracy everywhere (per-epoch log, curves, `dnc eval`, the export manifest), together with the
mean pairwise cosine between a class's sub-centroids (1.0: all the same point).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LIVE_SHARE = 0.05


def win_counts(winners: torch.Tensor, labels: torch.Tensor, num_classes: int, kmax: int) -> torch.Tensor:
    """(N,) winners, (N,) labels -> (C, K) int64: how many samples of class c chose sub-centroid k."""
    flat = labels * kmax + winners
    return torch.bincount(flat, minlength=num_classes * kmax).view(num_classes, kmax)


def pairwise_cosine(centroids: torch.Tensor, k_mask: torch.Tensor) -> torch.Tensor:
    """(C, K, D) unit sub-centroids, (C, K) mask -> (C,) mean cosine over the pairs of a class's
    real sub-centroids (NaN for a class with one)."""
    c = F.normalize(centroids.double(), dim=-1) * k_mask[..., None]
    gram = torch.bmm(c, c.transpose(1, 2))  # (C, K, K)
    k = k_mask.sum(1).double()
    off = gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)
    pairs = k * (k - 1)
    return torch.where(pairs > 0, off / pairs.clamp(min=1), torch.full_like(k, float("nan")))


def live_mask(counts: torch.Tensor, k_mask: torch.Tensor, share: float = LIVE_SHARE) -> torch.Tensor:
    """(C, K) win counts -> (C, K) bool: real sub-centroids winning >= share of their class's samples."""
    total = counts.sum(1, keepdim=True)
    return k_mask & (total > 0) & (counts >= share * total)


def summarise(counts: torch.Tensor, centroids: torch.Tensor, k_mask: torch.Tensor,
              share: float = LIVE_SHARE) -> dict:
    """The measure as plain numbers, over the classes that had samples.

    Returns {"live_mean": mean live sub-centroids per class, "live_min": fewest in any class,
    "live_per_class": [C] (None for a class with no sample), "k_per_class": [C],
    "centroid_cos": mean over classes of the mean pairwise cosine (None when every K is 1),
    "centroid_cos_per_class": [C] (None where K is 1)}.
    """
    counts, k_mask = counts.cpu(), k_mask.cpu()
    live = live_mask(counts, k_mask, share).sum(1)  # (C,)
    seen = counts.sum(1) > 0
    cos = pairwise_cosine(centroids.detach().cpu(), k_mask)
    per_class = [int(v) if s else None for v, s in zip(live.tolist(), seen.tolist(), strict=True)]
    used = [v for v in per_class if v is not None]
    finite = cos[~torch.isnan(cos)]
    return {
        "live_mean": sum(used) / len(used) if used else None,
        "live_min": min(used) if used else None,
        "live_per_class": per_class,
        "k_per_class": [int(v) for v in k_mask.sum(1).tolist()],
        "centroid_cos": float(finite.mean()) if finite.numel() else None,
        "centroid_cos_per_class": [None if v != v else round(float(v), 4) for v in cos.tolist()],
    }
