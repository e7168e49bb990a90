"""`dnc repo build`, `dnc serve`, `dnc stop` and `dnc swap`: thin wrappers over the serving library."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

_D = argparse.ArgumentDefaultsHelpFormatter
KEY_ENV = "DNC_REPOSITORY_KEY"


def add_commands(sub: argparse._SubParsersAction) -> None:
    from serving.repository import RUNTIMES

    repo = sub.add_parser("repo", help="Triton model repositories").add_subparsers(dest="repo_command", required=True,
                                                                                   metavar="ACTION")
    p = repo.add_parser("build", formatter_class=_D, help="generate a Triton model repository from an export")
    p.add_argument("export", help="export folder written by `dnc export`")
    p.add_argument("--repo", default="model_repository", help="repository folder to write")
    p.add_argument("--runtime", choices=RUNTIMES, default="python",
                   help="python: python-backend models running onnxruntime (the local server); onnxruntime, "
                        "tensorrt: native backends of the official Triton container")
    p.add_argument("--centroids", default=None, help="serve this centroid set instead of the export's")
    p.add_argument("--max-batch", type=int, default=64, help="largest batch Triton forms")
    p.add_argument("--top-k", type=int, default=5, help="classes ranked with evidence in every response")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads of the embedding model (0: per core)")
    p.add_argument("--instances", type=int, default=1, help="instances of the embedding model")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="where the embedding model runs; auto: cpu for --runtime python, gpu for the native runtimes")
    p.add_argument("--json", action="store_true", help="print the repository description as JSON")
    p.set_defaults(func=cmd_repo_build, command="repo build")

    p = sub.add_parser("serve", formatter_class=_D, help="start tritonserver on a model repository")
    p.add_argument("--repo", default="model_repository", help="repository built by `dnc repo build`")
    p.add_argument("--http-port", type=int, default=8000, help="0: a free port")
    p.add_argument("--grpc-port", type=int, default=8001, help="0: a free port")
    p.add_argument("--metrics-port", type=int, default=8002, help="0: a free port")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    p.add_argument("--key", default=None, help=f"key of the repository (load/unload) API; default ${KEY_ENV}, "
                   "else a new random key, stored in REPO/.dnc-server.json for `dnc swap`")
    p.add_argument("--detach", action="store_true", help="return once ready, leaving the server running "
                   "(stop it with `dnc stop`)")
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for the models to load")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("stop", formatter_class=_D, help="stop a server started with `dnc serve --detach`")
    p.add_argument("--repo", default="model_repository")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("swap", formatter_class=_D,
                       help="replace the class list of a running server by a centroid set (one reload, no gap)")
    p.add_argument("--repo", default="model_repository", help="the repository the server serves")
    p.add_argument("--centroids", required=True, help="centroid set folder (from `dnc centroids`)")
    p.add_argument("--url", default=None, help="server gRPC address (default: from `dnc serve`'s state file, "
                   "else localhost:8001); the reload goes over gRPC, which keeps HTTP requests flowing")
    p.add_argument("--key", default=None, help=f"repository API key (default: ${KEY_ENV} or the state file)")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_swap)


def cmd_repo_build(a: argparse.Namespace) -> int:
    from serving.repository import build

    info = build(a.export, a.repo, a.runtime, a.centroids, a.max_batch, a.top_k, a.threads, a.instances, a.device)
    if a.json:
        print(json.dumps(info))
    else:
        s = info["set"]
        print(f"model repository {a.repo} ({info['runtime']} runtime): entry model {info['models']['entry']}, "
              f"class list {s['set_id']} with {s['num_classes']} classes ({', '.join(s['class_names'])})")
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from serving.server import STATE_FILE, TritonServer, is_tritonserver, read_state, write_state

    repo = Path(a.repo)
    state = read_state(repo)
    if state is not None and is_tritonserver(state["pid"]):
        raise ValueError(f"a server started by `dnc serve` is already running on {repo} (pid {state['pid']}, "
                         f"HTTP {state['http']}); stop it with `dnc stop --repo {repo}`")
    server = TritonServer(repo, a.http_port, a.grpc_port, a.metrics_port, key=a.key or os.environ.get(KEY_ENV),
                          host=a.host, run_dir=repo.resolve().with_name(f".{repo.resolve().name}.server"))
    # Explicit handlers, set before the (long) start so an interrupt then still stops the server: a
    # process started in the background of a non-interactive shell inherits SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    server.start(a.timeout)
    try:
        write_state(server)
        print(f"serving {repo} - HTTP {server.http_url}, gRPC {server.grpc_url}, metrics {server.metrics_url}; "
              f"repository API key in {repo / STATE_FILE}; log {server.log_file}", flush=True)
    except BaseException:  # a server nobody can find must not be left running
        _stop(server)
        raise
    if a.detach:
        return 0
    try:
        code = server.proc.wait()
        print(f"dnc serve: tritonserver exited with status {code}; log {server.log_file}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping", flush=True)
        return 0
    finally:
        _stop(server)


def cmd_stop(a: argparse.Namespace) -> int:
    from serving.server import stop_detached

    pid = stop_detached(a.repo)
    print(f"stopped tritonserver (pid {pid})" if pid else f"no server recorded for {a.repo}")
    return 0


def cmd_swap(a: argparse.Namespace) -> int:
    from serving.server import read_state
    from serving.swap import swap

    state = read_state(a.repo) or {}
    url = a.url or state.get("grpc") or "localhost:8001"
    key = a.key or os.environ.get(KEY_ENV) or state.get("key")
    res = swap(a.repo, a.centroids, url, key, a.timeout)
    if a.json:
        print(json.dumps(res))
    else:
        print(f"class list {res['from']} -> {res['to']} ({len(res['classes'])} classes: {', '.join(res['classes'])}); "
              f"reload {res['load_seconds']:.2f} s, answering {res['total_seconds']:.2f} s after `dnc swap` started")
    return 0


def _stop(server) -> None:
    from serving.server import STATE_FILE

    server.stop()
    (server.repo / STATE_FILE).unlink(missing_ok=True)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt
