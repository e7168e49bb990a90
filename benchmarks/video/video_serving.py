"""Issue 13 benchmark: video segmentation jobs through Triton vs in-process, on generated clips and real footage.

    sudo apt-get install -y opencv-doc      # real footage: vtest.avi (768x576), by hand, once
    python benchmarks/video/video_serving.py --segmenter runs/demo/seg-export --other-set runs/demo/seg-fine-set \
        --out runs/bench-video

1. frames/s of `dnc segment`'s job (clients/video_job.py: decode, requests, mask/overlay/evidence writing)
   in-process (onnxruntime, --threads) and through the real tritonserver (python runtime, the embedding
   with --threads), HTTP and gRPC, over (batch, concurrency) pairs; inputs: a generated clip at 256x256 and
   640x480 (`write_clips`, coarse labels) and the first --real-frames frames of opencv-doc's vtest.avi
   (re-encoded to H.264, the footage unchanged otherwise); the ratio takes the best Triton row.
2. where the time goes (decode, waiting for answers, writing) as shares of each job.
3. Ray: 4 clips of 256x256 in-process, on a local Ray instance with 1 and with 2 workers (1 thread each).
4. mIoU of the generated clips against their truth, through Triton and in-process.
5. a swap of the segmenter's list a third of the way into a 640x480 clip: failed frames, frames per list.
Results go to --out/results.json and a markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import threading
import time
from pathlib import Path

from dnc.clients.video_job import LocalSegmenter, ServerSegmenter, run_job
from dnc.core import video
from dnc.serving import repository
from dnc.serving.server import TritonServer
from dnc.serving.swap import swap
from dnc.training.scenes import write_clips

SEG = "scenes"
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
PAIRS = "default,4x1,4x2,8x2,8x4"  # frames per request x requests in flight; default: `dnc segment` with no flag
DEFAULT_CONCURRENCY = 2  # `dnc segment --concurrency`'s default (clients/segment_cli.py)


def pair(text: str) -> tuple[int | None, int]:
    """"BxC" -> (B, C); "default" -> (None, the command's default): as many frames as fit, as `dnc segment` sends."""
    if text == "default":
        return None, DEFAULT_CONCURRENCY
    b, c = text.split("x")
    return int(b), int(c)


def cut(src: Path, dest: Path, frames: int) -> Path:
    """The first `frames` frames of a video, re-encoded as H.264 (crf 18)."""
    meta = video.info(src)
    with video.H264Writer(dest, meta.width, meta.height, meta.rate, crf=18) as w:
        for f in video.frames(src):
            if f.index >= frames:
                break
            w.write(f.rgb)
    return dest


def job(videos, out: Path, seg, batch: int | None, conc: int, truth=None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    s = run_job(videos, out, seg, batch, conc, truth)
    shares = [r["time_share"] for r in s["per_video"].values()]
    return {"frames_per_s": s["frames_per_s"], "frames": s["frames"], "failed": len(s["failed"]), "miou": s["miou"],
            "time_share": {k: round(sum(x[k] for x in shares) / len(shares), 3) for k in shares[0]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segmenter", required=True, help="a segmenter's export folder")
    ap.add_argument("--other-set", required=True, help="another centroid set of the segmenter (the swap)")
    ap.add_argument("--out", default="runs/bench-video")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads, in-process and in the server")
    ap.add_argument("--real-frames", type=int, default=64)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--frames", type=int, default=0, help="frames of each generated clip (0: 96 at 256x256, 48 at "
                    "640x480 and on Ray)")
    ap.add_argument("--pairs", default=PAIRS, help="(frames per request)x(requests in flight) through Triton")
    a = ap.parse_args()
    pairs = [pair(p) for p in a.pairs.split(",")]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.node(), "args": vars(a), "inputs": {}}
    inputs = {}
    for name, (w, h, n) in {"256x256": (256, 256, a.frames or 96), "640x480": (640, 480, a.frames or 48)}.items():
        folder = out / f"clips-{name}"
        if not (folder / "classes.json").is_file():
            write_clips(folder, 1, "coarse", height=h, width=w, frames=n, fps=24, seed=21)
        inputs[name] = ([folder / "videos" / "clip000.mp4"], folder)
    if VTEST.is_file():
        real = out / "real"
        real.mkdir(exist_ok=True)
        if not (real / "vtest.mp4").is_file():
            cut(VTEST, real / "vtest.mp4", a.real_frames)
        inputs["vtest 768x576"] = ([real / "vtest.mp4"], None)
    else:
        print(f"{VTEST} missing: `apt-get install -y opencv-doc` for real footage", flush=True)
    local = LocalSegmenter(a.segmenter, threads=a.threads)
    for name, (videos, truth) in inputs.items():
        res["inputs"][name] = {"in_process": job(videos, out / "o", local, 8, 1, truth)}
        print(name, "in-process", res["inputs"][name]["in_process"], flush=True)
    repo = out / "repo"
    repository.build(a.segmenter, repo, name=SEG, threads=a.threads)
    with TritonServer(repo, 0, 0, 0) as server:
        for name, (videos, truth) in inputs.items():
            row = res["inputs"][name]
            for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
                seg = ServerSegmenter(url, protocol, SEG)
                for batch, conc in pairs:
                    key = f"{protocol} " + (f"b{batch} c{conc}" if batch else "default")
                    row[key] = job(videos, out / "o", seg, batch, conc, truth)
                    print(name, key, row[key], flush=True)
                seg.close()
            best = max((v for k, v in row.items() if k != "in_process"), key=lambda v: v["frames_per_s"])
            row["best_triton"], row["ratio"] = best, best["frames_per_s"] / row["in_process"]["frames_per_s"]
            pairs_only = [v for k, v in row.items() if k.endswith(tuple(f"c{c}" for _, c in pairs))]
            if "http default" in row and pairs_only:  # what a user who passes no flag gets, against the best pair
                row["default_over_best_pair"] = row["http default"]["frames_per_s"] / max(
                    v["frames_per_s"] for v in pairs_only)
        # a swap a third of the way into the 640x480 clip, under the best pair found for it
        videos, _ = inputs["640x480"]
        seg = ServerSegmenter(server.grpc_url, "grpc", SEG)
        swap_out = out / "swap"
        shutil.rmtree(swap_out, ignore_errors=True)
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(run_job(videos, swap_out, seg, 4, 2)))
        t.start()
        def lines_written() -> int:  # the evidence temporary (training/safe_files: an unpredictable name)
            try:
                return max((p.read_text().count("\n") for p in swap_out.glob(".clip000.evidence.jsonl.*.dnc-tmp")),
                           default=0)
            except FileNotFoundError:  # renamed into place meanwhile: the video is done
                return 1 << 30

        while t.is_alive() and lines_written() < (a.frames or 48) // 3:
            time.sleep(0.05)
        done = swap(repo, a.other_set, server.grpc_url, name=SEG, log_file=server.log_file)
        t.join()
        seg.close()
        lines = [json.loads(x) for x in (swap_out / "clip000.evidence.jsonl").read_text().splitlines()] \
            if (swap_out / "clip000.evidence.jsonl").is_file() else []
        per_list: dict[str, int] = {}
        for x in lines:
            per_list[x["set_id"]] = per_list.get(x["set_id"], 0) + 1
        res["swap"] = {"failed_videos": len(result.get("failed", {})), "frames_out": len(lines),
                       "frames_in": result.get("frames"), "frames_per_list": per_list,
                       "answering_seconds": round(done["answering_seconds"], 2)}
        print("swap", res["swap"], flush=True)
    if not a.skip_ray:
        from dnc.clients.ray_job import run_on_ray

        folder = out / "clips-ray"
        if not (folder / "classes.json").is_file():
            write_clips(folder, 4, "coarse", height=256, width=256, frames=a.frames or 48, fps=24, seed=31)
        videos = sorted((folder / "videos").iterdir())
        spec = {"kind": "local", "export": a.segmenter, "threads": 1}
        res["ray"] = {}
        for workers in (1, 2):
            shutil.rmtree(out / "o", ignore_errors=True)
            s = run_on_ray(videos, out / "o", spec, 8, 1, None, "local", workers)
            res["ray"][f"{workers} worker(s)"] = {"frames_per_s": s["frames_per_s"], "failed": len(s["failed"])}
            print("ray", workers, res["ray"][f"{workers} worker(s)"], flush=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    print("| input | in-process frames/s | best Triton frames/s (protocol, batch, concurrency) | ratio | "
          "HTTP default / best pair |")
    print("|---|---|---|---|---|")
    for name, row in res["inputs"].items():
        key = next(k for k, v in row.items() if v is row["best_triton"])
        print(f"| {name} | {row['in_process']['frames_per_s']:.1f} | {row['best_triton']['frames_per_s']:.1f} "
              f"({key}) | {row['ratio']:.2f} | {row.get('default_over_best_pair', float('nan')):.2f} |")


if __name__ == "__main__":
    main()
