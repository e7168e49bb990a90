"""Resident memory of a served process tree (tritonserver and its python stubs), read from /proc.

Why: the memory a request leaves behind is spread over several processes (the server, which holds request
and response buffers, and one python stub per model instance, which runs onnxruntime), so the benchmark
and the tests of issue 23 item 5 sum them. RSS counts a shared page (the stubs' shared-memory regions,
mapped by the server too) once per process that maps it; PSS divides it among them, so PSS sums to what
the tree really holds. Anonymous memory (the heaps: onnxruntime's buffers, numpy arrays) and shared
memory (the python backend's regions, which Triton 2.51 grows to the largest request and never shrinks)
are also given apart, since only the first can be handed back by the stubs. Linux only.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def children(pid: int) -> list[int]:
    """Direct children of pid (from /proc/PID/task/*/children)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def tree(pid: int) -> list[int]:
    """pid and all its descendants alive now."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen or not Path(f"/proc/{p}").exists():
            continue
        seen.append(p)
        todo += children(p)
    return seen


def _rollup(pid: int) -> dict[str, int]:
    """Rss, Pss, anonymous and shared-memory Pss of one process in bytes (0 for a process gone meanwhile)."""
    got = {"Rss": 0, "Pss": 0, "Anonymous": 0, "Pss_Shmem": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in got:
                got[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        log.debug("process %d gone while read", pid)
    return got


def resident(pid: int) -> dict:
    """Memory of the tree under pid now, summed over its processes (bytes): rss, pss, anon (anonymous
    resident), shm (shared-memory pss); and how many processes."""
    pids = tree(pid)
    parts = [_rollup(p) for p in pids]
    total = {name: sum(p[key] for p in parts) for name, key in (("rss", "Rss"), ("pss", "Pss"), ("anon", "Anonymous"),
                                                                ("shm", "Pss_Shmem"))}
    return {**total, "processes": len(pids)}


