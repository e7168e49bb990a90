"""Benchmark: crash recovery under a stream of requests that abort Triton 2.51 (issue 23, item 3).

On a repository built from an export, served by `dnc serve --detach` (supervisor + tritonserver), --crashes
times in a row: send the KServe v2 JSON request declaring 2^40 images (Triton 2.51 aborts on it,
std::bad_alloc), then send a good request until it is answered (bounded by --ready-within seconds). Reports
the time from each crash request to the good request's answer (longest, median), the supervisor's restarts
and whether every good request was answered; the supervisor backs off between restarts in a row
(serving/supervisor.py), so later crashes take longer than the first ones.

    .venv/bin/python benchmarks/serving/crash_recovery.py --export runs/demo/export --out runs/bench-crash-recovery
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from dnc.clients.cli import main as dnc
from dnc.core import formats as F
from dnc.serving import repository, supervisor
from dnc.serving.state import read_state, stop_detached


def crash_body(shape: tuple[int, ...]) -> bytes:
    """The JSON inference request that aborts Triton 2.51: a 2^40-image shape and a few bytes of data."""
    return json.dumps({"inputs": [{"name": F.IMAGES, "shape": [2**40, *shape[1:]], "datatype": "FP32",
                                   "data": [0.0]}]}).encode()


def post(address: str, body: bytes, timeout: float = 30) -> int | None:
    """POST an inference request to the entry model; its HTTP status, or None when the connection dropped."""
    req = urllib.request.Request(f"http://{address}/v2/models/{F.ENTRY_MODEL}/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, urllib.error.URLError):
        return None


def good_body(shape: tuple[int, ...]) -> bytes:
    return json.dumps({"inputs": [{"name": F.IMAGES, "shape": list(shape), "datatype": "FP32",
                                   "data": np.zeros(shape, np.float32).ravel().tolist()}]}).encode()


def answered(address: str, body: bytes, within: float) -> float | None:
    """Send `body` until it is answered 200 (seconds taken), or None after `within` seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if post(address, body, timeout=10) == 200:
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def settled_state(repo: Path, restarts: int, within: float = 10.0) -> dict:
    """The state file once it counts `restarts`: the supervisor writes it just after the new server is
    ready, so a good request can be answered a moment before the count moves."""
    deadline = time.monotonic() + within
    while True:
        state = read_state(repo) or {}
        if state.get("restarts", 0) >= restarts or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def run(export: Path, out: Path, crashes: int, ready_within: float) -> dict:
    repo = out / "repo"
    if repo.exists():
        stop_detached(repo)
    repository.build(export, repo, top_k=3, threads=1)
    mc = json.loads((export / F.MANIFEST_FILE).read_text())["model_config"]
    shape = (1, mc["in_chans"], mc["image_size"], mc["image_size"])
    assert dnc(["serve", "--repo", str(repo), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                "--detach"]) == 0
    good = good_body(shape)
    times, dropped, unanswered = [], 0, 0
    try:
        address = read_state(repo)["http"]
        if answered(address, good, ready_within) is None:
            raise RuntimeError(f"the served repository {repo} does not answer a good request ({shape})")
        first = read_state(repo)
        for i in range(crashes):
            t0 = time.monotonic()
            dropped += post(address, crash_body(shape)) is None  # None: the server died with the connection open
            took = answered(address, good, ready_within)
            if took is None:
                unanswered += 1
                print(f"crash {i + 1}: no answer within {ready_within:.0f} s", flush=True)
                break
            times.append(time.monotonic() - t0)
            print(f"crash {i + 1}/{crashes}: answered {times[-1]:.1f} s after the crash request", flush=True)
        last = settled_state(repo, first.get("restarts", 0) + len(times))
    finally:
        stop_detached(repo)
    return {"crashes": crashes, "connections_dropped": dropped, "good_answered": len(times),
            "all_answered": unanswered == 0 and len(times) == crashes,
            "restarts": last.get("restarts", 0) - first.get("restarts", 0),
            "same_address": last.get("http") == first.get("http"),
            "ready_longest_s": round(max(times), 2) if times else None,
            "ready_median_s": round(statistics.median(times), 2) if times else None,
            "ready_s": [round(t, 2) for t in times], "backoff_s": list(supervisor.BACKOFF),
            "healthy_reset_s": supervisor.HEALTHY_RESET, "cpus": os.cpu_count(), "machine": platform.machine()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", type=Path, required=True, help="export folder (`dnc export`) of a classifier")
    p.add_argument("--crashes", type=int, default=100, help="crash requests in a row, each followed by a good one")
    p.add_argument("--out", type=Path, default=Path("runs/bench-crash-recovery"), help="folder for the repository "
                   "and results.json")
    p.add_argument("--ready-within", type=float, default=60, help="seconds a good request may take to be answered "
                   "after a crash request")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    result = run(a.export, a.out, a.crashes, a.ready_within)
    (a.out / "results.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "ready_s"}))
    return 0 if result["all_answered"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
