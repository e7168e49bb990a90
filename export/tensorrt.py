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

from export import formats as F

log = logging.getLogger(__name__)


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
                 max_batch: int, workspace_gib: float = 2.0) -> Path:
    """Parse an ONNX graph and write a serialised engine with a batch profile 1 / max_batch / max_batch.

    sample_shape: the input's shape without the batch dimension."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 11: explicit batch and strong typing always
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (1, *sample_shape), (max_batch, *sample_shape), (max_batch, *sample_shape))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    plan_path.write_bytes(bytes(engine))
    log.info("built %s (%.1f MB)", plan_path, plan_path.stat().st_size / 1e6)
    return plan_path


def build_export_engines(folder: Path, manifest: dict, fp16: bool = True) -> dict[str, str]:
    """Engines for an export folder: the embedding (fp16 graph when present) and the head."""
    prep, max_batch = manifest["preprocessing"], manifest["max_batch"]
    image = (prep["channels"], prep["image_size"], prep["image_size"])
    embed_src = F.EMBED_FP16_FILE if fp16 and (folder / F.EMBED_FP16_FILE).exists() else F.EMBED_FILE
    plans = {"embed": str(build_engine(folder / embed_src, folder / f"embed{F.PLAN_SUFFIX}", F.IMAGES, image,
                                       max_batch))}
    if (folder / F.HEAD_FILE).exists():
        plans["head"] = str(build_engine(folder / F.HEAD_FILE, folder / f"head{F.PLAN_SUFFIX}", F.EMBEDDING,
                                         (manifest["embed_dim"],), max_batch))
    return plans


def check_engine_agreement(plan: Path, head_onnx: Path, images: np.ndarray, reference_pred: np.ndarray) -> float:
    """Predicted-class agreement of an embed engine + the ONNX head with a reference (GPU only)."""
    import tensorrt as trt
    import torch

    from export import runtime

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
    ctx = engine.create_execution_context()
    head = runtime.session(head_onnx)
    preds = []
    max_batch = engine.get_tensor_profile_shape(F.IMAGES, 0)[2][0]
    for i in range(0, len(images), max_batch):
        x = torch.from_numpy(images[i:i + max_batch]).cuda().contiguous()
        out = torch.empty(len(x), engine.get_tensor_shape(F.EMBEDDING)[1], device="cuda")
        ctx.set_input_shape(F.IMAGES, tuple(x.shape))
        ctx.set_tensor_address(F.IMAGES, x.data_ptr())
        ctx.set_tensor_address(F.EMBEDDING, out.data_ptr())
        ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        preds.append(head.run([F.PREDICTED], {F.EMBEDDING: out.cpu().numpy()})[0])
    return float((np.concatenate(preds) == reference_pred).mean())
