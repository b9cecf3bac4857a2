"""The fleet's ``Timeline``: conservative release in wake-time order, the lookahead window,
the director's exact release, the end of the run and cancellation (real threads, bounded
waits)."""

import threading

import pytest

from simulators.clock import VirtualClock
from simulators.fleet.timeline import Cancelled, Timeline


def sleeper(p, targets, log, lock, leave=True):
    """Sleep to each target in turn, logging (name, clock time when woken), then leave (a
    process that ended) unless ``leave`` is false (it keeps running at its last time)."""
    def run():
        try:
            for t in targets:
                p.wait_until(t)
                with lock:
                    log.append((p.name, p.clock.now_us))
            if leave:
                p.leave()
        except Cancelled:
            with lock:
                log.append((p.name, "cancelled"))
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_waiters_wake_in_time_order_and_each_clock_is_at_its_wake_time():
    tl = Timeline(end_us=10_000)
    log, lock = [], threading.Lock()
    a, b = tl.join("a", VirtualClock()), tl.join("b", VirtualClock())
    ta = sleeper(a, [300, 900], log, lock)
    tb = sleeper(b, [100, 500, 700], log, lock)
    ta.join(5)
    tb.join(5)
    assert log == [("b", 100), ("a", 300), ("b", 500), ("b", 700), ("a", 900)]
    assert tl.now_us == 10_000  # nobody left to hold it: the run is over


def test_a_participant_still_running_after_its_last_sleep_holds_the_others():
    tl = Timeline(end_us=10_000)
    log, lock = [], threading.Lock()
    a, b = tl.join("a", VirtualClock()), tl.join("b", VirtualClock())
    tb = sleeper(b, [100], log, lock, leave=False)  # awake at 100, working for ever
    ta = sleeper(a, [300], log, lock)
    tb.join(5)
    ta.join(0.3)
    assert log == [("b", 100)] and tl.now_us == 100
    b.leave()
    ta.join(5)
    assert log[-1] == ("a", 300)


def test_a_running_participant_holds_everyone_behind_its_clock():
    tl = Timeline(end_us=10_000)
    busy = tl.join("busy", VirtualClock())  # running at 0, never waits
    log, lock = [], threading.Lock()
    other = tl.join("other", VirtualClock())
    th = sleeper(other, [50], log, lock)
    th.join(0.3)
    assert log == [] and tl.now_us == 0
    busy.clock.advance_us(60)  # wire time: it is now at 60, but says nothing until it waits
    busy.wait_until(80)        # ... now G may pass 50
    th.join(5)
    assert log == [("other", 50)]
    busy.leave()


def test_the_window_releases_a_waiter_that_wakes_close_enough_ahead():
    tl = Timeline(end_us=10_000, window_us=30)
    busy = tl.join("busy", VirtualClock())  # holds G at 0
    log, lock = [], threading.Lock()
    near, far = tl.join("near", VirtualClock()), tl.join("far", VirtualClock())
    t1 = sleeper(near, [20], log, lock)
    t2 = sleeper(far, [40], log, lock)
    t1.join(5)
    t2.join(0.3)
    assert log == [("near", 20)]  # 20 <= G + 30; 40 is not
    busy.leave()
    t2.join(5)
    assert ("far", 40) in log


def test_an_exact_participant_is_released_only_at_its_time_and_holds_later_waiters():
    tl = Timeline(end_us=10_000, window_us=1000)
    busy = tl.join("busy", VirtualClock())
    log, lock = [], threading.Lock()
    director = tl.join("director", VirtualClock(), exact=True)
    node = tl.join("node", VirtualClock())
    td = sleeper(director, [100], log, lock)
    tn = sleeper(node, [200], log, lock)
    td.join(0.3)
    tn.join(0.1)
    assert log == []  # within the window, but the director goes first, at its time
    busy.leave()
    td.join(5)
    tn.join(5)
    # once the director runs, the node (within the window) may run alongside it
    assert sorted(log) == [("director", 100), ("node", 200)]


def test_time_stops_at_the_end_and_cancel_all_wakes_every_waiter():
    tl = Timeline(end_us=1000)
    log, lock = [], threading.Lock()
    p = tl.join("p", VirtualClock())
    th = sleeper(p, [500, 2000], log, lock, leave=False)
    th.join(0.3)
    assert log == [("p", 500)] and tl.now_us == 1000 and tl.idle()
    tl.cancel_all()
    th.join(5)
    assert log[-1] == ("p", "cancelled")
    with pytest.raises(Cancelled):
        p.wait_until(600)


def test_publish_sees_every_new_global_time_in_order():
    seen = []
    tl = Timeline(end_us=10_000, publish=seen.append)
    p = tl.join("p", VirtualClock())
    for t in (10, 20, 20, 35):
        p.wait_until(t)
    assert seen == sorted(set(seen)) and seen[-1] == 35


def test_wait_changed_returns_at_once_on_a_change_it_would_have_missed_and_wakes_on_the_next():
    # inject.RadioOrder waits on the timeline's changes instead of polling: it reads the
    # generation, looks, then waits; a change in between is not missed.
    tl = Timeline(end_us=10_000)
    a = tl.join("a", VirtualClock())
    seen = tl.generation
    tl.notify_changed()                           # a change after the read...
    assert tl.wait_changed(seen, 30.0) != seen    # ...returns at once, not after 30 s
    seen = tl.generation
    woke = []
    th = threading.Thread(target=lambda: woke.append(tl.wait_changed(seen, 30.0)), daemon=True)
    th.start()
    a.leave()                                     # a participant leaving is a change
    th.join(10)
    assert woke and woke[0] != seen


def test_an_async_waiter_goes_on_at_once_or_is_resumed_when_its_time_comes():
    """``wait_async`` (the fleet's BoardHub): True when the time allows at once; else the
    callback, once, when it comes, with the clock at the target; a blocking waiter and an
    async one are released in time order between them."""
    tl = Timeline(end_us=10_000)
    log, lock = [], threading.Lock()
    a, b = tl.join("a", VirtualClock()), tl.join("b", VirtualClock())
    resumed = []
    assert a.wait_async(0, resumed.append) is True and resumed == []  # its time already
    assert a.wait_async(500, lambda cancelled: resumed.append(("a", a.clock.now_us, cancelled))) is False
    tb = sleeper(b, [300, 700], log, lock)
    tb.join(0.5)  # b is held at 700 by a, running at 500 once resumed
    assert resumed == [("a", 500, False)] and log == [("b", 300)]
    a.leave()
    tb.join(5)
    assert log == [("b", 300), ("b", 700)]


def test_an_async_waiter_that_leaves_is_resumed_as_cancelled_and_cannot_wait_again():
    tl = Timeline(end_us=10_000)
    a, b = tl.join("a", VirtualClock()), tl.join("b", VirtualClock())  # b runs at 0: a waits
    resumed = []
    assert a.wait_async(500, resumed.append) is False
    a.leave()
    assert resumed == [True]
    with pytest.raises(Cancelled):
        a.wait_async(600, resumed.append)
    b.leave()
    assert resumed == [True]
