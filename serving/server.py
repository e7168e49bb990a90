"""Run a real `tritonserver` on a model repository: find the binary, start, wait until ready, stop.

The binary is the system one when `tritonserver` is on PATH, else the one in the nvidia-pytriton
wheel (Triton 2.51, python backend only), which needs a backend folder assembled from the wheel's
pieces (the backend library, the stub for this Python, triton_python_backend_utils.py), its bundled
shared libraries on LD_LIBRARY_PATH, and this environment's site-packages named to the models (the
stub embeds its own interpreter, which ignores PYTHONPATH and must find numpy and onnxruntime).

What is served is what the repository on disk holds, and nothing else can change it:
- the server polls the repository (`--model-control-mode=poll`, every POLL_SECONDS): a swap is an
  atomic file replacement in the repository, so the file system's permissions are the access control;
- every API that changes the server (model load/unload, shared memory, tracing, logging) is locked
  behind a header whose required value (a newline) no HTTP or gRPC request can carry. No key exists,
  so none can leak through a command line, a state file or an environment.
The server runs in a process group of its own (stopping the group also stops its python-backend stubs),
and its python backend names its shared-memory regions with a prefix of this start, so whatever a
crash leaves in /dev/shm is found and removed (`cleanup`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from export import formats as F

log = logging.getLogger(__name__)

LOCK_HEADER = "dnc-locked"  # the header the server-changing APIs ask for ...
LOCK_VALUE = "\n"  # ... with a value no HTTP header or gRPC metadata can hold: locked for every client
LOCKED = "model-repository,shared-memory,trace,logging"  # Triton API categories behind the lock
POLL_SECONDS = 1  # how often the server looks for a changed model in the repository
SHM_DIR = Path("/dev/shm")


class ServerError(RuntimeError):
    """The server could not be started or did not become ready; the message carries its log's tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wheel_root() -> Path | None:
    try:
        import pytriton
    except ImportError:
        return None
    return Path(pytriton.__file__).parent / "tritonserver"


def find_tritonserver() -> tuple[Path, Path | None]:
    """(tritonserver binary, wheel's tritonserver folder or None for a system install)."""
    system = shutil.which("tritonserver")
    if system:
        return Path(system), None
    root = _wheel_root()
    if root is None or not (root / "bin" / "tritonserver").is_file():
        raise ServerError("no tritonserver on PATH and nvidia-pytriton is not installed: run `make setup` "
                          "(or use the Dockerfile's official Triton image)")
    return root / "bin" / "tritonserver", root


def python_backend_dir(wheel: Path, dest: Path) -> Path:
    """A backend folder with the wheel's python backend and the stub for this Python version."""
    stub = wheel / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / \
        "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"nvidia-pytriton has no python backend stub for Python "
                          f"{sys.version_info.major}.{sys.version_info.minor}")
    py = dest / "python"
    py.mkdir(parents=True, exist_ok=True)
    for src in (wheel / "backends" / "python" / "libtriton_python.so",
                wheel / "backends" / "python" / "triton_python_backend_utils.py", stub):
        link = py / src.name
        link.unlink(missing_ok=True)  # a kept folder may link to another Python's stub or a moved checkout
        link.symlink_to(src)
    return dest


@dataclass
class TritonServer:
    """One tritonserver process on `repo`. Use as a context manager, or start()/stop().

    Ports of 0 are replaced by free ones (kept across restarts). `shm_prefix` names the python
    backend's shared-memory regions of this server (a new one per start when empty)."""

    repo: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    log_file: Path | None = None
    run_dir: Path | None = None  # backend folder and log; a temporary folder (removed at stop) when None
    host: str = "127.0.0.1"
    shm_prefix: str = ""
    proc: subprocess.Popen | None = field(default=None, init=False)
    _tmp: Path | None = field(default=None, init=False)

    def __post_init__(self):
        self.repo = Path(self.repo).resolve()
        self.http_port = self.http_port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        self.metrics_port = self.metrics_port or free_port()

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self, backend_dir: Path | None, binary: Path) -> list[str]:
        # Health, metadata, inference and statistics stay open; everything that changes the server is locked.
        locked = f"{LOCKED}:{LOCK_HEADER}={LOCK_VALUE}"
        cmd = [str(binary), f"--model-repository={self.repo}", "--model-control-mode=poll",
               f"--repository-poll-secs={POLL_SECONDS}",
               f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
               f"--metrics-port={self.metrics_port}", f"--metrics-address={self.host}", f"--http-address={self.host}",
               f"--grpc-address={self.host}", f"--http-restricted-api={locked}",
               f"--grpc-restricted-protocol={locked}", "--exit-timeout-secs=20", "--log-verbose=0",
               "--strict-readiness=true", f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}"]
        if backend_dir is not None:
            cmd.append(f"--backend-directory={backend_dir}")
        return cmd

    def start(self, timeout: float = 120.0) -> TritonServer:
        if not (self.repo / F.ENTRY_MODEL / "config.pbtxt").is_file():
            raise ServerError(f"{self.repo} is not a model repository (no {F.ENTRY_MODEL}/config.pbtxt): "
                              "build one with `dnc repo build`")
        binary, wheel = find_tritonserver()
        self.shm_prefix = self.shm_prefix or f"dnc_{os.getpid()}_{time.monotonic_ns() % 10**9}_"
        if self.run_dir is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="dnc-triton-"))
        try:
            self._launch(binary, wheel, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, binary: Path, wheel: Path | None, timeout: float) -> None:
        env = dict(os.environ)
        backend_dir = None
        run_dir = Path(self.run_dir or self._tmp)
        if wheel is not None:
            backend_dir = python_backend_dir(wheel, run_dir / "backends")
            libs = wheel.parent.parent / "nvidia_pytriton.libs"
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH")) if p)
        env["DNC_SITE_PACKAGES"] = sysconfig.get_paths()["purelib"]  # see python_model.py
        self.log_file = Path(self.log_file or run_dir / "tritonserver.log")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command(backend_dir, binary)
        log.info("starting %s on %s (HTTP %d, gRPC %d, metrics %d); log %s", binary.name, self.repo,
                 self.http_port, self.grpc_port, self.metrics_port, self.log_file)
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float, model: str = F.ENTRY_MODEL) -> None:
        """Poll the model's readiness (not /v2/health/ready, which is false while any model loads)."""
        deadline = time.monotonic() + timeout
        url = f"http://{self.http_url}/v2/models/{model}/ready"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ServerError(f"tritonserver exited with status {self.proc.returncode if self.proc else '?'} "
                                  f"before {model} was ready:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise ServerError(f"{model} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AttributeError):
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server's process group (server and stubs, see stop_group) and remove its shared memory."""
        if self.proc is not None:
            if self.proc.poll() is None:
                log.info("stopping tritonserver (pid %d)", self.proc.pid)
            stop_group(self.proc.pid, timeout)
            self.proc.wait()
        cleanup_shm(self.shm_prefix)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


STATE_FILE = ".dnc-server.json"  # in the repository: the supervisor of `dnc serve`, its server and addresses


def write_state(server: TritonServer, restarts: int = 0) -> Path:
    """Record the running server and the process supervising it (this one) in its repository."""
    path = server.repo / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"supervisor": os.getpid(), "supervisor_started": start_ticks(os.getpid()),
                               "pid": server.proc.pid, "http": server.http_url, "grpc": server.grpc_url,
                               "metrics": server.metrics_url, "log": str(server.log_file),
                               "shm_prefix": server.shm_prefix, "restarts": restarts}))
    tmp.replace(path)
    return path


def read_state(repo: str | Path) -> dict | None:
    path = Path(repo) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def supervisor_alive(state: dict) -> bool:
    """Whether the state's supervisor still runs (the same process: its pid may have been reused)."""
    pid = state.get("supervisor")
    return bool(pid) and start_ticks(int(pid)) == state.get("supervisor_started")


def is_running(state: dict) -> bool:
    """Whether what a state file records still runs: its supervisor, or (a supervisor killed) its server."""
    return supervisor_alive(state) or triton_group(int(state["pid"]))


def stop_detached(repo: str | Path, timeout: float = 30.0) -> int | None:
    """Stop what `dnc serve` left running on `repo`: its supervisor (which stops its server), then whatever
    a supervisor killed without notice leaves (server, stubs, shared memory). Returns the pid stopped
    (None if nothing ran)."""
    state = read_state(repo)
    if state is None:
        return None
    stopped = None
    if supervisor_alive(state):
        pid = int(state["supervisor"])
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout + 15
        while start_ticks(pid) == state["supervisor_started"] and time.monotonic() < deadline:
            time.sleep(0.1)
        stopped = pid
    server = int(state["pid"])
    if triton_group(server):
        stop_group(server, timeout)
        stopped = stopped or server
    cleanup_shm(state.get("shm_prefix", ""))
    (Path(repo) / STATE_FILE).unlink(missing_ok=True)
    return stopped


def cleanup_shm(prefix: str) -> list[str]:
    """Remove the shared-memory regions a server started with `prefix` left (after a crash or a kill)."""
    if not prefix:
        return []
    gone = []
    for region in SHM_DIR.glob(f"{prefix}*"):
        region.unlink(missing_ok=True)
        gone.append(region.name)
    if gone:
        log.info("removed %d shared-memory region(s) left by tritonserver (%s*)", len(gone), prefix)
    return gone


def stop_group(pgid: int, timeout: float = 30.0) -> None:
    """SIGTERM a server's process group (tritonserver and its stubs), wait until it is empty, and SIGKILL
    whatever is left after `timeout`."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while group_processes(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_processes(pgid):
        log.warning("tritonserver (pid %d) did not stop in %.0f s; killing it", pgid, timeout)
    _signal_group(pgid, signal.SIGKILL)


def start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), None if it is gone or a zombie: with the pid,
    it names one process even after the pid is reused."""
    try:
        fields = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, ValueError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def triton_group(pgid: int) -> bool:
    """Whether process group `pgid` is a tritonserver's: live members, each tritonserver or its python stub
    (a stale pid whose group now belongs to something else is never signalled)."""
    members = group_processes(pgid)
    for pid in members:
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if not argv0.endswith((b"tritonserver", b"triton_python_backend_stub")):
            return False
    return bool(members)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_processes(pgid: int) -> list[int]:
    """Live processes in a process group (from /proc): what a clean stop must leave empty."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            pids.append(int(d.name))
    return pids
