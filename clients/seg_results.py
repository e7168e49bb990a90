"""A segmentation answer as the user sees it: labels per pixel and each present class's evidence; its files.

`segmentations` turns the head's outputs (from the server, or from the export run in-process) into
Segmentation objects; `write` saves one as three files beside each other:
    NAME.labels.png     class id per pixel, a palette PNG (opens as a coloured map, reads back as ids)
    NAME.overlay.png    the picture with each class's colour blended in (background left as it is), and a
                        legend strip below it: the classes present, their colours and pixel shares
    NAME.evidence.json  class list id, and per class present: pixel fraction, mean score, dominant
                        sub-centroid and its anchored exemplar (image id and name, pixel y and x); the
                        pixels labelled unknown (formats.UNKNOWN_LABEL: no class's threshold accepts them)
Unknown pixels are drawn in UNKNOWN_COLOUR in both pictures and named in the legend.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dnc.clients.printable import shown
from dnc.core import formats as F
from dnc.core.errors import InputError
from dnc.core.safe_files import Temp, remove_stale

BACKGROUND = "background"  # a class of this name is left uncoloured in overlays
UNKNOWN = "unknown"  # what pixels labelled formats.UNKNOWN_LABEL are called
UNKNOWN_COLOUR = (255, 255, 255)  # white: no class colour is white
_BASE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
         (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
         (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
         (0, 0, 128), (128, 128, 128)]  # 20 distinct colours (Sasha Trubetskoy's list), then repeated darker


@dataclass
class ClassEvidence:
    """One class present in a picture, and why: its pixels' share and score, and the sub-centroid most of
    them matched, with the real training pixel that sub-centroid is anchored to (when anchored)."""
    class_id: int
    label: str
    pixels: int
    fraction: float  # of the picture's pixels
    mean_score: float  # mean cosine of its pixels to their winning sub-centroid
    subcentroid: int  # the sub-centroid winning most of its pixels
    exemplar_id: int  # id of the training image that sub-centroid is anchored to; -1 when not anchored
    exemplar: str  # that image's path or name; "" when not anchored
    exemplar_yx: tuple[int, int]  # the anchoring pixel; (-1, -1) when not anchored


@dataclass
class Segmentation:
    source: str
    set_id: str  # the class list that answered
    labels: np.ndarray  # (H, W) uint8 class ids at the picture's own size
    class_names: list[str]  # index = class id
    classes: list[ClassEvidence]  # the classes present, most pixels first
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # pixel_subcentroid/score/margin when asked
    sent_size: tuple[int, int] | None = None  # (H, W) the model saw, when downscaled (clients/sizing.py)
    unknown_pixels: int = 0  # pixels labelled formats.UNKNOWN_LABEL (no class's threshold accepts them)
    abstain: bool = True  # whether the request let the set's thresholds answer unknown

    @property
    def unknown_fraction(self) -> float:
        return self.unknown_pixels / max(1, self.labels.size)

    def evidence(self) -> dict:
        h, w = self.labels.shape
        return {"source": self.source, "set_id": self.set_id, "height": h, "width": w,
                **({"sent_height": self.sent_size[0], "sent_width": self.sent_size[1]} if self.sent_size else {}),
                "class_names": self.class_names, "classes": [asdict(c) for c in self.classes],
                "abstain": self.abstain, "unknown_pixels": self.unknown_pixels,
                "unknown_fraction": self.unknown_fraction}


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def segmentations(out: dict[str, np.ndarray], sources: list[str], abstain: bool = True) -> list[Segmentation]:
    """The head's outputs for a batch (formats.SEG_HEAD_OUTPUTS, SEG_EVIDENCE_OUTPUTS) -> one Segmentation per
    picture; the pixel maps are kept when they were asked for (non-empty). `abstain`: whether the request
    left abstention on (recorded in the evidence)."""
    result = []
    set_ids = out[F.SET_ID].reshape(len(sources), -1)[:, 0]
    for i, source in enumerate(sources):
        labels = out[F.LABELS][i]
        names = [_text(v) for v in out[F.CLASS_LABEL][i]]
        counts = out[F.CLASS_PIXELS][i]
        present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
        classes = [ClassEvidence(class_id=c, label=names[c], pixels=int(counts[c]),
                                 fraction=float(counts[c]) / labels.size, mean_score=float(out[F.CLASS_SCORE][i, c]),
                                 subcentroid=int(out[F.CLASS_SUBCENTROID][i, c]),
                                 exemplar_id=int(out[F.CLASS_EXEMPLAR_ID][i, c]),
                                 exemplar=_text(out[F.CLASS_EXEMPLAR][i, c]),
                                 exemplar_yx=tuple(int(v) for v in out[F.CLASS_EXEMPLAR_YX][i, c])) for c in present]
        maps = {n: out[n][i] for n in F.MAP_OUTPUTS if n in out and out[n][i].size}
        unknown = int(out[F.UNKNOWN_PIXELS].reshape(-1)[i]) if F.UNKNOWN_PIXELS in out else 0
        result.append(Segmentation(source=source, set_id=_text(set_ids[i]), labels=labels, class_names=names,
                                   classes=classes, maps=maps, unknown_pixels=unknown, abstain=abstain))
    return result


def palette(class_names: list[str]) -> list[tuple[int, int, int]]:
    """A colour per class id: black for a background class, then distinct colours in a fixed order."""
    colours, k = [], 0
    for name in class_names:
        if name == BACKGROUND:
            colours.append((0, 0, 0))
            continue
        r, g, b = _BASE[k % len(_BASE)]
        dim = 0.6 ** (k // len(_BASE))
        colours.append((int(r * dim), int(g * dim), int(b * dim)))
        k += 1
    return colours


def colour_table(class_names: list[str]) -> np.ndarray:
    """(256, 3) uint8: the colour of every label value, UNKNOWN_COLOUR at formats.UNKNOWN_LABEL."""
    table = np.zeros((256, 3), np.uint8)
    table[:len(class_names)] = palette(class_names)
    table[F.UNKNOWN_LABEL] = UNKNOWN_COLOUR
    return table


def label_image(seg: Segmentation) -> Image.Image:
    """The labels as a palette ("P") image: pixel values are class ids (formats.UNKNOWN_LABEL: unknown)."""
    im = Image.fromarray(np.ascontiguousarray(seg.labels), "P")
    im.putpalette(colour_table(seg.class_names).reshape(-1).tolist())
    return im


def blend(picture: np.ndarray, seg: Segmentation, alpha: float = 0.5) -> np.ndarray:
    """The picture (H, W, C uint8) with each non-background class's colour blended in at `alpha`: (H, W, 3)."""
    rgb = np.repeat(picture, 3, axis=2) if picture.shape[2] == 1 else picture
    if rgb.shape[:2] != seg.labels.shape:
        raise InputError(f"{seg.source}: the picture is {rgb.shape[1]} x {rgb.shape[0]} but its labels are "
                         f"{seg.labels.shape[1]} x {seg.labels.shape[0]}")
    colours = colour_table(seg.class_names).astype(np.float32)[seg.labels]  # (H, W, 3)
    coloured = np.ones(256, bool)
    coloured[:len(seg.class_names)] = [n != BACKGROUND for n in seg.class_names]
    keep = coloured[seg.labels][..., None]  # (H, W, 1): every class but background, and unknown
    out = np.where(keep, (1 - alpha) * rgb.astype(np.float32) + alpha * colours, rgb.astype(np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def overlay(picture: np.ndarray, seg: Segmentation, alpha: float = 0.5, legend_rows: int | None = None) -> Image.Image:
    """The blended picture with a legend strip below it: a swatch, the label and the pixel share of each
    class present, most pixels first. The picture keeps its pixels at the top left (overlay pixel (y, x) is
    picture pixel (y, x)); a picture narrower than the legend needs is padded on the right. `legend_rows`
    fixes the strip's height (a video's frames must keep one size, whatever their classes): classes that do
    not fit are counted as "+N more"; None gives every class present a place."""
    top = blend(picture, seg, alpha)
    h, w = top.shape[:2]
    strip = legend(seg, w, legend_rows)
    canvas = Image.new("RGB", (max(w, strip.width), h + strip.height), LEGEND_BACKGROUND)
    canvas.paste(Image.fromarray(top, "RGB"), (0, 0))
    canvas.paste(strip, (0, h))
    return canvas


LEGEND_BACKGROUND = (32, 32, 32)
LEGEND_MIN_WIDTH = 160  # pixels: room for one entry beside a small picture (FashionScenes are 64 x 64)


def _font(width: int):
    size = int(np.clip(width / 40, 10, 24))  # legible on a 64-pixel scene and on a 1080p frame
    try:
        return ImageFont.load_default(size=size), size
    except (TypeError, OSError):  # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default(), 11


def legend(seg: Segmentation, width: int, rows: int | None = None) -> Image.Image:
    """A strip naming the classes present with their colours: entries flow left to right and wrap; at least
    LEGEND_MIN_WIDTH wide, its height even (H.264 frames need even sides)."""
    width = max(width, LEGEND_MIN_WIDTH)
    font, size = _font(width)
    pad, line = max(2, size // 3), size + max(4, size // 2)
    colours = palette(seg.class_names)
    entries = [(colours[c.class_id], f"{c.label} {c.fraction:.0%}") for c in seg.classes if c.label != BACKGROUND]
    if seg.unknown_pixels:
        entries.append((UNKNOWN_COLOUR, f"{UNKNOWN} {seg.unknown_fraction:.0%}"))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    spans = [size + pad + int(probe.textlength(text, font=font)) + 2 * pad for _, text in entries]
    placed: list[tuple[int, int, int]] = []  # (entry, row, x)
    row, x = 0, pad
    for i, span in enumerate(spans):
        if x > pad and x + span > width:
            row, x = row + 1, pad
        placed.append((i, row, x))
        x += span
    n_rows = max(1, row + 1) if rows is None else rows
    if rows is not None and len(placed) and placed[-1][1] >= rows:  # keep room for "+N more" on the last row
        more_w = int(probe.textlength("+99 more", font=font)) + 2 * pad
        placed = [p for p in placed if p[1] < rows - 1 or (p[1] == rows - 1 and p[2] + spans[p[0]] + more_w <= width)]
    height = n_rows * line + pad
    strip = Image.new("RGB", (width, height + height % 2), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(strip)
    for i, r, x0 in placed:
        y0 = pad + r * line
        draw.rectangle([x0, y0, x0 + size - 1, y0 + size - 1], fill=entries[i][0], outline=(255, 255, 255))
        draw.text((x0 + size + pad, y0), entries[i][1], fill=(255, 255, 255), font=font)
    if len(placed) < len(entries):
        r = n_rows - 1
        x0 = max((x0 + spans[i] for i, rr, x0 in placed if rr == r), default=pad)
        draw.text((x0, pad + r * line), f"+{len(entries) - len(placed)} more", fill=(255, 255, 255), font=font)
    if not entries:
        draw.text((pad, pad), "no class", fill=(255, 255, 255), font=font)
    return strip


def write(seg: Segmentation, picture: np.ndarray, out_dir: Path, name: str) -> dict[str, Path]:
    """Write NAME.labels.png, NAME.overlay.png and NAME.evidence.json into out_dir, each atomically and never
    through a link (training/safe_files: a temporary created exclusively, renamed onto the final name; a
    link there is replaced, its target untouched). Temporaries a stopped run left are removed first (once
    per folder and process)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if out_dir not in _swept:
        remove_stale(out_dir)
        _swept.add(out_dir)
    paths = {kind: out_dir / f"{name}.{kind}.{ext}" for kind, ext in
             (("labels", "png"), ("overlay", "png"), ("evidence", "json"))}
    writers = {"labels": lambda f: label_image(seg).save(f, "PNG"),
               "overlay": lambda f: overlay(picture, seg).save(f, "PNG"),
               "evidence": lambda f: f.write(json.dumps(seg.evidence(), indent=1).encode())}
    for kind, path in paths.items():
        tmp = Temp(path)
        try:
            with tmp.open("wb") as f:
                writers[kind](f)
            tmp.commit()
        finally:
            tmp.discard()
    return paths


_swept: set[Path] = set()  # output folders whose stale temporaries this process removed


def table(segs: list[Segmentation], top: int = 3) -> str:
    """One row per picture: size, class list and its largest classes with their evidence."""
    sources = [shown(s.source) for s in segs]  # names from files: control characters escaped
    width = min(40, max([len(s) for s in sources] + [5]))
    head = f"{'image':<{width}}  {'size':>9}  classes (share, mean score, sub-centroid)"
    rows = [head, "-" * len(head)]
    for s, source in zip(segs, sources, strict=True):
        src = source if len(source) <= width else "..." + source[-width + 3:]
        h, w = s.labels.shape
        parts = [f"{shown(c.label)} {c.fraction:.0%} {c.mean_score:.2f} #{c.subcentroid}" for c in s.classes[:top]]
        more = f" +{len(s.classes) - top}" if len(s.classes) > top else ""
        unknown = f"; {UNKNOWN} {s.unknown_fraction:.0%}" if s.unknown_pixels else ""
        rows.append(f"{src:<{width}}  {f'{w}x{h}':>9}  {', '.join(parts)}{more}{unknown}")
    rows.append(f"{len(segs)} image(s), class list {', '.join(sorted({s.set_id for s in segs}))}")
    return "\n".join(rows)
