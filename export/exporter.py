"""`dnc export`: a training checkpoint (classifier or segmenter) -> an export folder that Triton can serve.

One pipeline for both tasks; export/task_exports.py holds the steps that differ. Writes, into a temporary
folder beside OUT: embed.onnx (and its fp16 variant), and for a DNC checkpoint the centroid set, head.onnx
and the merged model.onnx; then checks parity with onnxruntime against PyTorch on real test images and
random inputs, records the evaluation, writes the manifest, and only if parity passed renames the folder to
OUT (a previous OUT is replaced). A parametric (softmax) twin exports its embedding graphs alone (parity of
the embeddings), from which `dnc centroids` can still build class lists. A failing export is kept as
OUT.failed for inspection and raises ExportError; OUT is untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import onnx
import onnxruntime
import torch

from dnc.core import centroid_set, manifest, preprocess, tasks
from dnc.core import formats as F
from dnc.core.errors import InputError
from dnc.core.staging import check_destination, staged
from dnc.export.checkpoint_set import ExportError, set_from_checkpoint
from dnc.export.embed_graph import export_embed
from dnc.export.parity import SCORE_TOLERANCE
from dnc.export.task_exports import parts_for
from dnc.training import checkpoint as ckpt_io
from dnc.training.head import DNCHead

log = logging.getLogger(__name__)


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
        raise InputError(f"parity samples (`n_real`, `n_random`) and `max_batch` must be >= 1, got {n_real}, "
                         f"{n_random}, {max_batch}")
    out = Path(out)
    check_destination(out, F.MANIFEST_FILE)
    t0 = time.time()
    ck = ckpt_io.load(checkpoint)
    mc = ck.model_config
    task = tasks.task(mc.task)
    parts = parts_for(task)
    data_spec = parts.data_spec(ck, data, checkpoint)
    model = ck.build_model().float()
    dnc = isinstance(model.head, DNCHead)  # a parametric twin exports its embedding only (for new class lists)
    prep = preprocess.describe(mc.in_chans, mc.image_size, mc.mean, mc.std, task=task.name)
    with staged(out) as tmp:
        embed = export_embed(model.encoder, mc.in_chans, mc.image_size, prep, task=task.name)
        onnx.save(embed, tmp / F.EMBED_FILE)
        fingerprint = centroid_set.fingerprint_file(tmp / F.EMBED_FILE)
        files = {"embed": F.EMBED_FILE}
        if fp16:
            onnx.save(export_embed(model.encoder, mc.in_chans, mc.image_size, prep, fp16=True, task=task.name),
                      tmp / F.EMBED_FP16_FILE)
            files["embed_fp16"] = F.EMBED_FP16_FILE
        cs = None
        if dnc:
            cs = set_from_checkpoint(ck, fingerprint)
            centroid_set.save(cs, tmp)
            head, merged = parts.head(cs, embed)
            onnx.save(head, tmp / F.HEAD_FILE)
            onnx.save(merged, tmp / F.MERGED_FILE)
            files.update(head=F.HEAD_FILE, merged=F.MERGED_FILE, centroid_set=F.SET_TENSORS_FILE)
        inputs, prep_diff = parts.parity_inputs(data_spec, mc, prep=prep, n_real=n_real, n_random=n_random)
        figures = parts.parity(model, tmp, inputs=inputs, threads=threads, fp16=fp16, dnc=dnc)
        figures["preprocessing_max_abs"] = prep_diff  # manifest formula vs training's normalisation
        figures["passed"] &= prep_diff < SCORE_TOLERANCE
        engines = None
        if tensorrt_engines and dnc:
            engines, plans = parts.engines(tmp, inputs, max_batch=max_batch, embed_dim=mc.embed_dim, fp16=fp16,
                                           threads=threads)
            figures["passed"] &= engines.get("passed", True)
            files.update(plans)
        last = ck.history[-1] if ck.history else {}
        meta = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.time() - t0, 1), "task": task.name,
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                         "opset": F.OPSET},
            "checkpoint": {"path": str(checkpoint), "epoch": ck.epoch, "step": ck.step,
                           f"test_{task.metric}": last.get(f"test_{task.metric}")},
            "head": mc.head, "model_config": mc.to_dict(), "preprocessing": prep, "max_batch": max_batch,
            "embed_fingerprint": fingerprint, "embed_dim": mc.embed_dim, "files": files,
            "tensors": {"input": [F.EMBED_INPUT.__dict__], "embedding": [task.embed_output.__dict__],
                        "head_inputs": [s.__dict__ for s in task.head_inputs],
                        "head_outputs": [s.__dict__ for s in task.head_outputs] if dnc else []},
            "centroid_set": cs.describe() if cs is not None else None, "parity": figures, "tensorrt": engines,
            **parts.evaluation(model, data_spec, dnc),
        }
        manifest.write(tmp, meta)
        if not figures["passed"]:  # kept for inspection; `staged` then leaves OUT as it was
            failed = out.with_name(out.name + ".failed")
            shutil.rmtree(failed, ignore_errors=True)
            os.replace(tmp, failed)
            raise ExportError(f"parity check failed (tolerance {SCORE_TOLERANCE}); figures in {failed}/"
                              f"{F.MANIFEST_FILE}: {figures}")
    log.info("exported %s %s to %s in %.1fs (parity passed)", task.noun, checkpoint, out, time.time() - t0)
    return meta
