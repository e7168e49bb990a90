"""The served repository's server, shared by the serving tests: each module defines its own `repo`
fixture (what it serves), and `server` starts the real tritonserver on it once for the module."""

from __future__ import annotations

import pytest

from dnc.serving.server import TritonServer


@pytest.fixture(scope="module")
def server(repo):
    s = TritonServer(repo, 0, 0, 0)
    s.start(timeout=180)
    yield s
    s.stop()
