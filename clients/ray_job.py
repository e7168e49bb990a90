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

A local instance is started quietly: Ray 2.60 warns on every start that it enabled token authentication
(its default for a new local cluster, kept here); that one message is filtered out, nothing else is.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
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
    """One video on a Ray worker: ("ok", summary) or ("failed", why)."""
    try:
        seg = make_segmenter(spec)
    except Exception as e:  # the server unreachable from this worker, a missing export...
        return "failed", f"{type(e).__name__}: {e}"
    try:
        return "ok", segment_video(Path(path), Path(out_dir), seg, batch_size=batch_size, concurrency=concurrency,
                                   truth_dir=Path(truth_dir) if truth_dir else None, position=0, sampling=sampling,
                                   accept_short=accept_short)
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
    started = not ray.is_initialized()
    if started:
        local = address == "local"
        check_cluster(address)
        with _without_token_banner():
            ray.init(address=None if local else address, num_cpus=workers if local else None,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
    t0 = time.perf_counter()
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_segment_one)
        refs = {task.remote(str(v.resolve()), str(out_dir.resolve()), spec, batch_size=batch_size,
                            concurrency=concurrency, truth_dir=str(truth_dir.resolve()) if truth_dir else None,
                            sampling=sampling, accept_short=accept_short): v
                for v in todo}  # paths as workers see them
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
    finally:
        if started:
            ray.shutdown()
    return job_summary(results, failures, skipped=[str(v) for v in done], seconds=time.perf_counter() - t0,
                       redone=redo)


def check_cluster(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Refuse (JobError) a cluster address whose head accepts no connection within `timeout` seconds: HOST:PORT
    (the head's GCS port) or ray://HOST:PORT (Ray Client). "local" and "auto" are left to Ray."""
    if address in ("local", "auto"):
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise JobError(f"Ray `address` {address}: not a Ray cluster address; give HOST:PORT of the cluster's head "
                       "(its GCS port, 6379 unless `ray start --head --port` said otherwise), or \"local\" for a "
                       "local instance")
    tls = os.environ.get("RAY_USE_TLS", "0").lower() not in ("", "0", "false")  # (then only a connection is tried)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            why = None if tls or address.startswith("ray://") else _not_gcs(f"{host}:{port}", timeout)
    except OSError as e:  # refused, unreachable, unknown host, or no answer within the timeout
        why = f"no answer within {timeout:.0f} s" if isinstance(e, TimeoutError) else e.strerror or type(e).__name__
    if why is not None:
        raise JobError(f"no Ray cluster answers at {address}: {why}; start one there with "
                       f"`ray start --head --port {port}` or give its head's address (HOST:PORT), or \"local\" for a "
                       "local instance") from None


def _not_gcs(address: str, timeout: float) -> str | None:
    """Why HOST:PORT is not a Ray head's GCS, or None: a cheap GCS call (GetClusterId) must be answered, if only
    with a refusal of the missing authentication token. Something else accepting connections there (another
    gRPC or HTTP/2 server, a proxy) would keep ray.init waiting just as nothing listening does."""
    import grpc  # (a dependency of Ray)

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(GCS_PROBE, request_serializer=None, response_deserializer=None)
        try:
            call(b"", timeout=timeout)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN,
                            grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL):
                return (f"something accepts connections there but does not answer as a Ray head's GCS "
                        f"({e.code().name}: {(e.details() or '')[:100]})")
    return None


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
