"""A local user who cannot write the repository cannot change what is served.

The server runs as this test's user on a repository that everyone may read; a script then runs as
`nobody` (setpriv) and tries everything such a user has: read the server's command line and environment
for a secret, call every server-changing API over HTTP with any header value it could find (load with a
`file:` override carrying code, unload, shared memory, logging, tracing), write into the repository, and
do what `dnc swap` does (take its lock, stage a centroid set, replace the head graph). Each attempt must
fail (so must opening the server's shared-memory regions, which hold requests and responses), and the
server must answer as before, from the same class list. The script uses only the standard
library of the system's /usr/bin/python3, so it runs wherever the checkout and its environment are."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from dnc.clients.cli import main
from dnc.clients.client import DNCClient
from dnc.core import formats as F
from dnc.serving import repository
from dnc.serving.state import read_state, stop_detached

pytestmark = [pytest.mark.triton, pytest.mark.slow]

SYSTEM_PYTHON = "/usr/bin/python3"
ATTEMPTS = r'''
import base64, json, os, sys, urllib.request, urllib.error
from pathlib import Path
http, repo, pid = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
out = {"uid": os.getuid()}
cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
out["cmdline_read"] = True
try:
    Path(f"/proc/{pid}/environ").read_bytes()
    out["environ_read"] = True
except OSError:
    out["environ_read"] = False
values = {""}
for arg in cmdline:  # every header=value pair the command line shows
    if "=" in arg and ":" in arg:
        values.add(arg.rsplit("=", 1)[1])
        headers = arg.split(":", 1)[1].rsplit("=", 1)[0]
state = json.loads((repo / ".dnc-server.json").read_text())
out["state_keys"] = sorted(state)
cfg = json.dumps({"name": "dnc_head", "backend": "python", "max_batch_size": 64})
code = base64.b64encode(b"raise SystemExit('owned')").decode()
calls = {
    "load with code": ("/v2/repository/models/dnc_head/load",
                       {"parameters": {"config": cfg, "file:1/model.py": code}}),
    "unload": ("/v2/repository/models/dnc_head/unload", {}),
    "shm register": ("/v2/systemsharedmemory/region/x/register", {"key": "/x", "offset": 0, "byte_size": 8}),
    "logging": ("/v2/logging", {"log_verbose_level": 1}),
    "trace": ("/v2/trace/setting", {"trace_level": ["TIMESTAMPS"]}),
}
out["api"] = {}
for name, (path, body) in calls.items():
    codes = set()
    for value in values:
        hdrs = {"Content-Type": "application/json"}
        try:
            hdrs["dnc-locked"] = value
            req = urllib.request.Request(f"http://{http}{path}", data=json.dumps(body).encode(), headers=hdrs)
            with urllib.request.urlopen(req, timeout=30) as r:
                codes.add(r.status)
        except urllib.error.HTTPError as e:
            codes.add(e.code)
        except ValueError:  # a value urllib itself refuses to send (the newline)
            codes.add("unsendable")
    out["api"][name] = sorted(map(str, codes))
out["shm"] = {}  # the python backend's shared memory holds requests and responses
try:  # the server's own /dev/shm (see serving/private_shm.py)
    out["shm"]["list its /dev/shm"] = str(len(os.listdir(f"/proc/{pid}/root/dev/shm")))
except OSError as e:
    out["shm"]["list its /dev/shm"] = type(e).__name__
for region in Path("/dev/shm").glob(state["shm_prefix"] + "*"):  # the machine's (none: not there)
    for mode in ("rb", "r+b"):
        try:
            open(region, mode).close()
            out["shm"][f"{region.name} {mode}"] = "opened"
        except OSError as e:
            out["shm"][f"{region.name} {mode}"] = type(e).__name__
out["writes"] = {}
for name, target in {"head graph": repo / "dnc_head" / "1" / "model.onnx",
                     "new model": repo / "evil" / "config.pbtxt",
                     "repository.json": repo / "repository.json", "writer lock": repo / ".lock",
    "staged centroid set": repo / "dnc_head" / ".centroids.partial1" / "set.json"}.items():
    try:
        target.parent.mkdir(exist_ok=True)
        with open(target, "ab") as f:
            f.write(b"x")
        out["writes"][name] = "written"
    except OSError as e:
        out["writes"][name] = type(e).__name__
print(json.dumps(out))
'''


def _as_nobody(argv: list[str]) -> subprocess.CompletedProcess:
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    cmd = [*prefix, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def public_repo(exported):
    """A repository in a folder every user may read and none but its owner may write."""
    base = Path(tempfile.mkdtemp(prefix="dnc-unprivileged-"))
    base.chmod(0o755)
    repo = base / "repo"
    repository.build(exported[0], repo, top_k=3, threads=1)
    assert main(["serve", "--repo", str(repo), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                 "--detach"]) == 0
    yield repo
    stop_detached(repo)
    shutil.rmtree(base, ignore_errors=True)


def test_an_unprivileged_user_cannot_change_what_is_served(public_repo):
    state = read_state(public_repo)
    before = repository.model_info(public_repo)["set"]["set_id"]
    x = np.random.default_rng(3).uniform(-1, 1, (2, 1, 28, 28)).astype(np.float32)
    with DNCClient(state["http"]) as c:
        want = c.infer(x)
    assert Path(SYSTEM_PYTHON).is_file(), f"{SYSTEM_PYTHON} is needed to run code as nobody"
    run = _as_nobody([SYSTEM_PYTHON, "-c", ATTEMPTS, state["http"], str(public_repo), str(state["pid"])])
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["uid"] != os.geteuid() and got["uid"] != 0
    assert got["cmdline_read"] and not got["environ_read"]  # what every local user sees: no secret in it
    assert "key" not in got["state_keys"]
    for name, codes in got["api"].items():
        assert set(codes) <= {"403", "unsendable"}, f"{name}: {codes}"
    assert set(got["writes"].values()) == {"PermissionError"}, got["writes"]
    assert got["shm"] and set(got["shm"].values()) == {"PermissionError"}, got["shm"]
    assert repository.model_info(public_repo)["set"]["set_id"] == before
    with DNCClient(state["http"]) as c:
        after = c.infer(x)
    assert read_state(public_repo)["pid"] == state["pid"]  # not restarted either
    assert after[F.SET_ID].reshape(-1)[0] == want[F.SET_ID].reshape(-1)[0]
    assert np.abs(after[F.SCORES] - want[F.SCORES]).max() < 1e-6



def test_a_served_model_cannot_be_replaced(public_repo, exported):
    before = (public_repo / F.HEAD_MODEL / "1" / "model.onnx").read_bytes()
    with pytest.raises(ValueError, match="is being served .* and serves dnc"):
        repository.build(exported[0], public_repo, top_k=2)
    assert (public_repo / F.HEAD_MODEL / "1" / "model.onnx").read_bytes() == before
