"""`dnc export`: a training checkpoint -> an export folder that Triton can serve.

Writes, into a temporary folder beside OUT: embed.onnx (and its fp16 variant), and for a DNC
checkpoint the centroid set, head.onnx and the merged model.onnx; then checks parity with
onnxruntime against PyTorch on real test images and random inputs, writes the manifest, and only
if parity passed renames the folder to OUT (a previous OUT is replaced). A failing export is kept
as OUT.failed for inspection and raises ExportError; OUT is untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from dnc.core import centroid_set, manifest, preprocess
from dnc.core import formats as F
from dnc.core.staging import check_destination, staged
from dnc.export import parity, runtime
from dnc.export.checkpoint_set import ExportError, set_from_checkpoint  # noqa: F401 (re-exported)
from dnc.export.embed_graph import export_embed
from dnc.export.head_graph import attach_head, build_head
from dnc.training import checkpoint as ckpt_io
from dnc.training.batches import normalise
from dnc.training.data import load_dataset
from dnc.training.head import DNCHead
from dnc.training.liveness import LIVE_SHARE
from dnc.training.loop import evaluate, subset

log = logging.getLogger(__name__)


def subcentroid_use(model, data_spec: str, limit: int = 10000) -> dict:
    """The live-sub-centroid measure (training/liveness.py) of the exported sub-centroids on the first
    `limit` test images of `data_spec`, with the top-1 it goes with."""
    mc = model.cfg
    test = subset(load_dataset(data_spec, "test", mc.in_chans, mc.image_size), limit)
    ev = evaluate(model, test, torch.device("cpu"))
    keys = ("live_mean", "live_min", "live_per_class", "k_per_class", "centroid_cos", "centroid_cos_per_class")
    return {"data": data_spec, "split": "test", "images": ev["n"], "top1": ev["top1"], "live_share": LIVE_SHARE,
            **{k: ev[k] for k in keys}}


def parity_inputs(data_spec: str, mc, prep: dict, n_real: int, n_random: int, seed: int = 0
                  ) -> tuple[dict[str, np.ndarray], float]:
    """Real test images (the first n_real of the data set's test split) and random inputs, preprocessed
    as the manifest says; and the max |difference| between that preprocessing and training's own
    (so a client following the manifest feeds the model what it was trained on)."""
    test = load_dataset(data_spec, "test", mc.in_chans, mc.image_size)
    pixels = test.load(torch.arange(min(n_real, len(test))))  # (N, C, H, W) uint8
    real = preprocess.normalise(pixels.numpy(), prep)
    trained = normalise(pixels, mc.mean, mc.std).numpy()
    rng = np.random.default_rng(seed)
    rand = rng.standard_normal((n_random, mc.in_chans, mc.image_size, mc.image_size)).astype(np.float32)
    return {"real": real, "random": rand}, float(np.abs(real - trained).max())


def export_checkpoint(checkpoint: str | Path, out: str | Path, data: str | None = None, n_real: int = 256,
                      n_random: int = 64, threads: int = 0, fp16: bool = True, max_batch: int = 64,
                      tensorrt_engines: bool = False) -> dict:
    """Export a checkpoint to the folder `out`; returns the manifest. Raises ExportError on failed parity.

    Args:
        data: the data set whose test images check parity (default: the one the checkpoint trained on).
        n_real, n_random: parity sample counts. threads: onnxruntime threads (0: one per core).
        fp16: also write the fp16 embedding graph. max_batch: the largest batch servers should form.
        tensorrt_engines: also build and check TensorRT engines where a CUDA GPU and tensorrt are present
            (manifest["tensorrt"] says what happened either way).
    """
    if n_real < 1 or n_random < 1 or max_batch < 1:
        raise ValueError(f"parity samples and --max-batch must be >= 1, got {n_real}, {n_random}, {max_batch}")
    out = Path(out)
    check_destination(out, F.MANIFEST_FILE)
    t0 = time.time()
    ck = ckpt_io.load(checkpoint)
    mc = ck.model_config
    if mc.task == "segmentation":
        from dnc.export.seg_exporter import export_segmenter

        return export_segmenter(ck, checkpoint, out, data, n_real, n_random, threads, fp16, max_batch,
                                tensorrt_engines)
    model = ck.build_model().float()
    prep = preprocess.describe(mc.in_chans, mc.image_size, mc.mean, mc.std)
    with staged(out) as tmp:
        embed = export_embed(model.encoder, mc.in_chans, mc.image_size, prep)
        onnx.save(embed, tmp / F.EMBED_FILE)
        fingerprint = centroid_set.fingerprint_file(tmp / F.EMBED_FILE)
        files = {"embed": F.EMBED_FILE}
        if fp16:
            onnx.save(export_embed(model.encoder, mc.in_chans, mc.image_size, prep, fp16=True), tmp / F.EMBED_FP16_FILE)
            files["embed_fp16"] = F.EMBED_FP16_FILE
        dnc = isinstance(model.head, DNCHead)
        cs = None
        if dnc:
            cs = set_from_checkpoint(ck, fingerprint)
            centroid_set.save(cs, tmp)
            head = build_head(cs)
            onnx.save(head, tmp / F.HEAD_FILE)
            onnx.save(attach_head(embed, build_head(cs, normalise_input=False)), tmp / F.MERGED_FILE)
            files.update(head=F.HEAD_FILE, merged=F.MERGED_FILE, centroid_set=F.SET_TENSORS_FILE)
        data_spec = data or ck.train_config.get("data", "fashion-mnist")
        inputs, prep_diff = parity_inputs(data_spec, mc, prep, n_real, n_random)
        if dnc:
            figures = parity.check(model, tmp, inputs, threads, fp16)
        else:
            figures = parity.check_embedding(model, tmp, inputs, threads)
        figures["preprocessing_max_abs"] = prep_diff  # manifest formula vs training's normalisation
        figures["passed"] &= prep_diff < parity.SCORE_TOLERANCE
        engines = _engines(tmp, inputs["real"], max_batch, mc.embed_dim, fp16) if tensorrt_engines and dnc else None
        if engines is not None:
            figures["passed"] &= engines.get("passed", True)
            files.update({"embed_plan": F.EMBED_PLAN_FILE, "head_plan": F.HEAD_PLAN_FILE} if engines["built"] else {})
        meta = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.time() - t0, 1),
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                         "opset": F.OPSET},
            "checkpoint": {"path": str(checkpoint), "epoch": ck.epoch, "step": ck.step,
                           "test_top1": ck.history[-1]["test_top1"] if ck.history else None},
            "head": mc.head, "model_config": mc.to_dict(), "preprocessing": prep, "max_batch": max_batch,
            "embed_fingerprint": fingerprint, "embed_dim": mc.embed_dim, "files": files,
            "tensors": {"input": [F.EMBED_INPUT.__dict__], "embedding": [F.EMBED_OUTPUT.__dict__],
                        "head_outputs": [s.__dict__ for s in F.HEAD_OUTPUTS] if dnc else []},
            "centroid_set": cs.describe() if cs is not None else None, "parity": figures, "tensorrt": engines,
            "subcentroids": subcentroid_use(model, data_spec) if dnc else None,
        }
        manifest.write(tmp, meta)
        if not figures["passed"]:  # kept for inspection; `staged` then leaves OUT as it was
            failed = out.with_name(out.name + ".failed")
            shutil.rmtree(failed, ignore_errors=True)
            os.replace(tmp, failed)
            raise ExportError(f"parity check failed (tolerance {parity.SCORE_TOLERANCE}); figures in {failed}/"
                              f"{F.MANIFEST_FILE}: {figures}")
    log.info("exported %s to %s in %.1fs (parity passed)", checkpoint, out, time.time() - t0)
    return meta


def _engines(folder: Path, images: np.ndarray, max_batch: int, embed_dim: int, fp16: bool) -> dict:
    """Build and check TensorRT engines in the staged folder, or say why they cannot be built here."""
    from dnc.export import tensorrt

    ok, why = tensorrt.available()
    if not ok:
        log.warning("TensorRT engines not built: %s", why)
        return {"built": False, "reason": why}
    reference = runtime.session(folder / F.MERGED_FILE).run([F.PREDICTED], {F.IMAGES: images})[0]
    return tensorrt.build_and_check(folder, max_batch, embed_dim, images, reference, fp16)
