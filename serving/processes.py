"""What a tritonserver leaves on the machine, found and removed: its process group and shared memory.

tritonserver runs in a process group of its own, with its python-backend stubs in it; after a crash or
a `kill -9` the stubs live on, each holding a shared-memory region in /dev/shm. A pid is only ever
signalled together with the start time recorded for it (a reused pid names another process), and a
group only when all its members are tritonserver or its stubs.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = re.compile(r"dnc_\d+_\d+_")  # what TritonServer names its python backend's regions with


def start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), None if it is gone or a zombie: with the pid,
    it names one process even after the pid is reused."""
    try:
        fields = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, ValueError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def command_line(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return []


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


def triton_group(pgid: int, started: int | None = None) -> bool:
    """Whether process group `pgid` is a tritonserver's: live members, each tritonserver or its python stub,
    and its leader, if alive, the process that started at `started` (when given)."""
    leader = start_ticks(pgid)
    if started is not None and leader is not None and leader != started:
        return False  # the pid was reused by another process
    members = group_processes(pgid)
    for pid in members:
        argv = command_line(pid)
        if argv and not argv[0].endswith((b"tritonserver", b"triton_python_backend_stub")):
            return False
    return bool(members)


def stop_group(pgid: int, timeout: float = 30.0) -> None:
    """SIGTERM a server's process group (tritonserver and its stubs), wait until it is empty, and SIGKILL
    whatever is left after `timeout`."""
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while group_processes(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if timeout > 0 and group_processes(pgid):
        log.warning("tritonserver (pid %d) did not stop in %.0f s; killing it", pgid, timeout)
    signal_group(pgid, signal.SIGKILL)


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def region_dir(pid: int, private: bool) -> Path:
    """Where the shared-memory regions of the server `pid` are, as its own user sees them: in its private
    /dev/shm (reached through /proc while it runs; see private_shm.py) or in the machine's."""
    return Path(f"/proc/{int(pid)}/root/dev/shm") if private else SHM_DIR


def restrict_shm(prefix: str) -> int:
    """Make a server's shared-memory regions readable by its user only; returns how many were changed.
    The python backend creates them world-readable (0644, whatever the umask), and they hold requests
    and responses; a supervisor calls this twice a second (see supervisor.py)."""
    if not prefix or not SHM_PREFIX.fullmatch(prefix):
        return 0
    changed = 0
    for region in SHM_DIR.glob(f"{prefix}*"):
        try:
            if region.stat().st_mode & 0o077:
                region.chmod(0o600)
                changed += 1
        except OSError:  # removed meanwhile, or not ours
            continue
    return changed


def cleanup_shm(prefix: str) -> list[str]:
    """Remove the shared-memory regions a server started with `prefix` left (after a crash or a kill).
    Only prefixes of the form TritonServer gives are honoured (a state file is not trusted blindly)."""
    if not prefix or not SHM_PREFIX.fullmatch(prefix):
        return []
    gone = []
    for region in SHM_DIR.glob(f"{prefix}*"):
        region.unlink(missing_ok=True)
        gone.append(region.name)
    if gone:
        log.info("removed %d shared-memory region(s) left by tritonserver (%s*)", len(gone), prefix)
    return gone
