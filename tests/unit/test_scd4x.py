"""SCD4x command table, pure conversions, and the driver's bytes for the datasheet examples
(REFERENCE §1.1–§1.3)."""

import pytest

from drivers import scd4x_commands as cmds
from drivers.errors import DeviceError
from drivers.scd4x import (
    SCD4X,
    data_ready,
    frc_correction_ppm,
    frc_word_from_correction,
    measurement_from_words,
    rh_percent_from_word,
    rh_word_from_percent,
    serial_number_from_words,
    temperature_c_from_word,
    temperature_offset_c,
    temperature_offset_word,
    temperature_word_from_c,
    variant_name,
)
from drivers.sensirion import unpack_words
from simulators.clock import VirtualClock


class ScriptedBus:
    """A byte-level fake: expects exact writes, answers reads with given bytes, and notes
    the virtual time of each transaction."""

    def __init__(self, clock, script):
        self.clock = clock
        self.script = list(script)
        self.times_ms = []

    def writeto(self, addr, buf):
        kind, data = self.script.pop(0)
        assert (kind, addr) == ("w", 0x62)
        assert bytes(buf) == data
        self.times_ms.append(self.clock.now_us / 1000)

    def readfrom_into(self, addr, buf):
        kind, data = self.script.pop(0)
        assert (kind, addr, len(buf)) == ("r", 0x62, len(data))
        buf[:] = data
        self.times_ms.append(self.clock.now_us / 1000)

    def scan(self):
        return [0x62]


def driver(script):
    clock = VirtualClock()
    bus = ScriptedBus(clock, [(k, bytes.fromhex(h)) for k, h in script])
    return SCD4X(bus, clock), bus


# -- the command table ---------------------------------------------------------------------
REFERENCE_CODES = {
    "start_periodic_measurement": 0x21B1, "read_measurement": 0xEC05,
    "stop_periodic_measurement": 0x3F86, "set_temperature_offset": 0x241D,
    "get_temperature_offset": 0x2318, "set_sensor_altitude": 0x2427,
    "get_sensor_altitude": 0x2322, "set_ambient_pressure": 0xE000,
    "get_ambient_pressure": 0xE000, "perform_forced_recalibration": 0x362F,
    "set_automatic_self_calibration_enabled": 0x2416,
    "get_automatic_self_calibration_enabled": 0x2313,
    "set_automatic_self_calibration_target": 0x243A,
    "get_automatic_self_calibration_target": 0x233F,
    "set_automatic_self_calibration_initial_period": 0x2445,
    "get_automatic_self_calibration_initial_period": 0x2340,
    "set_automatic_self_calibration_standard_period": 0x244E,
    "get_automatic_self_calibration_standard_period": 0x234B,
    "start_low_power_periodic_measurement": 0x21AC, "get_data_ready_status": 0xE4B8,
    "persist_settings": 0x3615, "get_serial_number": 0x3682, "perform_self_test": 0x3639,
    "perform_factory_reset": 0x3632, "reinit": 0x3646, "get_sensor_variant": 0x202F,
    "measure_single_shot": 0x219D, "measure_single_shot_rht_only": 0x2196,
    "power_down": 0x36E0, "wake_up": 0x36F6,
}


def test_command_table_codes_match_reference():
    assert {n: row[cmds.CODE] for n, row in cmds.COMMANDS.items()} == REFERENCE_CODES


@pytest.mark.parametrize("name,exec_ms", [
    ("stop_periodic_measurement", 500), ("perform_forced_recalibration", 400),
    ("persist_settings", 800), ("perform_self_test", 10000), ("perform_factory_reset", 1200),
    ("reinit", 30), ("measure_single_shot", 5000), ("measure_single_shot_rht_only", 50),
    ("wake_up", 30), ("read_measurement", 1), ("power_down", 1),
])
def test_command_table_exec_times(name, exec_ms):
    assert cmds.COMMANDS[name][cmds.EXEC_MS] == exec_ms


def test_only_reference_listed_commands_are_allowed_while_measuring():
    allowed = {n for n, row in cmds.COMMANDS.items() if row[cmds.WHILE_MEASURING]}
    assert allowed == {"read_measurement", "stop_periodic_measurement", "set_ambient_pressure",
                       "get_ambient_pressure", "get_data_ready_status"}


def test_every_command_has_a_driver_method():
    for name in cmds.COMMANDS:
        assert callable(getattr(SCD4X, name)), name


# -- conversions ---------------------------------------------------------------------------
def test_measurement_example_converts_to_500_ppm_25_c_37_percent():
    co2, t, rh = measurement_from_words(unpack_words(bytes.fromhex("01F4336667A25EB93C"), 3))
    assert co2 == 500
    assert t == pytest.approx(25.0, abs=0.01)
    assert rh == pytest.approx(37.0, abs=0.01)


@pytest.mark.parametrize("word,t_c", [(0, -45.0), (0x8000, 42.5), (0xFFFF, 129.997)])
def test_temperature_endpoints(word, t_c):
    assert temperature_c_from_word(word) == pytest.approx(t_c, abs=0.001)


@pytest.mark.parametrize("word", [0, 1, 0x6667, 0x8000, 0xFFFF])
def test_temperature_and_rh_words_round_trip(word):
    assert temperature_word_from_c(temperature_c_from_word(word)) == word
    assert rh_word_from_percent(rh_percent_from_word(word)) == word


def test_temperature_and_rh_words_clamp():
    assert temperature_word_from_c(-100) == 0 and temperature_word_from_c(500) == 0xFFFF
    assert rh_word_from_percent(-5) == 0 and rh_word_from_percent(150) == 0xFFFF


def test_temperature_offset_word_both_ways():
    assert temperature_offset_word(4.0) == 0x05DA == 1498
    assert temperature_offset_c(0x05DA) == pytest.approx(4.0, abs=0.001)
    assert temperature_offset_word(0) == 0


@pytest.mark.parametrize("bad", [-0.1, 176, "4", None])
def test_temperature_offset_word_refuses_naming_offset_c(bad):
    with pytest.raises(ValueError, match="offset_c"):
        temperature_offset_word(bad)


def test_frc_correction():
    assert frc_correction_ppm(0x7FCE) == -50
    assert frc_correction_ppm(0x8000) == 0
    assert frc_correction_ppm(0x8064) == 100
    assert frc_correction_ppm(0xFFFF) is None
    assert frc_word_from_correction(-50) == 0x7FCE


@pytest.mark.parametrize("word,ready", [(0x8006, True), (0x8000, False), (0x0000, False), (0x0001, True), (0xF800, False)])
def test_data_ready_uses_the_low_11_bits(word, ready):
    assert data_ready(word) is ready


@pytest.mark.parametrize("word,name", [(0x0000, "SCD40"), (0x1000, "SCD41"), (0x1440, "SCD41"),
                                       (0x5000, "SCD43"), (0x0FFF, "SCD40"), (0x2000, None)])
def test_variant_uses_bits_15_to_12(word, name):
    assert variant_name(word) == name


def test_serial_number_example():
    words = unpack_words(bytes.fromhex("F896319F07C23BBE89"), 3)
    assert serial_number_from_words(words) == 0xF8969F073BBE == 273325796834238


# -- byte-exact driver frames (REFERENCE §1.3) ---------------------------------------------
def test_read_measurement_bytes_and_wait():
    scd, bus = driver([("w", "EC05"), ("r", "01F4336667A25EB93C")])
    co2, t, rh = scd.read_measurement()
    assert (co2, round(t, 2), round(rh, 2)) == (500, 25.0, 37.0)
    assert bus.times_ms[1] - bus.times_ms[0] >= 1
    assert bus.script == []


def test_data_ready_bytes():
    scd, bus = driver([("w", "E4B8"), ("r", "800604")])
    assert scd.get_data_ready_status() is True


def test_set_asc_on_bytes():
    scd, bus = driver([("w", "24160001B0")])
    scd.set_automatic_self_calibration_enabled(True)
    assert bus.script == []


def test_forced_recalibration_bytes_wait_and_result():
    scd, bus = driver([("w", "3F86"), ("w", "362F01E0B4"), ("r", "7FCE7B")])
    scd.stop_periodic_measurement()
    assert scd.perform_forced_recalibration(480) == -50
    assert bus.times_ms[1] - bus.times_ms[0] >= 500
    assert bus.times_ms[2] - bus.times_ms[1] >= 400


def test_failed_forced_recalibration_is_a_device_error():
    scd, bus = driver([("w", "362F01E0B4"), ("r", "FFFFAC")])
    with pytest.raises(DeviceError, match="3 minutes"):
        scd.perform_forced_recalibration(480)


def test_set_temperature_offset_bytes():
    scd, bus = driver([("w", "241D05DA29")])
    scd.set_temperature_offset(4.0)
    assert bus.script == []


def test_set_ambient_pressure_bytes():
    scd, bus = driver([("w", "E00003DB42")])
    scd.set_ambient_pressure(987)
    assert bus.script == []


def test_serial_number_bytes():
    scd, bus = driver([("w", "3682"), ("r", "F896319F07C23BBE89")])
    assert scd.get_serial_number() == 273325796834238


def test_settings_refused_while_measuring_without_touching_the_bus():
    scd, bus = driver([("w", "21B1")])
    scd.start_periodic_measurement()
    with pytest.raises(DeviceError, match="stop periodic measurement first"):
        scd.set_temperature_offset(4.0)
    assert bus.times_ms == [0.0]


@pytest.mark.parametrize("method,arg,name", [
    ("set_sensor_altitude", 3001, "altitude_m"), ("set_sensor_altitude", -1, "altitude_m"),
    ("set_ambient_pressure", 699, "pressure_hpa"), ("set_ambient_pressure", 1201, "pressure_hpa"),
    ("perform_forced_recalibration", 399, "target_co2_ppm"),
    ("perform_forced_recalibration", 5001, "target_co2_ppm"),
    ("set_automatic_self_calibration_initial_period", 45, "period_h"),
    ("set_automatic_self_calibration_standard_period", 150, "period_h"),
    ("set_automatic_self_calibration_standard_period", -4, "period_h"),
    ("set_automatic_self_calibration_target", 40001, "target_co2_ppm"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(method, arg, name):
    scd, bus = driver([])
    with pytest.raises(ValueError, match=name):
        getattr(scd, method)(arg)


def test_frc_range_narrows_on_a_known_scd40():
    scd, bus = driver([("w", "202F"), ("r", "000081")])
    assert scd.get_sensor_variant() == "SCD40"
    with pytest.raises(ValueError, match="target_co2_ppm"):
        scd.perform_forced_recalibration(2500)


def test_scd41_only_commands_refused_on_a_known_scd40():
    scd, bus = driver([("w", "202F"), ("r", "000081")])
    scd.get_sensor_variant()
    for method in ("measure_single_shot", "measure_single_shot_rht_only", "power_down", "wake_up"):
        with pytest.raises(DeviceError, match="SCD40"):
            getattr(scd, method)()


def test_long_send_commands_return_ms_until_ready_and_the_next_command_waits():
    scd, bus = driver([("w", "3615"), ("w", "3682"), ("r", "F896319F07C23BBE89")])
    ms = scd.persist_settings()
    assert 800 <= ms <= 801
    scd.get_serial_number()
    assert bus.times_ms[1] - bus.times_ms[0] >= 800
