"""The SCD4x driver against SimSCD4X on SimI2CBus + VirtualClock, and the simulator against
hand-written datasheet byte sequences (so it is not tuned to our driver)."""

import errno

import pytest

from drivers.errors import CRCError, DeviceError
from drivers.scd4x import SCD4X
from simulators.clock import VirtualClock
from simulators.faults import Fault
from simulators.i2c import SimI2CBus, UnknownCommand
from simulators.scd4x import SimSCD4X

TRUTH = {"co2_ppm": 800.0, "temperature_c": 22.0, "rh_percent": 50.0}


def co2_tol(ppm):  # datasheet accuracy, REFERENCE §1.4 (SCD40 figure, the wider)
    return 50.0 + 0.05 * ppm


class Rig:
    def __init__(self, booted=True, **kwargs):
        kwargs.setdefault("truth", dict(TRUTH))
        self.clock = VirtualClock()
        self.bus = SimI2CBus(self.clock)
        self.dev = self.bus.attach(SimSCD4X(**kwargs))
        self.scd = SCD4X(self.bus, self.clock)
        if booted:
            self.clock.advance_s(1.0)

    def w(self, hexbytes):
        self.bus.writeto(0x62, bytes.fromhex(hexbytes))

    def r(self, n):
        buf = bytearray(n)
        self.bus.readfrom_into(0x62, buf)
        return bytes(buf)

    def ms(self, ms):
        self.clock.sleep_ms(ms)


def nack(fn, *args):
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.args[0] == errno.ENODEV
    return info.value


@pytest.fixture
def rig():
    return Rig()


# -- power-up and exec-time windows ----------------------------------------------------------
def test_nacks_for_1000_ms_after_power_up():
    rig = Rig(booted=False)
    rig.ms(990)
    nack(rig.scd.get_serial_number)
    rig.ms(10)
    assert rig.scd.get_serial_number() == 0xF8969F073BBE


def test_read_header_before_exec_time_is_nacked(rig):
    rig.w("3682")
    nack(rig.r, 9)  # < 1 ms later
    rig.w("3682")
    rig.ms(1)
    assert rig.r(9) == bytes.fromhex("F896319F07C23BBE89")


def test_self_test_read_waits_10_s_and_reports_ok(rig):
    rig.w("3639")
    rig.ms(9990)
    nack(rig.r, 3)
    rig.ms(10)
    assert rig.r(3) == bytes.fromhex("000081")
    rig.scd.perform_self_test()  # and the driver waits it out by itself


def test_failed_self_test_is_a_device_error():
    rig = Rig(self_test_word=0x0001)
    with pytest.raises(DeviceError, match="self-test"):
        rig.scd.perform_self_test()


def test_new_command_while_one_executes_is_nacked(rig):
    rig.w("3615")  # persist_settings: 800 ms
    rig.ms(790)
    nack(rig.w, "3682")
    rig.ms(10)
    rig.w("3682")


def test_driver_waits_out_stop_before_the_next_command(rig):
    rig.scd.start_periodic_measurement()
    assert 500 <= rig.scd.stop_periodic_measurement() <= 501
    assert rig.scd.get_serial_number() == 0xF8969F073BBE  # no NACK: the driver waited


def test_read_with_nothing_to_send_is_nacked(rig):
    nack(rig.r, 3)
    rig.w("241D05DA29")  # a write command has no reply either
    rig.ms(2)
    nack(rig.r, 3)


# -- state rules -----------------------------------------------------------------------------
def test_commands_not_allowed_while_measuring_are_nacked_and_refused(rig):
    rig.scd.start_periodic_measurement()
    nack(rig.w, "241D05DA29")
    nack(rig.w, "3682")
    with pytest.raises(DeviceError, match="stop periodic measurement first"):
        rig.scd.get_serial_number()
    rig.scd.set_ambient_pressure(987)  # allowed while measuring
    assert rig.scd.get_ambient_pressure() == 987
    assert rig.scd.get_data_ready_status() is False


def test_data_ready_every_5_s_cleared_by_read(rig):
    rig.scd.start_periodic_measurement()
    rig.ms(4990)
    assert not rig.scd.get_data_ready_status()
    nack(rig.scd.read_measurement)
    rig.ms(10)
    assert rig.scd.get_data_ready_status()
    rig.scd.read_measurement()
    assert not rig.scd.get_data_ready_status()
    nack(rig.scd.read_measurement)
    rig.ms(5000)
    assert rig.scd.get_data_ready_status()


def test_low_power_mode_updates_every_30_s(rig):
    assert rig.scd.start_low_power_periodic_measurement() == 30000
    rig.ms(29000)
    assert not rig.scd.get_data_ready_status()
    rig.ms(1000)
    assert rig.scd.get_data_ready_status()
    with pytest.raises(DeviceError):
        rig.scd.persist_settings()


def test_unknown_command_raises_unknown_command(rig):
    with pytest.raises(UnknownCommand):
        rig.w("1234")


def test_bad_crc_on_a_written_word_is_nacked_and_not_executed(rig):
    nack(rig.w, "241D05DA28")
    rig.ms(2)
    assert rig.scd.get_temperature_offset() == pytest.approx(4.0, abs=0.01)


# -- calibration and settings --------------------------------------------------------------
def test_frc_needs_3_minutes_of_measurement(rig):
    rig.scd.start_periodic_measurement()
    rig.clock.advance_s(170)
    rig.scd.stop_periodic_measurement()
    with pytest.raises(DeviceError, match="3 minutes"):
        rig.scd.perform_forced_recalibration(800)


def test_frc_corrects_readings_to_the_reference():
    rig = Rig(truth={"co2_ppm": 480.0, "temperature_c": 22.0, "rh_percent": 50.0}, seed=3)
    rig.scd.start_periodic_measurement()
    rig.clock.advance_s(181)
    before = rig.scd.read_measurement()[0]
    rig.scd.stop_periodic_measurement()
    correction = rig.scd.perform_forced_recalibration(480)
    assert abs(before + correction - 480) <= 12  # the sensor's noise between the two
    rig.scd.start_periodic_measurement()
    rig.ms(5000)
    assert abs(rig.scd.read_measurement()[0] - 480) <= 12


def test_settings_are_lost_on_power_cycle_unless_persisted(rig):
    rig.scd.set_temperature_offset(6.0)
    rig.scd.set_sensor_altitude(120)
    rig.dev.power_cycle()
    rig.ms(1000)
    assert rig.scd.get_temperature_offset() == pytest.approx(4.0, abs=0.01)
    rig.scd.set_temperature_offset(6.0)
    rig.scd.set_sensor_altitude(120)
    rig.scd.set_automatic_self_calibration_enabled(False)
    assert rig.scd.persist_settings() > 0
    rig.dev.power_cycle()
    rig.ms(1000)
    assert rig.scd.get_temperature_offset() == pytest.approx(6.0, abs=0.01)
    assert rig.scd.get_sensor_altitude() == 120
    assert rig.scd.get_automatic_self_calibration_enabled() is False
    assert rig.dev.eeprom_writes == 1


def test_reinit_reloads_eeprom_and_factory_reset_restores_defaults(rig):
    rig.scd.set_automatic_self_calibration_target(420)
    rig.scd.set_automatic_self_calibration_initial_period(8)
    rig.scd.persist_settings()
    rig.scd.set_automatic_self_calibration_target(500)
    rig.scd.reinit()
    assert rig.scd.get_automatic_self_calibration_target() == 420
    rig.scd.perform_factory_reset()
    assert rig.scd.get_automatic_self_calibration_target() == 400
    assert rig.scd.get_automatic_self_calibration_initial_period() == 44
    assert rig.scd.get_automatic_self_calibration_standard_period() == 156
    rig.dev.power_cycle()
    rig.ms(1000)
    assert rig.scd.get_automatic_self_calibration_initial_period() == 44


def test_temperature_offset_shifts_reported_temperature():
    rig = Rig(seed=5)
    rig.scd.set_temperature_offset(6.0)
    rig.scd.start_periodic_measurement()
    rig.ms(5000)
    _, t, rh = rig.scd.read_measurement()
    assert abs(t - (TRUTH["temperature_c"] - 2.0)) <= 0.8
    assert rh > TRUTH["rh_percent"] + 2  # cooler reading, same water: higher RH


def test_pressure_mismatch_moves_co2_and_compensation_fixes_it():
    truth = dict(TRUTH, pressure_hpa=800.0)
    rig = Rig(truth=truth, seed=2)
    rig.scd.start_periodic_measurement()
    rig.ms(5000)
    uncompensated = rig.scd.read_measurement()[0]
    assert uncompensated < 800 - co2_tol(800)  # 800 hPa air read as 1013 hPa
    rig.scd.set_ambient_pressure(800)
    rig.ms(5000)
    assert abs(rig.scd.read_measurement()[0] - 800) <= co2_tol(800)


def test_altitude_compensates_like_the_standard_atmosphere():
    rig = Rig(truth=dict(TRUTH, pressure_hpa=800.0), seed=2)
    rig.scd.set_sensor_altitude(1950)  # ~800 hPa in the standard atmosphere
    rig.scd.start_periodic_measurement()
    rig.ms(5000)
    assert abs(rig.scd.read_measurement()[0] - 800) <= co2_tol(800)


# -- single shot, sleep, wake --------------------------------------------------------------
def test_single_shot_and_rht_only(rig):
    assert 5000 <= rig.scd.measure_single_shot() <= 5001
    nack(rig.w, "E4B8")  # busy for the whole shot
    rig.ms(5001)
    co2, t, rh = rig.scd.read_measurement()
    assert abs(co2 - 800) <= co2_tol(800)
    assert rig.scd.measure_single_shot_rht_only() <= 51
    rig.ms(51)
    co2, t, rh = rig.scd.read_measurement()
    assert co2 == 0 and abs(t - 22.0) <= 0.8 and abs(rh - 50.0) <= 6


def test_power_down_nacks_everything_until_wake_up(rig):
    rig.scd.power_down()
    rig.ms(2)
    nack(rig.w, "3682")
    nack(rig.r, 9)
    nack(rig.w, "36F6")  # wake_up is never ACKed ...
    rig.ms(20)
    rig.w("3682")  # ... but it wakes the sensor
    rig.ms(1)
    assert rig.r(9) == bytes.fromhex("F896319F07C23BBE89")


def test_driver_refuses_commands_while_asleep_and_wake_up_confirms(rig):
    rig.scd.power_down()
    with pytest.raises(DeviceError, match="wake_up"):
        rig.scd.get_serial_number()
    rig.scd.wake_up()
    assert rig.scd.get_serial_number() == 0xF8969F073BBE


def test_wake_up_raises_oserror_when_the_sensor_does_not_answer(rig):
    rig.scd.power_down()
    rig.dev.power_off()
    nack(rig.scd.wake_up)


def test_first_single_shot_after_wake_is_off_and_the_driver_discards_it():
    raw = Rig(seed=4)
    raw.scd.power_down()
    raw.scd.wake_up()
    raw.w("219D")  # an independent host's first shot after wake
    raw.ms(5000)
    assert abs(raw.scd.read_measurement()[0] - 800) > co2_tol(800)

    rig = Rig(seed=4)
    rig.scd.power_down()
    rig.scd.wake_up()
    rig.ms(rig.scd.measure_single_shot())
    assert abs(rig.scd.read_measurement()[0] - 800) <= co2_tol(800)


def test_scd40_has_no_single_shot():
    rig = Rig(variant="scd40")
    nack(rig.w, "219D")
    assert rig.scd.get_sensor_variant() == "SCD40"
    with pytest.raises(DeviceError, match="SCD40"):
        rig.scd.measure_single_shot()


# -- faults ----------------------------------------------------------------------------------
def test_nack_fault_is_oserror_enodev(rig):
    rig.dev.add_fault(Fault("nack"))
    nack(rig.scd.get_serial_number)


def test_crc_flip_fault_is_crc_error(rig):
    rig.dev.add_fault(Fault("crc_flip"))
    with pytest.raises(CRCError):
        rig.scd.get_serial_number()


def test_stuck_bus_is_oserror_etimedout(rig):
    rig.bus.add_fault(Fault("stuck_bus"))
    with pytest.raises(OSError) as info:
        rig.scd.get_serial_number()
    assert info.value.args[0] == errno.ETIMEDOUT


def test_power_on_garbage_first_reading_has_correct_crcs():
    rig = Rig(seed=9)
    rig.dev.add_fault(Fault("power_on_garbage"))
    rig.scd.start_periodic_measurement()
    rig.ms(5000)
    rig.scd.read_measurement()  # garbage words, but CRCs right: no CRCError
    rig.ms(5000)
    assert abs(rig.scd.read_measurement()[0] - 800) <= co2_tol(800)


def test_stuck_value_fault_freezes_co2(rig):
    rig.dev.add_fault(Fault("stuck_value", quantity="co2_ppm"))
    rig.scd.start_periodic_measurement()
    readings = set()
    for co2 in (600.0, 1200.0):
        rig.dev.set_truth(dict(TRUTH, co2_ppm=co2))
        rig.ms(5000)
        readings.add(rig.scd.read_measurement()[0])
    assert len(readings) == 1


# -- accuracy ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("truth", [
    {"co2_ppm": 420.0, "temperature_c": 18.0, "rh_percent": 30.0},
    {"co2_ppm": 1500.0, "temperature_c": 26.0, "rh_percent": 60.0},
])
def test_readings_within_datasheet_accuracy(seed, truth):
    rig = Rig(truth=truth, seed=seed)
    rig.scd.start_periodic_measurement()
    for _ in range(40):
        rig.ms(5000)
        co2, t, rh = rig.scd.read_measurement()
        assert abs(co2 - truth["co2_ppm"]) <= co2_tol(truth["co2_ppm"])
        assert abs(t - truth["temperature_c"]) <= 0.8
        assert abs(rh - truth["rh_percent"]) <= 6.0


# -- an independent host, bytes from the datasheet ----------------------------------------------
def test_hand_written_datasheet_sequences_get_datasheet_answers():
    rig = Rig(truth={"co2_ppm": 500.0, "temperature_c": 25.0, "rh_percent": 37.0})
    rig.w("3682"); rig.ms(1)
    assert rig.r(9) == bytes.fromhex("F896319F07C23BBE89")
    rig.w("2318"); rig.ms(1)
    assert rig.r(3) == bytes.fromhex("05DA29")  # default offset 4 °C
    rig.w("E00003DB42"); rig.ms(1)
    rig.w("E000"); rig.ms(1)
    assert rig.r(3) == bytes.fromhex("03DB42")  # 987 hPa back
    rig.w("24160001B0"); rig.ms(1)
    rig.w("2313"); rig.ms(1)
    assert rig.r(3) == bytes.fromhex("0001B0")
    rig.w("202F"); rig.ms(1)
    assert rig.r(3)[0] >> 4 == 0b0001  # SCD41
    rig.w("21B1")
    rig.ms(5000)
    rig.w("E4B8"); rig.ms(1)
    ready = rig.r(3)
    assert (ready[0] << 8 | ready[1]) & 0x07FF
    rig.w("EC05"); rig.ms(1)
    m = rig.r(9)
    co2 = m[0] << 8 | m[1]
    t = -45 + 175 * (m[3] << 8 | m[4]) / 65536
    rh = 100 * (m[6] << 8 | m[7]) / 65536
    assert abs(co2 - 500) <= co2_tol(500) and abs(t - 25) <= 0.8 and abs(rh - 37) <= 6
    rig.w("3F86"); rig.ms(500)
    rig.w("362F01E0B4"); rig.ms(400)
    assert rig.r(3) == bytes.fromhex("FFFFAC")  # not measured 3 min: FRC fails
