"""ADS1115 + NO2-B43F behaviour every rig must give (CPython LocalRig and the MicroPython
unix port over the simulator socket). MicroPython-compatible: no pytest, no f-strings."""

import errno

from drivers.ads1115 import ADS1115, lsb_v
from drivers.errors import DeviceError
from drivers.no2b43f import Calibration, no2_ppb
from tests.behaviour.harness import close, raises

_A = 0x48


def _adc(rig, inputs, truth=None, **kw):
    spec = {"model": "ads1115", "address": _A, "seed": 2, "inputs": inputs,
            "data_rate_error": 0.0}
    if truth is not None:
        spec["truth"] = truth
    spec.update(kw)
    rig.setup([spec])
    return ADS1115(rig.bus, rig.clock, _A)


def check_reset_config_reads_0x8583(rig):
    adc = _adc(rig, {"0": 1.0})
    assert adc.read_config() == 0x8583, hex(adc.read_config())
    assert adc.read_conversion_raw() == 0


def check_single_shot_read(rig):
    adc = _adc(rig, {"0": 1.2, "1": 0.4})
    v = adc.read_single_shot_v("AIN0", 4.096, 128)
    assert close(v, 1.2, 4 * lsb_v(4.096)), v
    v = adc.read_single_shot_v("AIN0-AIN1", 1.024, 8)
    assert close(v, 0.8, 4 * lsb_v(1.024) + 1e-4), v


def check_os_polling(rig):
    adc = _adc(rig, {"0": 0.1})
    ms = adc.start_single_shot("AIN0", 0.512, 8)
    assert ms == 140, ms  # the slowest chip in spec: 125 ms / 0.9 + 25 µs, + 1 tick
    assert not adc.is_conversion_ready()  # OS reads 0 while converting
    rig.clock.sleep_ms(ms)
    assert adc.is_conversion_ready()  # and 1 after 1/DR
    assert close(adc.read_conversion_raw() * lsb_v(0.512), 0.1, 4 * lsb_v(0.512)), adc.read_conversion_raw()


def check_no2_through_electrode(rig):
    # Electrode noise off; the zero follows algorithm 1. Error bound at 25 °C (nT = 0.5):
    # ADC <= 3.5 LSB + 0.01 % gain per channel (< 0.11 mV) -> (0.11 + 0.5 * 0.11) / 0.146
    # (the lowest sensitivity drawn) = 1.2 ppb.
    adc = _adc(rig, {"electrode": {"zero_algorithm": 1, "noise_ppb": 0}, "we": 0, "ae": 1},
               truth={"no2_ppb": 40.0, "temperature_c": 25.0})
    cal = Calibration.from_sheet(rig.attr(_A, "electrode_sheet"))
    we_mv = adc.read_single_shot_v("AIN0", 0.512, 8) * 1000
    ae_mv = adc.read_single_shot_v("AIN1", 0.512, 8) * 1000
    ppb = no2_ppb(1, we_mv, ae_mv, 25.0, cal)
    assert close(ppb, 40.0, 1.2), ppb


def check_nack_fault_is_enodev(rig):
    adc = _adc(rig, {"0": 1.0})
    rig.fault(_A, {"kind": "nack"})
    e = raises(OSError, adc.read_single_shot_v, "AIN0", 4.096, 128)
    assert e.errno == errno.ENODEV, e
    rig.clear_faults(_A)
    assert close(adc.read_single_shot_v("AIN0", 4.096, 128), 1.0, 4 * lsb_v(4.096) + 1e-4)


def check_power_cycle_mid_conversion_is_device_error(rig):
    adc = _adc(rig, {"0": 1.0})
    adc.start_single_shot("AIN0", 0.512, 8)
    rig.power(_A, "cycle")
    raises(DeviceError, adc.wait_conversion, 8)
