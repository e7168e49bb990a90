"""Hostile requests against the real tritonserver, supervised as `dnc serve --detach` runs it.

Each case sends what an attacker or a careless client would (bad values, lying shapes and headers,
malformed, oversized and compressed bodies, half-open connections, the request that aborts Triton 2.51)
and then checks the same two things: the server answers /v2/health/ready, and a good request gets the
answer a float64 reference computes from the served centroid set, under the same class list."""

from __future__ import annotations

import gzip
import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from dnc.clients.cli import main
from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.export import runtime
from dnc.serving import repository
from dnc.serving.processes import triton_group
from dnc.serving.state import read_state, stop_detached

pytestmark = [pytest.mark.triton, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tmp_path_factory, exported):
    """A repository served by `dnc serve --detach` (supervisor + tritonserver) on free ports."""
    repo = tmp_path_factory.mktemp("hostile") / "repo"
    repository.build(exported[0], repo, top_k=3, threads=1)
    assert main(["serve", "--repo", str(repo), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                 "--detach"]) == 0
    yield repo
    stop_detached(repo)


@pytest.fixture(scope="module")
def reference(served, exported, fm_folder):
    """A few real test images and their float64 scores from the served set (cosine, max over K)."""
    from dnc.clients.client import DNCClient, collect_images

    state = read_state(served)
    with DNCClient(state["http"]) as c:
        x = c.read(collect_images([fm_folder / "test"])[::10][:4])
    emb = runtime.session(exported[0] / F.EMBED_FILE, 1).run([F.EMBEDDING], {F.IMAGES: x})[0].astype(np.float64)
    cs = centroid_set.load(served / F.HEAD_MODEL / repository.SET_FOLDER)
    c = cs.centroids.astype(np.float64)
    c /= np.maximum(np.linalg.norm(c, axis=-1, keepdims=True), 1e-12)  # padded slots are zeros
    e = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    cos = np.einsum("nd,ckd->nck", e, c)
    cos[:, ~cs.k_mask] = -np.inf
    return x, cos.max(axis=2), cs.set_id


def _state(repo) -> dict:
    return read_state(repo)


def assert_serving(repo, reference, within: float = 15.0) -> float:
    """Ready within `within` seconds (a crashed server restarted by its supervisor), and a good request gets
    the float64 answer of the same class list. Returns the seconds it took to be ready."""
    x, want, set_id = reference
    t0 = time.monotonic()
    while True:
        state = _state(repo)
        try:
            with urllib.request.urlopen(f"http://{state['http']}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    break
        except (OSError, urllib.error.URLError, TypeError):
            pass
        assert time.monotonic() - t0 < within, f"not ready {within:.0f} s after the request"
        time.sleep(0.1)
    ready = time.monotonic() - t0
    client = http.InferenceServerClient(state["http"])
    inp = http.InferInput(F.IMAGES, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    out = client.infer(F.ENTRY_MODEL, [inp])
    assert np.abs(out.as_numpy(F.SCORES) - want).max() < 1e-4
    assert out.as_numpy(F.SET_ID).reshape(-1)[0].decode() == set_id
    return ready


def _wait_restart(repo, before: dict, within: float) -> None:
    """Wait until the supervisor has recorded a new server (after a crash)."""
    deadline = time.monotonic() + within
    while _state(repo)["pid"] == before["pid"]:
        assert time.monotonic() < deadline, f"no restart within {within:.0f} s"
        time.sleep(0.1)


def _post(state, path, body: bytes, headers: dict | None = None, timeout=60) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://{state['http']}{path}", data=body,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _json_infer(name, shape, data, datatype="FP32") -> bytes:
    return json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}).encode()


def _no_nan(body: bytes) -> None:
    json.loads(body, parse_constant=lambda c: pytest.fail(f"response carries bare {c}"))


IMG = [1, 1, 28, 28]
ZEROS = [0.0] * 784


@pytest.mark.parametrize(("what", "model", "name", "shape", "data", "says"), [
    ("finite but huge pixel", F.ENTRY_MODEL, F.IMAGES, IMG, [3.4e38] + ZEROS[1:], "outside the range"),
    ("pixel beyond the preprocessing's range", F.ENTRY_MODEL, F.IMAGES, IMG, [1.5] + ZEROS[1:], "outside the range"),
    ("NaN pixel", F.ENTRY_MODEL, F.IMAGES, IMG, [float("nan")] + ZEROS[1:], "NaN or inf"),
    ("inf pixel", F.ENTRY_MODEL, F.IMAGES, IMG, [float("-inf")] + ZEROS[1:], "NaN or inf"),
    ("NaN embedding to the head", F.HEAD_MODEL, F.EMBEDDING, [1, 32], [float("nan")] + [0.1] * 31, "NaN or inf"),
    ("huge embedding to the head", F.HEAD_MODEL, F.EMBEDDING, [1, 32], [3e38] + [0.1] * 31, "beyond"),
    ("zero embedding to the head", F.HEAD_MODEL, F.EMBEDDING, [1, 32], [0.0] * 32, "all zeros"),
    ("an embedding of another D to the head", F.HEAD_MODEL, F.EMBEDDING, [1, 16], [0.1] * 16,
     "embedding: 16 per item, but this model takes 32"),
    ("another image size to the embedding", F.EMBED_MODEL, F.IMAGES, [1, 1, 20, 20], [0.0] * 400,
     "Expected [-1,1,28,28]"),  # the config's fixed dims: Triton's own 400
    ("strings for pixels", F.ENTRY_MODEL, F.IMAGES, IMG, ["a"] * 784, ""),
    ("too few values", F.ENTRY_MODEL, F.IMAGES, IMG, ZEROS[:10], ""),
    ("wrong rank", F.ENTRY_MODEL, F.IMAGES, [784], ZEROS, ""),
    ("negative dimension", F.ENTRY_MODEL, F.IMAGES, [-1, 1, 28, 28], ZEROS, ""),
    ("batch above 2^32 (truncated by Triton 2.51)", F.ENTRY_MODEL, F.IMAGES, [2**32 + 1, 1, 28, 28], ZEROS, None),
])
def test_bad_values_get_400_naming_the_problem(served, reference, what, model, name, shape, data, says):
    before = _state(served)
    try:
        status, body = _post(before, f"/v2/models/{model}/infer", _json_infer(name, shape, data))
    except (ConnectionError, urllib.error.URLError):
        assert says is None, f"{what}: the server dropped the connection"
        _wait_restart(served, before, within=15.0)  # Triton 2.51 aborted; its supervisor restarts it
        assert_serving(served, reference, within=15.0)
        return
    _no_nan(body)
    if says is None:  # Triton 2.51 reads dimensions modulo 2^32; it may also abort (handled above)
        assert status in (200, 400), (what, status, body)
    elif not says:  # refused by Triton's own JSON frontend, which answers some parse errors with 500
        assert status in (400, 500) and json.loads(body)["error"], (what, status, body)
    else:
        assert status == 400, (what, status, body)
        assert says in json.loads(body)["error"], (what, body)
    assert_serving(served, reference)


def test_the_request_that_aborts_triton_is_survived(served, reference):
    """Triton 2.51 aborts (std::bad_alloc) on a 4 KB JSON request declaring 2^40 images: the supervisor
    restarts it, on the same repository and ports, serving the same list within 15 s."""
    before = _state(served)
    body = _json_infer(F.IMAGES, [2**40, 1, 28, 28], ZEROS)
    try:
        _post(before, f"/v2/models/{F.ENTRY_MODEL}/infer", body, timeout=30)
    except (ConnectionError, urllib.error.URLError):
        pass  # the server died with the connection open
    t0 = time.monotonic()
    _wait_restart(served, before, within=15.0)  # the connection drops a moment before the abort completes
    ready = assert_serving(served, reference, within=15.0 - (time.monotonic() - t0)) + time.monotonic() - t0
    after = _state(served)
    assert after["pid"] != before["pid"] and after["restarts"] == before["restarts"] + 1, "no crash: case moot?"
    assert after["http"] == before["http"] and not triton_group(before["pid"])  # old stubs gone
    log = (served.resolve().with_name(f".{served.name}.server") / "supervisor.log").read_text()
    assert "killed by SIGABRT" in log, log[-2000:]
    print(f"ready {ready:.1f} s after the crash")


def test_huge_shapes_in_binary_and_grpc_form_do_not_crash(served, reference):
    state = _state(served)
    header = json.dumps({"inputs": [{"name": F.IMAGES, "shape": [2**40, 1, 28, 28], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 3136}}]}).encode()
    status, body = _post(state, f"/v2/models/{F.ENTRY_MODEL}/infer", header + bytes(3136),
                         {"Inference-Header-Content-Length": str(len(header)),
                          "Content-Type": "application/octet-stream"})
    assert status in (200, 400), body  # 200: Triton 2.51 reads the dimension modulo 2^32 (README, Security)
    _no_nan(body)
    client = grpc.InferenceServerClient(state["grpc"])
    inp = grpc.InferInput(F.IMAGES, [2**40, 1, 28, 28], "FP32")
    inp._raw_content = bytes(3136)
    try:  # Triton 2.51 answers this one too, reading 2^40 modulo 2^32 (README, Security); it must not fall over
        client.infer(F.ENTRY_MODEL, [inp])
    except InferenceServerException:
        pass
    assert_serving(served, reference)


@pytest.mark.parametrize("case", ["header longer than body", "binary size beyond body", "negative header length",
                                  "binary size short"])
def test_lying_binary_headers(served, reference, case):
    state = _state(served)
    size = {"binary size beyond body": 10**9, "binary size short": 100}.get(case, 3136)
    header = json.dumps({"inputs": [{"name": F.IMAGES, "shape": IMG, "datatype": "FP32",
                                     "parameters": {"binary_data_size": size}}]}).encode()
    length = {"header longer than body": len(header) + 10**6, "negative header length": -5}.get(case, len(header))
    status, body = _post(state, f"/v2/models/{F.ENTRY_MODEL}/infer", header + bytes(3136),
                         {"Inference-Header-Content-Length": str(length)})
    assert status == 400, (case, status, body)
    assert_serving(served, reference)


@pytest.mark.parametrize("case", ["not json", "truncated json", "deeply nested", "inputs not a list", "empty"])
def test_malformed_bodies(served, reference, case):
    body = {"not json": b"\x00\xff garbage", "truncated json": _json_infer(F.IMAGES, IMG, ZEROS)[:-40],
            "deeply nested": b"[" * 100_000 + b"]" * 100_000, "inputs not a list": b'{"inputs": 5}',
            "empty": b""}[case]
    status, resp = _post(_state(served), f"/v2/models/{F.ENTRY_MODEL}/infer", body)
    assert status in (400, 500) and json.loads(resp)["error"], (case, status, resp)  # 2.51's frontend: some 500s
    assert_serving(served, reference)


def test_oversized_body(served, reference):
    """64 MB of zeros declared as one image's JSON: refused, and the server keeps serving."""
    state = _state(served)
    try:
        status, _ = _post(state, f"/v2/models/{F.ENTRY_MODEL}/infer", b"[" + b"0," * (32 * 2**20) + b"0]")
        assert status >= 400
    except (ConnectionError, urllib.error.URLError):
        pass  # refused by closing the connection is fine too
    assert_serving(served, reference)


@pytest.mark.parametrize("case", ["corrupt gzip", "gzip of 100 MB of spaces", "unknown encoding"])
def test_compressed_bodies(served, reference, case):
    good = _json_infer(F.IMAGES, IMG, ZEROS)
    body = {"corrupt gzip": b"\x1f\x8b\x08\x00garbage", "unknown encoding": good,
            "gzip of 100 MB of spaces": gzip.compress(good[:-1] + b" " * (100 * 2**20) + b"}", 9)}[case]
    encoding = "br-nonsense" if case == "unknown encoding" else "gzip"
    status, resp = _post(_state(served), f"/v2/models/{F.ENTRY_MODEL}/infer", body, {"Content-Encoding": encoding})
    if case == "gzip of 100 MB of spaces":
        assert status in (200, 400), (status, resp[:200])  # a large but valid body; the bound is the README's
    else:
        assert status in (400, 501), (case, status, resp[:200])
    assert_serving(served, reference)


def test_half_open_connections_do_not_block_others(served, reference):
    """64 connections that send half a request and wait: good requests are still answered."""
    state = _state(served)
    host, port = state["http"].rsplit(":", 1)
    grpc_host, grpc_port = state["grpc"].rsplit(":", 1)
    socks = []
    try:
        for i in range(64):
            s = socket.create_connection((host, int(port)) if i % 2 else (grpc_host, int(grpc_port)), timeout=5)
            s.sendall(b"POST /v2/models/dnc/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"inp"
                      if i % 2 else b"PRI * HTTP/2.0\r\n")
            socks.append(s)
        assert_serving(served, reference, within=5.0)
    finally:
        for s in socks:
            s.close()
    assert_serving(served, reference)


def test_chunked_bodies(served, reference):
    """Malformed chunked transfer encoding (the area of CVE-2025-23310/23311 in releases up to 25.06)."""
    state = _state(served)
    host, port = state["http"].rsplit(":", 1)
    for body in (b"zz\r\nnot hex\r\n0\r\n\r\n", b"ffffffffffffffff\r\nab\r\n0\r\n\r\n", b"5\r\nab"):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v2/models/dnc/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
            s.shutdown(socket.SHUT_WR)
            try:
                s.recv(1000)
            except OSError:
                pass
        assert_serving(served, reference)


def test_responses_never_carry_nan(served, reference):
    """Good, edge and refused requests alike: every body parses as strict JSON."""
    state = _state(served)
    for data in (ZEROS, [1.0] * 784, [-1.0] * 784, [float("nan")] * 784):
        status, body = _post(state, f"/v2/models/{F.ENTRY_MODEL}/infer", _json_infer(F.IMAGES, IMG, data))
        _no_nan(body)
        assert status in (200, 400)
    assert_serving(served, reference)


def test_bad_request_costs_one_log_line(served, reference):
    """Each request our models refuse is one line in the server log: no traceback, nothing more."""
    from pathlib import Path

    log = Path(read_state(served)["log"])
    text = log.read_text(errors="replace")
    lines, refused = len(text.splitlines()), text.count("refused a request")
    for _ in range(20):
        _post(_state(served), f"/v2/models/{F.ENTRY_MODEL}/infer", _json_infer(F.IMAGES, IMG, [9.0] * 784))
    deadline = time.monotonic() + 10  # (the stubs' log lines reach the server's log a moment after the answer)
    while (text := log.read_text(errors="replace")).count("refused a request") - refused < 20 and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # nothing more follows
    text = log.read_text(errors="replace")
    assert text.count("refused a request") - refused == 20
    assert len(text.splitlines()) - lines == 20
    assert_serving(served, reference)


def test_kill_9_of_tritonserver_is_recovered(served, reference):
    """The supervisor restarts a killed server on the same ports and list; the dead one's stubs and shared
    memory are gone (its private /dev/shm with them: no process is left in its mount namespace)."""
    import signal

    from dnc.serving.processes import group_processes, region_dir

    before = _state(served)
    old_regions = list(region_dir(before["pid"], before["private_shm"]).glob(f"{before['shm_prefix']}*"))
    namespace = os.readlink(f"/proc/{before['pid']}/ns/mnt")
    assert old_regions and namespace != os.readlink("/proc/self/ns/mnt")
    os.kill(before["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    _wait_restart(served, before, within=15.0)
    ready = assert_serving(served, reference, within=15.0) + time.monotonic() - t0
    after = _state(served)
    assert after["pid"] != before["pid"] and group_processes(before["pid"]) == []
    # (a namespace's number is reused once it is freed: the new server may hold the same one)
    assert set(_in_namespace(namespace)) <= set(group_processes(after["pid"]))
    assert not any(p.exists() for p in old_regions)
    print(f"ready {ready:.1f} s after kill -9")


def _in_namespace(namespace: str) -> list[int]:
    """Processes whose mount namespace is `namespace` (a /proc/PID/ns/mnt link's text)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and os.readlink(d / "ns" / "mnt") == namespace:
                found.append(int(d.name))
        except OSError:
            continue
    return found


def test_a_swap_after_failing_head_requests_leaves_no_stub(served, reference, tmp_path):
    """Failing requests straight to the head, then a swap and back: the replaced heads' stubs exit, the
    process count and shared-memory regions return to what they were."""
    from dnc.serving.processes import group_processes, region_dir
    from dnc.serving.swap import swap

    state = _state(served)
    regions = region_dir(state["pid"], state["private_shm"])
    for _ in range(5):
        assert _post(state, f"/v2/models/{F.HEAD_MODEL}/infer",
                     _json_infer(F.EMBEDDING, [1, 32], [float("nan")] * 32))[0] == 400
    before = (len(group_processes(state["pid"])), len(list(regions.glob(f"{state['shm_prefix']}*"))))
    assert before[1] > 0
    served_set = centroid_set.load(served / F.HEAD_MODEL / repository.SET_FOLDER)
    smaller = centroid_set.CentroidSet(served_set.centroids[:-1], served_set.ks[:-1], served_set.class_names[:-1],
                                       served_set.embed_fingerprint)
    centroid_set.save(smaller, tmp_path / "smaller")
    assert swap(served, tmp_path / "smaller", state["grpc"], log_file=state["log"])["to"] == smaller.set_id
    centroid_set.save(served_set, tmp_path / "back")
    assert swap(served, tmp_path / "back", state["grpc"], log_file=state["log"])["to"] == served_set.set_id
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = (len(group_processes(state["pid"])), len(list(regions.glob(f"{state['shm_prefix']}*"))))
        if now == before:
            break
        time.sleep(0.5)
    assert now == before, f"processes and shm regions {before} before, {now} after two swaps"
    assert_serving(served, reference)


def test_serve_listens_on_loopback_unless_told(served, capsys):
    assert main(["serve", "--repo", str(served), "--host", "0.0.0.0", "--http-port", "0"]) == 2
    err = capsys.readouterr().err  # the library names its parameter; the command line may show it as its flag
    assert "--allow-remote" in err or "`allow_remote`" in err, err
    assert main(["swap", "--repo", str(served), "--centroids", str(served), "--url", ""]) == 2
    err = capsys.readouterr().err
    assert "--url is empty" in err or "url` is empty" in err, err


def test_the_prep_step_checks_images_before_the_embedding_model(exported, reference, tmp_path):
    """A native runtime's embedding model cannot check its input, so every ensemble starts with the python
    prep step (the same checks, then the images passed on). Refused with 400 by the prep step before the
    embedding model runs, answered as without it otherwise."""
    from dnc.serving.server import TritonServer

    repo = tmp_path / "guarded"
    repository.build(exported[0], repo, top_k=3, threads=1)
    x, want, _ = reference
    with TritonServer(repo, 0, 0, 0) as server:
        state = {"http": server.http_url}
        status, body = _post(state, f"/v2/models/{F.ENTRY_MODEL}/infer", _json_infer(F.IMAGES, IMG, [2.0] * 784))
        assert status == 400 and "outside the range" in json.loads(body)["error"], body
        client = http.InferenceServerClient(server.http_url)

        def executions(model):
            return int(client.get_inference_statistics(model)["model_stats"][0].get("execution_count", 0))

        assert executions(F.PREP_MODEL) == 1 and executions(F.EMBED_MODEL) == 0  # refused by the prep step
        inp = http.InferInput(F.IMAGES, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        assert np.abs(client.infer(F.ENTRY_MODEL, [inp]).as_numpy(F.SCORES) - want).max() < 1e-4
