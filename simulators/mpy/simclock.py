"""``SimClock``: the clock contract (``drivers/clock.py``) over the simulator socket.

Ticks and wall time are the server's ``VirtualClock``; ``sleep_ms`` advances it, so a
MicroPython process runs on the same virtual time as everything else in the simulation.
"""

import struct

import simlink
from drivers.clock import ticks_add, ticks_diff
from simlink import OP_SLEEP_US, OP_TICKS_MS, OP_TICKS_US, OP_WALL


def _u32(b):
    return b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]


class SimClock:
    ticks_diff = staticmethod(ticks_diff)
    ticks_add = staticmethod(ticks_add)

    def ticks_ms(self):
        """Virtual milliseconds (wrap at 2**30)."""
        return _u32(simlink.call(OP_TICKS_MS))

    def ticks_us(self):
        """Virtual microseconds (wrap at 2**30)."""
        return _u32(simlink.call(OP_TICKS_US))

    def sleep_ms(self, ms):
        """Advance virtual time by ``ms`` milliseconds; ``ValueError`` if negative."""
        self.sleep_us(round(ms * 1000))

    def sleep_us(self, us):
        """Advance virtual time by ``us`` microseconds; ``ValueError`` if negative."""
        us = int(us)
        if us < 0:
            raise ValueError("us must be >= 0 (a virtual clock never goes back), got %r" % (us,))
        simlink.call(OP_SLEEP_US, 0, struct.pack(">Q", us))

    def wall_s(self):
        """Unix seconds (virtual)."""
        return struct.unpack(">d", simlink.call(OP_WALL)[:8])[0]

    def wall_trusted(self):
        return simlink.call(OP_WALL)[8] != 0
