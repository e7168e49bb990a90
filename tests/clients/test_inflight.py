"""clients/inflight.py: up to n calls in flight, results in call order, a failure raised in its place."""

import threading
import time

import pytest

from dnc.clients.inflight import InFlight


def test_results_come_back_in_call_order_with_at_most_n_in_flight():
    running, peak, lock = [0], [0], threading.Lock()

    def call(i, seconds):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(seconds)
        with lock:
            running[0] -= 1
        return i

    got = []
    with InFlight(3, got.append) as flight:
        for i, s in enumerate([0.05, 0.01, 0.03, 0.0, 0.02, 0.04, 0.0, 0.01]):  # later calls often finish first
            flight.put(call, i, s)
        flight.drain()
    assert got == list(range(8)) and peak[0] == 3


def test_one_in_flight_calls_in_line_on_this_thread():
    got = []
    flight = InFlight(1, got.append)
    flight.put(threading.current_thread)
    flight.drain()
    assert got == [threading.current_thread()]


def test_a_failed_call_is_raised_in_its_place_and_later_ones_are_cancelled():
    started = []

    def call(i):
        started.append(i)
        if i == 1:
            raise RuntimeError("call 1 failed")
        time.sleep(0.2)
        return i

    got = []
    with pytest.raises(RuntimeError, match="call 1 failed"), InFlight(2, got.append) as flight:
        for i in range(6):
            flight.put(call, i)
    assert got == [0]  # call 0's result handed over first; call 1 raised in its place
    time.sleep(0.3)
    assert len(started) <= 4  # calls not started when it failed were cancelled
