"""The video job on Ray: each task segments whole videos (clients/video_job.segment_video) against the
server(s) or in-process, with the job's outputs, skipping and failure rules.

`dnc segment VIDEOS --ray` starts a local Ray instance with --ray-workers CPUs (one task per CPU);
`--ray ADDRESS` joins a running cluster, whose workers must have this project installed and see the
input and output folders at the same paths (a shared file system). The driver skips videos already
done, submits one task per video, and gathers each one's summary or failure; Ctrl-C cancels the tasks
(their partial files are removed by the tasks, or ignored and rewritten by the next run).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm import tqdm

from clients.video_job import JobError, job_summary, make_segmenter, pending_videos, segment_video
from training.video import VideoError

log = logging.getLogger(__name__)


def _segment_one(path: str, out_dir: str, spec: dict, batch_size: int, concurrency: int,
                 truth_dir: str | None) -> tuple[str, object]:
    """One video on a Ray worker: ("ok", summary) or ("failed", why)."""
    try:
        seg = make_segmenter(spec)
    except Exception as e:  # the server unreachable from this worker, a missing export...
        return "failed", f"{type(e).__name__}: {e}"
    try:
        return "ok", segment_video(Path(path), Path(out_dir), seg, batch_size, concurrency,
                                   Path(truth_dir) if truth_dir else None, position=0)
    except (JobError, VideoError) as e:
        return "failed", str(e)
    except Exception as e:  # any error fails this video only
        return "failed", f"{type(e).__name__}: {e}"
    finally:
        seg.close()


def run_on_ray(videos: list[Path], out_dir: Path, spec: dict, batch_size: int = 8, concurrency: int = 2,
               truth_dir: Path | None = None, address: str = "local", workers: int = 2) -> dict:
    """The job's summary (as video_job.run_job), the videos segmented by Ray tasks."""
    import ray

    if batch_size < 1 or concurrency < 1 or workers < 1:
        raise JobError(f"--batch-size, --concurrency and --ray-workers must be >= 1, got {batch_size}, "
                       f"{concurrency} and {workers}")
    todo, done = pending_videos(videos, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = not ray.is_initialized()
    if started:
        local = address == "local"
        ray.init(address=None if local else address, num_cpus=workers if local else None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    t0 = time.perf_counter()
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_segment_one)
        refs = {task.remote(str(v.resolve()), str(out_dir.resolve()), spec, batch_size, concurrency,
                            str(truth_dir.resolve()) if truth_dir else None): v for v in todo}  # as workers see them
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
    return job_summary(results, failures, [str(v) for v in done], time.perf_counter() - t0)
