"""No moment at which another local user can open a region of the server's shared memory.

The python backend's regions hold requests and responses. An unprivileged process (`nobody`, setpriv)
races to open every region it can find, in /dev/shm and through /proc/PID/root of every tritonserver
and stub, while a real `dnc serve` starts, takes three swaps and three restarts (kill -9): it must end
holding no descriptor to any region of that server. The same racer against `--shared-shm` (the machine's
/dev/shm, regions narrowed after they appear) does catch regions during the start: the racer can fail
the test. The launcher itself is checked as root, as an ordinary user, and where it cannot work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from dnc.clients.cli import main
from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.serving import private_shm, repository
from dnc.serving.state import read_state, stop_detached
from dnc.serving.swap import swap

pytestmark = [pytest.mark.triton, pytest.mark.slow]

SYSTEM_PYTHON = "/usr/bin/python3"  # what `nobody` can run (this environment's python lives under /root)
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
RACER = r'''
import json, os, sys, time
from pathlib import Path
stop, out = Path(sys.argv[1]), Path(sys.argv[2])
opened, looked = {}, 0
def server_pids():
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"triton" in (d / "cmdline").read_bytes():
                yield d.name
        except OSError:
            pass
while not stop.exists():
    places = [Path("/dev/shm")] + [Path(f"/proc/{p}/root/dev/shm") for p in server_pids()]
    for place in places:
        try:
            names = os.listdir(place)
        except OSError:
            continue
        for name in names:
            if name.startswith("dnc_") and name not in opened:
                try:
                    opened[name] = os.open(place / name, os.O_RDONLY)
                except OSError:
                    pass
    looked += 1
held = []
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # the descriptor listdir itself used
        continue
    if "dnc_" in target:
        held.append(target)
out.write_text(json.dumps({"uid": os.getuid(), "opened": sorted(opened), "held": held, "rounds": looked}))
'''


def _as_nobody(argv: list[str], **kw) -> subprocess.Popen:
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    return subprocess.Popen([*prefix, *NOBODY, *argv], **kw)


@pytest.fixture
def place():
    """A folder `nobody` can reach (outside pytest's 0700 folders) holding a repository of this user."""
    base = Path(tempfile.mkdtemp(prefix="dnc-private-shm-"))
    base.chmod(0o755)
    (base / "racer").mkdir(mode=0o777)
    (base / "racer").chmod(0o777)
    yield base
    stop_detached(base / "repo")
    shutil.rmtree(base, ignore_errors=True)


class Racer:
    """`nobody` opening every region it can reach, until stopped; what it opened and still holds."""

    def __init__(self, folder: Path):
        self.stop_file, self.out = folder / "stop", folder / "out.json"
        self.stop_file.unlink(missing_ok=True)
        self.out.unlink(missing_ok=True)
        self.proc = _as_nobody([SYSTEM_PYTHON, "-c", RACER, str(self.stop_file), str(self.out)])

    def finish(self, prefix: str) -> dict:
        self.stop_file.touch()
        assert self.proc.wait(timeout=60) == 0
        got = json.loads(self.out.read_text())
        assert got["uid"] not in (0, os.geteuid()) and got["rounds"] > 10
        got["opened"] = [n for n in got["opened"] if n.startswith(prefix)]  # this server's, not another test's
        got["held"] = [h for h in got["held"] if prefix in h]
        return got


def _serve(repo: Path, *flags: str) -> dict:
    assert main(["serve", "--repo", str(repo), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                 "--detach", *flags]) == 0
    return read_state(repo)


def _wait_restarted(repo: Path, old_pid: int, within: float = 30.0) -> dict:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        state = read_state(repo)
        if state and state["pid"] != old_pid:
            return state
        time.sleep(0.2)
    raise AssertionError(f"no restart within {within} s")


def test_no_other_user_opens_a_region_during_start_swaps_and_restarts(place, exported):
    repo = place / "repo"
    repository.build(exported[0], repo)
    racer = Racer(place / "racer")
    state = _serve(repo)
    assert state["private_shm"] is True
    regions = list(Path(f"/proc/{state['pid']}/root/dev/shm").glob(f"{state['shm_prefix']}*"))
    assert regions, "the server's regions live in its own /dev/shm"
    assert not list(Path("/dev/shm").glob(f"{state['shm_prefix']}*")), "none in the machine's /dev/shm"
    served = centroid_set.load(repo / F.HEAD_MODEL / repository.SET_FOLDER)
    smaller = centroid_set.CentroidSet(served.centroids[:-1], served.ks[:-1], served.class_names[:-1],
                                       served.embed_fingerprint)
    centroid_set.save(smaller, place / "smaller")
    centroid_set.save(served, place / "back")
    for target in ("smaller", "back", "smaller"):  # three swaps: each loads a new head, with new regions
        swap(repo, place / target, state["grpc"], log_file=state["log"])
    for _ in range(3):  # three restarts: each start creates every region again
        os.kill(state["pid"], signal.SIGKILL)
        state = _wait_restarted(repo, state["pid"])
    got = racer.finish(state["shm_prefix"])
    assert got["opened"] == [] and got["held"] == [], got


def test_the_racer_catches_regions_of_a_server_on_the_shared_dev_shm(place, exported):
    """The control: on the machine's /dev/shm the regions are world-readable until narrowed after the
    start, and the same racer opens them (which is why the server has a /dev/shm of its own)."""
    repo = place / "repo"
    repository.build(exported[0], repo)
    racer = Racer(place / "racer")
    state = _serve(repo, "--shared-shm")
    assert state["private_shm"] is False
    regions = list(Path("/dev/shm").glob(f"{state['shm_prefix']}*"))
    assert regions and all(r.stat().st_mode & 0o077 == 0 for r in regions)  # narrowed by now
    got = racer.finish(state["shm_prefix"])
    assert got["opened"] and got["held"], "the racer opened nothing: it could not have failed the test above"


LOOK = "import os; st = os.stat('/dev/shm'); print(oct(st.st_mode & 0o777), st.st_uid, sorted(os.listdir('/dev/shm')))"


@pytest.mark.parametrize("who", ["this user", "nobody"])
def test_the_launcher_gives_an_empty_dev_shm_of_ones_own(who, tmp_path):
    launcher = Path(private_shm.__file__)
    if who == "nobody":
        copy = Path(tempfile.mkdtemp(prefix="dnc-launcher-"))
        copy.chmod(0o755)
        shutil.copy(launcher, copy / "private_shm.py")
        launcher = copy / "private_shm.py"
        launcher.chmod(0o644)
    argv = [SYSTEM_PYTHON, "-I", "-S", str(launcher), SYSTEM_PYTHON, "-c", LOOK + "; open('/dev/shm/dnc_probe', 'w')"]
    run = _as_nobody(argv, stdout=subprocess.PIPE, text=True) if who == "nobody" else \
        subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    out, _ = run.communicate(timeout=30)
    assert run.returncode == 0, out
    mode, uid, names = out.split(" ", 2)
    assert mode == "0o700" and names.strip() == "[]"
    assert int(uid) == (os.geteuid() if who == "this user" else 65534)
    assert not Path("/dev/shm/dnc_probe").exists()  # written into the private tmpfs, gone with it
    if who == "nobody":
        shutil.rmtree(launcher.parent)


def test_a_launcher_that_cannot_make_the_namespace_names_the_flag(tmp_path):
    """In a user namespace that maps nothing, the mapping the launcher writes is refused: it fails in words,
    naming --shared-shm, with its own exit status, and runs nothing."""
    marker = tmp_path / "ran"
    run = subprocess.run(["unshare", "--user", SYSTEM_PYTHON, "-I", "-S", private_shm.__file__, "/bin/touch",
                          str(marker)], capture_output=True, text=True, timeout=30)
    assert run.returncode == private_shm.FAILED, run.stderr
    assert "cannot give tritonserver a private /dev/shm" in run.stderr and "--shared-shm" in run.stderr
    assert not marker.exists()
