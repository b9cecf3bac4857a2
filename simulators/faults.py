"""Fault specifications for the simulated bus and devices.

A ``Fault`` is data: a kind, a window on the virtual clock (monotonic seconds since the
clock's start), a probability per opportunity, and a magnitude whose unit depends on the
kind. Device and bus models consult the faults attached to them; nothing here does I/O.

Bus faults (attach to ``SimI2CBus``):
  ``stuck_bus``   SDA held low: every transaction times out (``errno.ETIMEDOUT``) after the
                  bus timeout. ``recoverable=True`` faults clear on ``SimI2CBus.recover()``
                  (9 SCL clocks + STOP), others only when their window ends.
                  ``released_by_power=True``: a part holds SDA (wedged mid-byte, its state
                  machine deaf to SCL) and lets go when it loses power (a switched sensor
                  rail's power-cycle, a deep sleep that drops the rail): the fault clears
                  when ``holder`` (its address) is powered off in the window, or, with no
                  ``holder``, once every part on the bus is off. Default False: power does
                  not end it (only its window, or the nine clocks if ``recoverable``).

Device faults (attach to a device model):
  ``nack``        the device does not ACK its address (absent, browned out, busy).
  ``crc_flip``    one bit of a read transaction is flipped on the wire.
  ``stretch``     the device stretches SCL for ``magnitude`` ms; longer than the bus
                  timeout gives ``errno.ETIMEDOUT``, shorter only costs time.
  ``stuck_value`` the measured quantity freezes at its value when the fault began.
  ``drift``       the measured quantity drifts by ``magnitude`` units per hour of the fault.
  ``spike``       the measured quantity jumps by ``magnitude`` units on a reading.
  ``power_on_garbage``  the first reading after power-on is garbage (random raw bits with a
                  correct CRC, as a half-initialised sensor gives).
``quantity`` limits a sensor fault to one quantity (e.g. ``"co2_ppm"``); None means all.
"""

BUS_KINDS = ("stuck_bus",)
DEVICE_KINDS = ("nack", "crc_flip", "stretch", "stuck_value", "drift", "spike", "power_on_garbage")
SENSOR_KINDS = ("stuck_value", "drift", "spike")


class Fault:
    """One scheduled fault. Times in virtual monotonic seconds; ``end_s`` None = forever."""

    def __init__(self, kind, start_s=0.0, end_s=None, probability=1.0, magnitude=0.0,
                 quantity=None, recoverable=False, released_by_power=False, holder=None):
        if kind not in BUS_KINDS and kind not in DEVICE_KINDS:
            raise ValueError("kind must be one of %s, got %r" % (BUS_KINDS + DEVICE_KINDS, kind))
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within 0..1, got %r" % (probability,))
        if end_s is not None and end_s < start_s:
            raise ValueError("end_s must be >= start_s, got %r < %r" % (end_s, start_s))
        if (released_by_power or holder is not None) and kind != "stuck_bus":
            raise ValueError("released_by_power and holder are for a stuck_bus fault, not %r" % (kind,))
        if holder is not None and (not released_by_power or not isinstance(holder, int) or not 0 <= holder <= 0x7F):
            raise ValueError("holder must be a 7-bit address (int) with released_by_power=True, got %r" % (holder,))
        self.kind = kind
        self.start_s = float(start_s)
        self.end_s = None if end_s is None else float(end_s)
        self.probability = float(probability)
        self.magnitude = float(magnitude)
        self.quantity = quantity
        self.recoverable = bool(recoverable)
        self.released_by_power = bool(released_by_power)
        self.holder = holder
        self.cleared = False
        self.held = {}  # stuck_value: quantity -> frozen value

    def in_window(self, t_s):
        if self.cleared or t_s < self.start_s:
            return False
        return self.end_s is None or t_s < self.end_s

    def applies_to(self, quantity):
        return self.quantity is None or self.quantity == quantity

    @classmethod
    def from_spec(cls, spec):
        """Build from a plain dict (scenario files, the simulator socket's control channel)."""
        allowed = ("kind", "start_s", "end_s", "probability", "magnitude", "quantity", "recoverable",
                   "released_by_power", "holder")
        unknown = [k for k in spec if k not in allowed]
        if unknown:
            raise ValueError("unknown fault field(s) %s; allowed: %s" % (unknown, allowed))
        return cls(**spec)

    def __repr__(self):
        return "Fault(%r, start_s=%r, end_s=%r, p=%r, magnitude=%r, quantity=%r)" % (
            self.kind, self.start_s, self.end_s, self.probability, self.magnitude, self.quantity)
