"""A model's preprocessing: described as data, and the one code that executes the description.

The description (`describe`) travels with the weights: in the export's manifest, in embed.onnx's metadata
and in the served entry model's config. Everything that turns an image into a graph input executes it
with this module: training's file reader (core/images.py), `dnc centroids`, the clients in-process,
and the server's prep model for uint8 pixels and PNG/JPEG bytes (serving/repository.py copies this file
beside it). So it imports numpy and PIL only, nothing of the project.

Steps, for a picture of any size (a file, decoded bytes, or uint8 pixels H x W [x C]):
    color:     convert to "L" (gray) or "RGB" (PIL's conversion, ITU-R 601-2 luma for RGB -> L)
    resize:    "short_side": the short side to image_size (bilinear), then a centre crop image_size^2
               "none": the picture's own size (segmenters: labels come back at that size)
    normalise: ((pixel * scale) - mean[c]) / std[c] in float32, layout NCHW
Refusals (ImageError, naming the image and the limit) come before any pixel is decoded or resized:
an empty or too large picture, a too thin one under "short_side", uint8 pixels with a channel count other
than 1 or 3, a format other than PNG or JPEG for bytes, truncated or corrupt bytes, and bytes whose
decoding costs far more than their pixels (check_cost, a scan of the bytes before PIL reads them: JPEG
scans and marker segments, PNG chunks and metadata size); decoding itself stops after DECODE_SECONDS.
PNG and JPEG files in any mode (gray, RGB, RGBA, palette, 16-bit, CMYK) are first turned upright by their
EXIF orientation and 16-bit gray is scaled to 8 bits (upright_8bit),
then converted to the model's colour as PIL converts.
"""

from __future__ import annotations

import io
import re
import struct
import time
from typing import NamedTuple

import numpy as np
from PIL import Image

ENCODED_FORMATS = ("PNG", "JPEG")
SERVED_MAX_PIXELS = {"classification": 4096 * 4096, "segmentation": 2048 * 2048}  # per picture from a client
MAX_ASPECT = 32.0  # longer side / shorter side under "short_side": a thinner one is enlarged into a huge one


MAX_SCANS = 100  # JPEG scans (SOS): libjpeg's progressive files have 10 (6 gray); each scan walks the whole picture
MAX_SEGMENTS = 1000  # JPEG marker segments, PNG chunks other than IDAT: PIL spends a Python step on each
MAX_METADATA_BYTES = 8 * 2**20  # JPEG APPn/COM, PNG ancillary chunks: ICC, EXIF, XMP are well under 1 MB
MAX_IDAT = 100_000  # PNG IDAT chunks, at most 1000 + one per row + one per KB of raw pixels
DECODE_SECONDS = 10.0  # decoding one picture (a 50-million-pixel photo decodes in about 1 s)
DECODE_BLOCK = 16384  # bytes handed to the decoder at a time: the clock is read between blocks
RE_ENCODE = "re-encode it as a baseline JPEG or a plain PNG (e.g. PIL: Image.open(f).save('out.png'))"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")  # not stuffing (FF00), fill (FFFF) or restart (FFD0-D7)


class ImageError(ValueError):
    """A picture that cannot be preprocessed; the message names it and the problem."""


def _costly(what: str, found: str, limit: str) -> ImageError:
    return ImageError(f"{what} {found}, beyond the {limit} accepted (its decoding would cost far more than its "
                      f"pixels are worth); {RE_ENCODE}")


def check_cost(data: bytes, what: str = "image") -> None:
    """Refuse PNG or JPEG bytes whose decoding costs far more than their pixels, from a scan of the bytes
    before PIL reads them: a JPEG of more than MAX_SCANS scans or MAX_SEGMENTS marker segments, a PNG of
    more than MAX_SEGMENTS chunks besides IDAT or more IDAT chunks than its size needs, and either with more
    than MAX_METADATA_BYTES of metadata. Other formats pass unscanned. Costs one pass over the bytes in C
    (JPEG) or at most MAX_SEGMENTS + MAX_IDAT steps (PNG)."""
    if data[:8] == PNG_SIGNATURE:
        _png_cost(data, what)
    elif data[:2] == b"\xff\xd8":
        _jpeg_cost(data, what)


def _jpeg_cost(data: bytes, what: str) -> None:
    scans = segments = metadata = 0
    pos = 2
    while (m := _JPEG_MARKER.search(data, pos)) is not None:
        code, pos = data[m.start() + 1], m.end()
        if code == 0xD9:  # EOI: what follows (a phone's preview pictures) is not decoded
            return
        if code == 0xD8 or code == 0x01 or pos + 2 > len(data):  # SOI, TEM: no length
            continue
        length = int.from_bytes(data[pos:pos + 2], "big")
        if code == 0xDA:
            scans += 1
            if scans > MAX_SCANS:
                raise _costly(what, f"is a JPEG of more than {MAX_SCANS} scans", f"{MAX_SCANS} scans")
        else:
            segments += 1
            if segments > MAX_SEGMENTS:
                raise _costly(what, f"is a JPEG of more than {MAX_SEGMENTS} marker segments",
                              f"{MAX_SEGMENTS} segments")
        if 0xE0 <= code <= 0xEF or code == 0xFE:  # APPn, COM
            metadata += length
            if metadata > MAX_METADATA_BYTES:
                raise _costly(what, f"holds more than {MAX_METADATA_BYTES // 2**20} MB of JPEG metadata (APPn, COM)",
                              f"{MAX_METADATA_BYTES // 2**20} MB")
        pos += length


def _png_cost(data: bytes, what: str) -> None:
    pos, others, metadata, idat, idat_limit, animated = 8, 0, 0, 0, MAX_SEGMENTS, False
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = pos + 8
        if kind == b"IHDR" and body + 8 <= len(data):
            w, h = struct.unpack_from(">II", data, body)
            idat_limit = min(MAX_IDAT, MAX_SEGMENTS + h + w * h // 256)  # a chunk a row, or per KB of 4-byte pixels
        pos += 12 + length
        if kind == b"IDAT":
            idat += 1
            if idat > idat_limit:
                raise _costly(what, f"is a PNG of more than {idat_limit} IDAT chunks for its size",
                              f"{idat_limit} IDAT chunks")
            continue
        if kind == b"IEND" or (kind == b"fcTL" and idat and animated):  # PIL stops at an APNG's second frame
            return
        if kind == b"acTL" and body + 4 <= len(data):  # an APNG: its frame count
            animated = struct.unpack_from(">I", data, body)[0] > 1
        others += 1
        if others > MAX_SEGMENTS:
            raise _costly(what, f"is a PNG of more than {MAX_SEGMENTS} chunks besides IDAT", f"{MAX_SEGMENTS} chunks")
        if kind[0] & 0x20:  # ancillary (lower-case first letter): text, ICC, EXIF, private
            metadata += length
            if metadata > MAX_METADATA_BYTES:
                raise _costly(what, f"holds more than {MAX_METADATA_BYTES // 2**20} MB of PNG ancillary chunks",
                              f"{MAX_METADATA_BYTES // 2**20} MB")


class _Clocked(io.BytesIO):
    """Bytes PIL decodes from, a block at a time; a read past `deadline` stops the decoding."""
    deadline = None
    what = "image"

    def read(self, size: int | None = -1) -> bytes:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise ImageError(f"{self.what}: decoding took more than {DECODE_SECONDS:.0f} s, the limit for one "
                             f"picture; {RE_ENCODE}")
        return super().read(size)


def open_bytes(data: bytes, what: str = "image", formats: tuple[str, ...] | None = None) -> Image.Image:
    """Image bytes -> a PIL image whose header is read, its pixels not yet decoded (`load` decodes them under
    the time limit); check_cost first. PIL's errors for crafted bytes propagate."""
    check_cost(data, what)
    fp = _Clocked(data)
    fp.what = what
    return Image.open(fp, formats=formats)


FORMULA = "((pixel / 255) - mean[c]) / std[c]"
CLASSIFICATION = "classification"  # the task names core/tasks.py describes (this file cannot import it)


class Preprocessing(NamedTuple):
    """What turns a picture into a graph input, typed: the description that travels with the weights.

    Artefacts hold it as a JSON object (`to_dict`: the manifest, embed.onnx's metadata, the served entry
    model's config); `from_dict` reads it back, older forms included. Everything here executes it, and
    takes either form. (A NamedTuple, not a dataclass: the python backend loads this file by path, outside
    sys.modules, where a dataclass cannot be made.)"""

    channels: int  # 1 (gray, "L") or 3 ("RGB")
    image_size: int  # the training size: a classifier's input is image_size^2
    mean: tuple[float, ...]  # per channel, in units of pixel * scale
    std: tuple[float, ...]
    resize: str = "short_side"  # "short_side" then a centre crop, or "none" (a segmenter's own size)
    task: str = CLASSIFICATION
    scale: float = 1 / 255

    @property
    def color(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    @property
    def crop(self) -> str:
        return "centre" if self.resize == "short_side" else "none"

    def to_dict(self) -> dict:
        prep = {"channels": self.channels, "color": self.color, "image_size": self.image_size, "resize": self.resize,
                "interpolation": "bilinear", "crop": self.crop, "scale": self.scale, "mean": list(self.mean),
                "std": list(self.std), "layout": "NCHW", "dtype": "float32", "formula": FORMULA}
        if self.task != CLASSIFICATION:
            prep["task"] = self.task
        return prep

    @classmethod
    def from_dict(cls, prep: dict) -> Preprocessing:
        """The description an artefact holds (core/preprocessing_check.py has refused what no export writes;
        a missing field is named here)."""
        try:
            return cls(channels=int(prep["channels"]), image_size=int(prep["image_size"]),
                       mean=tuple(float(m) for m in prep["mean"]), std=tuple(float(s) for s in prep["std"]),
                       resize=resize_mode(prep), task=str(prep.get("task", CLASSIFICATION)),
                       scale=float(prep.get("scale", 1 / 255)))
        except (KeyError, TypeError) as e:
            raise ImageError(f"the preprocessing description lacks a usable {e}") from None


def typed(prep: dict | Preprocessing) -> Preprocessing:
    """Either form of a description, typed."""
    return prep if isinstance(prep, Preprocessing) else Preprocessing.from_dict(prep)


def describe(in_chans: int, image_size: int, mean: list[float], std: list[float],
             task: str = CLASSIFICATION) -> dict:
    """The preprocessing of a model trained on image_size^2 pictures with in_chans channels, as artefacts
    hold it. A segmenter takes pictures at their own size (resize "none"); `image_size` is then the size it
    was trained at."""
    resize = "short_side" if task == CLASSIFICATION else "none"
    return Preprocessing(channels=in_chans, image_size=image_size, mean=tuple(mean), std=tuple(std), resize=resize,
                         task=task).to_dict()


def resize_mode(prep: dict | Preprocessing) -> str:
    """"short_side" or "none" (exports before 2026-11-26 wrote the mode as a sentence)."""
    if isinstance(prep, Preprocessing):
        return prep.resize
    mode = str(prep.get("resize", ""))
    if mode in ("short_side", "none"):
        return mode
    if mode.startswith("short side"):
        return "short_side"
    if mode.startswith("none"):
        return "none"
    raise ImageError(f"unknown resize mode {mode!r} in the preprocessing description")


def check_size(what: str, w: int, h: int, max_pixels: int, prep: dict | Preprocessing | None = None) -> None:
    """Refuse a picture whose size costs far more than the model's input is worth (before decoding it)."""
    if w < 1 or h < 1:
        raise ImageError(f"{what} has no pixels ({w} x {h})")
    if w * h > max_pixels:
        raise ImageError(f"{what} is {w} x {h} pixels ({w * h / 1e6:.1f} million), more than the "
                         f"{max_pixels / 1e6:.1f} million accepted")
    if (prep is None or resize_mode(prep) == "short_side") and max(w, h) / min(w, h) > MAX_ASPECT:
        raise ImageError(f"{what} is {w} x {h} pixels, an aspect ratio of {max(w, h) / min(w, h):.0f}:1, beyond "
                         f"the {MAX_ASPECT:.0f}:1 accepted (it would be enlarged before the centre crop)")


def open_header(data: bytes, max_pixels: int, what: str = "image", prep: dict | Preprocessing | None = None
                ) -> Image.Image:
    """PNG or JPEG bytes -> a PIL image whose header is read and size checked, its pixels not yet decoded."""
    if not data:
        raise ImageError(f"{what} is empty (0 bytes)")
    try:
        im = open_bytes(data, what, ENCODED_FORMATS)
    except ImageError:
        raise
    except Image.DecompressionBombError:  # PIL's own refusal, from the header, of a far too large picture
        raise ImageError(f"{what} declares more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} million pixels, more "
                         f"than the {max_pixels / 1e6:.1f} million accepted") from None
    except Exception as e:  # PIL raises UnidentifiedImageError, SyntaxError, struct.error... for crafted bytes
        raise ImageError(f"{what} is not a PNG or JPEG image ({type(e).__name__})") from None
    check_size(what, *im.size, max_pixels, prep)
    return im


def load(im: Image.Image, what: str = "image") -> Image.Image:
    """Decode the pixels of an image from open_header or open_bytes; truncated or corrupt data is refused,
    and so is decoding that runs past DECODE_SECONDS (the clock is read between blocks of DECODE_BLOCK
    bytes; PIL's LOAD_TRUNCATED_IMAGES stays off, so a file cut short is refused, not padded)."""
    if isinstance(im.fp, _Clocked):
        im.fp.deadline = time.monotonic() + DECODE_SECONDS
        im.decodermaxblock = DECODE_BLOCK
    try:
        im.load()
    except ImageError:
        raise
    except Exception as e:  # truncated or corrupt data
        raise ImageError(f"{what}: cannot decode its {im.format} data ({type(e).__name__}: {str(e)[:120]})") from None
    return im


def decode(data: bytes, max_pixels: int, what: str = "image", prep: dict | None = None) -> Image.Image:
    """PNG or JPEG bytes -> a decoded PIL image; the size is checked from the header before decoding."""
    return load(open_header(data, max_pixels, what, prep), what)


def pixel_channels(pixels: np.ndarray, what: str = "image") -> int:
    """The channel count of uint8 pixels (H, W), (H, W, 1) or (H, W, 3): 1 or 3; ImageError otherwise."""
    if pixels.dtype != np.uint8:
        raise ImageError(f"{what} has dtype {pixels.dtype}; pixels are uint8")
    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (1, 3)):
        return 1 if pixels.ndim == 2 else int(pixels.shape[2])
    raise ImageError(f"{what} has shape {tuple(pixels.shape)}; give height x width x channels with 1 (gray) "
                     "or 3 (RGB) channels")


def from_pixels(pixels: np.ndarray, what: str = "image") -> Image.Image:
    """uint8 pixels (H, W), (H, W, 1) or (H, W, 3) -> a PIL image (L or RGB)."""
    if pixel_channels(pixels, what) == 1:
        return Image.fromarray(np.ascontiguousarray(pixels.reshape(pixels.shape[:2])), "L")
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


EXIF_ORIENTATION = 0x0112
_TURN = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
         5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
         8: Image.Transpose.ROTATE_90}  # EXIF orientation -> the transpose that shows the picture upright
DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit gray (PNG, TIFF); "I" as PIL reads some of them


def orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1: as stored; 2-8: flipped and/or turned), 1 when absent or unreadable."""
    try:
        value = int(im.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block: the picture is shown as stored, as viewers do
        return 1
    return value if value in _TURN else 1


def upright_8bit(im: Image.Image, what: str = "image") -> Image.Image:
    """The picture as every viewer shows it, in 8 bits: its EXIF orientation applied (a phone's portrait
    JPEG is stored sideways), and 16-bit gray scaled to 0-255 (PIL's convert clips it instead: most pixels
    of a 16-bit picture would become 255). Float pictures are refused: their range says nothing."""
    turn = orientation(im)
    if im.mode == "F":
        raise ImageError(f"{what} holds 32-bit float pixels; convert it to 8 bits per channel first")
    if im.mode in DEEP_MODES:
        deep = np.asarray(im).astype(np.int64)  # (H, W)
        if deep.size and (deep.min() < 0 or deep.max() > 65535):
            raise ImageError(f"{what} holds 32-bit integer pixels beyond 16 bits; convert it to 8 bits first")
        im = Image.fromarray(((deep * 255 + 32767) // 65535).astype(np.uint8), "L")  # round(v * 255 / 65535)
    return im.transpose(_TURN[turn]) if turn != 1 else im


def prepare(im: Image.Image, prep: dict | Preprocessing) -> np.ndarray:
    """A PIL image -> (C, H, W) uint8 as the description says (upright and in 8 bits, color, then geometry)."""
    prep = typed(prep)
    im = upright_8bit(im).convert(prep.color)
    if prep.resize == "short_side":
        size = prep.image_size
        w, h = im.size
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        im = im.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr.transpose(2, 0, 1).copy()  # (C, H, W), writable


def prepare_pixels(pixels: np.ndarray, prep: dict | Preprocessing, max_pixels: int, what: str = "image"
                   ) -> np.ndarray:
    """uint8 (H, W[, C]) -> (C, H', W') uint8, checked before any copy. Pixels that need no change skip
    PIL (video frames at their own size)."""
    prep = typed(prep)
    channels = pixel_channels(pixels, what)
    h, w = pixels.shape[:2]
    check_size(what, w, h=h, max_pixels=max_pixels, prep=prep)
    if prep.resize == "none" and channels == prep.channels:
        return pixels.reshape(h, w, channels).transpose(2, 0, 1).copy()
    return prepare(from_pixels(pixels, what), prep)


def normalise(images: np.ndarray, prep: dict | Preprocessing) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32 (N, C, H, W): ((pixel * scale) - mean[c]) / std[c]."""
    prep = typed(prep)
    mean = np.asarray(prep.mean, np.float32)[None, :, None, None]
    std = np.asarray(prep.std, np.float32)[None, :, None, None]
    return ((images.astype(np.float32) * np.float32(prep.scale)) - mean) / std


def value_range(prep: dict | Preprocessing) -> tuple[list[float], list[float]]:
    """Per channel, the lowest and highest value normalise() can produce (what a float32 request may hold)."""
    prep = typed(prep)
    mean, std, scale = np.asarray(prep.mean, float), np.asarray(prep.std, float), float(prep.scale)
    return list((0.0 - mean) / std), list((255.0 * scale - mean) / std)
