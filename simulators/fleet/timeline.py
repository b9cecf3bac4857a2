"""``Timeline``: one virtual clock for a whole fleet — many nodes, each on its own
``VirtualClock``, moving together.

Theory of operation
-------------------
Each node keeps its own ``VirtualClock`` (µs since the scenario's start; every node's
starts at the same wall time) because its bus transactions cost wire time on it, and that
must stay cheap. The ``Timeline`` keeps those clocks together, the conservative way:

* Every clock that can still act is a *participant*. A participant is either **running**
  (its process is doing something now, at its clock's time) or **waiting** for a time
  (asleep: a light sleep, a deep sleep until the next wake, a watchdog halt).
* The global time ``G`` is the least of the running participants' clocks and the waiting
  participants' wake times. Nothing that is still to happen can happen before ``G``.
* A participant that wants to sleep until ``T`` waits until ``G >= T``; then it runs again
  with its clock at ``T``. Waiters are released in order of ``T``; all those with the same
  ``T`` run together (in parallel, on real threads and processes).

So a simulated day passes as fast as the nodes can do their work, a node can never be
overtaken by another by more than the work it does between two sleeps (a few ms of wire
time), and whoever is working holds everyone else back. Real waits (a node's poll for its
gateway's ack, up to ``CIVICEDGE_REAL_WAIT_MS``) hold the clock too: the far end is real.

*Lookahead.* Run strictly, a node's cycle would have the whole fleet to itself: the others
are held at ``G`` while it waits, in real time, for its gateway's ack, and a day of a
hundred nodes would take as long as all their acks one after another. So a waiter is
released once its wake time is within ``window_us`` of ``G``: nodes that wake within the
window run together, each on its own clock, ahead of ``G`` by at most the window. The order
of events inside one window is not kept between nodes (they share nothing but the gateway
and the radio, whose frames carry their own times); a gateway, stamping with ``G``, can
see a frame up to the window before the node's clock says it was sent.

``G`` never passes ``end_us``: a participant asleep past the end stays asleep until the
runner stops it. The runner's own scheduled actions (faults) run as a participant too
(``director``), so they happen at their exact time.

*Barriers.* The lookahead lets the nodes in the window run on in real time, so a fault
that acted as soon as ``G`` reached its time would land wherever those nodes happened to
be. A wait with ``barrier=True`` (the director's, before a fault action) is released only
when no other participant is running, all asleep at or after its time (or *parked*, below),
and nobody is released while it acts: the action happens at one virtual instant, at the
same point of every node's program in every run, and the nodes waking at that instant
run after it. A participant that blocks in real time at a point fixed by the virtual
schedule (a LoRa frame waiting for its turn on the radio, ``inject.RadioOrder``) sets
``parked`` and calls ``poke``, so that a barrier need not wait for it.

A thread that waits on what the participants do, rather than being one (``inject.RadioOrder``
waiting for a frame's turn), reads ``generation`` before it looks and then calls
``wait_changed``: it sleeps until a participant waits, is released or leaves (or
``notify_changed``), instead of polling.

A thread that must not block (``simulators/i2c_hub.py``: one thread serving every node's
sensor socket) waits with ``wait_async``: it parks the participant, and the timeline calls
back when its time comes, instead of waking a thread of its own.

``publish`` is called with every new ``G`` (the gateway, a separate process, reads it from
shared memory); it must be quick and must not call back into the timeline.
"""

import heapq
import itertools
import threading

FOREVER = 1 << 62


class Cancelled(Exception):
    """The participant was removed (its process died or the run is over) while waiting."""


class Participant:
    """One clock on the timeline (see the module docstring); made by ``Timeline.join``."""

    def __init__(self, timeline, name, clock, exact=False):
        self.timeline = timeline
        self.exact = exact          # released only at its time, never within the lookahead
        self.name = name
        self.clock = clock          # anything with ``now_us`` and ``advance_us``
        self.target_us = None       # waiting for this time; None: running
        self.gone = False
        self.barrier = False        # its wait (or its run since) is a barrier (module docstring)
        self.parked = False         # running, but held at a fixed point (module docstring)
        self._event = threading.Event()
        self._resume = None         # a ``wait_async`` waiter's callback, while it waits
        self._run_n = None          # its entry in the timeline's ``_low`` while it runs

    def now_us(self):
        return self.clock.now_us

    def wait_until(self, target_us, barrier=False):
        """Sleep until the global time reaches ``target_us`` (µs); the clock is then at it
        (or later, if it already was). ``barrier`` (an exact participant only): also until
        nobody else runs, and hold everyone until the next wait (module docstring). Raises
        ``Cancelled`` if the participant leaves meanwhile (its process died, or the run is
        over)."""
        self.timeline._wait(self, int(target_us), barrier)

    def wait_async(self, target_us, resume):
        """``wait_until`` for a thread that must not block (``simulators/i2c_hub.py``): True
        if the global time allows ``target_us`` now (the clock is at it: go on); else False,
        and ``resume(cancelled)`` is called once it does, or with ``cancelled`` True if the
        participant leaves first. ``resume`` is called by whichever thread moves the time,
        with the timeline's lock held: it must be quick and must not call the timeline.
        Raises ``Cancelled`` if the participant has left already."""
        return self.timeline._wait(self, int(target_us), False, resume)

    def progress_us(self):
        """The earliest virtual time (µs) at which it can still act: its wake time while it
        waits, else its clock."""
        target = self.target_us
        return self.clock.now_us if target is None else target

    def leave(self):
        self.timeline.leave(self)


class Timeline:
    """The fleet's clock coordinator (module docstring). ``end_us``: G never passes it;
    ``window_us``: the lookahead (µs)."""

    def __init__(self, end_us=FOREVER, publish=None, window_us=0):
        self.end_us = int(end_us)
        self.window_us = int(window_us)
        self._publish = publish
        self._lock = threading.Lock()
        self._running = set()
        self._low = []                 # heap of (clock µs when last read, n, participant): ``_low_us``
        self._waiting = []             # heap of (target_us, n, participant)
        self._n = itertools.count()
        self._g = 0
        self._hold = None              # the barrier participant acting now (module docstring)
        self._changed = threading.Condition(self._lock)
        self.generation = 0            # counts changes (waits, releases, leaves): ``wait_changed``
        self._watchers = 0             # threads in ``wait_changed`` now
        self.releases = 0              # waits that had to block (for the bench's breakdown)
        self.passes = 0                # waits that passed at once

    # -- membership -----------------------------------------------------------------------------
    def join(self, name, clock, exact=False):
        """A new running participant at its clock's time (which must not be before G).
        ``exact``: never released early (the director: a fault happens at its time, and
        nobody waiting behind it is released before it)."""
        p = Participant(self, name, clock, exact)
        with self._lock:
            self._run(p)
        return p

    def leave(self, p):
        """``p`` is gone (process ended or killed): it no longer holds the time back."""
        with self._lock:
            if p.gone:
                return
            p.gone = True
            self._stop(p)
            if self._hold is p:
                self._hold = None
            if p.target_us is not None:
                p.target_us = None
                self._release(p, True)  # its waiter raises Cancelled; the heap entry is skipped later
            self._advance()

    def cancel_all(self):
        """End of run: every participant leaves; waiters raise ``Cancelled``."""
        with self._lock:
            parts = list(self._running) + [p for _, _, p in self._waiting]
        for p in parts:
            self.leave(p)

    def participants(self):
        """Every participant still on the timeline (running or waiting), a snapshot."""
        with self._lock:
            return [p for p in self._running] + [p for _, _, p in self._waiting if p.target_us is not None]

    def poke(self):
        """Look again (a participant's ``parked`` changed)."""
        with self._lock:
            self._advance()

    def wait_changed(self, generation, timeout_s):
        """Block, in real time, until ``generation`` (read before looking) has changed, or at
        most ``timeout_s``: for a thread that waits on what the participants are doing
        (``inject.RadioOrder``) without polling. Returns the generation now."""
        with self._changed:
            if self.generation == generation:
                self._watchers += 1
                try:
                    self._changed.wait(timeout_s)
                finally:
                    self._watchers -= 1
            return self.generation

    def notify_changed(self):
        """Wake ``wait_changed`` callers (something they look at changed outside the timeline)."""
        with self._changed:
            self.generation += 1
            self._changed.notify_all()

    # -- time -----------------------------------------------------------------------------------
    @property
    def now_us(self):
        """G: the global virtual time, µs since the scenario's start."""
        return self._g

    def idle(self):
        """True when nobody runs and nobody can: every participant waits past ``end_us``."""
        with self._lock:
            return not self._running and self._next_target() > self.end_us

    def _wait(self, p, target_us, barrier=False, resume=None):
        """Wait (blocking; with ``resume``, not: ``Participant.wait_async``)."""
        with self._lock:
            if p.gone:
                raise Cancelled(p.name)
            p.barrier = bool(barrier)
            if self._hold is p:
                self._hold = None
            p.target_us = target_us
            self._stop(p)
            heapq.heappush(self._waiting, (target_us, (not p.exact, next(self._n)), p))  # exact first at a tie
            if resume is None:  # (a ``wait_async`` waiter is called back: its event is never set)
                p._event.clear()
            self._advance()
            blocked = p.target_us is not None
            if resume is not None:
                if blocked:
                    p._resume = resume
                    self.releases += 1
                else:
                    self.passes += 1
                return not blocked
        if blocked:
            self.releases += 1
            p._event.wait()
        else:
            self.passes += 1
        if p.gone:
            raise Cancelled(p.name)

    def _run(self, p):
        """``p`` runs (lock held): in ``_running``, and in ``_low`` at its clock now."""
        self._running.add(p)
        p._run_n = n = next(self._n)
        heapq.heappush(self._low, (p.clock.now_us, n, p))

    def _stop(self, p):
        """``p`` no longer runs (lock held); its ``_low`` entry is dropped when it comes up."""
        self._running.discard(p)
        p._run_n = None

    def _low_us(self):
        """The least clock of the running participants, µs (FOREVER if none runs; lock held).

        ``min`` over them all at every wait and release was ~5 % of the board hub's thread in
        a fleet. Clocks only go forward, so each running participant's entry in ``_low``, its
        clock when last read, is at most its clock now: an entry at the top whose clock has not
        moved since is the least of them all. Those that have moved are read again and go back
        in; entries of participants no longer running (their ``_run_n`` is another's, or None)
        are dropped."""
        low = self._low
        while low:
            seen, n, p = low[0]
            if p._run_n != n:
                heapq.heappop(low)
                continue
            now = p.clock.now_us
            if now == seen:
                return now
            heapq.heapreplace(low, (now, n, p))
        return FOREVER

    def _next_target(self):
        while self._waiting and self._waiting[0][2].target_us is None:
            heapq.heappop(self._waiting)  # left, or released already
        return self._waiting[0][0] if self._waiting else FOREVER

    def _advance(self):
        """Recompute G and release every waiter whose time has come (lock held)."""
        low = self._low_us()
        nxt = self._next_target()
        g = min(low, nxt, self.end_us)
        if low == FOREVER and nxt <= self.end_us:
            g = nxt  # nobody runs: jump to the next wake
        self.generation += 1
        if self._watchers:
            self._changed.notify_all()
        if g > self._g:
            self._g = g
            if self._publish is not None:
                self._publish(g)
        while self._hold is None and self._next_target() <= min(self._g + self.window_us, self.end_us):
            head = self._waiting[0][2]
            if head.exact and (self._waiting[0][0] > self._g
                               or head.barrier and not all(q.parked for q in self._running)):
                break
            target, _, q = heapq.heappop(self._waiting)
            if target > q.clock.now_us:  # its clock is at its wake time before anyone looks
                q.clock.advance_us(target - q.clock.now_us)
            q.target_us = None
            self._run(q)
            self._release(q, False)
            if q.barrier:
                self._hold = q  # nobody else is released until it waits again

    @staticmethod
    def _release(p, cancelled):
        """Wake ``p``'s waiter (lock held): its thread, or its ``wait_async`` callback."""
        resume, p._resume = p._resume, None
        if resume is None:
            p._event.set()
        else:
            resume(cancelled)
