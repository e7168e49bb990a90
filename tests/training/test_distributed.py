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

from training.head import DNCHead


@pytest.mark.slow
def test_two_process_centroids_agree(tmp_path, fmnist_ready):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]), OMP_NUM_THREADS="1")
    with socket.socket() as s:  # a free port for the rendezvous (port 0 hangs the static rendezvous)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(worker), str(tmp_path)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    init = DNCHead(10, 16, 4, generator=torch.Generator().manual_seed(1)).centroids
    assert not torch.allclose(r0["centroids"], init), "centroids never moved"
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"{key} differs between ranks"
    # Both ranks' samples reached the memory: ids from both shards are present.
    ids = r0["memory_ids"][r0["memory_ids"] >= 0]
    assert ids.numel() > 0
    assert (tmp_path / "checkpoint.safetensors").exists()


def test_all_gather_is_identity_without_process_group():
    from training.distributed import all_gather_cat

    a, b = torch.randn(3, 2), torch.tensor([True, False, True])
    assert all(x is y for x, y in zip(all_gather_cat(a, b), (a, b), strict=True))
