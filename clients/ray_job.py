"""The video job on Ray: each task segments whole videos (clients/video_job.segment_video) against the
server(s) or in-process, with the job's outputs, skipping and failure rules.

`dnc segment VIDEOS --ray` starts a local Ray instance with --ray-workers CPUs (one task per CPU);
`--ray ADDRESS` joins a running cluster, whose workers must have this project installed and see the
input and output folders at the same paths (a shared file system). The driver asks the segmenter once
which model and class list it is, skips videos already done by them (video_outputs.pending_videos: others
are redone), submits one task per video, and gathers each one's summary or failure; Ctrl-C cancels the tasks
(their temporaries are removed by the tasks, or by the next run).

`--ray ADDRESS` is probed before ray.init (check_cluster): given a host and port where nothing listens,
ray.init retries for many minutes with a GCS warning every 30 s; the probe refuses within PROBE_TIMEOUT_S.
Tasks are scheduled SPREAD, so that the videos go over the cluster's nodes rather than fill the driver's
first; each video's entry of the job summary names the Ray node that segmented it ("node").

Token authentication (Ray 2.60): `ray start --head` enables it when RAY_AUTH_MODE=token or when a token
already exists (RAY_AUTH_TOKEN, the file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token, which a local
instance writes on its first start); the other nodes then need RAY_AUTH_MODE=token and the same token.
A driver given an explicit address never turns token mode on by itself (it retries for 20 s with warnings,
then fails with a bare ConnectionError), so the probe also asks whether the head wants a token: if it does,
the token found here is tried on the head first (a missing or refused one is a JobError saying where a token
is looked for), then ray.init runs with RAY_AUTH_MODE=token, as `ray start --head` and ray.init("auto") do.

A local instance is started quietly: Ray 2.60 warns on every start that it enabled token authentication
(its default for a new local cluster, kept here); that one message is filtered out, nothing else is.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tqdm import tqdm

from dnc.clients.video_job import JobError, job_summary, make_segmenter, segment_video
from dnc.clients.video_outputs import pending_videos, wanted
from dnc.core.video import Sampling, VideoError

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 10.0  # to connect to a cluster's head (a refused connection fails at once), and for its answer
GCS_PROBE = "/ray.rpc.NodeInfoGcsService/GetClusterId"  # answered by any Ray head (UNAUTHENTICATED without a token)


def _segment_one(path: str, out_dir: str, spec: dict, batch_size: int | None, concurrency: int,
                 truth_dir: str | None, sampling: Sampling | None = None, accept_short: bool = False
                 ) -> tuple[str, object]:
    """One video on a Ray worker: ("ok", summary with the worker's Ray node id) or ("failed", why)."""
    try:
        seg = make_segmenter(spec)
    except Exception as e:  # the server unreachable from this worker, a missing export...
        return "failed", f"{type(e).__name__}: {e}"
    try:
        summary = segment_video(Path(path), Path(out_dir), seg, batch_size=batch_size, concurrency=concurrency,
                                truth_dir=Path(truth_dir) if truth_dir else None, position=0, sampling=sampling,
                                accept_short=accept_short)  # (its summary file is written: "node" is not in it)
        return "ok", summary | {"node": _node_id()}
    except (JobError, VideoError) as e:
        return "failed", str(e)
    except Exception as e:  # any error fails this video only
        return "failed", f"{type(e).__name__}: {e}"
    finally:
        seg.close()


def run_on_ray(videos: list[Path], out_dir: Path, spec: dict, batch_size: int | None = None, concurrency: int = 2,
               truth_dir: Path | None = None, address: str = "local", workers: int = 2,
               sampling: Sampling | None = None, accept_short: bool = False, overwrite: bool = False) -> dict:
    """The job's summary (as video_job.run_job), the videos segmented by Ray tasks. The segmenter is made
    here first: a wrong address or export is refused before Ray starts."""
    import ray

    if (batch_size is not None and batch_size < 1) or concurrency < 1 or workers < 1:
        raise JobError(f"`batch_size`, `concurrency` and `workers` must be >= 1, got {batch_size}, "
                       f"{concurrency} and {workers}")
    seg = make_segmenter(spec)
    try:
        want = wanted(seg, sampling, accept_short)
    finally:
        seg.close()
    todo, done, redo = pending_videos(videos, out_dir, want, overwrite)
    if not todo:  # all done: no Ray instance to start
        return job_summary({}, {}, skipped=[str(v) for v in done], seconds=0.0, redone=redo)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as session:
        if not ray.is_initialized():
            local = address == "local"
            session.enter_context(_token_mode(check_cluster(address)))  # (kept while the driver is connected)
            with _without_token_banner():
                ray.init(address=None if local else address, num_cpus=workers if local else None,
                         include_dashboard=False, log_to_driver=False, configure_logging=False)
            session.callback(ray.shutdown)
        t0 = time.perf_counter()
        results, failures = _run_tasks(todo, out_dir, spec, batch_size=batch_size, concurrency=concurrency,
                                       truth_dir=str(truth_dir.resolve()) if truth_dir else None,
                                       sampling=sampling, accept_short=accept_short)
    return job_summary(results, failures, skipped=[str(v) for v in done], seconds=time.perf_counter() - t0,
                       redone=redo)


def _run_tasks(todo: list[Path], out_dir: Path, spec: dict, **job) -> tuple[dict, dict]:
    """({video: summary}, {video: why it failed}): one task per video, spread over the nodes, gathered as they
    finish; Ctrl-C cancels those still pending."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=0, scheduling_strategy="SPREAD")(_segment_one)
    out = str(out_dir.resolve())  # (absolute paths: as the workers see them)
    refs = {task.remote(str(v.resolve()), out, spec, **job): v for v in todo}
    results, failures, pending = {}, {}, list(refs)
    with tqdm(total=len(refs), desc="videos on ray", unit="video", disable=None) as bar:
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for r in ready:
                    status, payload = ray.get(r)
                    (results if status == "ok" else failures)[str(refs[r])] = payload
                    bar.update(1)
        except KeyboardInterrupt:
            for r in pending:
                ray.cancel(r, force=True)
            raise
    return results, failures


def check_cluster(address: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Refuse (JobError) a cluster address whose head accepts no connection within `timeout` seconds: HOST:PORT
    (the head's GCS port) or ray://HOST:PORT (Ray Client); "local" and "auto" are left to Ray. True when the
    head wants an authentication token, after the token found here passed (_check_token)."""
    if address in ("local", "auto"):
        return False
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise JobError(f"Ray `address` {address}: not a Ray cluster address; give HOST:PORT of the cluster's head "
                       "(its GCS port, 6379 unless `ray start --head --port` said otherwise), or \"local\" for a "
                       "local instance")
    tls = os.environ.get("RAY_USE_TLS", "0").lower() not in ("", "0", "false")  # (then only a connection is tried)
    answer = None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            answer = None if tls or address.startswith("ray://") else _ask_gcs(f"{host}:{port}", timeout)
        why = None if answer in (None, "OK", "UNAUTHENTICATED") else (
            f"something accepts connections there but does not answer as a Ray head's GCS ({answer[:120]})")
    except OSError as e:  # refused, unreachable, unknown host, or no answer within the timeout
        why = f"no answer within {timeout:.0f} s" if isinstance(e, TimeoutError) else e.strerror or type(e).__name__
    if why is not None:
        raise JobError(f"no Ray cluster answers at {address}: {why}; start one there with "
                       f"`ray start --head --port {port}` or give its head's address (HOST:PORT), or \"local\" for a "
                       "local instance") from None
    if answer == "UNAUTHENTICATED":
        _check_token(address, f"{host}:{port}", timeout)
    return answer == "UNAUTHENTICATED"


def _ask_gcs(address: str, timeout: float, header: dict[str, str] | None = None) -> str:
    """A cheap GCS call (GetClusterId) to HOST:PORT: "OK", "UNAUTHENTICATED" (a Ray head wanting a token other
    than `header`'s), or, from something else accepting connections there (another gRPC or HTTP/2 server, a
    proxy, which would keep ray.init waiting just as nothing listening does), the code and details."""
    import grpc  # (a dependency of Ray)

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(GCS_PROBE, request_serializer=None, response_deserializer=None)
        try:
            call(b"", timeout=timeout, metadata=tuple((header or {}).items()))
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                return "UNAUTHENTICATED"
            return f"{e.code().name}: {(e.details() or '')[:100]}"
    return "OK"


def _check_token(address: str, gcs: str, timeout: float) -> None:
    """JobError unless this machine has a token (found as Ray finds it) that the head at `gcs` accepts."""
    from ray._raylet import AuthenticationTokenLoader
    from ray.exceptions import AuthenticationError

    where = ("give the cluster's token (`ray get-auth-token` on its head prints it) in RAY_AUTH_TOKEN, in a file "
             "named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token")
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        raise JobError(f"the Ray cluster at {address} requires token authentication, and RAY_AUTH_MODE=disabled "
                       f"here: unset it and {where}")
    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()
    try:
        header = loader.get_token_for_http_header() if loader.has_token(ignore_auth_mode=True) else None
    except AuthenticationError as e:  # RAY_AUTH_TOKEN_PATH naming no file, or an empty one
        raise JobError(f"the Ray cluster at {address} requires an authentication token: "
                       f"{str(e).split('. Note:')[0]}; {where}") from None
    if not header:
        raise JobError(f"the Ray cluster at {address} requires an authentication token and none was found here: "
                       f"{where}")
    if _ask_gcs(gcs, timeout, header) == "UNAUTHENTICATED":
        source = ("RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else
                  f"RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']}"
                  if os.environ.get("RAY_AUTH_TOKEN_PATH") else "~/.ray/auth_token")
        raise JobError(f"the Ray cluster at {address} refused the authentication token of {source}: {where}")


@contextmanager
def _token_mode(wanted: bool):
    """RAY_AUTH_MODE=token for this process while ray.init connects (when `wanted` and not set already), as
    Ray itself turns it on (the environment variable, then its cached configuration reloaded); put back after."""
    before = os.environ.get("RAY_AUTH_MODE")
    if not wanted or before == "token":
        yield
        return
    from ray._raylet import Config

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = before
        Config.initialize("")


def _node_id() -> str | None:
    """The Ray node this task runs on (None outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


BANNER = "Token authentication is enabled for this Ray cluster"  # Ray 2.60's warning on each local start


@contextmanager
def _without_token_banner():
    """Drop Ray's token-authentication notice (a warning of its authentication module on every local start,
    printed even without logging set up) while ray.init runs; every other message of that module and of Ray
    goes through. Setting RAY_AUTH_MODE=token would also silence it, but only before Ray is imported."""
    source = logging.getLogger("ray._private.authentication.authentication_token_setup")

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(BANNER)

    source.addFilter(keep)
    try:
        yield
    finally:
        source.removeFilter(keep)
