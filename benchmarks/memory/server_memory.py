"""Benchmark: resident memory of a served segmenter, per class count (issue 23, item 5).

For each class count (default 10, 60, 254): a centroid set of that many classes made from real pictures
(`dnc centroids` on FashionScenes test scenes, FASHION classes x enough sub-centroids, regrouped K to a
class: every sub-centroid is a real cell's embedding, anchored to its pixel), added to a repository beside
nothing else and served by `dnc serve --detach` (python runtime, the repository's defaults). Resident
memory of tritonserver and all its python stubs (serving/resident.py: RSS summed over the processes, and
PSS, which counts shared pages once) is read from /proc:
- after warm-up: 4 requests of one 640 x 480 picture and one of two;
- during and after the worst request the limits allow: one picture of max_pixels (2048 x 2048 by default),
  sampled every 50 ms for the peak;
- after --requests requests of varied allowed shapes (1, 2 or 4 pictures, sizes log-uniform from 64 x 64
  up to the request budget, aspect 1:2 to 2:1) sent by 2 client threads, and the peak over them;
- with --load-clients N, then after N clients sent 4 requests of one 640 x 480 picture each (ordinary load).
Target: the steady value (after the varied requests) within 20% of the post-warm-up value, in PSS (what the
processes hold, shared pages counted once; RSS summed counts the shared-memory regions twice: the stub
and the server map each). Each value is also split into anonymous memory (heaps) and the python backend's
shared-memory regions (which Triton 2.51 never shrinks).
Pictures are real scenes resized (uint8 pixels over HTTP, binary). Results: --out/results.json and a
markdown table on stdout.

    .venv/bin/python benchmarks/memory/server_memory.py --export runs/bench-memory/seg-export --out runs/bench-memory
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dnc.clients.cli import main as dnc
from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.core.centroid_set import CentroidSet
from dnc.export.seg_recompute import compute_seg_set
from dnc.serving import repository
from dnc.serving.resident import resident
from dnc.serving.state import read_state, stop_detached
from dnc.training.scenes import write_scenes

MB = 1e6
TARGET = 1.2  # steady / post-warm-up


def class_set(export: Path, scenes: Path, classes: int, k: int, out: Path) -> Path:
    """A segmentation set of `classes` classes with k sub-centroids each, from real cells: `dnc centroids`
    (compute_seg_set) gives the scenes' classes enough sub-centroids, which are dealt out k to a class."""
    base_dir = out / f"base-{classes}"
    if not (base_dir / F.SET_TENSORS_FILE).is_file():
        names = json.loads((scenes / "classes.json").read_text())["classes"]
        per = math.ceil(classes * k / len(names))
        compute_seg_set(export / F.EMBED_FILE, scenes, base_dir, k=per, threads=1, split="test",
                        pixels_per_class=max(4096, 4 * per))
    base = centroid_set.load(base_dir)
    b = base.num_classes
    cents = np.zeros((classes, k, base.dim), np.float32)
    ids = np.full((classes, k), -1, np.int64)
    yx = np.full((classes, k, 2), -1, np.int32)
    ks, names, ex = [], [], []
    for c in range(classes):
        src, first = c % b, (c // b) * k
        n = max(1, min(k, base.ks[src] - first))  # a class short of real sub-centroids reuses its first
        take = [first + i if first + i < base.ks[src] else i for i in range(n)]
        cents[c, :n], ids[c, :n], yx[c, :n] = base.centroids[src, take], base.exemplar_ids[src, take], \
            base.exemplar_yx[src, take]
        ks.append(n)
        names.append(f"{base.class_names[src]} {c // b}")
        ex.append([base.exemplar_names[src][t] for t in take])
    cs = CentroidSet(cents, ks, names, base.embed_fingerprint, exemplar_ids=ids, exemplar_names=ex,
                     task="segmentation", exemplar_yx=yx,
                     source={"from": "benchmarks/memory/server_memory.py", "base": base.set_id, "k": k})
    folder = out / f"set-{classes}"
    if not (folder / F.SET_TENSORS_FILE).is_file():
        centroid_set.save(cs, folder)
    return folder


class Sampler:
    """Samples the served tree's memory every `every` seconds in a thread; keeps the peak RSS and PSS."""

    def __init__(self, pid: int, every: float = 0.05):
        self.pid, self.every, self.stop = pid, every, threading.Event()
        self.peak = {"rss": 0, "pss": 0, "anon": 0, "shm": 0}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            now = resident(self.pid)
            self.peak = {k: max(self.peak[k], now[k]) for k in self.peak}
            time.sleep(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def settled(pid: int, wait: float = 1.5) -> dict:
    time.sleep(wait)
    return resident(pid)


def send(url: str, model: str, pictures: np.ndarray) -> np.ndarray:
    """One request of uint8 pictures (N, H, W, 3) over HTTP (binary): its labels."""
    import tritonclient.http as tc

    with tc.InferenceServerClient(url, network_timeout=600, connection_timeout=600) as client:
        inp = tc.InferInput(F.PIXELS, list(pictures.shape), "UINT8")
        inp.set_data_from_numpy(np.ascontiguousarray(pictures), binary_data=True)
        res = client.infer(model, [inp], outputs=[tc.InferRequestedOutput(F.LABELS, binary_data=True)])
        return res.as_numpy(F.LABELS)


def pictures(source: list[np.ndarray], n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    picks = rng.integers(0, len(source), n)
    return np.stack([np.asarray(Image.fromarray(source[i]).resize((w, h), Image.BILINEAR)) for i in picks])


def shapes(count: int, budget: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """(pictures, H, W) of varied allowed requests: N x H x W <= budget."""
    out = []
    for _ in range(count):
        n = int(rng.choice([1, 1, 2, 4]))
        area = math.exp(rng.uniform(math.log(64 * 64), math.log(budget / n)))
        aspect = math.exp(rng.uniform(math.log(0.5), math.log(2)))
        h = max(16, int(math.sqrt(area * aspect)))
        w = max(16, min(int(area / h), budget // (n * h)))
        out.append((n, h, w))
    return out


def load(url: str, model: str, source: list[np.ndarray], plan: list[tuple[int, int, int]], clients: int,
         pid: int, failures: list[str]) -> tuple[float, dict, dict]:
    """Send the requests of `plan` from `clients` threads: seconds taken, peak memory, memory after."""
    lock = threading.Lock()

    def client(part):
        for n, h, w in part:
            try:
                send(url, model, pictures(source, n, h, w, np.random.default_rng(h * w)))
            except Exception as e:  # counted and reported
                with lock:
                    failures.append(f"{n}x{h}x{w}: {str(e)[:200]}")

    t0 = time.monotonic()
    with Sampler(pid) as s:
        threads = [threading.Thread(target=client, args=(plan[i::clients],)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return time.monotonic() - t0, s.peak, settled(pid)


def measure(repo: Path, model: str, source: list[np.ndarray], requests: int, max_pixels: int, seed: int,
            load_clients: int = 0) -> dict:
    """Serve `repo`, warm up, send the worst request and `requests` varied ones (and, with load_clients,
    then 4 requests of one 640 x 480 picture per client from that many clients); memory at each stage."""
    assert dnc(["serve", "--repo", str(repo), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                "--detach"]) == 0
    rng = np.random.default_rng(seed)
    failures: list[str] = []
    try:
        state = read_state(repo)
        url, pid = state["http"], int(state["pid"])
        row = {"started": settled(pid, 0.5)}
        for n in (1, 1, 1, 1, 2):
            send(url, model, pictures(source, n, 480, 640, rng))
        row["warm"] = settled(pid)
        side = int(math.isqrt(max_pixels))
        worst_picture = pictures(source, 1, side, max_pixels // side, rng)
        t0 = time.monotonic()
        with Sampler(pid) as s:
            labels = send(url, model, worst_picture)
        worst_s = time.monotonic() - t0
        row["worst_peak"], row["after_worst"] = s.peak, settled(pid)
        del worst_picture
        plan = shapes(requests, max_pixels, rng)
        varied_s, row["varied_peak"], row["steady"] = load(url, model, source, plan, 2, pid, failures)
        if load_clients:
            _, row["load_peak"], row["after_load"] = load(url, model, source, [(1, 480, 640)] * (4 * load_clients),
                                                          load_clients, pid, failures)
    finally:
        stop_detached(repo)
    warm, steady = row["warm"], row["steady"]
    out = {f"{k}_{m}_mb": round(v[m] / MB, 1) for k, v in row.items() for m in ("rss", "pss", "anon", "shm")}
    out.update(processes=warm["processes"], worst_request=f"1 x {side} x {max_pixels // side}",
               worst_labels=labels.shape[1:], worst_s=round(worst_s, 2), requests=requests,
               failures=failures, varied_s=round(varied_s, 1), varied_pixels=sum(n * h * w for n, h, w in plan),
               steady_over_warm=round(steady["pss"] / warm["pss"], 3),
               anon_steady_over_warm=round(steady["anon"] / warm["anon"], 3),
               target_met=steady["pss"] <= TARGET * warm["pss"] and not failures)
    return out


def table(results: dict) -> str:
    """Per class count and stage: PSS in all (anonymous + shared-memory regions), and RSS summed."""
    stages = ("warm", "worst_peak", "after_worst", "varied_peak", "steady")
    rows = ["| classes | " + " | ".join(("after warm-up", "worst request: peak", "after it", "varied: peak",
                                         "steady after them")) + " | steady / warm-up | target (<= 1.2) |",
            "|---|" + "---|" * (len(stages) + 2)]
    for c, r in results.items():
        rows.append(f"| {c} | " + " | ".join(_cell(r, k) for k in stages) +
                    f" | {r['steady_over_warm']:.2f} | {'met' if r['target_met'] else 'missed'} |")
    return "\n".join(rows) + "\n\nMB: PSS of tritonserver and its stubs (anonymous + shared-memory regions); RSS summed"


def _cell(r: dict, k: str) -> str:
    return f"{r[k + '_pss_mb']:.0f} ({r[k + '_anon_mb']:.0f} + {r[k + '_shm_mb']:.0f}); RSS {r[k + '_rss_mb']:.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", type=Path, required=True, help="export folder (`dnc export`) of a segmenter")
    p.add_argument("--classes", default="10,60,254", help="class counts, comma-separated (at most 255)")
    p.add_argument("--k", type=int, default=4, help="sub-centroids per class")
    p.add_argument("--requests", type=int, default=100, help="varied requests after the worst one")
    p.add_argument("--max-pixels", type=int, default=None, help="the repository's --max-pixels (default: "
                   "the served default for a segmenter)")
    p.add_argument("--scenes", type=int, default=24, help="real test scenes the pictures and sets come from")
    p.add_argument("--out", type=Path, default=Path("runs/bench-server-memory"), help="folder for the sets, "
                   "repositories and results.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--load-clients", type=int, default=0, help="after the varied requests, this many clients send 4 "
                   "requests of one 640 x 480 picture each (ordinary load; 0: skipped)")
    p.add_argument("--mmap-threshold", type=int, default=None, help="set MALLOC_MMAP_THRESHOLD_ (bytes) in the "
                   "server's environment: glibc then maps large buffers of tritonserver itself for themselves and "
                   "unmaps them when freed (its own threshold rises to the largest buffer freed, which then stays)")
    a = p.parse_args(argv)
    if a.mmap_threshold is not None:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(a.mmap_threshold)  # inherited by dnc serve's tritonserver
    a.out.mkdir(parents=True, exist_ok=True)
    scenes = a.out / "scenes"
    if not (scenes / "classes.json").is_file():
        write_scenes(scenes, "fine", size=64, train=1, test=a.scenes, seed=5)
    source = [np.asarray(Image.open(f).convert("RGB")) for f in sorted((scenes / "images" / "test").iterdir())]
    max_pixels = a.max_pixels or repository.MAX_PIXELS["segmentation"]
    results = {}
    for c in (int(v) for v in a.classes.split(",")):
        folder = class_set(a.export, scenes, c, a.k, a.out)
        repo = a.out / f"repo-{c}"
        if repo.exists():
            stop_detached(repo)
        repository.build(a.export, repo, centroids=folder, name="seg", max_pixels=a.max_pixels)
        results[c] = measure(repo, "seg", source, a.requests, max_pixels, a.seed + c, a.load_clients)
        print(json.dumps({c: {k: v for k, v in results[c].items() if k != "failures"}}), flush=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(), "machine": platform.machine(),
            "max_pixels": max_pixels, "k": a.k, "export": str(a.export),
            "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_")}
    (a.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    print(table(results))
    return 0 if all(r["target_met"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
