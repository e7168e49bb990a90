"""Keep one tritonserver serving a repository: start it, restart it after a crash, stop it cleanly.

`dnc serve` runs a Supervisor (in the foreground, or detached in a session of its own). When
tritonserver dies without being asked to (an abort on a hostile request, a kill, running out of
memory), the crash is logged with its cause and the server log's last lines, whatever it left is
removed (python stubs in its process group, its shared-memory regions), and it is started again on
the same repository and ports. The class list served after a restart is the one the repository
holds, which is the one served before: a swap changes the repository first (see swap.py). More than
MAX_RESTARTS crashes within RESTART_WINDOW seconds stop the supervisor (a server that cannot stay up
is not hidden behind a restart loop).
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from serving.processes import restrict_shm
from serving.server import ServerError, TritonServer
from serving.state import remove_state, write_state

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0  # seconds


def describe_exit(code: int | None) -> str:
    """A process exit status in words: 'exited with status 1' or 'was killed by SIGABRT'."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def crash_lines(tail: str, keep: int = 6) -> str:
    """The last lines of a server log without the stack frames of a crash dump ('12# 0x... in ...')."""
    lines = [line for line in tail.splitlines() if line.strip() and not re.match(r"\s*\d+# ", line)]
    return "\n".join(lines[-keep:])


class Supervisor:
    """Runs `server` until interrupted (SIGINT/SIGTERM/SIGHUP raise KeyboardInterrupt in the caller's
    handler), restarting it after each crash; the repository's state file names the server started last
    (between a crash and the restart, the dead one)."""

    def __init__(self, server: TritonServer, timeout: float = 180.0):
        self.server = server
        self.timeout = timeout
        self.restarts = 0

    def run(self, on_ready: Callable[[TritonServer], None] = lambda s: None) -> int:
        """Serve until interrupted (returns 0) or until the server crashes too often (returns 1)."""
        recent: list[float] = []
        try:
            self.server.start(self.timeout)
            write_state(self.server)
            on_ready(self.server)
            while True:
                code = self._watch()
                crashed = self.server.proc.pid
                log.error("tritonserver (pid %d) %s; restarting it. Its log ends:\n%s", crashed,
                          describe_exit(code), crash_lines(self.server.log_tail(60)))
                self.server.stop(timeout=5)  # its stubs and shared memory, before a new server starts
                if not self._restart(recent):
                    return 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl-C must not cut the cleanup
                signal.signal(sig, signal.SIG_IGN)
            self.server.stop()
            remove_state(self.server.repo)

    def _watch(self) -> int:
        """Wait for the server to exit, meanwhile closing its new shared-memory regions to other users
        (a reload creates new ones, world-readable, every second at most)."""
        while True:
            try:
                return self.server.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                restrict_shm(self.server.shm_prefix)

    def _restart(self, recent: list[float]) -> bool:
        """Start the server again (retrying within the restart budget); False when the budget is spent."""
        while True:
            now = time.monotonic()
            recent[:] = [t for t in recent if now - t < RESTART_WINDOW] + [now]
            if len(recent) > MAX_RESTARTS:
                log.error("tritonserver crashed %d times within %.0f s: giving up (log %s)", len(recent),
                          RESTART_WINDOW, self.server.log_file)
                return False
            try:
                self.server.start(self.timeout)
            except ServerError as e:
                log.error("restarting tritonserver failed: %s", str(e).splitlines()[0])
                time.sleep(1.0)
                continue
            self.restarts += 1
            write_state(self.server, self.restarts)
            log.warning("tritonserver restarted (pid %d) on %s in %.1f s (restart %d)", self.server.proc.pid,
                        Path(self.server.repo), time.monotonic() - now, self.restarts)
            return True
