"""Abstention served by the real tritonserver (issue 25, item 3): a classifier and a segmenter whose class
lists carry thresholds answer "unknown" exactly as the same sets do in-process (HTTP and gRPC, abstention on
and turned off per request), `dnc classify` and `dnc segment` show it, and a swap between lists with
thresholds under load keeps every response's decision from one list."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dnc.clients.cli import main
from dnc.clients.client import DNCClient, collect_images
from dnc.clients.seg_results import UNKNOWN_COLOUR, segmentations
from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.export import runtime
from dnc.export.edit_set import edit_set
from dnc.export.recompute import compute_set
from dnc.export.seg_infer import InProcessSegmenter
from dnc.export.seg_recompute import compute_seg_set
from dnc.serving import repository
from dnc.serving.swap import swap
from dnc.training.scenes import write_scenes
from tests.serving.under_load import while_loaded

pytestmark = [pytest.mark.triton, pytest.mark.slow]
SEG = "scenes"
TIE = 1e-4  # served (server-side preprocessing) and in-process scores agree to this: decisions nearer are not compared


@pytest.fixture(scope="module")
def sets(tmp_path_factory, exported, seg_export, fm_folder):
    """Class lists with thresholds, made by `dnc centroids` from real images: the classifier's at accept 0.5
    (so that many known test images fall below: both decisions are common) and 0.95, the segmenter's at 0.5,
    served as an edit (`dnc centroids --from --remove Bag --add Bag=SCENES`: a segmentation set edited from
    masks is served like any)."""
    root = tmp_path_factory.mktemp("abstain-sets")
    embed = exported[0] / F.EMBED_FILE
    compute_set(embed, fm_folder / "train", root / "half", k=4, threads=1, accept=0.5)
    compute_set(embed, fm_folder / "train", root / "most", k=2, threads=1, accept=0.95)
    write_scenes(root / "scenes", "fine", size=32, train=30, test=4, seed=6)
    compute_seg_set(seg_export[2] / F.EMBED_FILE, root / "scenes", root / "seg-base", k=3, threads=1, accept=0.5)
    edit_set(root / "seg-base", seg_export[2] / F.EMBED_FILE, root / "seg", remove=["Bag"],
             add={"Bag": str(root / "scenes")}, k=2, threads=1, accept=0.5)
    return {"half": root / "half", "most": root / "most", "seg": root / "seg", "scenes": root / "scenes"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, exported, seg_export, sets):
    out = tmp_path_factory.mktemp("abstain-served") / "repo"
    repository.build(exported[0], out, centroids=sets["half"], top_k=3, threads=1)
    repository.build(seg_export[2], out, centroids=sets["seg"], name=SEG, threads=1)
    return out


def _far_pictures() -> list[np.ndarray]:
    """Real photographs no model saw (scikit-image's), gray as the classifier reads them, and noise."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.camera()]
    gray = [np.asarray(Image.fromarray(p).convert("L"))[:, :, None] for p in photos]
    rng = np.random.default_rng(1)
    return gray + [rng.integers(0, 256, (40, 40, 1), dtype=np.uint8)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_classifier_abstains_as_in_process(server, exported, sets, fm_folder, protocol):
    cs = centroid_set.load(sets["half"])
    files = collect_images([fm_folder / "test"])[::3]
    url = server.http_url if protocol == "http" else server.grpc_url
    with DNCClient(url, protocol) as c, DNCClient(url, protocol, abstain=False) as off:
        x = c.read(files)  # (N, 1, 28, 28) preprocessed here: the in-process input
        got = c.classify_files(files, top_k=3)
        far = [c.classify(p[None], top_k=3, name=F.PIXELS)[0] for p in _far_pictures()]
        unforced = off.classify_files(files, top_k=3)
    emb = runtime.session(exported[0] / F.EMBED_FILE, 1).run([F.EMBEDDING], {F.IMAGES: x})[0]
    scores = runtime.session(sets["half"] / F.HEAD_FILE, 1).run([F.SCORES], {F.EMBEDDING: emb})[0].astype(np.float64)
    best = scores.argmax(1)
    top = scores.max(1)
    want = top >= cs.thresholds[best]  # the decision, in float64 from the set's own thresholds
    clear = np.abs(top - cs.thresholds[best]) > TIE
    assert [p.set_id for p in got] == [cs.set_id] * len(files)
    assert np.array_equal(np.array([p.known for p in got])[clear], want[clear])
    assert np.allclose([p.threshold for p in got], cs.thresholds[best])
    assert all(p.answer == (p.label if p.known else "unknown") for p in got)
    assert 0.2 < want.mean() < 0.9  # both decisions are common at accept 0.5
    assert all(p.known for p in unforced) and [p.label for p in unforced] == [p.label for p in got]
    assert all(p.threshold == pytest.approx(cs.thresholds[p.top[0].class_id]) for p in far)
    assert all(p.known == (p.top[0].score >= p.threshold) for p in far if abs(p.top[0].score - p.threshold) > TIE)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_segmenter_labels_unknown_pixels_as_in_process(server, seg_export, sets, protocol):
    local = InProcessSegmenter(seg_export[2], sets["seg"], threads=1)
    thresholds = centroid_set.load(sets["seg"]).thresholds
    pictures = [np.asarray(Image.open(f).convert("RGB"))
                for f in sorted((sets["scenes"] / "images" / "test").iterdir())]
    pictures.append(np.random.default_rng(2).integers(0, 256, (48, 40, 3), dtype=np.uint8))
    url = server.http_url if protocol == "http" else server.grpc_url
    unknown_seen = 0
    with DNCClient(url, protocol, model=SEG) as c, DNCClient(url, protocol, model=SEG, abstain=False) as off:
        for pic in pictures:
            h, w = pic.shape[:2]
            want_on = segmentations(local.run([pic], maps=True), ["ref"])[0]
            want_off = segmentations(local.run([pic], maps=True, abstain=False), ["ref"], False)[0]
            got_on, got_off = c.segment(pic[None], maps=True)[0], off.segment(pic[None], maps=True)[0]
            # in-process, independently: unknown exactly where the best class's score is below its threshold
            below = want_off.maps[F.PIXEL_SCORE].astype(np.float64) < thresholds[want_off.labels]
            assert np.array_equal(want_on.labels == F.UNKNOWN_LABEL, below)
            near = np.abs(want_off.maps[F.PIXEL_SCORE] - thresholds[want_off.labels]) <= TIE  # ties may flip
            assert (got_on.labels == want_on.labels)[~near].mean() >= 0.999
            assert (got_off.labels == want_off.labels).mean() >= 0.999 and got_off.unknown_pixels == 0
            assert abs(got_on.unknown_pixels - want_on.unknown_pixels) <= near.sum() + h * w // 1000
            for got in (got_on, got_off):
                assert got.unknown_pixels == int((got.labels == F.UNKNOWN_LABEL).sum())
                assert got.unknown_pixels + sum(e.pixels for e in got.classes) == h * w
            unknown_seen += got_on.unknown_pixels
    assert unknown_seen > 0


def test_commands_show_unknown(server, sets, tmp_path, capsys):
    far = tmp_path / "far"
    far.mkdir()
    for i, p in enumerate(_far_pictures()):
        Image.fromarray(p[:, :, 0]).save(far / f"photo{i}.png")
    assert main(["classify", str(far), "--url", server.http_url, "--model", "dnc", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(r["answer"] == ("unknown" if not r["known"] else r["top"][0]["label"]) for r in rows)
    assert main(["classify", str(far), "--url", server.http_url, "--model", "dnc"]) == 0
    table = capsys.readouterr().out
    unknown = sum(not r["known"] for r in rows)
    assert f"{len(rows)} image(s), {unknown} unknown" in table and "thresh" in table
    assert main(["classify", str(far), "--url", server.http_url, "--model", "dnc", "--no-abstain", "--json"]) == 0
    assert all(json.loads(line)["known"] for line in capsys.readouterr().out.splitlines())
    scenes = sorted((sets["scenes"] / "images" / "test").iterdir())
    out = tmp_path / "seg"
    assert main(["segment", *map(str, scenes), "--url", server.http_url, "--model", SEG, "--out", str(out)]) == 0
    evidence = [json.loads(f.read_text()) for f in sorted(out.glob("*.evidence.json"))]
    assert len(evidence) == len(scenes) and any(e["unknown_pixels"] for e in evidence)
    for e in evidence:
        name = out / Path(e["source"]).stem
        labels = np.asarray(Image.open(f"{name}.labels.png"))
        assert int((labels == F.UNKNOWN_LABEL).sum()) == e["unknown_pixels"] and e["abstain"] is True
        if e["unknown_pixels"]:  # unknown pixels are white in the label map's palette, and named in the legend
            im = Image.open(f"{name}.labels.png")
            assert tuple(im.getpalette()[3 * F.UNKNOWN_LABEL:3 * F.UNKNOWN_LABEL + 3]) == UNKNOWN_COLOUR
    assert "unknown" in capsys.readouterr().out
    # a rerun with abstention off redoes every picture (they were made with it on)
    assert main(["segment", *map(str, scenes), "--url", server.http_url, "--model", SEG, "--out", str(out),
                 "--no-abstain"]) == 0
    evidence = [json.loads(f.read_text()) for f in sorted(out.glob("*.evidence.json"))]
    assert all(e["unknown_pixels"] == 0 and e["abstain"] is False for e in evidence)


def test_a_swap_between_lists_with_thresholds_under_load_keeps_each_answer_from_one_list(server, repo, sets,
                                                                                       fm_folder):
    lists = {cs.set_id: cs for cs in (centroid_set.load(sets["half"]), centroid_set.load(sets["most"]))}
    files = collect_images([fm_folder / "test"])[::7][:8]
    stop, failures, seen, lock = threading.Event(), [], [], threading.Lock()

    def load(protocol):
        with DNCClient(server.http_url if protocol == "http" else server.grpc_url, protocol) as c:
            x = c.read(files)
            while not stop.is_set():
                try:
                    preds = c.classify(x, top_k=3)
                except Exception as e:  # any failure counts
                    with lock:
                        failures.append(repr(e))
                    continue
                for p in preds:
                    cs = lists.get(p.set_id)
                    ok = (cs is not None and p.threshold == pytest.approx(float(cs.thresholds[p.top[0].class_id]))
                          and p.top[0].label == cs.class_names[p.top[0].class_id]
                          and (abs(p.top[0].score - p.threshold) <= TIE or p.known == (p.top[0].score >= p.threshold)))
                    with lock:
                        seen.append((p.set_id, ok))

    swaps = while_loaded(load, ("http", "grpc"), lambda: [swap(repo, s, server.grpc_url, name="dnc")
                                                            for s in (sets["most"], sets["half"], sets["most"])], stop)
    assert failures == []
    assert len(seen) > 20 and all(ok for _, ok in seen) and {s for s, _ in seen} == set(lists)
    assert [s["to"] for s in swaps] == [centroid_set.load(sets[k]).set_id for k in ("most", "half", "most")]


@pytest.mark.parametrize("abstain", [np.zeros((2, 1), bool), np.zeros((1, 3), bool), np.zeros((1, 1), np.float32)])
def test_a_malformed_abstain_input_is_refused_and_the_server_keeps_serving(server, fm_folder, abstain):
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    pic = np.asarray(Image.open(collect_images([fm_folder / "test"])[0]))[None, :, :, None]  # (1, 28, 28, 1)
    c = http.InferenceServerClient(server.http_url)
    inputs = [http.InferInput(F.PIXELS, list(pic.shape), "UINT8"),
              http.InferInput(F.ABSTAIN, list(abstain.shape), np_to_triton_dtype(abstain.dtype))]
    inputs[0].set_data_from_numpy(pic)
    inputs[1].set_data_from_numpy(abstain)
    with pytest.raises(InferenceServerException) as e:
        c.infer("dnc", inputs)
    assert e.value.status() == "400", e.value
    with DNCClient(server.http_url) as ok:  # still serving, abstention as set
        assert ok.classify(pic, name=F.PIXELS)[0].set_id


def _strip_abstention(folder: Path) -> None:
    """What a repository built before abstention looks like: no abstain input, no known / threshold /
    unknown_pixels outputs, in the entry and head configs (the step graphs are today's; the python step
    answers only the outputs its config names)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    cfg_path = folder / "config.pbtxt"
    cfg = text_format.Parse(cfg_path.read_text(), mc.ModelConfig())
    drop = {F.ABSTAIN, F.KNOWN, F.THRESHOLD, F.UNKNOWN_PIXELS}
    keep_in = [t for t in cfg.input if t.name not in drop]
    keep_out = [t for t in cfg.output if t.name not in drop]
    del cfg.input[:], cfg.output[:]
    cfg.input.extend(keep_in)
    cfg.output.extend(keep_out)
    for step in cfg.ensemble_scheduling.step:
        for name in drop:
            step.input_map.pop(name, None)
            step.output_map.pop(name, None)
    cfg_path.write_text(text_format.MessageToString(cfg))


def test_a_repository_built_before_abstention_is_still_answered(exported, seg_export, tmp_path):
    from dnc.serving.server import TritonServer

    old = tmp_path / "old-repo"
    repository.build(exported[0], old, top_k=3, threads=1)
    repository.build(seg_export[2], old, name=SEG, threads=1)
    for model in ("dnc", "dnc_head", SEG, f"{SEG}_head"):
        _strip_abstention(old / model)
    s = TritonServer(old, 0, 0, 0)
    s.start(timeout=180)
    try:
        pic = _far_pictures()[0]  # (H, W, 1) uint8
        with DNCClient(s.http_url) as c, DNCClient(s.grpc_url, "grpc", abstain=False) as off:
            for client in (c, off):
                p = client.classify(pic[None], name=F.PIXELS)[0]
                assert p.known and p.threshold == -1.0 and p.answer == p.label
        with DNCClient(s.http_url, model=SEG) as c:
            seg = c.segment(np.repeat(pic, 3, axis=2)[None])[0]
            assert seg.unknown_pixels == 0 and int(seg.labels.max()) < len(seg.class_names)
    finally:
        s.stop()
