"""ResNet backbones written in the project (torchvision does not import with the CPU torch here).

ResNet-10/18/34/50 block layouts with a base width to scale them down for CPU work, and two stems:
the standard 7x7/2 conv + max-pool for large images, and a 3x3/1 conv without pooling for 28-32 px
inputs (CIFAR, Fashion-MNIST). Output: pooled features (N, feature_dim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dnc.core.errors import InputError

# Input channels below which a strided 1x1 convolution's weight gradient is taken at unit stride on the
# CPU (see SubsampledPointwise): the channel block of oneDNN's x64 1x1 kernels (16 with AVX-512, 8 with AVX2).
ONEDNN_IC_BLOCK = 16


class SubsampledPointwise(nn.Conv2d):
    """The shortcut's 1x1 convolution (no padding); when its weight gradient is to be taken on the CPU with
    fewer than ONEDNN_IC_BLOCK input channels, its stride is taken by subsampling the input first and the
    convolution runs at unit stride (the same result: a 1x1 kernel reads only the pixels it lands on).

    Why: oneDNN's 1x1 backward-weights kernels (jit_avx512_common_1x1 / jit_avx2_1x1, torch 2.13.0 ships
    oneDNN 3.12) address the workspace into which they reduce a strided channels_last input to unit stride
    as if it had a whole channel block per pixel, but it is sized for the real channel count, so with
    fewer channels they write past it (uxlfoundation/oneDNN#6035, open; reported there as segfaults, hangs
    or wrong weight gradients). A 64 px segmenter of width 8 (stages.1.0.down.0: 8 -> 16 channels at
    stride 2, 64 x 64 maps) died of it in loss.backward() with glibc's "double free or corruption
    (!prev)"; here any of 3 to 15 input channels crashed on 64 x 64 maps, 16 or more did not, and smaller
    maps (the 32 px test fixture) happened not to. At unit stride there is no such workspace. Passes
    without a weight gradient (evaluation, ONNX export) keep the strided convolution: only the
    backward-weights pass is at fault. tests/training/test_onednn_workaround.py checks whether this torch
    still has the bug.
    """

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(cin, cout, 1, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self.stride
        if ((sh, sw) != (1, 1) and self.in_channels < ONEDNN_IC_BLOCK and x.device.type == "cpu"
                and torch.is_grad_enabled() and self.weight.requires_grad):
            return F.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias)
        return super().forward(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(SubsampledPointwise(cin, cout, stride), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(SubsampledPointwise(cin, cout, stride), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class ResNet(nn.Module):
    """ResNet trunk: stem, four stages, global average pool. forward: (N, Cin, H, W) -> (N, F)."""

    def __init__(self, block: type[nn.Module], layers: list[int], width: int = 64, in_chans: int = 3,
                 small_stem: bool = False):
        super().__init__()
        if small_stem:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], width
        for i, n in enumerate(layers):
            w = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each block: blocks start as identity
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_((m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight)

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(N, Cin, H, W) -> (N, F, H/s, W/s) feature maps (for dense heads)."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_maps(x)).flatten(1)


ARCHS = {
    "resnet10": (BasicBlock, [1, 1, 1, 1]),
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


def build_backbone(arch: str, width: int = 64, in_chans: int = 3, small_stem: bool = False) -> ResNet:
    """Build a ResNet by name ("resnet10", "resnet18", "resnet34", "resnet50")."""
    if arch not in ARCHS:
        raise InputError(f"unknown backbone (`arch`) {arch!r}; choose one of {', '.join(ARCHS)}")
    if width < 1:
        raise InputError(f"backbone `width` must be >= 1, got {width}")
    block, layers = ARCHS[arch]
    return ResNet(block, layers, width=width, in_chans=in_chans, small_stem=small_stem)
