"""The embedding graph: a trained encoder as ONNX, images (N, Cin, H, W) -> L2-normalised (N, D).

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

from export import formats as F
from export.head_graph import set_metadata


class EmbedModule(nn.Module):
    """images (N, Cin, H, W) float32 -> embedding (N, D) float32, L2-normalised in fp32."""

    def __init__(self, encoder: nn.Module, fp16: bool = False):
        super().__init__()
        self.encoder, self.fp16 = encoder, fp16

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.half() if self.fp16 else images
        return tF.normalize(self.encoder(x).float(), dim=-1)


def export_embed(encoder: nn.Module, in_chans: int, image_size: int, preprocessing: dict,
                 fp16: bool = False) -> onnx.ModelProto:
    """Trace `encoder` (left untouched) to an ONNX embedding graph with a dynamic batch."""
    enc = copy.deepcopy(encoder).float().eval().to("cpu", memory_format=torch.contiguous_format)
    if fp16:
        enc = enc.half()
    dummy = torch.zeros(2, in_chans, image_size, image_size)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(EmbedModule(enc, fp16), (dummy,), buf, input_names=[F.IMAGES], output_names=[F.EMBEDDING],
                          dynamic_axes={F.IMAGES: {0: "batch"}, F.EMBEDDING: {0: "batch"}}, opset_version=F.OPSET,
                          do_constant_folding=True, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    set_metadata(model, {F.META_PREPROCESSING: json.dumps(preprocessing), F.META_PRECISION: "fp16" if fp16 else "fp32"})
    onnx.checker.check_model(model)
    return model
