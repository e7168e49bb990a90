"""`dnc export` of a segmenter checkpoint: an export folder of the same layout as a classifier's.

Writes, staged beside OUT: embed.onnx (images of any height and width -> cell embeddings; and its fp16
variant), the centroid set (a segmentation set), head.onnx (export/seg_head_graph.py) and the merged
model.onnx; checks parity with onnxruntime against PyTorch on real test scenes and random images of
several sizes (export/seg_parity.py), measures mIoU and live sub-centroids on the test scenes, writes
the manifest, and only if parity passed renames the folder to OUT. A parametric (softmax) segmenter has no
centroid head: its export is the embedding graphs alone (parity of the cell embeddings), from which
`dnc centroids` can still build class lists. A failing export is kept as
OUT.failed and raises ExportError; OUT is untouched.
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
from dnc.core.staging import staged
from dnc.export import seg_parity
from dnc.export.checkpoint_set import ExportError, set_from_checkpoint
from dnc.export.embed_graph import export_embed
from dnc.export.parity import SCORE_TOLERANCE
from dnc.export.seg_head_graph import attach_seg_head, build_seg_head
from dnc.training import checkpoint as ckpt_io
from dnc.training.batches import normalise
from dnc.training.head import DNCHead
from dnc.training.liveness import LIVE_SHARE
from dnc.training.seg_data import load_seg_folder
from dnc.training.seg_task import SegmentationTask

log = logging.getLogger(__name__)

RANDOM_SIZES = ((37, 53), (96, 80), (64, 64))  # random inputs' heights and widths (parity at several sizes)


def parity_inputs(data_spec: str, mc, prep: dict, n_real: int, n_random: int, seed: int = 0
                  ) -> tuple[dict[str, np.ndarray], float]:
    """Real test scenes (the first n_real, at the training size) and random images at RANDOM_SIZES
    (n_random split over them), preprocessed as the manifest says; and the max |difference| between
    that preprocessing and training's own."""
    test = load_seg_folder(data_spec, "test", mc.image_size, mc.in_chans, limit=n_real)
    pixels = test.images  # (N, C, S, S) uint8
    real = preprocess.normalise(pixels.numpy(), prep)
    trained = normalise(pixels, mc.mean, mc.std).numpy()
    rng = np.random.default_rng(seed)
    inputs = {f"real {mc.image_size}x{mc.image_size}": real}
    per = max(1, n_random // len(RANDOM_SIZES))
    for h, w in RANDOM_SIZES:
        inputs[f"random {h}x{w}"] = rng.standard_normal((per, mc.in_chans, h, w)).astype(np.float32)
    return inputs, float(np.abs(real - trained).max())


def export_segmenter(ck: ckpt_io.Checkpoint, checkpoint: str | Path, out: Path, data: str | None, n_real: int,
                     n_random: int, threads: int, fp16: bool, max_batch: int, tensorrt_engines: bool = False) -> dict:
    """Export a segmenter checkpoint (see export.exporter.export_checkpoint for the arguments)."""
    t0 = time.time()
    mc = ck.model_config
    model = ck.build_model().float()
    dnc = isinstance(model.head, DNCHead)  # a parametric twin exports its embedding only (for new class lists)
    prep = preprocess.describe(mc.in_chans, mc.image_size, mc.mean, mc.std, task="segmentation")
    data_spec = data or ck.train_config.get("data")
    if not data_spec:
        raise ValueError(f"{checkpoint} does not say what it was trained on: give --data SEGMENTATION_FOLDER")
    with staged(out) as tmp:
        embed = export_embed(model.encoder, mc.in_chans, mc.image_size, prep, task="segmentation")
        onnx.save(embed, tmp / F.EMBED_FILE)
        fingerprint = centroid_set.fingerprint_file(tmp / F.EMBED_FILE)
        files = {"embed": F.EMBED_FILE}
        if fp16:
            onnx.save(export_embed(model.encoder, mc.in_chans, mc.image_size, prep, fp16=True, task="segmentation"),
                      tmp / F.EMBED_FP16_FILE)
            files["embed_fp16"] = F.EMBED_FP16_FILE
        cs = None
        if dnc:
            cs = set_from_checkpoint(ck, fingerprint)
            centroid_set.save(cs, tmp)
            onnx.save(build_seg_head(cs), tmp / F.HEAD_FILE)
            onnx.save(attach_seg_head(embed, build_seg_head(cs)), tmp / F.MERGED_FILE)
            files.update(head=F.HEAD_FILE, merged=F.MERGED_FILE, centroid_set=F.SET_TENSORS_FILE)
        inputs, prep_diff = parity_inputs(data_spec, mc, prep, n_real, n_random)
        figures = (seg_parity.check if dnc else seg_parity.check_embedding)(model, tmp, inputs, threads, fp16)
        figures["preprocessing_max_abs"] = prep_diff
        figures["passed"] &= prep_diff < SCORE_TOLERANCE
        ev = SegmentationTask().evaluate(model, load_seg_folder(data_spec, "test", mc.image_size, mc.in_chans),
                                         torch.device("cpu"))
        last = ck.history[-1] if ck.history else {}
        meta = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.time() - t0, 1),
            "task": "segmentation",
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                         "opset": F.OPSET},
            "checkpoint": {"path": str(checkpoint), "epoch": ck.epoch, "step": ck.step,
                           "test_miou": last.get("test_miou")},
            "head": mc.head, "model_config": mc.to_dict(), "preprocessing": prep, "max_batch": max_batch,
            "embed_fingerprint": fingerprint, "embed_dim": mc.embed_dim, "files": files,
            "tensors": {"input": [F.SEG_EMBED_INPUT.__dict__], "embedding": [F.SEG_EMBED_OUTPUT.__dict__],
                        "head_inputs": [s.__dict__ for s in F.SEG_HEAD_INPUTS],
                        "head_outputs": [s.__dict__ for s in F.SEG_HEAD_OUTPUTS] if dnc else []},
            "centroid_set": cs.describe() if dnc else None, "parity": figures,
            "tensorrt": _engine(tmp, inputs, max_batch, fp16, threads) if tensorrt_engines and dnc else None,
            "evaluation": {"data": data_spec, "split": "test", "miou": ev["miou"], "pixel_acc": ev["pixel_acc"],
                           "iou_per_class": ev["iou_per_class"]},
            "subcentroids": {"data": data_spec, "split": "test", "live_share": LIVE_SHARE,
                             **{k: ev[k] for k in ("live_mean", "live_min", "live_per_class", "k_per_class",
                                                   "centroid_cos", "centroid_cos_per_class")}} if dnc else None,
        }
        if meta["tensorrt"] is not None:
            figures["passed"] &= meta["tensorrt"].get("passed", True)
            if meta["tensorrt"]["built"]:
                files["embed_plan"] = F.EMBED_PLAN_FILE
        manifest.write(tmp, meta)
        if not figures["passed"]:
            failed = out.with_name(out.name + ".failed")
            shutil.rmtree(failed, ignore_errors=True)
            os.replace(tmp, failed)
            raise ExportError(f"parity check failed; figures in {failed}/{F.MANIFEST_FILE}: {figures}")
    log.info("exported segmenter %s to %s in %.1fs (parity passed)", checkpoint, out, time.time() - t0)
    return meta


def _engine(folder: Path, inputs: dict[str, np.ndarray], max_batch: int, fp16: bool, threads: int) -> dict:
    """A TensorRT engine of the embedding checked on the real parity scenes, or why none was built."""
    from dnc.export import runtime, tensorrt

    ok, why = tensorrt.available()
    if not ok:
        log.warning("TensorRT engine not built: %s", why)
        return {"built": False, "reason": why}
    real = next(x for kind, x in inputs.items() if kind.startswith("real"))
    reference = runtime.session(folder / F.MERGED_FILE, threads).run([F.LABELS], {F.IMAGES: real})[0]
    return tensorrt.build_and_check_segmenter(folder, max_batch, real, reference, fp16)
