"""The fleet's ``Timeline`` under any sequence of joins, clock moves, waits and leaves: the
global time G is, after every step, what its definition says (the least of the running
participants' clocks and the waiters' wake times, never past the end; with nobody running,
the next wake), and every waiter whose wake time is within the lookahead of G has been
released, its clock at its wake time. ``wait_async`` keeps it all in one thread."""

from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.clock import VirtualClock
from simulators.fleet.timeline import FOREVER, Timeline

END_US = 50_000
WINDOW_US = 700

# a step: (what, which participant, µs)
steps = st.lists(st.tuples(st.sampled_from(["join", "move", "wait", "leave"]),
                           st.integers(0, 7), st.integers(0, 3_000)), max_size=80)


def expected_g(running, waiting, g_before):
    """G by its definition, from the participants after a step (G never goes back)."""
    low = min((p.clock.now_us for p in running), default=FOREVER)
    nxt = min((p.target_us for p in waiting), default=FOREVER)
    g = min(low, nxt, END_US)
    if low == FOREVER and nxt <= END_US:
        g = nxt  # nobody runs: the next wake
    return max(g, g_before)


@settings(max_examples=500, deadline=None)
@given(steps)
def test_g_is_the_least_running_clock_or_next_wake_after_every_step(ops):
    tl = Timeline(end_us=END_US, window_us=WINDOW_US)
    parts = {}        # slot -> participant still on the timeline
    resumed = []
    g = 0
    for what, slot, us in ops:
        p = parts.get(slot)
        if what == "join" and p is None:
            clock = VirtualClock()
            clock.advance_us(tl.now_us)  # a new participant starts at G
            parts[slot] = tl.join("p%d" % slot, clock)
            tl.poke()
        elif p is None:
            continue
        elif what == "move" and p.target_us is None:  # only a running participant works
            p.clock.advance_us(us)
            tl.poke()
        elif what == "wait" and p.target_us is None:
            target = p.clock.now_us + us
            if not p.wait_async(target, lambda cancelled, p=p: resumed.append((p, cancelled))):
                assert p.target_us == target
        elif what == "leave":
            p.leave()
            del parts[slot]
        running = [q for q in parts.values() if q.target_us is None]
        waiting = [q for q in parts.values() if q.target_us is not None]
        g = expected_g(running, waiting, g)
        assert tl.now_us == g
        for q in waiting:  # nobody left waiting whose time has come
            assert q.target_us > min(g + WINDOW_US, END_US)
        for q, cancelled in resumed:  # called back in this step: released (running), or cancelled as it left
            assert q.gone if cancelled else (q.gone or q.target_us is None)
        resumed.clear()  # (a participant released earlier may be waiting again by now)
        assert len(tl._low) <= len(ops) + 1  # one entry a join or release at most, stale ones dropped


def test_g_follows_the_slowest_running_clock_and_waiters_release_in_order():
    tl = Timeline(end_us=10_000, window_us=0)
    a, b = tl.join("a", VirtualClock()), tl.join("b", VirtualClock())
    order = []
    b.clock.advance_us(400)
    assert b.wait_async(450, lambda c: order.append(("b", b.clock.now_us))) is False
    a.clock.advance_us(300)
    tl.poke()
    assert tl.now_us == 300 and order == []
    a.clock.advance_us(200)  # a at 500: b's 450 comes first
    tl.poke()
    assert order == [("b", 450)] and tl.now_us == 450
    b.clock.advance_us(100)  # b at 550, a at 500
    tl.poke()
    assert tl.now_us == 500
    a.leave()
    assert tl.now_us == 550


def test_a_participant_released_then_waiting_again_is_called_back_once_each_time():
    tl = Timeline(end_us=END_US, window_us=WINDOW_US)
    a, b = tl.join("a", VirtualClock()), tl.join("b", VirtualClock())
    calls = []
    assert a.wait_async(866, lambda c: calls.append(("first", c))) is False  # b holds G at 0
    b.clock.advance_us(176)
    tl.poke()  # G 176: a's 866 is within the window, released
    assert calls == [("first", False)] and a.target_us is None
    assert a.wait_async(a.clock.now_us + 70, lambda c: calls.append(("second", c))) is False
    assert a.target_us == 936 and calls == [("first", False)]
