"""What `dnc repo build` writes, against a golden snapshot committed in tests/serving/golden/, and every
config it writes read back with Triton's own schema (tritonclient's model_config_pb2).

A snapshot is the repository's file list, its config texts and its repository.json, with the values that
change from run to run (paths, times, fingerprints, set ids, the interpreter's tag) replaced by
placeholders. A change to what a build writes fails here with a diff; when the change is meant, write the
snapshots again and commit them with it:

    DNC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/serving/test_repo_snapshot.py

which also writes the example configs of model_repository/ (the classifier `dnc` and the segmenter
`scenes` of the python runtime, as the snapshot holds them).
"""

import difflib
import json
import os
import re
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from dnc.core import formats as F
from dnc.core import manifest, tasks
from dnc.serving import repository

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden")
EXAMPLES = ROOT / "model_repository"
UPDATE = os.environ.get("DNC_UPDATE_GOLDEN") == "1"
TAG = f"cpython-{sys.version_info.major}{sys.version_info.minor}"


@pytest.fixture(scope="module")
def built(tmp_path_factory, exported, seg_export):
    """Each case: (repository, {model name: export}); the runtimes the tests build (tensorrt needs a CUDA
    export)."""
    base = tmp_path_factory.mktemp("snapshots")
    cases = {}
    for runtime in ("python", "onnxruntime"):
        repo = base / runtime
        repository.build(exported[0], repo, runtime_name=runtime, threads=1)
        repository.build(seg_export[2], repo, runtime_name=runtime, name="scenes", threads=1)
        cases[runtime] = (repo, {"dnc": exported[0], "scenes": seg_export[2]})
    return cases


def _normalise(text: str) -> str:
    text = re.sub(r"sha256:[0-9a-f]{64}", "sha256:<fingerprint>", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", "<time>", text)
    return text.replace(TAG, "cpython-<version>")


def _info(repo: Path) -> str:
    """repository.json without what depends on the run: where the export lay, when it was built, the set's
    id and source (from the embedding's fingerprint), the sub-centroids each class kept (from training)."""
    info = json.loads((repo / repository.INFO_FILE).read_text())
    for model in info["models"].values():
        model["export"] = "<export>"
        model["set"]["set_id"] = "<set id>"
        model["set"]["source"] = "<source>"
        model["set"]["ks"] = f"<{len(model['set']['ks'])} counts>"
    return json.dumps(info, indent=1, sort_keys=True)


def snapshot(repo: Path) -> str:
    """The text a repository is compared by: file list, config texts, repository.json, normalised."""
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
    parts = ["## files", *files]
    for rel in files:
        if rel.endswith("config.pbtxt"):
            parts += [f"## {rel}", (repo / rel).read_text().rstrip("\n")]
    parts += [f"## {repository.INFO_FILE}", _info(repo)]
    return _normalise("\n".join(parts) + "\n")


def _sections(text: str) -> dict[str, str]:
    """`## NAME` headed sections of a snapshot: name -> body."""
    out, name = {}, None
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            name = line[3:].strip()
            out[name] = ""
        else:
            out[name] += line
    return out


def _compare(golden: Path, got: str) -> None:
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(got)
    assert golden.is_file(), f"no snapshot {golden}: write it with DNC_UPDATE_GOLDEN=1 (see this file's docstring)"
    want = golden.read_text()
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(keepends=True), got.splitlines(keepends=True),
                                            f"{golden.relative_to(ROOT)} (committed)", "what the build wrote"))
        pytest.fail(f"`dnc repo build` writes something else than {golden.name} holds; if that is meant, run "
                    f"DNC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q {Path(__file__).relative_to(ROOT)} and "
                    f"commit the snapshot:\n{diff}", pytrace=False)


@pytest.mark.parametrize("runtime", ["python", "onnxruntime"])
def test_a_build_is_its_golden_snapshot(built, runtime):
    _compare(GOLDEN / f"{runtime}.txt", snapshot(built[runtime][0]))


def test_model_repository_holds_the_example_configs(built):
    """model_repository/ holds a README and the configs of the python runtime's snapshot, no code: the
    python models' model.py and preprocess.py are serving/python_model.py and core/preprocess.py, which
    a build copies."""
    sections = _sections(snapshot(built["python"][0]))
    configs = {name: body for name, body in sections.items() if name.endswith("config.pbtxt")}
    if UPDATE:
        for name, body in configs.items():
            (EXAMPLES / name).parent.mkdir(parents=True, exist_ok=True)
            (EXAMPLES / name).write_text(body)
    held = sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*") if p.is_file() and "__pycache__"
                  not in p.parts)
    assert held == sorted(["README.md", *configs]), "model_repository/ holds other files than its README and configs"
    for name, body in configs.items():
        assert (EXAMPLES / name).read_text() == body, f"model_repository/{name} is not what a build writes"
    assert repository.is_template(EXAMPLES)


def _parsed(repo: Path) -> dict[str, mc.ModelConfig]:
    """Every config.pbtxt of a repository, parsed strictly (an unknown field or enum value fails)."""
    return {p.parent.name: text_format.Parse(p.read_text(), mc.ModelConfig()) for p in repo.glob("*/config.pbtxt")}


def _family(name: str) -> tuple[str, str, str, str]:
    fam = F.family(name)
    return fam.entry, fam.prep, fam.embed, fam.head


def _io(cfg: mc.ModelConfig) -> tuple[dict, dict]:
    return {t.name: t for t in cfg.input}, {t.name: t for t in cfg.output}


@pytest.mark.parametrize("runtime", ["python", "onnxruntime"])
def test_every_config_parses_and_the_ensembles_fit_their_steps(built, runtime):
    repo, exports = built[runtime]
    cfgs = _parsed(repo)
    assert sorted(cfgs) == sorted(m for name in exports for m in _family(name))
    for name, export in exports.items():
        meta = manifest.read(export)
        task, fam = tasks.of(meta), F.family(name)
        entry, prep, embed, head = (cfgs[m] for m in _family(name))
        batch = repository.max_batch_of(task)
        assert all(c.name == m and c.max_batch_size == batch
                   for c, m in zip((entry, prep, embed, head), _family(name), strict=True))
        # the entry: an ensemble describing the family, its steps wired to each other's tensors
        assert entry.platform == "ensemble" and not entry.backend
        assert json.loads(entry.parameters[F.META_PREPROCESSING].string_value) == meta["preprocessing"]
        assert entry.parameters[F.META_TASK].string_value == task.name
        assert int(entry.parameters["max_pixels"].string_value) == repository.MAX_PIXELS[task.name]
        steps = entry.ensemble_scheduling.step
        assert [s.model_name for s in steps] == [fam.prep, fam.embed, fam.head]
        available = dict(_io(entry)[0])  # ensemble tensor name -> its description
        for step in steps:
            inputs, outputs = _io(cfgs[step.model_name])
            assert step.model_version == -1
            for model_input, tensor in step.input_map.items():
                assert model_input in inputs and tensor in available, (step.model_name, model_input)
                assert inputs[model_input].data_type == available[tensor].data_type, (step.model_name, model_input)
            assert all(i.optional or i.name in step.input_map for i in inputs.values()), step.model_name
            for model_output, tensor in step.output_map.items():
                assert model_output in outputs, (step.model_name, model_output)
                available[tensor] = outputs[model_output]
        served = [s.name for s in task.head_outputs + task.evidence_outputs]
        assert [t.name for t in entry.output] == served and set(served) <= set(available)
        # the steps: what each takes and gives
        raw = [F.IMAGES, *(s.name for s in F.RAW_INPUTS[1:])]
        assert [t.name for t in prep.input] == raw and all(t.optional for t in prep.input)
        images = [int(meta["preprocessing"]["channels"]), *([-1, -1] if task.dense else
                                                           [int(meta["preprocessing"]["image_size"])] * 2)]
        assert list(_io(prep)[1][F.CHECKED_IMAGES].dims) == images and list(embed.input[0].dims) == images
        assert [t.name for t in embed.output] == [task.embed_output.name]
        assert list(embed.output[0].dims) == ([-1, -1, -1] if task.dense else [-1])
        assert [t.name for t in head.input] == ([task.embed_output.name, F.OUTPUT_SIZE, F.MAPS] if task.dense
                                                else [task.embed_output.name]) + [F.ABSTAIN, F.EXPECT_SET_ID]
        assert all(t.optional for t in head.input[-2:]) and all(t.optional for t in entry.input[-2:])
        assert [t.name for t in entry.input[-2:]] == [F.ABSTAIN, F.EXPECT_SET_ID]
        assert [t.name for t in head.output] == served
        assert all(-1 in t.dims or list(t.dims) == [1] for t in head.output)  # the class count stays free
        # backends and the python models' parameters
        assert prep.backend == "python" and head.backend == "python"
        assert prep.parameters["role"].string_value == "prep" and head.parameters["role"].string_value == "graph"
        assert json.loads(prep.parameters["preprocessing"].string_value) == meta["preprocessing"]
        assert json.loads(head.parameters["input_check"].string_value)["kind"] == "embeddings"
        # onnxruntime's arena for a classifier's graphs (inputs of one size), never for a segmenter's (issue 23)
        arena = "0" if task.dense else "1"
        assert head.parameters["arena"].string_value == ("" if task.dense else "1")
        if runtime == "python":
            assert embed.backend == "python" and embed.parameters["role"].string_value == "graph"
            assert json.loads(embed.parameters["input_check"].string_value)["kind"] == "images"
            assert embed.parameters["arena"].string_value == ("" if task.dense else "1")
        else:
            assert embed.backend == "onnxruntime" and embed.default_model_filename == "model.onnx"
            assert embed.parameters["enable_mem_arena"].string_value == arena
        assert embed.HasField("dynamic_batching") and head.HasField("dynamic_batching")


def test_the_text_is_protobufs_own(built):
    """A config's text is what protobuf writes for the message it parses to (no hand-written text)."""
    for path in built["python"][0].glob("*/config.pbtxt"):
        text = path.read_text()
        body = text.split("\n", 1)[1]
        assert text.startswith(repository.GENERATED + "\n")
        assert text_format.MessageToString(text_format.Parse(text, mc.ModelConfig()), as_utf8=True) == body
