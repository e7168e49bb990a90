"""Parity of a segmenter's export: onnxruntime against PyTorch on real scenes and random images of
several sizes, before the export is called done.

Compared per input: the embedding graph's cell embeddings against the encoder's, each L2-normalised
first (the head sees only their direction, and a trained cell's norm can be large); the head graph chained
after it with the input's size (what a Triton pipeline runs) and the merged graph against the PyTorch
segmenter: labels (>= LABEL_AGREEMENT of pixels; pixels within rounding of a tie may flip), the label's
score and margin (max abs < SCORE_TOLERANCE), the winning sub-centroid where labels agree, and the
per-image class counts. fp16 figures are reported beside them, not decisive.
"""

from __future__ import annotations

import numpy as np
import torch

from dnc.core import formats as F
from dnc.export import runtime
from dnc.export.parity import SCORE_TOLERANCE
from dnc.training.head import DNCHead
from dnc.training.segmenter import nearest_cells, upsample

LABEL_AGREEMENT = 0.999


@torch.no_grad()
def torch_reference(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """The PyTorch segmenter's cell embeddings, labels, scores, margins, sub-centroids and class counts."""
    emb = model.encoder(torch.from_numpy(x)).float()  # (N, D, h, w)
    n, d, h, w = emb.shape
    head: DNCHead = model.head
    cells, win = head.scores(emb.permute(0, 2, 3, 1).reshape(-1, d))  # (N*h*w, C)
    c = cells.shape[1]
    scores = upsample(cells.view(n, h, w, c).permute(0, 3, 1, 2), x.shape[-2:])  # (N, C, H, W)
    top2 = scores.topk(2, dim=1).values
    labels = scores.argmax(1)  # (N, H, W)
    rows, cols = nearest_cells(x.shape[-2:], (h, w))
    sub = win.view(n, h, w, c)[:, rows][:, :, cols].gather(3, labels[..., None])[..., 0]
    counts = torch.stack([torch.bincount(lab.flatten(), minlength=c) for lab in labels])
    return {"embedding": emb.numpy(), "labels": labels.numpy(), "top_score": top2[:, 0].numpy(),
            "margin": (top2[:, 0] - top2[:, 1]).numpy(), "subcentroid": sub.numpy(), "class_pixels": counts.numpy()}


def _cell_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Max |difference| of two (N, D, h, w) cell-embedding maps after L2-normalising each cell."""
    unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # noqa: E731
    return float(np.abs(unit(a.astype(np.float64)) - unit(b.astype(np.float64))).max())


def _compare(ref: dict, out: dict[str, np.ndarray]) -> dict:
    same = out[F.LABELS].astype(np.int64) == ref["labels"]
    res = {"label_agreement": float(same.mean()),
           "pixel_score_max_abs": float(np.abs(out[F.PIXEL_SCORE] - ref["top_score"]).max()),
           "margin_max_abs": float(np.abs(out[F.PIXEL_MARGIN] - ref["margin"]).max()),
           "subcentroid_agreement": float((out[F.PIXEL_SUBCENTROID][same] == ref["subcentroid"][same]).mean()),
           "class_pixels_max_abs": int(np.abs(out[F.CLASS_PIXELS] - ref["class_pixels"]).max())}
    res["passed"] = (res["label_agreement"] >= LABEL_AGREEMENT and res["subcentroid_agreement"] >= LABEL_AGREEMENT
                     and max(res["pixel_score_max_abs"], res["margin_max_abs"]) < SCORE_TOLERANCE)
    return res


def check(model, folder, inputs: dict[str, np.ndarray], threads: int = 0, fp16: bool = True) -> dict:
    """Parity figures per input kind ({"real 64x64": x, "random 37x53": x, ...}) and an overall verdict."""
    embed = runtime.session(folder / F.EMBED_FILE, threads)
    head = runtime.session(folder / F.HEAD_FILE, threads)
    merged = runtime.session(folder / F.MERGED_FILE, threads)
    half = runtime.session(folder / F.EMBED_FP16_FILE, threads) if fp16 else None
    names = [s.name for s in F.SEG_HEAD_OUTPUTS]
    out, passed = {"tolerance": SCORE_TOLERANCE, "label_agreement_needed": LABEL_AGREEMENT}, True
    for kind, x in inputs.items():
        ref = torch_reference(model, x)
        size = np.array(x.shape[-2:], np.int64)
        emb = embed.run([F.PIXEL_EMBEDDING], {F.IMAGES: x})[0]
        chained = dict(zip(names, head.run(names, {F.PIXEL_EMBEDDING: emb, F.OUTPUT_SIZE: size}), strict=True))
        whole = dict(zip(names, merged.run(names, {F.IMAGES: x}), strict=True))
        row = {"n": len(x), "size": list(x.shape[-2:]), "embedding_max_abs": _cell_diff(emb, ref["embedding"]),
               "chained": _compare(ref, chained), "merged": _compare(ref, whole)}
        row["embedding_passed"] = row["embedding_max_abs"] < SCORE_TOLERANCE
        passed &= row["embedding_passed"] and row["chained"]["passed"] and row["merged"]["passed"]
        if half is not None:
            e16 = half.run([F.PIXEL_EMBEDDING], {F.IMAGES: x})[0]
            h16 = dict(zip(names, head.run(names, {F.PIXEL_EMBEDDING: e16, F.OUTPUT_SIZE: size}), strict=True))
            row["fp16"] = {"embedding_max_abs": _cell_diff(e16, ref["embedding"]), **_compare(ref, h16)}
            del row["fp16"]["passed"]
        out[kind] = row
    out["passed"] = passed
    return out


def check_embedding(model, folder, inputs: dict[str, np.ndarray], threads: int = 0, fp16: bool = True) -> dict:
    """Parity of the embedding graph alone (a parametric segmenter exports no centroid head; `fp16` is
    accepted for a common signature, its graph is not compared)."""
    embed = runtime.session(folder / F.EMBED_FILE, threads)
    out, passed = {"tolerance": SCORE_TOLERANCE}, True
    for kind, x in inputs.items():
        with torch.no_grad():
            ref = model.encoder(torch.from_numpy(x)).float().numpy()
        diff = _cell_diff(embed.run([F.PIXEL_EMBEDDING], {F.IMAGES: x})[0], ref)
        out[kind] = {"n": len(x), "size": list(x.shape[-2:]), "embedding_max_abs": diff,
                     "passed": diff < SCORE_TOLERANCE}
        passed &= diff < SCORE_TOLERANCE
    out["passed"] = passed
    return out
