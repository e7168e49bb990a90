"""Sinkhorn equipartition clustering: reference agreement, balance, stability, argmax assignment."""

import numpy as np
import pytest
import torch

from dnc.training.sinkhorn import sinkhorn_assign, sinkhorn_log
from tests.training.reference import sinkhorn_plan


def _random_sims(rng, t, n, k):
    x = rng.standard_normal((t, n, 8))
    p = rng.standard_normal((t, k, 8))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    p /= np.linalg.norm(p, axis=-1, keepdims=True)
    return np.einsum("tnd,tkd->tnk", x, p)


def test_plan_matches_float64_reference(rng):
    sims = _random_sims(rng, 3, 40, 4)
    mask_n, mask_k = torch.ones(3, 40, dtype=torch.bool), torch.ones(3, 4, dtype=torch.bool)
    plan = sinkhorn_log(torch.from_numpy(sims).float(), mask_n, mask_k, epsilon=0.05, iters=3).exp().numpy()
    for t in range(3):
        np.testing.assert_allclose(plan[t], sinkhorn_plan(sims[t], 0.05, 3), atol=1e-4)


def test_equipartition_balances_clusters(rng):
    # All samples prefer sub-centroid 0; the transport constraint must still spread them evenly.
    n, k = 64, 4
    sims = _random_sims(rng, 1, n, k) * 0.1
    sims[..., 0] += 0.5
    log_q = sinkhorn_log(torch.from_numpy(sims).float(), torch.ones(1, n, dtype=torch.bool),
                         torch.ones(1, k, dtype=torch.bool), 0.05, iters=50)
    plan = log_q.exp()[0].numpy()
    np.testing.assert_allclose(plan.sum(1), np.ones(n), atol=1e-4)  # each sample: one unit
    np.testing.assert_allclose(plan.sum(0), np.full(k, n / k), rtol=1e-3)  # each cluster: N/K
    counts = np.bincount(plan.argmax(1), minlength=k)
    assert counts.min() >= n / k * 0.5, counts  # hard assignment also spread out
    # The shipped setting (3 iterations) already spreads the hard assignment over every cluster.
    assign = sinkhorn_assign(torch.from_numpy(sims).float(), torch.ones(1, n, dtype=torch.bool),
                             torch.ones(1, k, dtype=torch.bool), 0.05, iters=3)
    counts3 = np.bincount(assign[0].numpy(), minlength=k)
    assert counts3.min() >= n / k * 0.5, counts3


@pytest.mark.parametrize("eps", [0.05, 0.01, 0.001])
def test_extreme_similarities_stay_finite(eps):
    sims = torch.tensor([[[1.0, -1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, -1.0]]])
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        log_q = sinkhorn_log(sims.to(dtype), torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool),
                             epsilon=eps, iters=3)
        assert log_q.dtype == torch.float32
        assert torch.isfinite(log_q).all()
        assert torch.isfinite(log_q.exp()).all()


def test_assignment_is_plan_argmax_with_padding(rng):
    # Classes with different sample counts and K share one call; padding never gets assigned.
    t, n, k = 4, 30, 5
    sims = torch.from_numpy(_random_sims(rng, t, n, k)).float()
    n_real, k_real = [30, 12, 5, 1], [5, 3, 2, 1]
    mask_n = torch.arange(n)[None] < torch.tensor(n_real)[:, None]
    mask_k = torch.arange(k)[None] < torch.tensor(k_real)[:, None]
    assign = sinkhorn_assign(sims, mask_n, mask_k, epsilon=0.05, iters=3)
    for i in range(t):
        ref = sinkhorn_plan(sims[i, : n_real[i], : k_real[i]].double().numpy(), 0.05, 3)
        np.testing.assert_array_equal(assign[i, : n_real[i]].numpy(), ref.argmax(1))
        assert (assign[i, : n_real[i]] < k_real[i]).all()
