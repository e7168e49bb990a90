"""Shared test fixtures: small real data (Fashion-MNIST from the Debian package) and references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.data import FASHION_MNIST_DIR


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
