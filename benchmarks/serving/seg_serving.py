"""Issue 12 benchmark: a segmenter served beside a classifier by one tritonserver, against in-process.

    python benchmarks/serving/seg_serving.py --classifier runs/demo/export --segmenter runs/demo/seg-export \
        --other-set runs/demo/seg-fine-set --out runs/bench-seg-serving

1. Segmentation frames/s at 256x256 and 640x480 (real FashionScenes pictures, resized): in-process
   onnxruntime (export/seg_infer.py: the same preprocessing and head graph, --threads for the graphs)
   vs the real tritonserver (python runtime, the embedding model with --threads), HTTP and gRPC, uint8
   pixels, concurrency 1/2/4 client threads of --batch frames each; the ratio takes the best Triton row.
2. Bytes per frame of the default response (binary tensors, no outputs named: labels + evidence), the
   same as KServe v2 JSON lists, and what fp32 class scores (C x H x W) would cost.
3. Classification images/s through the same server, uint8 pixels vs float32 preprocessed images (batch
   64 of 28 x 28, 2 client threads over HTTP).
4. Segmenter swaps under load (3 client threads at 256x256): failed requests, seconds to the new list,
   and whether the classifier kept its list.
Results go to --out/results.json and a markdown table on stdout. Clients share the machine's cores
with the server, as a co-located sidecar would.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from dnc.clients.client import DNCClient
from dnc.core import formats as F
from dnc.core import preprocess
from dnc.export.seg_infer import InProcessSegmenter
from dnc.serving import repository
from dnc.serving.server import TritonServer
from dnc.serving.swap import Probe, swap
from dnc.training.scenes import write_scenes

SEG, SIZES = "scenes", {"256x256": (256, 256), "640x480": (480, 640)}


def frames(n: int, hw: tuple[int, int]) -> np.ndarray:
    """n real scenes (Fashion-MNIST items over real textures), resized to hw: (n, H, W, 3) uint8."""
    with tempfile.TemporaryDirectory() as d:
        write_scenes(Path(d) / "s", "fine", size=64, train=1, test=n, seed=11)
        files = sorted((Path(d) / "s" / "images" / "test").iterdir())
        return np.stack([np.asarray(Image.open(f).convert("RGB").resize(hw[::-1], Image.BILINEAR)) for f in files])


def timed(fn, seconds: float) -> float:
    """Calls of fn per second (fn returns the frames it did), after one warm-up call."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += fn()
    return n / (time.perf_counter() - t0)


def load(url: str, protocol: str, model: str, x: np.ndarray, name: str, threads: int, seconds: float,
         stop: threading.Event | None = None) -> dict:
    """`threads` clients sending x back to back for `seconds` (or until `stop`): frames/s, failures."""
    stop = stop or threading.Event()
    done, failures, lock = [0], [], threading.Lock()
    outs = (F.LABELS,) if model == SEG else (F.SET_ID,)

    def worker():
        with DNCClient(url, protocol, model) as c:
            c.infer(x, outs, name)
            while not stop.is_set():
                try:
                    c.infer(x, outs, name)
                except Exception as e:  # any failure counts
                    with lock:
                        failures.append(repr(e)[:200])
                    continue
                with lock:
                    done[0] += len(x)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    time.sleep(2.0)  # connections made, warm-up requests answered
    with lock:
        done[0] = 0
    t0 = time.perf_counter()
    if seconds:
        time.sleep(seconds)
        stop.set()
    else:
        stop.wait()
    for t in ts:
        t.join(120)
    return {"per_s": done[0] / (time.perf_counter() - t0), "failures": len(failures), "errors": failures[:3]}


def response_bytes(url: str, pic: np.ndarray, binary: bool) -> int:
    header = {"inputs": [{"name": F.PIXELS, "shape": [1, *pic.shape], "datatype": "UINT8",
                          "parameters": {"binary_data_size": pic.nbytes}}],
              "parameters": {"binary_data_output": binary}}
    head = json.dumps(header).encode()
    req = urllib.request.Request(f"http://{url}/v2/models/{SEG}/infer", data=head + pic.tobytes(),
                                 headers={"Inference-Header-Content-Length": str(len(head)),
                                          "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return len(r.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", required=True, help="a classifier's export folder")
    ap.add_argument("--segmenter", required=True, help="a segmenter's export folder")
    ap.add_argument("--other-set", required=True, help="another centroid set of the segmenter (swaps)")
    ap.add_argument("--out", default="runs/bench-seg-serving")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads, in-process and in the server")
    ap.add_argument("--seconds", type=float, default=10.0, help="per measured configuration")
    ap.add_argument("--batch", type=int, default=2, help="frames per request")
    ap.add_argument("--swaps", type=int, default=4)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()}, {platform.processor() or '?'}",
           "args": vars(a), "segmentation": {}, "bytes": {}, "classification": {}}
    local = InProcessSegmenter(a.segmenter, threads=a.threads)
    data = {k: frames(8, hw) for k, hw in SIZES.items()}
    for k, x in data.items():
        batch = x[:a.batch]
        res["segmentation"][k] = {"in_process": timed(lambda b=batch: len(local.run(b)[F.LABELS]), a.seconds)}
        print(k, "in-process", res["segmentation"][k], flush=True)
    repo = out / "repo"
    repository.build(a.classifier, repo, threads=a.threads)
    repository.build(a.segmenter, repo, name=SEG, threads=a.threads)
    with TritonServer(repo, 0, 0, 0) as server:
        urls = {"http": server.http_url, "grpc": server.grpc_url}
        for k, x in data.items():
            row = res["segmentation"][k]
            for protocol, url in urls.items():
                for conc in (1, 2, 4):
                    got = load(url, protocol, SEG, x[:a.batch], F.PIXELS, conc, a.seconds)
                    row[f"{protocol} c{conc}"] = got
                    print(k, protocol, conc, got, flush=True)
            best = max(v["per_s"] for key, v in row.items() if key != "in_process")
            row["best_triton"], row["ratio"] = best, best / row["in_process"]
        pic = data["640x480"][0]
        c = len(repository.model_info(repo, SEG)["set"]["class_names"])
        res["bytes"] = {"pixels": 640 * 480, "default_binary": response_bytes(server.http_url, pic, True),
                        "default_json": response_bytes(server.http_url, pic, False), "fp32_scores": c * 640 * 480 * 4,
                        "classes": c}
        print("bytes", res["bytes"], flush=True)
        with DNCClient(server.http_url) as cl:
            prep = cl.preprocessing
        rng = np.random.default_rng(0)
        px = rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
        fl = preprocess.normalise(px.transpose(0, 3, 1, 2), prep)
        for how, x, name in (("uint8", px, F.PIXELS), ("float32", fl, F.IMAGES), ("uint8 again", px, F.PIXELS)):
            res["classification"][how] = load(server.http_url, "http", F.DEFAULT_MODEL, x, name, 2, a.seconds)
            print("classification", how, res["classification"][how], flush=True)
        cls_info = repository.model_info(repo, F.DEFAULT_MODEL)
        cls_before = Probe(server.grpc_url, F.DEFAULT_MODEL, cls_info["preprocessing"]).set_id()
        stop = threading.Event()
        result: dict = {}
        bg = threading.Thread(target=lambda: result.update(load(server.http_url, "http", SEG, data["256x256"][:1],
                                                                F.PIXELS, 3, 0, stop)))
        bg.start()
        time.sleep(3)
        swaps = []
        for i in range(a.swaps):
            target = a.other_set if i % 2 == 0 else a.segmenter
            swaps.append(swap(repo, target, server.grpc_url, name=SEG, log_file=server.log_file))
            time.sleep(1)
        stop.set()
        bg.join(180)
        res["swaps"] = {"failures": result.get("failures"), "errors": result.get("errors"),
                        "frames_per_s_during": result.get("per_s"),
                        "answering_seconds": [round(s["answering_seconds"], 2) for s in swaps],
                        "total_seconds": [round(s["total_seconds"], 2) for s in swaps],
                        "classifier_kept_its_list": Probe(server.grpc_url, F.DEFAULT_MODEL,
                                                          cls_info["preprocessing"]).set_id() == cls_before}
        print("swaps", res["swaps"], flush=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    print("| size | in-process frames/s | best Triton frames/s | ratio |\n|---|---|---|---|")
    for k, row in res["segmentation"].items():
        print(f"| {k} | {row['in_process']:.1f} | {row['best_triton']:.1f} | {row['ratio']:.2f} |")


if __name__ == "__main__":
    main()
