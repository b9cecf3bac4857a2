"""The ``Timeline``'s barriers (timeline.py "Barriers"): a fault action waits for every node
in the lookahead window to be asleep (or parked), and nobody is released while it acts
(real threads, bounded waits)."""

import threading

from simulators.clock import VirtualClock
from simulators.fleet.timeline import Timeline


def test_a_barrier_waits_for_a_node_running_ahead_and_holds_everyone_while_it_acts():
    tl = Timeline(end_us=10_000_000, window_us=30_000)
    director = tl.join("director", VirtualClock(), exact=True)
    node = tl.join("node", VirtualClock())
    other = tl.join("other", VirtualClock())
    released, acted = threading.Event(), threading.Event()
    woke = []

    def other_sleeps():          # asleep until the director's own instant
        other.wait_until(1000)
        woke.append(("other", acted.is_set()))
        other.leave()

    def direct():
        director.wait_until(1000, barrier=True)
        released.set()
        acted.set()              # the action, done: the next wait lifts the hold
        director.wait_until(5000)
        director.leave()

    node.clock.advance_us(1010)  # running past the action's time (a bus transaction's wire time)
    th = threading.Thread(target=direct, daemon=True)
    th.start()
    assert not released.wait(0.3)    # a plain exact wait would have gone at G = 1000
    threading.Thread(target=other_sleeps, daemon=True).start()  # due at the same instant
    assert not released.wait(0.1) and woke == []
    node.wait_until(2000)            # ... asleep now: the director acts, then the others run
    th.join(5)
    assert released.is_set() and woke == [("other", True)]


def test_a_parked_participant_does_not_hold_a_barrier():
    tl = Timeline(end_us=10_000_000, window_us=30_000)
    director = tl.join("director", VirtualClock(), exact=True)
    node = tl.join("node", VirtualClock())
    node.clock.advance_us(1500)
    released = threading.Event()

    def direct():
        director.wait_until(1000, barrier=True)
        released.set()
        director.leave()

    th = threading.Thread(target=direct, daemon=True)
    th.start()
    assert not released.wait(0.3)
    node.parked = True           # held at a fixed point of its program (inject.RadioOrder)
    tl.poke()
    th.join(5)
    assert released.is_set()
    assert node.progress_us() == 1500 and [p.name for p in tl.participants()] == ["node"]
    node.leave()
