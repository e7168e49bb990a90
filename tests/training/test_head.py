"""The DNC head's scores, predictions and winners against a numpy float64 reference."""

import numpy as np
import pytest
import torch

from dnc.training.head import DNCHead, LinearHead
from tests.training.reference import dnc_scores


@pytest.mark.parametrize("ks", [[4, 4, 4, 4, 4], [1, 3, 4, 2, 4, 1]])
def test_scores_match_float64_reference(rng, ks):
    c, d, n = len(ks), 16, 64
    head = DNCHead(c, d, k=ks, temperature=0.07, revive=False)
    cent = rng.standard_normal((c, max(ks), d))
    cent /= np.linalg.norm(cent, axis=-1, keepdims=True)
    cent *= head.k_mask.numpy()[..., None]  # padded slots are zero, as in the head
    head.centroids.copy_(torch.from_numpy(cent).float())
    emb = rng.standard_normal((n, d)) * 3.0  # not normalised: the head must normalise
    ref_scores, ref_win = dnc_scores(emb, cent, ks)
    scores, win = head.scores(torch.from_numpy(emb).float())
    np.testing.assert_allclose(scores.numpy(), ref_scores, atol=1e-5)
    np.testing.assert_array_equal(win.numpy(), ref_win)
    logits = head(torch.from_numpy(emb).float())
    np.testing.assert_allclose(logits.numpy(), ref_scores / 0.07, atol=1e-4)
    np.testing.assert_array_equal(logits.argmax(1).numpy(), ref_scores.argmax(1))


def test_padded_sub_centroid_never_wins(rng):
    # Every real sub-centroid is anti-aligned with the sample, so a zero padded slot (cosine 0)
    # would win if it were not masked.
    head = DNCHead(2, 8, k=[1, 3], revive=False)
    x = torch.from_numpy(rng.standard_normal((1, 8))).float()
    xn = torch.nn.functional.normalize(x, dim=-1)
    head.centroids.copy_(torch.zeros(2, 3, 8))
    head.centroids[0, 0] = -xn[0]
    head.centroids[1, :3] = -xn[0]
    scores, win = head.scores(x)
    assert win[0, 0] == 0
    assert torch.allclose(scores, torch.tensor([[-1.0, -1.0]]), atol=1e-6)


def test_centroids_are_buffers_not_parameters():
    head = DNCHead(3, 4, k=2, revive=False)
    assert list(head.parameters()) == []
    names = dict(head.named_buffers())
    assert {"centroids", "k_mask", "exemplar_ids", "memory.feats", "memory.ids"} <= set(names)


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="K must be >= 1"):
        DNCHead(3, 4, k=[2, 0, 1])
    with pytest.raises(ValueError, match="3 classes"):
        DNCHead(3, 4, k=[2, 2])
    with pytest.raises(ValueError, match="temperature"):
        DNCHead(3, 4, k=2, temperature=0)


def test_linear_twin_has_parameters_and_no_update():
    head = LinearHead(5, 8)
    assert sum(p.numel() for p in head.parameters()) == 5 * 8 + 5
    emb = torch.randn(4, 8)
    assert head(emb).shape == (4, 5)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    head.update(emb, torch.zeros(4, dtype=torch.long), torch.arange(4), torch.ones(4, dtype=torch.bool))
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
