"""`dnc segment`: segment images and videos on a running server (or in-process), with evidence files.

Images: a class-index PNG, an overlay PNG and the evidence JSON each. Videos (clients/video_job.py): a
lossless mask video, an H.264 overlay, evidence lines per frame and a summary each; a folder of videos
is a resumable batch job, on this machine or on Ray (clients/ray_job.py): a rerun skips the videos done
by the same model and class list, and redoes the others."""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path

from tqdm import tqdm

from dnc.clients import flags
from dnc.clients.client import DEFAULT_URLS, INPUTS, PROTOCOLS, ClientError, DNCClient
from dnc.clients.image_job import ImageJob, served_set_id
from dnc.clients.model_option import served_model
from dnc.clients.ray_job import run_on_ray
from dnc.clients.seg_results import segmentations
from dnc.clients.video_job import collect_videos, make_segmenter, run_job, summary_text
from dnc.core import tasks
from dnc.core.errors import InputError
from dnc.core.images import IMAGE_EXTENSIONS, DataError, read_picture
from dnc.core.preprocess import ImageError
from dnc.core.video import VIDEO_EXTENSIONS, Sampling

_D = argparse.ArgumentDefaultsHelpFormatter


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", formatter_class=_D,
                       help="segment images (label and overlay PNGs, evidence JSON) and videos (mask and overlay "
                            "videos, evidence per frame), with their nearest-centroid evidence")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image and video files and folders (searched "
                   f"recursively; videos: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    p.add_argument("--out", required=True, help="folder for NAME.labels.png, NAME.overlay.png, NAME.evidence.json "
                   "per image; NAME.masks.mkv, NAME.overlay.mp4, NAME.evidence.jsonl, NAME.summary.json per video")
    p.add_argument("--model", default=None, help="the served segmenter's name (default: the one segmenter the "
                   "server serves)")
    p.add_argument("--url", default=None, help=f"server address (default {DEFAULT_URLS['http']} for http, "
                   f"{DEFAULT_URLS['grpc']} for grpc)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="http")
    p.add_argument("--input", choices=INPUTS, default="pixels", dest="how",
                   help="how pictures travel: uint8 pixels at their own size, the files' PNG/JPEG bytes, or "
                        "float32 preprocessed here")
    p.add_argument("--batch-size", type=int, default=None, help="at most this many pictures per request (pictures "
                   "of one size; consecutive frames of a video); default: as many as fit the pixels the served model "
                   "takes per request, read from the server (4 frames of 1280x720, 2 of 1920x1080 by default)")
    p.add_argument("--downscale", action="store_true", help="pictures and video frames above the served model's "
                   "per-picture limit are sent downscaled (aspect kept) and their labels brought back to their own "
                   "size (nearest); without it they are refused before sending")
    p.add_argument("--concurrency", type=int, default=2, help="videos: requests in flight per video")
    p.add_argument("--truth", default=None, metavar="CLIPS", help="videos: a folder from `dnc write-scenes --video` "
                   "(masks/NAME.masks.mkv, classes.json): mIoU per video and overall")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="videos: run the job on Ray, each task segmenting whole videos; without ADDRESS a local "
                        "instance with --ray-workers CPUs")
    p.add_argument("--ray-workers", type=int, default=2, help="with a local Ray instance: tasks at once")
    sample = p.add_mutually_exclusive_group()
    sample.add_argument("--every", type=int, default=1, metavar="N", help="videos: segment every Nth frame (0, N, "
                        "2N...; all are decoded); the mask and overlay videos run at the source rate / N")
    sample.add_argument("--sample-fps", type=_rate, default=None, metavar="R",
                        help="videos: segment the frames closest to 0, 1/R, 2/R... s (R such as 2, 0.5 or "
                             "30000/1001; at or above the source's rate, every frame)")
    p.add_argument("--accept-short", action="store_true",
                   help="videos: a video that ends before the frames its container declares, or before its "
                        "duration where it declares no count (Matroska, WebM), because it was cut short or damaged, "
                        "is written with the frames decoded and marked short in its summary, instead of failing "
                        "(a rerun without this flag redoes it, and it fails)")
    p.add_argument("--overwrite", action="store_true", help="redo every video and picture, even those done by "
                   "the same model and class list (a picture is done when its three files exist and its evidence "
                   "names the same source and the class list served now)")
    p.add_argument("--maps", action="store_true", help="also ask for the winning sub-centroid and score maps "
                   "(kept in memory by the Python client; the files hold labels and evidence)")
    p.add_argument("--no-abstain", dest="abstain", action="store_false",
                   help="label every pixel with its best class, even below the class's threshold (by default such "
                   "pixels are labelled unknown, 255, and shown white)")
    p.add_argument("--pin-list", action="store_true", help="videos: every frame must be answered by the class list "
                   "served when the job starts; a server (or fleet replica) on another list refuses the frame and "
                   "the video fails, naming both lists (a rerun redoes it with the list served then)")
    p.add_argument("--in-process", default=None, metavar="EXPORT",
                   help="no server: run this segmenter export with onnxruntime (the same preprocessing and head)")
    p.add_argument("--centroids", default=None, help="with --in-process: a centroid set instead of the export's")
    p.add_argument("--threads", type=int, default=0, help="with --in-process: onnxruntime threads (0: per core)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image (its evidence)")
    p.set_defaults(func=cmd_segment)


def cmd_segment(a: argparse.Namespace) -> int:
    counts = {"batch_size": a.batch_size, "concurrency": a.concurrency, "ray_workers": a.ray_workers}
    for name, n in counts.items():
        if n is not None and n < 1:
            raise InputError(f"`{name}` must be >= 1, got {n}")
    if a.downscale and a.in_process:
        raise InputError("`downscale` goes with a served segmenter (`in_process` takes pictures up to its "
                         "export's own limit)")
    if a.centroids and not a.in_process:
        raise InputError("`centroids` goes with `in_process` (a server's class list changes with `dnc swap`)")
    if a.pin_list and a.in_process:
        raise InputError("`pin_list` goes with a served segmenter (an export in-process has one class list)")
    images, videos = split_media(a.paths)  # a missing path is named before any server is contacted
    video_only = {"truth": a.truth, "ray": a.ray, "every": a.every != 1, "sample_fps": a.sample_fps,
                  "accept_short": a.accept_short, "pin_list": a.pin_list}
    if any(video_only.values()) and not videos:
        raise InputError(f"{', '.join(f'`{k}`' for k, v in video_only.items() if v)}: for videos, and no video "
                         "was given")
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"`out` {out} is a file, not a folder")
    status = _segment_images(a, images, out) if images else 0
    if videos:
        status = max(status, _segment_videos(a, videos, out))
    return status


def split_media(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """(image files, video files) named or under the folders named; a folder with neither is refused."""
    images: list[Path] = []
    videos: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found_v = collect_videos([p])
            found_i = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                             and not f.name.startswith("."))
            if not found_v and not found_i:
                raise DataError(f"no image or video files under {p}")
            images, videos = images + found_i, videos + found_v
        elif p.is_file():
            (videos if p.suffix.lower() in VIDEO_EXTENSIONS else images).append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    collect_videos(videos)  # refuses two videos that would write the same outputs
    return images, videos


def _segment_videos(a: argparse.Namespace, videos: list[Path], out: Path) -> int:
    sampling = Sampling(a.every, a.sample_fps)  # refuses --every 0

    absolute = lambda p: str(Path(p).resolve()) if p else None  # noqa: E731 (Ray workers may run elsewhere)
    spec = ({"kind": "local", "export": absolute(a.in_process), "centroids": absolute(a.centroids),
             "threads": a.threads, "abstain": a.abstain} if a.in_process
            else {"kind": "server", "url": a.url, "protocol": a.protocol,
                  "model": served_model(a, tasks.SEGMENTATION), "downscale": a.downscale, "abstain": a.abstain})
    if a.pin_list:  # the list served now: every worker's requests ask for it
        seg = make_segmenter(spec)
        try:
            spec["expect_set_id"] = seg.set_id()
        finally:
            seg.close()
    truth = Path(a.truth) if a.truth else None
    if truth is not None and not (truth / "classes.json").is_file():
        raise InputError(f"`truth` {truth}: not a clips folder (no classes.json); write one with "
                         "`dnc write-scenes` (`video` N)")
    job = {"batch_size": a.batch_size, "concurrency": a.concurrency, "truth_dir": truth, "sampling": sampling,
           "accept_short": a.accept_short, "overwrite": a.overwrite}
    if a.ray:
        summary = run_on_ray(videos, out, spec, address=a.ray, workers=a.ray_workers,
                             **job)  # (checks the server or export before Ray starts)
    else:
        seg = make_segmenter(spec)
        try:
            summary = run_job(videos, out, seg, **job)
        finally:
            seg.close()
    if a.json:
        print(flags.shown(json.dumps({k: v for k, v in summary.items() if k != "per_video"} | {"per_video": {
            v: {k: x for k, x in r.items() if k != "confusion"} for v, r in summary["per_video"].items()}}), a))
    else:
        print(flags.shown(summary_text(summary), a))
        print(f"outputs in {out}")
    return 1 if summary["failed"] else 0


def _segment_images(a: argparse.Namespace, files: list[Path], out: Path) -> int:
    """Each answer written as its request returns (clients/image_job.py); pictures done by an earlier run with
    the class list served now are skipped unless --overwrite; failed requests retried (DNCClient.retried)."""
    if a.in_process:
        return _in_process(a, files, out)
    with DNCClient(a.url, a.protocol, served_model(a, tasks.SEGMENTATION), downscale=a.downscale,
                   abstain=a.abstain) as client:
        job = ImageJob(files, out, client.preprocessing, a.json, abstain=a.abstain)
        try:
            todo = job.pending(lambda: served_set_id(client), a.overwrite)
            client.segment_files(todo, batch_size=a.batch_size, skipped=job.failed, how=a.how, maps=a.maps,
                                 on_result=job.write)
        except ClientError as e:  # the server gone for longer than the retries wait
            raise ClientError(job.stopped(e)) from None
    return job.report(lambda text: flags.shown(text, a))


def _in_process(a: argparse.Namespace, files: list[Path], out: Path) -> int:
    """Segment files one by one with the export in-process, each written as it is answered."""
    from dnc.export.seg_infer import InProcessSegmenter  # (imports onnxruntime)

    seg = InProcessSegmenter(a.in_process, a.centroids, a.threads)
    job = ImageJob(files, out, seg.preprocessing, a.json, abstain=a.abstain)
    prep = seg.preprocessing
    todo = job.pending(lambda: seg.set_id, a.overwrite)
    for f in tqdm(todo, desc="segment", unit="img", disable=len(todo) <= 1 or None):
        try:
            answers = segmentations(seg.run([read_picture(f, prep["color"], prep)], a.maps, a.abstain), [str(f)],
                                    a.abstain)
        except (DataError, ImageError) as e:  # unreadable, or beyond the segmenter's limits: reported, skipped
            job.fail(str(f), str(e))
            continue
        for s in answers:
            job.write(s)
    return job.report(lambda text: flags.shown(text, a))


def _rate(text: str) -> Fraction:
    """--sample-fps: a positive rate, decimal or a fraction."""
    try:
        r = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate (e.g. 2, 0.5, 30000/1001)") from None
    if r <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the rate must be > 0")
    return r
