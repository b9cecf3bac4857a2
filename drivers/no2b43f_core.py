"""The NO2-B43F conversions a node samples with: the AAN 803 temperature correction, ppb and
µg/m³, and the calibration they use (``CalibrationCore``: the sheet's offsets, zeros and
sensitivity, validated as numbers). REFERENCE §3.2, §3.3; the algorithms and their sources
are in ``drivers.no2b43f``.

``drivers.no2b43f`` re-exports every public name here and adds reading and writing whole
calibration sheets (``Calibration.from_sheet``, ``to_sheet``: the build and the gateway use
them) and ``ugm3_to_ppb``; a node imports only this module, so the rest takes no heap on it
(docs/benchmarks.md, heap). Its configuration holds the sheet already normalised by the build
(``civicedge.firmware_build.apply_calibration``) and checked by ``app.config``.

Pure conversions, no I/O; runs on MicroPython and CPython.
"""

# REFERENCE §3.2, NO2-B43F rows; index i is -30 + 10*i °C.
TEMPERATURES_C = (-30, -20, -10, 0, 10, 20, 30, 40, 50)
NT = (1.3, 1.3, 1.3, 1.3, 1.0, 0.6, 0.4, 0.2, -1.5)  # algorithm 1
KT = (2.2, 2.2, 2.2, 2.2, 1.7, 1.0, 0.7, 0.3, -2.5)  # algorithm 2
K1T = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.4, -0.1, -4.0)  # algorithm 3 (k'T)
K2T = (7.0, 7.0, 7.0, 7.0, 4.0, 0.0, 0.5, 5.0, 67.0)  # algorithm 4 (k''T, mV)
_TABLES = (NT, KT, K1T, K2T)  # algorithm 1..4
ALGORITHMS = (1, 2, 3, 4)

# REFERENCE §3.3: µg/m³ = ppb × 12.187 × M / (273.15 + T) at 1013.25 hPa.
M_NO2_G_MOL = 46.0055
_UGM3_CONSTANT = 12.187
REFERENCE_PRESSURE_HPA = 1013.25
UK_REPORTING_TEMPERATURE_C = 20.0  # UK/EU reporting basis: 20 °C, 1013 hPa


def _finite(name, x):
    """``x`` as a float, or ``ValueError`` naming ``name`` (numbers and numeric strings)."""
    if isinstance(x, bool) or x is None:
        raise ValueError("%s must be a number, got %r" % (name, x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError("%s must be a number, got %r" % (name, x))
    if v - v != 0:  # NaN or infinity (portable: no math.isfinite needed)
        raise ValueError("%s must be finite, got %r" % (name, x))
    return v


def temperature_factor(algorithm, temperature_c):
    """nT (1), kT (2), k'T (3) or k''T (4, in mV) at ``temperature_c``.

    Linear interpolation between the 10 °C table points; clamped to the -30 °C / 50 °C
    values outside that range. ``ValueError`` names ``algorithm`` or ``temperature_c``.
    """
    table = _TABLES[int(algorithm) - 1] if algorithm in ALGORITHMS and not isinstance(algorithm, bool) else None
    if table is None:
        raise ValueError("algorithm must be 1, 2, 3 or 4, got %r" % (algorithm,))
    t = _finite("temperature_c", temperature_c)
    if t <= TEMPERATURES_C[0]:
        return table[0]
    if t >= TEMPERATURES_C[-1]:
        return table[-1]
    i = int((t - TEMPERATURES_C[0]) // 10)
    if i >= len(table) - 1:
        i = len(table) - 2
    frac = (t - TEMPERATURES_C[i]) / 10.0
    return table[i] + (table[i + 1] - table[i]) * frac


class CalibrationCore:
    """One sensor's calibration, validated: offsets and zeros in mV, sensitivity in mV/ppb
    (each argument ``ValueError`` naming it unless a finite number; the sensitivity not 0).
    ``drivers.no2b43f.Calibration`` adds reading and writing whole sheets."""

    def __init__(self, we_electronic_zero_mv, we_sensor_zero_mv, ae_electronic_zero_mv,
                 ae_sensor_zero_mv, we_sensitivity_mv_ppb, serial_number=None):
        self.we_electronic_zero_mv = _finite("we_electronic_zero_mv", we_electronic_zero_mv)
        self.we_sensor_zero_mv = _finite("we_sensor_zero_mv", we_sensor_zero_mv)
        self.ae_electronic_zero_mv = _finite("ae_electronic_zero_mv", ae_electronic_zero_mv)
        self.ae_sensor_zero_mv = _finite("ae_sensor_zero_mv", ae_sensor_zero_mv)
        self.we_sensitivity_mv_ppb = _finite("we_sensitivity_mv_ppb", we_sensitivity_mv_ppb)
        if self.we_sensitivity_mv_ppb == 0:
            raise ValueError("we_sensitivity_mv_ppb must not be 0")
        self.serial_number = serial_number

    @classmethod
    def from_fields(cls, fields):
        """A calibration from a dict of exactly its fields (``we_electronic_zero_mv``,
        ``we_sensor_zero_mv``, ``ae_electronic_zero_mv``, ``ae_sensor_zero_mv``,
        ``we_sensitivity_mv_ppb``, optional ``serial_number``): a normalised sheet, as a node's
        configuration holds it. ``KeyError`` for a missing field, ``ValueError`` as the class."""
        return cls(fields["we_electronic_zero_mv"], fields["we_sensor_zero_mv"], fields["ae_electronic_zero_mv"],
                   fields["ae_sensor_zero_mv"], fields["we_sensitivity_mv_ppb"], fields.get("serial_number"))


def we_corrected_mv(algorithm, we_mv, ae_mv, temperature_c, cal):
    """The temperature-corrected WE signal WEc in mV (AAN 803 algorithm 1..4).

    ``we_mv``/``ae_mv``: the board's OP1/OP2 in mV; ``temperature_c``: the sensor's
    temperature; ``cal``: a ``Calibration``. Raises ``ValueError`` naming ``algorithm``,
    ``we_mv``, ``ae_mv``, ``temperature_c``, or ``ae_sensor_zero_mv`` (algorithm 2 divides
    by AEo, so it cannot be used with a sheet whose AEo is 0).
    """
    factor = temperature_factor(algorithm, temperature_c)
    we = _finite("we_mv", we_mv) - cal.we_electronic_zero_mv
    ae = _finite("ae_mv", ae_mv) - cal.ae_electronic_zero_mv
    if algorithm == 1:
        return we - factor * ae
    if algorithm == 2:
        if cal.ae_sensor_zero_mv == 0:
            raise ValueError("ae_sensor_zero_mv is 0: algorithm 2 needs WEo/AEo; use 1, 3 or 4")
        return we - factor * (cal.we_sensor_zero_mv / cal.ae_sensor_zero_mv) * ae
    if algorithm == 3:
        return we - (cal.we_sensor_zero_mv - cal.ae_sensor_zero_mv) - factor * ae
    return we - cal.we_sensor_zero_mv - factor


def no2_ppb(algorithm, we_mv, ae_mv, temperature_c, cal):
    """NO2 in ppb: ``we_corrected_mv(...) / cal.we_sensitivity_mv_ppb``. May be slightly
    negative in clean air (noise, zero error): not clipped, so averages stay unbiased.
    Raises ``ValueError`` as ``we_corrected_mv``."""
    return we_corrected_mv(algorithm, we_mv, ae_mv, temperature_c, cal) / cal.we_sensitivity_mv_ppb


def ppb_to_ugm3(ppb, temperature_c=UK_REPORTING_TEMPERATURE_C, pressure_hpa=REFERENCE_PRESSURE_HPA):
    """NO2 mass concentration in µg/m³ for ``ppb`` at ``temperature_c`` and ``pressure_hpa``.

    µg/m³ = ppb × 12.187 × 46.0055 / (273.15 + T) × p / 1013.25 (REFERENCE §3.3). The
    defaults are the UK/EU reporting basis (20 °C, 1013 hPa): 1 ppb = 1.91 µg/m³. Raises
    ``ValueError`` naming ``ppb``, ``temperature_c`` or ``pressure_hpa``.
    """
    p = _finite("ppb", ppb)
    t = _finite("temperature_c", temperature_c)
    hpa = _finite("pressure_hpa", pressure_hpa)
    if t <= -273.15:
        raise ValueError("temperature_c must be above absolute zero, got %r" % (temperature_c,))
    if hpa <= 0:
        raise ValueError("pressure_hpa must be > 0, got %r" % (pressure_hpa,))
    return p * _UGM3_CONSTANT * M_NO2_G_MOL / (273.15 + t) * hpa / REFERENCE_PRESSURE_HPA
