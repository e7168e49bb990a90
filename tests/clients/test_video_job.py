"""Video segmentation jobs without a server: generated clips in, as many mask frames and evidence lines out,
masks equal to in-process labels, a corrupt video among good ones, a rerun that skips finished work, a
stopped job resumed, mIoU against the clips' truth, and the same job on a local Ray instance."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dnc.clients.cli import main
from dnc.clients.seg_results import LEGEND_MIN_WIDTH, overlay, segmentations
from dnc.clients.video_job import LEGEND_ROWS, JobError, LocalSegmenter, Truth, collect_videos, run_job
from dnc.core import video
from dnc.export.seg_infer import InProcessSegmenter
from dnc.training.scenes import write_clips

pytestmark = pytest.mark.slow
FRAMES = 10


@pytest.fixture(scope="module")
def clips(tmp_path_factory, fmnist_ready):
    root = tmp_path_factory.mktemp("clips") / "clips"
    write_clips(root, 2, "fine", height=48, width=64, frames=FRAMES, fps=10, seed=3)
    return root


def test_clips_are_deterministic_and_their_masks_lossless(clips, tmp_path):
    again = tmp_path / "again"
    write_clips(again, 1, "fine", height=48, width=64, frames=FRAMES, fps=10, seed=3)
    a = list(video.masks(clips / "masks" / "clip000.masks.mkv"))
    b = list(video.masks(again / "masks" / "clip000.masks.mkv"))
    assert len(a) == FRAMES and all((x == y).all() for x, y in zip(a, b, strict=True))
    assert {int(v) for m in a for v in np.unique(m)} - {0}  # items are there
    assert len(list(video.frames(clips / "videos" / "clip000.mp4"))) == FRAMES
    other = tmp_path / "other"
    write_clips(other, 1, "fine", height=48, width=64, frames=FRAMES, fps=10, seed=4)
    assert any((x != y).any() for x, y in zip(a, video.masks(other / "masks" / "clip000.masks.mkv"), strict=True))
    with pytest.raises(ValueError, match="even"):
        write_clips(tmp_path / "odd", 1, height=47, width=64)


def test_a_clip_gives_as_many_mask_frames_and_evidence_lines_as_frames(clips, seg_export, tmp_path):
    out = tmp_path / "out"
    seg = LocalSegmenter(seg_export[2], threads=1)
    s = run_job(collect_videos([clips]), out, seg, batch_size=3, concurrency=2, truth_dir=clips)
    assert s["segmented"] == 2 and not s["failed"] and s["frames"] == 2 * FRAMES
    ref = InProcessSegmenter(seg_export[2], threads=1)
    for name in ("clip000", "clip001"):
        frames = [f.rgb for f in video.frames(clips / "videos" / f"{name}.mp4")]
        masks = list(video.masks(out / f"{name}.masks.mkv"))
        lines = [json.loads(line) for line in (out / f"{name}.evidence.jsonl").read_text().splitlines()]
        assert len(masks) == len(lines) == len(frames) == FRAMES
        assert [line["frame"] for line in lines] == list(range(FRAMES))
        want = ref.run(np.stack(frames))["labels"]
        assert np.mean([(m == w).mean() for m, w in zip(masks, want, strict=True)]) >= 0.999
        shown = [f.rgb for f in video.frames(out / f"{name}.overlay.mp4")]
        assert len(shown) == FRAMES
        # every overlay frame: the picture (48 x 64) at the top left, the legend strip below it, one size
        want_shape = np.asarray(overlay(frames[0], segmentations(ref.run(frames[0][None]), ["f"])[0],
                                        legend_rows=LEGEND_ROWS)).shape
        assert all(f.shape == want_shape for f in shown) and want_shape[0] > 48 and want_shape[1] >= LEGEND_MIN_WIDTH
        strip = np.stack(shown)[:, 48 + 2:, :, :].astype(int)  # (frames, strip rows, width, 3), H.264-lossy
        assert np.median(strip) < 80  # the legend's dark background...
        assert (strip.max(axis=-1) > 150).mean() > 0.005  # ...with white labels and bright swatches on it
        summary = json.loads((out / f"{name}.summary.json").read_text())
        assert summary["frames"] == FRAMES and summary["truth"]["miou"] is not None
    assert s["miou"] is not None and 0 <= s["miou"] <= 100


def test_a_corrupt_video_fails_alone_and_a_rerun_skips_finished_work(clips, seg_export, tmp_path, capsys):
    folder = tmp_path / "in"
    shutil.copytree(clips / "videos", folder)
    good = (folder / "clip000.mp4").read_bytes()
    (folder / "broken.mp4").write_bytes(good[:len(good) // 3])
    (folder / "garbage.mkv").write_bytes(b"not a video at all" * 20)
    out = tmp_path / "out"
    args = ["segment", str(folder), "--out", str(out), "--in-process", str(seg_export[2]), "--threads", "1"]
    assert main(args) == 1
    text = capsys.readouterr().out
    assert "2 segmented" in text and "2 failed" in text and "FAILED" in text and "broken.mp4" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"clip00{i}.{k}" for i in range(2) for k in ("masks.mkv", "overlay.mp4", "evidence.jsonl", "summary.json"))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (folder / "broken.mp4").unlink()
    (folder / "garbage.mkv").unlink()
    assert main(args) == 0  # everything left is done: nothing is segmented again
    assert "2 already done" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


class _Stopping(LocalSegmenter):
    """Raises KeyboardInterrupt at its `stop_at`-th request: a job stopped with Ctrl-C."""

    def __init__(self, *args, stop_at: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.stop_at = 0, stop_at

    def segment(self, frames):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return super().segment(frames)


def test_a_stopped_job_is_resumed(clips, seg_export, tmp_path):
    out = tmp_path / "out"
    videos = collect_videos([clips])
    with pytest.raises(KeyboardInterrupt):  # stopped in the middle of the second video
        run_job(videos, out, _Stopping(seg_export[2], threads=1, stop_at=6), batch_size=2, concurrency=1)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"clip000.{k}" for k in ("masks.mkv", "overlay.mp4", "evidence.jsonl", "summary.json"))
    s = run_job(videos, out, LocalSegmenter(seg_export[2], threads=1), batch_size=2, concurrency=1)
    assert s["skipped"] == [str(videos[0])] and s["segmented"] == 1
    assert len(list(video.masks(out / "clip001.masks.mkv"))) == FRAMES


def test_the_truth_is_read_in_order(clips, seg_export):
    """Sampled frames are compared with the truth mask of their index, the truth read once, forwards: a frame
    that is not after the last truth frame read is refused, in words that say so."""
    first = next(video.frames(clips / "videos" / "clip000.mp4"))
    seg = LocalSegmenter(seg_export[2], threads=1).segment(first.rgb[None])[0]
    truth = Truth(clips, "clip000")
    truth.add(seg, 2)
    for earlier in (1, 2):
        with pytest.raises(JobError, match=f"^frame {earlier} is not after frame 2, the last truth frame read: the "
                                           "truth is read once, in order, so frames must come in increasing order$"):
            truth.add(seg, earlier)
    truth.add(seg, 3)
    assert truth.count() == FRAMES


def test_collect_videos_refuses_names_that_would_collide(clips, tmp_path):
    (tmp_path / "a").mkdir()
    shutil.copy(clips / "videos" / "clip000.mp4", tmp_path / "a" / "clip000.mp4")
    with pytest.raises(JobError, match="same outputs"):
        collect_videos([clips / "videos", tmp_path / "a"])
    assert [p.name for p in collect_videos([clips])] == ["clip000.mp4", "clip001.mp4"]  # masks left out


def test_the_job_on_a_local_ray_instance(clips, seg_export, other_seg_set, tmp_path):
    """Two Ray workers, each segmenting whole videos: the same files as the job on this machine. A rerun
    with nothing to do starts no Ray (no new session of this process, none running after it); `dnc segment
    --ray` after a list change redoes both videos on Ray, and its stderr has neither Ray's
    token-authentication banner nor progress bars (stderr is not a terminal)."""
    import subprocess
    import sys

    import ray

    from dnc.clients.ray_job import run_on_ray

    local, on_ray = tmp_path / "local", tmp_path / "ray"
    videos = collect_videos([clips])
    run_job(videos, local, LocalSegmenter(seg_export[2], threads=1), batch_size=4, concurrency=1)
    spec = {"kind": "local", "export": str(seg_export[2]), "threads": 1}
    s = run_on_ray(videos, on_ray, spec, batch_size=4, concurrency=1, truth_dir=clips, workers=2)
    assert s["segmented"] == 2 and not s["failed"] and s["miou"] is not None
    for name in ("clip000", "clip001"):
        assert all((a == b).all() for a, b in zip(video.masks(local / f"{name}.masks.mkv"),
                                                  video.masks(on_ray / f"{name}.masks.mkv"), strict=True))
        assert Path(on_ray / f"{name}.evidence.jsonl").read_text().count("\n") == FRAMES
    assert _ray_sessions() and not ray.is_initialized()  # the instance it started (seen here), shut down
    sessions = _ray_sessions()
    again = run_on_ray(videos, on_ray, spec, workers=2)
    assert again["segmented"] == 0 and again["skipped"] == [str(v) for v in videos]
    assert not ray.is_initialized() and _ray_sessions() == sessions  # nothing to do: no Ray instance started
    cmd = [sys.executable, "-m", "dnc.clients.cli", "segment", str(clips / "videos"), "--out", str(on_ray),
           "--in-process", str(seg_export[2]), "--centroids", str(other_seg_set), "--threads", "1", "--ray",
           "--ray-workers", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-800:]
    assert "2 segmented" in done.stdout and done.stdout.count(": made with list ") == 2
    assert "Token authentication" not in done.stderr and "token-auth" not in done.stderr
    assert "\r" not in done.stderr and "%|" not in done.stderr  # no tqdm bar
    assert [line for line in done.stderr.splitlines() if " INFO dnc.clients.video_outputs: redo " not in line] == []


def _ray_sessions() -> set[str]:
    """The session folders of Ray instances this process started (Ray names them session_<time>_<pid>, under
    $RAY_TMPDIR or the temporary folder): a new one is a new instance, whatever other processes run."""
    import os
    import tempfile

    root = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray"
    return {p.name for p in root.glob(f"session_*_{os.getpid()}")}


def test_write_scenes_video_command(tmp_path, capsys, fmnist_ready):
    assert main(["write-scenes", "--out", str(tmp_path / "c"), "--video", "1", "--video-size", "64x48",
                 "--frames", "4", "--fps", "8"]) == 0
    assert "1 clips of 4 frames, 64x48 at 8 fps" in capsys.readouterr().out
    assert video.info(tmp_path / "c" / "videos" / "clip000.mp4").rate == 8
    assert main(["write-scenes", "--out", str(tmp_path / "d"), "--video", "1", "--video-size", "64by48"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_ctrl_c_stops_a_job_cleanly_and_a_rerun_finishes_it(seg_export, tmp_path, fmnist_ready):
    """A real SIGINT to `dnc segment` in the middle of a video: exit status 130, no output of the unfinished
    video but its hidden partial files gone; the same command again writes it whole."""
    import os
    import signal
    import subprocess
    import sys
    import time

    clips = tmp_path / "long"
    write_clips(clips, 1, "fine", height=48, width=64, frames=400, fps=25, seed=5)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dnc.clients.cli", "segment", str(clips / "videos"), "--out", str(out), "--in-process",
           str(seg_export[2]), "--threads", "1", "--batch-size", "2", "--concurrency", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    def partial():  # the evidence's temporary (training/safe_files: an unpredictable name)
        return next(out.glob(".clip000.evidence.jsonl.*.dnc-tmp"), None)

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (
            (p := partial()) and p.read_text().count("\n") >= 10):
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-500:]
    assert "interrupted" in err.decode()
    assert not out.exists() or list(out.iterdir()) == []  # nothing half-written left behind
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert "%|" not in done.stderr and "\r" not in done.stderr  # progress bars stay out of a log (not a terminal)
    assert len(list(video.masks(out / "clip000.masks.mkv"))) == 400
    assert (out / "clip000.evidence.jsonl").read_text().count("\n") == 400
