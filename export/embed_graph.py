"""The embedding graph: a trained encoder as ONNX, images (N, Cin, H, W) -> L2-normalised (N, D), or, for
a segmenter, images of any height and width -> cell embeddings (N, D, h, w), not normalised (the head
normalises each cell).

The fp32 graph is the reference every other artefact is paired with (its file hash is the
embedding fingerprint). The fp16 variant runs the backbone in fp16 and casts back to fp32 before
the L2 normalisation, so sums of squares never overflow; its input and output stay fp32, so
clients and heads are the same for both.
"""

from __future__ import annotations

import copy
import io
import json
import warnings

import onnx
import torch
import torch.nn.functional as tF
from torch import nn

from dnc.core import formats as F
from dnc.core import tasks
from dnc.export.head_graph import set_metadata


class EmbedModule(nn.Module):
    """images (N, Cin, H, W) float32 -> embedding (N, D) float32, L2-normalised in fp32."""

    def __init__(self, encoder: nn.Module, fp16: bool = False):
        super().__init__()
        self.encoder, self.fp16 = encoder, fp16

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.half() if self.fp16 else images
        return tF.normalize(self.encoder(x).float(), dim=-1)


class PixelEmbedModule(nn.Module):
    """images (N, Cin, H, W) float32 -> cell embeddings (N, D, h, w) float32 (the backbone in fp16 or fp32)."""

    def __init__(self, encoder: nn.Module, fp16: bool = False):
        super().__init__()
        self.encoder, self.fp16 = encoder, fp16

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images.half() if self.fp16 else images).float()


def export_embed(encoder: nn.Module, in_chans: int, image_size: int, preprocessing: dict,
                 fp16: bool = False, task: str = tasks.CLASSIFICATION.name) -> onnx.ModelProto:
    """Trace `encoder` (left untouched) to an ONNX embedding graph with a dynamic batch (and, for a
    segmenter's pixel encoder, a dynamic height and width)."""
    enc = copy.deepcopy(encoder).float().eval().to("cpu", memory_format=torch.contiguous_format)
    if fp16:
        enc = enc.half()
    dummy = torch.zeros(2, in_chans, image_size, image_size)
    seg = tasks.task(task).dense
    module, output = (PixelEmbedModule(enc, fp16), F.PIXEL_EMBEDDING) if seg else (EmbedModule(enc, fp16), F.EMBEDDING)
    axes = ({F.IMAGES: {0: "batch", 2: "height", 3: "width"}, output: {0: "batch", 2: "cells_h", 3: "cells_w"}}
            if seg else {F.IMAGES: {0: "batch"}, output: {0: "batch"}})
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (dummy,), buf, input_names=[F.IMAGES], output_names=[output], dynamic_axes=axes,
                          opset_version=F.OPSET, do_constant_folding=True, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    meta = {F.META_PREPROCESSING: json.dumps(preprocessing), F.META_PRECISION: "fp16" if fp16 else "fp32"}
    if seg:
        meta[F.META_TASK] = task
    set_metadata(model, meta)
    onnx.checker.check_model(model)
    return model
