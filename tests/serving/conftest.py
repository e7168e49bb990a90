"""The served repository's server, shared by the serving tests: each module defines its own `repo`
fixture (what it serves), and `server` starts the real tritonserver on it once for the module."""

from __future__ import annotations

import pytest

from dnc.core import formats as F
from dnc.export.recompute import compute_set
from dnc.serving.server import TritonServer


@pytest.fixture(scope="module")
def server(repo):
    s = TritonServer(repo, 0, 0, 0)
    s.start(timeout=180)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def other_set(tmp_path_factory, exported, fm_folder):
    """A 4-class list recomputed from real images with the classifier's embedding (no retraining): what a
    swap of the `exported` classifier's list serves."""
    root = tmp_path_factory.mktemp("four")
    for name in ("Bag", "Sandal", "Trouser", "Dress"):
        (root / name).symlink_to(fm_folder / "train" / name)
    compute_set(exported[0] / F.EMBED_FILE, root, root.with_name("four-set"), k=2, threads=1)
    return root.with_name("four-set")
