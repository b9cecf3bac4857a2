"""The ``machine`` module for the MicroPython unix port under simulation.

Put ``simulators/mpy`` first on ``MICROPYPATH`` and ``import machine`` gets this module
instead of the port's built-in one (which has no I2C). The unmodified drivers and firmware
then talk to the simulated devices of ``simulators.i2c_server`` over ``simlink``, with the
errors the ESP32 port gives: a NACK is ``OSError(errno.ENODEV)``, a stuck bus
``OSError(errno.ETIMEDOUT)``.

Bus parameters (``freq``, ``timeout``) are kept but the simulated bus's own come from the
rig (``setup(devices, bus={...})``), as the wiring on a real board decides them.

Bus recovery: a pin named as an I2C bus's ``scl`` that firmware drives as a GPIO and pulses
nine times (the I2C-bus specification's recovery: nine clocks let a slave that holds SDA low
finish its byte) recovers the simulated bus (``SimI2CBus.recover``: recoverable stuck-bus
faults clear), as it would free a real one.

A board started with ``board.py --rail`` has a switched sensor rail: ``simrail`` then wraps
``Pin`` so that the rail's pin powers the simulated parts (nothing here costs the others heap).

The rest of the ESP32 port's ``machine`` that node firmware uses (``docs/simulator-board.md``):
``UART`` over a pty, ``RTC`` (its memory survives every reset but a power cut), ``WDT``,
``reset_cause``/``wake_reason`` and their constants (the ESP32 port's numbers),
``deepsleep`` (raises ``simlink.BoardReset``: ``board.py`` restarts the application),
``lightsleep``, ``reset``, ``soft_reset``, ``freq``, ``unique_id``, ``ADC``. Time is the
simulator's virtual clock (``simclock``). Those live in ``simchip`` and load on first use
(``__getattr__`` below), so code that only needs the bus (the behaviour checks) keeps its heap.
"""

import sys

import simlink
from simlink import OP_READ, OP_READ_MEM, OP_SCAN, OP_WRITE

_SCL_PINS = set()  # pin ids some I2C bus uses as SCL
_pulses = {}  # SCL pin id -> rising edges driven as a GPIO since the last recovery
_RECOVERY_PULSES = 9
_len = bytearray(2)  # READ's u16 length, refilled per read (simlink.call copies it at once)
_mem = bytearray(3)  # READ_MEM's register address and u16 length, likewise
_ack = bytearray(2)  # WRITE's reply (u16 bytes ACKed), read into in place


def _length(n):
    if 0 <= n <= 0xFFFF:
        _len[0] = n >> 8
        _len[1] = n & 0xFF
        return _len
    return bytes((n >> 8, n & 0xFF))  # ValueError, as before


class I2C:
    """``machine.I2C`` (the ESP32 signature): one simulated bus, shared by every instance."""

    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        self.id = id
        self.scl = scl
        self.sda = sda
        self.freq = freq
        self.timeout_us = timeout
        if scl is not None:
            _SCL_PINS.add(getattr(scl, "id", scl))
            _pulses[getattr(scl, "id", scl)] = 0

    def writeto(self, addr, buf, stop=True):
        """Write ``buf`` to ``addr``; returns the number of bytes ACKed. ``OSError`` on failure."""
        simlink.call(OP_WRITE, addr, buf, _ack)
        return _ack[0] << 8 | _ack[1]

    def writevto(self, addr, vector, stop=True):
        """Write the buffers of ``vector`` as one transaction; returns the bytes ACKed."""
        return self.writeto(addr, b"".join(vector), stop)

    def readfrom_into(self, addr, buf, stop=True):
        """Read ``len(buf)`` bytes from ``addr`` into ``buf``. ``OSError`` on failure."""
        simlink.call(OP_READ, addr, _length(len(buf)), buf)

    def readfrom(self, addr, nbytes, stop=True):
        """Read ``nbytes`` from ``addr``; returns bytes. ``OSError`` on failure."""
        return simlink.call(OP_READ, addr, _length(nbytes))

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        """Read ``len(buf)`` bytes of register ``memaddr`` from ``addr`` into ``buf``: the
        register address written, a repeated START, the read (one request). ``OSError``."""
        if addrsize != 8:
            raise ValueError("addrsize must be 8, got %r" % (addrsize,))
        _mem[0] = memaddr  # (the port's: the low 8 bits)
        _mem[1:] = _length(len(buf))
        simlink.call(OP_READ_MEM, addr, _mem, buf)

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
        self._drive(1 if x else 0)

    __call__ = value

    def on(self):
        self._drive(1)

    def off(self):
        self._drive(0)

    def _drive(self, level):
        rising = level and not self._value
        self._value = level
        if rising and self.id in _SCL_PINS and self._mode in (Pin.OUT, Pin.OPEN_DRAIN):
            n = _pulses.get(self.id, 0) + 1
            if n >= _RECOVERY_PULSES:
                simlink.control("recover")
                n = 0
            _pulses[self.id] = n

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


# -- resets, sleep and the chip -------------------------------------------------------------
# The ESP32 port's reset causes (ports/esp32/modmachine.c, enum reset_reason_t) and wake
# reasons (esp_sleep_wakeup_cause_t values, as machine.wake_reason() returns them).
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5  # machine.reset() (esp_restart: SW_RESET) reports this
PIN_WAKE = EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
TOUCHPAD_WAKE = 5
ULP_WAKE = 6

_reset_cause = PWRON_RESET
_wake_reason = 0  # ESP_SLEEP_WAKEUP_UNDEFINED: not woken from sleep


def reset_cause():
    """How the board last reset: ``PWRON_RESET``, ``DEEPSLEEP_RESET``, ``WDT_RESET``, ..."""
    return _reset_cause


def wake_reason():
    """``TIMER_WAKE`` after a timed deep sleep; 0 after any other reset (ESP32 port)."""
    return _wake_reason


def _boot(cause, wake=0):
    """For ``board.py`` at each boot: the new reset cause (None: a soft reboot keeps the old
    one, as the hardware register does) and wake reason; peripherals are closed."""
    global _reset_cause, _wake_reason
    if cause is not None:
        _reset_cause = cause
        _wake_reason = wake
    chip = sys.modules.get("simchip")
    if chip is not None:
        chip._close_uarts()


def idle():
    """Wait for an interrupt: under simulation there is none to wait for, so return."""


_CHIP = ("RTC", "WDT", "UART", "ADC", "deepsleep", "lightsleep", "sleep", "reset", "soft_reset", "freq",
         "unique_id", "disable_irq", "enable_irq")


def __getattr__(name):
    """The rest of the chip (``simchip``), loaded on first use."""
    if name not in _CHIP:
        raise AttributeError(name)
    import simchip

    value = getattr(simchip, name)
    globals()[name] = value
    return value
