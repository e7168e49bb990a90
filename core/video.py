"""Video files with PyAV (FFmpeg bundled in its wheels): decoding frames, writing mask and overlay videos.

The only module that opens videos. Torch-free, so the scene writer (training), the clients' batch jobs
and the benchmarks share it:
    frames(path)            decoded RGB frames (H, W, 3) uint8 with their index and time, in order; with a
                            Sampling only some of them (every frame is still decoded), with a Decoding what
                            the decoder found (frames and packets, where they end or stop) against the
                            declared count, else the duration
    info(path)              size, frame rate, frame count (from the container) and codec
    MaskWriter(path, ...)   lossless class ids: FFV1 gray8 in Matroska, frame-exact (one frame per input)
    masks(path)             the same frames back, bit for bit
    H264Writer(path, ...)   RGB pictures as H.264 (yuv420p: even sides, an odd picture padded by its edge), its
                            index first ("faststart"): a copy cut short still opens and plays up to the cut
Writers write to the path they are given (`shown`: the name their messages give instead, e.g. the final
name when the path is a temporary's /proc/self/fd path); callers that must not leave a half file, nor
write through a link, write to a temporary created exclusively and rename it (training/safe_files).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dnc.core.errors import DNCError, InputError

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v"}
DEFAULT_RATE = Fraction(25)


class VideoError(DNCError, ValueError):
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


SHORT_TOLERANCE = 1  # frames a whole video may decode fewer than it declares, or end short of its duration (Decoding)
TIMESTAMP_SLACK = 0.002  # seconds: Matroska keeps milliseconds, so a frame's time and the duration are each rounded


@dataclass
class Decoding:
    """What decoding a video found (frames() fills it in): the frames decoded, the packets with data and the
    highest frame slot (time x the declared rate) they reach, where the latest frame ends, and the damage that
    stopped decoding, if any.

    A container's declared count counts frame slots, and a variable-rate file leaves slots empty: Debian's
    opencv-doc tree.avi (Cinepak) declares 444 frames and holds 68 pictures whose timestamps reach slot 443,
    each shown until the next. Empty slots (slots reached less packets) are not missing frames, so
    `expected` is the declared count less them. One frame of tolerance: opencv-doc's box.mp4 (H.264)
    declares 456, and its 456 packets decode to 455 pictures in FFmpeg; a video that ends early misses many
    more (85 of 270 frames for a truncated copy of opencv-doc's Megamind.avi).

    Matroska and WebM declare no count (0) but a duration, where the last frame ends, and a copy cut short
    keeps it in its header (a 60-frame mask video at 10 fps cut to a third decodes 19 frames, the last at
    1.80 s, of 6.00 s). So without a count, a video is short when its latest frame's end (its time plus how
    long it shows: its own duration where the file gives one, at least one frame period) falls more than
    one frame period short of the duration. Whole files end within 0.2 frame periods of theirs: the
    write-scenes clips re-muxed to .mkv, MaskWriter's own mask videos, opencv-doc's videos re-muxed (or, for
    tree.avi's Cinepak, re-encoded with its variable timing) to .mkv and .webm. With neither a count nor
    a duration (a live recording stopped early), nothing is checked."""

    declared: int = 0
    decoded: int = 0
    packets: int = 0
    last_slot: int = -1
    last_time: float = 0.0  # seconds: the latest frame decoded
    last_end: float = 0.0  # seconds: where the latest frame ends (its time plus its duration, at least a period)
    period: float = 0.0  # seconds: one frame at the stream's rate
    duration: float = 0.0  # seconds: the declared frames at the declared rate, else the container's duration
    damage: str | None = None  # why decoding stopped (with frames(damage_ends=True))

    @property
    def expected(self) -> int:
        return max(0, self.declared - max(0, self.last_slot + 1 - self.packets))

    def shortfall(self) -> str | None:
        """Why the video ended early ("decoded 24 of 270 declared frames (...)"), or None when it is whole."""
        if self.damage is None and self.decoded >= self.expected - SHORT_TOLERANCE and not self.ends_early():
            return None
        of = f" of {self.declared} declared frames" if self.declared else " frames"
        why = self.damage or (f"the frames stop at {self.last_time:.2f} s" +
                              (f" of {self.duration:.2f} s" if self.duration else "") + ": cut short or damaged")
        return f"decoded {self.decoded}{of} ({why})"

    def ends_early(self) -> bool:
        """Without a declared count, whether the frames end more than a frame period before the duration."""
        slack = SHORT_TOLERANCE * self.period + TIMESTAMP_SLACK
        return not self.declared and self.duration > 0 and self.decoded > 0 and self.duration - self.last_end > slack

    def describe(self) -> dict:
        return {"declared_frames": self.declared, "decoded_frames": self.decoded, "damage": self.damage,
                "last_frame_time": round(self.last_time, 3), "duration": round(self.duration, 3)}


@dataclass(frozen=True)
class Sampling:
    """Which decoded frames go on: all, every Nth (`every`, frames 0, N, 2N...), or a target rate (`fps` R:
    the frames closest to 0, 1/R, 2/R... seconds after the first, ties to the earlier; R at or above the
    source's rate keeps every frame)."""

    every: int = 1
    fps: Fraction | None = None

    def __post_init__(self):
        if self.every < 1:
            raise InputError(f"`every` must be >= 1, got {self.every}")
        if self.fps is not None and self.fps <= 0:
            raise InputError(f"`sample_fps` must be > 0, got {self.fps}")
        if self.fps is not None and self.every != 1:
            raise InputError("`every` and `sample_fps` are two ways to sample: give one")

    def rate(self, source: Fraction) -> Fraction:
        """The frame rate of the sampled frames (that of the mask and overlay videos)."""
        return min(Fraction(self.fps), source) if self.fps is not None else source / self.every

    def describe(self) -> dict:
        return {"every": self.every, "fps": None if self.fps is None else float(self.fps)}

    def pick(self, items: Iterator[_Raw], source: Fraction) -> Iterator[_Raw]:
        if self.fps is not None and self.fps < source:
            yield from self._closest(items, 1 / Fraction(self.fps))
        else:
            yield from (it for it in items if it.index % self.every == 0)

    @staticmethod
    def _closest(items: Iterator[_Raw], step: Fraction) -> Iterator[_Raw]:
        """Each target time's closest frame, streaming: the targets between a frame and the next go to the
        nearer of the two (the one before on a tie); a frame closest to several is given once."""
        prev, prev_out, nxt = None, False, 0  # the frame before, whether it was given, the next target
        for it in items:
            out, last = False, math.floor(it.since_first / step)  # targets up to this frame: nxt..last
            if last >= nxt:
                mid = (prev.since_first + it.since_first) / 2 if prev is not None else None
                if mid is not None and nxt * step <= mid and not prev_out:
                    yield prev
                if mid is None or last * step > mid:
                    yield it
                    out = True
                nxt = last + 1
            prev, prev_out = it, out


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
        return VideoInfo(width=s.codec_context.width, height=s.codec_context.height, rate=Fraction(rate),
                         frames=int(s.frames or 0), codec=s.codec_context.name)


def frames(path: str | Path, sampling: Sampling | None = None, decoding: Decoding | None = None,
           damage_ends: bool = False) -> Iterator[Frame]:
    """The decoded frames of the first video stream, in order, as RGB; with `sampling`, only those it keeps
    (every frame is still decoded, as inter-coded pictures need the ones before them, but only kept ones are
    converted to RGB). Corrupt data raises VideoError, or with `damage_ends` ends the frames there, the
    reason in `decoding.damage`. `decoding` is filled in as frames are decoded: once the frames are all
    read, `decoding.shortfall()` says whether the video ended early."""
    decoding = decoding if decoding is not None else Decoding()
    with _open(path) as c:
        s = _stream(c, path)
        s.thread_type = "AUTO"
        rate = Fraction(s.average_rate or s.guessed_rate or DEFAULT_RATE)
        decoding.declared, decoding.period = int(s.frames or 0), float(1 / rate)
        # the timeline the count declares (a truncated AVI's own duration shrinks with the file), else the container's
        decoding.duration = float(decoding.declared / rate) if decoding.declared else \
            float(s.duration * s.time_base) if s.duration and s.time_base else (c.duration or 0) / 1e6
        for raw in (sampling or Sampling()).pick(_decode(c, s, rate=rate, d=decoding, path=path,
                                                         damage_ends=damage_ends), rate):
            yield Frame(raw.index, raw.time, raw.frame.to_ndarray(format="rgb24"))
    if decoding.decoded == 0:
        raise VideoError(f"{path}: no frame could be decoded" + (f" ({decoding.damage})" if decoding.damage else ""))


class _Raw(NamedTuple):
    index: int  # in decoding order
    since_first: Fraction  # seconds after the first frame (what sampling by rate measures)
    time: float  # seconds from the start (Frame.time)
    frame: object  # the av.VideoFrame, converted to RGB only if kept


def _decode(c, s, rate: Fraction, d: Decoding, path, damage_ends: bool) -> Iterator[_Raw]:
    """Every frame, with the packets counted into `d` (those with data, and the highest frame slot they
    reach) and where the latest frame ends (see Decoding)."""
    tb, start = s.time_base, s.start_time or 0
    first, i = None, 0
    try:
        for packet in c.demux(s):
            if packet.size:  # (the flush packet at the end has none)
                d.packets += 1
                if packet.pts is not None and tb is not None:
                    d.last_slot = max(d.last_slot, round((packet.pts - start) * tb * rate))
            for frame in packet.decode():
                at = frame.pts * frame.time_base if frame.pts is not None and frame.time_base else Fraction(i) / rate
                first = at if first is None else first
                d.decoded, d.last_time = i + 1, max(d.last_time, float(at))
                shown = frame.duration * frame.time_base if frame.duration and frame.time_base else 0
                d.last_end = max(d.last_end, float(at + max(shown, 1 / rate)))
                yield _Raw(i, at - first, float(at), frame)
                i += 1
    except Exception as e:  # FFmpeg's demuxing and decoding errors (not GeneratorExit: a consumer stopping)
        why = f"cannot decode frame {i}: {type(e).__name__}: {e}"
        if not damage_ends:
            raise VideoError(f"{path}: {why}") from None
        d.damage = why


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
                 options: dict[str, str] | None = None, muxer: dict[str, str] | None = None,
                 shown: str | Path | None = None):
        import av

        self.path, self.width, self.height = Path(shown or path), width, height  # (shown: the name in messages)
        self.container = av.open(str(path), "w", format=fmt, options=muxer or {})
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

    def __init__(self, path: str | Path, width: int, height: int, rate: Fraction, shown: str | Path | None = None):
        super().__init__(Path(path), fmt="matroska", codec="ffv1", width=width, height=height, rate=rate,
                         pix_fmt="gray", shown=shown)

    def write(self, labels: np.ndarray) -> None:
        import av

        if labels.shape != (self.height, self.width) or labels.dtype != np.uint8:
            raise VideoError(f"{self.path}: a mask frame must be ({self.height}, {self.width}) uint8, got "
                             f"{labels.shape} {labels.dtype}")
        self._put(av.VideoFrame.from_ndarray(np.ascontiguousarray(labels), format="gray"))


class H264Writer(_Writer):
    """RGB pictures as H.264 (yuv420p, constant rate factor `crf`), at the source's frame rate; the index
    (moov) is moved to the front when the file is closed, so a player streams it and a copy cut short still
    opens (the frames up to the cut decode, and the declared count shows what is missing)."""

    def __init__(self, path: str | Path, width: int, height: int, rate: Fraction, crf: int = 20,
                 shown: str | Path | None = None):
        self.src = (height, width)
        super().__init__(Path(path), fmt="mp4", codec="libx264", width=width + width % 2, height=height + height % 2,
                         rate=rate, pix_fmt="yuv420p", options={"crf": str(crf), "preset": "veryfast"},
                         muxer={"movflags": "+faststart"}, shown=shown)

    def write(self, rgb: np.ndarray) -> None:
        import av

        if rgb.shape != (*self.src, 3):
            raise VideoError(f"{self.path}: an overlay frame must be {self.src} x 3, got {rgb.shape}")
        if rgb.shape[:2] != (self.height, self.width):  # yuv420p needs even sides: repeat the last row/column
            rgb = np.pad(rgb, ((0, self.height - rgb.shape[0]), (0, self.width - rgb.shape[1]), (0, 0)), mode="edge")
        self._put(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))
