"""A segmenter's export on real scenes: ONNX against PyTorch at several sizes, the files and manifest;
centroid sets from masks anchored to real pixels; mIoU with onnxruntime equal to PyTorch's; refusals."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as tF

from dnc.clients.cli import main
from dnc.core import centroid_set, manifest, preprocess
from dnc.core import formats as F
from dnc.core.images import DataError
from dnc.core.seg_folder import read_pair
from dnc.export import runtime
from dnc.export.exporter import export_checkpoint
from dnc.export.seg_evaluate import evaluate_seg_folder
from dnc.export.seg_recompute import compute_seg_set
from dnc.training import checkpoint as ckpt_io
from dnc.training.loop import TrainConfig, train
from dnc.training.model import ModelConfig
from dnc.training.seg_task import SegmentationTask

pytestmark = pytest.mark.slow


def test_segmenter_export_matches_pytorch_at_several_sizes(seg_export):
    scenes, path, out, m = seg_export
    assert m["task"] == "segmentation" and m["parity"]["passed"]
    kinds = [k for k, v in m["parity"].items() if isinstance(v, dict)]
    assert kinds == ["real 32x32", "random 37x53", "random 96x80", "random 64x64"]
    for kind in kinds:
        for part in ("chained", "merged"):
            row = m["parity"][kind][part]
            assert row["label_agreement"] >= 0.999 and row["pixel_score_max_abs"] < 1e-4, (kind, part)
    for f in (F.EMBED_FILE, F.EMBED_FP16_FILE, F.HEAD_FILE, F.MERGED_FILE, F.SET_TENSORS_FILE, F.MANIFEST_FILE):
        assert (out / f).is_file(), f
    back = manifest.read(out)
    assert back["preprocessing"]["task"] == "segmentation" and back["preprocessing"]["resize"].startswith("none")
    assert [t["name"] for t in back["tensors"]["head_outputs"]] == [s.name for s in F.SEG_HEAD_OUTPUTS]
    cs = centroid_set.load(out)
    assert cs.task == "segmentation" and cs.ks == [3] * 10 + [2]
    assert back["subcentroids"]["k_per_class"] == cs.ks
    # independently of the export's own check: the merged graph on real scenes against the PyTorch model
    model = ckpt_io.load(path).build_model()
    merged = runtime.session(out / F.MERGED_FILE, 2)
    pixels = [read_pair(scenes / f"images/test/{i:06d}.png", scenes / f"masks/test/{i:06d}.png")[0] for i in range(12)]
    x = preprocess.normalise(np.stack(pixels), back["preprocessing"])
    labels, score, counts = merged.run([F.LABELS, F.PIXEL_SCORE, F.CLASS_PIXELS], {F.IMAGES: x})
    with torch.no_grad():
        logits = model(torch.from_numpy(x))[1]
    want = logits.argmax(1).numpy()
    assert labels.dtype == np.uint8 and labels.shape == (12, 32, 32)
    assert (labels == want).mean() >= 0.999 and len(np.unique(labels)) >= 3
    np.testing.assert_allclose(score, logits.max(1).values.numpy() * model.head.temperature, atol=1e-4)
    assert np.array_equal(counts.sum(1), np.full(12, 32 * 32))


def test_onnx_miou_equals_pytorch(seg_export):
    scenes, path, out, _ = seg_export
    model = ckpt_io.load(path).build_model()
    task = SegmentationTask()
    want = task.evaluate(model, task.load(str(scenes), "test", model.cfg, 0), torch.device("cpu"))
    got = evaluate_seg_folder(out / F.EMBED_FILE, out, scenes, threads=2)
    assert got["images"] == 12
    assert got["miou"] == pytest.approx(want["miou"], abs=0.05)
    assert got["pixel_acc"] == pytest.approx(want["pixel_acc"], abs=0.05)


def test_centroid_set_from_masks_is_anchored_to_real_pixels(seg_export, tmp_path):
    scenes, _, out, _ = seg_export
    res = compute_seg_set(out / F.EMBED_FILE, scenes, tmp_path / "set", k=4, threads=2, seed=3)
    cs = centroid_set.load(tmp_path / "set", centroid_set.fingerprint_file(out / F.EMBED_FILE), 8)
    assert cs.task == "segmentation" and res["images"] == 48 and cs.anchored
    assert (tmp_path / "set" / F.HEAD_FILE).is_file()
    sess = runtime.session(out / F.EMBED_FILE, 2)
    prep = runtime.preprocessing_of(sess)
    checked = 0
    for c in range(cs.num_classes):
        for k in range(cs.ks[c]):
            name, (y, xx) = cs.exemplar_names[c][k], cs.exemplar_yx[c, k]
            image, mask = read_pair(name, name.replace("/images/", "/masks/"))
            assert mask[y, xx] == c  # the anchoring pixel is a real pixel of the class
            emb = sess.run([F.PIXEL_EMBEDDING], {F.IMAGES: preprocess.normalise(image[None], prep)})[0][0]
            h, w = emb.shape[1:]
            cell = emb[:, y * h // 32, xx * w // 32]  # the cell standing for that pixel
            np.testing.assert_allclose(cs.centroids[c, k], cell / np.linalg.norm(cell), atol=1e-5)
            checked += 1
    assert checked == sum(cs.ks)
    # the same seed gives the same set; another seed samples other cells
    again = compute_seg_set(out / F.EMBED_FILE, scenes, tmp_path / "again", k=4, threads=2, seed=3)
    other = compute_seg_set(out / F.EMBED_FILE, scenes, tmp_path / "other", k=4, threads=2, seed=4)
    assert again["set_id"] == res["set_id"] != other["set_id"]


def test_refusals(seg_export, tmp_path, exported, capsys):
    scenes, _, out, _ = seg_export
    # a classifier's embedding graph on a segmentation folder
    with pytest.raises(DataError, match="is a classifier's embedding graph"):
        compute_seg_set(exported[0] / F.EMBED_FILE, scenes, tmp_path / "x")
    # a class that appears in no mask
    meta = json.loads((scenes / "classes.json").read_text())
    bad = tmp_path / "bad"
    shutil.copytree(scenes, bad)
    meta["classes"].append("Hat")
    meta["palette"].append([1, 2, 3])
    (bad / "classes.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"classes \['Hat'\] .* appear in no mask"):
        compute_seg_set(out / F.EMBED_FILE, bad, tmp_path / "y")
    # a set from another embedding, through the command line
    assert main(["eval-onnx", "--embed", str(out / F.EMBED_FILE), "--centroids", str(exported[0]),
                 "--data", str(scenes)]) == 2
    assert "centroids have D=32 but the embedding model outputs D=8" in capsys.readouterr().err
    # a classification set made in this very embedding
    cs = centroid_set.load(out)
    cs.task = "classification"
    centroid_set.save(cs, tmp_path / "clf-set")
    assert main(["eval-onnx", "--embed", str(out / F.EMBED_FILE), "--centroids", str(tmp_path / "clf-set"),
                 "--data", str(scenes)]) == 2
    assert "is a classification set; a segmenter needs one made from masks" in capsys.readouterr().err


def test_parametric_segmenter_exports_its_embedding_for_class_lists(seg_export, tmp_path):
    scenes = seg_export[0]
    t = TrainConfig(data=str(scenes), out=str(tmp_path / "run"), epochs=1, batch_size=16, lr=0.05, workers=0,
                    max_steps=2)
    m = ModelConfig(num_classes=11, task="segmentation", in_chans=3, image_size=32, width=4, embed_dim=8,
                    decoder_dim=8, head="softmax", mean=[0.5] * 3, std=[0.5] * 3)
    train(t, m)
    meta = export_checkpoint(tmp_path / "run" / "checkpoint.safetensors", tmp_path / "export", data=str(scenes),
                             n_real=4, n_random=3, threads=2)
    assert meta["parity"]["passed"] and meta["centroid_set"] is None
    assert sorted(meta["files"]) == ["embed", "embed_fp16"] and not (tmp_path / "export" / F.HEAD_FILE).exists()
    res = compute_seg_set(tmp_path / "export" / F.EMBED_FILE, scenes, tmp_path / "set", k=2, threads=2)
    assert res["ks"] == [2] * 11


def test_anchored_segmenter_points_at_real_pixels(seg_export, tmp_path):
    scenes, path, _, _ = seg_export
    assert main(["anchor", "--checkpoint", str(path), "--data", str(scenes), "--out",
                 str(tmp_path / "anchored.safetensors")]) == 0
    ck = ckpt_io.load(tmp_path / "anchored.safetensors")
    meta = export_checkpoint(tmp_path / "anchored.safetensors", tmp_path / "export", n_real=4, n_random=3, threads=2,
                             fp16=False)
    assert sorted(meta["files"]) == ["centroid_set", "embed", "head", "merged"]
    cs = centroid_set.load(tmp_path / "export")
    assert meta["parity"]["passed"] and cs.anchored
    model = ck.build_model()
    for c in range(cs.num_classes):
        for k in range(cs.ks[c]):
            pid = int(ck.model_state["head.exemplar_ids"][c, k])
            image, y, x = pid // 1024, pid % 1024 // 32, pid % 32  # 32 x 32 training scenes
            assert (image, [y, x]) == (int(cs.exemplar_ids[c, k]), list(cs.exemplar_yx[c, k]))
            assert cs.exemplar_names[c][k].endswith(f"images/train/{image:06d}.png")
            pixels, mask = read_pair(cs.exemplar_names[c][k], cs.exemplar_names[c][k].replace("/images/", "/masks/"))
            assert mask[y, x] == c
            xin = (torch.from_numpy(pixels[None]).float() / 255 - 0.5) / 0.5
            with torch.no_grad():
                cells = model.encoder(xin)[0]  # (D, 8, 8): the cell of pixel (y, x) is (y // 4, x // 4)
            np.testing.assert_allclose(tF.normalize(cells[:, y // 4, x // 4], dim=0).numpy(), cs.centroids[c, k],
                                       atol=1e-5)


def test_sets_from_masks_run_and_are_evaluated_without_torch(seg_export, tmp_path):
    scenes, _, out, _ = seg_export
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
        "from dnc.export.seg_recompute import compute_seg_set\n"
        "from dnc.export.seg_evaluate import evaluate_seg_folder\n"
        f"r = compute_seg_set({str(out / F.EMBED_FILE)!r}, {str(scenes)!r}, {str(tmp_path / 's')!r}, k=2)\n"
        f"e = evaluate_seg_folder({str(out / F.EMBED_FILE)!r}, {str(tmp_path / 's')!r}, {str(scenes)!r})\n"
        "assert 'torch' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
        "print(r['set_id'], e['images'])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                         env={"PYTHONPATH": str(Path(__file__).parents[2])})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == [centroid_set.load(tmp_path / "s").set_id, "12"]


@pytest.mark.gpu
def test_tensorrt_fp16_labels_agree_with_onnxruntime(seg_export, tmp_path):
    from dnc.export import tensorrt

    ok, why = tensorrt.available()
    if not ok:
        pytest.skip(f"TensorRT engines need a CUDA GPU and tensorrt: {why}")
    _, path, _, _ = seg_export
    m = export_checkpoint(path, tmp_path / "trt", n_real=12, n_random=3, tensorrt_engines=True)
    assert m["tensorrt"]["built"] and m["tensorrt"]["label_agreement_vs_onnxruntime_fp32"] >= 0.995
    assert (tmp_path / "trt" / F.EMBED_PLAN_FILE).is_file()


def test_without_a_gpu_the_export_says_why_no_engine(seg_export, tmp_path):
    from dnc.export import tensorrt

    ok, _ = tensorrt.available()
    if ok:
        pytest.skip("a GPU with tensorrt is present: the engine test above runs instead")
    _, path, _, _ = seg_export
    m = export_checkpoint(path, tmp_path / "no-trt", n_real=4, n_random=3, tensorrt_engines=True, fp16=False)
    assert m["parity"]["passed"] and m["tensorrt"]["built"] is False and m["tensorrt"]["reason"]
