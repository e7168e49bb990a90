"""Keep one tritonserver serving a repository: start it, restart it after a crash, stop it cleanly.

`dnc serve` runs a Supervisor (in the foreground, or detached in a session of its own). When
tritonserver dies without being asked to (an abort on a hostile request, a kill, running out of
memory), the crash is logged with its cause and the server log's last lines, whatever it left is
removed (python stubs in its process group, its shared-memory regions), and it is started again on
the same repository and ports. The class list served after a restart is the one the repository
holds, which is the one served before: a swap changes the repository first (see swap.py).

A request must not be able to end the service (Triton 2.51 aborts on some, see the README's Security
section), so crashes are restarted for as long as the server comes back ready, with a back-off that
throttles a crash loop without ending it: BACKOFF seconds before the 1st, 2nd, ... restart in a row
(the last value repeats), back to no wait once a server has stayed up HEALTHY_RESET seconds. The
supervisor gives up (exit status 1, the reason logged) only when the server cannot start at all:
MAX_FAILED_STARTS starts in a row that fail to become ready. The first start is not retried: a
repository that cannot be served is reported to `dnc serve` at once.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dnc.serving.processes import restrict_shm
from dnc.serving.server import ServerError, TritonServer
from dnc.serving.state import remove_state, write_state

log = logging.getLogger(__name__)

BACKOFF = (0.0, 0.5, 1.0, 2.0, 4.0)  # seconds before the n-th restart in a row; the last value repeats
HEALTHY_RESET = 30.0  # seconds up after which the next crash is restarted at once again
MAX_FAILED_STARTS = 5  # starts in a row that fail to become ready: the server cannot start, give up


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


def error_lines(tail: str, keep: int = 6) -> str:
    """The error lines of a server log ('E1202 ...', 'error: ...'), the last `keep` of them; else its last lines."""
    lines = [line for line in tail.splitlines() if re.match(r"E\d{4} |error: ", line)]
    return "\n".join(lines[-keep:]) if lines else crash_lines(tail, keep)


class Supervisor:
    """Runs `server` until interrupted (SIGINT/SIGTERM/SIGHUP raise KeyboardInterrupt in the caller's
    handler) or until `stopping` is set (a fleet runs one Supervisor per replica in threads), restarting it
    after each crash. `record(server, restarts)` is called after every start (default: the repository's
    state file names the server started last; between a crash and the restart, the dead one), `forget(server)`
    at the end (default: the state file is removed)."""

    def __init__(self, server: TritonServer, timeout: float = 180.0,
                 record: Callable[[TritonServer, int], object] | None = None,
                 forget: Callable[[TritonServer], object] | None = None, stopping: threading.Event | None = None):
        self.server = server
        self.timeout = timeout
        self.record = record or write_state
        self.forget = forget or (lambda s: remove_state(s.repo))
        self.stopping = stopping or threading.Event()
        self.restarts = 0  # servers started again after a crash
        self.crashes = 0  # crashes in all
        self._in_row = 0  # restarts since the server last stayed up HEALTHY_RESET seconds

    def run(self, on_ready: Callable[[TritonServer], None] = lambda s: None) -> int:
        """Serve until interrupted or stopped (returns 0) or until the server cannot be started again (returns 1)."""
        try:
            self.server.start(self.timeout)
            self.record(self.server, 0)
            on_ready(self.server)
            while not self.stopping.is_set():
                up_since = time.monotonic()
                code = self._watch()
                if code is None:  # asked to stop
                    break
                up = time.monotonic() - up_since
                self.crashes += 1
                self._in_row = 1 if up >= HEALTHY_RESET else self._in_row + 1
                wait = backoff(self._in_row)
                log.error("tritonserver (pid %d) %s after %.1f s up (crash %d, %d in a row); restarting it in "
                          "%.1f s. Its log ends:\n%s", self.server.proc.pid, describe_exit(code), up, self.crashes,
                          self._in_row, wait, crash_lines(self.server.log_tail(60)))
                self.server.stop(timeout=5)  # its stubs and shared memory, before a new server starts
                if not self._restart(wait):
                    return 1
            return 0
        finally:
            if threading.current_thread() is threading.main_thread():  # a second Ctrl-C must not cut the cleanup
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_IGN)
            self.server.stop()
            self.forget(self.server)

    def _watch(self) -> int | None:
        """Wait for the server to exit (its status; None once `stopping` is set), meanwhile closing its new
        shared-memory regions to other users (a reload creates new ones, world-readable, every second at most)."""
        while not self.stopping.is_set():
            try:
                return self.server.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if not self.server.private_shm:  # (a private /dev/shm is closed to others from the start)
                    restrict_shm(self.server.shm_prefix)
        return None

    def _restart(self, wait: float) -> bool:
        """Start the server again after `wait` seconds, backing off further after each start that fails to
        become ready; False after MAX_FAILED_STARTS failures in a row (the server cannot start)."""
        failed = 0
        crashed_at = time.monotonic()
        while True:
            if self.stopping.wait(wait):
                return True  # asked to stop: run() ends
            t0 = time.monotonic()
            try:
                self.server.start(self.timeout)
            except ServerError as e:
                failed += 1
                first = str(e).splitlines()[0]
                if failed >= MAX_FAILED_STARTS:
                    log.error("tritonserver could not be started again: %d starts in a row failed to become ready, "
                              "giving up on %s. Last failure: %s Its errors:\n%s\nFix what the server log %s "
                              "names, then run `dnc serve` again.", failed, self.server.repo, first,
                              error_lines(self.server.log_tail(400)), self.server.log_file)
                    return False
                wait = backoff(self._in_row + failed)
                log.error("restarting tritonserver failed (%d in a row, giving up at %d): %s; next try in %.1f s",
                          failed, MAX_FAILED_STARTS, first, wait)
                continue
            self.restarts += 1
            self.record(self.server, self.restarts)
            now = time.monotonic()
            log.warning("tritonserver restarted (pid %d) on %s: ready %.1f s after the crash (start %.1f s; "
                        "restart %d)", self.server.proc.pid, Path(self.server.repo), now - crashed_at, now - t0,
                        self.restarts)
            return True


def backoff(n: int) -> float:
    """Seconds to wait before the n-th restart in a row (n >= 1)."""
    return BACKOFF[min(max(n, 1), len(BACKOFF)) - 1]
