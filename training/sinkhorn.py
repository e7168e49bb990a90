"""Per-class Sinkhorn-Knopp clustering with equipartition, batched over classes.

Each class c owns up to K_c sub-centroids and N_c samples. The optimal-transport plan between
samples and sub-centroids is solved in the log domain (so exp(similarity / epsilon) never
overflows, even for similarities at +-1 with epsilon 0.05), in fp32 whatever autocast says, with
padding masks so that classes with different N_c and K_c share one batched call. Assignments are
the argmax of the plan (never a gumbel sample of it, see the notes on the public code).
"""

from __future__ import annotations

import torch

# Large finite negative used instead of -inf, so that log-sum-exp over an all-masked row stays
# finite (-inf - -inf would be NaN).
_NEG = -1.0e9


@torch.no_grad()
def sinkhorn_log(
    sim: torch.Tensor,
    sample_mask: torch.Tensor,
    k_mask: torch.Tensor,
    epsilon: float = 0.05,
    iters: int = 3,
) -> torch.Tensor:
    """Solve the equipartition transport plan per class.

    Args:
        sim: (T, N, K) similarities of each class's samples to its sub-centroids, in [-1, 1].
        sample_mask: (T, N) bool, True for real samples (padding False).
        k_mask: (T, K) bool, True for real sub-centroids.
        epsilon: entropic regularisation; the plan is exp(sim / epsilon) scaled.
        iters: Sinkhorn iterations (each one normalises sub-centroids then samples).

    Returns:
        (T, N, K) fp32 log of the plan, scaled so each real sample's row sums to 1 over K and
        each real sub-centroid's column sums to about N_c / K_c. Masked entries are very negative.
    """
    with torch.autocast(device_type=sim.device.type, enabled=False):
        sim = sim.float()
        valid = sample_mask[:, :, None] & k_mask[:, None, :]  # (T, N, K)
        n = sample_mask.sum(1).clamp(min=1).float()  # (T,)
        k = k_mask.sum(1).clamp(min=1).float()  # (T,)
        invalid = ~valid
        log_q = (sim / epsilon).masked_fill_(invalid, _NEG)
        # Start from a normalised plan (total mass 1) so the first iteration is well scaled.
        log_q = log_q - torch.logsumexp(log_q.flatten(1), dim=1)[:, None, None]
        log_row = -torch.log(k)[:, None, None]  # each sub-centroid gets mass 1/K_c
        log_col = -torch.log(n)[:, None, None]  # each sample gets mass 1/N_c
        for _ in range(iters):
            log_q = (log_q - torch.logsumexp(log_q, dim=1, keepdim=True) + log_row).masked_fill_(invalid, _NEG)
            log_q = (log_q - torch.logsumexp(log_q, dim=2, keepdim=True) + log_col).masked_fill_(invalid, _NEG)
        # Scale rows to sum to 1 (a distribution over sub-centroids per sample).
        return log_q + torch.log(n)[:, None, None]


@torch.no_grad()
def sinkhorn_assign(
    sim: torch.Tensor,
    sample_mask: torch.Tensor,
    k_mask: torch.Tensor,
    epsilon: float = 0.05,
    iters: int = 3,
) -> torch.Tensor:
    """Hard assignment of each sample to a sub-centroid of its class: the argmax of the plan.

    Args and shapes as in `sinkhorn_log`. Returns (T, N) int64 sub-centroid indices; entries of
    padded samples are meaningless and must be ignored by the caller.
    """
    return sinkhorn_log(sim, sample_mask, k_mask, epsilon=epsilon, iters=iters).argmax(dim=2)
