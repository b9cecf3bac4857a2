"""The TMP117 driver's core: what a node samples with (``TMP117Core``: identity, mode and
averaging, offset, one-shot and continuous conversions, reading the result), the register map
and the conversions it needs. REFERENCE §2.2; the theory of operation is in ``drivers.tmp117``.

``drivers.tmp117`` is the full driver (``TMP117``: this plus limits, alerts, the conversion
cycle, soft reset, the decoded configuration) and re-exports every name here; a node imports
only this module, so the rest takes no heap on it (docs/benchmarks.md, heap).

Errors: bus failures stay ``OSError``; a wrong Device_ID or the 0x8000 "no conversion yet"
result raise ``DeviceError``; bad arguments raise ``ValueError`` naming the argument.
Runs on MicroPython and CPython.
"""

from drivers.clock import Deadline
from drivers.errors import DeviceError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# -- register map (REFERENCE §2.2; datasheet SNOSD82D §7.6) ------------------------------------
REG_TEMP_RESULT = const(0x00)
REG_CONFIGURATION = const(0x01)
REG_THIGH_LIMIT = const(0x02)
REG_TLOW_LIMIT = const(0x03)
REG_EEPROM_UL = const(0x04)
REG_EEPROM1 = const(0x05)
REG_EEPROM2 = const(0x06)
REG_TEMP_OFFSET = const(0x07)
REG_EEPROM3 = const(0x08)
REG_DEVICE_ID = const(0x0F)
REGISTERS = (REG_TEMP_RESULT, REG_CONFIGURATION, REG_THIGH_LIMIT, REG_TLOW_LIMIT, REG_EEPROM_UL,
             REG_EEPROM1, REG_EEPROM2, REG_TEMP_OFFSET, REG_EEPROM3, REG_DEVICE_ID)

DEVICE_ID = const(0x0117)  # REFERENCE §2.2: Device_ID bits 11:0; bits 15:12 are the revision
TEMP_RESULT_RESET = const(0x8000)  # REFERENCE §2.2: −256 °C until the first conversion
LSB_C = 0.0078125  # REFERENCE §2.2: T = int16 x 0.0078125
TEMP_MIN_C = -256.0
TEMP_MAX_C = 32767 * LSB_C  # 255.9921875

# Configuration bits (REFERENCE §2.2); the others are in drivers.tmp117
CFG_DATA_READY = const(0x2000)
CFG_MOD_SHIFT = const(10)
CFG_MOD_MASK = const(0x0C00)
CFG_AVG_SHIFT = const(5)
CFG_AVG_MASK = const(0x0060)
CFG_WRITABLE = const(0x0FFC)  # bits 11:2; the flags are read-only, bit 1 self-clearing
CFG_FLAGS = const(0xE000)  # HIGH_Alert | LOW_Alert | Data_Ready

# MOD field (REFERENCE §2.2; datasheet: 10 is continuous too and reads back 00)
MODE_BITS = {"continuous": 0, "shutdown": 1, "one_shot": 3}
AVERAGING = (1, 8, 32, 64)  # AVG field 00, 01, 10, 11 (REFERENCE §2.2)
ACTIVE_MS_PER_SAMPLE = 15.5  # datasheet §7.3.2 (typical)

ADDRESSES = (0x48, 0x49, 0x4A, 0x4B)  # REFERENCE §2.1: ADD0 to GND, V+, SDA, SCL
DEFAULT_ADDRESS = const(0x48)

_TICK_MARGIN_MS = 1  # ticks_ms counts whole ms: a wait set at x.9 ms must not end early


# -- pure conversions ---------------------------------------------------------------------------
def int16(word):
    """The signed value of a 16-bit two's-complement ``word`` (0..0xFFFF)."""
    word &= 0xFFFF
    return word - 0x10000 if word & 0x8000 else word


def temperature_c_from_raw(raw):
    """°C from a Temp_Result / limit / offset register word (int16 x 0.0078125)."""
    return int16(raw) * LSB_C


def raw_from_temperature_c(temperature_c, name="temperature_c"):
    """The register word (0..0xFFFF) nearest to ``temperature_c`` °C.

    Raises ``ValueError`` (naming ``name``) unless −256 <= value <= 255.9921875 °C, the range
    the 16-bit register holds.
    """
    try:
        value = float(temperature_c)
    except (TypeError, ValueError):
        raise ValueError("%s must be a number of °C, got %r" % (name, temperature_c))
    if not (TEMP_MIN_C <= value <= TEMP_MAX_C):  # also refuses NaN
        raise ValueError("%s must be within %.0f..%.7f °C (16-bit register), got %r"
                         % (name, TEMP_MIN_C, TEMP_MAX_C, temperature_c))
    counts = int(round(value / LSB_C))
    if counts > 32767:
        counts = 32767
    return counts & 0xFFFF


def averaging_from_bits(bits):
    """Samples averaged for AVG field ``bits`` (0..3)."""
    return AVERAGING[bits & 3]


def bits_from_averaging(averaging):
    """AVG field for ``averaging`` (1, 8, 32 or 64 samples); ``ValueError`` otherwise."""
    for bits, n in enumerate(AVERAGING):
        if n == averaging:
            return bits
    raise ValueError("averaging must be 1, 8, 32 or 64 samples, got %r" % (averaging,))


def active_conversion_ms(averaging):
    """Typical time (ms) of one conversion with ``averaging`` samples (15.5 ms each)."""
    bits_from_averaging(averaging)
    return ACTIVE_MS_PER_SAMPLE * averaging


def wait_ms_for(averaging):
    """Whole ms a host should wait for a conversion: typical time + 10 % + 1 tick."""
    t = active_conversion_ms(averaging) * 1.1
    whole = int(t)
    if whole < t:
        whole += 1
    return whole + _TICK_MARGIN_MS


def check_tmp117_address(address):
    """Raise ``ValueError`` naming ``address`` unless it is 0x48..0x4B."""
    if not isinstance(address, int) or address not in ADDRESSES:
        raise ValueError("address must be 0x48..0x4B (ADD0 pin strapping) for a TMP117, got %r" % (address,))
    return address


# -- the device --------------------------------------------------------------------------------
class TMP117Core:
    """A TMP117 at ``address`` on ``bus``, timed on ``clock``: what a node samples with (see
    ``drivers.tmp117``'s module docstring; ``drivers.tmp117.TMP117`` adds the rest)."""

    def __init__(self, bus, clock, address=DEFAULT_ADDRESS):
        self.address = check_tmp117_address(address)
        self._bus = bus
        self._clock = clock
        self._ready = Deadline(clock)  # until the conversion we asked for has finished
        self._busy = Deadline(clock)  # until the part answers again (soft reset)
        self._flags = 0  # Data_Ready / alert flags seen by any Configuration read, not yet used
        self._config = None  # Configuration's writable bits as last read or written (None: unknown)
        self._buf2 = bytearray(2)

    def read_register(self, reg):
        """The 16-bit word in register ``reg``: the pointer written, a repeated START, a
        2-byte read, in one bus transaction (datasheet SNOSD82D §7.5.3.1.4.1, slave receiver
        mode: the controller ends a write with a START or a STOP). ``OSError`` (bus)."""
        if reg not in REGISTERS:
            raise ValueError("reg must be a TMP117 register %s, got %r" % (REGISTERS, reg))
        self._busy.wait()
        self._bus.readfrom_mem_into(self.address, reg, self._buf2)
        word = (self._buf2[0] << 8) | self._buf2[1]
        if reg == REG_CONFIGURATION:
            self._flags |= word & CFG_FLAGS
        elif reg == REG_TEMP_RESULT:
            self._flags &= ~CFG_DATA_READY
        return word

    def write_register(self, reg, word):
        """Write the 16-bit ``word`` to register ``reg`` (pointer + MSB + LSB)."""
        if reg not in REGISTERS:
            raise ValueError("reg must be a TMP117 register %s, got %r" % (REGISTERS, reg))
        if not isinstance(word, int) or not (0 <= word <= 0xFFFF):
            raise ValueError("word must be 0..0xFFFF, got %r" % (word,))
        self._busy.wait()
        self._bus.writeto(self.address, bytes((reg, word >> 8, word & 0xFF)))

    def _update_config(self, mask, value):
        """Read Configuration, set the ``mask`` bits to ``value``; written only if that
        changes it (a write of the word it holds would be a bus transaction for nothing)."""
        held = self.read_register(REG_CONFIGURATION) & CFG_WRITABLE
        word = (held & ~mask) | (value & mask)
        if word != held:
            self.write_register(REG_CONFIGURATION, word)
        self._config = word
        return word

    def check_device_id(self):
        """Read Device_ID; return the word. ``DeviceError`` unless bits 11:0 are 0x117."""
        word = self.read_register(REG_DEVICE_ID)
        if word & 0x0FFF != DEVICE_ID:
            raise DeviceError("TMP117 at 0x%02X: Device_ID reads 0x%04X, expected 0x0117 in bits 11:0; "
                              "check the part and its address strapping" % (self.address, word))
        return word

    def set_mode(self, mode, averaging=None):
        """Enter "continuous", "shutdown" or "one_shot"; return ms until a new result is ready.
        ``averaging`` (1, 8, 32 or 64 samples), if given, is set in the same Configuration
        update (a part already so configured is not written).

        Shutdown aborts any conversion (returns 0). Continuous starts converting (first result
        after one conversion). One-shot is ``start_one_shot``. ``ValueError`` for other modes
        or averaging.
        """
        mask = CFG_MOD_MASK
        value = 0
        if averaging is not None:
            mask |= CFG_AVG_MASK
            value = bits_from_averaging(averaging) << CFG_AVG_SHIFT
        if mode == "one_shot":
            if averaging is not None:
                self._update_config(CFG_AVG_MASK, value)
            return self.start_one_shot()
        if mode not in MODE_BITS:
            raise ValueError("mode must be 'continuous', 'shutdown' or 'one_shot', got %r" % (mode,))
        word = self._update_config(mask, value | MODE_BITS[mode] << CFG_MOD_SHIFT)
        if mode == "shutdown":
            return 0
        ms = wait_ms_for(averaging_from_bits((word & CFG_AVG_MASK) >> CFG_AVG_SHIFT))
        self._ready.set_ms(ms)
        return ms

    def start_one_shot(self):
        """Start one conversion (then the part shuts down); return ms until it is ready.

        One Configuration write: the other fields as this driver last read or wrote them
        (read first if it has not), so the part's settings stay as they are."""
        held = self._config
        if held is None:
            held = self.read_register(REG_CONFIGURATION) & CFG_WRITABLE
        word = (held & ~CFG_MOD_MASK) | (MODE_BITS["one_shot"] << CFG_MOD_SHIFT)
        self.write_register(REG_CONFIGURATION, word)  # always: MOD=11 starts the conversion
        self._config = word
        self._flags &= ~CFG_DATA_READY
        ms = wait_ms_for(averaging_from_bits((word & CFG_AVG_MASK) >> CFG_AVG_SHIFT))
        self._ready.set_ms(ms)
        return ms

    def read_temperature_c(self):
        """The latest result in °C, after waiting out a conversion this driver started.

        Raises ``DeviceError`` if the register still holds its reset value 0x8000 (−256 °C):
        no conversion has completed since power-up or reset.
        """
        self._ready.wait()
        raw = self.read_register(REG_TEMP_RESULT)
        if raw == TEMP_RESULT_RESET:
            raise DeviceError("TMP117 at 0x%02X: result is the reset value 0x8000 (-256 °C): no conversion "
                              "has completed since power-up or reset; wait for data ready" % self.address)
        return temperature_c_from_raw(raw)

    def set_offset_c(self, offset_c):
        """Offset (°C) the part adds to every result (``ValueError`` outside −256..255.99)."""
        self.write_register(REG_TEMP_OFFSET, raw_from_temperature_c(offset_c, "offset_c"))
