"""The segmenter: the classifiers' ResNet at output stride 8, a light decoder, and the same head per pixel.

PixelEncoder: the backbone of training/backbones.py, its later stages dilated where needed so the
deepest features are at stride 8 (the 3x3/1 stem of small images is already there: stages at strides
1, 2, 4, 8); a decoder in the DeepLabV3+ manner, light: the deepest features (3x3 conv) upsampled to the
stage before them and fused with it (1x1 conv), a 3x3 conv, and a 1x1 projection to D. Its output is a
map of pixel embeddings (N, D, h, w) at that stage's stride (4 for small images), not normalised.

Segmenter: the head (training/head.py, one implementation) scores every cell of the embedding map:
DNC normalises the cell's embedding and scores each class by its best sub-centroid's cosine; the
parametric twin's linear layer applied per cell is a 1x1 convolution. The class scores are then
upsampled (bilinear, half-pixel centres) to the labels' or the input's resolution, where the loss, the
metrics and the predicted labels are taken, as DeepLab and FCN do with their logits: the head runs on
h x w cells, not on H x W pixels (16 times fewer at stride 4). The winning sub-centroid of a pixel is
the one of its nearest cell. The backbone has the classifier's parameter names and shapes, so a
classifier checkpoint's backbone loads whole (`init_from_classifier`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dnc.core.errors import InputError
from dnc.training.backbones import Bottleneck, ResNet, build_backbone

OUTPUT_STRIDE = 8


def dilate(backbone: ResNet, output_stride: int = OUTPUT_STRIDE) -> list[int]:
    """Turn the strides of stages that would go past `output_stride` into dilations (in place; weights
    unchanged). Returns each stage's output stride."""
    stride = 2 if isinstance(backbone.stem[0], nn.Conv2d) and backbone.stem[0].stride[0] == 2 else 1
    stride *= 2 if len(backbone.stem) > 3 else 1  # the max-pool of the standard stem
    dilation, strides = 1, []
    for stage in backbone.stages:
        first = stage[0]
        step = 2 if _stride(first) == 2 else 1
        if stride * step > output_stride:
            dilation *= step
            for block in stage:
                _dilate_block(block, dilation)
        else:
            stride *= step
        strides.append(stride)
    return strides


def _stride(block: nn.Module) -> int:
    conv = block.conv2 if isinstance(block, Bottleneck) else block.conv1
    return conv.stride[0]


def _dilate_block(block: nn.Module, dilation: int) -> None:
    convs = [block.conv2] if isinstance(block, Bottleneck) else [block.conv1, block.conv2]
    for conv in convs:  # the 3x3 convolutions
        conv.stride, conv.dilation, conv.padding = (1, 1), (dilation, dilation), (dilation, dilation)
    if block.down is not None:
        block.down[0].stride = (1, 1)


def _conv_bn(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=1, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class PixelEncoder(nn.Module):
    """(N, Cin, H, W) -> (N, D, h, w) pixel embeddings (not normalised) at the second-deepest stage's stride."""

    def __init__(self, arch: str, width: int, in_chans: int, small_stem: bool, embed_dim: int, decoder_dim: int):
        super().__init__()
        self.backbone = build_backbone(arch, width, in_chans, small_stem)
        self.strides = dilate(self.backbone)
        expansion = 4 if isinstance(self.backbone.stages[-1][0], Bottleneck) else 1
        deep, skip = width * 8 * expansion, width * 4 * expansion  # channels of the last two stages
        self.deep = _conv_bn(deep, decoder_dim, 3)
        self.skip = _conv_bn(skip, decoder_dim // 4, 1)
        self.fuse = _conv_bn(decoder_dim + decoder_dim // 4, decoder_dim, 3)
        self.proj = nn.Conv2d(decoder_dim, embed_dim, 1, bias=False)
        for m in (self.deep, self.skip, self.fuse, self.proj):
            for conv in m.modules():
                if isinstance(conv, nn.Conv2d):
                    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    @property
    def stride(self) -> int:
        """Stride of the output map."""
        return self.strides[-2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone.stem(x)
        for stage in self.backbone.stages[:-1]:
            x = stage(x)
        low = x  # (N, F3, H/s3, W/s3)
        high = self.deep(self.backbone.stages[-1](low))  # (N, dec, H/8, W/8)
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.proj(self.fuse(torch.cat([high, self.skip(low)], 1)))  # (N, D, h, w)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, X, h, w) -> (N, X, H, W) bilinear with half-pixel centres (ONNX Resize linear/half_pixel)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def cell_pixels(size: tuple[int, int], cells: tuple[int, int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel each cell of an (h, w) map stands for in an (H, W) image: the first pixel whose centre
    lies in the cell, rows (h,) = ceil(i * H / h - 0.5), columns likewise. `nearest_cells` maps it back to
    the same cell at any size (at an integer stride s it is pixel i * s, nearest-neighbour downsampling)."""
    (hh, ww), (h, w) = size, cells
    rows = (torch.arange(h, device=device, dtype=torch.float64) * hh / h - 0.5).ceil().long().clamp(0, hh - 1)
    cols = (torch.arange(w, device=device, dtype=torch.float64) * ww / w - 0.5).ceil().long().clamp(0, ww - 1)
    return rows, cols


def nearest_cells(size: tuple[int, int], cells: tuple[int, int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The cell of an (h, w) map holding each pixel centre of an (H, W) image: rows (H,) =
    floor((y + 0.5) * h / H), columns (W,) likewise (the cell whose winning sub-centroid a pixel shows)."""
    (hh, ww), (h, w) = size, cells
    rows = ((torch.arange(hh, device=device, dtype=torch.float64) + 0.5) * h / hh).floor().long().clamp(max=h - 1)
    cols = ((torch.arange(ww, device=device, dtype=torch.float64) + 0.5) * w / ww).floor().long().clamp(max=w - 1)
    return rows, cols


class Segmenter(nn.Module):
    """pixel encoder -> head per cell -> class scores upsampled to the input. forward returns (pixel
    embeddings (N, D, h, w), not normalised; logits (N, C, H, W) at the input's resolution)."""

    def __init__(self, cfg, make_head):
        """`make_head()` builds the head; it is called after the encoder, so twins whose heads differ (one
        drawing from the global random state, one not) start from the same encoder."""
        super().__init__()
        self.cfg = cfg
        self.encoder = PixelEncoder(cfg.arch, cfg.width, cfg.in_chans, small_stem=cfg.small_stem,
                                    embed_dim=cfg.embed_dim, decoder_dim=cfg.decoder_dim)
        self.head = make_head()

    def cell_logits(self, emb: torch.Tensor, head: nn.Module | None = None) -> torch.Tensor:
        """(N, D, h, w) -> (N, C, h, w): the head (or a wrapper of it, e.g. DDP) applied to every cell."""
        n, d, h, w = emb.shape
        out = (head or self.head)(emb.permute(0, 2, 3, 1).reshape(-1, d))  # (N*h*w, C)
        return out.view(n, h, w, -1).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.encoder(x)
        return emb, upsample(self.cell_logits(emb).float(), x.shape[-2:])


def init_from_classifier(segmenter: Segmenter, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Load a classifier checkpoint's backbone (`encoder.backbone.*`) into a segmenter, in place.

    A 1-channel stem (grey images) is adapted to 3 channels by spreading its weights over R, G and B
    (each a third), so a grey image in RGB gives the classifier's own stem response. Returns
    {"loaded": names, "adapted": names, "not_loaded": classifier tensors left out (its projection, head),
    "not_initialised": segmenter tensors left at their initial value (decoder, head)}. Shape mismatches
    other than the stem raise InputError naming the tensor.
    """
    prefix = "encoder.backbone."
    own = segmenter.encoder.backbone.state_dict()
    src = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not src:
        raise InputError("the checkpoint holds no classifier backbone (no encoder.backbone.* tensors)")
    loaded, adapted, new = [], [], {}
    for name, value in src.items():
        if name not in own:
            raise InputError(f"classifier tensor {prefix}{name} has no counterpart in the segmenter's backbone "
                             "(another `arch`?)")
        want = own[name].shape
        if value.shape != want:
            if (name == "stem.0.weight" and value.shape[1] == 1 and want[1] == 3 and value.shape[0] == want[0]
                    and value.shape[2:] == want[2:]):
                value = value.repeat(1, 3, 1, 1) / 3.0
                adapted.append(prefix + name)
            else:
                raise InputError(f"classifier tensor {prefix}{name} is {tuple(value.shape)} but the segmenter's is "
                                 f"{tuple(want)} (another `arch`, `width`, or stem: images <= 64 px get the 3x3 "
                                 "stem, larger ones the 7x7)")
        new[name] = value
        loaded.append(prefix + name)
    missing = [prefix + k for k in own if k not in new]
    if missing:
        raise InputError(f"the classifier checkpoint lacks {missing[0]} (and {len(missing) - 1} more)")
    segmenter.encoder.backbone.load_state_dict(new)
    not_loaded = [k for k in state if not k.startswith(prefix)]
    not_init = [f"encoder.{k}" for k in segmenter.encoder.state_dict() if not k.startswith("backbone.")]
    not_init += [f"head.{k}" for k in segmenter.head.state_dict()]
    return {"loaded": loaded, "adapted": adapted, "not_loaded": not_loaded, "not_initialised": not_init}

