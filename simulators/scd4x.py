"""``SimSCD4X``: a byte-level model of the Sensirion SCD40/SCD41/SCD43 (REFERENCE §1).

Theory of operation
-------------------
The model follows the datasheet (v1.3), not our driver. Every transaction first brings the
model up to date with the virtual clock (``_advance``: periodic samples every 5000 ms, or
30000 ms in low-power mode; a finished single shot; the end of an execution window). Then:

- Power-up: the address is NACKed for 1000 ms after power-on (``power_up_ms``).
- Writes: a 16-bit command, no CRC, then argument words each with a CRC. A command while the
  previous one executes is NACKed; so is one the current mode forbids (datasheet "During
  meas." column), an SCD41-only command on an SCD40, a wrong argument length, and a wrong
  argument CRC (the datasheet makes the CRC mandatory but does not say how the sensor
  refuses it; we NACK and do not execute, as other Sensirion parts do). An unknown code
  raises ``UnknownCommand``.
- Reads: only after a read-type command, once its exec time has elapsed; otherwise NACK.
  read_measurement with no new sample NACKs; a successful read empties the buffer and clears
  data-ready. Reading past the reply returns 0xFF (SDA pulled high).
- Sleep: after power_down the sensor NACKs everything; wake_up (0x36F6) is itself NACKed but
  wakes it within 20 ms. The first measure_single_shot after a wake-up reads CO2 far off
  (the datasheet says to discard it; we model it as −(100 ppm + 25 %)).
- Settings live in RAM; persist_settings copies them to a simulated EEPROM that survives
  ``power_cycle()``; reinit reloads them; perform_factory_reset restores factory defaults and
  erases the FRC history. FRC history (``frc_correction_ppm``) is kept across power cycles,
  as the datasheet says it has its own EEPROM. The ambient-pressure setting is volatile.

Readings: truth ``co2_ppm``, ``temperature_c``, ``rh_percent`` (optionally ``pressure_hpa``).
The sensor heats itself by ``SELF_HEATING_C`` = 4 °C, so with the default 4 °C offset it
reports the ambient temperature; another offset shifts T (and RH follows, as the sensor
recomputes RH at its compensated temperature). CO2 responds to a mismatch between the true
pressure and the one the sensor assumes (set pressure, else altitude via the standard
atmosphere); without ``pressure_hpa`` in the truth it is exact. A per-device offset and
seeded noise stay within half the datasheet accuracy: CO2 ±(25 ppm + 2.5 %), T ±0.4 °C,
RH ±3 %RH. ASC is stored, not simulated.
"""

import math

from drivers.scd4x import (
    frc_word_from_correction,
    rh_word_from_percent,
    temperature_offset_c,
    temperature_offset_word,
    temperature_word_from_c,
)
from drivers.scd4x_commands import (
    CMD_WAKE_UP,
    CODE,
    COMMANDS,
    DEVICE_EXEC_MS,
    EXEC_MS,
    FRC_FAILED,
    FRC_ZERO,
    LOW_POWER_INTERVAL_MS,
    PERIODIC_INTERVAL_MS,
    SCD41_ONLY,
    WHILE_MEASURING,
    WRITE_WORDS,
)
from drivers.sensirion import crc8, pack_word
from simulators.i2c import Nack, SimI2CDevice, UnknownCommand

SELF_HEATING_C = 4.0  # equals the default offset, so defaults report ambient truth
FRC_MIN_RUN_S = 180.0  # datasheet §3.7.1: operate > 3 minutes before FRC
VARIANT_BITS = {"scd40": 0b0000, "scd41": 0b0001, "scd43": 0b0101}  # REFERENCE §1.1
FACTORY_SETTINGS = {
    "temperature_offset_word": temperature_offset_word(4.0),  # 0x05DA
    "altitude_m": 0,
    "asc_enabled": 1,
    "asc_target_ppm": 400,
    "asc_initial_period_h": 44,
    "asc_standard_period_h": 156,
}
DEFAULT_PRESSURE_HPA = 1013  # REFERENCE §1.1 set_ambient_pressure default
DEFAULT_TRUTH = {"co2_ppm": 420.0, "temperature_c": 21.0, "rh_percent": 45.0}

# Setting each write command changes, and the getter reading it back.
_SETTERS = {
    "set_temperature_offset": "temperature_offset_word",
    "set_sensor_altitude": "altitude_m",
    "set_automatic_self_calibration_enabled": "asc_enabled",
    "set_automatic_self_calibration_target": "asc_target_ppm",
    "set_automatic_self_calibration_initial_period": "asc_initial_period_h",
    "set_automatic_self_calibration_standard_period": "asc_standard_period_h",
}
_GETTERS = {
    "get_temperature_offset": "temperature_offset_word",
    "get_sensor_altitude": "altitude_m",
    "get_automatic_self_calibration_enabled": "asc_enabled",
    "get_automatic_self_calibration_target": "asc_target_ppm",
    "get_automatic_self_calibration_initial_period": "asc_initial_period_h",
    "get_automatic_self_calibration_standard_period": "asc_standard_period_h",
}
# code -> {number of argument words: command name}; 0xE000 is both set and get pressure.
_BY_CODE = {}
for _name, _row in COMMANDS.items():
    _BY_CODE.setdefault(_row[CODE], {})[_row[WRITE_WORDS]] = _name


def _saturation_hpa(t_c):
    """Water vapour saturation pressure (Magnus formula, hPa)."""
    return 6.112 * math.exp(17.62 * t_c / (243.12 + t_c))


def altitude_to_hpa(altitude_m):
    """Standard-atmosphere pressure at ``altitude_m`` (the sim's model of altitude compensation)."""
    return 1013.25 * (1.0 - 2.25577e-5 * altitude_m) ** 5.25588


class SimSCD4X(SimI2CDevice):
    """An SCD4x. ``variant``: "scd40", "scd41" or "scd43"; ``serial_number``: 48-bit int;
    ``self_test_word``: what perform_self_test answers (0 = OK)."""

    power_up_ms = 1000.0  # REFERENCE §1 "Bus facts"

    def __init__(self, address=0x62, variant="scd41", serial_number=0xF8969F073BBE, truth=None,
                 seed=0, self_test_word=0):
        if variant not in VARIANT_BITS:
            raise ValueError("variant must be one of %s, got %r" % (sorted(VARIANT_BITS), variant))
        if not 0 <= serial_number < 1 << 48:
            raise ValueError("serial_number must be a 48-bit int, got %r" % (serial_number,))
        super().__init__(address, truth=dict(DEFAULT_TRUTH) if truth is None else truth, seed=seed)
        self.variant = variant
        self.serial_number = serial_number
        self.self_test_word = self_test_word
        # Per-device calibration error: fixed for the device's life (seeded).
        self._co2_offset_ppm = self.rng.uniform(-10.0, 10.0)
        self._co2_gain_error = self.rng.uniform(-0.01, 0.01)
        self._t_offset_c = self.rng.uniform(-0.2, 0.2)
        self._rh_offset = self.rng.uniform(-1.5, 1.5)
        self.eeprom = dict(FACTORY_SETTINGS)
        self.eeprom_writes = 0
        self.frc_correction_ppm = 0

    # -- state ----------------------------------------------------------------------------
    def reset_state(self):
        self.settings = dict(self.eeprom)
        self.pressure_hpa = None  # None: compensate by altitude
        self.mode = "idle"  # idle, periodic, low_power, asleep
        self.data_ready = False
        self._sample = None
        self._busy_until_us = 0
        self._reply = None  # words the next read header returns
        self._reply_is_sample = False
        self._shot = None  # (kind, due_us) of a running single shot
        self._meas_start_us = None
        self._samples_taken = 0
        self._last_run_s = 0.0  # length of the last periodic run before a stop
        self._first_shot_after_wake = False

    def _now_us(self):
        return self.clock.now_us

    def _advance(self):
        now = self._now_us()
        if self._shot is not None and now >= self._shot[1]:
            self._produce(self._shot[0])
            self._shot = None
        if self.mode in ("periodic", "low_power"):
            period_us = 1000 * (PERIODIC_INTERVAL_MS if self.mode == "periodic" else LOW_POWER_INTERVAL_MS)
            n = (now - self._meas_start_us) // period_us
            if n > self._samples_taken:
                self._samples_taken = n
                self._produce("periodic")

    # -- physics --------------------------------------------------------------------------
    def _co2_ppm(self, noise=True):
        co2 = float(self.truth("co2_ppm"))
        try:
            p_true = float(self.truth("pressure_hpa"))
        except KeyError:
            p_true = None  # no pressure in the truth: compensation is exact
        if p_true is not None:
            assumed = self.pressure_hpa if self.pressure_hpa is not None else altitude_to_hpa(self.settings["altitude_m"])
            co2 *= p_true / assumed
        co2 += self._co2_offset_ppm + self._co2_gain_error * co2 + self.frc_correction_ppm
        if noise:
            co2 += max(-10.0, min(10.0, self.rng.gauss(0.0, 4.0)))
        return co2

    def _t_rh(self):
        t_true = float(self.truth("temperature_c"))
        rh_true = float(self.truth("rh_percent"))
        offset = temperature_offset_c(self.settings["temperature_offset_word"])
        t_rep = t_true + SELF_HEATING_C - offset
        rh_rep = rh_true * _saturation_hpa(t_true) / _saturation_hpa(t_rep)
        t_rep += self._t_offset_c + max(-0.15, min(0.15, self.rng.gauss(0.0, 0.05)))
        rh_rep += self._rh_offset + max(-1.0, min(1.0, self.rng.gauss(0.0, 0.3)))
        return t_rep, max(0.0, min(100.0, rh_rep))

    def _produce(self, kind):
        """Put a new sample in the buffer. ``kind``: "periodic", "single" or "rht"."""
        if self.garbage_reading():
            words = [self.rng.getrandbits(16) for _ in range(3)]
        else:
            t, rh = self._t_rh()
            co2 = 0.0
            if kind != "rht":
                co2 = self._co2_ppm()
                if kind == "single" and self._first_shot_after_wake:
                    co2 -= 100.0 + 0.25 * co2
                co2 = self.measure("co2_ppm", co2)
            t = self.measure("temperature_c", t)
            rh = self.measure("rh_percent", rh)
            co2_word = int(round(max(0.0, min(40000.0, co2))))  # output range 0–40 000 ppm
            words = [co2_word, temperature_word_from_c(t), rh_word_from_percent(rh)]
        if kind == "single":
            self._first_shot_after_wake = False
        self._sample = words
        self.data_ready = True

    # -- the bus side ---------------------------------------------------------------------
    def on_write(self, data):
        self._advance()
        now = self._now_us()
        if len(data) < 2:
            raise Nack("SCD4x: a command is 2 bytes")
        code = (data[0] << 8) | data[1]
        if self.mode == "asleep":
            if code == CMD_WAKE_UP:
                self.mode = "idle"
                self._busy_until_us = now + 1000 * DEVICE_EXEC_MS["wake_up"]
                self._first_shot_after_wake = True
            raise Nack("SCD4x asleep (wake_up is never ACKed)")
        if code not in _BY_CODE:
            raise UnknownCommand("SCD4x has no command 0x%04X" % code)
        if now < self._busy_until_us:
            raise Nack("SCD4x still executing the previous command")
        nbytes = len(data) - 2
        name = _BY_CODE[code].get(nbytes // 3) if nbytes % 3 == 0 else None
        if name is None:
            raise Nack("SCD4x: command 0x%04X with %d argument bytes" % (code, nbytes))
        row = COMMANDS[name]
        args = []
        for i in range(2, len(data), 3):
            if crc8(data, i, i + 2) != data[i + 2]:
                raise Nack("SCD4x: bad CRC on an argument word")
            args.append((data[i] << 8) | data[i + 1])
        if row[SCD41_ONLY] and self.variant == "scd40":
            raise Nack("SCD40 has no %s" % name)
        if name == "wake_up":
            raise Nack("SCD4x does not ACK wake_up")
        if self.mode != "idle" and not row[WHILE_MEASURING]:
            raise Nack("SCD4x refuses %s during periodic measurement" % name)
        self._reply = None
        self._reply_is_sample = False
        self._busy_until_us = now + 1000 * DEVICE_EXEC_MS.get(name, row[EXEC_MS])
        self._execute(name, args)

    def _execute(self, name, args):
        now = self._now_us()
        if name in _SETTERS:
            self.settings[_SETTERS[name]] = args[0]
        elif name in _GETTERS:
            self._reply = [self.settings[_GETTERS[name]]]
        elif name in ("start_periodic_measurement", "start_low_power_periodic_measurement"):
            self.mode = "periodic" if name == "start_periodic_measurement" else "low_power"
            self._meas_start_us = now
            self._samples_taken = 0
        elif name == "stop_periodic_measurement":
            if self.mode != "idle":
                self._last_run_s = (now - self._meas_start_us) / 1e6
            self.mode = "idle"
        elif name == "read_measurement":
            if self._sample is not None:
                self._reply = list(self._sample)
                self._reply_is_sample = True
        elif name == "get_data_ready_status":
            # REFERENCE §1.3 example answers 0x8006 when ready; only bits 10:0 carry meaning.
            self._reply = [0x8000 | (0x0006 if self.data_ready else 0)]
        elif name == "set_ambient_pressure":
            self.pressure_hpa = args[0]
        elif name == "get_ambient_pressure":
            self._reply = [self.pressure_hpa if self.pressure_hpa is not None else DEFAULT_PRESSURE_HPA]
        elif name == "perform_forced_recalibration":
            self._reply = [self._forced_recalibration(args[0])]
        elif name == "persist_settings":
            self.eeprom = dict(self.settings)
            self.eeprom_writes += 1
        elif name == "get_serial_number":
            s = self.serial_number
            self._reply = [(s >> 32) & 0xFFFF, (s >> 16) & 0xFFFF, s & 0xFFFF]
        elif name == "perform_self_test":
            self._reply = [self.self_test_word]
        elif name == "perform_factory_reset":
            self.eeprom = dict(FACTORY_SETTINGS)
            self.settings = dict(FACTORY_SETTINGS)
            self.pressure_hpa = None
            self.frc_correction_ppm = 0
            self._last_run_s = 0.0
        elif name == "reinit":
            self.settings = dict(self.eeprom)
        elif name == "get_sensor_variant":
            self._reply = [VARIANT_BITS[self.variant] << 12]
        elif name in ("measure_single_shot", "measure_single_shot_rht_only"):
            kind = "single" if name == "measure_single_shot" else "rht"
            self._shot = (kind, self._busy_until_us)
        elif name == "power_down":
            self.mode = "asleep"
        else:  # a command in the table with no model here is a gap in the model
            raise UnknownCommand("SimSCD4X does not model %s" % name)

    def _forced_recalibration(self, target_ppm):
        if self._last_run_s < FRC_MIN_RUN_S:
            return FRC_FAILED
        correction = int(round(target_ppm - self._co2_ppm(noise=False)))
        word = frc_word_from_correction(correction)
        self.frc_correction_ppm += word - FRC_ZERO
        self._last_run_s = 0.0  # a new FRC needs a new run
        return word

    def on_read(self, n):
        self._advance()
        if self.mode == "asleep":
            raise Nack("SCD4x asleep")
        if self._now_us() < self._busy_until_us:
            raise Nack("SCD4x read header before the command's execution time")
        if self._reply is None:
            raise Nack("SCD4x has nothing to send")
        out = b"".join(pack_word(w & 0xFFFF) for w in self._reply)
        if n and self._reply_is_sample:
            self._sample = None
            self.data_ready = False
        self._reply = None
        return (out + b"\xff" * n)[:n]
