"""The supervisor of `dnc serve` against the real tritonserver: a stream of requests that abort Triton 2.51
cannot end the service (each crash is restarted, with back-off), and a server that cannot start any more is
given up on with a message instead of being restarted forever (issue 23, item 3)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.serving.crash_recovery import post as _post  # one HTTP helper for both
from dnc.clients.cli import main
from dnc.core import formats as F
from dnc.serving import repository, supervisor
from dnc.serving.state import read_state, stop_detached, supervisor_alive

pytestmark = [pytest.mark.triton, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CRASH = json.dumps({"inputs": [{"name": F.IMAGES, "shape": [2**40, 1, 28, 28], "datatype": "FP32",
                                "data": [0.0]}]}).encode()  # aborts Triton 2.51 (std::bad_alloc)
GOOD = json.dumps({"inputs": [{"name": F.IMAGES, "shape": [1, 1, 28, 28], "datatype": "FP32",
                               "data": [0.0] * 784}]}).encode()


def _answered(address: str, within: float) -> float:
    """Seconds until a good request is answered 200 (sent again until then); fails after `within` seconds."""
    t0 = time.monotonic()
    while _post(address, GOOD, timeout=10) != 200:
        assert time.monotonic() - t0 < within, f"no answer to a good request within {within:.0f} s"
        time.sleep(0.1)
    return time.monotonic() - t0


def _restarted(repo: Path, restarts: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while (read_state(repo) or {}).get("restarts") != restarts:
        assert time.monotonic() < deadline, f"restart {restarts} not recorded: {read_state(repo)}"
        time.sleep(0.05)


def _serve(tmp_path, exported, *extra: str) -> Path:
    repo = tmp_path / "repo"
    repository.build(exported[0], repo, top_k=3, threads=1)
    assert main(["serve", "--repo", str(repo), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                 "--detach", *extra]) == 0
    return repo


def _supervisor_log(repo: Path) -> str:
    return (repo.resolve().with_name(f".{repo.name}.server") / "supervisor.log").read_text()


def test_a_stream_of_crash_requests_is_survived(tmp_path, exported):
    """8 crash requests in a row, each followed by a good request that is answered: the supervisor keeps
    restarting (more than any former limit of 5 in 60 s), on the same address, backing off in between."""
    repo = _serve(tmp_path, exported)
    try:
        first = read_state(repo)
        _answered(first["http"], 30)
        times = []
        for i in range(1, 9):
            t0 = time.monotonic()
            assert _post(first["http"], CRASH) is None, "the crash request was answered: case moot?"
            _answered(first["http"], 30)
            times.append(time.monotonic() - t0)
            _restarted(repo, first["restarts"] + i)  # each crash, one restart (recorded just after ready)
        last = read_state(repo)
        assert last["http"] == first["http"]
        assert supervisor_alive(last)
        log = _supervisor_log(repo)
        assert log.count("killed by SIGABRT") >= 8, log[-3000:]
        assert f"restarting it in {supervisor.BACKOFF[1]:.1f} s" in log, log[-3000:]  # backed off
        print(f"8 crashes survived; ready after {', '.join(f'{t:.1f}' for t in times)} s "
              f"(longest {max(times):.1f} s)")
    finally:
        stop_detached(repo)


def test_a_server_that_cannot_start_is_given_up_on(tmp_path, exported):
    """The repository broken under a running server, then the server killed: every restart fails, and after
    MAX_FAILED_STARTS in a row the supervisor exits, saying why, and leaves nothing running or recorded."""
    repo = _serve(tmp_path, exported, "--timeout", "20")
    state = read_state(repo)
    try:
        for config in repo.glob("*/config.pbtxt"):
            config.write_text("this is { not a model configuration\n")
        subprocess.run(["kill", "-9", str(state["pid"])], check=True)
        deadline = time.monotonic() + 60
        while supervisor_alive(state):
            assert time.monotonic() < deadline, "the supervisor still restarts after 60 s"
            time.sleep(0.2)
        log = _supervisor_log(repo)
        assert "killed by SIGKILL" in log, log[-3000:]
        assert f"{supervisor.MAX_FAILED_STARTS} starts in a row failed to become ready, giving up" in log, log[-3000:]
        assert "failed to read text proto" in log.split("giving up")[-1], log[-3000:]  # names the culprit
        assert log.count("restarting tritonserver failed") == supervisor.MAX_FAILED_STARTS - 1, log[-3000:]
        assert read_state(repo) is None
        assert _post(state["http"], GOOD, timeout=5) is None  # nothing listens
    finally:
        stop_detached(repo)


def test_crash_recovery_benchmark_runs(tmp_path, exported):
    """benchmarks/serving/crash_recovery.py with tiny settings (its 100-crash run: docs/BENCHMARKS.md)."""
    out = tmp_path / "bench"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serving" / "crash_recovery.py"), "--export",
                          str(exported[0]), "--crashes", "2", "--out", str(out)], capture_output=True, text=True,
                         timeout=240, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads((out / "results.json").read_text())
    assert result["all_answered"] and result["good_answered"] == 2 and result["restarts"] == 2, result
    assert result["ready_longest_s"] >= result["ready_median_s"] > 0
