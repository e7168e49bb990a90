"""Classification heads: the DNC nearest-sub-centroid head and its parametric softmax twin.

DNC head (paper section 3): embeddings and sub-centroids are L2-normalised, a class scores by its
best sub-centroid (cosine, max over K), logits are those scores divided by an explicit
temperature. The sub-centroid tensor is a buffer, never a parameter: it is estimated from the data
by per-class Sinkhorn clustering and a momentum update, from correctly classified samples only,
held in a bounded per-class memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training import distributed
from training.memory import ClassMemory
from training.sinkhorn import sinkhorn_assign


def normalise_ks(num_classes: int, k: int | list[int]) -> list[int]:
    """Expand K (one int for all classes, or one per class) to a per-class list and check it."""
    ks = [int(k)] * num_classes if isinstance(k, int) else [int(v) for v in k]
    if len(ks) != num_classes:
        raise ValueError(f"K per class has {len(ks)} entries but there are {num_classes} classes")
    bad = [(c, v) for c, v in enumerate(ks) if v < 1]
    if bad:
        raise ValueError(f"K must be >= 1 for every class; got K={bad[0][1]} for class {bad[0][0]}")
    return ks


class DNCHead(nn.Module):
    """Nearest sub-centroid head with online Sinkhorn clustering.

    Buffers (all carried by checkpoints):
        centroids: (C, Kmax, D) L2-normalised sub-centroids; padded slots are zero.
        k_mask: (C, Kmax) bool, True for real sub-centroids (K may differ per class).
        exemplar_ids: (C, Kmax) int64 dataset id of the real sample a sub-centroid was anchored
            to (section 4.3), -1 when not anchored.
        memory.*: the per-class FIFO memory (see ClassMemory).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        k: int | list[int] = 4,
        temperature: float = 0.1,
        momentum: float = 0.999,
        epsilon: float = 0.05,
        sinkhorn_iters: int = 3,
        memory_size: int = 256,
        memory_cap: int = 32,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if epsilon <= 0:
            raise ValueError(f"sinkhorn epsilon must be > 0, got {epsilon}")
        self.ks = normalise_ks(num_classes, k)
        self.num_classes, self.dim = num_classes, dim
        self.temperature, self.momentum = float(temperature), float(momentum)
        self.epsilon, self.sinkhorn_iters = float(epsilon), int(sinkhorn_iters)
        kmax = max(self.ks)
        self.uniform_k = min(self.ks) == kmax  # no padded slots to mask
        k_mask = torch.arange(kmax)[None, :] < torch.tensor(self.ks)[:, None]  # (C, Kmax)
        init = F.normalize(torch.randn(num_classes, kmax, dim, generator=generator), dim=-1)
        self.register_buffer("centroids", init * k_mask[..., None])
        self.register_buffer("k_mask", k_mask)
        self.register_buffer("exemplar_ids", torch.full((num_classes, kmax), -1, dtype=torch.long))
        self.memory = ClassMemory(num_classes, memory_size, dim, memory_cap)

    def similarities(self, emb: torch.Tensor) -> torch.Tensor:
        """(N, D) embeddings -> (N, C, Kmax) cosine similarities, padded slots at -inf."""
        with torch.autocast(device_type=emb.device.type, enabled=False):
            x = F.normalize(emb.float(), dim=-1)
            sim = torch.einsum("nd,ckd->nck", x, self.centroids)
            return sim if self.uniform_k else sim.masked_fill(~self.k_mask, float("-inf"))

    def scores(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) -> class scores (N, C) = max over K of cosine, and winning index (N, C)."""
        return self.similarities(emb).max(dim=2)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, C) logits: best-sub-centroid cosine divided by the temperature."""
        return self.scores(emb)[0] / self.temperature

    @torch.no_grad()
    def update(self, emb: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor, correct: torch.Tensor):
        """One online clustering step from a training batch (every rank gets identical results).

        Args:
            emb: (N, D) embeddings (detached here). labels: (N,) int64. ids: (N,) sample ids.
            correct: (N,) bool, samples this step classified correctly; only those update.
        """
        x = F.normalize(emb.detach().float(), dim=-1)
        x, labels, ids, correct = distributed.all_gather_cat(x, labels, ids, correct)
        classes = self.memory.push(x[correct], labels[correct], ids[correct])
        if classes.numel() == 0:
            return
        feats, mask = self.memory.slots(classes)  # (T, M, D), (T, M)
        old = self.centroids.index_select(0, classes)  # (T, K, D)
        kmask = self.k_mask[classes]  # (T, K)
        kmax = old.shape[1]
        sim = torch.bmm(feats, old.transpose(1, 2))  # (T, M, K)
        assign = sinkhorn_assign(sim, mask, kmask, self.epsilon, self.sinkhorn_iters)  # (T, M)
        # Per-(class, sub-centroid) sums as a one-hot matmul: deterministic on every device (an
        # index_add on CUDA adds in no fixed order, and ranks must agree bit for bit).
        onehot = F.one_hot(assign, kmax).to(feats.dtype) * mask[..., None]  # (T, M, K)
        counts = onehot.sum(1)  # (T, K)
        means = torch.bmm(onehot.transpose(1, 2), feats) / counts.clamp(min=1)[..., None]  # (T, K, D)
        moved = F.normalize(self.momentum * old + (1 - self.momentum) * means, dim=-1)
        has = (counts > 0) & kmask
        self.centroids[classes] = torch.where(has[..., None], moved, old)

    @torch.no_grad()
    def set_exemplars(self, feats: torch.Tensor, ids: torch.Tensor, found: torch.Tensor):
        """Replace sub-centroids by real samples (exemplar anchoring, section 4.3).

        Args:
            feats: (C, Kmax, D) embedding of the nearest real sample per sub-centroid.
            ids: (C, Kmax) its dataset id. found: (C, Kmax) bool, False where none was seen.
        """
        use = found & self.k_mask
        self.centroids.copy_(torch.where(use[..., None], F.normalize(feats.float(), dim=-1), self.centroids))
        self.exemplar_ids.copy_(torch.where(use, ids, self.exemplar_ids))

    def extra_repr(self) -> str:
        return (f"C={self.num_classes}, D={self.dim}, K={sorted(set(self.ks))}, T={self.temperature}, "
                f"mu={self.momentum}, eps={self.epsilon}")


class LinearHead(nn.Module):
    """Parametric softmax twin: a linear layer on the same embedding."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes, self.dim = num_classes, dim
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, C) logits."""
        return self.fc(emb)

    def update(self, emb, labels, ids, correct):  # same interface as DNCHead
        """Nothing to estimate: the weights are learned by the optimiser."""
