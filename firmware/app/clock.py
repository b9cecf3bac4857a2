"""``MicroClock``: the clock contract (``drivers.clock``) on MicroPython, over ``time``.

Only the firmware's composition root (``main.py``) constructs it and passes it down. Wall
time is untrusted until something (NTP over WiFi, the gateway's authenticated ack, the
LoRaWAN network's DeviceTimeAns) says otherwise: an ESP32 forgets the time in a cold boot.
"""

import time

from drivers.clock import WallTrust


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

    def wall_s(self):
        """Unix seconds (the ESP32 port's epoch is 1970 since MicroPython 1.22)."""
        return time.time()
