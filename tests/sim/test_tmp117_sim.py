"""The TMP117 driver against ``SimTMP117`` on ``SimI2CBus`` + ``VirtualClock``, and the model
against hand-written byte exchanges (what an independent driver from the datasheet sends)."""

import errno

import pytest

from drivers import tmp117 as t
from drivers.errors import DeviceError
from simulators.i2c import UnknownCommand
from simulators.rig import LocalRig
from simulators.tmp117 import SimTMP117, accuracy_band_c

A = 0x48


def _setup(temperature_c=21.5, seed=0, address=A, settle_ms=2):
    rig = LocalRig()
    rig.setup([{"model": "tmp117", "address": address, "truth": {"temperature_c": temperature_c}, "seed": seed}])
    rig.clock.sleep_ms(settle_ms)  # past the 1.5 ms power-up
    return rig, t.TMP117(rig.bus, rig.clock, address=address), rig.bus.devices[address]


def _raw_read(bus, reg, address=A):
    bus.writeto(address, bytes([reg]))
    return bus.readfrom(address, 2)


def _raw_write(bus, reg, word, address=A):
    bus.writeto(address, bytes([reg, word >> 8, word & 0xFF]))


# -- power-on ---------------------------------------------------------------------------------
def test_power_on_registers_by_hand_written_exchange():
    rig, _, _ = _setup()
    bus = rig.bus
    assert _raw_read(bus, 0x0F) == b"\x01\x17"
    assert _raw_read(bus, 0x00) == b"\x80\x00"  # -256 °C until the first conversion
    assert _raw_read(bus, 0x01) == b"\x02\x20"
    assert _raw_read(bus, 0x02) == b"\x60\x00"
    assert _raw_read(bus, 0x03) == b"\x80\x00"
    assert _raw_read(bus, 0x04) == b"\x00\x00"
    assert _raw_read(bus, 0x07) == b"\x00\x00"


def test_nacks_during_the_1_5_ms_power_up():
    rig = LocalRig()
    rig.setup([{"model": "tmp117", "address": A, "truth": {"temperature_c": 20}}])
    with pytest.raises(OSError) as e:
        rig.bus.writeto(A, b"\x0f")
    assert e.value.errno == errno.ENODEV
    rig.clock.sleep_ms(2)
    assert _raw_read(rig.bus, 0x0F) == b"\x01\x17"


def test_driver_reports_no_conversion_yet_then_first_result_after_8x_averaging():
    rig, drv, _ = _setup(temperature_c=21.5)
    assert drv.check_device_id() == 0x0117
    with pytest.raises(DeviceError, match="0x8000"):
        drv.read_temperature_c()
    # first conversion ends 1.5 + 124 ms after power-on
    rig.clock.sleep_ms(120)
    assert not drv.is_data_ready()
    rig.clock.sleep_ms(6)
    assert drv.is_data_ready()
    assert drv.read_temperature_c() == pytest.approx(21.5, abs=0.1)
    assert not drv.is_data_ready()


# -- data ready -------------------------------------------------------------------------------
def test_data_ready_cleared_by_reading_configuration_or_result():
    rig, _, _ = _setup()
    bus = rig.bus
    rig.clock.sleep_ms(130)
    assert _raw_read(bus, 0x01)[0] & 0x20  # Data_Ready set ...
    assert not _raw_read(bus, 0x01)[0] & 0x20  # ... and cleared by that read
    rig.clock.sleep_ms(1000)  # next conversion in the 1 s cycle
    assert _raw_read(bus, 0x00) != b"\x80\x00"
    assert not _raw_read(bus, 0x01)[0] & 0x20  # the result read cleared it


def test_driver_keeps_data_ready_seen_by_a_configuration_read():
    rig, drv, _ = _setup()
    rig.clock.sleep_ms(130)
    flags = drv.read_alert_flags()  # reads Configuration: the part clears Data_Ready
    assert flags == (False, False)
    assert drv.is_data_ready()  # the driver remembered it
    drv.read_temperature_c()
    assert not drv.is_data_ready()


# -- one-shot and averaging timing ------------------------------------------------------------
@pytest.mark.parametrize("averaging,active_ms", [(1, 15.5), (8, 124), (32, 496), (64, 992)])
def test_one_shot_timing_then_shutdown(averaging, active_ms):
    rig, drv, dev = _setup(temperature_c=30.0)
    assert drv.set_mode("shutdown") == 0
    drv.set_averaging(averaging)
    rig.clock.sleep_ms(2000)
    assert not drv.is_data_ready()  # shutdown: nothing converts
    start_us = rig.clock.now_us
    ms = drv.start_one_shot()
    assert ms == t.wait_ms_for(averaging) and ms > active_ms
    assert drv.get_mode() == "one_shot"
    rig.clock.advance_us(start_us + int(active_ms * 1000) - 200 - rig.clock.now_us)
    assert not drv.is_data_ready()
    rig.clock.advance_us(400)
    assert drv.is_data_ready()
    assert drv.get_mode() == "shutdown"  # back to shutdown by itself
    assert drv.read_temperature_c() == pytest.approx(30.0, abs=0.1)
    rig.clock.sleep_ms(3000)
    assert not drv.is_data_ready()  # and stays there


def test_read_after_start_one_shot_waits_on_the_injected_clock():
    rig, drv, _ = _setup(temperature_c=45.0)
    drv.set_mode("shutdown")
    before = rig.clock.now_us
    ms = drv.start_one_shot()
    assert drv.read_temperature_c() == pytest.approx(45.0, abs=0.1)
    assert rig.clock.now_us - before >= (ms - 1) * 1000


def test_configuration_written_only_when_it_changes_and_a_one_shot_is_one_write():
    rig, drv, dev = _setup(temperature_c=40.0)
    bus = rig.bus
    n = bus.counters["transactions"]
    drv.set_mode("shutdown", 8)  # from the EEPROM's continuous 8x: a read and a write
    assert bus.counters["transactions"] - n == 2  # a register read is one (repeated START)
    assert _raw_read(bus, 0x01)[0] & 0x0C == 0x04  # MOD 01
    n = bus.counters["transactions"]
    drv.set_mode("shutdown", 8)  # holds that already: the read only
    assert bus.counters["transactions"] - n == 1
    n = bus.counters["transactions"]
    ms = drv.start_one_shot()  # the word is known: one write
    assert bus.counters["transactions"] - n == 1
    assert ms == t.wait_ms_for(8)
    assert drv.read_temperature_c() == pytest.approx(40.0, abs=0.1)
    assert _raw_read(bus, 0x01) == b"\x06\x20"  # shutdown again by itself, 8x, CONV kept


def test_one_shot_by_a_fresh_driver_keeps_the_parts_other_settings():
    rig, drv, dev = _setup(temperature_c=20.0)
    drv.set_conversion_cycle_ms(4000)
    drv.set_therm_mode(True)
    drv.set_mode("shutdown", 32)
    fresh = t.TMP117(rig.bus, rig.clock, address=A)  # knows nothing: reads, then writes
    n = rig.bus.counters["transactions"]
    fresh.start_one_shot()
    assert rig.bus.counters["transactions"] - n == 2
    cfg = fresh.read_config()
    assert (cfg["averaging"], cfg["therm_mode"], cfg["mode"]) == (32, True, "one_shot")
    assert fresh.get_conversion_cycle_ms() == 4000


def test_soft_reset_forgets_the_configuration_word():
    rig, drv, _ = _setup(temperature_c=20.0)
    drv.set_mode("shutdown", 64)
    rig.clock.sleep_ms(drv.soft_reset())
    drv.start_one_shot()  # the part reloaded its EEPROM (8x): read, not the 64x it had
    assert drv.read_config()["averaging"] == 8


def test_shutdown_aborts_a_running_one_shot():
    rig, drv, _ = _setup()
    drv.set_mode("shutdown")
    drv.start_one_shot()
    rig.clock.sleep_ms(50)
    drv.set_mode("shutdown")
    rig.clock.sleep_ms(500)
    assert not drv.is_data_ready()
    with pytest.raises(DeviceError):
        drv.read_temperature_c()


@pytest.mark.parametrize("cycle_ms,averaging,first_ms,period_ms", [
    (15.5, 1, 15.5, 15.5), (1000, 64, 992, 1000), (4000, 8, 124, 4000), (125, 32, 496, 500),
])
def test_continuous_cycle_timing(cycle_ms, averaging, first_ms, period_ms):
    rig, drv, _ = _setup()
    drv.set_mode("shutdown")
    drv.set_conversion_cycle_ms(cycle_ms)
    drv.set_averaging(averaging)
    assert drv.get_conversion_cycle_ms() == period_ms
    t0 = rig.clock.now_us
    drv.set_mode("continuous")
    for k in range(2):
        end = t0 + int((first_ms + k * period_ms) * 1000)
        rig.clock.advance_us(end - 300 - rig.clock.now_us)
        assert not drv.is_data_ready(), k
        rig.clock.advance_us(600)
        assert drv.is_data_ready(), k
        drv.read_temperature_c()


# -- limits, alerts, offset -------------------------------------------------------------------
def test_alert_mode_latches_flags_until_configuration_read():
    rig, drv, _ = _setup(temperature_c=61.0)
    drv.set_high_limit_c(60.0)
    drv.set_low_limit_c(50.0)
    assert drv.get_high_limit_c() == 60.0 and drv.get_low_limit_c() == 50.0
    assert _raw_read(rig.bus, 0x02) == b"\x1e\x00"  # 60 °C (REFERENCE §2.2)
    rig.clock.sleep_ms(130)
    assert drv.read_alert_flags() == (True, False)
    assert drv.read_alert_flags() == (False, False)  # cleared by the read (alert mode)
    rig.set_truth(A, {"temperature_c": 40.0})
    rig.clock.sleep_ms(1000)
    assert drv.read_alert_flags() == (False, True)


def test_therm_mode_high_alert_has_hysteresis_down_to_tlow():
    rig, drv, _ = _setup(temperature_c=61.0)
    drv.set_high_limit_c(60.0)
    drv.set_low_limit_c(50.0)
    drv.set_therm_mode(True)
    rig.clock.sleep_ms(1130)
    assert drv.read_alert_flags() == (True, False)
    rig.set_truth(A, {"temperature_c": 55.0})  # between the limits: stays set
    rig.clock.sleep_ms(1000)
    assert drv.read_alert_flags() == (True, False)
    assert _raw_read(rig.bus, 0x01)[0] & 0x80  # not cleared by reading in therm mode
    rig.set_truth(A, {"temperature_c": 49.0})
    rig.clock.sleep_ms(1000)
    assert _raw_read(rig.bus, 0x01)[0] & 0xC0 == 0


def test_offset_register_is_added_to_the_result():
    rig, drv, dev = _setup(temperature_c=25.0)
    rig.clock.sleep_ms(130)
    plain = drv.read_temperature_c()
    drv.set_offset_c(1.5)
    assert drv.get_offset_c() == 1.5
    assert _raw_read(rig.bus, 0x07) == b"\x00\xc0"
    rig.clock.sleep_ms(1000)
    assert drv.read_temperature_c() == pytest.approx(plain + 1.5, abs=3 * t.LSB_C)


def test_limits_refuse_out_of_range_values_by_name():
    _, drv, _ = _setup()
    with pytest.raises(ValueError, match="high_limit_c"):
        drv.set_high_limit_c(300)
    with pytest.raises(ValueError, match="low_limit_c"):
        drv.set_low_limit_c(-300)
    with pytest.raises(ValueError, match="offset_c"):
        drv.set_offset_c(float("nan"))


# -- reset and EEPROM -------------------------------------------------------------------------
def test_soft_reset_restores_eeprom_values_and_the_reset_result():
    rig, drv, _ = _setup(temperature_c=22.0)
    rig.clock.sleep_ms(130)
    drv.read_temperature_c()
    drv.set_high_limit_c(30.0)
    drv.set_mode("shutdown")
    _raw_write(rig.bus, 0x01, 0x0002)  # Soft_Reset by hand
    with pytest.raises(OSError) as e:
        _raw_read(rig.bus, 0x01)
    assert e.value.errno == errno.ENODEV  # busy for 2 ms
    rig.clock.sleep_ms(2)
    assert _raw_read(rig.bus, 0x01) == b"\x02\x20"
    assert _raw_read(rig.bus, 0x02) == b"\x60\x00"
    assert _raw_read(rig.bus, 0x00) == b"\x80\x00"
    assert drv.soft_reset() == 3
    assert drv.check_device_id() == 0x0117  # waited out the reset on the injected clock
    with pytest.raises(DeviceError):
        drv.read_temperature_c()


def test_eeprom_programming_busy_flag_and_persistence():
    rig, drv, dev = _setup()
    bus = rig.bus
    _raw_write(bus, 0x02, 0x1E00)  # locked: register only
    _raw_write(bus, 0x04, 0x8000)  # unlock (EUN)
    assert _raw_read(bus, 0x04) == b"\x80\x00"
    _raw_write(bus, 0x03, 0x1900)  # TLow 50 °C: programs the EEPROM
    assert _raw_read(bus, 0x04)[0] & 0x40  # EEPROM_Busy mirrored in EEPROM_UL
    assert _raw_read(bus, 0x01)[0] & 0x10  # and in Configuration bit 12
    _raw_write(bus, 0x05, 0xBEEF)  # ignored while busy
    rig.clock.sleep_ms(7)
    assert not _raw_read(bus, 0x04)[0] & 0x40
    _raw_write(bus, 0x05, 0xCAFE)
    rig.clock.sleep_ms(7)
    _raw_write(bus, 0x04, 0x0000)  # lock
    rig.power(A, "cycle")
    rig.clock.sleep_ms(2)
    assert _raw_read(bus, 0x03) == b"\x19\x00"  # programmed value survives
    assert _raw_read(bus, 0x05) == b"\xca\xfe"
    assert _raw_read(bus, 0x02) == b"\x60\x00"  # locked write did not
    assert _raw_read(bus, 0x04) == b"\x00\x00"  # locked again after power-up


def test_eeprom_one_shot_mode_powers_up_in_shutdown():
    rig, drv, dev = _setup()
    _raw_write(rig.bus, 0x04, 0x8000)
    _raw_write(rig.bus, 0x01, t.encode_config("one_shot", 4, 8))
    rig.clock.sleep_ms(8)
    rig.power(A, "cycle")
    rig.clock.sleep_ms(300)
    assert drv.get_mode() == "shutdown"
    assert _raw_read(rig.bus, 0x00) == b"\x80\x00"


# -- protocol errors --------------------------------------------------------------------------
def test_unknown_register_and_malformed_writes_raise_unknown_command():
    rig, _, _ = _setup()
    with pytest.raises(UnknownCommand):
        rig.bus.writeto(A, b"\x09")
    with pytest.raises(UnknownCommand):
        rig.bus.writeto(A, b"\x02\x60")
    with pytest.raises(UnknownCommand):
        rig.bus.readfrom(A, 3)


def test_writes_to_read_only_registers_are_ignored():
    rig, _, _ = _setup()
    _raw_write(rig.bus, 0x0F, 0x1234)
    _raw_write(rig.bus, 0x00, 0x0C80)
    assert _raw_read(rig.bus, 0x0F) == b"\x01\x17"
    assert _raw_read(rig.bus, 0x00) == b"\x80\x00"


# -- accuracy ---------------------------------------------------------------------------------
@pytest.mark.parametrize("truth", [-45.0, -30.0, -20.0, 0.0, 25.0, 50.0, 60.0, 85.0, 120.0, 140.0])
@pytest.mark.parametrize("seed", range(4))
def test_readings_within_datasheet_accuracy_and_quantised(truth, seed):
    rig, drv, _ = _setup(temperature_c=truth, seed=seed)
    drv.set_mode("shutdown")
    for averaging in (1, 8):
        drv.set_averaging(averaging)
        for _ in range(3):
            drv.start_one_shot()
            value = drv.read_temperature_c()
            assert abs(value - truth) <= accuracy_band_c(truth), (value, truth)
            assert (value / t.LSB_C) == int(value / t.LSB_C)


def test_band_inside_minus20_to_50_is_0_1():
    assert accuracy_band_c(-20) == accuracy_band_c(50) == 0.1
    assert accuracy_band_c(60) == 0.15 and accuracy_band_c(125) == 0.25 and accuracy_band_c(150) == 0.3


def test_devices_differ_by_seed_but_repeat_for_the_same_seed():
    def reading(seed):
        rig, drv, _ = _setup(temperature_c=37.0, seed=seed)
        drv.set_mode("shutdown")
        drv.start_one_shot()
        return drv.read_temperature_c()

    assert reading(3) == reading(3)
    assert len({reading(s) for s in range(6)}) > 1


def test_addresses_and_constructor_checks():
    for address in (0x48, 0x49, 0x4A, 0x4B):
        rig, drv, _ = _setup(address=address)
        assert drv.check_device_id() == 0x0117
    with pytest.raises(ValueError, match="address"):
        SimTMP117(address=0x50)


# -- faults -----------------------------------------------------------------------------------
def test_nack_fault_is_enodev():
    rig, drv, _ = _setup()
    rig.fault(A, {"kind": "nack"})
    with pytest.raises(OSError) as e:
        drv.check_device_id()
    assert e.value.errno == errno.ENODEV


def test_stuck_bus_times_out():
    rig, drv, _ = _setup()
    rig.fault(None, {"kind": "stuck_bus"})
    with pytest.raises(OSError) as e:
        drv.read_config()
    assert e.value.errno == errno.ETIMEDOUT


def test_stretch_beyond_the_bus_timeout_times_out_and_within_is_fine():
    rig, drv, _ = _setup()
    rig.fault(A, {"kind": "stretch", "magnitude": 60.0, "end_s": 1.0})
    with pytest.raises(OSError) as e:
        drv.check_device_id()
    assert e.value.errno == errno.ETIMEDOUT
    rig.clock.advance_to_s(1.0)
    rig.fault(A, {"kind": "stretch", "magnitude": 5.0})
    before = rig.clock.now_us
    assert drv.check_device_id() == 0x0117
    assert rig.clock.now_us - before >= 10_000  # two stretched transactions


def test_spike_and_power_on_garbage_faults_reach_the_reading():
    rig, drv, _ = _setup(temperature_c=20.0)
    rig.fault(A, {"kind": "spike", "magnitude": 5.0, "quantity": "temperature_c"})
    rig.clock.sleep_ms(130)
    assert drv.read_temperature_c() == pytest.approx(25.0, abs=0.1)
    rig2 = LocalRig()
    rig2.setup([{"model": "tmp117", "address": A, "truth": {"temperature_c": 20.0}, "seed": 1,
                 "faults": [{"kind": "power_on_garbage"}]}])
    rig2.clock.sleep_ms(130)
    drv2 = t.TMP117(rig2.bus, rig2.clock)
    assert abs(drv2.read_temperature_c() - 20.0) > 0.1  # the first conversion is garbage
    rig2.clock.sleep_ms(1000)
    assert drv2.read_temperature_c() == pytest.approx(20.0, abs=0.1)
