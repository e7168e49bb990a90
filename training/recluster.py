"""Batched offline clustering of class memories: how sub-centroids start from data and come back to life.

The same rule as the online update and as `dnc centroids` (export/clustering.py, its numpy
reference): each round assigns every sample of a class to the argmax of the equipartition Sinkhorn
plan and moves each sub-centroid to the normalised mean of its samples (the momentum update with
mu = 0, the whole memory being at hand). Seeds are k-means++ draws on the sphere (probability
proportional to 1 - cosine to the nearest seed so far), where sub-centroids the caller keeps count
as seeds already. Random draws come from a generator the caller seeds, and every tensor is the
gathered memory, so every rank computes the same result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dnc.training.sinkhorn import sinkhorn_assign


@torch.no_grad()
def kmeanspp_seeds(feats: torch.Tensor, mask: torch.Tensor, k_mask: torch.Tensor, current: torch.Tensor,
                   keep: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fill the sub-centroids not kept with k-means++ draws from each class's samples.

    Args:
        feats: (T, M, D) unit embeddings. mask: (T, M) bool, real samples (each class has >= 1).
        k_mask: (T, K) bool, real sub-centroids. current: (T, K, D) sub-centroids now.
        keep: (T, K) bool, sub-centroids kept as they are (already seeds).
        generator: CPU generator for the draws (one uniform number per class per drawn slot).
    Returns:
        (T, K, D) seeds: kept rows unchanged, the other real rows set to drawn samples.
    """
    t, m, _ = feats.shape
    cents = current.clone()
    chosen = keep & k_mask  # (T, K)
    rows = torch.arange(t, device=feats.device)
    for j in range(cents.shape[1]):
        need = k_mask[:, j] & ~chosen[:, j]  # (T,)
        if not bool(need.any()):
            continue
        sim = torch.bmm(feats, cents.transpose(1, 2)).masked_fill(~chosen[:, None, :], float("-inf"))  # (T, M, K)
        best = sim.max(2).values  # (T, M), -inf where a class has no seed yet
        weight = torch.where(torch.isinf(best), torch.ones_like(best), (1.0 - best).clamp(min=0)) * mask
        weight = torch.where(weight.sum(1, keepdim=True) > 0, weight, mask.to(weight.dtype))  # all at a seed
        cdf = weight.double().cumsum(1)  # (T, M)
        u = torch.rand(t, generator=generator, dtype=torch.float64).to(feats.device)
        pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp(max=m - 1)[:, 0]  # (T,)
        cents[:, j] = torch.where(need[:, None], feats[rows, pick], cents[:, j])
        chosen[:, j] |= need
    return cents


@torch.no_grad()
def sinkhorn_kmeans(feats: torch.Tensor, mask: torch.Tensor, k_mask: torch.Tensor, init: torch.Tensor,
                    rounds: int = 10, epsilon: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Rounds of equipartition clustering per class from `init`.

    Args:
        feats: (T, M, D) unit embeddings. mask: (T, M) bool. k_mask: (T, K) bool.
        init: (T, K, D) starting sub-centroids.
    Returns:
        (T, K, D) unit sub-centroids (padded slots zero). A sub-centroid left without samples in a
        round keeps its previous value.
    """
    cents = init
    kmax = init.shape[1]
    assign = None
    for _ in range(rounds):
        sim = torch.bmm(feats, cents.transpose(1, 2))  # (T, M, K)
        new = sinkhorn_assign(sim, mask, k_mask, epsilon=epsilon, iters=iters)  # (T, M)
        if assign is not None and torch.equal(new[mask], assign[mask]):
            break
        assign = new
        onehot = F.one_hot(assign, kmax).to(feats.dtype) * mask[..., None]  # (T, M, K)
        counts = onehot.sum(1)  # (T, K)
        sums = torch.bmm(onehot.transpose(1, 2), feats)  # (T, K, D)
        has = (counts > 0) & k_mask
        cents = torch.where(has[..., None], F.normalize(sums, dim=-1), cents)
    return cents * k_mask[..., None]
