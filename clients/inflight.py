"""Calls with up to n in flight, their results handed back in the order the calls were made.

`dnc classify` and `dnc segment` on image files read the next pictures while earlier requests are answered
(`--concurrency`): with one request at a time the server waits while the client reads and the client waits
while the server answers. The calls run on clients/video_requests.Requests' daemon threads, so a failure
stops the job at once (calls not started are cancelled; those running hold nothing). n = 1 calls in line,
on the caller's thread, as a plain loop would.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future

from dnc.clients.video_requests import Requests


class InFlight:
    """Up to n calls at once; each result is handed to `done(result)` on the caller's thread, in call order.
    `pool`: the Requests to run them on (a client's own, kept between calls so that its threads, and the
    connection each makes, are reused; closed by its owner); None: a pool of this InFlight's own."""

    def __init__(self, n: int, done, pool: Requests | None = None):
        self.n, self._done = n, done
        self._own = pool is None and n > 1
        self._pool = (Requests(n) if self._own else pool) if n > 1 else None
        self._waiting: deque[Future] = deque()

    def put(self, fn, *args) -> None:
        """Start fn(*args), then hand over the results of the calls finished meanwhile (the oldest first; once
        more than n are in flight, waits for it). A call's exception is raised here once the results of the
        calls before it are handed over."""
        if self._pool is None:
            self._done(fn(*args))
            return
        self._waiting.append(self._pool.submit(fn, *args))
        while len(self._waiting) > self.n or (self._waiting and self._waiting[0].done()):
            self._done(self._waiting.popleft().result())

    def drain(self) -> None:
        """Hand over the results of every call still in flight, in order."""
        while self._waiting:
            self._done(self._waiting.popleft().result())

    def __enter__(self) -> InFlight:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Cancel this InFlight's calls not started; never wait for those running."""
        for f in self._waiting:
            f.cancel()
        if self._own:
            self._pool.close()
