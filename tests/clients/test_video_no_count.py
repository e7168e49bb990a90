"""Videos whose container declares no frame count (Matroska, WebM): a copy cut short is caught by where its
frames stop against the duration in its header, and fails (or with --accept-short is written and marked
short, saying where it stops); whole ones pass: write-scenes clips re-muxed to .mkv and re-encoded to VP9
.webm, our own MaskWriter mask videos (at 10, 29.97 and 25 fps, one frame long too), and opencv-doc's
Megamind.avi re-muxed to .mkv."""

import json
from fractions import Fraction

import av
import numpy as np
import pytest

from dnc.clients.cli import main
from dnc.core import video
from dnc.training.scenes import write_clips

pytestmark = pytest.mark.slow
FRAMES = 30


def _remux(src, dst):
    """`src`'s video packets, untouched, in a Matroska file (which keeps no frame count)."""
    with av.open(str(src)) as i, av.open(str(dst), "w", format="matroska") as o:
        s = i.streams.video[0]
        out = o.add_stream_from_template(s)
        for p in i.demux(s):
            if p.dts is not None:  # (not the empty flush packet)
                p.stream = out
                o.mux(p)


def _vp9(src, dst):
    """`src`'s frames re-encoded as VP9 in WebM, with their timestamps."""
    with av.open(str(src)) as i, av.open(str(dst), "w", format="webm") as o:
        s = i.streams.video[0]
        out = o.add_stream("libvpx-vp9", rate=s.average_rate)
        out.width, out.height, out.pix_fmt = s.codec_context.width, s.codec_context.height, "yuv420p"
        for f in i.decode(s):
            for p in out.encode(f):
                o.mux(p)
        for p in out.encode():
            o.mux(p)


def _masks(path, n, rate):
    rng = np.random.default_rng(0)
    with video.MaskWriter(path, 64, 48, rate) as w:
        for _ in range(n):
            w.write(rng.integers(0, 4, (48, 64), dtype=np.uint8))


def _cut(path, dst, keep=3):
    data = path.read_bytes()
    dst.write_bytes(data[:len(data) // keep])


@pytest.fixture(scope="module")
def files(tmp_path_factory, fmnist_ready):
    """videos/: whole.mkv (an H.264 write-scenes clip, 30 frames at 10 fps, re-muxed) and cut.mkv (its first
    third); others/: the clip as VP9 .webm whole and cut, MaskWriter videos whole and cut."""
    root = tmp_path_factory.mktemp("no-count")
    write_clips(root / "clips", 1, "fine", height=48, width=64, frames=FRAMES, fps=10, seed=3)
    videos, others = root / "videos", root / "others"
    videos.mkdir()
    others.mkdir()
    _remux(root / "clips" / "videos" / "clip000.mp4", videos / "whole.mkv")
    _cut(videos / "whole.mkv", videos / "cut.mkv")
    _vp9(root / "clips" / "videos" / "clip000.mp4", others / "whole.webm")
    _cut(others / "whole.webm", others / "cut.webm")
    _masks(others / "m60.mkv", 60, 10)
    _cut(others / "m60.mkv", others / "m60-cut.mkv")
    _masks(others / "m61.mkv", 61, Fraction(30000, 1001))
    _masks(others / "m1.mkv", 1, 25)
    return videos, others


def _decode(path) -> video.Decoding:
    """What decoding `path` found (every frame decoded; only the first converted to RGB, for speed)."""
    d = video.Decoding()
    for _ in video.frames(path, video.Sampling(every=10**9), d, damage_ends=True):
        pass
    return d


def test_whole_files_pass_and_copies_cut_short_do_not(files):
    videos, others = files
    for path, n in ((videos / "whole.mkv", FRAMES), (others / "whole.webm", FRAMES), (others / "m60.mkv", 60),
                    (others / "m61.mkv", 61), (others / "m1.mkv", 1)):
        d = _decode(path)
        assert (d.declared, d.decoded, d.shortfall()) == (0, n, None), path.name
        assert d.last_end == pytest.approx(d.duration, abs=0.2 * d.period), path.name  # (measured: within 0.2)
    mask = _decode(others / "m60-cut.mkv")  # the reviewer's case: 19 of 60 mask frames, 1.8 s of 6.0 s
    assert mask.damage is None and (mask.decoded, mask.last_time, mask.duration) == (19, 1.8, 6.0)
    assert mask.shortfall() == "decoded 19 frames (the frames stop at 1.80 s of 6.00 s: cut short or damaged)"
    for path in (videos / "cut.mkv", others / "cut.webm"):
        d = _decode(path)
        assert d.damage is None and 0 < d.decoded < FRAMES - 1 and d.duration == 3.0, path.name
        assert d.shortfall() == f"decoded {d.decoded} frames (the frames stop at {d.last_time:.2f} s of 3.00 s: " \
                                "cut short or damaged)"


def test_a_real_video_remuxed_to_matroska(opencv_doc, tmp_path):
    """opencv-doc's Megamind.avi (MPEG-4, 270 frames at 23.976 fps) in Matroska: its last frame ends at the
    duration, 11.303 s; its first third stops at 3.59 s."""
    _remux(opencv_doc / "examples" / "data" / "Megamind.avi", tmp_path / "mega.mkv")
    whole = _decode(tmp_path / "mega.mkv")
    assert (whole.declared, whole.decoded, whole.shortfall()) == (0, 270, None)
    assert whole.duration == pytest.approx(11.303) and whole.last_end == pytest.approx(11.303, abs=0.002)
    _cut(tmp_path / "mega.mkv", tmp_path / "cut.mkv")
    assert _decode(tmp_path / "cut.mkv").shortfall().startswith("decoded 86 frames (the frames stop at 3.59 s of 11.30")


def test_a_job_fails_a_matroska_cut_short_unless_accepted(files, seg_export, tmp_path, capsys):
    videos, _ = files
    cut = _decode(videos / "cut.mkv")
    out = tmp_path / "out"
    args = ["segment", str(videos), "--out", str(out), "--in-process", str(seg_export[2]), "--threads", "1"]
    assert main(args) == 1
    text = capsys.readouterr().out
    assert "1 segmented, 0 already done, 1 failed" in text
    assert f"FAILED {videos / 'cut.mkv'}: decoded {cut.decoded} frames (the frames stop at {cut.last_time:.2f} s " \
           "of 3.00 s: cut short or damaged); --accept-short writes the frames decoded" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"whole.{k}" for k in ("masks.mkv", "overlay.mp4", "evidence.jsonl", "summary.json"))
    assert _decode(out / "whole.masks.mkv").shortfall() is None  # the job's own mask video: whole, no count
    assert main([*args, "--accept-short"]) == 0
    text = capsys.readouterr().out
    assert f"SHORT: {cut.decoded} frames, stopping at {cut.last_time:.2f} of 3.00 s" in text
    s = json.loads((out / "cut.summary.json").read_text())
    assert (s["short"], s["declared_frames"], s["decoded_frames"], s["frames"]) == (True, 0, cut.decoded, cut.decoded)
    assert (s["last_frame_time"], s["duration"]) == (round(cut.last_time, 3), 3.0)
    assert len(list(video.masks(out / "cut.masks.mkv"))) == cut.decoded
