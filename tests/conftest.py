"""Shared test fixtures: small real data (Fashion-MNIST from the Debian package), small DNC and softmax
models trained on it, their export, and references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.data import FASHION_MNIST_DIR
from training.loop import TrainConfig, train
from training.model import ModelConfig


@pytest.fixture(scope="session")
def fmnist_ready():
    if not FASHION_MNIST_DIR.exists():
        pytest.fail(f"Fashion-MNIST missing in {FASHION_MNIST_DIR}: run `make test` (it installs "
                    "dataset-fashion-mnist) or apt-get install -y dataset-fashion-mnist")
    return FASHION_MNIST_DIR


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
    from export.exporter import export_checkpoint

    out = tmp_path_factory.mktemp("exports") / "fm"
    return out, export_checkpoint(dnc_checkpoint, out, n_real=128, n_random=32, threads=2)


@pytest.fixture(scope="session")
def fm_folder(tmp_path_factory, fmnist_ready):
    """Real Fashion-MNIST PNGs: train/ and test/, 10 fine classes, 20 and 10 images per class."""
    from training.folders import write_dataset_folders

    root = tmp_path_factory.mktemp("fm-folder")
    write_dataset_folders("fashion-mnist", root, "fine", per_class=20, test_per_class=10)
    return root
