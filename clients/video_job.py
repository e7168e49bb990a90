"""Batch segmentation of videos: frames decoded once, segmented in batches with several requests in flight,
written in frame order; a folder of videos is a resumable job.

Per video NAME, in the output folder (each written to a hidden temporary created exclusively, never
through a link, renamed when the video is whole, the summary last: a video is done only when all four exist):
    NAME.masks.mkv        class ids per pixel, lossless (FFV1 gray8), one frame per frame segmented
    NAME.overlay.mp4      the frames with each class's colour blended in and a legend strip below them (the
                          classes present, LEGEND_ROWS rows: one size for every frame), H.264, at the
                          source's frame rate or the sampled rate
    NAME.evidence.jsonl   one line per frame segmented: source index, time, class-list id, classes present
                          with their fraction, mean score, dominant sub-centroid and its exemplar
    NAME.summary.json     frames, seconds, where the time went, the model and class lists (set ids) that made
                          it, the sampling, frames declared and decoded, mIoU against --truth
Frames out = frames in: a frame whose request fails (after retries) fails the whole video, whose partial
files are removed; the job goes on with the next video and its exit status says some failed. So does a
video that ends early (fewer frames decoded than its container declares, or without a count, frames that
stop before its duration: cut short or damaged, see training/video.Decoding), unless the job accepts short
videos: then it is written and marked short.

Sampling (training/video.Sampling): every frame is decoded and counted, only the sampled ones are
segmented and written, at the sampled rate; each evidence line keeps its source frame's index and time.

Reruns (clients/video_outputs.py decides): a video is done when its four files exist and its summary says
it was made by the same model, entirely with the class list that model serves now, with the same sampling
(and, if written short, that this job accepts short videos too); otherwise it is redone (a list swapped
since, or mid-video). So a stopped job (Ctrl-C) is resumed by running it again, and after a swap the same
command brings the outputs up to date; `overwrite` redoes everything.

Segmenters: `ServerSegmenter` (a served model over HTTP or gRPC, one client per thread) or
`LocalSegmenter` (an export in-process with onnxruntime); `clients/ray_job.py` runs the same per-video
function on Ray workers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dnc.clients import sizing
from dnc.clients.client import ClientError, DNCClient
from dnc.clients.printable import shown
from dnc.clients.seg_results import Segmentation, overlay, segmentations
from dnc.clients.video_outputs import Outputs, pending_videos, sampling_text, wanted
from dnc.clients.video_requests import answers
from dnc.core import formats as F
from dnc.core import tasks, video
from dnc.core.errors import DNCError
from dnc.core.preprocess import ImageError
from dnc.core.seg_folder import read_classes

log = logging.getLogger(__name__)

ATTEMPTS = 3  # per request, before the video fails
LOCAL_BATCH = 8  # frames per run of an export in-process when --batch-size is not given
LEGEND_ROWS = 2  # of the overlay video's legend: fixed, as every frame of a video has one size


class JobError(DNCError, ValueError):
    """A video that could not be segmented whole; the message names it and why."""


# -- segmenters ---------------------------------------------------------------------------------------
class ServerSegmenter:
    """A served segmenter; thread-safe (one tritonclient connection per thread). Requests are sized to the
    model's pixel budget, read from the server (`plan`); with `downscale`, frames above its per-picture limit
    are sent downscaled and their answers brought back to the frame's size (clients/sizing.py)."""

    def __init__(self, url: str | None, protocol: str, model: str, downscale: bool = False, abstain: bool = True,
                 expect_set_id: str | None = None):
        self.args, self._local, self._clients = (url, protocol, model), threading.local(), []
        self.abstain, self.expect_set_id = abstain, expect_set_id  # (pinned: every frame answered by that list)
        self._generation = 0  # bumped by release(): requests of a released video are not retried
        first = self._client()  # connects now: a wrong address or a classifier is refused before any video
        if not first.task.dense:
            raise JobError(f"model {model!r} is a {first.task.noun}; segmenting videos needs a "
                           f"{tasks.SEGMENTATION.noun}")
        self.describe = f"{model} at {first.url} ({protocol})"
        self.model = {"served": model, "url": first.url,  # a rerun compares the name (video_outputs)
                      **({} if abstain else {"abstain": False})}  # and whether unknown was allowed
        self._prep = first.preprocessing
        self.max_pixels, self.max_batch, self.downscale = first.max_pixels, first.max_batch, downscale

    def plan(self, height: int, width: int, batch_size: int | None) -> int:
        """Frames of width x height per request: as many as fit the pixel budget, at most `batch_size` (None:
        the model's max batch); frames above the per-picture limit fail the video unless downscaled."""
        if height * width > self.max_pixels:
            if not self.downscale:
                raise JobError(sizing.too_large("each frame", width=width, height=height, max_pixels=self.max_pixels,
                                                model=self.args[2]))
            width, height = sizing.fitted(width, height, self.max_pixels)
        cap = min(batch_size or self.max_batch, self.max_batch)
        return sizing.per_request(self.max_pixels, height * width, cap)

    def set_id(self) -> str:
        """The class list (set id) the served model answers with now: one blank picture at its trained size,
        asking for the set id only."""
        size, chans = int(self._prep["image_size"]), int(self._prep["channels"])
        try:
            out = self._client().infer(np.zeros((1, size, size, chans), np.uint8), (F.SET_ID,), F.PIXELS)  # (1,)
        except ClientError as e:
            raise JobError(f"cannot ask {self.describe} which class list it serves: {e}") from None
        v = out[F.SET_ID].reshape(-1)[0]
        return v.decode() if isinstance(v, bytes) else str(v)

    def _client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = DNCClient(*self.args, abstain=self.abstain, expect_set_id=self.expect_set_id)
            self._clients.append(c)
        return c

    def segment(self, frames: np.ndarray) -> list[Segmentation]:
        generation, (h, w) = self._generation, frames.shape[1:3]
        small = self.downscale and h * w > self.max_pixels
        sent = np.stack([sizing.downscaled(f, self.max_pixels) for f in frames]) if small else frames
        for attempt in range(ATTEMPTS):
            try:
                answers = self._client().segment(sent)
                return [sizing.restored(a, h, w) for a in answers] if small else answers
            except ClientError as e:
                if self._generation != generation:  # its video was released (failed): not retried
                    raise JobError(f"abandoned: {e}") from None
                if e.refused or attempt == ATTEMPTS - 1:  # a refused input stays refused
                    raise JobError(str(e)) from None
                log.warning("request failed (%s); retrying", e)
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    def release(self) -> None:
        """Close the connections of the threads that segmented a video (each video has threads of its own),
        those with a request still in flight included (a failed video: see clients/video_requests.py)."""
        self._generation += 1
        clients, self._clients, self._local = self._clients, [], threading.local()
        for c in clients:
            try:
                c.close()
            except Exception as e:  # a connection in use by a thread of a failed video: dropped all the same
                log.debug("closing a connection: %s", e)

    def close(self) -> None:
        self.release()


class LocalSegmenter:
    """An export run in-process (export/seg_infer.py), optionally with another centroid set."""

    def __init__(self, export: str | Path, centroids: str | Path | None = None, threads: int = 0,
                 abstain: bool = True):
        from dnc.export.seg_infer import InProcessSegmenter  # (imports onnxruntime)

        self.seg, self.abstain = InProcessSegmenter(export, centroids, threads), abstain
        self.describe = f"{export} in-process"
        self.model = {"export": str(Path(export).resolve()),  # absolute: the same on this machine and on Ray
                      "centroids": str(Path(centroids).resolve()) if centroids else None,
                      **({} if abstain else {"abstain": False})}

    def set_id(self) -> str:
        return self.seg.set_id

    def plan(self, height: int, width: int, batch_size: int | None) -> int:
        """Frames per run: --batch-size, or LOCAL_BATCH (the export refuses frames beyond its own limit)."""
        return batch_size or LOCAL_BATCH

    def segment(self, frames: np.ndarray) -> list[Segmentation]:
        try:
            return segmentations(self.seg.run(frames, abstain=self.abstain), [str(i) for i in range(len(frames))],
                                 self.abstain)
        except ImageError as e:  # a frame beyond the size limit: this video fails, the job goes on
            raise JobError(str(e)) from None

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_segmenter(spec: dict):
    """A segmenter from a plain description (what a Ray worker receives): {"kind": "server", "url",
    "protocol", "model"} or {"kind": "local", "export", "centroids", "threads"}."""
    if spec["kind"] == "server":
        return ServerSegmenter(spec["url"], spec["protocol"], spec["model"], spec.get("downscale", False),
                               spec.get("abstain", True), spec.get("expect_set_id"))
    return LocalSegmenter(spec["export"], spec.get("centroids"), spec.get("threads", 0), spec.get("abstain", True))


# -- one video ----------------------------------------------------------------------------------------
class Truth:
    """Ground-truth masks of a clip (`dnc write-scenes --video`): per-frame confusion by class name."""

    def __init__(self, folder: Path, name: str):
        path = folder / "masks" / f"{name}.masks.mkv"
        if not path.is_file():
            raise JobError(f"truth folder {folder}: no {path.name} under masks/ for video {name}")
        self.names = read_classes(folder).names
        self.index = {n: i for i, n in enumerate(self.names)}
        self.frames = video.masks(path)
        self.read = 0  # truth frames read so far: the next one is frame `read`
        self.conf = np.zeros((len(self.names), len(self.names) + 1), np.int64)  # truth x (pred, unknown)

    def add(self, seg: Segmentation, frame: int) -> None:
        """Compare the labels of source frame `frame` with its truth (frames not sampled are passed over)."""
        truth = None
        while self.read <= frame:
            truth = next(self.frames, None)
            if truth is None:
                raise JobError(f"the truth has fewer frames than the video (no mask for frame {frame})")
            self.read += 1
        if truth is None:
            raise JobError(f"frame {frame} is not after frame {self.read - 1}, the last truth frame read: the truth "
                           "is read once, in order, so frames must come in increasing order")
        if truth.shape != seg.labels.shape:
            raise JobError(f"truth frame {frame} is {truth.shape}, the labels {seg.labels.shape}")
        to = np.full(256, len(self.names))  # pred id -> truth id; unknown (255) and unmatched names: "other"
        to[:len(seg.class_names)] = [self.index.get(n, len(self.names)) for n in seg.class_names]
        pred = to[seg.labels]
        np.add.at(self.conf, (truth.reshape(-1), pred.reshape(-1)), 1)

    def count(self) -> int:
        """All the truth's frames (reads the rest)."""
        self.read += sum(1 for _ in self.frames)
        return self.read

    @staticmethod
    def miou(conf: np.ndarray, names: list[str]) -> dict:
        tp = np.diag(conf[:, :len(names)]).astype(float)
        union = conf.sum(1) + conf[:, :len(names)].sum(0) - tp
        present = union > 0
        iou = np.where(present, tp / np.maximum(union, 1), np.nan)
        return {"miou": float(np.nanmean(iou) * 100) if present.any() else None,
                "iou_per_class": {n: (None if np.isnan(v) else round(float(v) * 100, 2))
                                  for n, v in zip(names, iou, strict=True)}}


class _Sink:
    """Where a video's answers go, frame by frame, in order: the mask and overlay videos (opened at the
    first answer's size), the evidence lines, the class lists seen and the truth's confusion."""

    def __init__(self, outs: Outputs, rate, truth: Truth | None):
        self.outs, self.rate, self.truth = outs, rate, truth
        self.evidence = outs.temp("evidence").open("w")
        self.masks = self.overlay = None
        self.sets: dict[str, int] = {}
        self.count = 0

    def write(self, frame: video.Frame, s: Segmentation) -> None:
        picture = np.asarray(overlay(frame.rgb, s, legend_rows=LEGEND_ROWS))  # (H + legend, max(W, legend), 3)
        if self.masks is None:
            h, w = s.labels.shape
            m, o = self.outs.temp("masks"), self.outs.temp("overlay")  # (their descriptors' paths: see Temp)
            self.masks = video.MaskWriter(m.target, w, h, self.rate, shown=m.final)
            self.overlay = video.H264Writer(o.target, picture.shape[1], picture.shape[0], self.rate, shown=o.final)
        self.masks.write(s.labels)
        self.overlay.write(picture)
        self.evidence.write(json.dumps({"frame": frame.index, "time": round(frame.time, 6), "set_id": s.set_id,
                                        "classes": [asdict(c) for c in s.classes]}) + "\n")
        self.sets[s.set_id] = self.sets.get(s.set_id, 0) + 1
        if self.truth:
            self.truth.add(s, frame.index)
        self.count += 1

    def close(self) -> None:
        self.evidence.close()
        for w in (self.masks, self.overlay):
            if w is not None:
                w.close()


def segment_video(path: Path, out_dir: Path, seg, batch_size: int | None = None, concurrency: int = 2,
                  truth_dir: Path | None = None, position: int = 1, on_frames=None,
                  sampling: video.Sampling | None = None, accept_short: bool = False) -> dict:
    """Segment one video into out_dir (see the module docstring); returns its summary. JobError (or
    video.VideoError) says why a video failed; its partial files are removed. `on_frames(n)` is told of
    the source frames done (decoded, sampled or not: an overall progress bar). Frames per request: see
    clients/video_requests.py (`batch_size` None: as many as the segmenter takes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sampling = sampling or video.Sampling()
    outs = Outputs(out_dir, path.stem)
    outs.sweep()  # what a stopped job left for this video
    truth = Truth(truth_dir, path.stem) if truth_dir else None
    meta = video.info(path)
    rate = sampling.rate(meta.rate)
    decoding = video.Decoding()
    timing = {"decode": 0.0, "wait": 0.0, "write": 0.0}
    plan: dict = {}  # frames per request and the frame size (video_requests.answers)
    t0 = time.perf_counter()
    sink = _Sink(outs, rate, truth)
    try:
        with tqdm(total=meta.frames or None, desc=path.name[:30], unit="frame", position=position, leave=False,
                  disable=None) as bar:
            done = 0  # source frames accounted for

            def advance(to: int) -> None:
                nonlocal done
                if to > done:
                    bar.update(to - done)
                    if on_frames:
                        on_frames(to - done)
                    done = to

            frames = video.frames(path, sampling, decoding, damage_ends=True)
            for frame, s in answers(frames, seg, batch_size=batch_size, concurrency=max(1, concurrency), timing=timing,
                                    plan=plan):
                t = time.perf_counter()
                sink.write(frame, s)
                timing["write"] += time.perf_counter() - t
                advance(frame.index + 1)
            advance(decoding.decoded)
        sink.close()
        short = decoding.shortfall()
        if short and not accept_short:
            raise JobError(f"{short}; `accept_short` writes the frames decoded")
        if short:
            log.warning("%s: %s; written, marked short (`accept_short`)", path, short)
        if truth and not short and (n := truth.count()) != decoding.decoded:
            raise JobError(f"the truth has {n} frames, the video {decoding.decoded}")
        seconds = time.perf_counter() - t0
        summary = {"video": str(path), "frames": sink.count, **decoding.describe(), "short": short is not None,
                   "shortfall": short, "sampling": sampling.describe(), "width": meta.width, "height": meta.height,
                   "fps": float(meta.rate), "output_fps": float(rate), "seconds": round(seconds, 3),
                   "frames_per_request": plan.get("frames_per_request"),
                   "frames_per_s": round(sink.count / seconds, 2), "model": seg.model, "set_ids": sorted(sink.sets),
                   "segmenter": seg.describe, "time_share": {k: round(v / seconds, 3) for k, v in timing.items()},
                   "class_lists": sink.sets, "truth": Truth.miou(truth.conf, truth.names) if truth else None,
                   "confusion": truth.conf.tolist() if truth else None}
        outs.commit(summary)
        return summary
    except BaseException:
        try:
            sink.close()
        except Exception:  # noqa: S110 (the half-written partial files are removed next)
            pass
        outs.discard()
        raise
    finally:
        seg.release()


# -- a job ----------------------------------------------------------------------------------------------
def collect_videos(paths: list[str | Path]) -> list[Path]:
    """Video files named, and those under folders named (recursively, sorted; mask videos, *.masks.mkv, are
    labels rather than pictures and are left out); names must be unique."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in video.VIDEO_EXTENSIONS
                            and not f.name.startswith(".") and not f.name.endswith(".masks.mkv"))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    stems: dict[str, Path] = {}
    for f in found:
        if f.stem in stems:
            raise JobError(f"two videos would write the same outputs: {stems[f.stem]} and {f} (rename one, or run "
                           "them into different output folders)")
        stems[f.stem] = f
    return found


def run_job(videos: list[Path], out_dir: Path, seg, batch_size: int | None = None, concurrency: int = 2,
            truth_dir: Path | None = None, sampling: video.Sampling | None = None, accept_short: bool = False,
            overwrite: bool = False) -> dict:
    """Segment videos one after the other (each with `concurrency` requests in flight); returns the job's
    summary: per video its summary or why it failed; finished videos skipped (video_outputs.pending_videos)."""
    if (batch_size is not None and batch_size < 1) or concurrency < 1:
        raise JobError(f"`batch_size` and `concurrency` must be >= 1, got {batch_size} and {concurrency}")
    todo, done, redo = pending_videos(videos, out_dir, wanted(seg, sampling, accept_short), overwrite)
    total = sum(_declared_frames(v) for v in todo)
    results, failures = {}, {}
    t0 = time.perf_counter()
    with tqdm(total=total or None, desc="all videos", unit="frame", position=0, disable=None) as overall:
        for v in todo:
            try:
                results[str(v)] = segment_video(v, out_dir, seg, batch_size=batch_size, concurrency=concurrency,
                                                truth_dir=truth_dir, on_frames=overall.update, sampling=sampling,
                                                accept_short=accept_short)
            except Exception as e:  # any error fails this video only (Ctrl-C stops the job)
                failures[str(v)] = str(e) if isinstance(e, JobError | video.VideoError) else f"{type(e).__name__}: {e}"
                log.error("%s failed: %s", v, failures[str(v)])
    return job_summary(results, failures, skipped=[str(v) for v in done], seconds=time.perf_counter() - t0,
                       redone=redo)


def _declared_frames(v: Path) -> int:
    """The frame count a video's container declares (0 if it says none or cannot be opened: the job reports
    that video when it gets to it)."""
    try:
        return video.info(v).frames
    except video.VideoError:
        return 0


def job_summary(results: dict, failures: dict, skipped: list[str], seconds: float,
                redone: dict[str, str] | None = None) -> dict:
    frames = sum(r["frames"] for r in results.values())
    conf = [np.array(r["confusion"]) for r in results.values() if r.get("confusion") is not None]
    names = None
    if conf:
        first = next(r for r in results.values() if r.get("confusion") is not None)
        names = list(first["truth"]["iou_per_class"])
    same = conf and all(c.shape == conf[0].shape for c in conf)
    return {"videos": len(results) + len(failures) + len(skipped), "segmented": len(results),
            "skipped": skipped, "redone": redone or {}, "failed": failures, "short": [
                v for v, r in results.items() if r.get("short")], "frames": frames, "seconds": round(seconds, 2),
            "frames_per_s": round(frames / seconds, 2) if seconds > 0 and frames else None,
            "miou": Truth.miou(sum(conf), names)["miou"] if same else None, "per_video": results}


def summary_text(s: dict) -> str:
    lines = [f"{s['videos']} video(s): {s['segmented']} segmented, {len(s['skipped'])} already done, "
             f"{len(s['failed'])} failed; {s['frames']} frames in {s['seconds']:.1f} s"
             + (f" ({s['frames_per_s']:.1f} frames/s)" if s["frames_per_s"] else "")]
    for v, why in s.get("redone", {}).items():
        lines.append(f"  redo {shown(v)}: {shown(why)}")
    for v, r in s["per_video"].items():
        miou = f", mIoU {r['truth']['miou']:.2f}%" if r.get("truth") and r["truth"]["miou"] is not None else ""
        lists = ", ".join(f"{k} x{n}" for k, n in r["class_lists"].items())
        sampled = (f" ({sampling_text(r['sampling'])}, of {r['decoded_frames']} decoded)"
                   if r.get("sampling") and r["frames"] != r.get("decoded_frames") else "")
        lines.append(f"  {shown(v)}: {r['frames']} frames{sampled}, {r['frames_per_s']:.1f} frames/s{miou}; "
                     f"class lists {lists}{_short_text(r)}")
    for v, why in s["failed"].items():
        lines.append(f"  FAILED {shown(v)}: {shown(why)}")
    if s["miou"] is not None:
        lines.append(f"  overall mIoU {s['miou']:.2f}%")
    return "\n".join(lines)


def _short_text(r: dict) -> str:
    """How a video written short says so on its line: against the declared count, else the damage that
    stopped it, else where its frames stop against its duration (containers that declare no count)."""
    if not r.get("short"):
        return ""
    if r["declared_frames"]:
        return f"; SHORT: {r['decoded_frames']} of {r['declared_frames']} frames"
    if r.get("damage"):
        return f"; SHORT: {r['decoded_frames']} frames, then damage"
    return f"; SHORT: {r['decoded_frames']} frames, stopping at {r['last_frame_time']:.2f} of {r['duration']:.2f} s"
