"""MaxBotix I2CXL-MaxSonar (MB1202/1212/1222/1232/1242, MB7040) ultrasonic rangefinder on I2C.

Theory of operation
-------------------
REFERENCE §4 and the datasheet (PD11848k p. 3 command table):

- Range: write one byte 0x51; the sensor pings and times the echo. While it ranges its
  status pin is high and "I2C communications are ignored" (p. 2): the address is NACKed.
  Data is ready ~80 ms after the command; allow 100 ms between pings for the echo to die
  away (acoustic ring-down).
- Read: two bytes, MSB first, the range in cm from the *last* range command. After
  power-up, with no range command yet, the two bytes are "part info bytes", not a range.
- Change address: write 0xAA, 0xA5, new 8-bit address in one transaction. The sensor
  ignores 0, 80, 164 and 170 and rounds an odd address down; it keeps the new address
  through power cycles (pin 1 low at power-up restores 224 = 0x70).

The driver keeps the sequence honest: ``start_range`` waits out the 100 ms since the last
ping, sends 0x51, records an 80 ms ``Deadline`` and returns 80; ``read_range_cm`` waits out
what is left, and refuses (``DeviceError``) to read without a ``start_range`` since its last
read — before the first range command a read returns the info bytes. The driver cannot see a
power cycle between ``start_range`` and the read, so it also refuses a value outside the
20..765 cm the part can report (info bytes, a corrupted transfer). ``measure_distance_cm``
takes the median of several pings, dropping refused and out-of-window values.

The sensor has no temperature compensation (REFERENCE §4): its cm assume 22.5 °C air; see
``drivers.binfill.correct_distance_cm``.

Errors: bus failures stay ``OSError`` (a NACK while ranging is ``errno.ENODEV``); a read that
is not a range raises ``DeviceError``; bad arguments raise ``ValueError`` naming the argument.

The node's part of the driver (``I2CXLCore``: ranging, the median, the correction) is
``drivers.i2cxl_core``, re-exported here; a node imports only that (docs/benchmarks.md, heap).

Runs on MicroPython and CPython.
"""

from drivers.bus import check_address
from drivers.i2cxl_core import (  # noqa: F401  (re-exported: the driver's public names)
    CMD_RANGE, DEFAULT_ADDRESS, MAX_RANGE_CM, MIN_RANGE_CM, RANGE_READY_MS, RING_DOWN_MS, I2CXLCore,
    range_cm_from_bytes)

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


CMD_ADDR_UNLOCK_1 = const(0xAA)  # REFERENCE §4: 170
CMD_ADDR_UNLOCK_2 = const(0xA5)  # REFERENCE §4: 165
INVALID_ADDRESSES_8BIT = (0, 80, 164, 170)  # REFERENCE §4 / PD11848k p. 3


def address_8bit(new_address):
    """The 8-bit address byte the sensor wants for 7-bit ``new_address``.

    Raises ``ValueError`` naming ``new_address`` unless it is a usable 7-bit address
    (0x08..0x77) whose 8-bit form the sensor accepts (not 0, 80, 164 or 170).
    """
    try:
        check_address(new_address)
    except ValueError:
        raise ValueError("new_address must be a 7-bit I2C address 0x08..0x77, got %r" % (new_address,))
    byte = new_address << 1  # always even: the sensor accepts even 8-bit addresses only
    if byte in INVALID_ADDRESSES_8BIT:
        raise ValueError("new_address 0x%02X (8-bit %d) is one the I2CXL ignores (8-bit 0, 80, 164, 170)"
                         % (new_address, byte))
    return byte


class I2CXL(I2CXLCore):
    """An I2CXL-MaxSonar at ``address`` (7-bit) on ``bus``, timed on ``clock``: ranging
    (``I2CXLCore``) and the address change."""

    def change_address(self, new_address):
        """Move the sensor to 7-bit ``new_address`` (sends 0xAA 0xA5 new_8bit); the driver
        follows it. ``ValueError`` naming ``new_address`` for an address the part refuses."""
        byte = address_8bit(new_address)
        self._ring.wait()
        self._ready.wait()
        self._bus.writeto(self.address, bytes((CMD_ADDR_UNLOCK_1, CMD_ADDR_UNLOCK_2, byte)))
        self.address = new_address
