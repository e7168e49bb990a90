"""A fleet on loopback (issue 26): `dnc serve --replicas 3 --detach` starts three real tritonservers on one
repository behind a real HAProxy. They answer like one server over HTTP and gRPC; a fleet swap under load
fails no request and leaves every replica on the new list; a replica that cannot load the new head puts
the whole fleet back; `kill -9` of a replica under load fails no request and it rejoins; a request pinned
to another list is refused, naming both; `dnc stop` leaves nothing running."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dnc.clients.client import ClientError, DNCClient, collect_images
from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.serving import repository
from dnc.serving.balancer import server_states
from dnc.serving.processes import group_processes, start_ticks
from dnc.serving.state import read_state, servers_of
from dnc.serving.swap import Probe, SwapError, swap

pytestmark = [pytest.mark.triton, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _dnc(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dnc.clients.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, exported):
    out = tmp_path_factory.mktemp("fleet") / "repo"
    repository.build(exported[0], out, top_k=3, threads=1)
    return out


@pytest.fixture(scope="module")
def fleet(repo):
    r = _dnc("serve", "--repo", repo, "--replicas", 3, "--http-port", 0, "--grpc-port", 0, "--detach")
    assert r.returncode == 0, r.stdout + r.stderr
    state = read_state(repo)
    try:
        assert "with 3 replicas behind a load balancer" in r.stdout
        yield state
    finally:
        stop = _dnc("stop", "--repo", repo)
        assert stop.returncode == 0, stop.stderr
        for rec in servers_of(state):  # nothing the fleet started is left: replicas (and stubs), balancer
            assert group_processes(rec["pid"]) == []
        assert start_ticks(state["balancer"]["pid"]) is None and read_state(repo) is None


def _images(fm_folder, n=8):
    return collect_images([fm_folder / "test"])[::7][:n]


def test_three_replicas_answer_like_one_server(fleet, repo, fm_folder):
    states = server_states(fleet["balancer"]["stats_socket"])
    assert all(s == "UP" for backend in states.values() for s in backend.values()) and len(states["replicas_grpc"]) == 3
    files = _images(fm_folder)
    direct = servers_of(fleet)[0]
    with DNCClient(direct["http"]) as c:
        x = c.read(files)
        want = c.infer(x)
    for url, protocol in ((fleet["http"], "http"), (fleet["grpc"], "grpc")):
        with DNCClient(url, protocol) as c:
            for _ in range(6):  # several requests: the balancer spreads them over the replicas
                got = c.infer(x)
                assert np.abs(got[F.SCORES] - want[F.SCORES]).max() < 1e-5
                assert (got[F.TOPK_LABEL] == want[F.TOPK_LABEL]).all() and (got[F.SET_ID] == want[F.SET_ID]).all()
    served = []
    for rec in servers_of(fleet):  # every replica answered some of them
        with DNCClient(rec["http"]) as c:
            stats = c._client.get_inference_statistics(F.HEAD_MODEL)
        served.append(int(stats["model_stats"][0]["inference_count"]))
    assert all(n > 0 for n in served), served
    status = _dnc("status", "--repo", repo, "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert [r["set_id"] for r in report["health"]["replicas"]] == [repository.model_info(repo)["set"]["set_id"]] * 3


def _load(urls, x, names, stop, failures, seen, lock):
    def run(url, protocol):
        with DNCClient(url, protocol) as c:
            while not stop.is_set():
                try:
                    preds = c.classify(x, top_k=2)
                except Exception as e:  # any failure counts
                    with lock:
                        failures.append(repr(e))
                    continue
                ok = len({p.set_id for p in preds}) == 1 and all(
                    p.set_id in names and all(r.label == names[p.set_id][r.class_id] for r in p.top) for p in preds)
                with lock:
                    seen.append((preds[0].set_id, ok))

    return [threading.Thread(target=run, args=up) for up in urls]


def test_fleet_swap_under_http_and_grpc_load_fails_nothing(fleet, repo, exported, other_set, fm_folder):
    first, second = centroid_set.load(exported[0]), centroid_set.load(other_set)
    names = {first.set_id: first.class_names, second.set_id: second.class_names}
    with DNCClient(fleet["http"]) as c:
        x = c.read(_images(fm_folder))
    stop, failures, seen, lock = threading.Event(), [], [], threading.Lock()
    threads = _load([(fleet["http"], "http"), (fleet["grpc"], "grpc")] * 2, x, names, stop, failures, seen, lock)
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        r = _dnc("swap", "--repo", repo, "--centroids", other_set, "--json")  # the real command, on the fleet record
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        back = swap(repo, exported[0], [s["grpc"] for s in servers_of(fleet)],
                    log_file=[s["log"] for s in servers_of(fleet)])
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == [] and len(seen) > 20
    assert all(ok for _, ok in seen) and {s for s, _ in seen} == set(names)  # one list per response
    assert res["to"] == second.set_id and res["replicas"] == 3 and len(res["replica_seconds"]) == 3
    assert 0 <= res["mixed_window_seconds"] <= max(res["replica_seconds"])
    assert back["to"] == first.set_id
    prep = repository.model_info(repo)["preprocessing"]
    for rec in servers_of(fleet):  # every replica, asked directly
        assert Probe(rec["grpc"], F.DEFAULT_MODEL, prep).set_id() == first.set_id


def test_a_replica_that_cannot_load_the_new_head_rolls_the_fleet_back(fleet, repo, other_set):
    """Replica 2 can no longer start a python stub (its backend's stub link is gone): the new head loads on
    the other two, fails there, and the swap puts the old head back for all three."""
    before = repository.model_info(repo)["set"]["set_id"]
    head = (repo / F.HEAD_MODEL / "1" / "model.onnx").read_bytes()
    stub = Path(servers_of(fleet)[2]["log"]).parent / "backends" / "python" / "triton_python_backend_stub"
    target = os.readlink(stub)
    stub.unlink()
    try:
        with pytest.raises(SwapError, match=r"1 of 3 replicas did not take class list .*failed to load 'dnc_head'.*"
                                            rf"old head is back .* {before} is serving on every replica"):
            swap(repo, other_set, [s["grpc"] for s in servers_of(fleet)], timeout=60,
                 log_file=[s["log"] for s in servers_of(fleet)])
    finally:
        stub.symlink_to(target)
    assert (repo / F.HEAD_MODEL / "1" / "model.onnx").read_bytes() == head
    assert repository.model_info(repo)["set"]["set_id"] == before
    prep = repository.model_info(repo)["preprocessing"]
    assert [Probe(s["grpc"], F.DEFAULT_MODEL, prep).set_id() for s in servers_of(fleet)] == [before] * 3


def test_a_pinned_request_to_a_replica_on_another_list_is_refused(fleet, repo, fm_folder):
    served = repository.model_info(repo)["set"]["set_id"]
    files = _images(fm_folder, 2)
    for url, protocol in ((servers_of(fleet)[1]["http"], "http"), (fleet["grpc"], "grpc")):
        with DNCClient(url, protocol, expect_set_id=served) as c:
            assert {p.set_id for p in c.classify(c.read(files))} == {served}
        with DNCClient(url, protocol, expect_set_id="0123456789abcdef") as c:
            with pytest.raises(ClientError, match=f"expect_set_id: this server answers with class list {served}, "
                                                  "not '0123456789abcdef'"):
                c.classify(c.read(files))


def test_kill_9_of_a_replica_under_load_fails_no_request_and_it_rejoins(fleet, repo, fm_folder):
    info = repository.model_info(repo)
    names = {info["set"]["set_id"]: info["set"]["class_names"]}
    with DNCClient(fleet["http"]) as c:
        x = c.read(_images(fm_folder))
    stop, failures, seen, lock = threading.Event(), [], [], threading.Lock()
    threads = _load([(fleet["http"], "http"), (fleet["grpc"], "grpc")] * 2, x, names, stop, failures, seen, lock)
    victim = servers_of(read_state(repo))[1]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        os.kill(victim["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # restarted by its supervisor, and back in the balancer
            now = servers_of(read_state(repo))[1]
            states = server_states(fleet["balancer"]["stats_socket"])
            if now["pid"] != victim["pid"] and states["replicas_http"]["replica-1"] == "UP" and \
                    states["replicas_grpc"]["replica-1"] == "UP":
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"replica-1 did not rejoin: {server_states(fleet['balancer']['stats_socket'])}")
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == [] and len(seen) > 20 and all(ok for _, ok in seen)
    assert servers_of(read_state(repo))[1]["restarts"] == 1


def test_the_fleet_benchmark_runs(tmp_path, exported, other_set, fm_folder):
    """benchmarks/serving/fleet.py with tiny settings (its full run: docs/BENCHMARKS.md, issue 26)."""
    out = tmp_path / "fleet.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serving" / "fleet.py"), "--export", exported[0],
                          "--centroids", other_set, "--images", fm_folder / "test", "--concurrency", "1", "--seconds",
                          "1", "--swaps", "2", "--steady-seconds", "1", "--kill-every", "5", "--kill-minutes", "0.05",
                          "--out", out], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    res = json.loads(out.read_text())
    point = res["overhead"]["http"]["points"][0]
    assert min(point[k]["images_per_s"] for k in ("direct", "balancer_one", "fleet")) > 0
    for phase in ("swaps", "swaps_after_restarts"):
        assert res[phase]["failed_requests"] == 0 and len(res[phase]["mixed_window_ms"]) == 2, res[phase]
    assert res["kills"]["kills"] == 1 and res["kills"]["failed_requests"] == 0 and res["kills"]["restarts"] == 1


def test_hostile_requests_through_the_balancer_are_refused_and_the_fleet_stays_up(fleet, repo, fm_folder):
    import socket

    host, port = fleet["http"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:  # not HTTP at all
        s.sendall(b"\x16\x03\x01garbage that is no request\r\n\r\n")
        assert s.recv(200).startswith(b"HTTP/1.1 400"), "the balancer answers garbage with 400"
    host, port = fleet["grpc"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:  # not HTTP/2 on the gRPC port
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        assert not s.recv(200).startswith(b"HTTP/1.1 200")
    huge = "x" * 100_000
    with DNCClient(fleet["http"], expect_set_id=huge) as c:  # a 100 KB set id: refused, named short
        with pytest.raises(ClientError, match="expect_set_id: this server answers with class list") as e:
            c.classify(c.read(_images(fm_folder, 1)))
    assert len(str(e.value)) < 1000
    states = server_states(fleet["balancer"]["stats_socket"])
    assert all(s == "UP" for backend in states.values() for s in backend.values()), states


def test_stop_of_a_doctored_fleet_record_signals_no_other_process(tmp_path):
    """The fleet record names processes by pid and start time: one edited to name other processes (a
    `sleep` as the balancer and as a replica) gets nothing signalled."""
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        repo = tmp_path / "repo"
        repo.mkdir()
        fake = {"pid": sleeper.pid, "server_started": start_ticks(sleeper.pid), "shm_prefix": "dnc_1_2_",
                "grpc": "127.0.0.1:1", "http": "127.0.0.1:2", "log": str(tmp_path / "log")}
        (repo / ".dnc-server.json").write_text(json.dumps({
            "kind": "fleet", "supervisor": sleeper.pid, "supervisor_started": start_ticks(sleeper.pid),
            "pid": sleeper.pid, "http": "127.0.0.1:2", "grpc": "127.0.0.1:1",
            "balancer": {"pid": sleeper.pid, "started": start_ticks(sleeper.pid)}, "replicas": [fake]}))
        r = _dnc("stop", "--repo", repo, timeout=60)
        assert r.returncode == 0, r.stderr
        assert sleeper.poll() is None, "a process the record named was signalled"
        assert read_state(repo) is None
    finally:
        sleeper.kill()


def test_a_fleet_refuses_a_taken_port_before_loading_anything(tmp_path, exported):
    """Something already listens on the fleet's HTTP port (with SO_REUSEPORT, as a gRPC server's socket does):
    `dnc serve --replicas` says so at once, starts no replica, and leaves no record."""
    import socket

    repo = tmp_path / "repo"  # (not the module's: its fleet runs)
    repository.build(exported[0], repo, threads=1)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        t0 = time.monotonic()
        r = _dnc("serve", "--repo", repo, "--replicas", 2, "--http-port", port, "--grpc-port", 0, timeout=60)
    assert r.returncode != 0 and f"port 127.0.0.1:{port} is taken" in r.stderr, r.stderr[-2000:]
    assert time.monotonic() - t0 < 30 and read_state(repo) is None
