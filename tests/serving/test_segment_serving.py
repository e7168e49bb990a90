"""A classifier and a segmenter served side by side by one real tritonserver: raw inputs (uint8 pixels,
PNG/JPEG bytes) against in-process onnxruntime of the same preprocessing, segmentation at several sizes over
HTTP and gRPC, score maps only when asked, a segmenter swap under concurrent load while the classifier keeps
its list, `dnc segment` files, and hostile raw inputs."""

import io
import json
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpc
from PIL import Image

from dnc.clients.cli import main
from dnc.clients.client import DNCClient, collect_images, read_picture
from dnc.clients.seg_results import LEGEND_MIN_WIDTH, segmentations
from dnc.core import centroid_set, preprocess
from dnc.core import formats as F
from dnc.export import runtime
from dnc.export.seg_infer import InProcessSegmenter
from dnc.export.seg_recompute import compute_seg_set
from dnc.serving import repository
from dnc.serving.swap import Probe, swap
from dnc.training.scenes import write_scenes
from tests.serving.under_load import while_loaded

pytestmark = [pytest.mark.triton, pytest.mark.slow]
SEG = "scenes"
SIZES = [(32, 32), (37, 53), (64, 48), (480, 640)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, exported, seg_export):
    out = tmp_path_factory.mktemp("two-models") / "repo"
    repository.build(exported[0], out, top_k=3, threads=1)
    repository.build(seg_export[2], out, name=SEG, threads=1)
    return out


@pytest.fixture(scope="module")
def coarse_set(tmp_path_factory, seg_export):
    """Another class list for the segmenter (6 coarse classes), recomputed from masks: no retraining."""
    root = tmp_path_factory.mktemp("coarse")
    write_scenes(root / "scenes", "coarse", size=32, train=24, test=4, seed=5)
    compute_seg_set(seg_export[2] / F.EMBED_FILE, root / "scenes", root / "set", k=2, threads=1, seed=0)
    return root / "set"


@pytest.fixture(scope="module")
def pictures():
    """Real pictures: scenes of Fashion-MNIST items over real textures, at several sizes (RGB uint8)."""
    rng = np.random.default_rng(7)
    base = write_scenes_pixels()
    out = []
    for i, (h, w) in enumerate(SIZES):
        im = Image.fromarray(base[i % len(base)]).resize((w, h), Image.BILINEAR)
        out.append(np.asarray(im) if i % 2 == 0 else np.asarray(im) // 2 + rng.integers(0, 120, (h, w, 3),
                                                                                         dtype=np.uint8))
    return out


def write_scenes_pixels():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        write_scenes(Path(d) / "s", "fine", size=64, train=4, test=4, seed=9)
        return [np.asarray(Image.open(f).convert("RGB")) for f in sorted((Path(d) / "s" / "images" / "test").iterdir())]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_classifier_takes_pixels_and_bytes(server, exported, fm_folder, protocol):
    """uint8 pixels and PNG bytes give the in-process answer of the same preprocessing (scores < 1e-4)."""
    files = collect_images([fm_folder / "test"])[::9][:8]
    url = server.http_url if protocol == "http" else server.grpc_url
    with DNCClient(url, protocol) as c:
        prep = c.preprocessing
        pics = [read_picture(f, prep["color"]) for f in files]
        rgb = [np.repeat(p, 3, axis=2) for p in pics]  # the same pictures as RGB: the server converts to gray
        ref_x = preprocess.normalise(np.stack([preprocess.prepare_pixels(p, prep, 10**6) for p in pics]), prep)
        merged = runtime.session(exported[0] / F.MERGED_FILE, 1)
        want = merged.run([F.SCORES], {F.IMAGES: ref_x})[0]
        got = {
            "pixels": c.infer(np.stack(pics), (F.SCORES,), F.PIXELS)[F.SCORES],
            "rgb pixels": c.infer(np.stack(rgb), (F.SCORES,), F.PIXELS)[F.SCORES],
            "png": c.infer(np.array([[_png(p[:, :, 0])] for p in pics], object), (F.SCORES,), F.ENCODED)[F.SCORES],
            "float32": c.infer(c.read(files), (F.SCORES,))[F.SCORES],
        }
        big = np.asarray(Image.fromarray(pics[0][:, :, 0]).resize((97, 61), Image.BILINEAR))  # resized in the server
        got_big = c.infer(big[None, :, :, None], (F.SCORES,), F.PIXELS)[F.SCORES]
    for kind, scores in got.items():
        assert np.abs(scores - want).max() < 1e-4, kind
    ref_big = preprocess.normalise(preprocess.prepare_pixels(big, prep, 10**6)[None], prep)
    assert np.abs(got_big - merged.run([F.SCORES], {F.IMAGES: ref_big})[0]).max() < 1e-4


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_segmenter_equals_in_process_at_several_sizes(server, seg_export, pictures, protocol):
    local = InProcessSegmenter(seg_export[2], threads=1)
    url = server.http_url if protocol == "http" else server.grpc_url
    with DNCClient(url, protocol, model=SEG) as c:
        assert str(c.task) == "segmentation"  # (a task description or its name)
        for pic in pictures:
            h, w = pic.shape[:2]
            want = segmentations(local.run([pic], maps=True), ["ref"])[0]
            for how, x in (("pixels", pic[None]), ("encoded", np.array([[_png(pic)]], object))):
                name = F.PIXELS if how == "pixels" else F.ENCODED
                got = c.segment(x, maps=True, name=name)[0]
                assert got.labels.shape == (h, w) and got.labels.dtype == np.uint8, (how, h, w)
                assert (got.labels == want.labels).mean() >= 0.999, (how, h, w)
                assert np.abs(got.maps[F.PIXEL_SCORE] - want.maps[F.PIXEL_SCORE]).max() < 1e-4
                assert got.set_id == want.set_id and got.class_names == want.class_names
                assert [e.class_id for e in got.classes] == [e.class_id for e in want.classes]
                assert sum(e.pixels for e in got.classes) == h * w
            # without `maps`, the maps travel as 0 x 0 tensors: labels and evidence only
            plain = c.infer(pic[None], None, F.PIXELS)
            assert plain[F.PIXEL_SCORE].shape == (1, 0, 0) and plain[F.PIXEL_SUBCENTROID].size == 0
            assert plain[F.LABELS].shape == (1, h, w)


def test_default_response_is_about_a_byte_per_pixel(server, pictures):
    """A 640x480 frame over HTTP, no outputs named, binary tensors: the labels as uint8 and the evidence."""
    pic = pictures[-1]
    assert pic.shape[:2] == (480, 640)
    status, body = _raw(server, SEG, [(F.PIXELS, [1, *pic.shape], "UINT8", pic.tobytes())],
                        {"binary_data_output": True})
    assert status == 200
    assert len(body) <= 1.1 * 480 * 640, len(body)  # the whole response, JSON header included
    header = json.loads(body[:body.index(b"}]}") + 3])
    sizes = {o["name"]: o["parameters"]["binary_data_size"] for o in header["outputs"]}
    assert sizes[F.LABELS] == 480 * 640 and sizes[F.PIXEL_SCORE] == 0 and sizes[F.PIXEL_MARGIN] == 0


def test_segmenter_swap_under_load_while_the_classifier_keeps_its_list(server, repo, seg_export, coarse_set,
                                                                       exported, capsys):
    first, second = centroid_set.load(seg_export[2]), centroid_set.load(coarse_set)
    names = {first.set_id: first.class_names, second.set_id: second.class_names}
    cls_before = Probe(server.grpc_url, F.DEFAULT_MODEL, repository.model_info(repo, "dnc")["preprocessing"]).set_id()
    pic = write_scenes_pixels()[0]
    stop, failures, seen, lock = threading.Event(), [], [], threading.Lock()

    def load(protocol):
        with DNCClient(server.http_url if protocol == "http" else server.grpc_url, protocol, model=SEG) as c:
            while not stop.is_set():
                try:
                    segs = c.segment(np.stack([pic, pic]))
                except Exception as e:  # any failure counts
                    with lock:
                        failures.append(repr(e))
                    continue
                ok = all(s.set_id in names and s.class_names == names[s.set_id]
                         and all(e.label == names[s.set_id][e.class_id] for e in s.classes)
                         and all(v < len(names[s.set_id]) or v == F.UNKNOWN_LABEL for v in np.unique(s.labels))
                         and s.unknown_pixels == int((s.labels == F.UNKNOWN_LABEL).sum()) for s in segs)
                with lock:
                    seen.append((segs[0].set_id, ok and segs[0].set_id == segs[1].set_id))

    lists = (coarse_set, seg_export[2], coarse_set)
    swaps = while_loaded(load, ("http", "grpc", "http"), lambda: [swap(repo, s, server.grpc_url, name=SEG)
                                                                  for s in lists], stop)
    assert failures == []
    assert len(seen) > 20 and all(ok for _, ok in seen) and {s for s, _ in seen} == set(names)
    assert [s["to"] for s in swaps] == [second.set_id, first.set_id, second.set_id]
    assert repository.model_info(repo, SEG)["set"]["set_id"] == second.set_id
    info = repository.model_info(repo, "dnc")
    assert Probe(server.grpc_url, "dnc", info["preprocessing"]).set_id() == cls_before == info["set"]["set_id"]
    # a classifier's set cannot become the segmenter's list, nor the other way round, and the refusal says why
    # (not the embedding fingerprint); nothing changes
    with pytest.raises(ValueError, match=f"is a classification set; model {SEG} is a segmenter .served segmenters "
                       "take sets made from a segmentation folder's masks: `dnc centroids` on a segmentation folder"):
        swap(repo, exported[0], server.grpc_url, name=SEG)
    assert main(["swap", "--repo", str(repo), "--model", "dnc", "--centroids", str(seg_export[2]), "--url",
                 server.grpc_url]) == 2
    err = capsys.readouterr().err
    assert "is a segmentation set; model dnc is a classifier (served classifiers take sets made from class folders" \
        in err and "fingerprint" not in err and "embedding model" not in err
    assert repository.model_info(repo, "dnc")["set"]["set_id"] == cls_before
    with pytest.raises(ValueError, match="serves 2 models"):
        swap(repo, coarse_set, server.grpc_url)
    assert repository.model_info(repo, SEG)["set"]["set_id"] == second.set_id


def test_segment_command_writes_labels_overlay_and_evidence(server, repo, seg_export, tmp_path, capsys, pictures):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, pic in enumerate(pictures[:3]):
        Image.fromarray(pic).save(folder / f"p{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.new("RGB", (2100, 2100)).save(folder / "huge.png")  # refused before sending: > 4.2 Mpx
    assert main(["segment", str(folder), "--out", str(tmp_path / "served"), "--model", SEG, "--url",
                 server.grpc_url, "--protocol", "grpc"]) == 1  # both are reported, the others written
    out = capsys.readouterr()
    assert "skipped" in out.err and "broken.png" in out.err and "3 image(s)" in out.out
    assert "huge.png" in out.err and "more than the 4.2 million" in out.err and "--downscale" in out.err
    assert main(["segment", str(folder / "p0.png"), str(folder / "p1.png"), str(folder / "p2.png"), "--out",
                 str(tmp_path / "local"), "--in-process", str(seg_export[2]), "--json", "--centroids",
                 str(repository.head_dir(repo, SEG) / repository.SET_FOLDER)]) == 0  # the list served now
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3
    for i, pic in enumerate(pictures[:3]):
        served = np.asarray(Image.open(tmp_path / "served" / f"p{i}.labels.png"))
        local = np.asarray(Image.open(tmp_path / "local" / f"p{i}.labels.png"))
        assert served.shape == pic.shape[:2] and (served == local).mean() >= 0.999
        assert Image.open(tmp_path / "served" / f"p{i}.labels.png").mode == "P"
        ow, oh = Image.open(tmp_path / "served" / f"p{i}.overlay.png").size  # the picture, a legend strip below
        assert ow == max(pic.shape[1], LEGEND_MIN_WIDTH) and oh > pic.shape[0]
        ev = json.loads((tmp_path / "served" / f"p{i}.evidence.json").read_text())
        assert ev["height"] == pic.shape[0]  # every pixel is in one class or unknown (the swapped-in list abstains)
        assert abs(sum(c["fraction"] for c in ev["classes"]) + ev["unknown_fraction"] - 1) < 1e-6
        assert ev["unknown_pixels"] == int((served == F.UNKNOWN_LABEL).sum())
    files = [str(folder / f"p{i}.png") for i in range(3)]  # three sizes: one request each, as PNG bytes
    assert main(["segment", *files, "--out", str(tmp_path / "bytes"), "--model", SEG, "--url", server.http_url,
                 "--input", "encoded", "--batch-size", "3"]) == 0
    for i in range(3):
        assert (np.asarray(Image.open(tmp_path / "bytes" / f"p{i}.labels.png"))
                == np.asarray(Image.open(tmp_path / "served" / f"p{i}.labels.png"))).all()
    capsys.readouterr()
    # without --model: the one segmenter served beside the classifier, said on stderr
    assert main(["segment", str(folder / "p0.png"), "--out", str(tmp_path / "x"), "--url", server.http_url]) == 0
    assert f"dnc segment: using the served segmenter '{SEG}'" in capsys.readouterr().err
    assert (np.asarray(Image.open(tmp_path / "x" / "p0.labels.png"))
            == np.asarray(Image.open(tmp_path / "served" / "p0.labels.png"))).all()
    # a model of the wrong task, or one not served, is refused naming the served models of the right task
    assert main(["segment", str(folder / "p0.png"), "--out", str(tmp_path / "x"), "--url", server.grpc_url,
                 "--protocol", "grpc", "--model", "dnc"]) == 2
    assert (f"model 'dnc' on {server.grpc_url} is a classifier, not a segmenter; served segmenters: {SEG} (pass "
            f"--model {SEG})") in capsys.readouterr().err
    assert main(["classify", str(folder / "p0.png"), "--url", server.http_url, "--model", SEG]) == 2
    assert "is a segmenter, not a classifier; served classifiers: dnc" in capsys.readouterr().err
    assert main(["classify", str(folder / "p0.png"), "--url", server.http_url, "--model", "nope"]) == 2
    assert "model 'nope' is not ready" in (err := capsys.readouterr().err) and "served classifiers: dnc" in err
    assert main(["classify", str(folder / "p0.png"), "--url", server.http_url, "--json"]) == 0
    out = capsys.readouterr()
    assert "dnc classify: using the served classifier 'dnc'" in out.err and '"set_id"' in out.out


def _raw(server, model, inputs, parameters=None):
    """(status, body) of a binary-tensor HTTP request built by hand: inputs are (name, shape, dtype, bytes)."""
    import urllib.error
    import urllib.request

    header = {"inputs": [{"name": n, "shape": s, "datatype": d, "parameters": {"binary_data_size": len(b)}}
                         for n, s, d, b in inputs], **({"parameters": parameters} if parameters else {})}
    head = json.dumps(header).encode()
    req = urllib.request.Request(f"http://{server.http_url}/v2/models/{model}/infer", data=head + b"".join(
        b for *_, b in inputs), headers={"Inference-Header-Content-Length": str(len(head)),
                                         "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(len(b).to_bytes(4, "little") + b for b in items)


def _with_declared_size(png: bytes, w: int, h: int) -> bytes:
    import struct
    import zlib

    ihdr = bytearray(png[16:29])
    ihdr[0:8] = struct.pack(">II", w, h)
    return png[:16] + bytes(ihdr) + struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF) + png[33:]


def test_hostile_raw_inputs_are_refused_and_the_server_stays_up(server, pictures):
    png = _png(pictures[0])
    cases = {
        "huge declared PNG": (SEG, [(F.ENCODED, [1, 1], "BYTES", _bytes_tensor([_with_declared_size(
            png, 40000, 40000)]))], "million"),
        "PNG declaring 3000 x 3000": (SEG, [(F.ENCODED, [1, 1], "BYTES", _bytes_tensor([_with_declared_size(
            png, 3000, 3000)]))], "more than"),
        "truncated PNG": (SEG, [(F.ENCODED, [1, 1], "BYTES", _bytes_tensor([png[:len(png) // 2]]))], "cannot decode"),
        "not an image": (F.DEFAULT_MODEL, [(F.ENCODED, [1, 1], "BYTES", _bytes_tensor([b"GIF89a" + bytes(40)]))],
                         "not a PNG or JPEG"),
        "empty bytes": (F.DEFAULT_MODEL, [(F.ENCODED, [1, 1], "BYTES", _bytes_tensor([b""]))], "empty"),
        "four channels": (SEG, [(F.PIXELS, [1, 8, 8, 4], "UINT8", bytes(256))], "1 (gray) or 3 (RGB)"),
        "two channels": (F.DEFAULT_MODEL, [(F.PIXELS, [1, 8, 8, 2], "UINT8", bytes(128))], "1 (gray) or 3 (RGB)"),
        "huge declared pixels": (SEG, [(F.PIXELS, [1, 60000, 60000, 3], "UINT8", bytes(300))], ""),
        "3000 x 3000 pixels": (SEG, [(F.PIXELS, [1, 3000, 3000, 1], "UINT8", bytes(9_000_000))], "more than"),
        "thin picture": (F.DEFAULT_MODEL, [(F.PIXELS, [1, 2, 400, 1], "UINT8", bytes(800))], "aspect ratio"),
        "no pixels": (SEG, [(F.PIXELS, [1, 0, 5, 3], "UINT8", b"")], "no pixels"),
        "two inputs at once": (SEG, [(F.PIXELS, [1, 4, 4, 3], "UINT8", bytes(48)),
                                     (F.ENCODED, [1, 1], "BYTES", _bytes_tensor([png]))], "exactly one"),
        "pictures of two sizes in one request": (SEG, [(F.ENCODED, [2, 1], "BYTES", _bytes_tensor(
            [png, _png(pictures[1])]))], "different sizes"),
        "three 2048x2048 PNGs in one request (12.6 million pixels)": (SEG, [(F.ENCODED, [3, 1], "BYTES", _bytes_tensor(
            [_png(np.zeros((2048, 2048, 3), np.uint8))] * 3))], "million pixels in all"),
        "8 items of 2048x2048 output, to the head": (f"{SEG}_head", [
            (F.PIXEL_EMBEDDING, [8, 8, 1, 1], "FP32", np.ones(64, np.float32).tobytes()),
            (F.OUTPUT_SIZE, [8, 2], "INT64", np.tile(np.array([2048, 2048], np.int64), 8).tobytes())],
            "million pixels in all"),
        "output size too large, to the head": (f"{SEG}_head", [
            (F.PIXEL_EMBEDDING, [1, 8, 2, 2], "FP32", np.ones(32, np.float32).tobytes()),
            (F.OUTPUT_SIZE, [1, 2], "INT64", np.array([100000, 100000], np.int64).tobytes())], "output size"),
        "negative output size, to the head": (f"{SEG}_head", [
            (F.PIXEL_EMBEDDING, [1, 8, 2, 2], "FP32", np.ones(32, np.float32).tobytes()),
            (F.OUTPUT_SIZE, [1, 2], "INT64", np.array([-4, 4], np.int64).tobytes())], "output size"),
    }
    for what, (model, inputs, says) in cases.items():
        status, body = _raw(server, model, inputs)
        assert status == 400, (what, status, body[:300])
        assert says.encode() in body, (what, body[:300])
    # still serving, both models
    with DNCClient(server.http_url, model=SEG) as c:
        assert c.segment(pictures[0][None])[0].labels.shape == pictures[0].shape[:2]
    g = grpc.InferenceServerClient(server.grpc_url)
    assert g.is_model_ready(F.DEFAULT_MODEL) and g.is_model_ready(SEG)
    g.close()


def test_kserve_json_pixels_as_the_readme_shows(server, fm_folder):
    """The README's curl request: KServe v2 JSON, uint8 pixels as a list, outputs named."""
    import urllib.request

    f = collect_images([fm_folder / "test" / "Sandal"])[0]
    im = Image.open(f).convert("L")
    body = {"inputs": [{"name": "pixels", "shape": [1, im.size[1], im.size[0], 1], "datatype": "UINT8",
                        "data": np.asarray(im).ravel().tolist()}],
            "outputs": [{"name": n} for n in ("topk_label", "topk_score", "margin", "set_id")]}
    req = urllib.request.Request(f"http://{server.http_url}/v2/models/dnc/infer", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        got = {o["name"]: o["data"] for o in json.loads(r.read())["outputs"]}
    with DNCClient(server.http_url) as c:
        want = c.classify_files([f], top_k=3)[0]
    assert got["topk_label"] == [r.label for r in want.top] and got["set_id"] == [want.set_id]
    assert abs(got["topk_score"][0] - want.top[0].score) < 1e-5


def test_a_model_added_to_a_served_repository_is_loaded(server, repo, exported):
    repository.build(exported[0], repo, name="late", top_k=2, threads=1)
    server.wait_ready(60, "late")
    with DNCClient(server.grpc_url, "grpc", model="late") as c:
        assert str(c.task) == "classification"  # (a task description or its name)
    assert sorted(repository.read_info(repo)["models"]) == ["dnc", "late", SEG]
    with DNCClient(server.http_url, model=None, task="classification") as c:  # dnc, the default name, of the two
        assert c.model == "dnc" and c.chosen and c.served == {"dnc": "classification", "late": "classification",
                                                              SEG: "segmentation"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from dnc.training.scenes import write_clips

    root = tmp_path_factory.mktemp("served-clips") / "clips"
    write_clips(root, 1, "fine", height=48, width=64, frames=12, fps=10, seed=8)
    write_clips(root.with_name("long"), 1, "fine", height=48, width=64, frames=240, fps=24, seed=9)
    return root


def test_video_job_through_triton_equals_in_process(server, repo, clips, seg_export, tmp_path, capsys):
    served_set = str(repository.head_dir(repo, SEG) / repository.SET_FOLDER)
    for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
        named = ["--model", SEG] if protocol == "http" else []  # over gRPC, the one segmenter served is chosen
        assert main(["segment", str(clips / "videos"), "--out", str(tmp_path / protocol), *named, "--url",
                     url, "--protocol", protocol, "--batch-size", "5", "--concurrency", "3"]) == 0
    assert f"using the served segmenter '{SEG}'" in capsys.readouterr().err
    assert main(["segment", str(clips / "videos"), "--out", str(tmp_path / "local"), "--in-process",
                 str(seg_export[2]), "--centroids", served_set, "--threads", "1"]) == 0
    capsys.readouterr()
    from dnc.core import video

    local = list(video.masks(tmp_path / "local" / "clip000.masks.mkv"))
    assert len(local) == 12
    for protocol in ("http", "grpc"):
        served = list(video.masks(tmp_path / protocol / "clip000.masks.mkv"))
        assert len(served) == 12 and np.mean([(a == b).mean() for a, b in zip(served, local, strict=True)]) >= 0.999


def test_a_swap_during_a_video_loses_no_frame(server, repo, clips, seg_export, coarse_set, tmp_path):
    from dnc.clients.video_job import ServerSegmenter, run_job

    class Paced(ServerSegmenter):  # a slower client, so that the swap lands mid-video
        def segment(self, frames):
            time.sleep(0.05)
            return super().segment(frames)

    video_path = clips.with_name("long") / "videos" / "clip000.mp4"
    out = tmp_path / "out"
    now = repository.model_info(repo, SEG)["set"]["set_id"]
    target = seg_export[2] if now == centroid_set.load(coarse_set).set_id else coarse_set
    names = {s.set_id: s.class_names for s in (centroid_set.load(seg_export[2]), centroid_set.load(coarse_set))}
    result = {}
    job = threading.Thread(target=lambda: result.update(run_job([video_path], out, Paced(server.http_url, "http", SEG),
                                                                batch_size=2, concurrency=2)))
    job.start()
    def partial():  # the evidence's temporary (training/safe_files: an unpredictable name)
        return next(out.glob(".clip000.evidence.jsonl.*.dnc-tmp"), None)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ((p := partial()) and p.read_text().count("\n") >= 20):
        time.sleep(0.05)
    swapped = swap(repo, target, server.grpc_url, name=SEG)
    job.join(120)
    assert result["failed"] == {} and result["frames"] == 240
    lines = [json.loads(line) for line in (out / "clip000.evidence.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(240))
    from dnc.core import video

    assert len(list(video.masks(out / "clip000.masks.mkv"))) == 240
    sets = [line["set_id"] for line in lines]
    assert sets[0] == now and sets[-1] == swapped["to"]  # the list changed mid-video
    assert set(sets) == {now, swapped["to"]}  # (two requests in flight may reach the server in either order)
    assert all(c["label"] == names[line["set_id"]][c["class_id"]] for line in lines for c in line["classes"])
    # a rerun redoes it (not all of it is from the list served now), asking the server which list it serves
    seg = ServerSegmenter(server.grpc_url, "grpc", SEG)
    again = run_job([video_path], out, seg, batch_size=8, concurrency=2)
    assert again["redone"] == {str(video_path): f"made with lists {', '.join(sorted({now, swapped['to']}))} (a swap "
                                                f"mid-video), now {swapped['to']}"}
    assert again["per_video"][str(video_path)]["class_lists"] == {swapped["to"]: 240}
    assert run_job([video_path], out, seg)["skipped"] == [str(video_path)]
    seg.close()


def test_a_video_job_closes_its_connections_after_each_video(server, clips, tmp_path):
    from dnc.clients.video_job import ServerSegmenter, collect_videos, run_job

    folder = tmp_path / "three"
    folder.mkdir()
    for i in range(3):
        (folder / f"v{i}.mp4").write_bytes((clips / "videos" / "clip000.mp4").read_bytes())
    seg = ServerSegmenter(server.grpc_url, "grpc", SEG)
    opened = []
    real = seg._client

    def counting():
        c = real()
        if c not in opened:
            opened.append(c)
        return c

    seg._client = counting
    s = run_job(collect_videos([folder]), tmp_path / "out", seg, batch_size=4, concurrency=2)
    assert s["segmented"] == 3 and not s["failed"]
    assert seg._clients == [] and len(opened) >= 3  # new threads per video, their connections closed after it
    seg.close()
