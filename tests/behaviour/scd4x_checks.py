"""Portable behaviour checks for the SCD4x driver on a simulated SCD41.

Run by tests/sim/test_behaviour.py on CPython and, unchanged, under the MicroPython unix
port: no pytest, no typing, no f-strings; only the rig methods of the common contract.
"""

import errno

from drivers.errors import CRCError, DeviceError
from drivers.scd4x import SCD4X
from tests.behaviour.harness import close, raises

ADDR = 0x62
TRUTH = {"co2_ppm": 900.0, "temperature_c": 21.0, "rh_percent": 45.0}


def _co2_tol(ppm):
    return 50.0 + 0.05 * ppm  # datasheet accuracy, REFERENCE §1.4


def _setup(rig, seed=1):
    rig.setup([{"model": "scd4x", "address": ADDR, "truth": TRUTH, "seed": seed}])
    rig.advance_s(1.0)  # 1000 ms power-up
    return SCD4X(rig.bus, rig.clock)


def _enodev(fn, *args):
    e = raises(OSError, fn, *args)
    assert e.args[0] == errno.ENODEV, e.args


def check_periodic_read_within_accuracy(rig):
    scd = _setup(rig, seed=7)
    scd.start_periodic_measurement()
    for _ in range(3):
        rig.advance_s(5.0)
        co2, t, rh = scd.read_measurement()
        assert close(co2, TRUTH["co2_ppm"], _co2_tol(TRUTH["co2_ppm"])), co2
        assert close(t, TRUTH["temperature_c"], 0.8), t
        assert close(rh, TRUTH["rh_percent"], 6.0), rh


def check_data_ready_cleared_on_read(rig):
    scd = _setup(rig)
    scd.start_periodic_measurement()
    assert not scd.get_data_ready_status()
    rig.advance_s(5.0)
    assert scd.get_data_ready_status()
    scd.read_measurement()
    assert not scd.get_data_ready_status()
    _enodev(scd.read_measurement)


def check_command_refused_while_measuring(rig):
    scd = _setup(rig)
    scd.start_periodic_measurement()
    e = raises(DeviceError, scd.set_temperature_offset, 5.0)
    assert "stop periodic measurement first" in str(e)
    _enodev(rig.bus.writeto, ADDR, b"\x24\x1d\x05\xda\x29")  # the sensor NACKs it too
    rig.clock.sleep_ms(scd.stop_periodic_measurement())
    scd.set_temperature_offset(5.0)
    assert close(scd.get_temperature_offset(), 5.0, 0.01)


def check_exec_time_window(rig):
    _setup(rig)
    buf = bytearray(9)
    rig.bus.writeto(ADDR, b"\x36\x82")  # get_serial_number, exec 1 ms
    _enodev(rig.bus.readfrom_into, ADDR, buf)
    rig.bus.writeto(ADDR, b"\x36\x82")
    rig.clock.sleep_ms(1)
    rig.bus.readfrom_into(ADDR, buf)
    assert bytes(buf) == b"\xf8\x96\x31\x9f\x07\xc2\x3b\xbe\x89"


def check_crc_fault_raises_crc_error(rig):
    scd = _setup(rig)
    rig.fault(ADDR, {"kind": "crc_flip"})
    raises(CRCError, scd.get_serial_number)


def check_nack_fault_raises_enodev(rig):
    scd = _setup(rig)
    rig.fault(ADDR, {"kind": "nack"})
    _enodev(scd.get_serial_number)


def check_single_shot(rig):
    scd = _setup(rig, seed=3)
    ms = scd.measure_single_shot()
    assert 5000 <= ms <= 5001, ms
    rig.clock.sleep_ms(ms)
    co2, t, rh = scd.read_measurement()
    assert close(co2, TRUTH["co2_ppm"], _co2_tol(TRUTH["co2_ppm"])), co2
    rig.clock.sleep_ms(scd.measure_single_shot_rht_only())
    co2, t, rh = scd.read_measurement()
    assert co2 == 0 and close(t, TRUTH["temperature_c"], 0.8)


def check_wake_up_confirmation(rig):
    scd = _setup(rig)
    rig.clock.sleep_ms(scd.power_down())
    _enodev(rig.bus.writeto, ADDR, b"\x36\x82")  # asleep: NACKs everything
    scd.wake_up()
    assert scd.get_serial_number() == 0xF8969F073BBE
    rig.clock.sleep_ms(scd.power_down())
    rig.power(ADDR, "off")
    _enodev(scd.wake_up)  # no answer to the confirmation
