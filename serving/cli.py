"""`dnc repo build`, `dnc serve`, `dnc stop`, `dnc swap` and `dnc status`: thin wrappers over the serving
library, added to the one `dnc` command (clients/cli.py).

Every command takes `--repo` and none has a default: a default folder would be relative to where the
command runs, which in a checkout is the source tree (the old default wrote built models, weights and
server state into the committed model_repository/), and a hidden per-user folder would be shared by every
project of that user. A repository is a deployment artefact its user names.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from dnc.core.errors import InputError
from dnc.serving.fleet import MAX_REPLICAS, Fleet
from dnc.serving.own_folder import open_log, own_tree, run_folder
from dnc.serving.repository import RUNTIMES, build
from dnc.serving.server import ServerError, TritonServer, find_tritonserver
from dnc.serving.state import FLEET, is_running, read_state, servers_of, stop_detached
from dnc.serving.status import render, status
from dnc.serving.supervisor import Supervisor
from dnc.serving.swap import swap

_D = argparse.ArgumentDefaultsHelpFormatter


def add_commands(sub: argparse._SubParsersAction) -> None:
    _add_repo_build(sub)
    _add_serving(sub)


def _add_repo_build(sub: argparse._SubParsersAction) -> None:
    repo = sub.add_parser("repo", help="Triton model repositories").add_subparsers(dest="repo_command", required=True,
                                                                                   metavar="ACTION")
    p = repo.add_parser("build", formatter_class=_D, help="generate a Triton model repository from an export")
    p.add_argument("export", help="export folder written by `dnc export`")
    p.add_argument("--repo", required=True, help="repository folder to write (a new or empty folder, or one "
                   "`dnc repo build` wrote)")
    p.add_argument("--runtime", choices=RUNTIMES, default="python",
                   help="python: python-backend models running onnxruntime (the local server); onnxruntime, "
                        "tensorrt: native backends of the official Triton container")
    p.add_argument("--name", default="dnc", help="the model's name in the repository (clients' --model); other "
                   "models of the repository are left as they are")
    p.add_argument("--centroids", default=None, help="serve this centroid set instead of the export's")
    p.add_argument("--max-pixels", type=int, default=None, help="largest picture (height x width) the server "
                   "accepts in a request (default: 16.8 million for a classifier, 4.2 million for a segmenter)")
    p.add_argument("--max-batch", type=int, default=None, help="largest batch Triton forms (default 64 for a "
                   "classifier, 8 for a segmenter)")
    p.add_argument("--top-k", type=int, default=5, help="classes ranked with evidence in every response")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads of the embedding model (0: per core)")
    p.add_argument("--instances", type=int, default=1, help="instances of the embedding model")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="where the embedding model runs; auto: cpu for --runtime python, gpu for the native runtimes")
    p.add_argument("--json", action="store_true", help="print the repository description as JSON")
    p.set_defaults(func=cmd_repo_build, command="repo build")


def _add_serving(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", formatter_class=_D,
                       help="start tritonserver on a model repository, supervised (restarted after a crash)")
    p.add_argument("--repo", required=True, help="repository built by `dnc repo build`")
    p.add_argument("--http-port", type=int, default=8000, help="0: a free port")
    p.add_argument("--grpc-port", type=int, default=8001, help="0: a free port")
    p.add_argument("--metrics-port", type=int, default=8002, help="0: a free port")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all; with the bundled "
                   "Triton 2.51 a non-loopback address also needs --allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="let the bundled Triton 2.51 (nvidia-pytriton wheel) listen beyond loopback. It has published "
                        "unauthenticated crash and code-execution vulnerabilities (CVE-2025-23310/23311 and others, "
                        "see the README's Security section), so expose it only on a network you trust; deploy the "
                        "Dockerfile's current Triton release otherwise")
    p.add_argument("--shared-shm", action="store_true",
                   help="use the machine's /dev/shm instead of one of the server's own (a private tmpfs in a mount "
                        "namespace). Its regions hold requests and responses and are created world-readable, then "
                        "narrowed: only where /dev/shm is this server's alone (a container of its own) or where the "
                        "kernel allows no namespace")
    p.add_argument("--detach", action="store_true", help="return once ready, leaving the server and its "
                   "supervisor running (stop them with `dnc stop`)")
    p.add_argument("--replicas", type=int, default=1, help="tritonservers on the repository: above 1, a fleet "
                   "behind a load balancer (HAProxy) on the HTTP and gRPC ports, each replica on free ports of its "
                   "own and restarted after a crash; `dnc swap` reaches every one")
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for the models to load")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("stop", formatter_class=_D, help="stop a server started with `dnc serve --detach`")
    p.add_argument("--repo", required=True, help="the repository the server serves")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("swap", formatter_class=_D,
                       help="replace the class list of a running server by a centroid set (one reload, no gap)")
    p.add_argument("--repo", required=True, help="the repository the server serves")
    p.add_argument("--centroids", required=True, help="centroid set folder (from `dnc centroids`)")
    p.add_argument("--model", default=None, help="the model whose class list changes (default: the repository's "
                   "only model)")
    p.add_argument("--url", default=None, help="gRPC address of the server of --repo, asked which list it "
                   "answers with (default: from `dnc serve`'s state file, every replica of a fleet; else "
                   "localhost:8001)")
    p.add_argument("--replicas", default=None, metavar="HOST:PORT", help="a fleet's replicas: every address HOST "
                   "resolves to, at gRPC port PORT (on Kubernetes, the headless Service of deploy/kubernetes/); the "
                   "swap returns once every one answers with the new list")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for the server(s) to answer with "
                   "the new list before putting the old one back")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_swap)

    p = sub.add_parser("status", formatter_class=_D,
                       help="what a repository serves (models, tasks, class lists) and its server's address and "
                            "health; exit status 1 when a server is recorded but unhealthy")
    p.add_argument("--repo", required=True, help="repository built by `dnc repo build`")
    p.add_argument("--url", default=None, help="gRPC address of the server to ask (default: from `dnc serve`'s "
                   "state file; without one, nothing is asked)")
    p.add_argument("--timeout", type=float, default=5, help="seconds each question to the server may take")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_status)


def cmd_repo_build(a: argparse.Namespace) -> int:
    if Path(a.repo).is_dir():
        own_tree(Path(a.repo))  # a repository another user prepared (or may write) could change what runs
    info = build(a.export, a.repo, runtime_name=a.runtime, centroids=a.centroids, max_batch=a.max_batch,
                 top_k=a.top_k, threads=a.threads, instances=a.instances, device=a.device, name=a.name,
                 max_pixels=a.max_pixels)
    if a.json:
        print(json.dumps(info))
    else:
        s = info["set"]
        print(f"model repository {a.repo} ({info['runtime']} runtime): {info['task']} model {a.name} (entry model "
              f"{info['models']['entry']}), class list {s['set_id']} with {s['num_classes']} classes "
              f"({', '.join(s['class_names'])})")
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    repo = Path(a.repo)
    _check_host(a.host, a.allow_remote, bundled=find_tritonserver()[1] is not None)
    if not 1 <= a.replicas <= MAX_REPLICAS:
        raise InputError(f"`replicas` must be 1 to {MAX_REPLICAS}, got {a.replicas}")
    state = read_state(repo)
    if state is not None and is_running(state):
        raise InputError(f"a server started by `dnc serve` is already running on {repo} (pid {state['pid']}, "
                         f"HTTP {state['http']}); stop it first (`dnc stop`, `repo` {repo})")
    run_dir = repo.resolve().with_name(f".{repo.resolve().name}.server")
    if repo.is_dir():  # (a missing repository is named by the server's start)
        own_tree(repo)  # what the server will execute: this user's alone
    run_folder(run_dir)
    if a.detach:
        return _detach(a, run_dir)
    lock = _hold_serve_lock(repo, run_dir)  # held until this process exits  # noqa: F841
    # Explicit handlers, set before the (long) start so an interrupt then still stops the server: a
    # process started in the background of a non-interactive shell inherits SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal of a foreground serve closed
        signal.signal(sig, _interrupt)
    if a.replicas != 1:
        runner = Fleet(repo, a.replicas, run_dir, host=a.host, http_port=a.http_port, grpc_port=a.grpc_port,
                       private_shm=not a.shared_shm, timeout=a.timeout)
    else:
        server = TritonServer(repo, http_port=a.http_port, grpc_port=a.grpc_port, metrics_port=a.metrics_port,
                              host=a.host, run_dir=run_dir, private_shm=not a.shared_shm)
        runner = Supervisor(server, a.timeout)
    try:
        return runner.run(on_ready=_announce)
    except KeyboardInterrupt:
        print("stopping", flush=True)
        return 0


def _hold_serve_lock(repo: Path, run_dir: Path):
    """One supervisor per repository: an exclusive lock in its run folder, taken before anything starts
    (closes the window between the state-file check and the state file being written)."""
    run_folder(run_dir)
    lock = open_log(run_dir / "serve.lock")  # (kept open: the lock lives with the process)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise InputError(f"another `dnc serve` is starting or running on {repo}; stop it first (`dnc stop`, "
                         f"`repo` {repo})") from None
    return lock


def _check_host(host: str, allow_remote: bool, bundled: bool) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise InputError(f"`host` {host!r} is not an IP address (give 127.0.0.1, 0.0.0.0 or an interface's "
                         "address)") from None
    if bundled and not loopback and not allow_remote:
        raise InputError(f"`host` {host}: the bundled Triton 2.51 has published unauthenticated crash and "
                         "code-execution vulnerabilities, so it listens on loopback only; set `allow_remote` to "
                         "expose it on a network you trust (README, Security)")


def _announce(server) -> None:
    if isinstance(server, Fleet):
        print(f"serving {server.repo} with {len(server.servers)} replicas behind a load balancer - HTTP "
              f"{server.http_url}, gRPC {server.grpc_url}; replicas' logs in {server.run_dir}", flush=True)
        return
    print(f"serving {server.repo} - HTTP {server.http_url}, gRPC {server.grpc_url}, metrics {server.metrics_url}; "
          f"log {server.log_file}", flush=True)


def _detach(a: argparse.Namespace, run_dir: Path) -> int:
    """Start `dnc serve` (the supervisor) in a session of its own, through the one `dnc` entry point, and
    return once its server is ready."""
    run_folder(run_dir)
    out = run_dir / "supervisor.log"
    cmd = [sys.executable, "-m", "dnc.clients.cli", "serve", "--repo", str(a.repo), "--http-port", str(a.http_port),
           "--grpc-port", str(a.grpc_port), "--metrics-port", str(a.metrics_port), "--host", a.host,
           "--timeout", str(a.timeout), "--replicas", str(a.replicas), *(["--allow-remote"] if a.allow_remote else []),
           *(["--shared-shm"] if a.shared_shm else [])]
    with open_log(out) as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + a.timeout + 30
    while time.monotonic() < deadline:
        state = read_state(a.repo)
        if state is not None and state.get("supervisor") == proc.pid:
            if state.get("kind") == FLEET:
                print(f"serving {a.repo} with {len(state.get('replicas', []))} replicas behind a load balancer - HTTP "
                      f"{state['http']}, gRPC {state['grpc']}; supervisor pid {proc.pid} (log {out}); balancer log "
                      f"{state['log']}, replicas' logs beside it (`dnc status`)", flush=True)
                return 0
            print(f"serving {a.repo} - HTTP {state['http']}, gRPC {state['grpc']}, metrics {state['metrics']}; "
                  f"supervisor pid {proc.pid} (log {out}); server log {state['log']}", flush=True)
            return 0
        if proc.poll() is not None:
            tail = "\n".join(out.read_text(errors="replace").splitlines()[-15:])
            raise ServerError(f"`dnc serve` exited with status {proc.returncode} before the server was ready:\n{tail}")
        time.sleep(0.2)
    proc.terminate()
    raise ServerError(f"the server was not ready within {a.timeout + 30:.0f} s (log {out})")


def cmd_stop(a: argparse.Namespace) -> int:
    pid = stop_detached(a.repo)
    print(f"stopped the server of {a.repo} (pid {pid})" if pid else f"no server running for {a.repo}")
    return 0


def cmd_swap(a: argparse.Namespace) -> int:
    state = read_state(a.repo) or {}
    if a.url == "":
        raise InputError("`url` is empty: give the server's gRPC HOST:PORT, or leave `url` out to use the "
                         "state file of `dnc serve`")
    if a.url and a.replicas:
        raise InputError("give `url` (one server) or `replicas` (every address of a fleet), not both")
    if a.replicas:
        url, logs = resolve_replicas(a.replicas), None
    elif a.url or state.get("kind") != FLEET:
        url, logs = a.url or state.get("grpc") or "localhost:8001", state.get("log") if not a.url else None
    else:  # the fleet `dnc serve --replicas` recorded: each replica, and its log
        url, logs = [r["grpc"] for r in servers_of(state)], [r.get("log") for r in servers_of(state)]
    res = swap(a.repo, a.centroids, url=url, timeout=a.timeout, log_file=logs, name=a.model)
    if a.json:
        print(json.dumps(res))
        return 0
    fleet = (f" on {res['replicas']} replicas (mixed-list window {res['mixed_window_seconds']:.2f} s)"
             if res.get("replicas", 1) > 1 else "")
    print(f"{res['model']}: class list {res['from']} -> {res['to']} ({len(res['classes'])} classes: "
          f"{', '.join(res['classes'])}); answering{fleet} {res['total_seconds']:.2f} s after `dnc swap` started")
    return 0


def resolve_replicas(target: str) -> list[str]:
    """HOST:PORT -> one gRPC address per address HOST resolves to (a headless Service names every ready pod)."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"`replicas` {target!r} is not HOST:PORT (e.g. dnc-triton-replicas:8001)")
    try:
        found = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise InputError(f"`replicas` {target}: {host} does not resolve ({e.strerror})") from None
    addrs = sorted({f"[{ai[4][0]}]:{port}" if ai[0] == socket.AF_INET6 else f"{ai[4][0]}:{port}" for ai in found})
    return addrs


def cmd_status(a: argparse.Namespace) -> int:
    if a.url is not None and not a.url.strip():
        raise InputError("`url` is empty: give the server's gRPC HOST:PORT, or leave `url` out to use the "
                         "state file of `dnc serve`")
    report = status(a.repo, a.url, a.timeout)
    print(json.dumps(report) if a.json else render(report))
    for problem in report["problems"]:
        print(f"dnc status: {problem}", file=sys.stderr)
    return 0 if report["healthy"] else 1


def _interrupt(*_) -> None:
    raise KeyboardInterrupt
