"""``SystemClock``: the clock contract (``drivers.clock``) on CPython, for the Pi.

Only a composition root constructs it. Ticks come from ``time.monotonic_ns`` (never steps),
wrapped at ``TICKS_PERIOD`` like MicroPython's so code tested on one behaves the same on the
other. Wall time is trusted only when the caller says so (a Pi has no RTC: it is trusted
once NTP has synchronised, which the composition root checks).
"""

import time

from drivers.clock import TICKS_PERIOD, WallTrust, ticks_add, ticks_diff


class SystemClock(WallTrust):
    def ticks_ms(self):
        return (time.monotonic_ns() // 1_000_000) & (TICKS_PERIOD - 1)

    ticks_diff = staticmethod(ticks_diff)
    ticks_add = staticmethod(ticks_add)

    def sleep_ms(self, ms):
        if ms > 0:
            time.sleep(ms / 1000.0)

    def wall_s(self):
        return time.time()
