"""How many pictures one request carries, and what becomes of a picture larger than the served model takes.

A served DNC model refuses a request whose pictures hold more than `max_pixels` pixels in all, and any one
picture of more than `max_pixels` (serving/python_model.py; `dnc repo build --max-pixels`, by default 4.2
million for a segmenter, 16.8 million for a classifier). The client reads that budget from the server, not
from a figure of its own: the entry model's config parameter `max_pixels`, or, for a repository built before
the entry carried it, its prep step's (`served_budget`). Then each request carries as many pictures as fit
(`per_request`): 4 frames of 1280x720 or 2 of 1920x1080 under 4.2 million, never more than the model's max
batch nor a --batch-size given.

A picture above the per-picture limit is refused before it is sent, with a message naming it, its size,
the limit and --downscale (`too_large`). With --downscale it is sent at the largest size within the limit,
aspect kept (`fitted`, `downscaled`), and its answer is brought back to the picture's own size (`restored`):
labels and sub-centroid ids by nearest neighbour, because ids are categories (halfway between class 2 and
class 8 lies no class 5, and a blend would invent labels along every boundary); score and margin maps
bilinearly; each class's pixel count and share recounted on the full-size labels, so evidence and overlays
describe the picture as it is. Mean scores are those of the pixels the model saw.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from io import BytesIO

import numpy as np
from PIL import Image

from dnc.clients.seg_results import Segmentation
from dnc.core import formats as F

log = logging.getLogger(__name__)

PARAMETER = "max_pixels"  # the config parameter that carries the budget (serving/repository.configs)
FLAG = "`downscale`"  # the parameter that sends them downscaled (DNCClient, ServerSegmenter)


def served_budget(config_of, model: str) -> int | None:
    """Pixels one request (and one picture) may carry on served `model`: the entry model's `max_pixels`
    parameter, else its prep step's (repositories built before the entry carried it); None when neither
    says. `config_of(name)` is the model's config in Triton's JSON form (it may raise: that model is
    skipped)."""
    for name in (model, F.family(model).prep):
        try:
            value = config_of(name).get("parameters", {}).get(PARAMETER, {}).get("string_value", "")
        except Exception as e:  # not reachable, not served: try the next
            log.debug("no %s from the config of %s: %s", PARAMETER, name, e)
            continue
        if value.isdigit() and int(value) > 0:
            if name != model:
                log.info("model %s carries no %s parameter (a repository built before it did); using its prep "
                         "step's: %s", model, PARAMETER, value)
            return int(value)
    return None


def per_request(max_pixels: int, pixels_each: int, cap: int) -> int:
    """Pictures of `pixels_each` pixels that one request carries: as many as fit `max_pixels`, at most `cap`
    (the model's max batch, or --batch-size), at least 1."""
    return max(1, min(cap, max_pixels // max(1, pixels_each)))


def fitted(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest (width, height) of the same aspect (to within a pixel) holding at most max_pixels."""
    if width * height <= max_pixels:
        return width, height
    s = math.sqrt(max_pixels / (width * height))
    w, h = max(1, int(width * s)), max(1, int(height * s))
    while w * h > max_pixels:  # float rounding: take a pixel off the longer side
        w, h = (w - 1, h) if w >= h else (w, h - 1)
    return w, h


def too_large(what: str, width: int, height: int, max_pixels: int, model: str) -> str:
    """The refusal of a picture above the per-picture limit: the picture, its size, the limit, the flag."""
    w, h = fitted(width, height, max_pixels)
    return (f"{what} is {width}x{height} ({width * height / 1e6:.1f} million pixels), more than the "
            f"{max_pixels / 1e6:.1f} million the served model {model!r} takes per picture: pass {FLAG} to send "
            f"it downscaled to {w}x{h} (its labels are brought back to {width}x{height})")


def downscaled(picture: np.ndarray, max_pixels: int) -> np.ndarray:
    """A (H, W, C) uint8 picture at the largest size within max_pixels, aspect kept (bilinear, which Pillow
    widens to average every source pixel when shrinking); the picture itself when it fits."""
    h, w = picture.shape[:2]
    size = fitted(w, h, max_pixels)
    if size == (w, h):
        return picture
    im = Image.fromarray(picture[:, :, 0] if picture.shape[2] == 1 else picture)
    out = np.asarray(im.resize(size, Image.BILINEAR))
    return out[:, :, None] if out.ndim == 2 else out


def png(picture: np.ndarray) -> bytes:
    """A (H, W, C) uint8 picture as PNG bytes (a downscaled picture sent as `--input encoded`)."""
    buf = BytesIO()
    Image.fromarray(picture[:, :, 0] if picture.shape[2] == 1 else picture).save(buf, "PNG")
    return buf.getvalue()


def restored(seg: Segmentation, height: int, width: int) -> Segmentation:
    """The answer for a downscaled picture at the picture's own size (see the module's text); `sent_size`
    records the size the model saw."""
    sent = seg.labels.shape
    if sent == (height, width):
        return seg
    labels = _resize(seg.labels, width, height, Image.NEAREST)
    maps = {n: _resize(m, width, height, Image.NEAREST if m.dtype == np.uint8 else Image.BILINEAR)
            for n, m in seg.maps.items()}
    counts = np.bincount(labels.reshape(-1), minlength=256)  # (every uint8 label: classes, then unknown at 255)
    classes = [dataclasses.replace(c, pixels=int(counts[c.class_id]), fraction=float(counts[c.class_id]) / labels.size)
               for c in seg.classes if counts[c.class_id] > 0]
    classes.sort(key=lambda c: -c.pixels)
    return dataclasses.replace(seg, labels=labels, classes=classes, maps=maps, sent_size=(int(sent[0]), int(sent[1])),
                               unknown_pixels=int(counts[F.UNKNOWN_LABEL]))


def _resize(a: np.ndarray, width: int, height: int, how) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize((width, height), how), a.dtype)  # L or F
