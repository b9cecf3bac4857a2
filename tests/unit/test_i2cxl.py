"""Bin-fill maths (REFERENCE §4) and the I2CXL driver's pure parts: speed of sound and the
temperature correction, fill ratio, median, address encoding and validation."""

import pytest

from drivers import binfill as b
from drivers import i2cxl as x
from simulators.clock import VirtualClock


def test_speed_of_sound_formula():
    assert b.speed_of_sound_m_s(0) == pytest.approx(331.3)
    assert b.speed_of_sound_m_s(20) == pytest.approx(343.42)
    assert b.speed_of_sound_m_s(-10) == pytest.approx(325.24)


def test_calibration_temperature_matches_maxbotix_58_us_per_cm():
    # XL-MaxSonar: 58 µs of echo per cm of range (round trip) -> 2 cm / 58 µs
    c_implied = 0.02 / 58e-6
    assert b.speed_of_sound_m_s(b.CALIBRATION_TEMPERATURE_C) == pytest.approx(c_implied, rel=5e-4)


def test_correction_is_identity_at_the_calibration_temperature():
    assert b.correct_distance_cm(250, 22.5) == pytest.approx(250.0)


def test_cold_air_means_the_sensor_over_reads():
    # At 0 °C sound is slower: the echo takes longer, the sensor reports too far.
    true = b.correct_distance_cm(100, 0.0)
    assert true == pytest.approx(100 * 331.3 / 344.935, rel=1e-9)
    assert true == pytest.approx(96.05, abs=0.01)
    assert b.correct_distance_cm(100, 40.0) > 100


def test_reported_cm_for_inverts_the_correction():
    for t in (-20, 0, 22.5, 35):
        assert b.correct_distance_cm(b.reported_cm_for(123.4, t), t) == pytest.approx(123.4)


def test_about_0_18_percent_per_degree():
    ratio = b.correct_distance_cm(100, 23.5) / b.correct_distance_cm(100, 22.5)
    assert ratio - 1 == pytest.approx(0.00176, abs=1e-4)


@pytest.mark.parametrize("call,name", [
    (lambda: b.correct_distance_cm(-1, 20), "reported_cm"),
    (lambda: b.correct_distance_cm(100, 150), "air_temperature_c"),
    (lambda: b.correct_distance_cm(100, float("nan")), "air_temperature_c"),
    (lambda: b.speed_of_sound_m_s("hot"), "temperature_c"),
])
def test_correction_refuses_bad_arguments_by_name(call, name):
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.parametrize("d,ratio", [
    (120, 0.0), (25, 1.0), (72.5, 0.5), (96.25, 0.25), (130, 0.0), (20, 1.0), (0, 1.0),
])
def test_fill_ratio_formula_and_clamp(d, ratio):
    assert b.fill_ratio(d, empty_cm=120, full_cm=25) == pytest.approx(ratio)


@pytest.mark.parametrize("args,name", [
    ((50, 25, 120), "empty_cm"),  # swapped geometry
    ((50, 100, 100), "empty_cm"),  # zero span
    ((50, 120, 0), "full_cm"),
    ((-1, 120, 25), "distance_cm"),
    ((float("nan"), 120, 25), "distance_cm"),
    ((50, float("inf"), 25), "empty_cm"),
    ((None, 120, 25), "distance_cm"),
])
def test_fill_ratio_refuses_bad_geometry_by_name(args, name):
    with pytest.raises(ValueError, match=name):
        b.fill_ratio(*args)


def test_median():
    assert b.median([3]) == 3
    assert b.median([5, 1, 3]) == 3
    assert b.median([4, 1, 3, 2]) == 2.5
    assert b.median([100, 101, 765, 99, 100]) == 100  # one outlier does not move it
    with pytest.raises(ValueError, match="values"):
        b.median([])


def test_address_8bit_is_the_7bit_address_shifted():
    assert x.address_8bit(0x70) == 224
    assert x.address_8bit(0x71) == 226
    assert x.address_8bit(0x08) == 16


@pytest.mark.parametrize("new_address", [0x28, 0x52, 0x55, 0x00, 0x07, 0x78, 0x80, -1, "0x71", 0x71 + 0.0])
def test_address_8bit_refuses_invalid_addresses_naming_new_address(new_address):
    # 8-bit 80, 164, 170 and 0 are refused by the sensor (REFERENCE §4); the rest are not
    # usable 7-bit addresses.
    with pytest.raises(ValueError, match="new_address"):
        x.address_8bit(new_address)


def test_change_address_validates_before_touching_the_bus():
    drv = x.I2CXL(None, VirtualClock())  # a bus of None would fail if touched
    with pytest.raises(ValueError, match="new_address"):
        drv.change_address(0x52)
    assert drv.address == 0x70


def test_range_bytes_msb_first():
    assert x.range_cm_from_bytes(b"\x01\x2c") == 300
    assert x.range_cm_from_bytes(bytearray([0x02, 0xFD])) == 765


def test_constructor_refuses_a_bad_address():
    with pytest.raises(ValueError, match="address"):
        x.I2CXL(None, VirtualClock(), address=0xE0)


def test_measure_refuses_bad_repeats():
    drv = x.I2CXL(None, VirtualClock())
    for bad in (0, -1, 26, 2.5):
        with pytest.raises(ValueError, match="repeats"):
            drv.measure_distance_cm(repeats=bad)
