"""A fleet on one machine: N supervised tritonservers on one repository behind one load balancer.

`dnc serve --replicas N` runs this, in the foreground or detached, exactly as it runs one server: the
same ports (the balancer's: clients see one HTTP and one gRPC address), the same state file (a fleet
record, see state.py), the same `dnc stop`. It behaves as a Kubernetes Deployment of N pods behind a
Service does (deploy/kubernetes/): every replica reads the same repository and polls it, so a swap
written once reaches every replica (`dnc swap` then waits until each answers with the new list, see
swap.py), and the balancer takes a replica out while it is down.

Each replica has a Supervisor of its own (supervisor.py) in a thread: a crash is restarted on the same
ports, with the same back-off, while the others serve; the balancer's health checks take the replica out
until it is ready again and its retries send the requests it dropped to another one. The balancer itself
is restarted if it dies. Ports of the replicas are free ones chosen at the start (kept across restarts);
each has its run folder (backend links, log) under the fleet's.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dnc.serving.balancer import Backend, Balancer, BalancerError, check_free, find_haproxy
from dnc.serving.own_folder import run_folder
from dnc.serving.server import ServerError, TritonServer
from dnc.serving.state import FLEET, remove_state, server_record, supervisor_record, write_record
from dnc.serving.supervisor import Supervisor

log = logging.getLogger(__name__)

MAX_REPLICAS = 16
STOP_GRACE_S = 40.0  # for the replicas' supervisors to stop their servers (each waits up to 30 s for its own)
BALANCER_BACKOFF = (0.5, 1.0, 2.0, 5.0)  # seconds before the n-th restart of the balancer in a row (last repeats)


def free_ports(n: int) -> list[int]:
    """n distinct free ports, all held at once while chosen (one by one, the system may give one twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Fleet:
    """N replicas of `repo` behind a balancer on `host`:`http_port`/`grpc_port`; run() until interrupted."""

    def __init__(self, repo: Path, replicas: int, run_dir: Path, host: str = "127.0.0.1", http_port: int = 8000,
                 grpc_port: int = 8001, private_shm: bool = True, timeout: float = 180.0):
        if not 1 <= replicas <= MAX_REPLICAS:
            raise ServerError(f"`replicas` must be 1 to {MAX_REPLICAS}, got {replicas}")
        self.repo, self.run_dir, self.timeout = Path(repo).resolve(), Path(run_dir), timeout
        ports = free_ports(3 * replicas + 2)
        self.servers = [TritonServer(self.repo, *ports[3 * i:3 * i + 3], host="127.0.0.1",
                                     run_dir=self.run_dir / f"replica-{i}", private_shm=private_shm)
                        for i in range(replicas)]
        self.host, self.http_port, self.grpc_port = host, http_port or ports[-2], grpc_port or ports[-1]
        self.balancer: Balancer | None = None
        self.stopping = threading.Event()
        self._records: list[dict | None] = [None] * replicas
        self._lock = threading.Lock()
        self._failed: list[BaseException | None] = [None] * replicas
        self._ready = [threading.Event() for _ in range(replicas)]
        self._started = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def run(self, on_ready: Callable[[Fleet], None] = lambda f: None) -> int:
        """Serve until interrupted (0), or until every replica has given up (1)."""
        find_haproxy()  # (before minutes of model loading: a missing balancer or a taken port is said at once)
        for port in (self.http_port, self.grpc_port):
            check_free(self.host, port)
        sups = [Supervisor(s, self.timeout, record=self._recorder(i), forget=lambda s: None, stopping=self.stopping)
                for i, s in enumerate(self.servers)]
        threads = [threading.Thread(target=self._replica, args=(i, sup), name=f"replica-{i}", daemon=True)
                   for i, sup in enumerate(sups)]
        try:
            for server in self.servers:
                run_folder(server.run_dir)
            run_folder(self.run_dir / "balancer")
            for t in threads:
                t.start()
            self._wait_started(threads)
            self.balancer = Balancer(self.run_dir / "balancer", self.host, self.http_port, self.grpc_port,
                                     [Backend(f"replica-{i}", s.http_port, s.grpc_port)
                                      for i, s in enumerate(self.servers)], self.servers[0].entries)
            self.balancer.start()
            self._write()
            on_ready(self)
            return self._watch(threads)
        finally:
            self._shut_down(threads)

    def _shut_down(self, threads: list[threading.Thread]) -> None:
        """Stop the balancer and every replica (each supervisor stops its own; one still starting is stopped
        from here), then forget the record. A second Ctrl-C must not cut this short."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
        self.stopping.set()
        if self.balancer is not None:
            self.balancer.stop()
        deadline = time.monotonic() + STOP_GRACE_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for server, t in zip(self.servers, threads, strict=True):
            if t.is_alive():  # still starting (start() waits for readiness): stopped here, its thread then ends
                server.stop(timeout=5)
        remove_state(self.repo)
    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def _replica(self, i: int, sup: Supervisor) -> None:
        try:
            code = sup.run(on_ready=lambda s: self._ready[i].set())
            if code:
                self._failed[i] = ServerError(f"replica {i} could not be started again "
                                              f"(see {self.servers[i].log_file})")
        except BaseException as e:  # (reported by the main thread)
            self._failed[i] = e
        finally:
            self._ready[i].set()

    def _wait_started(self, threads: list[threading.Thread]) -> None:
        """Wait until every replica is ready; the first that fails to start fails the fleet's start."""
        for i, ready in enumerate(self._ready):
            ready.wait()
            if self._failed[i] is not None:
                err = self._failed[i]
                raise ServerError(f"replica {i} of {len(threads)} did not start: {err}") from err

    def _recorder(self, i: int):
        def record(server: TritonServer, restarts: int) -> None:
            with self._lock:
                self._records[i] = server_record(server, restarts)
            if self.balancer is not None and self.balancer.proc is not None:
                self._write()
        return record

    def _write(self) -> None:
        with self._lock:
            if self.balancer is None:
                return
            replicas = [dict(r, name=f"replica-{i}") for i, r in enumerate(self._records) if r is not None]
            write_record(self.repo, {**supervisor_record(), "kind": FLEET, "pid": supervisor_record()["supervisor"],
                                     "http": self.http_url, "grpc": self.grpc_url, "metrics": None,
                                     "log": str(self.balancer.log_file), "balancer": self.balancer.record(),
                                     "replicas": replicas, "restarts": sum(r["restarts"] for r in replicas),
                                     "started": self._started})

    def _watch(self, threads: list[threading.Thread]) -> int:
        """Until interrupted: restart the balancer when it dies (backing off while it cannot start); end (1)
        when every replica has given up."""
        failed = 0
        while True:
            time.sleep(0.5)
            if not any(t.is_alive() for t in threads):
                log.error("every replica of the fleet on %s has given up; stopping", self.repo)
                return 1
            proc = self.balancer.proc
            if proc is not None and proc.poll() is None:
                continue
            if proc is not None:
                log.error("the load balancer (haproxy, pid %d) exited with status %s; starting it again",
                          proc.pid, proc.returncode)
            time.sleep(BALANCER_BACKOFF[min(failed, len(BALANCER_BACKOFF) - 1)])
            try:
                self.balancer.stop(0)
                self.balancer.start()
                self._write()
                failed = 0
            except BalancerError as e:
                failed += 1
                log.error("the load balancer could not be started again (%d in a row): %s", failed, e)
