"""``SimNO2B43F``: an Alphasense NO2-B43F on an ISB board, as the two voltages it gives.

Not an I2C device: it is the analog source an ``SimADS1115`` converts (wire it through the
ADC's ``inputs``, see ``simulators.ads1115``). Given the true NO2 (ppb) and the sensor's
temperature (°C) it returns OP1 (WE) and OP2 (AE) in volts.

Model (all mV; T in °C; the calibration sheet is taken at 20 °C)::

    AE(T)  = AEe + AEz(T),                 AEz(T) = AEo * exp(ae_zero_tc_per_c * (T - 20))
    WE(T)  = WEe + WEz(T) + S * ppb        S = sensitivity, mV/ppb (constant in T)

and the WE zero WEz follows the AAN 803 relation of ``zero_algorithm`` exactly:

    1: WEz = nT(T) * AEz(T)                      (so the sheet's WEo is nT(20) * AEo = 0.6 AEo)
    2: WEz = kT(T) * (WEo / AEo) * AEz(T)
    3: WEz = (WEo - AEo) + k'T(T) * AEz(T)
    4: WEz = WEo + k''T(T)

with nT, kT, k'T, k''T interpolated by ``drivers.no2b43f.temperature_factor`` (one module
owns the tables). Applying algorithm ``zero_algorithm`` with this sensor's sheet therefore
recovers the truth up to the noise and the ADC's own error; another algorithm leaves a
temperature-dependent residual, as with a real sensor whose zero does not follow it.
Real sensors follow none of the four exactly (AAN 803 is a first step before
co-location), and their sensitivity also changes with temperature, which this model
leaves out because the AAN 803 algorithms do not correct it.

Parameters are drawn (seeded) around the values printed on public NO2 ISB/AFE sheets:
electronic zeros 220..320 mV, sensor zeros a few mV, sensitivity -0.20..-0.45 nA/ppb at
a board gain of -0.73 mV/nA (0.15..0.33 mV/ppb). They are rounded as a sheet prints them
(whole mV, 3-decimal sensitivities) and the model uses the rounded values, so the sheet is
exact for the simulated sensor. Noise: Gaussian, ``noise_ppb`` (1 sigma, ppb equivalent) on
each electrode; the response is instantaneous (no t90).
"""

import math
import random

from drivers.no2b43f import Calibration, SENSOR_TYPE, temperature_factor

PCB_GAIN_MV_NA = -0.73  # ISB/AFE NO2 board gain printed on Alphasense sheets
DEFAULT_NOISE_PPB = 1.5


class SimNO2B43F:
    """A simulated NO2-B43F + ISB. JSON-able keyword arguments only:

    ``seed`` draws the sensor; ``zero_algorithm`` (1..4) picks the AAN 803 zero model;
    ``noise_ppb`` is the electrode noise (1 sigma, ppb equivalent; 0 for none);
    ``ae_zero_tc_per_c`` the AE zero's exponential temperature coefficient (1/°C);
    ``sheet`` (optional) a calibration-sheet dict to use instead of drawing one.
    """

    def __init__(self, seed=0, zero_algorithm=1, noise_ppb=DEFAULT_NOISE_PPB,
                 ae_zero_tc_per_c=0.03, sheet=None):
        if zero_algorithm not in (1, 2, 3, 4) or isinstance(zero_algorithm, bool):
            raise ValueError("zero_algorithm must be 1, 2, 3 or 4, got %r" % (zero_algorithm,))
        if not isinstance(noise_ppb, (int, float)) or noise_ppb < 0:
            raise ValueError("noise_ppb must be a number >= 0, got %r" % (noise_ppb,))
        self.seed = seed
        self.zero_algorithm = zero_algorithm
        self.noise_ppb = float(noise_ppb)
        self.ae_zero_tc_per_c = float(ae_zero_tc_per_c)
        self.rng = random.Random("no2b43f:%s" % (seed,))
        self.calibration_sheet = dict(sheet) if sheet is not None else self._draw_sheet()
        cal = Calibration.from_sheet(self.calibration_sheet)
        if zero_algorithm == 2 and cal.ae_sensor_zero_mv == 0:
            raise ValueError("sheet: ae_sensor_zero_mv must not be 0 for zero_algorithm 2")
        self.cal = cal

    def _draw_sheet(self):
        r = self.rng
        ae_o = r.randint(3, 12)  # kept away from 0: algorithm 2 divides by it
        if self.zero_algorithm == 1:
            # Algorithm 1's zero model makes WEo = nT(20 °C) * AEo; printed to 0.1 mV.
            we_o = round(temperature_factor(1, 20.0) * ae_o, 1)
        else:
            we_o = r.randint(-4, 12)
        we_e = r.randint(220, 320)
        ae_e = r.randint(220, 320)
        na = round(r.uniform(-0.45, -0.20), 3)
        return {
            "serial_number": "2%08d" % r.randint(0, 99999999),
            "sensor_type": SENSOR_TYPE,
            "we_electronic_zero_mv": we_e,
            "we_sensor_zero_mv": we_o,
            "we_total_zero_mv": round(we_e + we_o, 1),
            "ae_electronic_zero_mv": ae_e,
            "ae_sensor_zero_mv": ae_o,
            "ae_total_zero_mv": ae_e + ae_o,
            "we_sensitivity_na_ppb": na,
            "pcb_gain_mv_na": PCB_GAIN_MV_NA,
            "we_sensitivity_mv_ppb": round(na * PCB_GAIN_MV_NA, 3),
        }

    # -- the zero model ----------------------------------------------------------------------
    def ae_zero_mv(self, temperature_c):
        """AE sensor zero (mV) at ``temperature_c``: AEo at 20 °C, exponential in T."""
        return self.cal.ae_sensor_zero_mv * math.exp(self.ae_zero_tc_per_c * (temperature_c - 20.0))

    def we_zero_mv(self, temperature_c):
        """WE sensor zero (mV) at ``temperature_c``, per ``zero_algorithm``'s relation."""
        c = self.cal
        f = temperature_factor(self.zero_algorithm, temperature_c)
        if self.zero_algorithm == 1:
            return f * self.ae_zero_mv(temperature_c)
        if self.zero_algorithm == 2:
            return f * (c.we_sensor_zero_mv / c.ae_sensor_zero_mv) * self.ae_zero_mv(temperature_c)
        if self.zero_algorithm == 3:
            return (c.we_sensor_zero_mv - c.ae_sensor_zero_mv) + f * self.ae_zero_mv(temperature_c)
        return c.we_sensor_zero_mv + f

    # -- outputs -------------------------------------------------------------------------------
    def electrode_mv(self, no2_ppb, temperature_c):
        """(WE, AE) in mV for the true ``no2_ppb`` and ``temperature_c``, with noise."""
        c = self.cal
        s = c.we_sensitivity_mv_ppb
        we = c.we_electronic_zero_mv + self.we_zero_mv(temperature_c) + s * no2_ppb
        ae = c.ae_electronic_zero_mv + self.ae_zero_mv(temperature_c)
        if self.noise_ppb > 0:
            we += self.rng.gauss(0.0, self.noise_ppb * abs(s))
            ae += self.rng.gauss(0.0, self.noise_ppb * abs(s))
        return we, ae

    def voltages_v(self, no2_ppb, temperature_c):
        """(WE, AE) in volts at the ADC pins."""
        we, ae = self.electrode_mv(no2_ppb, temperature_c)
        return we / 1000.0, ae / 1000.0
