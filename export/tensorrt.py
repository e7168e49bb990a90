"""`dnc export --tensorrt`: TensorRT engines (model.plan files) from the exported ONNX graphs.

Needs a CUDA GPU and the `tensorrt` Python package (11.x: networks are strongly typed, so an fp16
engine comes from the fp16 ONNX graph, which keeps normalisation, cosine and max in fp32; there is
no FP16 builder flag). One optimisation profile over batch 1..max_batch. Plans are tied to the
TensorRT version (and GPU) that built them: build them where, or with the version that, serves them.
Where no GPU or no tensorrt is present, `available()` says why and nothing is built.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dnc.core import formats as F
from dnc.export import runtime
from dnc.export.checkpoint_set import ExportError

log = logging.getLogger(__name__)

AGREEMENT_TARGET = 0.999  # predicted-class agreement of the engines with onnxruntime fp32


def available() -> tuple[bool, str]:
    """(True, version) where engines can be built here, else (False, the reason)."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "the tensorrt Python package is not installed (pip install tensorrt on a CUDA machine)"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU is available on this machine"
    except ImportError:
        pass
    return True, trt.__version__


def build_engine(onnx_path: Path, plan_path: Path, input_name: str, sample_shape: tuple[int, ...],
                 max_batch: int, workspace_gib: float = 2.0,
                 sizes: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None) -> Path:
    """Parse an ONNX graph and write a serialised engine with a batch profile 1 / max_batch / max_batch.

    sample_shape: the input's shape without the batch dimension. sizes: for an input of free height
    and width (a segmenter's), the (min, opt, max) (H, W) of the profile; sample_shape's last two
    dimensions are then ignored. The plan is written under a temporary name and renamed, so a failed
    build leaves no partial file."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 11: explicit batch and strong typing always
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    if sizes is None:
        profile.set_shape(input_name, (1, *sample_shape), (max_batch, *sample_shape), (max_batch, *sample_shape))
    else:
        lead = tuple(sample_shape[:-2])
        (lo, opt, hi) = sizes
        profile.set_shape(input_name, (1, *lead, *lo), (max_batch, *lead, *opt), (max_batch, *lead, *hi))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path}")
    tmp = plan_path.with_name(f".{plan_path.name}.tmp")
    tmp.write_bytes(bytes(engine))
    tmp.replace(plan_path)
    log.info("built %s (%.1f MB)", plan_path, plan_path.stat().st_size / 1e6)
    return plan_path


def run_engine(plan: Path, inputs: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """Run a plan on the GPU over `inputs` in chunks of `batch`; returns every output as numpy."""
    import tensorrt as trt
    import torch

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
    ctx = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    n_total = len(next(iter(inputs.values())))
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in outs}
    for i in range(0, n_total, batch):
        keep = []
        for name, arr in inputs.items():
            t = torch.from_numpy(np.ascontiguousarray(arr[i:i + batch])).cuda()
            keep.append(t)
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        bufs = {}
        for name in outs:
            dtype = torch.from_numpy(np.zeros(0, trt.nptype(engine.get_tensor_dtype(name)))).dtype
            bufs[name] = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=dtype, device="cuda")
            ctx.set_tensor_address(name, bufs[name].data_ptr())
        if not ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise ExportError(f"TensorRT failed to run {plan}")
        torch.cuda.synchronize()
        for name in outs:
            chunks[name].append(bufs[name].cpu().numpy())
    return {n: np.concatenate(v) for n, v in chunks.items()}


def build_and_check(folder: Path, max_batch: int, embed_dim: int, images: np.ndarray, reference_pred: np.ndarray,
                    fp16: bool = True) -> dict:
    """Build embed.plan (from the fp16 graph when present) and head.plan in `folder`, then run both on
    `images` and compare predicted classes with `reference_pred` (onnxruntime fp32).

    Returns the figures for the manifest: TensorRT version, the graphs used, agreement."""
    import tensorrt as trt

    sample = tuple(images.shape[1:])
    embed_src = F.EMBED_FP16_FILE if fp16 and (folder / F.EMBED_FP16_FILE).exists() else F.EMBED_FILE
    build_engine(folder / embed_src, folder / F.EMBED_PLAN_FILE, input_name=F.IMAGES, sample_shape=sample,
                 max_batch=max_batch)
    build_engine(folder / F.HEAD_FILE, folder / F.HEAD_PLAN_FILE, input_name=F.EMBEDDING, sample_shape=(embed_dim,),
                 max_batch=max_batch)
    emb = run_engine(folder / F.EMBED_PLAN_FILE, {F.IMAGES: images}, max_batch)[F.EMBEDDING]
    pred = run_engine(folder / F.HEAD_PLAN_FILE, {F.EMBEDDING: emb.astype(np.float32)}, max_batch)[F.PREDICTED]
    agreement = float((pred.reshape(-1) == reference_pred).mean())
    return {"built": True, "tensorrt": trt.__version__, "embed_from": embed_src,
            "files": [F.EMBED_PLAN_FILE, F.HEAD_PLAN_FILE], "n": len(images),
            "predicted_agreement_vs_onnxruntime_fp32": agreement, "passed": agreement >= AGREEMENT_TARGET}


SEG_LABEL_TARGET = 0.995  # share of pixels whose label the engine (fp16) and onnxruntime fp32 agree on
SEG_MAX_SIDE = 1024  # largest height and width of a segmenter's engine profile


def build_and_check_segmenter(folder: Path, max_batch: int, images: np.ndarray, reference_labels: np.ndarray,
                              fp16: bool = True) -> dict:
    """Build embed.plan for a segmenter (from the fp16 graph when present; one profile over batch
    1..max_batch and heights and widths 32..SEG_MAX_SIDE) and check it: the engine's cell embeddings go
    through head.onnx in onnxruntime (the served head runs there too), and the labels are compared with
    `reference_labels` (onnxruntime fp32, merged graph) on `images`.

    Written for `dnc export --tensorrt` of segmenters; run only where a CUDA GPU is lent."""
    import tensorrt as trt

    embed_src = F.EMBED_FP16_FILE if fp16 and (folder / F.EMBED_FP16_FILE).exists() else F.EMBED_FILE
    h, w = images.shape[-2:]
    build_engine(folder / embed_src, folder / F.EMBED_PLAN_FILE, input_name=F.IMAGES,
                 sample_shape=tuple(images.shape[1:]), max_batch=max_batch, sizes=((32, 32), (h, w), (SEG_MAX_SIDE,
                                                                                                      SEG_MAX_SIDE)))
    cells = run_engine(folder / F.EMBED_PLAN_FILE, {F.IMAGES: images}, max_batch)[F.PIXEL_EMBEDDING]
    head = runtime.session(folder / F.HEAD_FILE)
    labels = head.run([F.LABELS], {F.PIXEL_EMBEDDING: cells.astype(np.float32),
                                   F.OUTPUT_SIZE: np.array([h, w], np.int64)})[0]
    agreement = float((labels == reference_labels).mean())
    return {"built": True, "tensorrt": trt.__version__, "embed_from": embed_src, "files": [F.EMBED_PLAN_FILE],
            "n": len(images), "label_agreement_vs_onnxruntime_fp32": agreement,
            "profile_sides": [32, SEG_MAX_SIDE], "passed": agreement >= SEG_LABEL_TARGET}
