"""``LocalRig``: a virtual clock and a simulated bus with devices, driven by plain calls.

Behaviour checks (``tests/behaviour/``) are written against a rig so the same check runs on
CPython (a ``LocalRig`` in-process) and under the MicroPython unix port (a remote rig whose
calls travel over the simulator socket to a ``LocalRig`` in the server). Every argument and
result is JSON-able for that reason. Device arguments are 7-bit addresses; ``None`` means
the bus itself.
"""

from simulators.clock import VirtualClock
from simulators.faults import Fault
from simulators.i2c import SimI2CBus
from simulators.registry import build_device


class LocalRig:
    """One clock, one bus. ``setup`` replaces the bus and its devices; the clock runs on."""

    def __init__(self, clock=None):
        self.clock = clock if clock is not None else VirtualClock()
        self.bus = SimI2CBus(self.clock)

    def setup(self, devices, bus=None):
        """Make a new bus (``bus``: SimI2CBus keyword arguments) with ``devices`` (specs)."""
        self.bus = SimI2CBus(self.clock, **(bus or {}))
        for spec in devices:
            self.bus.attach(build_device(spec))
        return sorted(self.bus.devices)

    def _target(self, address):
        if address is None:
            return self.bus
        try:
            return self.bus.devices[address]
        except KeyError:
            raise ValueError("no simulated device at 0x%02X" % address) from None

    def fault(self, address, spec):
        """Attach a fault (a ``Fault`` spec dict) to the device at ``address`` or the bus."""
        self._target(address).add_fault(Fault.from_spec(spec))

    def clear_faults(self, address):
        self._target(address).faults = []

    def set_truth(self, address, truth):
        self._target(address).set_truth(dict(truth))

    def power(self, address, action):
        """``action``: "off", "on" or "cycle". ``address`` None: every device on the bus at
        once, as the switched sensor rail that powers them all (``simulators/mpy/machine.py``
        sends this when the firmware switches the rail pin)."""
        if action not in ("off", "on", "cycle"):
            raise ValueError("action must be off, on or cycle, got %r" % (action,))
        devices = list(self.bus.devices.values()) if address is None else [self._target(address)]
        if action in ("off", "cycle"):
            for dev in devices:
                dev.power_off()
        if action in ("on", "cycle"):
            for dev in devices:
                dev.power_on()

    def recover(self):
        self.bus.recover()

    def counters(self, address):
        return dict(self._target(address).counters)

    def attr(self, address, name):
        """A model attribute (for checks that need to see inside, e.g. a stored setting)."""
        value = getattr(self._target(address), name)
        return value if isinstance(value, (int, float, str, bool, type(None), list, dict)) else repr(value)

    def advance_s(self, seconds):
        self.clock.advance_s(seconds)

    def wall(self, jump_s=0.0, trusted=None):
        """Step wall time by ``jump_s`` (a clock-jump fault; ticks do not move) and/or set
        whether it is trusted; returns the wall time in Unix seconds."""
        if jump_s:
            self.clock.jump_wall(jump_s)
        if trusted is not None:
            self.clock.set_wall_trusted(trusted)
        return self.clock.wall_s()

    def now_s(self):
        return self.clock.monotonic_s()
