"""Alphasense NO2-B43F (4-electrode NO2 sensor on an ISB/AFE board): voltages to ppb.

Pure conversions after Alphasense AAN 803 (REFERENCE.md §3.2, §3.3); no I/O. The board
gives two voltages, OP1 = working electrode (WE) and OP2 = auxiliary electrode (AE), read
here in mV (e.g. by ``drivers.ads1115``). A per-sensor calibration sheet gives the
electronic offsets (WEe, AEe: board without sensor), the sensor zeros (WEo, AEo: zero air,
20 °C), their totals (WET = WEe + WEo, AET) and the sensitivity (nA/ppb, and mV/ppb =
nA/ppb × board gain mV/nA; NO2 is reduced at the WE, negative current, and the board's
negative gain makes mV/ppb positive as printed).

Temperature correction (the four algorithms, WEu/AEu = measured mV)::

    1: WEc = (WEu - WEe) - nT  * (AEu - AEe)
    2: WEc = (WEu - WEe) - kT  * (WEo / AEo) * (AEu - AEe)
    3: WEc = (WEu - WEe) - (WEo - AEo) - k'T * (AEu - AEe)
    4: WEc = (WEu - WEe) - WEo - k''T
    NO2 [ppb] = WEc / sensitivity [mV/ppb]

The factors are tabulated every 10 °C from -30 to 50 °C (the sensor's rated range). This
module interpolates linearly between the points and clamps outside -30..50 °C (it uses
the end value): extrapolating the steep 40..50 °C segment would invent corrections the
table does not support. AAN 803 corrections are only a first step: a deployed sensor
still needs co-location against a reference analyser.

The calibration-sheet dict uses the field names of Alphasense's sheets as public
pipelines spell them (``we_electronic_zero_mv``, ``we_sensitivity_mv_ppb``, ...), so a
sheet transcribed from the PDF, or exported by another tool, loads as it is.

Runs on MicroPython and CPython.
"""

# REFERENCE §3.2, NO2-B43F rows; index i is -30 + 10*i °C.
TEMPERATURES_C = (-30, -20, -10, 0, 10, 20, 30, 40, 50)
NT = (1.3, 1.3, 1.3, 1.3, 1.0, 0.6, 0.4, 0.2, -1.5)  # algorithm 1
KT = (2.2, 2.2, 2.2, 2.2, 1.7, 1.0, 0.7, 0.3, -2.5)  # algorithm 2
K1T = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.4, -0.1, -4.0)  # algorithm 3 (k'T)
K2T = (7.0, 7.0, 7.0, 7.0, 4.0, 0.0, 0.5, 5.0, 67.0)  # algorithm 4 (k''T, mV)
_TABLES = {1: NT, 2: KT, 3: K1T, 4: K2T}
ALGORITHMS = (1, 2, 3, 4)

# REFERENCE §3.3: µg/m³ = ppb × 12.187 × M / (273.15 + T) at 1013.25 hPa.
M_NO2_G_MOL = 46.0055
_UGM3_CONSTANT = 12.187
REFERENCE_PRESSURE_HPA = 1013.25
UK_REPORTING_TEMPERATURE_C = 20.0  # UK/EU reporting basis: 20 °C, 1013 hPa

SENSOR_TYPE = "NO2-B43F"
# Fields this module reads, then ones it accepts and ignores (other tools' sheets).
SHEET_FIELDS = (
    "we_electronic_zero_mv", "we_sensor_zero_mv", "we_total_zero_mv",
    "ae_electronic_zero_mv", "ae_sensor_zero_mv", "ae_total_zero_mv",
    "we_sensitivity_na_ppb", "pcb_gain_mv_na", "we_sensitivity_mv_ppb",
)
_SHEET_OTHER = ("serial_number", "sensor_type", "pcb_gain",
                "we_cross_sensitivity_no2_na_ppb", "we_cross_sensitivity_no2_mv_ppb")
_ZERO_SUM_TOLERANCE_MV = 1.0  # sheets print whole mV: WEe + WEo may differ from WET by 1
_SENSITIVITY_TOLERANCE = 0.02  # relative, + 0.001 mV/ppb for the sheet's 3 decimals


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
    table = _TABLES.get(algorithm) if not isinstance(algorithm, bool) else None
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


class Calibration:
    """One sensor's calibration sheet, validated: offsets and zeros in mV, sensitivity in
    mV/ppb. Build it with ``Calibration.from_sheet(dict)``; ``to_sheet()`` gives it back."""

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
    def from_sheet(cls, sheet):
        """A ``Calibration`` from a calibration-sheet dict.

        Needs ``we_electronic_zero_mv`` and ``ae_electronic_zero_mv``; each sensor zero as
        ``*_sensor_zero_mv`` or ``*_total_zero_mv`` (if both, they must agree within 1 mV);
        the sensitivity as ``we_sensitivity_mv_ppb`` or ``we_sensitivity_na_ppb`` ×
        ``pcb_gain_mv_na`` (if all three, within 2 %). ``sensor_type``, if given, must be
        NO2-B43F (the temperature tables are that sensor's). Numbers may be numeric strings.
        Raises ``ValueError`` naming the field (missing, not a number, inconsistent, unknown).
        """
        if not isinstance(sheet, dict):
            raise ValueError("sheet must be a dict of calibration-sheet fields, got %r" % (sheet,))
        for key in sheet:
            if key not in SHEET_FIELDS and key not in _SHEET_OTHER:
                raise ValueError("unknown calibration-sheet field %r; known: %s"
                                 % (key, ", ".join(SHEET_FIELDS + _SHEET_OTHER)))
        kind = sheet.get("sensor_type")
        if kind is not None:
            norm = str(kind).upper().replace("-", "").replace(" ", "").replace("_", "")
            if norm != "NO2B43F":
                raise ValueError("sensor_type must be %s (these temperature tables are its), got %r"
                                 % (SENSOR_TYPE, kind))

        def get(name):
            v = sheet.get(name)
            return None if v is None or v == "" else _finite(name, v)

        zeros = {}
        for side in ("we", "ae"):
            e = get(side + "_electronic_zero_mv")
            if e is None:
                raise ValueError("%s_electronic_zero_mv is missing from the sheet" % side)
            o = get(side + "_sensor_zero_mv")
            t = get(side + "_total_zero_mv")
            if o is None and t is None:
                raise ValueError("%s_sensor_zero_mv (or %s_total_zero_mv) is missing from the sheet"
                                 % (side, side))
            if o is None:
                o = t - e
            elif t is not None and abs(e + o - t) > _ZERO_SUM_TOLERANCE_MV:
                raise ValueError("%s_total_zero_mv %r is not %s_electronic_zero_mv + "
                                 "%s_sensor_zero_mv (%r)" % (side, t, side, side, e + o))
            zeros[side] = (e, o)

        mv = get("we_sensitivity_mv_ppb")
        na = get("we_sensitivity_na_ppb")
        gain = get("pcb_gain_mv_na")
        if gain is None:
            gain = get("pcb_gain")
        if mv is None:
            if na is None or gain is None:
                raise ValueError("we_sensitivity_mv_ppb (or we_sensitivity_na_ppb and "
                                 "pcb_gain_mv_na) is missing from the sheet")
            mv = na * gain
        elif na is not None and gain is not None:
            if abs(na * gain - mv) > _SENSITIVITY_TOLERANCE * abs(mv) + 0.001:
                raise ValueError("we_sensitivity_mv_ppb %r is not we_sensitivity_na_ppb x "
                                 "pcb_gain_mv_na (%r)" % (mv, na * gain))
        return cls(zeros["we"][0], zeros["we"][1], zeros["ae"][0], zeros["ae"][1], mv,
                   sheet.get("serial_number"))

    def to_sheet(self):
        """The calibration as a sheet dict (``from_sheet`` accepts it)."""
        sheet = {
            "sensor_type": SENSOR_TYPE,
            "we_electronic_zero_mv": self.we_electronic_zero_mv,
            "we_sensor_zero_mv": self.we_sensor_zero_mv,
            "we_total_zero_mv": self.we_electronic_zero_mv + self.we_sensor_zero_mv,
            "ae_electronic_zero_mv": self.ae_electronic_zero_mv,
            "ae_sensor_zero_mv": self.ae_sensor_zero_mv,
            "ae_total_zero_mv": self.ae_electronic_zero_mv + self.ae_sensor_zero_mv,
            "we_sensitivity_mv_ppb": self.we_sensitivity_mv_ppb,
        }
        if self.serial_number is not None:
            sheet["serial_number"] = self.serial_number
        return sheet


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


def ugm3_to_ppb(ugm3, temperature_c=UK_REPORTING_TEMPERATURE_C, pressure_hpa=REFERENCE_PRESSURE_HPA):
    """The inverse of ``ppb_to_ugm3`` (e.g. the 200 µg/m³ hourly limit ≈ 104.6 ppb)."""
    return _finite("ugm3", ugm3) / ppb_to_ugm3(1.0, temperature_c, pressure_hpa)
