"""Parity of an export: onnxruntime against PyTorch on the same inputs, before it is called done.

Compared, on real test images and on random inputs: the embedding graph's output against the
encoder's normalised embedding; the head graph chained after it (what a Triton ensemble runs) and
the merged graph against the DNC head's max-over-K cosine scores; predicted classes and winning
sub-centroids. The fp32 criteria (scores max abs difference < 1e-4, identical predicted classes)
decide; fp16 figures are reported beside them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as tF

from dnc.core import formats as F
from dnc.export import runtime

SCORE_TOLERANCE = 1e-4


@torch.no_grad()
def torch_reference(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """The PyTorch model's embedding, scores, winning sub-centroids and prediction for x (N, C, H, W)."""
    emb = tF.normalize(model.encoder(torch.from_numpy(x)).float(), dim=-1)  # (N, D)
    scores, win = model.head.scores(emb)  # (N, C), (N, C)
    top2 = scores.topk(2, dim=1).values  # (N, 2)
    return {"embedding": emb.numpy(), "scores": scores.numpy(), "subcentroid": win.numpy(),
            "predicted": scores.argmax(1).numpy(), "top_score": top2[:, 0].numpy(),
            "margin": (top2[:, 0] - top2[:, 1]).numpy()}


def _compare(ref: dict, out: dict[str, np.ndarray]) -> dict:
    """Differences of one graph's head outputs from the PyTorch reference."""
    res = {"scores_max_abs": float(np.abs(out[F.SCORES] - ref["scores"]).max()),
           "top_score_max_abs": float(np.abs(out[F.TOP_SCORE] - ref["top_score"]).max()),
           "margin_max_abs": float(np.abs(out[F.MARGIN] - ref["margin"]).max()),
           "predicted_agreement": float((out[F.PREDICTED] == ref["predicted"]).mean()),
           "subcentroid_agreement": float((out[F.SUBCENTROID] == ref["subcentroid"]).mean())}
    res["passed"] = (max(res["scores_max_abs"], res["top_score_max_abs"], res["margin_max_abs"]) < SCORE_TOLERANCE
                     and res["predicted_agreement"] == 1.0)
    return res


def check(model, folder, inputs: dict[str, np.ndarray], threads: int = 0, fp16: bool = True) -> dict:
    """Parity figures per input kind ({"real": x, "random": x}) and an overall verdict.

    Returns {"real": {...}, "random": {...}, "passed": bool, "tolerance": ...}; each kind holds the
    embedding difference and, for the chained and merged graphs, scores/prediction agreement.
    """
    embed = runtime.session(folder / F.EMBED_FILE, threads)
    head = runtime.session(folder / F.HEAD_FILE, threads)
    merged = runtime.session(folder / F.MERGED_FILE, threads)
    half = runtime.session(folder / F.EMBED_FP16_FILE, threads) if fp16 else None
    names = [s.name for s in F.HEAD_OUTPUTS]
    out, passed = {"tolerance": SCORE_TOLERANCE}, True
    for kind, x in inputs.items():
        ref = torch_reference(model, x)
        emb = embed.run([F.EMBEDDING], {F.IMAGES: x})[0]
        chained = dict(zip(names, head.run(names, {F.EMBEDDING: emb}), strict=True))
        whole = dict(zip([F.EMBEDDING, *names], merged.run([F.EMBEDDING, *names], {F.IMAGES: x}), strict=True))
        row = {"n": len(x), "embedding_max_abs": float(np.abs(emb - ref["embedding"]).max()),
               "chained": _compare(ref, chained), "merged": _compare(ref, whole)}
        row["embedding_passed"] = row["embedding_max_abs"] < SCORE_TOLERANCE
        passed &= row["embedding_passed"] and row["chained"]["passed"] and row["merged"]["passed"]
        if half is not None:  # reported, not decisive: fp16 rounding moves scores by ~1e-4
            emb16 = half.run([F.EMBEDDING], {F.IMAGES: x})[0]
            h16 = dict(zip(names, head.run(names, {F.EMBEDDING: emb16}), strict=True))
            row["fp16"] = {"embedding_max_abs": float(np.abs(emb16 - ref["embedding"]).max()), **_compare(ref, h16)}
            del row["fp16"]["passed"]
        out[kind] = row
    out["passed"] = passed
    return out


def check_embedding(model, folder, inputs: dict[str, np.ndarray], threads: int = 0) -> dict:
    """Parity of the embedding graph alone (a softmax checkpoint has no centroid head to export)."""
    embed = runtime.session(folder / F.EMBED_FILE, threads)
    out, passed = {"tolerance": SCORE_TOLERANCE}, True
    for kind, x in inputs.items():
        with torch.no_grad():
            ref = tF.normalize(model.encoder(torch.from_numpy(x)).float(), dim=-1).numpy()
        diff = float(np.abs(embed.run([F.EMBEDDING], {F.IMAGES: x})[0] - ref).max())
        out[kind] = {"n": len(x), "embedding_max_abs": diff, "passed": diff < SCORE_TOLERANCE}
        passed &= diff < SCORE_TOLERANCE
    out["passed"] = passed
    return out
