"""``MicroClock``: the clock contract (``drivers.clock``) on MicroPython, over ``time``.

Only the firmware's composition root (``app/main.py``) constructs it and passes it down. An
ESP32's RTC restarts at 2000-01-01 when power is lost and keeps running through deep sleep,
so wall time is trusted once the RTC reads a date after ``RTC_SET_AFTER_S`` (2024-01-01):
something set it since the last power loss (NTP, the provisioning tool, the gateway).
``set_wall_trusted`` can also say so explicitly.
"""

import time

from drivers.clock import WallTrust

RTC_SET_AFTER_S = 1704067200  # 2024-01-01T00:00:00Z


class MicroClock(WallTrust):
    def ticks_ms(self):
        return time.ticks_ms()

    # The port's own: its tick period differs between ports (2**30 ESP32, 2**62 unix).
    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, t, delta_ms):
        return time.ticks_add(t, delta_ms)

    def sleep_ms(self, ms):
        if ms > 0:
            time.sleep_ms(int(ms))

    def wall_trusted(self):
        return self._trusted or time.time() >= RTC_SET_AFTER_S

    def wall_s(self):
        """Unix seconds (the ESP32 port's epoch is 1970 since MicroPython 1.22)."""
        return time.time()


NAP_MIN_MS = 10  # a shorter wait is spent awake (entering and leaving light sleep costs ~1 ms)


class NappingClock(MicroClock):
    """A ``MicroClock`` whose waits of ``min_ms`` or more are light sleeps: ``nap(ms)`` is
    ``machine.lightsleep`` (the ESP32 at ~0.8 mA instead of ~40 mA awake, REFERENCE §5; RAM,
    pins and the peripherals' state are kept). The composition root gives it to the sensors of
    a deep-sleeping (battery) node, whose waits are the parts' conversion and settle times
    (TMP117 one-shot, the sonar's pings and ring-down, the rail's settle), with nothing else to
    do meanwhile. Not to the links: the ESP32 loses UART bytes that arrive in light sleep.
    ``napped_ms`` adds the naps up (the sampler reports it as ``nap_ms``)."""

    def __init__(self, nap, min_ms=NAP_MIN_MS, wall_trusted=False):
        MicroClock.__init__(self, wall_trusted)
        self._nap = nap
        self.min_ms = min_ms
        self.napped_ms = 0

    def sleep_ms(self, ms):
        ms = int(ms)
        if ms >= self.min_ms:
            self._nap(ms)
            self.napped_ms += ms
        elif ms > 0:
            time.sleep_ms(ms)


# -- RTC steps (RELIABILITY.md "clock jump": records flagged time_unsynced) -----------------
# Tolerance between the RTC's advance and the time the node knows passed. An ESP32's RTC runs
# through deep sleep on its internal 150 kHz RC oscillator, whose rate can be off by up to ~5 %
# (issue 3's figure; ESP-IDF calibrates it at each sleep entry, temperature moves it after): 10 %
# of the known time is twice that. The 60 s floor covers what the node cannot measure: the RTC
# read in whole seconds, the ROM boot before ticks start, the gap between a cycle's end and the
# sleep call, and short intervals. A smaller step (under the tolerance) goes unnoticed.
STEP_MIN_S = 60
STEP_FRACTION = 0.1


def rtc_step_s(wall_before_s, wall_now_s, known_min_ms, known_max_ms=None):
    """The RTC's step in seconds (int; 0 when within tolerance), from its advance
    ``wall_now_s - wall_before_s`` (Unix seconds) against the time the node knows passed:
    between ``known_min_ms`` and ``known_max_ms`` milliseconds (``known_max_ms`` None: exactly
    ``known_min_ms``). Tolerance: ``max(STEP_MIN_S, STEP_FRACTION * known)`` either side.
    Positive: the RTC ran ahead; negative: it went back. Pure; ``ValueError`` if
    ``known_min_ms`` is negative or above ``known_max_ms``."""
    if known_max_ms is None:
        known_max_ms = known_min_ms
    if known_min_ms < 0 or known_max_ms < known_min_ms:
        raise ValueError("known_min_ms must be in 0..known_max_ms, got %r..%r" % (known_min_ms, known_max_ms))
    advance = wall_now_s - wall_before_s
    lo, hi = known_min_ms / 1000, known_max_ms / 1000
    tol = max(STEP_MIN_S, STEP_FRACTION * hi)
    if advance > hi + tol:
        return int(advance - hi)
    if advance < lo - tol:
        return int(advance - lo)
    return 0


class StepWatch:
    """Notices the RTC stepping between one wake cycle's start and the next (``Node`` uses it).

    ``persist`` is the node's RTC-memory dict (``Node.persist``, carried through deep sleep);
    under key "ck" it keeps ``[wall_s, start_ms, end_ms, interval_ms]``: the RTC (int Unix
    seconds, None if not trusted), the ticks since boot at the last cycle's start and end, and
    the interval the sleep after it was computed from (a downlink may change it for the next
    boot). What the node
    knows passed until this cycle's start:

    * same process (a light-sleeping node's loop), or after a restart (``machine.soft_reset``
      restarts the interpreter, not the chip: the ticks go on; ``ticks_kept``): the ticks
      between the two starts, exactly;
    * after a deep-sleep wake (a chip reset: ticks restart at 0): the composition root
      slept ``interval - (end - loop_start)`` with ``loop_start`` somewhere in
      ``0..start`` ticks (the link opens in between), then the ticks since this boot; so
      ``max(end - start, interval)`` at most and ``max(end - start, interval - start)`` at
      least, plus ``ticks_ms()`` now.

    Nothing to compare after a power-on or a watchdog reset (RTC memory not carried)."""

    def __init__(self, clock, persist, interval_ms, ticks_kept=False):
        self.clock = clock
        self.persist = persist
        self.interval_ms = interval_ms
        ref = persist.get("ck")
        # ticks at the last cycle's start, when they count on the same ticks as now
        self._start = ref[1] if ticks_kept and isinstance(ref, list) and len(ref) == 4 else None

    def start(self):
        """At a cycle's start: ``(wall_s, step_s)`` — the RTC now (int Unix seconds, None if
        not trusted) and its step since the last cycle's start (0: none seen)."""
        now = self.clock.ticks_ms()
        wall = int(self.clock.wall_s()) if self.clock.wall_trusted() else None
        ref = self.persist.get("ck")
        step = 0
        if wall is not None and isinstance(ref, list) and len(ref) == 4 and isinstance(ref[0], int):
            if isinstance(self._start, int):
                step = rtc_step_s(ref[0], wall, self.clock.ticks_diff(now, self._start))
            elif isinstance(ref[1], int) and isinstance(ref[2], int) and isinstance(ref[3], int) \
                    and 0 <= ref[1] <= ref[2] and ref[3] >= 0:
                lo = max(ref[2] - ref[1], ref[3] - ref[1]) + now
                hi = max(ref[2] - ref[1], ref[3]) + now
                step = rtc_step_s(ref[0], wall, lo, hi)
        self._start = now
        self.persist["ck"] = [wall, now, now, self.interval_ms]
        return wall, step

    def end(self):
        """At a cycle's end: note the ticks (what the sleep that follows is computed from)."""
        ck = self.persist.get("ck")
        if isinstance(ck, list) and len(ck) == 4:
            ck[2] = self.clock.ticks_ms()

