"""The record of a served repository, REPO/.dnc-server.json: who supervises it, its server(s), its addresses.

`dnc serve` writes it once the server is ready and after every restart (`started`: when that server
became ready); `dnc swap` reads the addresses and the server log from it; `dnc status` reports it;
`dnc stop` stops what it names. A fleet (`dnc serve --replicas N`) has one record too: `kind` "fleet",
`http`/`grpc` the load balancer's addresses (what clients use), `balancer` its process, and `replicas` one
entry per tritonserver of the form a single server's record has (pid, addresses, log, shared memory).
It holds no secret. Anyone who may write the repository may also edit it, so nothing in it is acted on
unchecked: a pid is signalled only with the start time recorded for it and a command line of the kind
expected, a shared-memory prefix only when it has the form the server gives it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from dnc.serving.balancer import balancer_alive, stop_recorded
from dnc.serving.processes import cleanup_shm, command_line, start_ticks, stop_group, triton_group
from dnc.serving.server import ServerError, TritonServer

STATE_FILE = ".dnc-server.json"
FLEET = "fleet"


def server_record(server: TritonServer, restarts: int = 0) -> dict:
    """What the state file says of one running tritonserver."""
    return {"pid": server.proc.pid, "server_started": start_ticks(server.proc.pid), "http": server.http_url,
            "grpc": server.grpc_url, "metrics": server.metrics_url, "log": str(server.log_file),
            "shm_prefix": server.shm_prefix, "private_shm": server.private_shm, "restarts": restarts,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def supervisor_record() -> dict:
    return {"supervisor": os.getpid(), "supervisor_started": start_ticks(os.getpid())}


def write_state(server: TritonServer, restarts: int = 0) -> Path:
    """Record the running server and the process supervising it (this one) in its repository."""
    return write_record(server.repo, {**supervisor_record(), **server_record(server, restarts)})


def write_record(repo: Path, record: dict) -> Path:
    """Write a state record atomically (a reader sees the old one or the new one)."""
    path = Path(repo) / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
    return path


def servers_of(state: dict) -> list[dict]:
    """The tritonserver records of a state: a fleet's replicas, or the single server's record itself."""
    if state.get("kind") == FLEET:
        replicas = state.get("replicas")
        if not isinstance(replicas, list) or not all(isinstance(r, dict) for r in replicas):
            raise ServerError("the fleet record has no list of replicas: remove it if no server runs")
        return replicas
    return [state]


def read_state(repo: str | Path) -> dict | None:
    path = Path(repo) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        state = None
    if not isinstance(state, dict):
        raise ServerError(f"{path} is not a server record (not a JSON object): remove it if no server of {repo} "
                          "runs")
    return state


def remove_state(repo: str | Path) -> None:
    (Path(repo) / STATE_FILE).unlink(missing_ok=True)


def supervisor_alive(state: dict) -> bool:
    """Whether the state's supervisor still runs: the same process (pid and start time), a `dnc serve`."""
    pid = state.get("supervisor")
    if not pid or start_ticks(int(pid)) != state.get("supervisor_started"):
        return False
    return b"serve" in command_line(int(pid))


def server_alive(state: dict) -> bool:
    """Whether one of the state's tritonservers (or the stubs it left), or a fleet's balancer, still runs."""
    return any(_one_alive(r) for r in servers_of(state)) or balancer_alive(state.get("balancer"))


def _one_alive(record: dict) -> bool:
    return bool(record.get("pid")) and triton_group(int(record["pid"]), record.get("server_started"))


def is_running(state: dict) -> bool:
    """Whether what a state file records still runs: its supervisor, or (a supervisor killed) its server."""
    return supervisor_alive(state) or server_alive(state)


def stop_detached(repo: str | Path, timeout: float = 30.0) -> int | None:
    """Stop what `dnc serve` left running on `repo`: its supervisor (which stops its server, or a fleet's
    balancer and replicas), then whatever a supervisor killed without notice leaves (balancer, servers,
    stubs, shared memory). Returns the pid stopped (None if nothing ran). A supervisor that does not stop
    is reported and left recorded."""
    state = read_state(repo)
    if state is None:
        return None
    stopped = None
    if supervisor_alive(state):
        pid = int(state["supervisor"])
        try:
            os.kill(pid, signal.SIGTERM)
        except PermissionError as e:
            raise ServerError(f"cannot stop the supervisor of {repo} (pid {pid}): {e}") from e
        except ProcessLookupError:
            pass
        grace = timeout + (60 if state.get("kind") == FLEET else 15)  # (a fleet waits on replicas still starting)
        deadline = time.monotonic() + grace
        while start_ticks(pid) == state["supervisor_started"] and time.monotonic() < deadline:
            time.sleep(0.1)
        if start_ticks(pid) == state["supervisor_started"]:
            raise ServerError(f"the supervisor of {repo} (pid {pid}) did not stop within {grace:.0f} s; "
                              f"nothing else was touched")
        stopped = pid
    if stop_recorded(state.get("balancer")):
        stopped = stopped or int(state["balancer"]["pid"])
    for record in servers_of(state):
        if _one_alive(record):
            stop_group(int(record["pid"]), timeout)
            stopped = stopped or int(record["pid"])
        cleanup_shm(record.get("shm_prefix", ""))
    remove_state(repo)
    return stopped
