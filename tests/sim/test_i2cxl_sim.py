"""The I2CXL driver against ``SimMaxSonar`` on ``SimI2CBus`` + ``VirtualClock``, and the model
against hand-written byte exchanges (what an independent driver from the datasheet sends)."""

import errno

import pytest

from drivers import binfill
from drivers.errors import DeviceError
from drivers.i2cxl import I2CXL
from simulators.i2c import UnknownCommand
from simulators.i2cxl import SimMaxSonar
from simulators.rig import LocalRig

A = 0x70


def _spec(distance_cm=150.0, temperature_c=22.5, part="MB1242", seed=0, address=A, faults=None):
    spec = {"model": "i2cxl", "address": address, "seed": seed, "part": part,
            "truth": {"distance_cm": distance_cm, "temperature_c": temperature_c}}
    if faults:
        spec["faults"] = faults
    return spec


def _setup(**kw):
    rig = LocalRig()
    rig.setup([_spec(**kw)])
    address = kw.get("address", A)
    return rig, I2CXL(rig.bus, rig.clock, address=address), rig.bus.devices[address]


def _enodev(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == errno.ENODEV, e.value
    return e.value


# -- power-up info bytes ----------------------------------------------------------------------
def test_read_after_power_up_returns_info_bytes_not_a_range():
    rig, drv, dev = _setup(distance_cm=150)
    info = rig.bus.readfrom(A, 2)
    assert info == b"\x12\x42"  # the model's documented choice: part number as BCD
    assert int.from_bytes(info, "big") > 765  # can never pass for a range
    with pytest.raises(DeviceError, match="start_range"):
        drv.read_range_cm()


def test_info_bytes_come_back_after_a_power_cycle_and_the_driver_refuses_them():
    rig, drv, _ = _setup(distance_cm=150)
    drv.start_range()
    assert drv.read_range_cm() == 150
    drv.start_range()
    rig.clock.sleep_ms(100)
    rig.power(A, "cycle")  # the driver cannot see this
    with pytest.raises(DeviceError, match="info bytes"):
        drv.read_range_cm()


def test_each_read_needs_its_own_range_command():
    rig, drv, _ = _setup(distance_cm=99)
    drv.start_range()
    assert drv.read_range_cm() == 99
    with pytest.raises(DeviceError):
        drv.read_range_cm()
    assert rig.bus.readfrom(A, 2) == b"\x00\x63"  # the part itself repeats the last range


# -- the ranging window -----------------------------------------------------------------------
def test_nacks_while_ranging_then_reports_by_hand_written_exchange():
    rig, _, _ = _setup(distance_cm=300.0)
    bus = rig.bus
    bus.writeto(A, b"\x51")  # take a range reading (REFERENCE §4: 81)
    _enodev(bus.readfrom, A, 2)
    _enodev(bus.writeto, A, b"\x51")
    rig.clock.sleep_ms(80)  # the datasheet's ~80 ms
    data = bus.readfrom(A, 2)
    assert data == (300).to_bytes(2, "big")


def test_busy_time_follows_the_echo_time():
    rig, _, _ = _setup(distance_cm=30.0)
    rig.bus.writeto(A, b"\x51")
    rig.clock.sleep_ms(22)
    _enodev(rig.bus.readfrom, A, 2)  # 22 ms + 1.7 ms round trip
    rig.clock.sleep_ms(3)
    assert rig.bus.readfrom(A, 2) == (30).to_bytes(2, "big")
    rig2, _, _ = _setup(distance_cm=700.0)
    rig2.bus.writeto(A, b"\x51")
    rig2.clock.sleep_ms(60)
    _enodev(rig2.bus.readfrom, A, 2)  # far target: 22 + 40.6 ms
    rig2.clock.sleep_ms(5)
    assert rig2.bus.readfrom(A, 2) == (700).to_bytes(2, "big")


def test_driver_waits_on_the_injected_clock():
    rig, drv, _ = _setup(distance_cm=200)
    t0 = rig.clock.now_us
    assert drv.start_range() == 81
    assert drv.read_range_cm() == 200
    assert rig.clock.now_us - t0 >= 80_000
    drv.start_range()  # waits the 100 ms ring-down since the last ping first
    assert rig.clock.now_us - t0 >= 100_000


def test_measure_pings_100_ms_apart_and_returns_the_median():
    rig, drv, dev = _setup(distance_cm=180.0)
    t0 = rig.clock.now_us
    assert drv.measure_distance_cm(repeats=5) == 180.0
    assert dev.ranges_taken == 5
    assert rig.clock.now_us - t0 >= 4 * 100_000 + 80_000


def test_pings_closer_than_100_ms_catch_ghost_echoes():
    rig, _, dev = _setup(distance_cm=400.0, seed=2)
    readings = []
    for _ in range(20):
        rig.bus.writeto(A, b"\x51")
        rig.clock.sleep_ms(70)
        readings.append(int.from_bytes(rig.bus.readfrom(A, 2), "big"))
    assert any(r < 399 for r in readings)  # ring-down of the previous ping
    rig2, drv2, _ = _setup(distance_cm=400.0, seed=2)
    for _ in range(20):
        drv2.start_range()
        assert abs(drv2.read_range_cm() - 400) <= 1


# -- range limits and accuracy ----------------------------------------------------------------
@pytest.mark.parametrize("part,minimum", [("MB1242", 25), ("MB1202", 20), ("MB7040", 20)])
def test_closer_than_minimum_reads_as_minimum(part, minimum):
    rig, drv, _ = _setup(distance_cm=5.0, part=part)
    drv.start_range()
    assert drv.read_range_cm() == minimum


def test_beyond_maximum_reads_765_and_measure_drops_it():
    rig, drv, _ = _setup(distance_cm=900.0)
    drv.start_range()
    assert drv.read_range_cm() == 765
    with pytest.raises(DeviceError, match="none of 3"):
        drv.measure_distance_cm(repeats=3)


@pytest.mark.parametrize("distance", [30.0, 77.7, 150.0, 333.3, 500.0, 700.0])
@pytest.mark.parametrize("seed", range(3))
def test_readings_within_a_centimetre_at_the_calibration_temperature(distance, seed):
    rig, drv, _ = _setup(distance_cm=distance, seed=seed)
    for _ in range(5):
        drv.start_range()
        assert abs(drv.read_range_cm() - distance) <= 1.1


@pytest.mark.parametrize("air_c", [-10.0, 0.0, 10.0, 35.0])
def test_reported_cm_follow_the_speed_of_sound_and_the_correction_undoes_it(air_c):
    rig, drv, _ = _setup(distance_cm=400.0, temperature_c=air_c)
    raw = drv.measure_distance_cm(repeats=3)
    expected_raw = binfill.reported_cm_for(400.0, air_c)
    assert abs(raw - expected_raw) <= 1.1
    assert abs(raw - 400.0) > 5  # uncorrected, the error is several cm at 400 cm
    corrected = drv.measure_distance_cm(repeats=3, air_temperature_c=air_c)
    assert corrected == pytest.approx(400.0, abs=1.2)


def test_fill_ratio_end_to_end():
    rig, drv, _ = _setup(distance_cm=72.5, temperature_c=22.5)
    d = drv.measure_distance_cm(repeats=3, air_temperature_c=22.5)
    assert binfill.fill_ratio(d, empty_cm=120, full_cm=25) == pytest.approx(0.5, abs=0.012)


# -- address change ---------------------------------------------------------------------------
def test_address_change_then_reachable_at_the_new_address_only():
    rig, drv, dev = _setup(distance_cm=210.0)
    drv.change_address(0x71)
    assert drv.address == 0x71
    assert rig.bus.scan() == [0x71]
    _enodev(rig.bus.readfrom, A, 2)
    drv.start_range()
    assert drv.read_range_cm() == 210
    rig.power(0x71, "cycle")  # kept through a power cycle (EEPROM)
    assert rig.bus.scan() == [0x71]


def test_address_change_by_hand_written_exchange_odd_rounds_down_invalid_ignored():
    rig, _, dev = _setup()
    for refused in (0, 80, 164, 170, 81, 171):  # 81 -> 80 and 171 -> 170 are refused too
        rig.bus.writeto(A, bytes([0xAA, 0xA5, refused]))
        assert rig.bus.scan() == [A], refused
    rig.bus.writeto(A, bytes([0xAA, 0xA5, 0xE5]))  # odd: becomes 0xE4 = 0x72
    assert rig.bus.scan() == [0x72]
    assert dev.address == 0x72


def test_address_change_next_to_another_device():
    rig = LocalRig()
    rig.setup([_spec(distance_cm=100.0), _spec(distance_cm=200.0, address=0x71)])
    drv = I2CXL(rig.bus, rig.clock)
    drv.change_address(0x72)
    other = I2CXL(rig.bus, rig.clock, address=0x71)
    assert rig.bus.scan() == [0x71, 0x72]
    drv.start_range()
    other.start_range()
    assert (drv.read_range_cm(), other.read_range_cm()) == (100, 200)


# -- protocol errors and faults ---------------------------------------------------------------
def test_unknown_command_bytes_raise_unknown_command():
    rig, _, _ = _setup()
    for bad in (b"\x50", b"\xaa\xa5", b"\xaa\x00\xe2", b"\x51\x51"):
        with pytest.raises(UnknownCommand):
            rig.bus.writeto(A, bad)
    with pytest.raises(UnknownCommand):
        rig.bus.readfrom(A, 3)


def test_constructor_checks_the_part():
    with pytest.raises(ValueError, match="MB1242"):
        SimMaxSonar(part="MB1000")
    assert SimMaxSonar(model="MB1202").min_cm == 20


def test_nack_fault_is_enodev():
    rig, drv, _ = _setup()
    rig.fault(A, {"kind": "nack"})
    _enodev(drv.start_range)


def test_stuck_bus_times_out():
    rig, drv, _ = _setup()
    rig.fault(None, {"kind": "stuck_bus"})
    with pytest.raises(OSError) as e:
        drv.start_range()
    assert e.value.errno == errno.ETIMEDOUT


def test_stretch_beyond_the_bus_timeout_times_out_and_within_is_fine():
    rig, drv, _ = _setup(distance_cm=123.0)
    rig.fault(A, {"kind": "stretch", "magnitude": 55.0, "end_s": 1.0})
    with pytest.raises(OSError) as e:
        drv.start_range()
    assert e.value.errno == errno.ETIMEDOUT
    rig.clock.advance_to_s(1.0)
    rig.fault(A, {"kind": "stretch", "magnitude": 10.0})
    drv.start_range()
    assert drv.read_range_cm() == 123


def test_model_stretches_a_little_every_transaction():
    rig, _, dev = _setup()
    assert 0 < dev.stretch_ms() < 1.0
    rig.setup([_spec()], bus={"timeout_ms": 0.01})
    with pytest.raises(OSError) as e:
        rig.bus.readfrom(A, 2)
    assert e.value.errno == errno.ETIMEDOUT


def test_stuck_value_fault_freezes_the_distance():
    rig, drv, _ = _setup(distance_cm=100.0)
    rig.fault(A, {"kind": "stuck_value", "quantity": "distance_cm"})
    drv.start_range()
    assert drv.read_range_cm() == 100
    rig.set_truth(A, {"distance_cm": 300.0, "temperature_c": 22.5})
    drv.start_range()
    assert drv.read_range_cm() == 100


def test_missing_air_temperature_means_the_calibration_temperature():
    rig = LocalRig()
    rig.setup([{"model": "i2cxl", "truth": {"distance_cm": 250.0}}])
    drv = I2CXL(rig.bus, rig.clock)
    drv.start_range()
    assert drv.read_range_cm() == 250
