"""Sensirion SCD4x (SCD40/SCD41/SCD43) CO2, temperature and humidity sensor on I2C.

Theory of operation
-------------------
Every command is a 16-bit code, optionally followed by argument words with their CRC
(``drivers.sensirion``); the command table is ``drivers.scd4x_commands`` (REFERENCE §1.1).
The sensor does not clock-stretch: it NACKs a read header sent before the command's
execution time and any command sent while one is still executing. So the driver:

- for *read* and *fetch* commands, sleeps the exec time on the injected clock before the
  read header (at most 400 ms, except perform_self_test's 10 s);
- for long *send* commands (stop 500 ms, persist 800 ms, factory reset 1200 ms, reinit 30 ms,
  single shot 5000 ms, rht-only 50 ms) records a ``Deadline`` and returns the ms until the
  sensor is ready; the next command waits out what is left. Short writes (1 ms) use the same
  ``Deadline``. Deadlines get 1 ms extra because ``ticks_ms`` counts whole milliseconds.

The driver tracks the mode it believes the sensor is in (idle, periodic, low-power periodic,
asleep) and refuses, before touching the bus, a command the sensor would NACK in that mode
(``DeviceError`` saying what to do); once ``get_sensor_variant`` has said SCD40 it refuses
the SCD41-only commands the same way.

Errors: bus failures stay ``OSError`` (a NACK is ``errno.ENODEV``); a bad CRC raises
``CRCError``; a failed FRC, self-test or unknown variant raises ``DeviceError``; bad arguments
raise ``ValueError`` naming the argument.

Runs on MicroPython and CPython.
"""

import errno

from drivers.bus import check_address
from drivers.clock import Deadline
from drivers.errors import DeviceError
from drivers.scd4x_commands import (
    ALTITUDE_MAX_M, CMD_WAKE_UP, CODE, COMMANDS, DATA_READY_MASK, EXEC_MS, FRC_FAILED, FRC_ZERO,
    LOW_POWER_INTERVAL_MS, PERIODIC_INTERVAL_MS, PRESSURE_MAX_HPA, PRESSURE_MIN_HPA, READ_WORDS,
    SCD41_ONLY, VARIANTS, WHILE_MEASURING,
)
from drivers.sensirion import WORD_LEN, command_bytes, unpack_words

DEFAULT_ADDRESS = 0x62  # REFERENCE §1 "Bus facts": fixed for all variants

# ticks_ms counts whole ms: a deadline set at x.9 ms must not end early.
_TICK_MARGIN_MS = 1
# REFERENCE §1.1: the Sensirion driver waits 30 ms after wake_up (device: 20 ms).
_WAKE_WAIT_MS = 30
# Errnos a missing ACK gives: ESP32 port ENODEV; Linux i2c-dev EREMOTEIO/ENXIO/EIO.
_NACK_ERRNOS = tuple(
    getattr(errno, n) for n in ("ENODEV", "EREMOTEIO", "ENXIO", "EIO") if hasattr(errno, n)
)
_MEASURING = ("periodic", "low_power")


# -- pure conversions (REFERENCE §1.2) --------------------------------------------------------
def temperature_c_from_word(word):
    """°C from a measurement word: −45 + 175·word/2¹⁶ (datasheet form)."""
    return -45.0 + 175.0 * word / 65536.0


def rh_percent_from_word(word):
    """%RH from a measurement word: 100·word/2¹⁶."""
    return 100.0 * word / 65536.0


def _clamp_word(x):
    return 0 if x < 0 else 0xFFFF if x > 0xFFFF else x


def temperature_word_from_c(temperature_c):
    """The measurement word for ``temperature_c`` (°C), rounded and clamped to 0..0xFFFF."""
    return _clamp_word(int(round((temperature_c + 45.0) * 65536.0 / 175.0)))


def rh_word_from_percent(rh_percent):
    """The measurement word for ``rh_percent`` (%RH), rounded and clamped to 0..0xFFFF."""
    return _clamp_word(int(round(rh_percent * 65536.0 / 100.0)))


def measurement_from_words(words):
    """``(co2_ppm, temperature_c, rh_percent)`` from read_measurement's three words."""
    return words[0], temperature_c_from_word(words[1]), rh_percent_from_word(words[2])


def temperature_offset_word(offset_c):
    """The set_temperature_offset word for ``offset_c`` (°C): offset·65535/175, rounded.

    4 °C → 1498 (0x05DA). Datasheet recommends 0–20 °C; ``ValueError`` (naming ``offset_c``)
    outside what the word can hold (0..175 °C).
    """
    if not isinstance(offset_c, (int, float)) or not 0 <= offset_c <= 175:
        raise ValueError("offset_c must be a number of °C within 0..175 (recommended 0..20), got %r" % (offset_c,))
    return _clamp_word(int(round(offset_c * 65535.0 / 175.0)))


def temperature_offset_c(word):
    """°C from a get_temperature_offset word: word·175/65535."""
    return word * 175.0 / 65535.0


def frc_correction_ppm(word):
    """FRC correction in ppm (word − 0x8000), or None when the word is 0xFFFF (FRC failed)."""
    if word == FRC_FAILED:
        return None
    return word - FRC_ZERO


def frc_word_from_correction(correction_ppm):
    """The FRC result word for ``correction_ppm`` (0x8000 + correction, clamped below 0xFFFF)."""
    w = FRC_ZERO + int(correction_ppm)
    return 0 if w < 0 else 0xFFFE if w > 0xFFFE else w


def data_ready(word):
    """True when get_data_ready_status's word says a sample is waiting (``word & 0x07FF``)."""
    return (word & DATA_READY_MASK) != 0


def variant_name(word):
    """"SCD40", "SCD41" or "SCD43" from bits 15:12 of get_sensor_variant's word; None if unknown."""
    return VARIANTS.get((word >> 12) & 0xF)


def serial_number_from_words(words):
    """The 48-bit serial number from get_serial_number's three words (big-endian)."""
    return (words[0] << 32) | (words[1] << 16) | words[2]


def _number(value, name, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError("%s must be a number within %d..%d, got %r" % (name, lo, hi, value))
    return int(round(value))


def _period_word(period_h, name):
    if isinstance(period_h, bool) or not isinstance(period_h, int) or not 0 <= period_h <= 0xFFFC:
        raise ValueError("%s must be an int number of hours within 0..65532, got %r" % (name, period_h))
    if period_h % 4:
        raise ValueError("%s must be a multiple of 4 hours (datasheet), got %r" % (name, period_h))
    return period_h


def _is_nack(exc):
    return bool(exc.args) and exc.args[0] in _NACK_ERRNOS


class SCD4X:
    """An SCD4x on ``bus`` (the ``drivers.bus`` contract), timed by ``clock``.

    No I/O in the constructor. The sensor needs 1000 ms after power-up before it answers.
    ``variant`` is None until ``get_sensor_variant()`` has been called.
    """

    def __init__(self, bus, clock, address=DEFAULT_ADDRESS):
        self._bus = bus
        self._clock = clock
        self.address = check_address(address)
        self._deadline = Deadline(clock)
        self._mode = "idle"
        self._discard_next_shot = False
        self.variant = None

    # -- plumbing -------------------------------------------------------------------------
    def _check_state(self, name, row):
        if self._mode == "asleep" and name != "wake_up":
            raise DeviceError("SCD4x at 0x%02X is powered down: call wake_up() before %s" % (self.address, name))
        if self._mode in _MEASURING and not row[WHILE_MEASURING]:
            raise DeviceError("SCD4x at 0x%02X refuses %s during periodic measurement: "
                              "stop periodic measurement first" % (self.address, name))
        if row[SCD41_ONLY] and self.variant == "SCD40":
            raise DeviceError("%s needs an SCD41 or SCD43; the sensor at 0x%02X is an SCD40" % (name, self.address))

    def _run(self, name, words=()):
        """Send command ``name``; read and return its words if it has any, else None."""
        row = COMMANDS[name]
        self._check_state(name, row)
        self._deadline.wait()
        self._bus.writeto(self.address, command_bytes(row[CODE], words))
        count = row[READ_WORDS]
        if count:
            self._clock.sleep_ms(row[EXEC_MS])
            buf = bytearray(WORD_LEN * count)
            self._bus.readfrom_into(self.address, buf)
            return unpack_words(buf, count)
        if row[EXEC_MS]:
            self._deadline.set_ms(row[EXEC_MS] + _TICK_MARGIN_MS)
        return None

    def ready_in_ms(self):
        """Milliseconds until the sensor accepts the next command (0 when ready). No I/O."""
        return self._deadline.remaining_ms()

    def is_measuring(self):
        """True while the driver believes periodic (or low-power periodic) measurement runs."""
        return self._mode in _MEASURING

    # -- basic commands -------------------------------------------------------------------
    def start_periodic_measurement(self):
        """Start 5 s periodic measurement; returns ms until the first sample (5000)."""
        self._run("start_periodic_measurement")
        self._mode = "periodic"
        return PERIODIC_INTERVAL_MS

    def start_low_power_periodic_measurement(self):
        """Start ~30 s low-power periodic measurement; returns ms until the first sample."""
        self._run("start_low_power_periodic_measurement")
        self._mode = "low_power"
        return LOW_POWER_INTERVAL_MS

    def stop_periodic_measurement(self):
        """Stop periodic measurement; returns ms until the sensor accepts commands (~500)."""
        self._run("stop_periodic_measurement")
        self._mode = "idle"
        return self._deadline.remaining_ms()

    def read_measurement(self):
        """``(co2_ppm, temperature_c, rh_percent)`` of the waiting sample (read clears it).

        Raises ``OSError`` (ENODEV) when no sample is waiting — check
        ``get_data_ready_status()`` first — and ``CRCError`` on a corrupted reply.
        """
        return measurement_from_words(self._run("read_measurement"))

    def get_data_ready_status(self):
        """True when a new sample waits to be read."""
        return data_ready(self._run("get_data_ready_status")[0])

    # -- on-chip output signal compensation -----------------------------------------------
    def set_temperature_offset(self, offset_c):
        """Set the temperature offset in °C (default 4 °C; ``Toffset_new = T_scd4x − T_ref + Toffset_old``)."""
        self._run("set_temperature_offset", (temperature_offset_word(offset_c),))

    def get_temperature_offset(self):
        """The temperature offset in °C."""
        return temperature_offset_c(self._run("get_temperature_offset")[0])

    def set_sensor_altitude(self, altitude_m):
        """Set the altitude in metres above sea level (0..3000; ``ValueError`` names ``altitude_m``)."""
        self._run("set_sensor_altitude", (_number(altitude_m, "altitude_m", 0, ALTITUDE_MAX_M),))

    def get_sensor_altitude(self):
        """The altitude setting in metres."""
        return self._run("get_sensor_altitude")[0]

    def set_ambient_pressure(self, pressure_hpa):
        """Set the ambient pressure in hPa (700..1200, rounded to 1 hPa); overrides altitude.

        Allowed during periodic measurement. ``ValueError`` names ``pressure_hpa``.
        """
        word = _number(pressure_hpa, "pressure_hpa", PRESSURE_MIN_HPA, PRESSURE_MAX_HPA)
        self._run("set_ambient_pressure", (word,))

    def get_ambient_pressure(self):
        """The ambient pressure setting in hPa (×100 for Pa)."""
        return self._run("get_ambient_pressure")[0]

    # -- field calibration ----------------------------------------------------------------
    def perform_forced_recalibration(self, target_co2_ppm):
        """Recalibrate to a reference of ``target_co2_ppm``; returns the correction in ppm.

        Run the sensor in its usual mode for > 3 min at a steady, known CO2, stop periodic
        measurement (and let its 500 ms pass: this call waits it out), then call this. The
        target must lie in the specified range: 400..5000 ppm (400..2000 on a known SCD40;
        REFERENCE §1.4) — ``ValueError`` names ``target_co2_ppm``. The sensor's 0xFFFF answer
        (not operated long enough) raises ``DeviceError``.
        """
        hi = 2000 if self.variant == "SCD40" else 5000
        target = _number(target_co2_ppm, "target_co2_ppm", 400, hi)
        correction = frc_correction_ppm(self._run("perform_forced_recalibration", (target,))[0])
        if correction is None:
            raise DeviceError("SCD4x at 0x%02X refused forced recalibration (0xFFFF): run periodic "
                              "measurement for more than 3 minutes, stop it, then retry" % self.address)
        return correction

    def set_automatic_self_calibration_enabled(self, enabled):
        """Turn automatic self-calibration on (True, the default) or off."""
        self._run("set_automatic_self_calibration_enabled", (1 if enabled else 0,))

    def get_automatic_self_calibration_enabled(self):
        """True when automatic self-calibration is on."""
        return self._run("get_automatic_self_calibration_enabled")[0] != 0

    def set_automatic_self_calibration_target(self, target_co2_ppm):
        """Set the ASC baseline in ppm (default 400; 0..40000, the output range)."""
        self._run("set_automatic_self_calibration_target", (_number(target_co2_ppm, "target_co2_ppm", 0, 40000),))

    def get_automatic_self_calibration_target(self):
        """The ASC baseline in ppm."""
        return self._run("get_automatic_self_calibration_target")[0]

    def set_automatic_self_calibration_initial_period(self, period_h):
        """Set the ASC initial period in hours (multiple of 4; default 44)."""
        self._run("set_automatic_self_calibration_initial_period", (_period_word(period_h, "period_h"),))

    def get_automatic_self_calibration_initial_period(self):
        """The ASC initial period in hours."""
        return self._run("get_automatic_self_calibration_initial_period")[0]

    def set_automatic_self_calibration_standard_period(self, period_h):
        """Set the ASC standard period in hours (multiple of 4; default 156)."""
        self._run("set_automatic_self_calibration_standard_period", (_period_word(period_h, "period_h"),))

    def get_automatic_self_calibration_standard_period(self):
        """The ASC standard period in hours."""
        return self._run("get_automatic_self_calibration_standard_period")[0]

    # -- advanced -------------------------------------------------------------------------
    def persist_settings(self):
        """Store the settings in EEPROM (≥ 2000 write cycles: only after real changes); returns ms until ready."""
        self._run("persist_settings")
        return self._deadline.remaining_ms()

    def get_serial_number(self):
        """The 48-bit serial number (int)."""
        return serial_number_from_words(self._run("get_serial_number"))

    def perform_self_test(self):
        """Run the 10 s self-test (waits on the clock); ``DeviceError`` unless the sensor reports OK."""
        word = self._run("perform_self_test")[0]
        if word != 0:
            raise DeviceError("SCD4x at 0x%02X failed its self-test (word 0x%04X): power-cycle it, and "
                              "replace it if this persists" % (self.address, word))

    def perform_factory_reset(self):
        """Erase settings and FRC/ASC history; returns ms until ready (~1200)."""
        self._run("perform_factory_reset")
        return self._deadline.remaining_ms()

    def reinit(self):
        """Reload the settings from EEPROM; returns ms until ready (~30)."""
        self._run("reinit")
        return self._deadline.remaining_ms()

    def get_sensor_variant(self):
        """"SCD40", "SCD41" or "SCD43" (remembered in ``variant``); ``DeviceError`` if unknown."""
        word = self._run("get_sensor_variant")[0]
        name = variant_name(word)
        if name is None:
            raise DeviceError("device at 0x%02X reports unknown SCD4x variant word 0x%04X" % (self.address, word))
        self.variant = name
        return name

    # -- single shot and power (SCD41/SCD43) ----------------------------------------------
    def measure_single_shot(self):
        """Start one CO2+T+RH measurement; returns ms until ``read_measurement`` (~5000).

        The datasheet says the first single-shot reading after ``wake_up`` must be discarded:
        after a wake-up this call first runs that throwaway shot, waiting its 5 s on the
        injected clock and reading it out, then starts the shot whose result you read.
        """
        if self._discard_next_shot:
            self._run("measure_single_shot")
            self._deadline.wait()
            self._run("read_measurement")
            self._discard_next_shot = False
        self._run("measure_single_shot")
        return self._deadline.remaining_ms()

    def measure_single_shot_rht_only(self):
        """Start a T+RH-only measurement (CO2 reads 0); returns ms until ready (~50)."""
        self._run("measure_single_shot_rht_only")
        return self._deadline.remaining_ms()

    def power_down(self):
        """Put the (idle) sensor to sleep; only ``wake_up`` works afterwards. Returns ms until done."""
        self._run("power_down")
        self._mode = "asleep"
        return self._deadline.remaining_ms()

    def wake_up(self):
        """Wake the sensor and confirm it answers.

        The sensor does not ACK wake_up (REFERENCE §1.1), so the expected NACK ``OSError`` is
        swallowed; after 30 ms on the clock ``get_serial_number`` confirms the wake-up and its
        ``OSError`` propagates if the sensor still does not answer. The next
        ``measure_single_shot`` discards its first reading (see there).
        """
        self._check_state("wake_up", COMMANDS["wake_up"])
        self._deadline.wait()
        try:
            self._bus.writeto(self.address, command_bytes(CMD_WAKE_UP))
        except OSError as e:
            if not _is_nack(e):
                raise
        self._clock.sleep_ms(_WAKE_WAIT_MS)
        previous, self._mode = self._mode, "idle"
        try:
            self.get_serial_number()
        except OSError:
            self._mode = previous
            raise
        self._discard_next_shot = True
