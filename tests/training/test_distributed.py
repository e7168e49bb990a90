"""Data-parallel training on 2 CPU processes: features are gathered before clustering, so both
ranks end with identical centroids and memory (and identical weights through DDP)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dnc.training.batches import epoch_batches
from dnc.training.head import DNCHead


def _torchrun(tmp_path, head, *extra):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]), OMP_NUM_THREADS="1")
    with socket.socket() as s:  # a free port for the rendezvous (port 0 hangs the static rendezvous)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(worker), str(tmp_path), head, *extra]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]


@pytest.mark.slow
def test_two_process_dnc_centroids_agree(tmp_path, fmnist_ready):
    r0, r1 = _torchrun(tmp_path, "dnc")
    init = DNCHead(10, 16, k=4, generator=torch.Generator().manual_seed(1), revive=False).centroids
    assert not torch.allclose(r0["head.centroids"], init), "centroids never moved"
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"{key} differs between ranks"
    # Features were gathered: the memory holds samples from both ranks' shards.
    ids = set(r0["head.memory.ids"][r0["head.memory.ids"] >= 0].tolist())
    shards = [set(torch.cat(epoch_batches(256, 16, 0, 0, shuffle=True, rank=r, world=2)[:6]).tolist()) for r in (0, 1)]
    assert ids <= shards[0] | shards[1]
    assert ids & shards[0] and ids & shards[1], "memory holds only one rank's samples"
    assert (tmp_path / "checkpoint.safetensors").exists()


@pytest.mark.slow
def test_two_process_revival_is_identical_on_both_ranks(tmp_path, fmnist_ready):
    r0, r1 = _torchrun(tmp_path, "dnc-revive")
    assert bool(r0["head.initialised"].any()), "no class was clustered from its memory"
    assert int(r0["head.updates"]) == 6
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"{key} differs between ranks"


@pytest.mark.slow
def test_two_process_segmenter_keeps_identical_subcentroids(tmp_path, fmnist_ready):
    from dnc.training.scenes import write_scenes

    write_scenes(tmp_path / "scenes", "coarse", size=32, train=64, test=8, seed=0)
    r0, r1 = _torchrun(tmp_path, "seg", str(tmp_path / "scenes"))
    assert int(r0["head.updates"]) == 4 and bool(r0["head.initialised"].any())
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"{key} differs between ranks"
    # cells of both ranks' images reached the memory (pixel id // (32 * 32) is the scene)
    scenes = set((r0["head.memory.ids"][r0["head.memory.ids"] >= 0] // 1024).tolist())
    shards = [set(torch.cat(epoch_batches(64, 8, 0, 0, shuffle=True, rank=r, world=2)[:4]).tolist()) for r in (0, 1)]
    assert scenes <= shards[0] | shards[1] and scenes & shards[0] and scenes & shards[1]


@pytest.mark.slow
def test_two_process_softmax_twin_stays_in_sync(tmp_path, fmnist_ready):
    r0, r1 = _torchrun(tmp_path, "softmax")
    assert "head.fc.weight" in r0
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"{key} differs between ranks"


def test_all_gather_is_identity_without_process_group():
    from dnc.training.distributed import all_gather_cat

    a, b = torch.randn(3, 2), torch.tensor([True, False, True])
    assert all(x is y for x, y in zip(all_gather_cat(a, b), (a, b), strict=True))
