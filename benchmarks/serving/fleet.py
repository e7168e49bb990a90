"""Benchmark: a fleet of tritonservers behind the load balancer (issue 26), as `dnc serve --replicas N` runs it.

On a repository built from an export, served by `dnc serve --replicas N --detach` (N supervised
tritonservers behind HAProxy), with real pictures (uint8 pixels of image files) in every request:
1. the balancer's cost: closed-loop client threads at each --concurrency, to one replica directly, through
   a balancer (the fleet's config) in front of that replica alone, and through the fleet's balancer to all
   replicas (interleaved, the same seconds each), over HTTP and gRPC: images/s, p50 and p99;
2. swaps under load (HTTP and gRPC threads through the balancer): a steady phase, then --swaps fleet swaps
   alternating two class lists (`dnc swap --json`, in a process of its own as users run it): failed
   requests, p99 during swaps / steady, seconds from each swap call until every replica answers with the
   new list, and two mixed-list windows: the replicas' (first replica
   on the new list to the last, as the swap's per-replica probes see it) and the clients' (the first
   response received with the new list to the last request sent that the old one answered, through the
   balancer; a request in flight when its replica takes the new list is answered by it);
3. kill -9 of one replica (in turn) every --kill-every seconds for --kill-minutes under the same load:
   failed requests, restarts, and how long each replica took to be back in the balancer;
4. --swaps more swaps after the restarts (a restarted replica polls the repository on a schedule of its own).

    .venv/bin/python benchmarks/serving/fleet.py --export runs/demo/export --centroids runs/demo/fine-set \
        --images runs/demo/data/fine/test --out runs/bench-fleet/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from triton_serving import Load, pct  # this folder's serving benchmark

from dnc.clients.cli import main as dnc
from dnc.core.images import image_files
from dnc.serving import repository
from dnc.serving.balancer import Backend, Balancer, server_states
from dnc.serving.server import free_port
from dnc.serving.state import read_state, servers_of, stop_detached


def pixels(folder: Path, n: int) -> np.ndarray:
    """(n, H, W, C) uint8: the first n image files under `folder`, every ~k-th class folder's."""
    files = image_files(folder)[:: max(1, len(image_files(folder)) // n)][:n]
    arrays = [np.asarray(Image.open(f)) for f in files]
    return np.stack([a[..., None] if a.ndim == 2 else a for a in arrays])


def measure(url: str, protocol: str, x: np.ndarray, threads: int, seconds: float) -> dict:
    with Load(url, protocol, x, threads) as load:
        time.sleep(1.0)  # warm-up, not counted
        t0 = time.perf_counter()
        time.sleep(seconds)
        t1 = time.perf_counter()
    lat = load.window(t0, t1)
    return {"images_per_s": round(len(lat) * len(x) / (t1 - t0), 1), "p50_ms": round(pct(lat, 50), 2),
            "p99_ms": round(pct(lat, 99), 2), "failed": len(load.errors)}


def overhead(state: dict, x: np.ndarray, concurrency: list[int], seconds: float, run_dir: Path) -> dict:
    """The balancer's own cost: replica-0 directly against a balancer (the fleet's config) in front of
    replica-0 alone, interleaved per point; and the whole fleet through its balancer (3 replicas sharing this
    machine's cores) for comparison."""
    direct = servers_of(state)[0]
    entries = [m["models"]["entry"] for m in repository.read_info(Path(state["repo"]))["models"].values()]
    one = Balancer(run_dir, "127.0.0.1", free_port(), free_port(),
                   [Backend("replica-0", int(direct["http"].rsplit(":", 1)[1]), int(direct["grpc"].rsplit(":", 1)[1]))],
                   entries).start()
    out: dict = {}
    try:
        time.sleep(1.5)  # its first health checks
        for protocol in ("http", "grpc"):
            rows = []
            for c in concurrency:
                d = measure(direct[protocol], protocol, x, c, seconds)
                b = measure(f"127.0.0.1:{one.http_port if protocol == 'http' else one.grpc_port}", protocol, x, c,
                            seconds)
                f = measure(state[protocol], protocol, x, c, seconds)
                rows.append({"concurrency": c, "direct": d, "balancer_one": b, "fleet": f,
                             "p50_ratio": round(b["p50_ms"] / d["p50_ms"], 3),
                             "throughput_ratio": round(b["images_per_s"] / d["images_per_s"], 3),
                             "fleet_throughput_ratio": round(f["images_per_s"] / d["images_per_s"], 3)})
                print(f"{protocol} c={c}: direct {d} / balancer, one replica {b} / fleet {f}", flush=True)
            best = max(rows, key=lambda r: r["direct"]["images_per_s"])
            out[protocol] = {"points": rows, "best_concurrency": best["concurrency"],
                             "p50_ratio_at_best": best["p50_ratio"],
                             "throughput_ratio_at_best": best["throughput_ratio"]}
    finally:
        one.stop()
    return out


def swaps_under_load(repo: Path, state: dict, x: np.ndarray, sets: list[str], n: int, steady: float,
                     threads: int) -> dict:
    with Load(state["http"], "http", x, threads) as h, Load(state["grpc"], "grpc", x, threads) as g:
        t0 = time.perf_counter()
        time.sleep(steady)
        t1 = time.perf_counter()
        done, seen = [], []
        for i in range(n):
            start = time.perf_counter()
            done.append(swap_command(repo, sets[i % 2]))
            time.sleep(0.5)  # answers in flight when the swap returned
            seen.append(client_window(h.answers + g.answers, start, done[-1]["from"], done[-1]["to"]))
            print(f"swap {i + 1}/{n}: every replica on the new list {done[-1]['answering_seconds']:.2f} s after "
                  f"writing; mixed window: replicas {done[-1]['mixed_window_seconds'] * 1e3:.0f} ms, clients "
                  f"{seen[-1] * 1e3:.0f} ms", flush=True)
        t2 = time.perf_counter()
    calm = np.concatenate([load.window(t0, t1) for load in (h, g)])
    busy = np.concatenate([load.window(t1, t2) for load in (h, g)])
    windows = [d["mixed_window_seconds"] for d in done]
    return {"swaps": n, "failed_requests": len(h.errors) + len(g.errors), "errors": (h.errors + g.errors)[:5],
            "client_window_ms": [round(w * 1e3) for w in seen], "client_window_ms_max": round(max(seen) * 1e3),
            "requests_steady": len(calm), "requests_during": len(busy), "steady_p99_ms": pct(calm, 99),
            "swap_p99_ms": pct(busy, 99), "p99_ratio": pct(busy, 99) / pct(calm, 99),
            "swap_seconds": [round(d["total_seconds"], 3) for d in done],
            "swap_seconds_p50": float(np.median([d["total_seconds"] for d in done])),
            "swap_seconds_max": float(max(d["total_seconds"] for d in done)),
            "mixed_window_ms": [round(w * 1e3) for w in windows], "mixed_window_ms_max": round(max(windows) * 1e3),
            "mixed_window_ms_p50": round(float(np.median(windows)) * 1e3),
            "set_ids_seen": sorted(h.sets | g.sets)}


def swap_command(repo: Path, centroids: str) -> dict:
    """`dnc swap --json` as users run it (a process of its own, on the fleet record); its result."""
    run = subprocess.run([sys.executable, "-m", "dnc.clients.cli", "swap", "--repo", str(repo), "--centroids",
                          str(centroids), "--json"], capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        raise RuntimeError(f"dnc swap failed: {run.stderr[-2000:]}")
    return json.loads(run.stdout)


def client_window(answers: list[tuple[float, float, str]], since: float, old: str, new: str) -> float:
    """How long after a client first received an answer with `new` a request sent was still answered with
    `old` (0 when none was): from the first new answer's end to the last old answer's start, after `since`.
    (Requests sent before the first new answer and answered later with the old list are not counted: a
    request in flight finishes on the list it started with, by design.)"""
    first_new = min((end for start, end, s in answers if start >= since and s == new), default=None)
    last_old = max((start for start, end, s in answers if start >= since and s == old), default=None)
    return max(0.0, last_old - first_new) if first_new is not None and last_old is not None else 0.0


def kills_under_load(repo: Path, state: dict, x: np.ndarray, every: float, minutes: float, threads: int) -> dict:
    """kill -9 one replica (in turn) every `every` seconds; seconds until each is back UP in the balancer."""
    sock = state["balancer"]["stats_socket"]
    back, end, n = [], time.monotonic() + minutes * 60, len(servers_of(state))
    with Load(state["http"], "http", x, threads) as h, Load(state["grpc"], "grpc", x, threads) as g:
        i = 0
        while time.monotonic() < end:
            t = time.monotonic()
            name, victim = f"replica-{i % n}", servers_of(read_state(repo))[i % n]
            os.kill(victim["pid"], signal.SIGKILL)
            while time.monotonic() - t < 120:
                now = servers_of(read_state(repo))[i % n]
                up = server_states(sock)
                if now["pid"] != victim["pid"] and up["replicas_http"][name] == up["replicas_grpc"][name] == "UP":
                    break
                time.sleep(0.1)
            back.append(round(time.monotonic() - t, 2))
            print(f"kill {i + 1}: {name} back in the balancer after {back[-1]:.1f} s", flush=True)
            i += 1
            time.sleep(max(0.0, every - (time.monotonic() - t)))
    return {"kills": i, "failed_requests": len(h.errors) + len(g.errors), "errors": (h.errors + g.errors)[:5],
            "requests": len(h.lat) + len(g.lat), "seconds_back_in_balancer": back,
            "restarts": read_state(repo)["restarts"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", default="runs/demo/export")
    ap.add_argument("--centroids", default="runs/demo/fine-set", help="the second class list of the swaps")
    ap.add_argument("--images", default="runs/demo/data/fine/test", help="a folder of image files (the requests)")
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="pictures per request")
    ap.add_argument("--concurrency", default="1,2,4,8", help="client threads of the overhead points")
    ap.add_argument("--seconds", type=float, default=10.0, help="per overhead point")
    ap.add_argument("--swaps", type=int, default=10, help="per swap phase (two phases)")
    ap.add_argument("--steady-seconds", type=float, default=20.0)
    ap.add_argument("--threads-per-protocol", type=int, default=2)
    ap.add_argument("--kill-every", type=float, default=30.0)
    ap.add_argument("--kill-minutes", type=float, default=5.0)
    ap.add_argument("--out", default="runs/bench-fleet/results.json")
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="dnc-fleet-"))
    repo = base / "repo"
    repository.build(a.export, repo, threads=1)
    x = pixels(Path(a.images), a.batch)
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(), "cpus": os.cpu_count(),
                 "args": vars(a)}
    assert dnc(["serve", "--repo", str(repo), "--replicas", str(a.replicas), "--http-port", "0", "--grpc-port", "0",
                "--detach"]) == 0
    try:
        state = read_state(repo)
        concurrency = [int(c) for c in a.concurrency.split(",")]
        res["overhead"] = overhead(dict(state, repo=str(repo)), x, concurrency, a.seconds, base / "one-balancer")
        sets = [a.centroids, a.export]
        res["swaps"] = swaps_under_load(repo, state, x, sets, a.swaps, a.steady_seconds, a.threads_per_protocol)
        print("swaps", json.dumps(res["swaps"]), flush=True)
        res["kills"] = kills_under_load(repo, state, x, a.kill_every, a.kill_minutes, a.threads_per_protocol)
        print("kills", json.dumps(res["kills"]), flush=True)
        res["swaps_after_restarts"] = swaps_under_load(repo, read_state(repo), x, sets, a.swaps, a.steady_seconds,
                                                       a.threads_per_protocol)
        print("swaps after restarts", json.dumps(res["swaps_after_restarts"]), flush=True)
    finally:
        stop_detached(repo)
        shutil.rmtree(base, ignore_errors=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
