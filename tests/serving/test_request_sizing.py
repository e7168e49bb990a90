"""Real footage with default flags (issue 23, item 7), against the real tritonserver: the client reads the
served model's pixel budget (from the entry model, or the prep step of a repository built before the entry
carried it) and sizes each request to it, so 720p and 1080p videos and pictures go through as they come;
a picture or frame above the per-picture limit is refused before sending, naming --downscale, and with it
is segmented downscaled and its labels brought back to its size; a failed video leaves at once.

Footage: frames of Debian opencv-doc's videos, upscaled. Two segmenters are served: SEG with the default
budget (4.2 million pixels), SMALL with 600,000 and the entry config of an older build, so that a 1280x720
picture is "too large" at little cost."""

import json
import logging
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image

from dnc.clients import sizing
from dnc.clients.cli import main
from dnc.clients.client import DNCClient
from dnc.core import formats as F
from dnc.core import video
from dnc.export.seg_infer import InProcessSegmenter
from dnc.serving import repository

pytestmark = [pytest.mark.triton, pytest.mark.slow]
SEG, SMALL = "scenes", "scenes-small"
SMALL_BUDGET = 600_000
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, seg_export):
    out = tmp_path_factory.mktemp("sizing") / "repo"
    repository.build(seg_export[2], out, name=SEG, threads=1)
    repository.build(seg_export[2], out, name=SMALL, threads=1, max_pixels=SMALL_BUDGET)
    cfg = out / SMALL / "config.pbtxt"  # as built before the entry model carried its budget
    block = f'parameters {{\n  key: "max_pixels"\n  value {{\n    string_value: "{SMALL_BUDGET}"\n  }}\n}}\n'
    assert block in cfg.read_text()
    cfg.write_text(cfg.read_text().replace(block, ""))
    return out


def _frames(source: Path, n: int, width: int, height: int) -> list[np.ndarray]:
    out = []
    for f in video.frames(source):
        if len(out) == n:
            break
        out.append(np.asarray(Image.fromarray(f.rgb).resize((width, height), Image.BILINEAR)))
    return out


def _mp4(path: Path, frames: list[np.ndarray]) -> Path:
    with video.H264Writer(path, frames[0].shape[1], frames[0].shape[0], Fraction(25)) as w:
        for f in frames:
            w.write(f)
    return path


@pytest.fixture(scope="module")
def footage(tmp_path_factory, opencv_doc):
    """v720/v720.mp4 (5 frames of vtest.avi at 1280x720); p1080/ (2 pictures of Megamind.avi at 1920x1080,
    PNG, and v1080.mp4, 3 frames); resize.avi (MJPEG: 6 frames at 1920x1080, then 720p ones)."""
    import av

    root = tmp_path_factory.mktemp("footage")
    data = opencv_doc / "examples" / "data"
    (root / "v720").mkdir()
    _mp4(root / "v720" / "v720.mp4", _frames(data / "vtest.avi", 5, 1280, 720))
    (root / "p1080").mkdir()
    big = _frames(data / "Megamind.avi", 6, 1920, 1080)
    for i, f in enumerate(big[:2]):
        Image.fromarray(f).save(root / "p1080" / f"p{i}.png")
    _mp4(root / "p1080" / "v1080.mp4", big[2:5])
    import io

    c = av.open(str(root / "resize.avi"), "w", format="avi")
    s = c.add_stream("mjpeg", rate=25)
    s.width, s.height, s.pix_fmt, s.time_base = 1920, 1080, "yuvj420p", Fraction(1, 25)
    for i, f in enumerate(big + _frames(data / "vtest.avi", 4, 1280, 720)):
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, "JPEG", quality=90)
        p = av.Packet(buf.getvalue())
        p.stream, p.pts, p.dts, p.time_base = s, i, i, s.time_base
        c.mux(p)
    c.close()
    return root


def _requests(server, model: str) -> int:
    """Requests the model's prep step has answered so far (one per client request)."""
    c = httpclient.InferenceServerClient(server.http_url)
    try:
        stats = c.get_inference_statistics(F.family(model).prep)["model_stats"][0]["inference_stats"]
        return int(stats["success"]["count"]) + int(stats["fail"]["count"])
    finally:
        c.close()


def test_the_budget_is_read_from_the_entry_model_or_an_older_repositorys_prep_step(server, caplog):
    caplog.set_level(logging.INFO, "dnc.clients.sizing")
    c = httpclient.InferenceServerClient(server.http_url)
    try:
        assert c.get_model_config(SEG)["parameters"]["max_pixels"]["string_value"] == str(2048 * 2048)
        assert "max_pixels" not in c.get_model_config(SMALL)["parameters"]
    finally:
        c.close()
    with DNCClient(server.http_url, model=SEG) as a, DNCClient(server.grpc_url, "grpc", model=SMALL) as b:
        assert (a.max_pixels, b.max_pixels) == (2048 * 2048, SMALL_BUDGET)
    assert f"model {SMALL} carries no max_pixels parameter" in caplog.text


def test_a_720p_video_with_default_flags(server, footage, seg_export, tmp_path):
    """Fails before this change (8 frames, 7.4 million pixels, in one request); now 4 frames a request."""
    out, before = tmp_path / "out", _requests(server, SEG)
    assert main(["segment", str(footage / "v720"), "--out", str(out), "--url", server.http_url, "--model", SEG]) == 0
    summary = json.loads((out / "v720.summary.json").read_text())
    assert summary["frames"] == 5 and summary["frames_per_request"] == 4
    assert _requests(server, SEG) - before == 1 + 2  # the class list asked once per job; then 4 + 1 frames
    masks = list(video.masks(out / "v720.masks.mkv"))
    assert len(masks) == 5 and masks[0].shape == (720, 1280)
    first = next(video.frames(footage / "v720" / "v720.mp4")).rgb
    want = InProcessSegmenter(seg_export[2], threads=1).run(first[None])["labels"][0]
    assert (masks[0] == want).mean() >= 0.999


def test_1080p_pictures_and_a_1080p_video_with_default_flags(server, footage, tmp_path, capsys):
    out, before = tmp_path / "out", _requests(server, SEG)
    assert main(["segment", str(footage / "p1080"), "--out", str(out), "--url", server.http_url, "--model", SEG]) == 0
    assert "2 written, 0 skipped as done, 0 failed of 2 picture(s)" in capsys.readouterr().err
    assert _requests(server, SEG) - before == 1 + 1 + 2  # the 2 pictures; the class list; the 3 frames: 2 + 1
    assert json.loads((out / "v1080.summary.json").read_text())["frames_per_request"] == 2
    assert Image.open(out / "p0.labels.png").size == (1920, 1080)
    assert next(video.masks(out / "v1080.masks.mkv")).shape == (1080, 1920)


def _reference(server, picture: np.ndarray) -> np.ndarray:
    """SMALL's labels for the picture downscaled, brought to the picture's size by nearest neighbour."""
    with DNCClient(server.http_url, model=SMALL) as c:
        small = c.segment(sizing.downscaled(picture, SMALL_BUDGET)[None])[0].labels
    h, w = picture.shape[:2]
    return np.asarray(Image.fromarray(small).resize((w, h), Image.NEAREST))


@pytest.mark.parametrize("how", ["pixels", "encoded"])
def test_a_picture_above_the_limit_is_refused_naming_the_flag_and_downscaled_with_it(server, footage, tmp_path,
                                                                                    capsys, how):
    picture = next(video.frames(footage / "v720" / "v720.mp4")).rgb  # 1280x720: 921,600 pixels
    path = tmp_path / "big.png"
    Image.fromarray(picture).save(path)
    out, before = tmp_path / "out", _requests(server, SMALL)
    args = ["segment", str(path), "--out", str(out), "--url", server.http_url, "--model", SMALL, "--input", how]
    assert main(args) == 1
    assert (f"dnc segment: failed {path}: picture {path} is 1280x720 (0.9 million pixels), more than the 0.6 "
            f"million the served model '{SMALL}' takes per picture: pass --downscale to send it downscaled to "
            "1032x580 (its labels are brought back to 1280x720)") in capsys.readouterr().err
    assert _requests(server, SMALL) == before  # refused here, nothing sent
    assert main([*args, "--downscale"]) == 0
    labels = np.asarray(Image.open(out / "big.labels.png"))
    assert labels.shape == (720, 1280) and np.array_equal(labels, _reference(server, picture))
    ev = json.loads((out / "big.evidence.json").read_text())
    assert (ev["height"], ev["width"], ev["sent_height"], ev["sent_width"]) == (720, 1280, 580, 1032)
    assert sum(c["pixels"] for c in ev["classes"]) == 720 * 1280
    assert {c["class_id"]: c["pixels"] for c in ev["classes"]} == {
        int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True), strict=True)}
    overlay = Image.open(out / "big.overlay.png")
    assert overlay.width == 1280 and overlay.height > 720


def test_video_frames_above_the_limit_are_refused_naming_the_flag_and_downscaled_with_it(server, footage, tmp_path,
                                                                                        capsys):
    out = tmp_path / "out"
    args = ["segment", str(footage / "v720" / "v720.mp4"), "--out", str(out), "--url", server.grpc_url,
            "--protocol", "grpc", "--model", SMALL]
    assert main(args) == 1
    assert (f"FAILED {footage / 'v720' / 'v720.mp4'}: each frame is 1280x720 (0.9 million pixels), more than the "
            f"0.6 million the served model '{SMALL}' takes per picture: pass --downscale") in capsys.readouterr().out
    assert main([*args, "--downscale"]) == 0
    summary = json.loads((out / "v720.summary.json").read_text())
    assert summary["frames"] == 5 and summary["frames_per_request"] == 1
    first = next(video.masks(out / "v720.masks.mkv"))
    assert np.array_equal(first, _reference(server, next(video.frames(footage / "v720" / "v720.mp4")).rgb))


def test_a_failed_video_leaves_at_once(server, footage, tmp_path):
    """An MJPEG file whose frames turn from 1920x1080 to 1280x720 at frame 6: with --concurrency 4 the video
    fails with three requests of 2 frames in flight (seconds of work on a CPU). The command ends within 2 s
    of the failure (before this change, 6 s here: the pool's threads were joined at exit)."""
    proc = subprocess.Popen([sys.executable, "-m", "dnc.clients.cli", "segment", str(footage / "resize.avi"), "--out",
                             str(tmp_path / "out"), "--url", server.grpc_url, "--protocol", "grpc", "--model", SEG,
                             "--concurrency", "4"],
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    failed_at: list[float] = []

    def watch():
        for line in proc.stderr:
            if "failed: frame 6 is 1280x720, the frames before it 1920x1080" in line and not failed_at:
                failed_at.append(time.monotonic())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        status = proc.wait(timeout=120)
        ended = time.monotonic()
    finally:
        proc.kill()
        watcher.join()
    assert status == 1 and failed_at, status
    assert ended - failed_at[0] < 2.0, f"ended {ended - failed_at[0]:.1f} s after the failure"


def _raw_pixels(server, pictures: np.ndarray) -> str:
    """What the server itself answers a request sent without the client's sizing (uint8 N x H x W x 3)."""
    c = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput(F.PIXELS, list(pictures.shape), "UINT8")
    inp.set_data_from_numpy(pictures)
    try:
        c.infer(SMALL, [inp])
    except Exception as e:  # tritonclient's InferenceServerException: the server's message
        return str(e)
    finally:
        c.close()
    raise AssertionError("the request was answered")


def test_the_server_names_the_remedy_for_a_picture_or_a_request_too_large(server):
    """A picture above the per-picture limit is told to be downscaled (fewer pictures would not help); a
    request of pictures that each fit is told how many fit one request."""
    one_big = np.zeros((1, 720, 1280, 3), np.uint8)  # 0.92 million > 0.6 million per picture
    msg = _raw_pixels(server, one_big)
    assert "each picture is 1280 x 720" in msg and "per picture: send it downscaled" in msg, msg
    three = np.zeros((3, 400, 600, 3), np.uint8)  # 0.24 million each, 0.72 million in all
    msg = _raw_pixels(server, three)
    assert "0.7 million pixels in all" in msg and "send at most 2 of these per request" in msg, msg
    assert "max_pixels" in msg
