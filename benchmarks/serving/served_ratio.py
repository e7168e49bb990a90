"""Served / in-process throughput of a classifier for every input kind, in interleaved rounds (issue 27).

    python benchmarks/serving/served_ratio.py --export runs/demo/export --images runs/demo/data/fine/test

What a user compares: the same pictures classified in this process (decode, preprocess, embed.onnx, the
served head, onnxruntime with the server's thread budget) or sent to the real tritonserver as
- float32: images preprocessed by the client (the in-process side runs only the two graphs),
- pixels: uint8 pictures at their own size (both sides resize and normalise them, with core/preprocess),
- encoded: the files' PNG/JPEG bytes (both sides decode them too).
Each round measures, for every kind, the in-process images/s (at the request batch and at the server's max
batch; the better one) and then the served images/s for every protocol and client concurrency (threads
sending requests of --request-batch pictures back to back, inputs built once, every evidence output asked
for). Rounds alternate so that the machine's drift falls on both sides alike; the figures are the medians
over rounds, and the ratio is served (best concurrency) / in-process (best batch). Results: --out (JSON)
and a markdown table on stdout. The load generator shares the server's cores, as a co-located sidecar would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm
from triton_serving import Load, pct  # this folder's serving benchmark

from dnc.core import formats as F
from dnc.core import preprocess
from dnc.core.images import image_files, read_picture
from dnc.export import runtime
from dnc.serving import repository
from dnc.serving.server import TritonServer

KINDS = ("float32", "pixels", "encoded")


def pictures(folder: Path, n: int, prep: dict) -> dict[str, np.ndarray]:
    """One request's pictures in every form the entry model takes: n files spread over the folder."""
    files = image_files(folder)
    if len(files) < 1:
        raise SystemExit(f"no image files under {folder}")
    files = [files[i * len(files) // n] for i in range(n)]
    pixels = [read_picture(f, prep["color"], prep) for f in files]
    if len({p.shape for p in pixels}) > 1:
        raise SystemExit(f"the pictures under {folder} differ in size: pixels of one request share one size")
    floats = preprocess.normalise(np.stack([preprocess.prepare(preprocess.from_pixels(p), prep) for p in pixels]),
                                  prep)
    encoded = np.array([[f.read_bytes()] for f in files], dtype=object)  # (N, 1)
    return {"float32": floats, "pixels": np.stack(pixels), "encoded": encoded}


def prepared(kind: str, x: np.ndarray, prep: dict, max_pixels: int) -> np.ndarray:
    """What the served prep step does to a request, done here with the same functions."""
    if kind == "float32":
        return x
    if kind == "pixels":
        return preprocess.normalise(np.stack([preprocess.prepare_pixels(p, prep, max_pixels) for p in x]), prep)
    return preprocess.normalise(np.stack([preprocess.prepare(preprocess.load(preprocess.open_header(
        b[0], max_pixels, prep=prep)), prep) for b in x]), prep)


class InProcess:
    """embed.onnx then the served head in this process, with the server's thread budget."""

    def __init__(self, export: Path, repo: Path, threads: int, prep: dict, max_pixels: int):
        self.embed = runtime.session(export / F.EMBED_FILE, threads)
        self.head = runtime.session(repo / F.HEAD_MODEL / "1" / "model.onnx", 1)
        self.prep, self.max_pixels = prep, max_pixels

    def rate(self, kind: str, x: np.ndarray, batch: int, seconds: float) -> float:
        """Images/s over `seconds`, batches of `batch` pictures (the request's pictures repeated)."""
        xb = np.resize(x, (batch,) + x.shape[1:]) if x.dtype != object else np.array(
            [x[i % len(x)] for i in range(batch)], dtype=object)
        self._once(kind, xb)  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self._once(kind, xb)
            n += batch
        return n / (time.perf_counter() - t0)

    def _once(self, kind: str, x: np.ndarray) -> None:
        images = prepared(kind, x, self.prep, self.max_pixels)
        self.head.run(None, {F.EMBEDDING: self.embed.run([F.EMBEDDING], {F.IMAGES: images})[0]})


def served(url: str, protocol: str, x: np.ndarray, conc: int, seconds: float, warmup: float) -> dict:
    with Load(url, protocol, x, conc) as load:
        time.sleep(warmup)
        t0 = time.perf_counter()
        time.sleep(seconds)
        t1 = time.perf_counter()
    lat = load.window(t0, t1)
    return {"images_per_s": len(lat) * len(x) / (t1 - t0), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "requests": len(lat), "errors": len(load.errors), "first_error": (load.errors or [""])[0][:300]}


def medians(rounds: list[dict]) -> dict:
    """{cell: {figure: median over rounds}} of rounds [{cell: {figure: value}}]."""
    cells = rounds[0].keys()
    return {c: {k: float(np.median([r[c][k] for r in rounds])) for k, v in rounds[0][c].items()
                if isinstance(v, (int, float))} for c in cells}


def summary(res: dict) -> dict:
    """Per kind: best in-process, best served cell, ratio."""
    out = {}
    for kind in res["kinds"]:
        med = res["median"][kind]
        inproc = max(v["images_per_s"] for c, v in med.items() if c.startswith("inprocess"))
        best_cell, best = max(((c, v) for c, v in med.items() if not c.startswith("inprocess")),
                              key=lambda cv: cv[1]["images_per_s"])
        per_protocol = {p: max(v["images_per_s"] for c, v in med.items() if c.startswith(p + "-"))
                        for p in res["protocols"]}
        out[kind] = {"inprocess": inproc, "best_cell": best_cell, "served": best["images_per_s"],
                     "ratio": best["images_per_s"] / inproc,
                     "ratio_per_protocol": {p: v / inproc for p, v in per_protocol.items()}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", default="runs/demo/export")
    ap.add_argument("--images", default="runs/demo/data/fine/test", help="a folder of image files of one size")
    ap.add_argument("--out", default="runs/bench-served-ratio/results.json")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--protocols", default="http,grpc")
    ap.add_argument("--concurrency", default="1,2,4,8")
    ap.add_argument("--request-batch", type=int, default=16, help="pictures per request")
    ap.add_argument("--max-batch", type=int, default=64, help="the server's max batch (in-process runs it too)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads of the embedding, both sides")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0, help="per cell and round")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each served cell")
    a = ap.parse_args()

    kinds = a.kinds.split(",")
    if set(kinds) - set(KINDS):
        raise SystemExit(f"--kinds: choose from {', '.join(KINDS)}")
    protocols, concs = a.protocols.split(","), [int(c) for c in a.concurrency.split(",")]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    repo = out.parent / "repo"
    info = repository.build(Path(a.export), repo, threads=a.threads, max_batch=a.max_batch)
    prep, max_pixels = info["preprocessing"], int(info.get("max_pixels") or 16 << 20)
    x = pictures(Path(a.images), a.request_batch, prep)
    local = InProcess(Path(a.export), repo, a.threads, prep, max_pixels)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.processor() or platform.machine()}, "
           f"{len(os.sched_getaffinity(0))} cores", "args": vars(a), "kinds": kinds, "protocols": protocols,
           "picture": list(x["pixels"].shape[1:]), "rounds": {k: [] for k in kinds}}
    cells = len(kinds) * (2 + len(protocols) * len(concs)) * a.rounds
    with TritonServer(repo, 0, 0, 0) as server, tqdm(total=cells, desc="cells", unit="cell") as bar:
        urls = {"http": server.http_url, "grpc": server.grpc_url}
        for _ in range(a.rounds):
            for kind in kinds:
                row = {}
                for b in sorted({a.request_batch, a.max_batch}):
                    row[f"inprocess-b{b}"] = {"images_per_s": local.rate(kind, x[kind], b, a.seconds)}
                    bar.update(1)
                for protocol in protocols:
                    for conc in concs:
                        row[f"{protocol}-c{conc}"] = served(urls[protocol], protocol, x[kind], conc, a.seconds,
                                                            a.warmup)
                        bar.update(1)
                res["rounds"][kind].append(row)
                out.write_text(json.dumps(res, indent=1))  # a stopped run keeps its finished rounds
    res["median"] = {k: medians(v) for k, v in res["rounds"].items()}
    res["summary"] = summary(res)
    out.write_text(json.dumps(res, indent=1))
    print("| input | in-process images/s (best batch) | served images/s (best cell) | served / in-process | "
          "HTTP / in-process | gRPC / in-process |\n|---|---|---|---|---|---|")
    for kind, s in res["summary"].items():
        pp = s["ratio_per_protocol"]
        print(f"| {kind} | {s['inprocess']:.0f} | {s['served']:.0f} ({s['best_cell']}) | {s['ratio']:.3f} | "
              f"{pp.get('http', float('nan')):.3f} | {pp.get('grpc', float('nan')):.3f} |")
    errors = sum(v["errors"] for rows in res["rounds"].values() for r in rows for c, v in r.items()
                 if not c.startswith("inprocess"))
    print(f"failed requests: {errors}")


if __name__ == "__main__":
    main()
