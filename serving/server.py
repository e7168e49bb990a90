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
and its python backend names its shared-memory regions with a prefix of this start. Those regions hold
requests and responses: the server runs with a /dev/shm of its own (a private tmpfs in a mount
namespace, see private_shm.py), so no other local user can open one at any moment. Started with
`private_shm=False` (`dnc serve --shared-shm`, for a container whose /dev/shm is already its own) it
uses the machine's /dev/shm, where the regions are narrowed to 0600 once they appear and whatever a
crash leaves is found by its prefix and removed (`cleanup`).
"""

from __future__ import annotations

import logging
import os
import shutil
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

from dnc.core import formats as F
from dnc.core.errors import DNCError
from dnc.serving import private_shm
from dnc.serving.own_folder import open_log
from dnc.serving.processes import cleanup_shm, restrict_shm, stop_group
from dnc.serving.repo_info import read_info

log = logging.getLogger(__name__)

LOCK_HEADER = "dnc-locked"  # the header the server-changing APIs ask for (HTTP) ...
GRPC_LOCK_HEADER = f"triton-grpc-protocol-{LOCK_HEADER}"  # (its gRPC form: Triton adds this prefix)
LOCK_VALUE = "\n"  # ... with a value no HTTP header or gRPC metadata can hold: locked for every client
LOCKED = "model-repository,shared-memory,trace,logging"  # Triton API categories behind the lock
POLL_SECONDS = 1  # how often the server looks for a changed model in the repository


class ServerError(DNCError, RuntimeError):
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
    backend's shared-memory regions of this server (chosen at the first start when empty, then kept:
    a restart first removes what the previous process left under it). `private_shm`: run in a /dev/shm
    of its own (see the module docstring); False only where /dev/shm is this server's alone anyway."""

    repo: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    log_file: Path | None = None
    run_dir: Path | None = None  # backend folder and log; a temporary folder (removed at stop) when None
    host: str = "127.0.0.1"
    shm_prefix: str = ""
    private_shm: bool = True
    proc: subprocess.Popen | None = field(default=None, init=False)
    _tmp: Path | None = field(default=None, init=False)
    entries: list[str] = field(default_factory=list, init=False)  # entry models, from repository.json

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
        if self.private_shm:  # -I -S: no site, no environment, nothing of this project's imported
            return [sys.executable, "-I", "-S", private_shm.__file__, *cmd]
        return cmd

    def start(self, timeout: float = 120.0) -> TritonServer:
        if self.proc is not None and self.proc.poll() is None:  # a second process would be left running
            raise ServerError(f"this server is already running (pid {self.proc.pid}); stop it first")
        try:
            self.entries = [info["models"]["entry"] for info in read_info(self.repo)["models"].values()]
        except DNCError as e:  # not a built repository
            raise ServerError(str(e)) from None
        missing = [m for m in self.entries if not (self.repo / m / "config.pbtxt").is_file()]
        if not self.entries or missing:
            raise ServerError(f"{self.repo} is not a whole model repository (no {missing[0] if missing else 'model'}"
                              "/config.pbtxt): build one with `dnc repo build`")
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
        # glibc raises its mmap threshold to the largest buffer freed, after which request-sized buffers stay
        # in tritonserver's heap for good (+70 MB after 30 varied requests); a fixed 1 MB hands them back
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "1048576")
        self.log_file = Path(self.log_file or run_dir / "tritonserver.log")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command(backend_dir, binary)
        log.info("starting %s on %s (HTTP %d, gRPC %d, metrics %d); log %s", binary.name, self.repo,
                 self.http_port, self.grpc_port, self.metrics_port, self.log_file)
        with open_log(self.log_file) as out:  # never through a link planted as the log
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        for entry in self.entries:  # every model the repository serves
            self.wait_ready(max(1.0, deadline - time.monotonic()), entry)
        if not self.private_shm:
            restrict_shm(self.shm_prefix)

    def wait_ready(self, timeout: float, model: str = F.ENTRY_MODEL) -> None:
        """Poll the model's readiness (not /v2/health/ready, which is false while any model loads)."""
        deadline = time.monotonic() + timeout
        url = f"http://{self.http_url}/v2/models/{model}/ready"
        while time.monotonic() < deadline:
            if self.private_shm and self.proc is not None and self.proc.poll() == private_shm.FAILED:
                raise ServerError(self.log_tail(3))  # the launcher's own message: why, and the flag
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
        """The last lines of the server log (read from its last 64 KB: a log may be large)."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
                text = f.read().decode(errors="replace")
        except (OSError, TypeError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server's process group (server and stubs, see stop_group) and remove its shared memory."""
        if self.proc is not None:
            if self.proc.poll() is None:
                log.info("stopping tritonserver (pid %d)", self.proc.pid)
            else:  # it died: its stubs are orphans with nothing to finish, and a restart waits on them
                timeout = 0.0
            stop_group(self.proc.pid, timeout)
            self.proc.wait()
        cleanup_shm(self.shm_prefix)
        if self._tmp is not None:
            if self.log_file is not None and self._tmp in Path(self.log_file).parents:
                self.log_file = None  # a restart logs into its own new temporary folder
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
