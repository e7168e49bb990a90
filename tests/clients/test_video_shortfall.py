"""Videos that end before the frames their container declares: a copy of a real clip cut short and one
with bytes overwritten fail (no file of theirs left, the shortfall named in the table and the JSON, exit
status 1) unless --accept-short writes them, marked short, and only a rerun that accepts short videos too
counts them done; whole videos pass, among them real ones whose count is a frame off or counts empty
slots (Debian's opencv-doc videos). Containers that declare no count: test_video_no_count.py."""

import gzip
import json
from pathlib import Path

import pytest

from dnc.clients.cli import main
from dnc.core import video
from dnc.training.scenes import write_clips

pytestmark = pytest.mark.slow
FRAMES = 30
OPENCV = Path("/usr/share/doc/opencv-doc")


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, fmnist_ready):
    """whole.mp4 (a write-scenes clip), cut.mp4 (its first 60% of bytes), overwritten.mp4 (2% of its bytes
    zeroed half-way: the decoder stops there)."""
    root = tmp_path_factory.mktemp("short")
    write_clips(root / "clips", 1, "fine", height=48, width=64, frames=FRAMES, fps=10, seed=3)
    data = (root / "clips" / "videos" / "clip000.mp4").read_bytes()
    folder = root / "videos"
    folder.mkdir()
    (folder / "whole.mp4").write_bytes(data)
    (folder / "cut.mp4").write_bytes(data[:len(data) * 6 // 10])
    b = bytearray(data)
    b[len(b) // 2:len(b) // 2 + len(b) // 50] = bytes(len(b) // 50)
    (folder / "overwritten.mp4").write_bytes(bytes(b))
    return folder


def _decode(path) -> video.Decoding:
    """What decoding `path` found (every frame decoded; only the first converted to RGB, for speed)."""
    d = video.Decoding()
    for _ in video.frames(path, video.Sampling(every=10**9), d, damage_ends=True):
        pass
    return d


def test_decoded_frames_against_declared(damaged):
    whole, cut, over = (_decode(damaged / f"{n}.mp4") for n in ("whole", "cut", "overwritten"))
    assert (whole.declared, whole.decoded, whole.shortfall()) == (FRAMES, FRAMES, None)
    assert cut.damage is None and 0 < cut.decoded < FRAMES - 1 and cut.declared == FRAMES
    assert cut.shortfall().startswith(f"decoded {cut.decoded} of {FRAMES} declared frames (the frames stop at ")
    assert over.damage and 0 < over.decoded < FRAMES and f"decoded {over.decoded} of {FRAMES}" in over.shortfall()
    with pytest.raises(video.VideoError, match="cannot decode frame"):  # without damage_ends: an error, as before
        list(video.frames(damaged / "overwritten.mp4"))


def test_a_video_cut_short_fails_unless_accepted(damaged, seg_export, tmp_path, capsys):
    cut, over = _decode(damaged / "cut.mp4").decoded, _decode(damaged / "overwritten.mp4").decoded
    out = tmp_path / "out"
    args = ["segment", str(damaged), "--out", str(out), "--in-process", str(seg_export[2]), "--threads", "1"]
    assert main(args) == 1
    text = capsys.readouterr().out
    assert "1 segmented, 0 already done, 2 failed" in text
    assert f"FAILED {damaged / 'cut.mp4'}: decoded {cut} of {FRAMES} declared frames (the frames stop at " in text
    assert f"FAILED {damaged / 'overwritten.mp4'}: decoded {over} of {FRAMES} declared frames (cannot decode" in text
    assert "--accept-short writes the frames decoded" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(  # nothing of the failed ones, no partial file
        f"whole.{k}" for k in ("masks.mkv", "overlay.mp4", "evidence.jsonl", "summary.json"))
    whole = json.loads((out / "whole.summary.json").read_text())
    assert (whole["short"], whole["declared_frames"], whole["decoded_frames"]) == (False, FRAMES, FRAMES)
    assert main([*args, "--out", str(tmp_path / "json"), "--json"]) == 1
    failed = json.loads(capsys.readouterr().out)["failed"]
    assert failed[str(damaged / "cut.mp4")].startswith(f"decoded {cut} of {FRAMES} declared frames")

    assert main([*args, "--accept-short"]) == 0  # the same folder again: the whole video is done already
    text = capsys.readouterr().out
    assert "2 segmented, 1 already done, 0 failed" in text
    for name, n in (("cut", cut), ("overwritten", over)):
        assert f"{damaged / (name + '.mp4')}: {n} frames" in text and f"SHORT: {n} of {FRAMES} frames" in text
        s = json.loads((out / f"{name}.summary.json").read_text())
        assert (s["short"], s["declared_frames"], s["decoded_frames"], s["frames"]) == (True, FRAMES, n, n)
        assert s["shortfall"].startswith(f"decoded {n} of {FRAMES} declared frames")
        assert len(list(video.masks(out / f"{name}.masks.mkv"))) == n
        assert (out / f"{name}.evidence.jsonl").read_text().count("\n") == n


def test_real_videos_of_opencv_doc(tmp_path, opencv_doc):
    """Whole: Cinepak tree.avi declares 444 slots and holds 68 pictures (variable rate), H.264 box.mp4 declares
    456 and decodes 455, MPEG-4 Megamind.avi 270 of 270; a third of Megamind.avi's bytes: 84 of 270."""
    data = OPENCV / "examples" / "data"
    tree = _decode(data / "tree.avi")
    assert (tree.declared, tree.decoded, tree.last_slot, tree.shortfall()) == (444, 68, 443, None)
    (tmp_path / "box.mp4").write_bytes(gzip.decompress((OPENCV / "opencv4" / "html" / "box.mp4.gz").read_bytes()))
    box = _decode(tmp_path / "box.mp4")
    assert (box.declared, box.decoded, box.shortfall()) == (456, 455, None)
    mega = _decode(data / "Megamind.avi")
    assert (mega.declared, mega.decoded, mega.shortfall()) == (270, 270, None)
    raw = (data / "Megamind.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(raw[:len(raw) // 3])
    assert _decode(tmp_path / "cut.avi").shortfall().startswith("decoded 84 of 270 declared frames (the frames "
                                                                "stop at 3.50 s of 11.26 s")


def test_a_video_written_short_is_done_only_for_a_rerun_that_accepts_short(damaged, seg_export, tmp_path, capsys):
    """Written with --accept-short, a video cut short is skipped by a rerun with the flag; one without it
    redoes the video, saying why, and it fails as short (its outputs from the accepting run stay)."""
    cut = damaged / "cut.mp4"
    n = _decode(cut).decoded
    out = tmp_path / "out"
    args = ["segment", str(cut), "--out", str(out), "--in-process", str(seg_export[2]), "--threads", "1"]
    assert main([*args, "--accept-short"]) == 0
    made = json.loads((out / "cut.summary.json").read_text())
    capsys.readouterr()
    assert main([*args, "--accept-short"]) == 0 and "1 already done" in capsys.readouterr().out

    assert main([*args, "--json"]) == 1
    s = json.loads(capsys.readouterr().out)
    assert s["redone"] == {str(cut): f"written short with --accept-short ({made['shortfall']}); without "
                                     "--accept-short a short video fails"}
    assert s["skipped"] == [] and s["failed"][str(cut)].startswith(f"decoded {n} of {FRAMES} declared frames")
    assert json.loads((out / "cut.summary.json").read_text()) == made
    assert main(args) == 1
    text = capsys.readouterr().out
    assert f"redo {cut}: written short with --accept-short (decoded {n} of {FRAMES}" in text
    assert f"FAILED {cut}: decoded {n} of {FRAMES} declared frames" in text and "SHORT" not in text
