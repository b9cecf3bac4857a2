"""``RemoteRig``: ``simulators.rig.LocalRig``'s methods, called over the simulator socket.

Behaviour checks (``tests/behaviour/``) take a rig; under MicroPython they get this one, so
they run unchanged: ``bus`` is a ``machine.I2C`` and ``clock`` a ``SimClock``, both on the
server's rig. Arguments and results are JSON (addresses are ints; None is the bus itself).
"""

import machine
from simclock import SimClock
from simlink import control


class RemoteRig:
    """The server's rig. ``fresh``: start from a new rig and clock (as a check expects)."""

    def __init__(self, fresh=True):
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
