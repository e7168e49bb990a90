"""Exemplar anchoring (paper section 4.3): replace each sub-centroid by its nearest real sample.

One pass over the training set without augmentation embeds every sample (for a segmenter, every
labelled cell, identified by the pixel it stands for); for each class and each
of its sub-centroids the most similar sample of that class is kept (a running max over batches, so
memory stays C x K x D whatever the set size). The sub-centroids are then replaced by those
samples' embeddings and their dataset ids recorded, so every prediction can point at a real image.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from dnc.core import tasks
from dnc.core.errors import InputError
from dnc.core.progress import bar
from dnc.core.seg_folder import pixel_id
from dnc.training.batches import epoch_batches, iterate, normalise
from dnc.training.head import DNCHead
from dnc.training.seg_task import cell_labels

log = logging.getLogger(__name__)


class NearestSamples:
    """Running nearest same-class sample for every sub-centroid of a (C, K, D) tensor."""

    def __init__(self, centroids: torch.Tensor, k_mask: torch.Tensor):
        self.centroids, self.k_mask = centroids, k_mask  # (C, K, D), (C, K)
        c, k, d = centroids.shape
        self.best = torch.full((c, k), float("-inf"), device=centroids.device)
        self.ids = torch.full((c, k), -1, dtype=torch.long, device=centroids.device)
        self.feats = torch.zeros(c, k, d, device=centroids.device)

    @torch.no_grad()
    def add(self, emb: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> None:
        """emb (N, D), labels (N,), ids (N,): update the running best per (class, sub-centroid)."""
        x = F.normalize(emb.float(), dim=-1)
        sim = torch.einsum("nd,nkd->nk", x, self.centroids[labels])  # each sample vs its class's K
        # Per (class, k), the best sample of this batch: scatter-max over the label index.
        c, k = self.best.shape
        flat = labels[:, None] * k + torch.arange(k, device=x.device)[None]  # (N, K) slot index
        batch_best = torch.full((c * k,), float("-inf"), device=x.device)
        batch_best.scatter_reduce_(0, flat.flatten(), sim.flatten(), reduce="amax")
        hit = sim.flatten() == batch_best[flat.flatten()]  # samples achieving their slot's max
        # On ties keep the first sample (lowest row) so id and feature always come from one sample.
        first = torch.full((c * k,), sim.shape[0], device=x.device)
        rows = torch.arange(sim.numel(), device=x.device) // k
        first.scatter_reduce_(0, flat.flatten()[hit], rows[hit], reduce="amin")
        slot = torch.nonzero((first < sim.shape[0]) & (batch_best > self.best.view(-1))).flatten()
        row = first[slot]
        self.best.view(-1)[slot] = batch_best[slot]
        self.ids.view(-1)[slot] = ids[row]
        self.feats.view(-1, x.shape[1])[slot] = x[row]

    def found(self) -> torch.Tensor:
        return (self.ids >= 0) & self.k_mask


@torch.no_grad()
def anchor_model(model: torch.nn.Module, data, device: torch.device, batch_size: int = 512,
                 workers: int = 0) -> dict:
    """Anchor a DNC model's (classifier's or segmenter's) sub-centroids to real samples of `data` (an
    ImageData or a SegData) in place.

    Returns {"exemplars": (C, K) ids as nested lists (-1: none), "mean_similarity": mean cosine
    between each sub-centroid and its exemplar, "missing": sub-centroids with no sample}.
    """
    head = model.head
    if not isinstance(head, DNCHead):
        raise InputError("exemplar anchoring needs a DNC head (this model has a softmax head)")
    model.eval()
    search = NearestSamples(head.centroids.to(device), head.k_mask.to(device))
    seg = tasks.task(model.cfg.task).dense
    batches = epoch_batches(len(data), min(batch_size, 32) if seg else batch_size, 0, 0, shuffle=False,
                            drop_last=False)
    for x, y, ids in bar(iterate(data, batches, workers), total=len(batches), desc="anchor", leave=False):
        x = normalise(x.to(device), model.cfg.mean, model.cfg.std).contiguous(memory_format=torch.channels_last)
        y, ids = y.to(device), ids.to(device)
        # The same precision as evaluation, so an anchored centroid is exactly what eval embeds.
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            emb = model.encoder(x)
        if seg:  # every labelled cell, as a pixel id (image * H * W + y * W + x) of the pixel it stands for
            emb, y, ids = _labelled_cells(emb.float(), y, ids, model.cfg.ignore_index)
        search.add(emb, y, ids)
    found = search.found()
    head.set_exemplars(search.feats, search.ids, found)
    missing = int((head.k_mask & ~found).sum())
    if missing:
        log.warning("%d sub-centroids had no training sample of their class and keep their value", missing)
    return {"exemplars": search.ids.cpu().tolist(),
            "mean_similarity": float(search.best[found].mean()) if found.any() else float("nan"),
            "missing": missing}


def _labelled_cells(emb: torch.Tensor, masks: torch.Tensor, ids: torch.Tensor, ignore: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cell embeddings (B, D, h, w), masks (B, H, W), image ids (B,) -> the labelled cells' embeddings (P, D),
    labels (P,) and pixel ids (P,)."""
    b, d, h, w = emb.shape
    lab, ys, xs = cell_labels(masks, (h, w))  # (B, h, w) each
    pid = pixel_id(ids[:, None, None], ys, xs, masks.shape[-1])
    keep = (lab != ignore).reshape(-1)
    return emb.permute(0, 2, 3, 1).reshape(-1, d)[keep], lab.reshape(-1)[keep], pid.reshape(-1)[keep]
