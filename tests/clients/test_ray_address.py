"""`dnc segment VIDEOS --ray ADDRESS` where no Ray cluster answers (issue 23, item 11): the real command gives
up within 40 s with a message naming the address (ray.init alone retries for many minutes); a real Ray
head passes the same probe."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnc.clients.ray_job import check_cluster
from dnc.clients.video_job import JobError
from dnc.training.scenes import write_clips

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_segment_on_a_ray_address_where_nothing_listens_fails_within_40s(seg_export, tmp_path, fmnist_ready):
    write_clips(tmp_path / "clips", 1, "fine", height=48, width=64, frames=4, fps=10, seed=3)
    address = f"127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "dnc.clients.cli", "segment", str(tmp_path / "clips" / "videos"),
                        "--in-process", str(seg_export[2]), "--out", str(tmp_path / "out"), "--ray", address],
                       capture_output=True, text=True, cwd=ROOT, timeout=40)
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    assert f"no Ray cluster answers at {address}: Connection refused" in r.stderr, r.stderr
    assert "ray start --head" in r.stderr and "GCS" not in r.stderr.split("error:")[0]  # no Ray warnings before it
    assert took < 40
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_probe_names_bad_addresses_and_passes_a_real_head():
    for address, said in (("nowhere", "not a Ray cluster address"), ("127.0.0.1:0", "not a Ray cluster address"),
                          (f"ray://127.0.0.1:{_free_port()}", "no Ray cluster answers at ray://")):
        with pytest.raises(JobError, match=said):
            check_cluster(address, timeout=5)
    check_cluster("local")
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
        check_cluster(f"127.0.0.1:{port}", timeout=10)  # answers (its GCS refuses the missing token: still Ray)
        check_cluster(ray.get_runtime_context().gcs_address, timeout=10)
    finally:
        ray.shutdown()


def test_something_else_listening_is_not_a_cluster():
    """A port that accepts connections and never answers (as a proxy or another service might) is refused
    within the probe's timeout, not waited on."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        t0 = time.monotonic()
        with pytest.raises(JobError, match="does not answer as a Ray head's GCS"):
            check_cluster(f"127.0.0.1:{srv.getsockname()[1]}", timeout=3)
        assert time.monotonic() - t0 < 10
