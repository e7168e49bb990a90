"""Video files with PyAV (FFmpeg bundled in its wheels): decoding frames, writing mask and overlay videos.

The only module that opens videos. Torch-free, so the scene writer (training), the clients' batch jobs
and the benchmarks share it:
    frames(path)            decoded RGB frames (H, W, 3) uint8 with their index and time, in order
    info(path)              size, frame rate, frame count (from the container) and codec
    MaskWriter(path, ...)   lossless class ids: FFV1 gray8 in Matroska, frame-exact (one frame per input)
    masks(path)             the same frames back, bit for bit
    H264Writer(path, ...)   RGB pictures as H.264 (yuv420p: even sides, an odd picture padded by its edge)
Writers write to the path they are given; callers that must not leave a half file write to a temporary
name and rename (clients/video_job.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v"}
DEFAULT_RATE = Fraction(25)


class VideoError(ValueError):
    """A video that cannot be read or written; the message names it."""


@dataclass
class Frame:
    index: int
    time: float  # seconds from the start (from the frame's timestamp, else index / rate)
    rgb: np.ndarray  # (H, W, 3) uint8


@dataclass
class VideoInfo:
    width: int
    height: int
    rate: Fraction  # frames per second
    frames: int  # as the container declares it (0 when it does not say)
    codec: str


def _open(path: str | Path):
    import av

    try:
        return av.open(str(path))
    except Exception as e:  # av raises its own error types (InvalidDataError, FileNotFoundError, ...)
        raise VideoError(f"cannot open video {path}: {type(e).__name__}: {e}") from None


def _stream(container, path):
    if not container.streams.video:
        raise VideoError(f"{path} has no video stream")
    return container.streams.video[0]


def info(path: str | Path) -> VideoInfo:
    with _open(path) as c:
        s = _stream(c, path)
        rate = s.average_rate or s.guessed_rate or DEFAULT_RATE
        return VideoInfo(s.codec_context.width, s.codec_context.height, Fraction(rate), int(s.frames or 0),
                         s.codec_context.name)


def frames(path: str | Path) -> Iterator[Frame]:
    """Every decoded frame of the first video stream, in order, as RGB; VideoError on corrupt data."""
    with _open(path) as c:
        s = _stream(c, path)
        s.thread_type = "AUTO"
        rate = Fraction(s.average_rate or s.guessed_rate or DEFAULT_RATE)
        i = 0
        try:
            for frame in c.decode(s):
                t = float(frame.time) if frame.time is not None else i / rate
                yield Frame(i, t, frame.to_ndarray(format="rgb24"))
                i += 1
        except VideoError:
            raise
        except Exception as e:  # FFmpeg's decode errors
            raise VideoError(f"{path}: cannot decode frame {i}: {type(e).__name__}: {e}") from None
        if i == 0:
            raise VideoError(f"{path}: no frame could be decoded")


def masks(path: str | Path) -> Iterator[np.ndarray]:
    """The (H, W) uint8 frames of a mask video written by MaskWriter."""
    with _open(path) as c:
        s = _stream(c, path)
        try:
            for frame in c.decode(s):
                yield frame.to_ndarray(format="gray")
        except Exception as e:
            raise VideoError(f"{path}: cannot decode a mask frame: {type(e).__name__}: {e}") from None


class _Writer:
    def __init__(self, path: Path, fmt: str, codec: str, width: int, height: int, rate: Fraction, pix_fmt: str,
                 options: dict[str, str] | None = None):
        import av

        self.path, self.width, self.height = Path(path), width, height
        self.container = av.open(str(path), "w", format=fmt)
        self.stream = self.container.add_stream(codec, rate=Fraction(rate))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, pix_fmt
        if options:
            self.stream.options = options
        self.count = 0

    def _put(self, frame) -> None:
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self.container is None:
            return
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MaskWriter(_Writer):
    """Class ids per pixel, losslessly (FFV1, gray8, Matroska): each write is one frame."""

    def __init__(self, path: str | Path, width: int, height: int, rate: Fraction):
        super().__init__(Path(path), "matroska", "ffv1", width, height, rate, "gray")

    def write(self, labels: np.ndarray) -> None:
        import av

        if labels.shape != (self.height, self.width) or labels.dtype != np.uint8:
            raise VideoError(f"{self.path}: a mask frame must be ({self.height}, {self.width}) uint8, got "
                             f"{labels.shape} {labels.dtype}")
        self._put(av.VideoFrame.from_ndarray(np.ascontiguousarray(labels), format="gray"))


class H264Writer(_Writer):
    """RGB pictures as H.264 (yuv420p, constant rate factor `crf`), at the source's frame rate."""

    def __init__(self, path: str | Path, width: int, height: int, rate: Fraction, crf: int = 20):
        self.src = (height, width)
        super().__init__(Path(path), "mp4", "libx264", width + width % 2, height + height % 2, rate, "yuv420p",
                         {"crf": str(crf), "preset": "veryfast"})

    def write(self, rgb: np.ndarray) -> None:
        import av

        if rgb.shape != (*self.src, 3):
            raise VideoError(f"{self.path}: an overlay frame must be {self.src} x 3, got {rgb.shape}")
        if rgb.shape[:2] != (self.height, self.width):  # yuv420p needs even sides: repeat the last row/column
            rgb = np.pad(rgb, ((0, self.height - rgb.shape[0]), (0, self.width - rgb.shape[1]), (0, 0)), mode="edge")
        self._put(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))
