"""`dnc segment VIDEOS --ray ADDRESS` against a real Ray cluster made with `ray start` (issue 26, item 4): a head
and a second node on this machine, one CPU each, with token authentication as `ray start` sets it up (every
node started with RAY_AUTH_MODE=token and the cluster's token). The job's outputs are those of the same job
without Ray, its videos go over both nodes, a failed video and a deleted output are redone by a rerun and
nothing else is; the driver needs only the token (not RAY_AUTH_MODE), and a missing or wrong token is refused
at once, naming the address and where a token is looked for."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dnc.core import video
from dnc.training.scenes import write_clips

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))  # the venv's `ray`: its nodes' workers import this project
OUTPUTS = (".masks.mkv", ".overlay.mp4", ".evidence.jsonl", ".summary.json")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    """Whether a process (not a zombie) of process group `pgid` is left."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _stop_groups(groups: list[int]) -> None:
    """SIGTERM to the nodes' processes (each node's in the process group of its `ray start`), SIGKILL to those
    left after 5 s. (`ray stop` would stop every Ray process of this machine, other people's too.)"""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        for g in groups:
            try:
                os.killpg(g, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + grace
        while time.monotonic() < end and any(_group_alive(g) for g in groups):
            time.sleep(0.2)
    left = [g for g in groups if _group_alive(g)]
    assert not left, f"Ray processes of process groups {left} outlived SIGKILL"


def _ray_start(args: list[str], env: dict, cwd: Path, groups: list[int]) -> None:
    p = subprocess.Popen([RAY, "start", *args], env=env, cwd=cwd, start_new_session=True, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    groups.append(p.pid)  # (its session's process group: every process of that node)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, f"`ray start {' '.join(args)}` failed:\n{out[-2000:]}"


@pytest.fixture(scope="module")
def cluster():
    """(head address HOST:PORT, token file): a head and one worker node of one CPU each, on 127.0.0.1, with
    token authentication, each with its own temporary folder (a short one: Ray's socket paths are limited to
    about 107 characters), no dashboard; every process of both nodes ended afterwards, whatever happened."""
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
              "--object-store-memory", str(80 * 2**20)]
    port, groups = _free_port(), []
    try:
        _ray_start(["--head", "--port", str(port), "--temp-dir", str(root / "head"), "--include-dashboard=false",
                    "--dashboard-port", str(_free_port()), "--ray-client-server-port", str(_free_port()),
                    "--dashboard-agent-listen-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
                    *common], env, root, groups)
        _ray_start(["--address", f"127.0.0.1:{port}", "--temp-dir", str(root / "node"),
                    "--dashboard-agent-listen-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
                    *common], env, root, groups)
        yield f"127.0.0.1:{port}", token
    finally:
        try:
            _stop_groups(groups)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _segment(videos: Path, out: Path, export: Path, env: dict, address: str | None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dnc.clients.cli", "segment", str(videos), "--in-process", str(export), "--out",
           str(out), "--threads", "1", "--batch-size", "2", "--concurrency", "1", "--json"]
    return subprocess.run(cmd + (["--ray", address] if address else []), capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


def _summary(run: subprocess.CompletedProcess) -> dict:
    assert run.stdout.strip(), run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _same_outputs(a: Path, b: Path, name: str, as_name: str | None = None) -> None:
    """The same outputs for video `name` in `a` as in `b` (for `as_name` there): the same decoded masks (the
    files differ in the Matroska segment's random UID), evidence byte for byte, as many overlay frames, the
    same model, frames and class lists in the summary (not its timings and paths)."""
    there = as_name or name
    assert all((m == n).all() for m, n in zip(video.masks(a / f"{name}.masks.mkv"),
                                              video.masks(b / f"{there}.masks.mkv"), strict=True)), name
    assert (a / f"{name}.evidence.jsonl").read_bytes() == (b / f"{there}.evidence.jsonl").read_bytes(), name
    assert len(list(video.frames(a / f"{name}.overlay.mp4"))) == len(list(video.frames(b / f"{there}.overlay.mp4")))
    s, t = (json.loads((d / f"{n}.summary.json").read_text()) for d, n in ((a, name), (b, there)))
    assert s["frames"] == t["frames"] == 4 and s["class_lists"] == t["class_lists"] and s["model"] == t["model"]


def test_a_job_on_a_ray_start_cluster_spreads_and_resumes_like_the_local_one(cluster, seg_export, tmp_path,
                                                                           fmnist_ready):
    address, token = cluster
    write_clips(tmp_path / "clips", 3, "fine", height=48, width=64, frames=4, fps=10, seed=5)
    videos = tmp_path / "clips" / "videos"
    (videos / "broken.mp4").write_bytes(b"not a video" * 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"RAY_AUTH_TOKEN_PATH": str(token)}
    here = _segment(videos, tmp_path / "here", seg_export[2], env, None)  # the same job without Ray
    assert here.returncode == 1, here.stderr[-2000:]
    t0 = time.monotonic()
    first = _segment(videos, tmp_path / "out", seg_export[2], env, address)
    took = time.monotonic() - t0
    assert first.returncode == 1, first.stderr[-2000:]  # (the broken video failed; the job went on)
    s = _summary(first)
    names = [f"clip00{i}" for i in range(3)]
    assert s["segmented"] == 3 and s["skipped"] == [] and list(s["failed"]) == [str(videos / "broken.mp4")]
    assert sorted(Path(v).stem for v in s["per_video"]) == names
    nodes = {r["node"] for r in s["per_video"].values()}
    assert len(nodes) == 2 and None not in nodes, f"the videos ran on {nodes}, not on both nodes"
    for name in names:
        _same_outputs(tmp_path / "out", tmp_path / "here", name)
    assert not list((tmp_path / "out").glob("broken.*")) and not list((tmp_path / "out").glob("*.tmp*"))

    shutil.copy(videos / "clip002.mp4", videos / "broken.mp4")  # mended
    for kind in OUTPUTS:
        (tmp_path / "out" / f"clip000{kind}").unlink()
    again = _segment(videos, tmp_path / "out", seg_export[2], env, address)
    assert again.returncode == 0, again.stderr[-2000:]
    s = _summary(again)
    assert sorted(Path(v).stem for v in s["per_video"]) == ["broken", "clip000"] and not s["failed"]
    assert s["skipped"] == [str(videos / "clip001.mp4"), str(videos / "clip002.mp4")] and s["redone"] == {}
    assert all(r["node"] for r in s["per_video"].values())
    _same_outputs(tmp_path / "out", tmp_path / "here", "clip000")
    _same_outputs(tmp_path / "out", tmp_path / "here", "broken", as_name="clip002")
    print(f"first run on the cluster: {took:.1f} s")


def test_a_missing_or_wrong_token_is_refused_at_once(cluster, seg_export, tmp_path, fmnist_ready):
    """Without the cluster's token, ray.init would retry for 20 s and fail with a bare ConnectionError."""
    address, _ = cluster
    write_clips(tmp_path / "clips", 1, "fine", height=48, width=64, frames=4, fps=10, seed=3)
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(tmp_path)}
    (tmp_path / "bad").write_text(secrets.token_hex(32))
    for extra, said in (({}, "requires an authentication token and none was found here"),
                        ({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "nothing")}, "RAY_AUTH_TOKEN_PATH is set but"),
                        ({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "bad")}, "refused the authentication token of "
                                                                         f"RAY_AUTH_TOKEN_PATH={tmp_path / 'bad'}"),
                        ({"RAY_AUTH_TOKEN": "wrong"}, "refused the authentication token of RAY_AUTH_TOKEN"),
                        ({"RAY_AUTH_MODE": "disabled"}, "RAY_AUTH_MODE=disabled here")):
        t0 = time.monotonic()
        r = _segment(tmp_path / "clips" / "videos", tmp_path / "out", seg_export[2], base | extra, address)
        assert r.returncode == 2, r.stderr[-2000:]
        assert f"the Ray cluster at {address} " in r.stderr and said in r.stderr, r.stderr[-2000:]
        assert "ray get-auth-token" in r.stderr and "InvalidAuthToken" not in r.stderr, r.stderr[-2000:]
        assert time.monotonic() - t0 < 20
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
