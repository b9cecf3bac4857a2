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

The node's part (the corrections, ppb and µg/m³, ``CalibrationCore``) is
``drivers.no2b43f_core``, re-exported here; a node imports only that (docs/benchmarks.md, heap).

Runs on MicroPython and CPython.
"""

from drivers.no2b43f_core import (  # noqa: F401  (re-exported: the module's public names)
    ALGORITHMS, K1T, K2T, KT, M_NO2_G_MOL, NT, REFERENCE_PRESSURE_HPA, TEMPERATURES_C, UK_REPORTING_TEMPERATURE_C,
    CalibrationCore, _finite, no2_ppb, ppb_to_ugm3, temperature_factor, we_corrected_mv)

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


class Calibration(CalibrationCore):
    """One sensor's calibration sheet, validated: offsets and zeros in mV, sensitivity in
    mV/ppb. Build it with ``Calibration.from_sheet(dict)``; ``to_sheet()`` gives it back."""

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


def ugm3_to_ppb(ugm3, temperature_c=UK_REPORTING_TEMPERATURE_C, pressure_hpa=REFERENCE_PRESSURE_HPA):
    """The inverse of ``ppb_to_ugm3`` (e.g. the 200 µg/m³ hourly limit ≈ 104.6 ppb)."""
    return _finite("ugm3", ugm3) / ppb_to_ugm3(1.0, temperature_c, pressure_hpa)
