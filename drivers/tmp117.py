"""TI TMP117 high-accuracy digital temperature sensor on I2C.

Theory of operation
-------------------
The TMP117 is a pointer-register device (REFERENCE §2.2): a write of one byte sets the
pointer; a write of the pointer plus two bytes (MSB first) writes a 16-bit register; a read of
two bytes returns the register the pointer last selected. It answers at once (no clock
stretching, no NACK while converting).

Conversions run by themselves in continuous mode (MOD 00, the power-on mode from the factory
EEPROM: 0x0220 = 8x averaging, 1 s cycle) or once on request (MOD 11, one-shot, after which
the part returns to shutdown, MOD 01). A conversion takes 15.5 ms per averaged sample
(datasheet SNOSD82D §7.3.2: "a single active conversion typically takes 15.5 ms ... 124 ms
(15.5 ms x 8)"). The result register reads 0x8000 (−256 °C) until the first conversion after
power-up or reset completes (REFERENCE §2.2; datasheet §7.6 Temp_Result).

Data_Ready (Configuration bit 13) is set when a conversion ends and is cleared by *any* read
of the Configuration or the Temp_Result register (datasheet SNOSD82D Configuration register
table; §7.4.3). In alert mode the HIGH/LOW_Alert flags are also cleared by a Configuration
read. So a read-modify-write of the configuration would silently eat those flags: the driver
keeps every flag it sees in ``self._flags`` until the caller consumes it
(``read_temperature_c`` consumes Data_Ready, ``read_alert_flags`` the alerts).

Waiting: ``start_one_shot`` and ``set_mode`` record a ``Deadline`` and return the ms until
the result is ready; ``read_temperature_c`` waits out what is left. ``soft_reset`` records the
2 ms reset time; every bus access waits it out first. Timing margins: TI gives the 15.5 ms as
typical only, so waits get 10 % plus 1 ms (``ticks_ms`` counts whole milliseconds).

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
CONFIG_RESET = const(0x0220)  # REFERENCE §2.2 (factory EEPROM)
THIGH_RESET = const(0x6000)  # 192 °C
TLOW_RESET = const(0x8000)  # −256 °C
LSB_C = 0.0078125  # REFERENCE §2.2: T = int16 x 0.0078125
TEMP_MIN_C = -256.0
TEMP_MAX_C = 32767 * LSB_C  # 255.9921875

# Configuration bits (REFERENCE §2.2)
CFG_HIGH_ALERT = const(0x8000)
CFG_LOW_ALERT = const(0x4000)
CFG_DATA_READY = const(0x2000)
CFG_EEPROM_BUSY = const(0x1000)
CFG_MOD_SHIFT = const(10)
CFG_MOD_MASK = const(0x0C00)
CFG_CONV_SHIFT = const(7)
CFG_CONV_MASK = const(0x0380)
CFG_AVG_SHIFT = const(5)
CFG_AVG_MASK = const(0x0060)
CFG_THERM = const(0x0010)  # T/nA: 1 = therm mode, 0 = alert mode
CFG_POL = const(0x0008)  # ALERT pin polarity: 1 = active high
CFG_DR_ALERT = const(0x0004)  # ALERT pin shows Data_Ready instead of the alert flags
CFG_SOFT_RESET = const(0x0002)
CFG_WRITABLE = const(0x0FFC)  # bits 11:2; the flags are read-only, bit 1 self-clearing
CFG_FLAGS = const(0xE000)  # HIGH_Alert | LOW_Alert | Data_Ready

EEPROM_UL_EUN = const(0x8000)  # EEPROM_UL bit 15 unlocks (datasheet §7.5.1.2)
EEPROM_UL_BUSY = const(0x4000)  # EEPROM_UL bit 14 mirrors EEPROM_Busy

# MOD field (REFERENCE §2.2; datasheet: 10 is continuous too and reads back 00)
MODES = {0: "continuous", 1: "shutdown", 2: "continuous", 3: "one_shot"}
MODE_BITS = {"continuous": 0, "shutdown": 1, "one_shot": 3}
AVERAGING = (1, 8, 32, 64)  # AVG field 00, 01, 10, 11 (REFERENCE §2.2)

# Conversion cycle time in continuous mode, datasheet SNOSD82D §7.4.1 table "Conversion Cycle
# Time in CC Mode" (checked with the `search` tool; also reproduced in SparkFun's TMP117
# Example6): rows CONV 0..7 with AVG 00; with averaging the cycle is at least the AVG column's
# CONV=0 entry (8x: 125 ms, 32x: 500 ms, 64x: 1 s).
CYCLE_MS = (15.5, 125, 250, 500, 1000, 4000, 8000, 16000)
_MIN_CYCLE_MS = {1: 15.5, 8: 125, 32: 500, 64: 1000}
ACTIVE_MS_PER_SAMPLE = 15.5  # datasheet §7.3.2 (typical)
SOFT_RESET_MS = const(2)  # datasheet Configuration bit 1: "software reset with a duration of 2 ms"
EEPROM_PROGRAM_MS = const(7)  # datasheet §7.5.1.2 / TI E2E: wait 7 ms, then poll EEPROM_Busy

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


def conv_from_cycle_ms(cycle_ms):
    """CONV field whose AVG=00 cycle time is ``cycle_ms`` (15.5, 125, 250, 500, 1000, 4000,
    8000 or 16000 ms); ``ValueError`` naming ``cycle_ms`` otherwise."""
    for conv, ms in enumerate(CYCLE_MS):
        if cycle_ms == ms:
            return conv
    raise ValueError("cycle_ms must be one of %s, got %r" % (", ".join(str(m) for m in CYCLE_MS), cycle_ms))


def conversion_cycle_ms(conv, averaging):
    """Continuous-mode cycle time (ms) for CONV field ``conv`` (0..7) and ``averaging``."""
    if not (0 <= conv <= 7):
        raise ValueError("conv must be 0..7, got %r" % (conv,))
    bits_from_averaging(averaging)
    cycle = CYCLE_MS[conv]
    floor = _MIN_CYCLE_MS[averaging]
    return cycle if cycle >= floor else floor


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


def encode_config(mode="continuous", conv=4, averaging=8, therm_mode=False,
                  alert_active_high=False, data_ready_on_alert_pin=False):
    """The Configuration word for the given settings (read-only flags and Soft_Reset 0).

    ``mode``: "continuous", "shutdown" or "one_shot"; ``conv``: CONV field 0..7;
    ``averaging``: 1, 8, 32 or 64. Raises ``ValueError`` naming a bad argument.
    """
    if mode not in MODE_BITS:
        raise ValueError("mode must be 'continuous', 'shutdown' or 'one_shot', got %r" % (mode,))
    if not isinstance(conv, int) or not (0 <= conv <= 7):
        raise ValueError("conv must be an int 0..7, got %r" % (conv,))
    word = (MODE_BITS[mode] << CFG_MOD_SHIFT) | (conv << CFG_CONV_SHIFT)
    word |= bits_from_averaging(averaging) << CFG_AVG_SHIFT
    if therm_mode:
        word |= CFG_THERM
    if alert_active_high:
        word |= CFG_POL
    if data_ready_on_alert_pin:
        word |= CFG_DR_ALERT
    return word


def decode_config(word):
    """The fields of a Configuration word as a dict (inverse of ``encode_config`` plus flags)."""
    return {
        "high_alert": bool(word & CFG_HIGH_ALERT),
        "low_alert": bool(word & CFG_LOW_ALERT),
        "data_ready": bool(word & CFG_DATA_READY),
        "eeprom_busy": bool(word & CFG_EEPROM_BUSY),
        "mode": MODES[(word & CFG_MOD_MASK) >> CFG_MOD_SHIFT],
        "conv": (word & CFG_CONV_MASK) >> CFG_CONV_SHIFT,
        "averaging": averaging_from_bits((word & CFG_AVG_MASK) >> CFG_AVG_SHIFT),
        "therm_mode": bool(word & CFG_THERM),
        "alert_active_high": bool(word & CFG_POL),
        "data_ready_on_alert_pin": bool(word & CFG_DR_ALERT),
    }


def check_tmp117_address(address):
    """Raise ``ValueError`` naming ``address`` unless it is 0x48..0x4B."""
    if not isinstance(address, int) or address not in ADDRESSES:
        raise ValueError("address must be 0x48..0x4B (ADD0 pin strapping) for a TMP117, got %r" % (address,))
    return address


# -- the device --------------------------------------------------------------------------------
class TMP117:
    """A TMP117 at ``address`` on ``bus``, timed on ``clock`` (see module docstring)."""

    def __init__(self, bus, clock, address=DEFAULT_ADDRESS):
        self.address = check_tmp117_address(address)
        self._bus = bus
        self._clock = clock
        self._ready = Deadline(clock)  # until the conversion we asked for has finished
        self._busy = Deadline(clock)  # until the part answers again (soft reset)
        self._flags = 0  # Data_Ready / alert flags seen by any Configuration read, not yet used
        self._buf2 = bytearray(2)

    # -- register access --------------------------------------------------------------------
    def read_register(self, reg):
        """The 16-bit word in register ``reg`` (pointer write, then a 2-byte read)."""
        if reg not in REGISTERS:
            raise ValueError("reg must be a TMP117 register %s, got %r" % (REGISTERS, reg))
        self._busy.wait()
        self._bus.writeto(self.address, bytes((reg,)))
        self._bus.readfrom_into(self.address, self._buf2)
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
        word = self.read_register(REG_CONFIGURATION)
        word = (word & CFG_WRITABLE & ~mask) | (value & mask)
        self.write_register(REG_CONFIGURATION, word)
        return word

    # -- identity ---------------------------------------------------------------------------
    def check_device_id(self):
        """Read Device_ID; return the word. ``DeviceError`` unless bits 11:0 are 0x117."""
        word = self.read_register(REG_DEVICE_ID)
        if word & 0x0FFF != DEVICE_ID:
            raise DeviceError("TMP117 at 0x%02X: Device_ID reads 0x%04X, expected 0x0117 in bits 11:0; "
                              "check the part and its address strapping" % (self.address, word))
        return word

    # -- configuration ------------------------------------------------------------------------
    def read_config(self):
        """The Configuration register decoded (``decode_config``); clears the part's flags."""
        return decode_config(self.read_register(REG_CONFIGURATION))

    def set_mode(self, mode):
        """Enter "continuous", "shutdown" or "one_shot"; return ms until a new result is ready.

        Shutdown aborts any conversion (returns 0). Continuous starts converting (first result
        after one conversion). One-shot is ``start_one_shot``. ``ValueError`` for other modes.
        """
        if mode == "one_shot":
            return self.start_one_shot()
        if mode not in MODE_BITS:
            raise ValueError("mode must be 'continuous', 'shutdown' or 'one_shot', got %r" % (mode,))
        word = self._update_config(CFG_MOD_MASK, MODE_BITS[mode] << CFG_MOD_SHIFT)
        if mode == "shutdown":
            return 0
        ms = wait_ms_for(averaging_from_bits((word & CFG_AVG_MASK) >> CFG_AVG_SHIFT))
        self._ready.set_ms(ms)
        return ms

    def get_mode(self):
        """The conversion mode the part reports ("continuous", "shutdown" or "one_shot")."""
        return self.read_config()["mode"]

    def set_averaging(self, averaging):
        """Average 1, 8, 32 or 64 samples per result (``ValueError`` otherwise)."""
        bits = bits_from_averaging(averaging)
        self._update_config(CFG_AVG_MASK, bits << CFG_AVG_SHIFT)

    def get_averaging(self):
        return self.read_config()["averaging"]

    def set_conversion_cycle_ms(self, cycle_ms):
        """Set the continuous-mode cycle by its AVG=00 time (``conv_from_cycle_ms``).

        Averaging stretches short cycles (``conversion_cycle_ms``).
        """
        conv = conv_from_cycle_ms(cycle_ms)
        self._update_config(CFG_CONV_MASK, conv << CFG_CONV_SHIFT)

    def get_conversion_cycle_ms(self):
        """The effective continuous-mode cycle time (ms) from CONV and AVG."""
        cfg = self.read_config()
        return conversion_cycle_ms(cfg["conv"], cfg["averaging"])

    def set_therm_mode(self, therm):
        """Therm mode (True: HIGH_Alert with hysteresis to TLow) or alert mode (False)."""
        self._update_config(CFG_THERM, CFG_THERM if therm else 0)

    # -- conversions --------------------------------------------------------------------------
    def start_one_shot(self):
        """Start one conversion (then the part shuts down); return ms until it is ready."""
        word = self._update_config(CFG_MOD_MASK, 3 << CFG_MOD_SHIFT)
        self._flags &= ~CFG_DATA_READY
        ms = wait_ms_for(averaging_from_bits((word & CFG_AVG_MASK) >> CFG_AVG_SHIFT))
        self._ready.set_ms(ms)
        return ms

    def remaining_ms(self):
        """Ms until the conversion last requested is ready (0 when ready)."""
        return self._ready.remaining_ms()

    def is_data_ready(self):
        """True if a conversion finished since the temperature was last read.

        Reads Configuration, which clears the part's Data_Ready (and, in alert mode, its alert
        flags); the driver keeps both for ``read_temperature_c`` / ``read_alert_flags``.
        """
        self.read_register(REG_CONFIGURATION)
        return bool(self._flags & CFG_DATA_READY)

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

    # -- offset and limits --------------------------------------------------------------------
    def set_offset_c(self, offset_c):
        """Offset (°C) the part adds to every result (``ValueError`` outside −256..255.99)."""
        self.write_register(REG_TEMP_OFFSET, raw_from_temperature_c(offset_c, "offset_c"))

    def get_offset_c(self):
        return temperature_c_from_raw(self.read_register(REG_TEMP_OFFSET))

    def set_high_limit_c(self, high_limit_c):
        """THigh limit in °C (``ValueError`` outside −256..255.99)."""
        self.write_register(REG_THIGH_LIMIT, raw_from_temperature_c(high_limit_c, "high_limit_c"))

    def get_high_limit_c(self):
        return temperature_c_from_raw(self.read_register(REG_THIGH_LIMIT))

    def set_low_limit_c(self, low_limit_c):
        """TLow limit in °C (``ValueError`` outside −256..255.99)."""
        self.write_register(REG_TLOW_LIMIT, raw_from_temperature_c(low_limit_c, "low_limit_c"))

    def get_low_limit_c(self):
        return temperature_c_from_raw(self.read_register(REG_TLOW_LIMIT))

    def read_alert_flags(self):
        """``(high_alert, low_alert)`` seen since the last call (reads Configuration).

        Alert mode: a flag means some result since the last Configuration read was above THigh
        (below TLow). Therm mode: HIGH_Alert is the comparator state, LOW_Alert always False.
        """
        self.read_register(REG_CONFIGURATION)
        flags = self._flags
        self._flags &= ~(CFG_HIGH_ALERT | CFG_LOW_ALERT)
        return bool(flags & CFG_HIGH_ALERT), bool(flags & CFG_LOW_ALERT)

    # -- reset --------------------------------------------------------------------------------
    def soft_reset(self):
        """Soft reset (reloads EEPROM settings, result back to 0x8000); return ms busy (2)."""
        self.write_register(REG_CONFIGURATION, CFG_SOFT_RESET)
        self._flags = 0
        self._busy.set_ms(SOFT_RESET_MS + _TICK_MARGIN_MS)
        return SOFT_RESET_MS + _TICK_MARGIN_MS
