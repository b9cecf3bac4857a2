"""The NO2 chain: simulated NO2-B43F on an ISB -> SimADS1115 -> ADS1115 driver -> AAN 803
algorithm with the sensor's own calibration sheet -> the truth ppb.

Tolerance (derived, not tuned). The electrode model follows the chosen algorithm's zero
relation exactly (simulators/no2b43f.py), so with electrode noise off the only errors are
the ADC's, per channel at ±0.512 V (LSB = 15.625 µV):
  offset <= 1 LSB, rounding <= 0.5 LSB, noise <= 4 sigma = 2 LSB at 8 SPS  -> 3.5 LSB
  gain error <= 0.01 % of the pin voltage (< 0.5 V)                         -> 0.05 mV
The corrected WE is WE - m * AE (plus constants), m = nT, kT*WEo/AEo, k'T or 0, so
  |error_ppb| <= (E_we + |m| * E_ae) / sensitivity_mv_ppb.
"""

import json

import pytest

from drivers import ads1115 as ads
from drivers import no2b43f as no2
from simulators.ads1115 import SimADS1115
from simulators.clock import VirtualClock
from simulators.i2c import SimI2CBus

FSR_V = 0.512
SPS = 8
TEMPERATURES_C = (-10.0, -3.0, 0.0, 7.5, 20.0, 26.0, 33.0, 40.0)
PPBS = (0.0, 12.0, 40.0, 104.6, 150.0)


def chain(zero_algorithm, seed, noise_ppb=0.0):
    clock = VirtualClock()
    bus = SimI2CBus(clock)
    spec_inputs = json.loads(json.dumps({
        "electrode": {"zero_algorithm": zero_algorithm, "noise_ppb": noise_ppb},
        "we": 0, "ae": 1}))
    dev = bus.attach(SimADS1115(inputs=spec_inputs, seed=seed, truth={}))
    cal = no2.Calibration.from_sheet(dev.electrode_sheet)
    return dev, ads.ADS1115(bus, clock), cal


def read_mv(adc):
    we = adc.read_single_shot_v("AIN0", FSR_V, SPS) * 1000.0
    ae = adc.read_single_shot_v("AIN1", FSR_V, SPS) * 1000.0
    return we, ae


def error_bound_ppb(algorithm, t, cal, we_mv, ae_mv):
    e_lsb_mv = 3.5 * ads.lsb_v(FSR_V) * 1000.0
    e_we = e_lsb_mv + 1e-4 * abs(we_mv)
    e_ae = e_lsb_mv + 1e-4 * abs(ae_mv)
    f = no2.temperature_factor(algorithm, t)
    m = {1: f, 2: f * cal.we_sensor_zero_mv / cal.ae_sensor_zero_mv, 3: f, 4: 0.0}[algorithm]
    return (e_we + abs(m) * e_ae) / abs(cal.we_sensitivity_mv_ppb)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("algorithm", [1, 2, 3, 4])
def test_matching_algorithm_recovers_truth(algorithm, seed):
    dev, adc, cal = chain(algorithm, seed)
    worst = 0.0
    for t in TEMPERATURES_C:
        for ppb in PPBS:
            dev.set_truth({"no2_ppb": ppb, "temperature_c": t})
            we, ae = read_mv(adc)
            got = no2.no2_ppb(algorithm, we, ae, t, cal)
            bound = error_bound_ppb(algorithm, t, cal, we, ae)
            assert abs(got - ppb) <= bound, (t, ppb, got, bound)
            worst = max(worst, bound)
    assert worst < 5.0  # and the bound itself stays useful (< 5 ppb) for these sheets


def test_electrode_voltages_fit_the_0512_range():
    # The ±0.512 V range of REFERENCE §3.1's 0xC903/0xD903 must hold the signals over the
    # sensor's whole rated range, including the k''T = 67 mV WE zero rise at 50 °C.
    for algorithm in (1, 2, 3, 4):
        for seed in range(20):
            dev, adc, cal = chain(algorithm, seed)
            for t in (-30.0, 20.0, 50.0):
                we, ae = dev.electrode.electrode_mv(200.0, t)
                assert 0 < we < 500 and 0 < ae < 500, (algorithm, seed, t, we, ae)


def test_noisy_electrode_recovers_truth_on_average():
    dev, adc, cal = chain(1, seed=5, noise_ppb=1.5)
    dev.set_truth({"no2_ppb": 40.0, "temperature_c": 20.0})
    values = [no2.no2_ppb(1, *read_mv(adc), 20.0, cal) for _ in range(25)]
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    # per reading sigma = 1.5 ppb * sqrt(1 + nT(20)^2) = 1.75 ppb; the mean of 25 is within
    # 4 * 1.75 / 5 = 1.4 ppb plus the ADC bound
    assert abs(mean - 40.0) <= 1.4 + error_bound_ppb(1, 20.0, cal, 300, 300)
    assert 0.8 < sd < 3.0  # the noise is there, and near its stated size


def test_other_algorithm_leaves_a_temperature_residual():
    # A sensor whose zero follows k''T (algorithm 4) read with algorithm 1 at 45 °C:
    # WE zero = WEo + 36 mV but algorithm 1 removes nT * AEz = -0.65 * AEz, so the
    # residual is >= 36 - 4 mV (WEo >= -4) -> > 100 ppb. The sim is not "any algorithm works".
    dev, adc, cal = chain(4, seed=1)
    dev.set_truth({"no2_ppb": 30.0, "temperature_c": 45.0})
    we, ae = read_mv(adc)
    assert abs(no2.no2_ppb(4, we, ae, 45.0, cal) - 30.0) <= error_bound_ppb(4, 45.0, cal, we, ae)
    assert abs(no2.no2_ppb(1, we, ae, 45.0, cal) - 30.0) > 50.0


def test_through_to_ugm3_at_the_uk_basis():
    dev, adc, cal = chain(3, seed=4)
    dev.set_truth({"no2_ppb": 104.6, "temperature_c": 12.0})
    ppb = no2.no2_ppb(3, *read_mv(adc), 12.0, cal)
    # 104.6 ppb is the 200 µg/m³ hourly limit at 20 °C / 1013 hPa (REFERENCE §3.3)
    assert no2.ppb_to_ugm3(ppb) == pytest.approx(200.0, abs=1.91 * error_bound_ppb(3, 12.0, cal, 400, 400))
