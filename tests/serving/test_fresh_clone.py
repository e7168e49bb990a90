"""What a fresh clone holds: `dnc repo build` into exactly the tracked files of model_repository/ (its README
and example configs, no code and no repository.json) works when a user names it as `--repo`, and a folder
with anything else in it is still refused."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dnc.serving import repository
from dnc.serving.server import TritonServer

ROOT = Path(__file__).resolve().parents[2]


def _tracked_copy(dest: Path) -> Path:
    """Copy exactly the files git tracks under model_repository/ into dest/model_repository."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "model_repository"], capture_output=True,
                            check=True).stdout.decode().split("\0")
    files = [f for f in listed if f]
    assert any(f.endswith("config.pbtxt") for f in files), "model_repository/ tracks no configs"
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, dest / rel)
    repo = dest / "model_repository"
    assert not (repo / repository.INFO_FILE).exists(), "repository.json is generated, not tracked"
    return repo


def _dnc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dnc.clients.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_repo_build_into_a_fresh_clones_repository(tmp_path, exported, seg_export):
    repo = _tracked_copy(tmp_path)
    assert repository.is_template(repo)
    done = _dnc("repo", "build", str(exported[0]), "--repo", "model_repository", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "classification model dnc" in done.stdout
    done = _dnc("repo", "build", str(seg_export[2]), "--repo", "model_repository", "--name", "scenes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    info = json.loads((repo / repository.INFO_FILE).read_text())
    assert set(info["models"]) == {"dnc", "scenes"}
    assert (repo / "dnc_head" / "1" / "model.onnx").is_file() and (repo / "scenes_embed" / "1" / "model.onnx").is_file()
    # the tracked configs are what the build wrote (the examples a user reads are real ones)
    for rel in ("dnc/config.pbtxt", "dnc_prep/config.pbtxt", "scenes/config.pbtxt", "scenes_head/config.pbtxt"):
        assert (repo / rel).read_text() == (ROOT / "model_repository" / rel).read_text(), rel


@pytest.mark.parametrize("planted", ["notes.txt", "dnc/1/weights.bin"])
def test_a_template_with_other_files_is_refused(tmp_path, exported, planted):
    repo = _tracked_copy(tmp_path)
    (repo / planted).parent.mkdir(parents=True, exist_ok=True)
    (repo / planted).write_text("keep")
    assert not repository.is_template(repo)
    done = _dnc("repo", "build", str(exported[0]), "--repo", "model_repository", cwd=tmp_path)
    assert done.returncode == 2 and "not a DNC model repository" in done.stderr, done.stderr
    assert (repo / planted).read_text() == "keep"


def test_a_folder_with_another_readme_is_refused(tmp_path, exported):
    repo = tmp_path / "mine"
    (repo / "a").mkdir(parents=True)
    (repo / "README.md").write_text("# my notes\n")
    (repo / "a" / "config.pbtxt").write_text("name: 'a'\n")
    with pytest.raises(ValueError, match="not a DNC model repository"):
        repository.build(exported[0], repo)
    assert (repo / "a" / "config.pbtxt").read_text() == "name: 'a'\n"


def test_a_segmenter_alone_built_into_the_template_is_served(tmp_path, seg_export):
    """The template's classifier folders hold no weights: a build of another model clears them (the polling
    server would try to load them), and what is left is served, for real."""
    repo = _tracked_copy(tmp_path)
    done = _dnc("repo", "build", str(seg_export[2]), "--repo", "model_repository", "--name", "scenes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    dirs = sorted(p.name for p in repo.iterdir() if p.is_dir())
    server = TritonServer(repo, 0, 0, 0)
    try:
        server.start(timeout=180)
        from dnc.clients.client import DNCClient

        with DNCClient(server.http_url, "http", "scenes") as client:
            pictures = np.random.default_rng(0).integers(0, 256, (1, 40, 48, 3), dtype=np.uint8)
            seg = client.segment(pictures)[0]
        assert seg.labels.shape == (40, 48)
        assert "failed to load" not in server.log_tail(200).lower()
    finally:
        server.stop()
    assert dirs == ["scenes", "scenes_embed", "scenes_head", "scenes_prep"]


def test_a_running_server_cannot_be_started_twice(tmp_path, exported):
    """start() on a running server would leave the first process running with nobody to stop it."""
    repository.build(exported[0], tmp_path / "r")
    server = TritonServer(tmp_path / "r", 0, 0, 0)
    try:
        server.start(timeout=180)
        first = server.proc.pid
        with pytest.raises(Exception, match=f"already running \\(pid {first}\\)"):
            server.start(timeout=180)
        assert server.proc.pid == first and server.proc.poll() is None
    finally:
        server.stop()
    assert server.proc.poll() is not None
