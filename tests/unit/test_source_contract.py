"""The sources' shared contract: the Arrival record the agent receives, what a source counts
when the sink refuses or breaks its contract, and the small helpers."""

import pytest

from gateway.sources import FRAME, GAP, LORAWAN, Arrival, RetryDelay, Source, wall_or_none
from simulators.clock import VirtualClock


def test_arrival_fields_and_defaults():
    a = Arrival(FRAME, b"\x01", "serial:/dev/ttyUSB0")
    assert Arrival._fields == ("kind", "data", "source", "device_id", "dev_eui", "dedup_id",
                               "received_s", "reply", "settled", "record")
    assert (a.device_id, a.dev_eui, a.dedup_id, a.received_s, a.reply, a.settled,
            a.record) == (None,) * 7
    assert (FRAME, LORAWAN, GAP) == ("frame", "lorawan", "gap")


def test_emit_counts_what_the_sink_did():
    src = Source("test")
    assert src._emit(Arrival(FRAME, b"x", "test")) is False  # not started: nowhere to go
    answers = iter([True, False, None])
    src._sink = lambda a: next(answers)
    assert [src._emit(Arrival(FRAME, b"x", "test")) for _ in range(3)] == [True, False, True]

    def broken(arrival):
        raise RuntimeError("a bug in the agent")

    src._sink = broken
    assert src._emit(Arrival(FRAME, b"x", "test")) is False
    c = src.counters()
    assert (c["arrivals"], c["overflow"], c["sink_errors"]) == (2, 2, 1)


def test_wall_time_only_when_trusted():
    clock = VirtualClock(start_wall_s=1767571200)
    assert wall_or_none(clock) == 1767571200.0
    clock.set_wall_trusted(False)
    assert wall_or_none(clock) is None


def test_retry_delay_doubles_to_its_bound_and_resets():
    d = RetryDelay(0.5, 5.0)
    assert [d.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    d.reset()
    assert d.next() == 0.5
    with pytest.raises(ValueError, match="min_s"):
        RetryDelay(0, 1)
