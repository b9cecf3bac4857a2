"""``VirtualClock``: the simulator's implementation of the clock contract (``drivers.clock``).

Time is an integer count of microseconds since the clock was made, so runs are exactly
repeatable. ``ticks_ms`` wraps at 2**30 like MicroPython's, and can start anywhere
(``ticks_start_ms``) so code can be tested across a wrap. Wall time is the start time plus
elapsed time plus any injected jump (``jump_wall``), which moves wall time but not ticks, as
an NTP step or a bad RTC does.
"""

import threading

from drivers.clock import TICKS_PERIOD, WallTrust, ticks_add, ticks_diff

# 2026-01-05 00:00:00 UTC, a Monday: simulations start at midnight at the start of a week.
DEFAULT_START_WALL_S = 1767571200


class VirtualClock(WallTrust):
    """A clock that moves only when told to (``sleep_ms``, ``advance_s``)."""

    def __init__(self, start_wall_s=DEFAULT_START_WALL_S, ticks_start_ms=0, wall_trusted=True):
        self._now_us = 0
        self._lock = threading.Lock()  # emulators on their own threads advance it too
        self._start_wall_s = start_wall_s
        self._ticks_start_ms = ticks_start_ms
        self._wall_offset_s = 0.0
        WallTrust.__init__(self, wall_trusted)

    # -- the clock contract -------------------------------------------------------------
    def ticks_ms(self):
        return (self._ticks_start_ms + self._now_us // 1000) & (TICKS_PERIOD - 1)

    def ticks_us(self):
        return (self._ticks_start_ms * 1000 + self._now_us) & (TICKS_PERIOD - 1)

    ticks_diff = staticmethod(ticks_diff)
    ticks_add = staticmethod(ticks_add)

    def sleep_ms(self, ms):
        """Advance virtual time by ``ms`` milliseconds (negative is refused)."""
        self.advance_us(int(round(ms * 1000)))

    def sleep_us(self, us):
        self.advance_us(int(us))

    def wall_s(self):
        """Unix seconds: start + elapsed + injected jumps."""
        return self._start_wall_s + self._now_us / 1e6 + self._wall_offset_s

    # -- simulator controls ---------------------------------------------------------------
    @property
    def now_us(self):
        """Microseconds since the clock was made (monotonic, never wraps)."""
        return self._now_us

    def monotonic_s(self):
        """Seconds since the clock was made (monotonic, never wraps)."""
        return self._now_us / 1e6

    def advance_us(self, us):
        if us < 0:
            raise ValueError("us must be >= 0 (a virtual clock never goes back), got %r" % (us,))
        with self._lock:
            self._now_us += us

    def advance_s(self, s):
        self.advance_us(int(round(s * 1e6)))

    def advance_to_s(self, monotonic_s):
        """Advance to ``monotonic_s`` seconds since the start (no-op if already past)."""
        target = int(round(monotonic_s * 1e6))
        with self._lock:
            if target > self._now_us:
                self._now_us = target

    def jump_wall(self, delta_s):
        """Step wall time by ``delta_s`` seconds (a clock-jump fault); ticks do not move."""
        self._wall_offset_s += delta_s
