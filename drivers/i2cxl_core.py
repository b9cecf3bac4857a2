"""The MaxBotix I2CXL driver's core: what a node ranges with (``I2CXLCore``: ping, read the
range, the median of pings corrected for the air temperature) and the timings it needs.
REFERENCE §4; the theory of operation is in ``drivers.i2cxl``.

``drivers.i2cxl`` is the full driver (``I2CXL``: this plus the address change and its
checks) and re-exports every public name here; a node imports only this module, so the rest
takes no heap on it (docs/benchmarks.md, heap).

Errors: bus failures stay ``OSError`` (a NACK while ranging is ``errno.ENODEV``); a read that
is not a range raises ``DeviceError``; bad arguments raise ``ValueError`` naming the argument.
Runs on MicroPython and CPython.
"""

from drivers.binfill_core import correct_distance_cm, median
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
RANGE_READY_MS = const(80)  # REFERENCE §4: data ready ~80 ms after the range command
RING_DOWN_MS = const(100)  # REFERENCE §4: allow ~100 ms between readings
MIN_RANGE_CM = const(20)  # REFERENCE §4: reports 20 (or 25, MB1242) .. 765 cm
MAX_RANGE_CM = const(765)
_TICK_MARGIN_MS = const(1)  # ticks_ms counts whole ms: a wait set at x.9 ms must not end early
_RANGE_CMD = b"\x51"  # CMD_RANGE as the one byte written (REFERENCE §4)


def range_cm_from_bytes(buf):
    """Range (cm) from the two bytes read, MSB first."""
    return (buf[0] << 8) | buf[1]


class I2CXLCore:
    """An I2CXL-MaxSonar at ``address`` (7-bit) on ``bus``, timed on ``clock``: ranging."""

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
        self._bus.writeto(self.address, _RANGE_CMD)
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
