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

Configuration updates read the register and write it only if the word changes; the driver
keeps the word last read or written (``_config``), so ``start_one_shot`` is one write (MOD=11
with the other fields as kept; read first when nothing is kept, and after ``soft_reset``).

Waiting: ``start_one_shot`` and ``set_mode`` record a ``Deadline`` and return the ms until
the result is ready; ``read_temperature_c`` waits out what is left. ``soft_reset`` records the
2 ms reset time; every bus access waits it out first. Timing margins: TI gives the 15.5 ms as
typical only, so waits get 10 % plus 1 ms (``ticks_ms`` counts whole milliseconds).

Errors: bus failures stay ``OSError``; a wrong Device_ID or the 0x8000 "no conversion yet"
result raise ``DeviceError``; bad arguments raise ``ValueError`` naming the argument.

The node's part of the driver (``TMP117Core``, the register map, the conversions it uses) is
``drivers.tmp117_core``, re-exported here; a node imports only that (docs/benchmarks.md, heap).

Runs on MicroPython and CPython.
"""

from drivers.tmp117_core import (  # noqa: F401  (re-exported: the driver's public names)
    ACTIVE_MS_PER_SAMPLE, ADDRESSES, AVERAGING, CFG_AVG_MASK, CFG_AVG_SHIFT, CFG_DATA_READY, CFG_FLAGS,
    CFG_MOD_MASK, CFG_MOD_SHIFT, CFG_WRITABLE, DEFAULT_ADDRESS, DEVICE_ID, LSB_C, MODE_BITS,
    REG_CONFIGURATION, REG_DEVICE_ID, REG_EEPROM1, REG_EEPROM2, REG_EEPROM3, REG_EEPROM_UL,
    REG_TEMP_OFFSET, REG_TEMP_RESULT, REG_THIGH_LIMIT, REG_TLOW_LIMIT, REGISTERS, TEMP_MAX_C, TEMP_MIN_C,
    TEMP_RESULT_RESET, TMP117Core, _TICK_MARGIN_MS, active_conversion_ms, averaging_from_bits,
    bits_from_averaging, check_tmp117_address, int16, raw_from_temperature_c, temperature_c_from_raw,
    wait_ms_for)

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


CONFIG_RESET = const(0x0220)  # REFERENCE §2.2 (factory EEPROM)
THIGH_RESET = const(0x6000)  # 192 °C
TLOW_RESET = const(0x8000)  # −256 °C

# Configuration bits (REFERENCE §2.2; the node's are in drivers.tmp117_core)
CFG_HIGH_ALERT = const(0x8000)
CFG_LOW_ALERT = const(0x4000)
CFG_EEPROM_BUSY = const(0x1000)
CFG_CONV_SHIFT = const(7)
CFG_CONV_MASK = const(0x0380)
CFG_THERM = const(0x0010)  # T/nA: 1 = therm mode, 0 = alert mode
CFG_POL = const(0x0008)  # ALERT pin polarity: 1 = active high
CFG_DR_ALERT = const(0x0004)  # ALERT pin shows Data_Ready instead of the alert flags
CFG_SOFT_RESET = const(0x0002)

EEPROM_UL_EUN = const(0x8000)  # EEPROM_UL bit 15 unlocks (datasheet §7.5.1.2)
EEPROM_UL_BUSY = const(0x4000)  # EEPROM_UL bit 14 mirrors EEPROM_Busy

# MOD field (REFERENCE §2.2; datasheet: 10 is continuous too and reads back 00)
MODES = {0: "continuous", 1: "shutdown", 2: "continuous", 3: "one_shot"}

# Conversion cycle time in continuous mode, datasheet SNOSD82D §7.4.1 table "Conversion Cycle
# Time in CC Mode" (checked with the `search` tool; also reproduced in SparkFun's TMP117
# Example6): rows CONV 0..7 with AVG 00; with averaging the cycle is at least the AVG column's
# CONV=0 entry (8x: 125 ms, 32x: 500 ms, 64x: 1 s).
CYCLE_MS = (15.5, 125, 250, 500, 1000, 4000, 8000, 16000)
_MIN_CYCLE_MS = {1: 15.5, 8: 125, 32: 500, 64: 1000}
SOFT_RESET_MS = const(2)  # datasheet Configuration bit 1: "software reset with a duration of 2 ms"
EEPROM_PROGRAM_MS = const(7)  # datasheet §7.5.1.2 / TI E2E: wait 7 ms, then poll EEPROM_Busy


# -- pure conversions ---------------------------------------------------------------------------
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


# -- the device --------------------------------------------------------------------------------
class TMP117(TMP117Core):
    """A TMP117 at ``address`` on ``bus``, timed on ``clock`` (see module docstring): the
    node's ``TMP117Core`` plus the decoded configuration, the conversion cycle, therm mode,
    offset and limit reads, the alert flags and soft reset."""

    def read_config(self):
        """The Configuration register decoded (``decode_config``); clears the part's flags."""
        return decode_config(self.read_register(REG_CONFIGURATION))

    def set_averaging(self, averaging):
        """Average 1, 8, 32 or 64 samples per result (``ValueError`` otherwise)."""
        bits = bits_from_averaging(averaging)
        self._update_config(CFG_AVG_MASK, bits << CFG_AVG_SHIFT)

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

    def get_mode(self):
        """The conversion mode the part reports ("continuous", "shutdown" or "one_shot")."""
        return self.read_config()["mode"]

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

    def soft_reset(self):
        """Soft reset (reloads EEPROM settings, result back to 0x8000); return ms busy (2)."""
        self.write_register(REG_CONFIGURATION, CFG_SOFT_RESET)
        self._flags = 0
        self._config = None  # the part reloads its EEPROM settings
        self._busy.set_ms(SOFT_RESET_MS + _TICK_MARGIN_MS)
        return SOFT_RESET_MS + _TICK_MARGIN_MS
