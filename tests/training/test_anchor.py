"""Exemplar anchoring: each sub-centroid becomes the embedding of its nearest same-class sample."""

import numpy as np
import pytest
import torch

from dnc.training.anchor import NearestSamples, anchor_model
from dnc.training.batches import normalise as normalise_pixels
from dnc.training.data import load_dataset
from dnc.training.loop import subset
from dnc.training.model import Classifier, ModelConfig
from tests.training.reference import normalise


def test_streaming_search_matches_full_search(rng):
    c, k, d, n = 4, 3, 8, 200
    cent = torch.from_numpy(normalise(rng.standard_normal((c, k, d)))).float()
    kmask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    emb = rng.standard_normal((n, d))
    labels = rng.integers(0, 3, n)  # class 3 has no samples
    search = NearestSamples(cent, kmask)
    for s in range(0, n, 37):  # ragged batches
        search.add(torch.from_numpy(emb[s:s + 37]).float(), torch.from_numpy(labels[s:s + 37]),
                   torch.arange(s, min(n, s + 37)) + 1000)
    x = normalise(emb)
    for ci in range(c):
        for ki in range(k):
            if not kmask[ci, ki] or ci == 3:
                assert not search.found()[ci, ki]
                continue
            members = np.nonzero(labels == ci)[0]
            best = members[np.argmax(x[members] @ cent[ci, ki].double().numpy())]
            assert int(search.ids[ci, ki]) == best + 1000
            np.testing.assert_allclose(search.feats[ci, ki].numpy(), x[best], atol=1e-6)


@pytest.mark.slow
def test_anchored_model_points_at_real_samples(fmnist_ready):
    data = subset(load_dataset("fashion-mnist", "train"), 300)
    model = Classifier(ModelConfig(num_classes=10, width=8, embed_dim=16, k=[2] * 9 + [1]))
    anchor_model(model, data, torch.device("cpu"), batch_size=64)
    head = model.head
    assert head.exemplar_ids[head.k_mask].min() >= 0
    assert (head.exemplar_ids[~head.k_mask] == -1).all()
    # Re-embed each exemplar: the sub-centroid is exactly its normalised embedding, of its class.
    ids = head.exemplar_ids[head.k_mask]
    x = normalise_pixels(data.load(ids), model.cfg.mean, model.cfg.std)
    with torch.no_grad():
        emb = torch.nn.functional.normalize(model.encoder(x), dim=-1)
    torch.testing.assert_close(head.centroids[head.k_mask], emb, atol=1e-5, rtol=0)
    classes = torch.arange(10)[:, None].expand(-1, 2)[head.k_mask]
    assert torch.equal(data.labels[ids], classes)
