"""onnxruntime helpers shared by export checks, `dnc centroids` and clients (torch-free).

Sessions on the CPU with an explicit thread count, the preprocessing read from an embedding
graph's own metadata, and batched embedding of uint8 images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dnc.core import formats as F
from dnc.core import tasks
from dnc.core.errors import InputError
from dnc.core.images import DataError
from dnc.core.preprocess import normalise


def session(graph: str | Path | bytes, threads: int = 0) -> ort.InferenceSession:
    """A CPU inference session on a graph file (or serialised bytes); `threads` 0: one per core."""
    if not isinstance(graph, bytes) and not Path(graph).is_file():
        raise FileNotFoundError(f"ONNX graph not found: {graph}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's errors (InvalidProtobuf, ...) are not ValueErrors
        raise InputError(f"onnxruntime cannot load {'the graph' if isinstance(graph, bytes) else graph}: {e}") from e


def preprocessing_of(sess: ort.InferenceSession, path: str | Path = "embedding graph") -> dict:
    """The preprocessing an embedding graph expects, from its metadata."""
    meta = sess.get_modelmeta().custom_metadata_map
    if F.META_PREPROCESSING not in meta:
        raise InputError(f"{path} carries no preprocessing metadata: is it an embed.onnx written by `dnc export`?")
    try:
        return json.loads(meta[F.META_PREPROCESSING])
    except ValueError as e:
        raise InputError(f"{path} carries unreadable preprocessing metadata ({e}): export again") from None


def check_task(prep: dict, task: tasks.Task, graph: str | Path, data: str | Path) -> None:
    """Refuse an embedding graph of the other task than the data (classes from folders vs from masks):
    DataError naming the graph and what its data is."""
    got = tasks.of(prep)
    if got != task:
        raise DataError(f"{graph} is a {got.noun}'s embedding graph: its data is {got.data}, not {data} (give "
                        f"a {task.noun}'s embed.onnx, from `dnc export` of its checkpoint)")


def embed_dim_of(sess: ort.InferenceSession) -> int:
    """D of an embedding graph: a classifier's `embedding` (N, D) or a segmenter's `pixel_embedding` (N, D, h, w)."""
    out = {o.name: o for o in sess.get_outputs()}
    if F.EMBEDDING in out and isinstance(out[F.EMBEDDING].shape[-1], int):
        return int(out[F.EMBEDDING].shape[-1])
    if F.PIXEL_EMBEDDING in out and isinstance(out[F.PIXEL_EMBEDDING].shape[1], int):
        return int(out[F.PIXEL_EMBEDDING].shape[1])
    raise InputError(f"the graph has no output {F.EMBEDDING!r} or {F.PIXEL_EMBEDDING!r} of fixed width")


def embed(sess: ort.InferenceSession, images: np.ndarray, prep: dict, batch_size: int = 256) -> np.ndarray:
    """uint8 (N, C, H, W) -> (N, D) float32 embeddings, in batches."""
    out = [sess.run([F.EMBEDDING], {F.IMAGES: normalise(images[i:i + batch_size], prep)})[0]
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, embed_dim_of(sess)), np.float32)
