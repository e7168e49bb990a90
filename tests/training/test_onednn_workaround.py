"""The shortcut convolution's work-around for oneDNN's strided 1x1 backward-weights overrun
(uxlfoundation/oneDNN#6035; training/backbones.py, SubsampledPointwise).

A 64 px segmenter of width 8 aborted in loss.backward() with glibc's "double free or corruption (!prev)":
oneDNN wrote past its workspace for stage 2's shortcut (8 -> 16 channels at stride 2, channels_last). The
training runs are in a subprocess so that heap corruption fails the test instead of killing pytest.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from dnc.training.backbones import SubsampledPointwise


def _run(script: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=timeout)


def test_64px_segmenter_of_width_8_trains(tmp_path, fmnist_ready):
    """The reported configuration (seed, sizes, widths), on fewer scenes: one epoch of two steps, its
    evaluation and checkpoint. Before the work-around this aborted at the first backward pass (exit 134)."""
    res = _run(f"""
        import torch
        from dnc.training.config import ModelConfig, TrainConfig
        from dnc.training.loop import train
        from dnc.training.scenes import write_scenes
        torch.set_num_threads(2)
        root = {str(tmp_path)!r}
        write_scenes(f"{{root}}/scenes", "fine", size=64, train=32, test=4, seed=1)
        t = TrainConfig(data=f"{{root}}/scenes", out=f"{{root}}/run", epochs=1, batch_size=16, lr=0.05, workers=0)
        m = ModelConfig(num_classes=11, task="segmentation", in_chans=3, image_size=64, width=8, embed_dim=32,
                        decoder_dim=8, k=[3] * 10 + [2], mean=[0.5] * 3, std=[0.5] * 3)
        train(t, m)
        print("trained")
    """)
    assert res.returncode == 0 and "trained" in res.stdout, (
        f"training exited with {res.returncode} (-6/134: abort, -11/139: segfault)\n{res.stderr[-3000:]}")
    assert (tmp_path / "run" / "checkpoint.safetensors").is_file()


@pytest.mark.parametrize("cin", [3, 8, 15, 16])
def test_subsampled_pointwise_equals_the_strided_convolution(cin):
    """Output, input gradient and weight gradient, in both branches (fewer than ONEDNN_IC_BLOCK input
    channels with gradient: subsampled; otherwise oneDNN's strided convolution), against a float64 strided
    convolution (not oneDNN's: it has no float64 kernels). Odd sizes: the output is ceil(H / 2) x ceil(W / 2)."""
    torch.manual_seed(0)
    conv = SubsampledPointwise(cin, 16, 2).to(memory_format=torch.channels_last)
    x = torch.randn(4, cin, 33, 30).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(4, 16, 17, 15)
    out = conv(x)
    out.backward(g)
    w64 = conv.weight.detach().double().requires_grad_()
    x64 = x.detach().double().requires_grad_()
    ref = F.conv2d(x64, w64, stride=2)
    ref.backward(g.double())
    assert out.shape == ref.shape == g.shape
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.weight.grad.double(), w64.grad, rtol=1e-5, atol=1e-4)
    with torch.no_grad():  # evaluation and export keep the strided convolution
        torch.testing.assert_close(conv(x).double(), ref, rtol=1e-5, atol=1e-5)


def test_onednn_bug_is_still_there():
    """Whether the work-around is still needed: a bare channels_last Conv2d(8, 16, 1, stride=2) on 64 x 64
    maps, its weight gradient against float64. If this torch on this CPU neither crashes nor gets it wrong,
    the test skips saying so (the work-around may be dropped once no supported torch has the bug)."""
    res = _run("""
        import torch, torch.nn.functional as F
        torch.manual_seed(0)
        w = torch.randn(16, 8, 1, 1)
        x = torch.randn(16, 8, 64, 64)
        g = torch.randn(16, 16, 32, 32)
        wc = w.contiguous(memory_format=torch.channels_last).requires_grad_()
        xc = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        F.conv2d(xc, wc, stride=2).backward(g.contiguous(memory_format=torch.channels_last))
        w64 = w.double().requires_grad_()
        F.conv2d(x.double(), w64, stride=2).backward(g.double())
        err = float((wc.grad.double() - w64.grad).abs().max() / w64.grad.abs().max())
        print("relative error", err)
        print("wrong" if err > 1e-4 else "right")
    """)
    if res.returncode == 0 and res.stdout.strip().endswith("right"):
        pytest.skip("oneDNN #6035 does not show with this torch on this CPU: training/backbones.py's "
                    "SubsampledPointwise work-around may no longer be needed")
    assert res.returncode != 0 or res.stdout.strip().endswith("wrong"), res.stdout + res.stderr[-2000:]
