"""Portable behaviour checks for the TMP117 driver on the simulated TMP117 (CPython LocalRig
and the MicroPython unix port over the simulator socket)."""

import errno

from drivers.errors import DeviceError
from drivers.tmp117 import TMP117
from tests.behaviour.harness import close, raises

_A = 0x48


def _tmp117(rig, temperature_c, address=_A):
    rig.setup([{"model": "tmp117", "address": address, "truth": {"temperature_c": temperature_c}}])
    rig.advance_s(0.002)  # past the 1.5 ms power-up
    return TMP117(rig.bus, rig.clock, address=address)


def check_tmp117_power_on_then_first_result(rig):
    drv = _tmp117(rig, 21.5)
    assert drv.check_device_id() & 0x0FFF == 0x0117
    raises(DeviceError, drv.read_temperature_c)  # 0x8000: no conversion yet
    rig.advance_s(0.13)  # 8x averaging: 124 ms
    assert drv.is_data_ready()
    t = drv.read_temperature_c()
    assert close(t, 21.5, 0.1), t


def check_tmp117_one_shot_returns_to_shutdown(rig):
    drv = _tmp117(rig, 60.0, address=0x49)
    drv.set_mode("shutdown")
    drv.set_averaging(1)
    ms = drv.start_one_shot()
    assert 15 < ms < 25, ms
    assert not drv.is_data_ready()
    rig.clock.sleep_ms(ms)
    assert drv.is_data_ready()
    assert drv.get_mode() == "shutdown"
    assert close(drv.read_temperature_c(), 60.0, 0.15)


def check_tmp117_high_alert_and_offset(rig):
    drv = _tmp117(rig, 61.0)
    drv.set_high_limit_c(60.0)
    drv.set_offset_c(-2.0)
    assert drv.get_offset_c() == -2.0
    drv.set_mode("shutdown")
    drv.start_one_shot()
    assert close(drv.read_temperature_c(), 59.0, 0.15)
    assert drv.read_alert_flags() == (False, False)  # 59 °C after the offset
    drv.set_offset_c(0.0)
    drv.start_one_shot()
    drv.read_temperature_c()
    assert drv.read_alert_flags() == (True, False)


def check_tmp117_soft_reset_restores_defaults(rig):
    drv = _tmp117(rig, 20.0)
    drv.set_averaging(64)
    drv.set_high_limit_c(30.0)
    drv.soft_reset()
    assert drv.get_averaging() == 8
    assert drv.get_high_limit_c() == 192.0
    raises(DeviceError, drv.read_temperature_c)


def check_tmp117_nack_fault_is_enodev(rig):
    drv = _tmp117(rig, 20.0)
    rig.fault(_A, {"kind": "nack"})
    e = raises(OSError, drv.check_device_id)
    assert e.errno == errno.ENODEV, e
