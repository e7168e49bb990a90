"""`dnc segment` on images as a resumable job: each answer written as it arrives, finished pictures skipped.

Each picture gets NAME.labels.png, NAME.overlay.png and NAME.evidence.json in the output folder, NAME its
file stem (stem-2, stem-3... for later files of the same stem, in the order the files are listed, so the
same on every run). The three are written (clients/seg_results.write: atomically, never through a link) as
soon as the picture's request returns and the answer is then dropped: memory is bounded by one request.

Reruns: a picture is done when its three files exist (regular files, not links) and its evidence records
the same source path and the class list (set id) the segmenter answers with now; a rerun into the same
folder skips those and redoes the others (a list swapped since, another picture of the same name, a run
stopped before it). `overwrite` redoes every picture.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dnc.clients.printable import shown
from dnc.clients.seg_results import Segmentation, table, write
from dnc.core import formats as F
from dnc.core.images import read_picture

log = logging.getLogger(__name__)

KINDS = (("labels", "png"), ("overlay", "png"), ("evidence", "json"))


def output_names(files: list[Path]) -> dict[str, str]:
    """source path -> NAME: the file stem, or stem-2, stem-3... for later files of the same stem."""
    used: set[str] = set()
    names = {}
    for f in files:
        stem, name, n = f.stem, f.stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        names[str(f)] = name
    return names


class ImageJob:
    """The pictures of one `dnc segment` run: which are done already, writing each answer as it arrives,
    the failures and why, and the summary at the end."""

    def __init__(self, files: list[Path], out: Path, preprocessing: dict, as_json: bool = False,
                 abstain: bool = True):
        self.files, self.out, self.prep, self.as_json, self.abstain = files, out, preprocessing, as_json, abstain
        self.names = output_names(files)
        self.failed: list[tuple[str, str]] = []  # (path, reason): unreadable, or refused by the segmenter
        self.rows: list[Segmentation] = []  # what the table shows: the answers without their pixels
        self.done: list[str] = []  # skipped as done by an earlier run
        self.set_id: str | None = None

    def paths(self, source: str) -> dict[str, Path]:
        name = self.names[source]
        return {kind: self.out / f"{name}.{kind}.{ext}" for kind, ext in KINDS}

    def pending(self, set_id: Callable[[], str], overwrite: bool = False) -> list[Path]:
        """The files to segment: all with `overwrite`; otherwise those not done (see the module's text).
        `set_id()` (the class list served now) is asked only when some picture has its three files."""
        if overwrite:
            return list(self.files)
        todo = []
        for f in self.files:
            paths = self.paths(str(f))
            if not all(p.is_file() and not p.is_symlink() for p in paths.values()):  # a link: rewritten
                todo.append(f)
                continue
            if self.set_id is None:
                self.set_id = set_id()
            try:
                ev = json.loads(paths["evidence"].read_text())
                made = (ev.get("source"), ev.get("set_id"))
                redo_abstain = ev.get("abstain", True) != self.abstain  # made with abstention on, now off, or back
            except (OSError, ValueError, AttributeError) as e:  # damaged: redone
                log.info("%s: redone: %s unreadable (%s)", shown(str(f)), paths["evidence"], e)
                todo.append(f)
                continue
            if made == (str(f), self.set_id) and not redo_abstain:
                self.done.append(str(f))
            elif made == (str(f), self.set_id):
                log.info("%s: redone: made with abstention %s, now %s", shown(str(f)),
                         "off" if self.abstain else "on", "on" if self.abstain else "off")
                todo.append(f)
            else:
                log.info("%s: redone: %s was made from %s with class list %s (now %s from class list %s)",
                         shown(str(f)), paths["evidence"].name, shown(str(made[0])), shown(str(made[1])),
                         shown(str(f)), shown(self.set_id))
                todo.append(f)
        if self.done:
            log.info("%d of %d picture(s) already done in %s, skipped", len(self.done), len(self.files), self.out)
        return todo

    def write(self, seg: Segmentation) -> None:
        """Write one answer's three files now; keep only what the table needs."""
        paths = write(seg, read_picture(seg.source, self.prep["color"], self.prep), self.out, self.names[seg.source])
        if self.as_json:
            print(json.dumps({**seg.evidence(), "files": {k: str(v) for k, v in paths.items()}}), flush=True)
        self.rows.append(dataclasses.replace(seg, labels=np.broadcast_to(np.uint8(0), seg.labels.shape), maps={}))

    def fail(self, source: str, reason: str) -> None:
        self.failed.append((source, reason))

    def summary(self) -> str:
        parts = [f"{len(self.rows)} written", f"{len(self.done)} skipped as done"
                 + (f" (same source and class list {shown(self.set_id)}; `overwrite` redoes them)"
                    if self.done else ""), f"{len(self.failed)} failed"]
        return f"{', '.join(parts)} of {len(self.files)} picture(s); outputs in {self.out}"

    def report(self, text: Callable[[str], str] = str) -> int:
        """Print the table (without --json), each failure and the summary, library text passed through `text`
        (the command line shows parameters as its flags: clients/flags.py); 1 when some picture failed."""
        if self.rows and not self.as_json:
            print(table(self.rows))
            print(f"wrote {len(self.rows)} x (labels PNG, overlay PNG, evidence JSON) to {self.out}")
        for path, reason in self.failed:
            print(f"dnc segment: failed {shown(path)}: {text(shown(reason))}", file=sys.stderr)
        print(f"dnc segment: {text(self.summary())}", file=sys.stderr)
        return 1 if self.failed else 0

    def stopped(self, error: Exception) -> str:
        """The message of a run stopped by an error no retry overcame: what was kept, and how to go on."""
        left = len(self.files) - len(self.rows) - len(self.done) - len(self.failed)
        return (f"{error}; stopped with {left} picture(s) not segmented ({self.summary()}): run the same "
                "command again to do the rest (the pictures written are skipped)")


def served_set_id(client) -> str:
    """The class list a served segmenter answers with now: one blank picture at its trained size, asking for
    the set id only (retried as image requests are)."""
    size, chans = int(client.preprocessing["image_size"]), int(client.preprocessing["channels"])
    blank = np.zeros((1, size, size, chans), np.uint8)
    out = client.retried(lambda: client.infer(blank, (F.SET_ID,), F.PIXELS), ["a blank picture (the set id)"])
    v = out[F.SET_ID].reshape(-1)[0]
    return v.decode() if isinstance(v, bytes) else str(v)
