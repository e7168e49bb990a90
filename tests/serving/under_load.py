"""Run an action while client threads load the server: the harness of the swap-under-load tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def while_loaded(load: Callable[[str], None], protocols: tuple[str, ...], action: Callable[[], object],
                 stop: threading.Event, settle: float = 0.5):
    """Start one thread per protocol running load(protocol) until `stop` is set; after `settle` seconds run
    action(), wait `settle` again, then stop and join the threads. Returns what action() returned."""
    threads = [threading.Thread(target=load, args=(p,)) for p in protocols]
    for t in threads:
        t.start()
    try:
        time.sleep(settle)
        result = action()
        time.sleep(settle)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    return result
