"""`dnc export` on freshly trained models: parity with PyTorch, the files and manifest, failure handling."""

import json

import numpy as np
import onnx
import pytest

from dnc.clients.cli import main
from dnc.core import centroid_set, manifest
from dnc.core import formats as F
from dnc.export import parity, runtime
from dnc.export.exporter import ExportError, export_checkpoint
from dnc.training import checkpoint as ckpt_io

pytestmark = pytest.mark.slow


def test_export_passes_parity_and_describes_itself(exported, dnc_checkpoint):
    out, m = exported
    par = m["parity"]
    assert par["passed"]
    for kind in ("real", "random"):
        for part in ("chained", "merged"):
            assert par[kind][part]["scores_max_abs"] < 1e-4
            assert par[kind][part]["predicted_agreement"] == 1.0
        assert par[kind]["fp16"]["predicted_agreement"] > 0.9
    assert par["real"]["n"] == 128 and par["random"]["n"] == 32
    for f in (F.EMBED_FILE, F.EMBED_FP16_FILE, F.HEAD_FILE, F.MERGED_FILE, F.SET_TENSORS_FILE, F.MANIFEST_FILE):
        assert (out / f).is_file(), f
    back = manifest.read(out)
    assert back["embed_fingerprint"] == centroid_set.fingerprint_file(out / F.EMBED_FILE)
    ck = ckpt_io.load(dnc_checkpoint)
    assert back["preprocessing"]["mean"] == ck.model_config.mean and back["preprocessing"]["image_size"] == 28
    assert [t["name"] for t in back["tensors"]["head_outputs"]] == [s.name for s in F.HEAD_OUTPUTS]
    # The set is the checkpoint's trained sub-centroids, K per class included.
    cs = centroid_set.load(out)
    assert cs.ks == [4, 3, 4, 4, 2, 4, 4, 4, 1, 4]
    assert cs.class_names == ck.model_config.class_names
    np.testing.assert_allclose(cs.centroids, ck.model_state["head.centroids"].numpy(), atol=1e-6)
    assert cs.set_id == back["centroid_set"]["set_id"]
    # What the exported model uses: live sub-centroids counted on the data set's test images.
    use = back["subcentroids"]
    assert use["k_per_class"] == cs.ks and use["images"] == 10000 and use["split"] == "test"
    assert all(1 <= live <= k for live, k in zip(use["live_per_class"], cs.ks, strict=True))
    assert use["centroid_cos_per_class"][8] is None  # the K=1 class has no pair
    assert abs(use["top1"] - ck.history[-1]["test_top1"]) < 5  # the same model, on 10,000 vs 512 images


def test_graphs_have_dynamic_batch_and_named_tensors(exported):
    out, _ = exported
    embed = runtime.session(out / F.EMBED_FILE, 1)
    assert [i.name for i in embed.get_inputs()] == [F.IMAGES]
    assert embed.get_inputs()[0].shape[0] == "batch" and embed.get_inputs()[0].type == "tensor(float)"
    assert runtime.preprocessing_of(embed)["channels"] == 1
    half = onnx.load(out / F.EMBED_FP16_FILE)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # clients send fp32
    assert any(n.op_type == "Conv" for n in half.graph.node)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in half.graph.initializer)
    merged = runtime.session(out / F.MERGED_FILE, 1)
    assert [o.name for o in merged.get_outputs()] == [F.EMBEDDING] + [s.name for s in F.HEAD_OUTPUTS]
    for n in (1, 5):  # any batch
        res = merged.run(None, {F.IMAGES: np.random.default_rng(n).standard_normal((n, 1, 28, 28), np.float32)})
        assert res[1].shape == (n, 10)


def test_failing_parity_exits_non_zero_and_keeps_the_previous_export(dnc_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    export_checkpoint(dnc_checkpoint, out, n_real=16, n_random=4, fp16=False)
    before = (out / F.MANIFEST_FILE).read_text()
    monkeypatch.setattr(parity, "SCORE_TOLERANCE", 0.0)  # nothing can pass
    with pytest.raises(ExportError, match="parity check failed"):
        export_checkpoint(dnc_checkpoint, out, n_real=16, n_random=4, fp16=False)
    assert (out / F.MANIFEST_FILE).read_text() == before
    failed = json.loads((tmp_path / "exp.failed" / F.MANIFEST_FILE).read_text())
    assert failed["parity"]["passed"] is False
    assert main(["export", str(dnc_checkpoint), "--out", str(out), "--parity-samples", "8", "--no-fp16"]) == 2


def test_softmax_checkpoint_exports_its_embedding(softmax_checkpoint, tmp_path):
    m = export_checkpoint(softmax_checkpoint, tmp_path / "sm", n_real=32, n_random=8, fp16=False)
    assert m["parity"]["passed"] and m["head"] == "softmax"
    assert sorted(p.name for p in (tmp_path / "sm").iterdir()) == [F.EMBED_FILE, F.MANIFEST_FILE]


def test_cli_export_and_tensorrt_without_gpu(dnc_checkpoint, tmp_path, capsys, monkeypatch):
    from dnc.export import tensorrt

    monkeypatch.setattr(tensorrt, "available", lambda: (False, "no CUDA GPU is available on this machine"))
    assert main(["export", str(dnc_checkpoint), "--out", str(tmp_path / "e"), "--parity-samples", "16",
                 "--tensorrt"]) == 0
    printed = capsys.readouterr().out
    assert "predictions agree 100.0%" in printed
    assert "TensorRT engines not built: no CUDA GPU" in printed
    assert manifest.read(tmp_path / "e")["tensorrt"] == {"built": False, "reason": "no CUDA GPU is available on this "
                                                         "machine"}
    assert main(["export", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "x")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_export_refuses_to_replace_an_unrelated_folder(dnc_checkpoint, tmp_path, capsys):
    precious = tmp_path / "project"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["export", str(dnc_checkpoint), "--out", str(precious), "--parity-samples", "8"]) == 2
    assert "non-empty folder without manifest.json" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"
    assert main(["export", str(dnc_checkpoint), "--out", str(tmp_path / "z"), "--parity-samples", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err


@pytest.mark.gpu
def test_tensorrt_engines_agree_with_onnxruntime(dnc_checkpoint, tmp_path):
    from dnc.export import tensorrt

    ok, why = tensorrt.available()
    if not ok:
        pytest.skip(f"TensorRT engines need a CUDA GPU and tensorrt: {why}")
    m = export_checkpoint(dnc_checkpoint, tmp_path / "trt", n_real=512, tensorrt_engines=True)
    assert m["tensorrt"]["built"] and m["tensorrt"]["predicted_agreement_vs_onnxruntime_fp32"] >= 0.999
    assert (tmp_path / "trt" / F.EMBED_PLAN_FILE).is_file() and (tmp_path / "trt" / F.HEAD_PLAN_FILE).is_file()
