"""The ``machine`` module for the MicroPython unix port under simulation.

Put ``simulators/mpy`` first on ``MICROPYPATH`` and ``import machine`` gets this module
instead of the port's built-in one (which has no I2C). The unmodified drivers and firmware
then talk to the simulated devices of ``simulators.i2c_server`` over ``simlink``, with the
errors the ESP32 port gives: a NACK is ``OSError(errno.ENODEV)``, a stuck bus
``OSError(errno.ETIMEDOUT)``.

Bus parameters (``freq``, ``timeout``) are kept but the simulated bus's own come from the
rig (``setup(devices, bus={...})``), as the wiring on a real board decides them.

Each peripheral is a small class over ``simlink``; later additions (``deepsleep``,
``reset_cause``, ``RTC``, ``WDT``, ``UART``) go alongside without changing these.
"""

import simlink
from simlink import OP_READ, OP_SCAN, OP_WRITE


class I2C:
    """``machine.I2C`` (the ESP32 signature): one simulated bus, shared by every instance."""

    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        self.id = id
        self.scl = scl
        self.sda = sda
        self.freq = freq
        self.timeout_us = timeout

    def writeto(self, addr, buf, stop=True):
        """Write ``buf`` to ``addr``; returns the number of bytes ACKed. ``OSError`` on failure."""
        r = simlink.call(OP_WRITE, addr, buf)
        return r[0] << 8 | r[1]

    def writevto(self, addr, vector, stop=True):
        """Write the buffers of ``vector`` as one transaction; returns the bytes ACKed."""
        return self.writeto(addr, b"".join(vector), stop)

    def readfrom_into(self, addr, buf, stop=True):
        """Read ``len(buf)`` bytes from ``addr`` into ``buf``. ``OSError`` on failure."""
        n = len(buf)
        simlink.call(OP_READ, addr, bytes((n >> 8, n & 0xFF)), buf)

    def readfrom(self, addr, nbytes, stop=True):
        """Read ``nbytes`` from ``addr``; returns bytes. ``OSError`` on failure."""
        return simlink.call(OP_READ, addr, bytes((nbytes >> 8, nbytes & 0xFF)))

    def scan(self):
        """The 7-bit addresses that ACK, ascending."""
        return list(simlink.call(OP_SCAN))


class SoftI2C(I2C):
    """``machine.SoftI2C``: the same simulated bus."""

    def __init__(self, scl=None, sda=None, *, freq=400000, timeout=50000):
        super().__init__(-1, scl=scl, sda=sda, freq=freq, timeout=timeout)


class Pin:
    """A GPIO that keeps its level in memory (enough for board code to build its pins)."""

    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None):
        self.id = id
        self._mode = None
        self._pull = None
        self._value = 0
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None):
        if mode != -1:
            self._mode = mode
        if pull != -1:
            self._pull = pull
            if self._mode == Pin.IN or self._mode is None:
                self._value = 1 if pull == Pin.PULL_UP else 0
        if value is not None:
            self._value = 1 if value else 0

    def value(self, x=None):
        if x is None:
            return self._value
        self._value = 1 if x else 0

    __call__ = value

    def on(self):
        self._value = 1

    def off(self):
        self._value = 0

    def mode(self, mode=None):
        if mode is None:
            return self._mode
        self._mode = mode

    def pull(self, pull=None):
        if pull is None:
            return self._pull
        self._pull = pull

    def __repr__(self):
        return "Pin(%r)" % (self.id,)


def idle():
    """Wait for an interrupt: under simulation there is none to wait for, so return."""
