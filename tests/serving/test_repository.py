"""`dnc repo build` without a server: configs that parse as Triton ModelConfigs and match the graphs they
describe, the python models' code copied from the package, refusals naming the culprit."""

import json
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.export import runtime
from dnc.serving import repository

ROOT = Path(__file__).resolve().parents[2]
_NP = {"TYPE_FP32": "tensor(float)", "TYPE_INT32": "tensor(int32)", "TYPE_INT64": "tensor(int64)",
       "TYPE_STRING": "tensor(string)", "TYPE_UINT8": "tensor(uint8)", "TYPE_BOOL": "tensor(bool)"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, exported):
    out = tmp_path_factory.mktemp("repos") / "model_repository"
    repository.build(exported[0], out)
    return out


def _config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())  # strict: unknown fields or enums fail


def test_layout_and_configs_parse(repo):
    for name in (F.ENTRY_MODEL, F.PREP_MODEL, F.EMBED_MODEL, F.HEAD_MODEL):
        cfg = _config(repo / name / "config.pbtxt")
        assert cfg.name == name and cfg.max_batch_size == 64
        assert (repo / name / "1").is_dir()
    for name in (F.EMBED_MODEL, F.HEAD_MODEL):
        assert (repo / name / "1" / "model.onnx").is_file() and (repo / name / "1" / "model.py").is_file()
    assert {"model.py", "preprocess.py"} <= {p.name for p in (repo / F.PREP_MODEL / "1").iterdir()}
    assert _config(repo / F.EMBED_MODEL / "config.pbtxt").HasField("dynamic_batching")
    info = repository.model_info(repo)
    assert info["runtime"] == "python" and info["set"]["num_classes"] == 10


def test_configs_describe_the_graphs(repo):
    """Every config input/output exists in its graph with the same element type; no dim fixes C."""
    for name in (F.EMBED_MODEL, F.HEAD_MODEL):
        cfg = _config(repo / name / "config.pbtxt")
        sess = runtime.session(repo / name / "1" / "model.onnx", 1)
        graph = {t.name: t for t in sess.get_inputs() + sess.get_outputs() + sess.get_overridable_initializers()}
        for t in list(cfg.input) + list(cfg.output):
            if t.name == F.EXPECT_SET_ID:  # the python step compares it with the graph's set id; no graph input
                assert name == F.HEAD_MODEL and t.optional and list(t.dims) == [1], t
                continue
            assert t.name in graph, f"{name}: {t.name} not in the graph"
            assert graph[t.name].type == _NP[mc.DataType.Name(t.data_type)], t.name
            rank = len(t.reshape.shape) if t.HasField("reshape") else len(t.dims)
            if t.name == F.ABSTAIN:  # one flag per request: the python step feeds the graph's optional (1,) input
                assert graph[t.name].shape == [1] and t.optional, t.name
                continue
            assert rank + 1 == len(graph[t.name].shape), t.name
    head = _config(repo / F.HEAD_MODEL / "config.pbtxt")
    assert all(-1 in t.dims or list(t.dims) == [1] for t in head.output)  # the class count stays free
    entry = _config(repo / F.ENTRY_MODEL / "config.pbtxt")
    assert {t.name for t in entry.output} == {t.name for t in head.output}
    assert json.loads(entry.parameters[F.META_PREPROCESSING].string_value)["image_size"] == 28


def test_head_config_json_equals_pbtxt(repo):
    """The JSON a swap sends with its reload is the config on disk."""
    sent = json_format.ParseDict(repository.head_config(repo), mc.ModelConfig())
    assert sent == _config(repo / F.HEAD_MODEL / "config.pbtxt")


def test_the_python_models_code_is_copied_from_the_package(repo):
    """model_repository/ no longer holds copies of the code (test_repo_snapshot.py checks its example configs
    against a build): each python model's model.py is serving/python_model.py, the prep step's
    preprocess.py core/preprocess.py, byte for byte."""
    code = (ROOT / "serving" / "python_model.py").read_text()
    for name in (F.PREP_MODEL, F.EMBED_MODEL, F.HEAD_MODEL):
        assert (repo / name / "1" / "model.py").read_text() == code, name
    assert (repo / F.PREP_MODEL / "1" / "preprocess.py").read_text() == (ROOT / "core" / "preprocess.py").read_text()


PREP = {"channels": 1, "image_size": 28, "scale": 1 / 255, "mean": [0.5], "std": [0.5], "resize": "short_side"}


def test_native_runtime_configs(tmp_path, exported):
    repository.build(exported[0], tmp_path / "r", runtime_name="onnxruntime")
    embed = _config(tmp_path / "r" / F.EMBED_MODEL / "config.pbtxt")
    assert embed.backend == "onnxruntime" and not (tmp_path / "r" / F.EMBED_MODEL / "1" / "model.py").exists()
    # the native embedding model cannot check its input: the python prep step does, and the head is python
    guard = _config(tmp_path / "r" / F.PREP_MODEL / "config.pbtxt")
    head = _config(tmp_path / "r" / F.HEAD_MODEL / "config.pbtxt")
    entry = _config(tmp_path / "r" / F.ENTRY_MODEL / "config.pbtxt")
    assert guard.backend == "python" and head.backend == "python"
    assert json.loads(guard.parameters["input_check"].string_value) == {"kind": "images", "low": [-1.0],
                                                                        "high": [1.0]}
    assert [s.model_name for s in entry.ensemble_scheduling.step] == [F.PREP_MODEL, F.EMBED_MODEL, F.HEAD_MODEL]
    assert entry.ensemble_scheduling.step[1].input_map[F.IMAGES] == F.CHECKED_IMAGES
    assert (tmp_path / "r" / F.PREP_MODEL / "1" / "model.py").is_file()
    assert not (tmp_path / "r" / F.PREP_MODEL / "1" / "model.onnx").exists()
    with pytest.raises(ValueError, match="embed.plan"):
        repository.build(exported[0], tmp_path / "t", runtime_name="tensorrt")
    with pytest.raises(ValueError, match="`max_batch` must be >= 1"):
        repository.build(exported[0], tmp_path / "t", max_batch=0)
    with pytest.raises(ValueError, match="`device` cpu is not possible"):
        repository.configs(PREP, "tensorrt", device="cpu")
    gpu = repository.configs(PREP, "onnxruntime")
    assert gpu[F.EMBED_MODEL]["instance_group"][0]["kind"] == "KIND_GPU"
    assert gpu[F.HEAD_MODEL]["instance_group"][0]["kind"] == "KIND_CPU"


def test_refuses_to_replace_other_folders(tmp_path, exported):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not a DNC model repository"):
        repository.build(exported[0], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_refuses_a_set_of_another_model(tmp_path, exported):
    cs = centroid_set.load(exported[0])
    cs.embed_fingerprint = "sha256:" + "1" * 64
    centroid_set.save(cs, tmp_path / "other")
    with pytest.raises(centroid_set.CentroidSetError, match="recompute it"):
        repository.build(exported[0], tmp_path / "r", centroids=tmp_path / "other")
    assert not (tmp_path / "r").exists()


def test_head_in_repository_answers_with_its_labels(repo, exported):
    sess = runtime.session(repo / F.HEAD_MODEL / "1" / "model.onnx", 1)
    x = np.random.default_rng(3).standard_normal((4, repository.model_info(repo)["dim"])).astype(np.float32)
    labels, set_ids = sess.run([F.TOPK_LABEL, F.SET_ID], {F.EMBEDDING: x})
    cs = centroid_set.load(exported[0])
    assert set(labels.reshape(-1)) <= set(cs.class_names) and set(set_ids) == {cs.set_id}


def test_dockerfile_serves_as_dnc_serve_does():
    """The container runs a release with the published fixes (>= 25.07), as a non-root user, with the same
    poll mode and locks as `dnc serve` (read from the command the library builds, so they cannot drift)."""
    import json
    import re

    from dnc.serving.server import TritonServer

    text = (Path(__file__).parents[2] / "Dockerfile").read_text()
    release = re.search(r"^FROM nvcr.io/nvidia/tritonserver:(\d+)\.(\d+)-py3$", text, re.M)
    assert release and (int(release[1]), int(release[2])) >= (25, 7)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M)[1])
    ours = TritonServer.__new__(TritonServer)
    ours.repo, ours.http_port, ours.grpc_port, ours.metrics_port, ours.host, ours.shm_prefix = (
        Path("/models"), 8000, 8001, 8002, "127.0.0.1", "")
    wanted = [a for a in ours.command(None, Path("tritonserver"))
              if a.startswith(("--model-control-mode", "--repository-poll-secs", "--http-restricted-api",
                               "--grpc-restricted-protocol", "--strict-readiness"))]
    assert len(wanted) == 5 and all(a in cmd for a in wanted), (wanted, cmd)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_several_models_in_one_repository(tmp_path, exported, seg_export):
    """A segmenter beside a classifier; rebuilding one leaves the other's files byte for byte; names checked."""
    r = tmp_path / "r"
    repository.build(exported[0], r)
    seg = repository.build(seg_export[2], r, name="scenes")
    assert seg["task"] == "segmentation" and seg["models"] == {"entry": "scenes", "prep": "scenes_prep",
                                                               "embed": "scenes_embed", "head": "scenes_head"}
    before = {m: _tree(r / m) for m in ("scenes", "scenes_prep", "scenes_embed", "scenes_head")}
    repository.build(exported[0], r, top_k=3)  # replace the classifier
    assert {m: _tree(r / m) for m in before} == before
    assert sorted(repository.read_info(r)["models"]) == ["dnc", "scenes"]
    assert repository.model_info(r, "dnc")["top_k"] == 3
    with pytest.raises(ValueError, match="serves 2 models"):
        repository.model_info(r)
    with pytest.raises(ValueError, match="serves no model 'nope'"):
        repository.model_info(r, "nope")
    for bad in ("Dnc", "dnc_head", "1abc", "", "a" * 41, "../x", "a b"):
        with pytest.raises(ValueError, match="is not allowed"):
            repository.build(exported[0], r, name=bad)
    # a segmentation set cannot become a classifier's class list (and the other way round)
    with pytest.raises(ValueError, match="D=8 but|segmentation set"):
        repository.build(exported[0], tmp_path / "x", centroids=seg_export[2])


def test_segmenter_configs_describe_its_graphs(tmp_path, seg_export):
    r = tmp_path / "r"
    repository.build(seg_export[2], r, name="seg")
    fam = F.family("seg")
    entry, head = _config(r / fam.entry / "config.pbtxt"), _config(r / fam.head / "config.pbtxt")
    assert {t.name for t in entry.input} == {F.IMAGES, F.PIXELS, F.ENCODED, F.MAPS, F.ABSTAIN, F.EXPECT_SET_ID}
    assert all(t.optional for t in entry.input)
    assert {t.name for t in entry.output} == {s.name for s in F.SEG_HEAD_OUTPUTS + F.SEG_EVIDENCE_OUTPUTS}
    sess = runtime.session(r / fam.head / "1" / "model.onnx", 1)
    graph = {t.name: t for t in sess.get_inputs() + sess.get_outputs()}
    for t in head.output:
        assert graph[t.name].type == _NP[mc.DataType.Name(t.data_type)], t.name
    assert json.loads(entry.parameters[F.META_PREPROCESSING].string_value)["resize"] == "none"
    assert repository.model_info(r, "seg")["max_pixels"] == 2048 * 2048
