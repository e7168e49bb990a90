"""Segmentation in the training loop: data, one optimiser step, evaluation (mIoU) and the montage.

The loop (training/loop.py) is the same for both tasks; this module is what differs for segmenters.
A step: the head scores every cell of the pixel-embedding map, the class scores are upsampled to the
labels' resolution and cross-entropy is taken there (pixels at the ignore index count for nothing);
one optimiser step; then the head's own update (training/head.py, unchanged) from a seeded sample of
at most `pixel_samples` cells per class of the batch, each labelled by the pixel it stands for
(nearest-neighbour downsampling of the mask, as ProtoSeg does), so the update's cost does not grow
with the image size. A sampled cell's id is the id of that pixel, image id * H * W + y * W + x, which
anchoring turns back into (image, y, x). Only correctly classified cells enter the memory and move
sub-centroids (the head decides, as for images).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dnc.core import tasks
from dnc.core.images import DataError
from dnc.core.progress import bar
from dnc.core.seg_folder import pixel_id
from dnc.training import distributed
from dnc.training.batches import epoch_batches, iterate, normalise
from dnc.training.head import DNCHead
from dnc.training.liveness import summarise, win_counts
from dnc.training.memory import rank_in_class
from dnc.training.seg_data import SegData, load_seg_folder
from dnc.training.segmenter import Segmenter, cell_pixels, nearest_cells, upsample

log = logging.getLogger(__name__)

EVAL_BATCH = 32  # images per evaluation batch: pixel tensors are H*W times an image's
MONTAGE_IMAGES = 6


def cell_labels(masks: torch.Tensor, cells: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masks (B, H, W) -> each cell's label (B, h, w), read at the pixel it stands for
    (segmenter.cell_pixels), and that pixel's row and column (B, h, w) each."""
    b = masks.shape[0]
    rows, cols = cell_pixels(masks.shape[-2:], cells, masks.device)
    ys = rows[:, None].expand(-1, len(cols)).expand(b, -1, -1)
    xs = cols[None, :].expand(len(rows), -1).expand(b, -1, -1)
    return masks[:, rows][:, :, cols], ys, xs


def sample_per_class(labels: torch.Tensor, cap: int, gen: torch.Generator) -> torch.Tensor:
    """(P,) labels -> indices of at most `cap` pixels of each class, drawn uniformly by `gen` (a CPU
    generator, so the draw is the same on every device)."""
    r = torch.rand(labels.shape[0], generator=gen, dtype=torch.float64).to(labels.device)
    order = torch.argsort(labels.double() + r)  # by class, random within a class
    _, _, rank = rank_in_class(labels[order])
    return order[rank < cap]


def augment_pair(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, ignore: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop after padding (images with 0, masks with the ignore index) and horizontal flip,
    the same for an image and its mask. x: (B, C, H, W) uint8, y: (B, H, W) int64."""
    b, _, h, w = x.shape
    pad = max(1, h // 8)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    xp = F.pad(x, (pad, pad, pad, pad))
    yp = F.pad(y, (pad, pad, pad, pad), value=ignore)
    rows = oy[:, None] + torch.arange(h, device=x.device)[None]  # (B, H)
    cols = ox[:, None] + torch.arange(w, device=x.device)[None]  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None]
    r, c = rows[:, :, None], cols[:, None, :]
    return xp.permute(0, 2, 3, 1)[bi, r, c].permute(0, 3, 1, 2).contiguous(), yp[bi, r, c]


def confusion_metrics(conf: torch.Tensor) -> dict:
    """(C, C) confusion (rows truth, columns prediction) -> mIoU and pixel accuracy (%), and IoU per
    class (None for a class neither present nor predicted; the mean is over the others)."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = [None if u == 0 else 100 * float(t / u) for t, u in zip(tp, union, strict=True)]
    used = [v for v in iou if v is not None]
    total = float(conf.sum())
    return {"miou": sum(used) / len(used) if used else 0.0, "pixel_acc": 100 * float(tp.sum()) / max(1.0, total),
            "iou_per_class": iou, "pixels": int(total)}


class SegmentationTask:
    """What the training loop needs to train a segmenter (see ClassificationTask in training/loop.py)."""

    name = tasks.SEGMENTATION.name
    train_metric = "train_pixel_acc"

    def load(self, spec: str, split: str, model_cfg, limit: int) -> SegData:
        data = load_seg_folder(spec, split, model_cfg.image_size, in_chans=model_cfg.in_chans, limit=limit)
        if data.ignore_index != model_cfg.ignore_index:
            raise DataError(f"{spec} ignores mask value {data.ignore_index} but the model ignores "
                            f"{model_cfg.ignore_index}")
        return data

    def prepare(self, x, y, gen, model_cfg):
        x, y = augment_pair(x, y, gen, model_cfg.ignore_index)
        return normalise(x, model_cfg.mean, model_cfg.std), y

    def step(self, encoder, head, opt, x, y, ids, amp, model, step, seed):
        """One optimiser step and one sub-centroid update. Returns (loss, correct pixels, labelled pixels)."""
        cfg = model.cfg
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
            emb = encoder(x)  # (B, D, h, w)
            cells = model.cell_logits(emb, head)  # (B, C, h, w)
        logits = upsample(cells.float(), y.shape[-2:])  # (B, C, H, W)
        loss = F.cross_entropy(logits, y, ignore_index=cfg.ignore_index)
        if not bool((y != cfg.ignore_index).any()):
            loss = logits.sum() * 0.0  # a batch of ignored pixels only: no gradient, not NaN
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        valid = y != cfg.ignore_index
        n_correct = int(((logits.detach().argmax(1) == y) & valid).sum())
        # the head's update, from a bounded sample of cells per class
        lab, ys, xs = cell_labels(y, emb.shape[-2:])  # (B, h, w) each
        pids = pixel_id(ids[:, None, None], ys, xs, y.shape[-1]).reshape(-1)  # of the augmented view
        lab = lab.reshape(-1)
        flat = emb.detach().permute(0, 2, 3, 1).reshape(-1, emb.shape[1])  # (B*h*w, D)
        correct = cells.detach().argmax(1).reshape(-1) == lab
        keep = (lab != cfg.ignore_index).nonzero().flatten()
        gen = torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + distributed.rank())
        pick = keep[sample_per_class(lab[keep], cfg.pixel_samples, gen)]
        model.head.update(flat[pick], lab[pick], pids[pick], correct[pick])
        return loss.detach(), n_correct, int(valid.sum())

    @torch.no_grad()
    def evaluate(self, model: Segmenter, data: SegData, device: torch.device, batch_size: int = EVAL_BATCH,
                 workers: int = 0, desc: str = "eval") -> dict:
        """mIoU, per-class IoU, pixel accuracy (%) and mean loss over labelled pixels, sharded over ranks;
        for a DNC head also the live-sub-centroid measure over pixels (training/liveness.py)."""
        model.eval()
        c = model.cfg.num_classes
        head = model.head if isinstance(model.head, DNCHead) else None
        wins = torch.zeros(head.centroids.shape[:2], dtype=torch.long, device=device) if head is not None else None
        conf = torch.zeros(c * c, dtype=torch.long, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        batches = epoch_batches(len(data), min(batch_size, EVAL_BATCH), 0, 0, shuffle=False,
                                rank=distributed.rank(), world=distributed.world_size(), drop_last=False)
        for x, y, _ in bar(iterate(data, batches, workers), total=len(batches), desc=desc, leave=False,
                           show=distributed.is_main()):
            x, y = normalise(x.to(device), model.cfg.mean, model.cfg.std), y.to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                emb = model.encoder(x.contiguous(memory_format=torch.channels_last)).float()  # (B, D, h, w)
            cells = model.cell_logits(emb).float()  # (B, C, h, w)
            logits = upsample(cells, y.shape[-2:])  # (B, C, H, W)
            keep = y != model.cfg.ignore_index
            t = y[keep]
            conf += torch.bincount(t * c + logits.argmax(1)[keep], minlength=c * c)
            loss_sum += F.cross_entropy(logits, y, ignore_index=model.cfg.ignore_index, reduction="sum").double()
            if head is not None:  # which own-class sub-centroid each labelled cell is nearest to
                lab, _, _ = cell_labels(y, emb.shape[-2:])
                lab = lab.reshape(-1)
                ok = lab != model.cfg.ignore_index
                flat = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])[ok]
                wins += win_counts(head.own_class_winners(flat, lab[ok]), lab[ok], *wins.shape)
        if distributed.is_active():
            for t in (conf, loss_sum) + ((wins,) if wins is not None else ()):
                torch.distributed.all_reduce(t)
        res = confusion_metrics(conf.view(c, c).cpu())
        res["loss"] = float(loss_sum) / max(1, res["pixels"])
        if head is not None:
            res.update(summarise(wins, head.centroids, head.k_mask))
        return res

    def row(self, ev: dict) -> dict:
        return {"test_miou": ev["miou"], "test_pixel_acc": ev["pixel_acc"], "test_loss": ev["loss"],
                "test_iou": [None if v is None else round(v, 2) for v in ev["iou_per_class"]]}

    def summary(self, row: dict) -> str:
        return f"test mIoU {row['test_miou']:.2f} pixel accuracy {row['test_pixel_acc']:.2f}"

    def epoch_end(self, model: Segmenter, data: SegData, device: torch.device, out: Path, epoch: int) -> None:
        """Write montages/epoch-NNN.png: image | truth | prediction | winning sub-centroid, a row per image."""
        if distributed.is_main():
            write_montage(model, data, device, out / "montages" / f"epoch-{epoch:03d}.png")


@torch.no_grad()
def predict(model: Segmenter, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Normalised images (B, C, H, W) -> labels (B, H, W) and, for a DNC head, the winning sub-centroid of
    the predicted class per pixel (that of its nearest cell) (B, H, W)."""
    emb = model.encoder(x).float()  # (B, D, h, w)
    labels = upsample(model.cell_logits(emb).float(), x.shape[-2:]).argmax(1)  # (B, H, W)
    if not isinstance(model.head, DNCHead):
        return labels, None
    b, d, h, w = emb.shape
    _, win = model.head.scores(emb.permute(0, 2, 3, 1).reshape(-1, d))  # (B*h*w, C)
    win = win.view(b, h, w, -1)
    rows, cols = nearest_cells(labels.shape[-2:], (h, w), x.device)
    near = win[:, rows][:, :, cols]  # (B, H, W, C)
    return labels, near.gather(3, labels[..., None])[..., 0]


def write_montage(model: Segmenter, data: SegData, device: torch.device, path: Path) -> None:
    """A PNG of the first MONTAGE_IMAGES test images: image | truth | prediction | winning sub-centroid."""
    from PIL import Image

    n = min(MONTAGE_IMAGES, len(data))
    x, y = data.batch(torch.arange(n))
    model.eval()
    labels, win = predict(model, normalise(x.to(device), model.cfg.mean, model.cfg.std))
    pal = np.array(data.classes.palette + [[255, 255, 255]] * (256 - data.num_classes), np.uint8)
    sub = _subcentroid_colours()
    rows = []
    for i in range(n):
        img = x[i].permute(1, 2, 0).numpy()
        img = np.repeat(img, 3, 2) if img.shape[2] == 1 else img
        cells = [img, pal[y[i].numpy()], pal[labels[i].cpu().numpy()]]
        if win is not None:
            cells.append(sub[win[i].cpu().numpy() % len(sub)])
        rows.append(np.concatenate(cells, 1))
    grid = np.concatenate(rows, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = max(1, 256 // data.image_size)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)


def _subcentroid_colours() -> np.ndarray:
    """(20, 3) uint8: matplotlib's tab20, one colour per sub-centroid index."""
    import matplotlib

    return (np.array(matplotlib.colormaps["tab20"].colors) * 255).astype(np.uint8)
