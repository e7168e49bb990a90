"""A video's output files and whether finished ones can stand: the rerun decision of a video job.

Kept apart from the job (clients/video_job.py) because the job on this machine and the one on Ray
(clients/ray_job.py) decide the same way before any video is segmented, and because what a summary must
say to count as done is its own question. Imports nothing of the job: the job and Ray import this.

A video is done when its four files exist and its summary (a JSON object) says it was made by the same
model, entirely with the class list that model serves now, with the same sampling, and, if it was
written short (`--accept-short`), that this run accepts short videos too. The model is compared by
what pins its answers: a served model by its name (the set id pins its class list and embedding, so the
address and protocol it was reached by do not matter: they stay in the summary for information), an
export in-process by its path and centroid set. Anything else (another list, a swap mid-video, another
model or sampling, a summary unreadable or ill-formed) redoes the video, saying why.
"""

from __future__ import annotations

import glob
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from dnc.core import video
from dnc.core.safe_files import Temp, remove_stale

log = logging.getLogger(__name__)

KINDS = (("masks", "masks.mkv"), ("overlay", "overlay.mp4"), ("evidence", "evidence.jsonl"),
         ("summary", "summary.json"))  # (kind, file name after NAME.)


@dataclass
class Outputs:
    """The four files of video NAME in `folder`, each written to a temporary created exclusively beside it
    (training/safe_files: never written through a link) and renamed when the video is whole, the summary
    last (what marks it done)."""

    folder: Path
    name: str
    files: dict[str, Path] = field(init=False)
    temps: dict[str, Temp] = field(init=False, default_factory=dict)

    def __post_init__(self):
        self.files = {kind: self.folder / f"{self.name}.{suffix}" for kind, suffix in KINDS}

    def temp(self, kind: str) -> Temp:
        """The temporary of `kind`, created at the first call."""
        if kind not in self.temps:
            self.temps[kind] = Temp(self.files[kind])
        return self.temps[kind]

    def done(self) -> bool:
        """All four files there, as files of their own (a link planted at a final name is not done: redone,
        the link replaced)."""
        return all(p.is_file() and not p.is_symlink() for p in self.files.values())

    def sweep(self) -> None:
        """Remove what a stopped job left for this video: its temporaries, and the .partial files of an
        older dnc (unlinked: a link's target is not touched)."""
        for path in self.files.values():  # (by exact name: video "a" must not touch video "a.b"'s files)
            remove_stale(self.folder, glob.escape(path.name))
            old = path.with_name(f".{path.name}.partial")
            try:
                old.unlink(missing_ok=True)
            except OSError as e:
                log.warning("cannot remove %s (an older dnc's partial file): %s", old, e)

    def commit(self, summary: dict) -> None:
        self.files["summary"].unlink(missing_ok=True)  # a redo stopped half-way must not look done
        for kind in ("masks", "overlay", "evidence"):
            if kind not in self.temps:
                raise FileNotFoundError(f"{self.files[kind]}: nothing was written")
            self.temps[kind].commit()
            del self.temps[kind]
        tmp = self.temp("summary")
        with tmp.open("w") as f:
            f.write(json.dumps(summary, indent=1))
        tmp.commit()  # last: what marks the video done
        del self.temps["summary"]

    def discard(self) -> None:
        for tmp in self.temps.values():
            tmp.discard()
        self.temps.clear()


def wanted(seg, sampling: video.Sampling | None = None, accept_short: bool = False) -> dict:
    """What outputs made now would record: the segmenter's model, the class list it serves now (asked once
    per job), the sampling; and whether this job accepts videos written short. A finished video whose
    summary says otherwise is redone."""
    return {"model": seg.model, "set_ids": [seg.set_id()], "sampling": (sampling or video.Sampling()).describe(),
            "accept_short": accept_short}


def identity(model) -> object:
    """What a rerun compares of a recorded model (see the module docstring): a served one without its URL."""
    if isinstance(model, dict) and "served" in model:
        return {"served": model["served"]}
    return model


FIELDS = {"set_ids": list, "model": dict, "sampling": dict}  # what a summary's compared fields must be


def read_summary(path: Path) -> tuple[dict | None, str | None]:
    """(the summary, None), or (None, why it cannot be used): unreadable, not JSON, not a JSON object, or a
    compared field of the wrong kind (all redo the video rather than stop the job)."""
    try:
        made = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # (UnicodeDecodeError is a ValueError)
        return None, f"its summary cannot be read ({type(e).__name__}: {e})"
    if not isinstance(made, dict):
        return None, f"its summary is {_kind(made)}, not a JSON object"
    for key, kind in FIELDS.items():
        if made.get(key) is not None and not isinstance(made[key], kind):
            return None, f"its summary's {key!r} is {_kind(made[key])}, not {_kind(kind())}"
    if not all(isinstance(s, str) for s in made.get("set_ids") or []):
        return None, "its summary's 'set_ids' are not all strings"
    return made, None


def _kind(value) -> str:
    for kind, text in ((bool, "true or false"), (dict, "a JSON object"), (list, "a list"), (str, "a string"),
                       (int | float, "a number")):
        if isinstance(value, kind):
            return text
    return "null"


def redo_reason(outs: Outputs, want: dict) -> str | None:
    """None when the finished outputs `outs` are what `want` (see wanted) asks for; else why not."""
    made, bad = read_summary(outs.files["summary"])
    if made is None:
        return bad
    if made.get("short") and not want.get("accept_short"):  # (first: this is why the redo will fail)
        return (f"written short with `accept_short` ({made.get('shortfall') or 'frames missing'}); without "
                "`accept_short` a short video fails")
    if made.get("set_ids") != want["set_ids"]:  # (next: a swap is the usual reason, and says the most)
        lists = made.get("set_ids") or []
        was = (f"list {lists[0]}" if len(lists) == 1 else f"lists {', '.join(lists)} (a swap mid-video)" if lists
               else "an unrecorded list")
        return f"made with {was}, now {want['set_ids'][0]}"
    if identity(made.get("model")) != identity(want["model"]):
        return f"made by {model_text(made.get('model'))}, now {model_text(want['model'])}"
    if made.get("sampling") != want["sampling"]:
        return f"made with {sampling_text(made.get('sampling'))}, now {sampling_text(want['sampling'])}"
    return None


def model_text(m: dict | None) -> str:
    if not m:
        return "an unrecorded model (an older dnc)"
    if "served" in m:
        return f"{m['served']} at {m.get('url')}"
    return f"{m.get('export')} in-process" + (f" with {m['centroids']}" if m.get("centroids") else "")


def sampling_text(s: dict | None) -> str:
    if not s:
        return "unrecorded sampling"
    if (fps := s.get("fps")) is not None:
        return f"frames sampled at {fps:g} fps" if isinstance(fps, int | float) else f"frames sampled at {fps} fps"
    return "every frame" if s.get("every", 1) == 1 else f"one frame in {s.get('every')}"


def pending_videos(videos: list[Path], out_dir: Path, want: dict, overwrite: bool = False
                   ) -> tuple[list[Path], list[Path], dict[str, str]]:
    """(videos to do, videos already done in out_dir as `want` asks, {video: why it is redone} for those
    done otherwise, or all done ones with `overwrite`)."""
    todo, done, redo = [], [], {}
    for v in videos:
        outs = Outputs(out_dir, v.stem)
        if not outs.done():
            todo.append(v)
            continue
        why = "`overwrite`" if overwrite else redo_reason(outs, want)
        if why is None:
            done.append(v)
        else:
            redo[str(v)] = why
            todo.append(v)
    for v in done:
        log.info("skipping %s: done in %s", v, out_dir)
    for v, why in redo.items():
        log.info("redo %s: %s", v, why)
    return todo, done, redo
