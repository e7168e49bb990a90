"""Shared test fixtures: small real data (Fashion-MNIST from the Debian package), small DNC and softmax
models trained on it, their export, and references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dnc.training.data import FASHION_MNIST_DIR
from dnc.training.loop import TrainConfig, train
from dnc.training.model import ModelConfig


@pytest.fixture(scope="session")
def fmnist_ready():
    if not FASHION_MNIST_DIR.exists():
        pytest.fail(f"Fashion-MNIST missing in {FASHION_MNIST_DIR}: run `make test` (it installs "
                    "dataset-fashion-mnist) or apt-get install -y dataset-fashion-mnist")
    return FASHION_MNIST_DIR


OPENCV_DOC = Path("/usr/share/doc/opencv-doc")


@pytest.fixture(scope="session")
def opencv_doc():
    """Debian's opencv-doc: real videos nobody here made (Cinepak, MPEG-4, H.264, variable rate)."""
    if not (OPENCV_DOC / "examples" / "data" / "tree.avi").is_file():
        pytest.fail(f"opencv-doc missing in {OPENCV_DOC}: run `make test` (it installs opencv-doc) or "
                    "apt-get install -y opencv-doc")
    return OPENCV_DOC


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def _train(out, head: str, k):
    mcfg = ModelConfig(num_classes=10, width=8, embed_dim=32, head=head, k=k)
    tcfg = TrainConfig(out=str(out), epochs=2, batch_size=64, lr=0.05, warmup_epochs=0.2, workers=0,
                       train_limit=3072, test_limit=512)
    train(tcfg, mcfg)
    return out / "checkpoint.safetensors"


@pytest.fixture(scope="session")
def dnc_checkpoint(tmp_path_factory, fmnist_ready):
    """A DNC checkpoint with K differing per class (padded sub-centroid slots)."""
    return _train(tmp_path_factory.mktemp("dnc"), "dnc", [4, 3, 4, 4, 2, 4, 4, 4, 1, 4])


@pytest.fixture(scope="session")
def softmax_checkpoint(tmp_path_factory, fmnist_ready):
    return _train(tmp_path_factory.mktemp("softmax"), "softmax", 4)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, dnc_checkpoint):
    """(export folder, manifest) of the DNC checkpoint."""
    from dnc.export.exporter import export_checkpoint

    out = tmp_path_factory.mktemp("exports") / "fm"
    return out, export_checkpoint(dnc_checkpoint, out, n_real=128, n_random=32, threads=2)


@pytest.fixture(scope="session")
def fm_folder(tmp_path_factory, fmnist_ready):
    """Real Fashion-MNIST PNGs: train/ and test/, 10 fine classes, 20 and 10 images per class."""
    from dnc.training.folders import write_dataset_folders

    root = tmp_path_factory.mktemp("fm-folder")
    write_dataset_folders("fashion-mnist", root, "fine", per_class=20, test_per_class=10)
    return root


@pytest.fixture(scope="session")
def seg_export(tmp_path_factory, fmnist_ready):
    """(scenes, checkpoint, export folder, manifest): a small segmenter trained a few steps, its sub-centroids
    then drawn at random so that its labels vary over the classes (parity is tested where it can fail)."""
    import torch.nn.functional as tF

    from dnc.export.exporter import export_checkpoint
    from dnc.training import checkpoint as ckpt_io
    from dnc.training.scenes import write_scenes

    root = tmp_path_factory.mktemp("seg-export")
    scenes = root / "scenes"
    write_scenes(scenes, "fine", size=32, train=48, test=12, seed=1)
    t = TrainConfig(data=str(scenes), out=str(root / "run"), epochs=1, batch_size=16, lr=0.05, workers=0)
    m = ModelConfig(num_classes=11, task="segmentation", in_chans=3, image_size=32, width=4, embed_dim=8,
                    decoder_dim=8, k=[3] * 10 + [2], mean=[0.5] * 3, std=[0.5] * 3)
    train(t, m)
    ck = ckpt_io.load(root / "run" / "checkpoint.safetensors")
    gen = torch.Generator().manual_seed(0)
    mask = ck.model_state["head.k_mask"]
    ck.model_state["head.centroids"] = tF.normalize(torch.randn(11, 3, 8, generator=gen), dim=-1) * mask[..., None]
    path = ckpt_io.save(ck, root / "random-centroids.safetensors")
    out = root / "export"
    return scenes, path, out, export_checkpoint(path, out, n_real=12, n_random=6, threads=2)
