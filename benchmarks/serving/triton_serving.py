"""Serving benchmark: Triton (python runtime) vs in-process onnxruntime, latency, and swaps under load.

    python benchmarks/serving/triton_serving.py --export runs/bench-export --centroids runs/bench-serving/set-coarse \
        --images runs/bench-serving/coarse/train

1. In-process onnxruntime on the same graphs (embed.onnx then the served head), same thread budget
   (--threads for the embedding), images/s at the request batch and at the server's max batch,
   before and after the server runs (the ratio uses the better figure).
2. The real tritonserver on a repository built from the export: for HTTP and gRPC and concurrency
   1..16 (client threads, each sending requests of --request-batch images back to back), images/s and
   per-request latency p50/p99.
3. Swaps: a steady phase under continuous load (--swap-concurrency threads) gives the steady p99; then
   --swaps swaps alternate between the export's class list and --centroids under the same load: the
   time from each `swap` call to the new list answering, failed requests, p99 during the swaps.
Results go to --out (JSON) and a markdown table on stdout. The client runs on the same machine (and
cores) as the server, as a co-located sidecar would.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import threading
import time
from pathlib import Path

import numpy as np

from dnc.core import formats as F
from dnc.core import preprocess
from dnc.core.images import image_files, read_picture
from dnc.export import runtime
from dnc.serving import repository
from dnc.serving.server import TritonServer
from dnc.serving.swap import swap


def inprocess(export: Path, repo: Path, x: np.ndarray, threads: int, seconds: float, batch: int) -> float:
    """Images/s of embed.onnx + head.onnx in this process, batches of `batch`."""
    embed = runtime.session(export / F.EMBED_FILE, threads)
    head = runtime.session(repo / F.HEAD_MODEL / "1" / "model.onnx", 1)
    xb = np.resize(x, (batch,) + x.shape[1:]).astype(np.float32)
    head.run(None, {F.EMBEDDING: embed.run([F.EMBEDDING], {F.IMAGES: xb})[0]})  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        head.run(None, {F.EMBEDDING: embed.run([F.EMBEDDING], {F.IMAGES: xb})[0]})
        n += batch
    return n / (time.perf_counter() - t0)


class Load:
    """`threads` clients sending requests back to back until stopped; per-request latencies and errors.

    Like perf_analyzer, each thread builds its input once and reads back only what it checks (the set
    id), while still asking the server for every evidence output, so the figures measure the server
    rather than this client's Python post-processing (which runs on the same 2 cores)."""

    def __init__(self, url: str, protocol: str, x: np.ndarray, threads: int):
        self.url, self.protocol, self.x = url, protocol, x
        self.lat: list[tuple[float, float]] = []  # (end time, seconds)
        self.answers: list[tuple[float, float, str]] = []  # (start, end time, set id that answered)
        self.errors: list[str] = []
        self.sets: set[str] = set()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self):
        tc = importlib.import_module(f"tritonclient.{self.protocol}")
        client = tc.InferenceServerClient(self.url)
        name, dtype = input_kind(self.x)
        inp = tc.InferInput(name, list(self.x.shape), dtype)
        names = [s.name for s in F.EVIDENCE_OUTPUTS] + [F.MARGIN]
        if self.protocol == "http":
            inp.set_data_from_numpy(self.x, binary_data=True)
            outs = [tc.InferRequestedOutput(n, binary_data=True) for n in names]
        else:
            inp.set_data_from_numpy(self.x)
            outs = [tc.InferRequestedOutput(n) for n in names]
        while not self.stop.is_set():
            t = time.perf_counter()
            try:
                res = client.infer(F.ENTRY_MODEL, [inp], outputs=outs)
                set_id = res.as_numpy(F.SET_ID).reshape(-1)[0].decode()
            except Exception as e:  # every failure counts
                with self.lock:
                    self.errors.append(repr(e))
                continue
            end = time.perf_counter()
            with self.lock:
                self.lat.append((end, end - t))
                self.answers.append((t, end, set_id))
                self.sets.add(set_id)
        client.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()

    def window(self, t0: float, t1: float) -> np.ndarray:
        with self.lock:
            return np.array([s for end, s in self.lat if t0 <= end <= t1])


def input_kind(x: np.ndarray) -> tuple[str, str]:
    """The entry model's input and Triton dtype a request array travels as: uint8 pixels (N, H, W, C), PNG/JPEG
    bytes (N, 1 objects) or preprocessed float32 images (N, C, H, W)."""
    if x.dtype == np.uint8:
        return F.PIXELS, "UINT8"
    return (F.ENCODED, "BYTES") if x.dtype == object else (F.IMAGES, "FP32")


def real_images(folder: str | Path, n: int, prep: dict) -> np.ndarray:
    """(n, C, H, W) float32: n image files from `folder` (spread over its classes), preprocessed as the
    served model's manifest says (what the client's float32 input sends). Random values would be refused:
    the server checks every image lies in the range its preprocessing produces."""
    files = image_files(Path(folder))
    if not files:
        raise SystemExit(f"no image files under {folder}")
    files = [files[i * len(files) // n] for i in range(n)]
    return np.stack([preprocess.normalise(preprocess.prepare(preprocess.from_pixels(
        read_picture(f, prep["color"], prep)), prep)[None], prep)[0] for f in files])


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q) * 1e3) if len(a) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", required=True)
    ap.add_argument("--centroids", required=True, help="a second class list (centroid set) for the swaps")
    ap.add_argument("--images", default="runs/bench-serving/coarse/train", help="a folder of image files: the "
                    "requests' pictures")
    ap.add_argument("--out", default="runs/bench-serving/results.json")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads of the embedding, both sides")
    ap.add_argument("--request-batch", type=int, default=16, help="images per request")
    ap.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    ap.add_argument("--concurrency", default="1,2,4,8,16")
    ap.add_argument("--swaps", type=int, default=20)
    ap.add_argument("--swap-concurrency", type=int, default=4)
    a = ap.parse_args()

    export, out = Path(a.export), Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    repo = out.parent / "repo"
    info = repository.build(export, repo, threads=a.threads, max_batch=64)
    prep = info["preprocessing"]
    x = real_images(a.images, a.request_batch, prep)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.processor() or platform.machine()}, "
           f"{len(__import__('os').sched_getaffinity(0))} cores", "args": vars(a), "export": str(export)}
    res["inprocess"] = {f"batch{b}": inprocess(export, repo, x, a.threads, a.seconds, b)
                        for b in (a.request_batch, 64)}
    print("in-process onnxruntime images/s:", {k: round(v) for k, v in res["inprocess"].items()}, flush=True)
    with TritonServer(repo, 0, 0, 0) as server:
        res["triton"] = {}
        for protocol in ("http", "grpc"):
            url = server.http_url if protocol == "http" else server.grpc_url
            for conc in map(int, a.concurrency.split(",")):
                with Load(url, protocol, x, conc) as load:
                    time.sleep(1.0)  # warm-up
                    t0 = time.perf_counter()
                    time.sleep(a.seconds)
                    t1 = time.perf_counter()
                lat = load.window(t0, t1)
                row = {"images_per_s": len(lat) * a.request_batch / (t1 - t0), "p50_ms": pct(lat, 50),
                       "p99_ms": pct(lat, 99), "requests": len(lat), "errors": len(load.errors)}
                res["triton"][f"{protocol}-c{conc}"] = row
                print(protocol, conc, {k: round(v, 3) for k, v in row.items()}, flush=True)
        # swaps under load
        sets = [Path(a.centroids), export]
        with Load(server.http_url, "http", x, a.swap_concurrency) as load:
            time.sleep(1.0)
            t0 = time.perf_counter()
            time.sleep(a.seconds)
            steady = load.window(t0, time.perf_counter())
            t_swaps, timings = time.perf_counter(), []
            for i in range(a.swaps):
                timings.append(swap(repo, sets[i % 2], server.grpc_url, log_file=server.log_file))
            during = load.window(t_swaps, time.perf_counter())
        res["swap"] = {
            "swaps": a.swaps, "failed_requests": len(load.errors), "errors": load.errors[:5],
            "requests_during_swaps": len(during), "steady_p99_ms": pct(steady, 99), "swap_p99_ms": pct(during, 99),
            "steady_p50_ms": pct(steady, 50), "swap_p50_ms": pct(during, 50),
            "seconds_to_new_list_p50": float(np.median([t["total_seconds"] for t in timings])),
            "seconds_to_new_list_max": float(max(t["total_seconds"] for t in timings)),
            "answering_p50": float(np.median([t["answering_seconds"] for t in timings])),
            "set_ids_seen": sorted(load.sets),
        }
        res["swap"]["p99_ratio"] = res["swap"]["swap_p99_ms"] / res["swap"]["steady_p99_ms"]
        print("swap", json.dumps(res["swap"]), flush=True)
    # In-process again after the server has gone: the ratio uses the better of the two baselines.
    res["inprocess_after"] = {f"batch{b}": inprocess(export, repo, x, a.threads, a.seconds, b)
                              for b in (a.request_batch, 64)}
    print("in-process onnxruntime images/s after:", {k: round(v) for k, v in res["inprocess_after"].items()})
    best_inproc = max(list(res["inprocess"].values()) + list(res["inprocess_after"].values()))
    for row in res["triton"].values():
        row["vs_inprocess"] = row["images_per_s"] / best_inproc
    out.write_text(json.dumps(res, indent=1))
    best = max(res["triton"].items(), key=lambda kv: kv[1]["images_per_s"])
    print(f"\nbest: {best[0]} {best[1]['images_per_s']:.0f} img/s = {best[1]['vs_inprocess']:.3f} x in-process "
          f"({best_inproc:.0f} img/s)")
    print("| protocol-concurrency | images/s | / in-process | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for k, r in res["triton"].items():
        print(f"| {k} | {r['images_per_s']:.0f} | {r['vs_inprocess']:.3f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")


if __name__ == "__main__":
    main()
