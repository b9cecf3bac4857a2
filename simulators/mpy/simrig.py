"""``RemoteRig``: ``simulators.rig.LocalRig``'s methods, called over the simulator socket.

Behaviour checks (``tests/behaviour/``) take a rig; under MicroPython they get this one, so
they run unchanged: ``bus`` is a ``machine.I2C`` and ``clock`` a ``SimClock``, both on the
server's rig. Arguments and results are JSON (addresses are ints; None is the bus itself).

``SimClock``: the clock contract on the server's ``VirtualClock`` (ticks and wall time are
its; ``sleep_ms`` advances it), so a MicroPython process runs on the same virtual time as
everything else. Every call is a request: a check sees the server's clock as it is. It lives
here, not in ``simclock`` (the board's clock), so checks need not load that module.
"""

import struct

import simlink
from drivers.clock import ticks_add, ticks_diff
from simlink import OP_SLEEP_US, OP_TICKS_MS, OP_TICKS_US, OP_WALL, control


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



class RemoteRig:
    """The server's rig. ``fresh``: start from a new rig and clock (as a check expects)."""

    def __init__(self, fresh=True):
        import machine  # here: SimClock alone (simclock re-exports it) needs none of it

        if fresh:
            control("reset")
        self.bus = machine.I2C(0)
        self.clock = SimClock()

    def setup(self, devices, bus=None):
        return control("setup", devices, bus)

    def fault(self, address, spec):
        control("fault", address, spec)

    def clear_faults(self, address):
        control("clear_faults", address)

    def set_truth(self, address, truth):
        control("set_truth", address, truth)

    def power(self, address, action):
        control("power", address, action)

    def recover(self):
        control("recover")

    def counters(self, address):
        return control("counters", address)

    def attr(self, address, name):
        return control("attr", address, name)

    def advance_s(self, seconds):
        control("advance_s", seconds)

    def now_s(self):
        return control("now_s")

    def wall(self, jump_s=0.0, trusted=None):
        return control("wall", jump_s, trusted)
