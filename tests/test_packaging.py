# ruff: noqa: F811 (the fixtures repo and server are imported from test_segment_serving and used as arguments)
"""`pip install 'dnc-stack[client]'` in a fresh virtual environment: no torch, and `dnc classify` and `dnc segment`
answer there as they do in the full environment, through a real tritonserver (HTTP and gRPC) and in-process
(`dnc segment --in-process`, onnxruntime).

The checkout is installed as a user installs a release: not editable, from a copy of what pyproject.toml packs
(its package folders, the project file and the README), so the test proves the wheel's contents and its core
dependencies, and never writes a build folder into the checkout. pip needs the package registry (or its cache).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
from PIL import Image

from dnc.clients.cli import main
from tests.serving.conftest import server  # noqa: F401 (fixture)
from tests.serving.test_segment_serving import SEG, repo  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.triton]
ROOT = Path(__file__).resolve().parents[1]


def _sources(dst: Path) -> Path:
    """A copy of what the distribution is built from: pyproject.toml, its readme and its package folders."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dst.mkdir()
    for name in ("pyproject.toml", project["project"]["readme"]):
        shutil.copy2(ROOT / name, dst / name)
    for folder in sorted(set(project["tool"]["setuptools"]["package-dir"].values())):
        shutil.copytree(ROOT / folder, dst / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


@pytest.fixture(scope="module")
def client_bin(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh virtual environment holding `dnc-stack[client]` and nothing else."""
    root = tmp_path_factory.mktemp("client-install")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile",
                          f"{_sources(root / 'src')}[client]"], capture_output=True, text=True, timeout=1200, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return venv / "bin"


def _client(client_bin: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`dnc ARGS` in the client environment (run from `cwd`, away from the checkout's folders)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(client_bin / "dnc"), *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env=env)


def test_the_client_install_holds_no_torch_and_is_not_the_checkout(client_bin, tmp_path):
    code = ("import importlib.util, dnc.clients.cli, dnc.export.seg_infer, sys\n"
            "print(importlib.util.find_spec('torch') is None, dnc.clients.cli.__file__)\n")
    run = subprocess.run([str(client_bin / "python"), "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    no_torch, where = run.stdout.split()
    assert no_torch == "True" and Path(where).is_relative_to(client_bin.parent) and ROOT not in Path(where).parents
    run = subprocess.run([str(client_bin / "python"), "-c", "import torch"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert run.returncode != 0 and "No module named 'torch'" in run.stderr


def test_classify_through_a_server_answers_as_the_full_install(client_bin, server, fm_folder, tmp_path, capsys):
    images = [str(fm_folder / "test" / c) for c in sorted(os.listdir(fm_folder / "test"))[:3]]
    args = ["classify", *images, "--url", server.http_url, "--model", "dnc", "--top-k", "3", "--json"]
    run = _client(client_bin, *args, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert main(args) == 0
    full = capsys.readouterr().out
    got, want = ([json.loads(line) for line in text.splitlines()] for text in (run.stdout, full))
    assert len(got) == 30 and got == want
    wrong = _client(client_bin, *args[:-1], "--url", "", cwd=tmp_path)  # errors show flags there too
    assert wrong.returncode == 2 and "dnc classify: error: --url is empty" in wrong.stderr


def _segmented(out: Path) -> dict[str, tuple]:
    """NAME -> (labels as an array, evidence) of each picture `dnc segment` wrote to `out`."""
    return {p.name.split(".")[0]: (np.asarray(Image.open(p)), json.loads(p.with_name(
        p.name.replace(".labels.png", ".evidence.json")).read_text())) for p in sorted(out.glob("*.labels.png"))}


def _same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want) and got
    for name, (labels, evidence) in want.items():
        assert np.array_equal(got[name][0], labels), name
        assert _close(got[name][1], evidence), name


def _close(a, b) -> bool:
    """Equal JSON values, floats within 1e-6 (the client environment may hold another numpy)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-6
    return a == b


@pytest.mark.parametrize("where", ["grpc", "in-process"])
def test_segment_answers_as_the_full_install(where, client_bin, server, seg_export, tmp_path, capsys):
    scenes = str(seg_export[0] / "images" / "test")
    how = (["--model", SEG, "--url", server.grpc_url, "--protocol", "grpc"] if where == "grpc"
           else ["--in-process", str(seg_export[2]), "--threads", "1"])
    run = _client(client_bin, "segment", scenes, "--out", str(tmp_path / "client"), *how, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert main(["segment", scenes, "--out", str(tmp_path / "full"), *how]) == 0
    capsys.readouterr()
    _same(_segmented(tmp_path / "client"), _segmented(tmp_path / "full"))
