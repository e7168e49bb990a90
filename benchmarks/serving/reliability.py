"""Benchmark: reliability of the served stack (issue 10), against `dnc serve` as users run it.

On a repository built from an export, served by `dnc serve --detach` (supervisor + tritonserver):
1. swaps under load: HTTP and gRPC client threads send real images back to back; a steady phase gives
   the steady p99, then --swaps swaps alternate two class lists under the same load: failed requests,
   p99 during the swaps, seconds from each `swap` call to the new list answering, and the server's
   processes (tritonserver + python stubs), their resident memory and shared-memory regions before/after;
2. crash recovery: --kills times, `kill -9` of tritonserver, then the time until the entry model answers a
   good request again with the same class list (the supervisor restarts it);
3. bad requests: --bad hostile requests (out-of-range and NaN pixels, malformed JSON, wrong shapes, lying
   binary headers, non-finite embeddings to the head), then the server's memory and log lines added.

    .venv/bin/python benchmarks/serving/reliability.py --export runs/demo/export --centroids runs/demo/fine-set \
        --out runs/bench-reliability/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from triton_serving import Load, pct, real_images  # this folder's serving benchmark

from dnc.clients.cli import main as dnc
from dnc.core import formats as F
from dnc.serving import repository
from dnc.serving.processes import group_processes, region_dir
from dnc.serving.state import read_state, stop_detached
from dnc.serving.swap import Probe, swap


def footprint(state: dict) -> dict:
    """Processes of the server's group, their resident memory (MB) and its shared-memory regions."""
    pids = group_processes(state["pid"])
    rss = 0
    for pid in pids:
        try:
            rss += int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                            if line.startswith("VmRSS:")).split()[1])
        except (OSError, StopIteration):
            pass
    regions = region_dir(state["pid"], state.get("private_shm", False)).glob(f"{state['shm_prefix']}*")
    return {"processes": len(pids), "rss_mb": round(rss / 1024, 1), "shm_regions": len(list(regions))}


def post(state: dict, path: str, body: bytes, headers: dict | None = None) -> int:
    req = urllib.request.Request(f"http://{state['http']}{path}", data=body,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (ConnectionError, urllib.error.URLError):
        return -1


def bad_requests(state: dict, n: int, image: list[int], dim: int) -> dict:
    """n hostile requests, cycling through kinds; returns status counts per kind."""
    pixels = int(np.prod(image))

    def body(shape, data, name=F.IMAGES):
        return json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": data}]}).encode()

    header = json.dumps({"inputs": [{"name": F.IMAGES, "shape": image, "datatype": "FP32",
                                     "parameters": {"binary_data_size": 10**9}}]}).encode()
    kinds = {
        "out of range": (f"/v2/models/{F.ENTRY_MODEL}/infer", body(image, [9.0] * pixels), None),
        "NaN pixels": (f"/v2/models/{F.ENTRY_MODEL}/infer", body(image, [float("nan")] * pixels), None),
        "malformed JSON": (f"/v2/models/{F.ENTRY_MODEL}/infer", b'{"inputs": [{"name": ', None),
        "wrong shape": (f"/v2/models/{F.ENTRY_MODEL}/infer", body([1, 3, 5, 5], [0.0] * 75), None),
        "lying binary header": (f"/v2/models/{F.ENTRY_MODEL}/infer", header + bytes(pixels * 4),
                                {"Inference-Header-Content-Length": str(len(header))}),
        "NaN embedding": (f"/v2/models/{F.HEAD_MODEL}/infer", body([1, dim], [float("nan")] * dim, F.EMBEDDING),
                          None),
    }
    counts: dict[str, dict[str, int]] = {k: {} for k in kinds}
    names = list(kinds)
    for i in range(n):
        kind = names[i % len(names)]
        path, data, headers = kinds[kind]
        code = str(post(state, path, data, headers))
        counts[kind][code] = counts[kind].get(code, 0) + 1
    return counts


def wait_answer(state_of, set_id: str, prep: dict, timeout: float = 60.0) -> float:
    """Seconds until the server named by state_of() answers with `set_id`."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        state = state_of()
        try:
            if state and Probe(state["grpc"], F.DEFAULT_MODEL, prep).set_id(timeout=2.0) == set_id:
                return time.perf_counter() - t0
        except Exception:  # not up yet
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no answer with {set_id} within {timeout:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", default="runs/demo/export")
    ap.add_argument("--centroids", default="runs/demo/fine-set", help="the second class list of the swaps")
    ap.add_argument("--swaps", type=int, default=100)
    ap.add_argument("--steady-seconds", type=float, default=20.0)
    ap.add_argument("--threads-per-protocol", type=int, default=2)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--bad", type=int, default=1000)
    ap.add_argument("--images", default="runs/demo/data/fine/test", help="a folder of image files: the requests")
    ap.add_argument("--out", default="runs/bench-reliability/results.json")
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="dnc-reliability-"))
    repo = base / "repo"
    repository.build(a.export, repo, threads=1)
    info = repository.model_info(repo)
    prep = info["preprocessing"]
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(), "cpus": os.cpu_count(),
                 "args": vars(a)}
    assert dnc(["serve", "--repo", str(repo), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                "--detach"]) == 0
    try:
        state = read_state(repo)
        size = int(prep["image_size"])
        x = real_images(a.images, 8, prep)  # (random values would be refused: outside the preprocessing's range)
        sets = [a.centroids, a.export]
        ids = {Probe(state["grpc"], F.DEFAULT_MODEL, prep).set_id()}
        res["before"] = footprint(state)
        with Load(state["http"], "http", x, a.threads_per_protocol) as http_load, \
                Load(state["grpc"], "grpc", x, a.threads_per_protocol) as grpc_load:
            t0 = time.perf_counter()
            time.sleep(a.steady_seconds)
            t1 = time.perf_counter()
            timings = []
            for i in range(a.swaps):
                timings.append(swap(repo, sets[i % 2], state["grpc"], log_file=state["log"]))
                ids.add(timings[-1]["to"])
                print(f"swap {i + 1}/{a.swaps}: {timings[-1]['total_seconds']:.2f} s", flush=True)
            t2 = time.perf_counter()
        steady = np.concatenate([load.window(t0, t1) for load in (http_load, grpc_load)])
        during = np.concatenate([load.window(t1, t2) for load in (http_load, grpc_load)])
        res["swaps"] = {
            "swaps": a.swaps, "failed_requests": len(http_load.errors) + len(grpc_load.errors),
            "errors": (http_load.errors + grpc_load.errors)[:5], "requests_steady": len(steady),
            "requests_during_swaps": len(during), "steady_p50_ms": pct(steady, 50), "steady_p99_ms": pct(steady, 99),
            "swap_p50_ms": pct(during, 50), "swap_p99_ms": pct(during, 99),
            "p99_ratio": pct(during, 99) / pct(steady, 99),
            "seconds_to_new_list_p50": float(np.median([t["total_seconds"] for t in timings])),
            "seconds_to_new_list_max": float(max(t["total_seconds"] for t in timings)),
            "set_ids_seen": sorted(http_load.sets | grpc_load.sets), "set_ids_swapped": sorted(ids),
        }
        time.sleep(3)  # let the last replaced head's stub exit
        res["after_swaps"] = footprint(read_state(repo))
        print("swaps", json.dumps(res["swaps"]), res["before"], res["after_swaps"], flush=True)

        served = Probe(state["grpc"], F.DEFAULT_MODEL, prep).set_id()
        kills = []
        for _ in range(a.kills):
            state = read_state(repo)
            os.kill(state["pid"], signal.SIGKILL)
            kills.append(wait_answer(lambda: read_state(repo), served, prep))
            time.sleep(1)
        state = read_state(repo)
        res["kill9"] = {"kills": a.kills, "seconds_to_same_list": kills, "max_seconds": max(kills),
                        "restarts": state["restarts"], "after": footprint(state)}
        print("kill -9", json.dumps(res["kill9"]), flush=True)

        log = Path(state["log"])
        lines0 = len(log.read_text(errors="replace").splitlines())
        mem0 = footprint(state)
        t = time.perf_counter()
        counts = bad_requests(state, a.bad, [1, int(prep["channels"]), size, size], info["dim"])
        res["bad_requests"] = {"requests": a.bad, "seconds": time.perf_counter() - t, "statuses": counts,
                               "before": mem0, "after": footprint(read_state(repo)),
                               "log_lines_added": len(log.read_text(errors="replace").splitlines()) - lines0,
                               "restarts_during": read_state(repo)["restarts"] - state["restarts"],
                               "still_same_list": served == Probe(read_state(repo)["grpc"], F.DEFAULT_MODEL,
                                                                  prep).set_id()}
        print("bad requests", json.dumps(res["bad_requests"]), flush=True)
    finally:
        stop_detached(repo)
        shutil.rmtree(base, ignore_errors=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
