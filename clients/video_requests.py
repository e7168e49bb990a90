"""A video's frames sent as requests, several in flight, answers handed back in frame order; on a failure,
the requests in flight are abandoned at once.

Requests run on daemon threads of a small pool of their own (`Requests`), not a ThreadPoolExecutor: an
executor's threads are joined when the interpreter exits, so a video that failed with requests still in
flight kept `dnc segment` alive until the server had answered every one of them (16 s with 4K frames).
Here the first failed request, or any error of the job itself, stops the video at once: requests not yet
started are cancelled, the segmenter's connections are closed by its `release()` (a gRPC call in flight is
then cancelled on the server too; an HTTP one is cut off on its socket), and a thread still waiting on a
request holds neither the job nor the process.

How many frames a request carries is the segmenter's `plan(height, width, batch_size)`: as many as fit the
served model's pixel budget (clients/sizing.py), at most --batch-size; a frame above the per-picture limit
fails the video before anything is sent, unless --downscale.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait

import numpy as np

from dnc.core import video


class Requests:
    """Up to `n` calls at once on daemon threads; `close()` cancels those not started and never waits for
    those running. One thread per slot for the whole video, so that a segmenter keeps one connection per
    thread."""

    def __init__(self, n: int):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._futures: list[Future] = []
        for i in range(n):
            threading.Thread(target=self._work, name=f"dnc-request-{i}", daemon=True).start()
        self._n = n

    def submit(self, fn, *args) -> Future:
        f: Future = Future()
        self._futures = [x for x in self._futures if not x.done()] + [f]
        self._queue.put((f, fn, args))
        return f

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            f, fn, args = job
            if not f.set_running_or_notify_cancel():
                continue
            try:
                f.set_result(fn(*args))
            except BaseException as e:  # handed to whoever waits for this answer
                f.set_exception(e)

    def close(self) -> None:
        for f in self._futures:
            f.cancel()  # (a running call is not stopped here: the segmenter's release() closes its connection)
        for _ in range(self._n):
            self._queue.put(None)


def answers(frames, seg, batch_size: int | None, concurrency: int, timing: dict, plan: dict):
    """(frame, segmentation) in frame order: requests of `seg.plan(...)` frames (`plan` gains it, with the
    frame size), up to `concurrency` in flight; `timing` gains the seconds spent decoding and waiting for
    answers. A failed request raises at once, whichever it is; the others are abandoned (module text)."""
    t = time.perf_counter()
    first = next(frames, None)
    timing["decode"] += time.perf_counter() - t
    if first is None:
        return
    shape = first.rgb.shape
    per_request = seg.plan(shape[0], shape[1], batch_size)  # refuses frames beyond the per-picture limit
    plan.update(frames_per_request=per_request, width=shape[1], height=shape[0])
    frames = itertools.chain([first], frames)
    pool = Requests(concurrency)
    try:
        pending: deque = deque()
        while True:
            while len(pending) < concurrency:
                t = time.perf_counter()
                batch = [f for _, f in zip(range(per_request), frames, strict=False)]
                timing["decode"] += time.perf_counter() - t
                if not batch:
                    break
                for f in batch:
                    if f.rgb.shape != shape:
                        raise video.VideoError(f"frame {f.index} is {f.rgb.shape[1]}x{f.rgb.shape[0]}, the frames "
                                               f"before it {shape[1]}x{shape[0]}: a video must keep one size")
                pending.append((batch, pool.submit(seg.segment, np.stack([f.rgb for f in batch]))))
            if not pending:
                return
            t = time.perf_counter()
            _next_or_failure([f for _, f in pending])
            batch, future = pending.popleft()
            results = future.result()
            timing["wait"] += time.perf_counter() - t
            yield from zip(batch, results, strict=True)
    finally:  # on an error or Ctrl-C, requests still in flight are not waited for (their answers are dropped)
        pool.close()


def _next_or_failure(futures: list[Future]) -> None:
    """Return when the first of `futures` is done; raise as soon as any of them has failed."""
    while True:
        for f in futures:
            if f.done() and f.exception() is not None:
                raise f.exception()
        if futures[0].done():
            return
        wait([f for f in futures if not f.done()], return_when=FIRST_COMPLETED)
