"""Frame sampling of long videos: --every N and --sample-fps R pick the frames of a real clip that they say
(every frame still decoded and counted against the declared count), the outputs run at the sampled rate
with each evidence line's source index and time, mIoU compares each sampled frame with the truth of the
same index, and a rerun with another sampling redoes the video."""

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dnc.clients.cli import main
from dnc.core import centroid_set, video
from dnc.core.seg_folder import read_classes
from dnc.training.scenes import write_clips

pytestmark = pytest.mark.slow
FRAMES, FPS = 30, 10


@pytest.fixture(scope="module")
def clips(tmp_path_factory, fmnist_ready):
    root = tmp_path_factory.mktemp("sampling") / "clips"
    write_clips(root, 1, "fine", height=48, width=64, frames=FRAMES, fps=FPS, seed=11)
    return root


def _closest(times: list[float], rate: float) -> list[int]:
    """By brute force: for each target k/R up to the last frame, the index of the nearest frame (ties: earlier)."""
    picked, k = [], 0
    while k / rate <= max(times) + 1e-9:
        best = min(range(len(times)), key=lambda i: (abs(times[i] - times[0] - k / rate), i))
        if best not in picked:
            picked.append(best)
        k += 1
    return sorted(picked)


def test_sampling_picks_the_frames_it_says(clips, tmp_path):
    path = clips / "videos" / "clip000.mp4"
    times = [f.time for f in video.frames(path)]

    def picked(**kw):
        d = video.Decoding()
        got = [f.index for f in video.frames(path, video.Sampling(**kw), d)]
        assert d.decoded == FRAMES and d.shortfall() is None  # every frame decoded, whatever is kept
        return got

    assert picked(every=4) == list(range(0, FRAMES, 4))
    assert picked(fps=Fraction(3)) == _closest(times, 3) == [0, 3, 7, 10, 13, 17, 20, 23, 27]
    assert picked(fps=Fraction(7, 2)) == _closest(times, 3.5)
    assert picked(fps=Fraction(FPS)) == picked(fps=Fraction(100)) == list(range(FRAMES))
    assert video.Sampling(every=3).rate(Fraction(FPS)) == Fraction(10, 3)
    assert video.Sampling(fps=Fraction(25)).rate(Fraction(FPS)) == FPS
    with pytest.raises(ValueError, match="give one"):
        video.Sampling(every=2, fps=Fraction(1))
    with pytest.raises(ValueError, match="`every` must be >= 1"):  # (`dnc segment` shows --every: below)
        video.Sampling(every=0)


TREE = Path("/usr/share/doc/opencv-doc/examples/data/tree.avi")


def test_sampling_a_variable_rate_video(opencv_doc):
    """opencv-doc's tree.avi: 68 pictures over 29.6 s at irregular times; at 1 fps, each second's nearest."""
    times = [f.time for f in video.frames(TREE)]
    got = [f.index for f in video.frames(TREE, video.Sampling(fps=Fraction(1)))]
    assert got == _closest(times, 1) and len(got) == 30


def test_a_sampled_job_and_its_truth(clips, seg_export, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["segment", str(clips / "videos"), "--out", str(out), "--in-process", str(seg_export[2]), "--threads",
            "1", "--truth", str(clips)]
    assert main([*args, "--every", "3"]) == 0
    text = capsys.readouterr().out
    assert "clip000.mp4: 10 frames (one frame in 3, of 30 decoded)" in text
    lines = [json.loads(line) for line in (out / "clip000.evidence.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(0, FRAMES, 3))
    assert [line["time"] for line in lines] == pytest.approx([i / FPS for i in range(0, FRAMES, 3)])
    s = json.loads((out / "clip000.summary.json").read_text())
    assert s["sampling"] == {"every": 3, "fps": None} and (s["frames"], s["decoded_frames"]) == (10, FRAMES)
    assert not s["short"] and s["output_fps"] == pytest.approx(10 / 3)
    masks = list(video.masks(out / "clip000.masks.mkv"))
    assert len(masks) == 10 and video.info(out / "clip000.masks.mkv").rate == Fraction(10, 3)
    assert video.info(out / "clip000.overlay.mp4").rate == Fraction(10, 3)
    assert len(list(video.frames(out / "clip000.overlay.mp4"))) == 10
    # the mIoU pairs each sampled frame with the truth mask of its source index
    names = read_classes(clips).names
    assert names == list(centroid_set.load(seg_export[2]).class_names)  # (so predicted ids are truth ids)
    truth = list(video.masks(clips / "masks" / "clip000.masks.mkv"))

    def confusion(pairs):
        conf = np.zeros((len(names), len(names) + 1), np.int64)
        for t, p in pairs:
            np.add.at(conf, (t.reshape(-1), p.reshape(-1)), 1)
        return conf.tolist()

    assert s["confusion"] == confusion((truth[line["frame"]], m) for line, m in zip(lines, masks, strict=True))
    assert s["confusion"] != confusion(zip(truth[:10], masks, strict=True))  # (the first ten would differ)

    assert main([*args, "--sample-fps", "2"]) == 0  # another sampling: redone
    text = capsys.readouterr().out
    assert f"redo {clips / 'videos' / 'clip000.mp4'}: made with one frame in 3, now frames sampled at 2 fps" in text
    s = json.loads((out / "clip000.summary.json").read_text())
    assert s["sampling"] == {"every": 1, "fps": 2.0} and s["frames"] == 6 and s["output_fps"] == 2.0
    assert [json.loads(line)["frame"] for line in (out / "clip000.evidence.jsonl").read_text().splitlines()] == \
        [0, 5, 10, 15, 20, 25]
    assert main([*args, "--sample-fps", "2"]) == 0 and "1 already done" in capsys.readouterr().out


def test_sampling_options_are_checked(clips, seg_export, tmp_path, capsys):
    base = ["segment", str(clips / "videos"), "--out", str(tmp_path / "o"), "--in-process", str(seg_export[2])]
    with pytest.raises(SystemExit):
        main([*base, "--every", "2", "--sample-fps", "1"])
    assert "not allowed with argument" in capsys.readouterr().err
    for bad in ("0", "-1", "fast"):
        with pytest.raises(SystemExit):
            main([*base, "--sample-fps", bad])
        assert "--sample-fps" in capsys.readouterr().err
    assert main([*base, "--every", "0"]) == 2
    assert "--every must be >= 1" in capsys.readouterr().err
    from PIL import Image

    picture = tmp_path / "p.png"

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(picture)
    assert main(["segment", str(picture), "--out", str(tmp_path / "p"), "--in-process", str(seg_export[2]),
                 "--every", "2"]) == 2
    assert "--every: for videos, and no video was given" in capsys.readouterr().err
