"""What differs between a classifier's and a segmenter's export, as one object per task.

export/exporter.py runs one pipeline for both (stage, embed graphs, centroid set, head, merged graph,
parity, evaluation, engines, manifest, `.failed` on failure); it asks the object of the checkpoint's task
(`parts_for`) for the few steps that differ:
- the parity inputs: a classifier's real test images at the training size and random ones at that size;
  a segmenter's real test scenes and random images at several heights and widths (the graph takes any);
- the head graph and how it is joined to the embedding graph (export/head_graph.py,
  export/seg_head_graph.py), and the parity checks (export/parity.py, export/seg_parity.py);
- the evaluation recorded in the manifest (top-1 and live sub-centroids; mIoU, pixel accuracy, IoU per
  class and live sub-centroids);
- the TensorRT engines (embedding and head; embedding only).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from dnc.core import centroid_set, preprocess, tasks
from dnc.core import formats as F
from dnc.core.errors import InputError
from dnc.export import parity, runtime, seg_parity, tensorrt
from dnc.export.head_graph import attach_head, build_head
from dnc.export.seg_head_graph import attach_seg_head, build_seg_head
from dnc.training import checkpoint as ckpt_io
from dnc.training.batches import normalise
from dnc.training.data import load_dataset
from dnc.training.liveness import LIVE_SHARE
from dnc.training.loop import evaluate, subset
from dnc.training.seg_data import load_seg_folder
from dnc.training.seg_task import SegmentationTask

log = logging.getLogger(__name__)

LIVENESS_KEYS = ("live_mean", "live_min", "live_per_class", "k_per_class", "centroid_cos", "centroid_cos_per_class")
RANDOM_SIZES = ((37, 53), (96, 80), (64, 64))  # a segmenter's random parity inputs: heights and widths
DEFAULT_CLASSIFIER_DATA = "fashion-mnist"  # checkpoints from before the data set was recorded


@dataclass(frozen=True)
class ClassifierParts:
    task: tasks.Task = tasks.CLASSIFICATION

    def data_spec(self, ck: ckpt_io.Checkpoint, data: str | None, checkpoint: str | Path) -> str:
        return data or ck.train_config.get("data", DEFAULT_CLASSIFIER_DATA)

    def parity_inputs(self, data_spec: str, mc, prep: dict, n_real: int, n_random: int, seed: int = 0
                      ) -> tuple[dict[str, np.ndarray], float]:
        """Real test images (the first n_real of the test split) and random inputs, preprocessed as the
        manifest says; and the max |difference| between that preprocessing and training's own (so a
        client following the manifest feeds the model what it was trained on)."""
        test = load_dataset(data_spec, "test", mc.in_chans, mc.image_size)
        pixels = test.load(torch.arange(min(n_real, len(test))))  # (N, C, H, W) uint8
        rng = np.random.default_rng(seed)
        rand = rng.standard_normal((n_random, mc.in_chans, mc.image_size, mc.image_size)).astype(np.float32)
        real, diff = _real(pixels, mc, prep)
        return {"real": real, "random": rand}, diff

    def head(self, cs: centroid_set.CentroidSet, embed: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.ModelProto]:
        """(head.onnx, model.onnx): the head alone, and joined to the embedding graph."""
        return build_head(cs), attach_head(embed, build_head(cs, normalise_input=False))

    def parity(self, model, folder: Path, inputs: dict, threads: int, fp16: bool, dnc: bool) -> dict:
        if dnc:
            return parity.check(model, folder, inputs=inputs, threads=threads, fp16=fp16)
        return parity.check_embedding(model, folder, inputs, threads)

    def evaluation(self, model, data_spec: str, dnc: bool, limit: int = 10000) -> dict:
        """The manifest's `subcentroids`: live sub-centroids (training/liveness.py) of the exported set on
        the first `limit` test images, with the top-1 they go with."""
        if not dnc:
            return {"subcentroids": None}
        mc = model.cfg
        ev = evaluate(model, subset(load_dataset(data_spec, "test", mc.in_chans, mc.image_size), limit),
                      torch.device("cpu"))
        return {"subcentroids": {"data": data_spec, "split": "test", "images": ev["n"], "top1": ev["top1"],
                                 "live_share": LIVE_SHARE, **{k: ev[k] for k in LIVENESS_KEYS}}}

    def engines(self, folder: Path, inputs: dict, max_batch: int, embed_dim: int, fp16: bool, threads: int
                ) -> tuple[dict, dict]:
        """TensorRT engines of the embedding and the head, checked against the merged ONNX graph's classes;
        (the manifest's `tensorrt`, the files added)."""
        ok, why = tensorrt.available()
        if not ok:
            log.warning("TensorRT engines not built: %s", why)
            return {"built": False, "reason": why}, {}
        reference = runtime.session(folder / F.MERGED_FILE).run([F.PREDICTED], {F.IMAGES: inputs["real"]})[0]
        got = tensorrt.build_and_check(folder, max_batch, embed_dim=embed_dim, images=inputs["real"],
                                       reference_pred=reference, fp16=fp16)
        return got, ({"embed_plan": F.EMBED_PLAN_FILE, "head_plan": F.HEAD_PLAN_FILE} if got["built"] else {})


@dataclass(frozen=True)
class SegmenterParts:
    task: tasks.Task = tasks.SEGMENTATION

    def data_spec(self, ck: ckpt_io.Checkpoint, data: str | None, checkpoint: str | Path) -> str:
        spec = data or ck.train_config.get("data")
        if not spec:
            raise InputError(f"{checkpoint} does not say what it was trained on: give `data` (the segmentation "
                             "folder it was trained on)")
        return spec

    def parity_inputs(self, data_spec: str, mc, prep: dict, n_real: int, n_random: int, seed: int = 0
                      ) -> tuple[dict[str, np.ndarray], float]:
        """Real test scenes (the first n_real, at the training size) and random images at RANDOM_SIZES
        (n_random split over them), preprocessed as the manifest says; and the max |difference| between
        that preprocessing and training's own."""
        test = load_seg_folder(data_spec, "test", mc.image_size, mc.in_chans, limit=n_real)
        real, diff = _real(test.images, mc, prep)  # (N, C, S, S) uint8 in
        rng = np.random.default_rng(seed)
        inputs = {f"real {mc.image_size}x{mc.image_size}": real}
        per = max(1, n_random // len(RANDOM_SIZES))
        for h, w in RANDOM_SIZES:
            inputs[f"random {h}x{w}"] = rng.standard_normal((per, mc.in_chans, h, w)).astype(np.float32)
        return inputs, diff

    def head(self, cs: centroid_set.CentroidSet, embed: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.ModelProto]:
        return build_seg_head(cs), attach_seg_head(embed, build_seg_head(cs))

    def parity(self, model, folder: Path, inputs: dict, threads: int, fp16: bool, dnc: bool) -> dict:
        check = seg_parity.check if dnc else seg_parity.check_embedding
        return check(model, folder, inputs=inputs, threads=threads, fp16=fp16)

    def evaluation(self, model, data_spec: str, dnc: bool) -> dict:
        """The manifest's `evaluation` (mIoU, pixel accuracy, IoU per class on the test scenes) and, for a
        DNC head, `subcentroids` (live sub-centroids on them)."""
        mc = model.cfg
        ev = SegmentationTask().evaluate(model, load_seg_folder(data_spec, "test", mc.image_size, mc.in_chans),
                                         torch.device("cpu"))
        return {"evaluation": {"data": data_spec, "split": "test", "miou": ev["miou"], "pixel_acc": ev["pixel_acc"],
                               "iou_per_class": ev["iou_per_class"]},
                "subcentroids": {"data": data_spec, "split": "test", "live_share": LIVE_SHARE,
                                 **{k: ev[k] for k in LIVENESS_KEYS}} if dnc else None}

    def engines(self, folder: Path, inputs: dict, max_batch: int, embed_dim: int, fp16: bool, threads: int
                ) -> tuple[dict, dict]:
        """A TensorRT engine of the embedding, checked on the real parity scenes against the merged ONNX
        graph's labels; (the manifest's `tensorrt`, the files added)."""
        ok, why = tensorrt.available()
        if not ok:
            log.warning("TensorRT engine not built: %s", why)
            return {"built": False, "reason": why}, {}
        real = next(x for kind, x in inputs.items() if kind.startswith("real"))
        reference = runtime.session(folder / F.MERGED_FILE, threads).run([F.LABELS], {F.IMAGES: real})[0]
        got = tensorrt.build_and_check_segmenter(folder, max_batch, images=real, reference_labels=reference, fp16=fp16)
        return got, ({"embed_plan": F.EMBED_PLAN_FILE} if got["built"] else {})


def _real(pixels: torch.Tensor, mc, prep: dict) -> tuple[np.ndarray, float]:
    """(N, C, H, W) uint8 pixels preprocessed as the manifest says, and the max |difference| from
    training's own normalisation."""
    real = preprocess.normalise(pixels.numpy(), prep)
    return real, float(np.abs(real - normalise(pixels, mc.mean, mc.std).numpy()).max())


def parts_for(task: tasks.Task) -> ClassifierParts | SegmenterParts:
    return SegmenterParts() if task.dense else ClassifierParts()
