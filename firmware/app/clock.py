"""``MicroClock``: the clock contract (``drivers.clock``) on MicroPython, over ``time``.

Only the firmware's composition root (``main.py``) constructs it and passes it down. An
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
