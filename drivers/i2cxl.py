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

Runs on MicroPython and CPython.
"""

from drivers.binfill import correct_distance_cm, median
from drivers.bus import check_address
from drivers.clock import Deadline
from drivers.errors import DeviceError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


DEFAULT_ADDRESS = const(0x70)  # REFERENCE §4: 224 write / 225 read (8-bit)
CMD_RANGE = const(0x51)  # REFERENCE §4: write 81 to take a range reading
CMD_ADDR_UNLOCK_1 = const(0xAA)  # REFERENCE §4: 170
CMD_ADDR_UNLOCK_2 = const(0xA5)  # REFERENCE §4: 165
INVALID_ADDRESSES_8BIT = (0, 80, 164, 170)  # REFERENCE §4 / PD11848k p. 3
RANGE_READY_MS = const(80)  # REFERENCE §4: data ready ~80 ms after the range command
RING_DOWN_MS = const(100)  # REFERENCE §4: allow ~100 ms between readings
MIN_RANGE_CM = const(20)  # REFERENCE §4: reports 20 (or 25, MB1242) .. 765 cm
MAX_RANGE_CM = const(765)
_TICK_MARGIN_MS = 1  # ticks_ms counts whole ms: a wait set at x.9 ms must not end early


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


def range_cm_from_bytes(buf):
    """Range (cm) from the two bytes read, MSB first."""
    return (buf[0] << 8) | buf[1]


class I2CXL:
    """An I2CXL-MaxSonar at ``address`` (7-bit) on ``bus``, timed on ``clock``."""

    def __init__(self, bus, clock, address=DEFAULT_ADDRESS):
        self.address = check_address(address)
        self._bus = bus
        self._clock = clock
        self._ready = Deadline(clock)  # until the echo of our last ping is in
        self._ring = Deadline(clock)  # until the last ping has died away
        self._pending = False  # a range command was sent and not yet read
        self._buf = bytearray(2)

    def start_range(self):
        """Ping (after the 100 ms ring-down since the last one); return ms until ready (80)."""
        self._ring.wait()
        self._bus.writeto(self.address, bytes((CMD_RANGE,)))
        self._pending = True
        self._ready.set_ms(RANGE_READY_MS + _TICK_MARGIN_MS)
        self._ring.set_ms(RING_DOWN_MS + _TICK_MARGIN_MS)
        return RANGE_READY_MS + _TICK_MARGIN_MS

    def remaining_ms(self):
        """Ms until the range requested last is ready (0 when ready)."""
        return self._ready.remaining_ms()

    def read_range_cm(self):
        """The range (int cm) of the last ``start_range``, after waiting for it.

        Raises ``DeviceError`` if no ``start_range`` preceded it (the sensor would answer with
        its info bytes) or the two bytes are not a range the part can report (20..765 cm).
        """
        if not self._pending:
            raise DeviceError("I2CXL at 0x%02X: no range command since the last read; a read now returns "
                              "the last range or, after power-up, two info bytes; call start_range() first"
                              % self.address)
        self._ready.wait()
        self._bus.readfrom_into(self.address, self._buf)
        self._pending = False
        cm = range_cm_from_bytes(self._buf)
        if cm < MIN_RANGE_CM or cm > MAX_RANGE_CM:
            raise DeviceError("I2CXL at 0x%02X: read 0x%02X%02X (%d cm), not a range 20..765 cm: info bytes "
                              "after a power cycle, or a corrupted transfer; range again"
                              % (self.address, self._buf[0], self._buf[1], cm))
        return cm

    def measure_distance_cm(self, repeats=5, min_cm=MIN_RANGE_CM, max_cm=MAX_RANGE_CM - 1,
                            air_temperature_c=None):
        """Median of ``repeats`` pings 100 ms apart, in cm (float).

        Readings outside ``min_cm``..``max_cm`` are dropped (by default the part's window less
        765 cm, which is what it reports when no echo returns), as are reads the driver
        refuses (``DeviceError``). With ``air_temperature_c`` the median is corrected for the
        speed of sound. Raises ``DeviceError`` if no reading survives; ``ValueError`` for a
        bad argument; bus errors as ``OSError``.
        """
        if not isinstance(repeats, int) or repeats < 1 or repeats > 25:
            raise ValueError("repeats must be an int 1..25, got %r" % (repeats,))
        if min_cm > max_cm:
            raise ValueError("min_cm (%r) must not exceed max_cm (%r)" % (min_cm, max_cm))
        good = []
        for _ in range(repeats):
            self.start_range()
            try:
                cm = self.read_range_cm()
            except DeviceError:
                continue
            if min_cm <= cm <= max_cm:
                good.append(cm)
        if not good:
            raise DeviceError("I2CXL at 0x%02X: none of %d readings was within %r..%r cm (no target, "
                              "or the lid is open)" % (self.address, repeats, min_cm, max_cm))
        d = float(median(good))
        if air_temperature_c is not None:
            d = correct_distance_cm(d, air_temperature_c)
        return d

    def change_address(self, new_address):
        """Move the sensor to 7-bit ``new_address`` (sends 0xAA 0xA5 new_8bit); the driver
        follows it. ``ValueError`` naming ``new_address`` for an address the part refuses."""
        byte = address_8bit(new_address)
        self._ring.wait()
        self._ready.wait()
        self._bus.writeto(self.address, bytes((CMD_ADDR_UNLOCK_1, CMD_ADDR_UNLOCK_2, byte)))
        self.address = new_address
