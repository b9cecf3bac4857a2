"""Portable behaviour checks for the I2CXL-MaxSonar driver on the simulated sonar (CPython
LocalRig and the MicroPython unix port over the simulator socket)."""

import errno

from drivers.binfill import fill_ratio
from drivers.errors import DeviceError
from drivers.i2cxl import I2CXL
from tests.behaviour.harness import close, raises

_A = 0x70


def _sonar(rig, distance_cm, temperature_c=22.5):
    rig.setup([{"model": "i2cxl", "address": _A,
                "truth": {"distance_cm": distance_cm, "temperature_c": temperature_c}}])
    return I2CXL(rig.bus, rig.clock)


def check_i2cxl_info_bytes_before_first_range(rig):
    drv = _sonar(rig, 150.0)
    raises(DeviceError, drv.read_range_cm)
    buf = bytearray(2)
    rig.bus.readfrom_into(_A, buf)  # the part answers with info bytes, not a range
    assert (buf[0] << 8 | buf[1]) > 765, buf


def check_i2cxl_nacks_while_ranging(rig):
    drv = _sonar(rig, 300.0)
    assert drv.start_range() >= 80
    e = raises(OSError, rig.bus.readfrom_into, _A, bytearray(2))
    assert e.errno == errno.ENODEV, e
    assert drv.read_range_cm() == 300


def check_i2cxl_cold_air_and_correction(rig):
    drv = _sonar(rig, 400.0, temperature_c=0.0)
    raw = drv.measure_distance_cm(repeats=3)
    assert raw > 410, raw  # sound is slower at 0 °C: the sensor over-reads
    d = drv.measure_distance_cm(repeats=3, air_temperature_c=0.0)
    assert close(d, 400.0, 1.5), d


def check_i2cxl_address_change(rig):
    drv = _sonar(rig, 88.0)
    drv.change_address(0x72)
    assert rig.bus.scan() == [0x72]
    e = raises(OSError, rig.bus.writeto, _A, b"\x51")
    assert e.errno == errno.ENODEV, e
    drv.start_range()
    assert drv.read_range_cm() == 88


def check_i2cxl_bin_fill(rig):
    drv = _sonar(rig, 72.5)
    d = drv.measure_distance_cm(repeats=5)
    assert close(fill_ratio(d, 120.0, 25.0), 0.5, 0.015), d
