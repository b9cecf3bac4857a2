"""NO2-B43F (AAN 803) conversion and NO2 unit conversions, on hand-worked numbers."""

import math

import pytest

from drivers import no2b43f as no2

# A sheet in the form public Alphasense sheets take (values of the NO2-B43F example in a
# public ISB driver: gain -0.73 mV/nA, -0.424 nA/ppb -> 0.31 mV/ppb), with WEo/AEo changed
# so that algorithm 2's ratio is not 1.
SHEET = {
    "serial_number": "202000001",
    "sensor_type": "NO2-B43F",
    "we_electronic_zero_mv": 222,
    "we_sensor_zero_mv": 6,
    "we_total_zero_mv": 228,
    "ae_electronic_zero_mv": 212,
    "ae_sensor_zero_mv": 4,
    "ae_total_zero_mv": 216,
    "we_sensitivity_na_ppb": -0.424,
    "pcb_gain_mv_na": -0.73,
    "we_sensitivity_mv_ppb": 0.31,
}


@pytest.fixture
def cal():
    return no2.Calibration.from_sheet(SHEET)


# Worked example: WEu = 250.0 mV, AEu = 220.0 mV at 25 °C.
#   WEu - WEe = 250 - 222 = 28.0 mV;  AEu - AEe = 220 - 212 = 8.0 mV
#   25 °C is half-way between the 20 and 30 °C columns:
#     nT  = (0.6 + 0.4) / 2 = 0.5;  kT = (1.0 + 0.7) / 2 = 0.85
#     k'T = (1.0 + 0.4) / 2 = 0.7;  k''T = (0 + 0.5) / 2 = 0.25 mV
#   1: 28 - 0.5 * 8                 = 24.0 mV   -> 24.0 / 0.31 = 77.419 ppb
#   2: 28 - 0.85 * (6 / 4) * 8      = 28 - 10.2 = 17.8 mV  -> 57.419 ppb
#   3: 28 - (6 - 4) - 0.7 * 8       = 28 - 2 - 5.6 = 20.4 mV -> 65.806 ppb
#   4: 28 - 6 - 0.25                = 21.75 mV  -> 70.161 ppb
@pytest.mark.parametrize(
    "algorithm,wec_mv,ppb",
    [(1, 24.0, 77.419), (2, 17.8, 57.419), (3, 20.4, 65.806), (4, 21.75, 70.161)],
)
def test_algorithms_on_worked_numbers(cal, algorithm, wec_mv, ppb):
    assert no2.we_corrected_mv(algorithm, 250.0, 220.0, 25.0, cal) == pytest.approx(wec_mv)
    assert no2.no2_ppb(algorithm, 250.0, 220.0, 25.0, cal) == pytest.approx(ppb, abs=5e-4)


# At 20 °C every factor is its table value: nT 0.6, kT 1.0, k'T 1.0, k''T 0, and in zero air
# at 20 °C (WEu = WET = 228, AEu = AET = 216) algorithms 2, 3 and 4 give exactly 0:
#   2: 6 - 1.0 * (6/4) * 4 = 0;  3: 6 - 2 - 1.0 * 4 = 0;  4: 6 - 6 - 0 = 0
#   1: 6 - 0.6 * 4 = 3.6 mV (algorithm 1 assumes WEo = nT(20) * AEo, not true of this sheet)
def test_zero_air_at_20c(cal):
    assert no2.we_corrected_mv(1, 228, 216, 20, cal) == pytest.approx(3.6)
    for algorithm in (2, 3, 4):
        assert no2.we_corrected_mv(algorithm, 228, 216, 20, cal) == pytest.approx(0.0, abs=1e-12)


def test_interpolation_between_table_points():
    assert no2.temperature_factor(1, 5.0) == pytest.approx(1.15)  # (1.3 + 1.0) / 2
    assert no2.temperature_factor(1, 12.5) == pytest.approx(0.9)  # 1.0 - 0.25 * 0.4
    assert no2.temperature_factor(4, 45.0) == pytest.approx(36.0)  # (5 + 67) / 2
    assert no2.temperature_factor(3, 35.0) == pytest.approx(0.15)  # (0.4 - 0.1) / 2
    assert no2.temperature_factor(2, -5.0) == pytest.approx(2.2)  # flat below 0 °C
    for i, t in enumerate(no2.TEMPERATURES_C):  # exact at every table point
        assert no2.temperature_factor(1, t) == no2.NT[i]
        assert no2.temperature_factor(2, t) == no2.KT[i]
        assert no2.temperature_factor(3, t) == no2.K1T[i]
        assert no2.temperature_factor(4, t) == no2.K2T[i]


def test_clamped_outside_minus30_to_50():
    assert no2.temperature_factor(1, -40.0) == 1.3
    assert no2.temperature_factor(1, 60.0) == -1.5
    assert no2.temperature_factor(4, 80.0) == 67.0
    assert no2.temperature_factor(3, 50.0001) == -4.0


@pytest.mark.parametrize("t,factor", [(20.0, 1.91), (25.0, 1.88), (0.0, 2.05)])
def test_ppb_to_ugm3_reference_factors(t, factor):
    # 12.187 * 46.0055 / 293.15 = 1.9126; / 298.15 = 1.8805; / 273.15 = 2.0526
    assert round(no2.ppb_to_ugm3(1.0, t), 2) == factor


def test_ppb_to_ugm3_default_is_uk_basis_and_pressure_scales():
    assert no2.ppb_to_ugm3(1.0) == no2.ppb_to_ugm3(1.0, 20.0, 1013.25)
    assert no2.ppb_to_ugm3(100.0, 20.0, 900.0) == pytest.approx(no2.ppb_to_ugm3(100.0) * 900 / 1013.25)
    # the hourly and annual limits of REFERENCE §3.3
    assert round(no2.ugm3_to_ppb(200.0), 1) == 104.6
    assert round(no2.ugm3_to_ppb(40.0), 1) == 20.9


def test_unit_conversion_value_errors():
    with pytest.raises(ValueError, match="pressure_hpa"):
        no2.ppb_to_ugm3(1.0, 20.0, 0.0)
    with pytest.raises(ValueError, match="temperature_c"):
        no2.ppb_to_ugm3(1.0, -300.0)
    with pytest.raises(ValueError, match="ppb"):
        no2.ppb_to_ugm3(float("nan"))


def test_sheet_zero_from_total_and_sensitivity_from_na_and_gain():
    sheet = {"we_electronic_zero_mv": "222", "we_total_zero_mv": 230,
             "ae_electronic_zero_mv": 212, "ae_total_zero_mv": 220,
             "we_sensitivity_na_ppb": -0.424, "pcb_gain_mv_na": -0.73}
    c = no2.Calibration.from_sheet(sheet)
    assert (c.we_sensor_zero_mv, c.ae_sensor_zero_mv) == (8.0, 8.0)
    assert c.we_sensitivity_mv_ppb == pytest.approx(0.30952)  # -0.424 * -0.73
    again = no2.Calibration.from_sheet(c.to_sheet())
    assert again.to_sheet() == c.to_sheet()


def test_other_tools_sheet_fields_accepted():
    # South Coast Science spell the gain "pcb_gain" and carry cross-sensitivity fields
    sheet = dict(SHEET)
    del sheet["pcb_gain_mv_na"]
    sheet.update({"pcb_gain": -0.73, "we_cross_sensitivity_no2_na_ppb": "n/a", "sensor_type": "NO2B43F"})
    assert no2.Calibration.from_sheet(sheet).we_sensitivity_mv_ppb == 0.31


@pytest.mark.parametrize(
    "change,field",
    [
        ({"we_total_zero_mv": 240}, "we_total_zero_mv"),  # 222 + 6 != 240
        ({"we_sensitivity_mv_ppb": 0.5}, "we_sensitivity_mv_ppb"),  # != -0.424 * -0.73
        ({"ae_electronic_zero_mv": None}, "ae_electronic_zero_mv"),
        ({"ae_sensor_zero_mv": None, "ae_total_zero_mv": None}, "ae_sensor_zero_mv"),
        ({"we_sensor_zero_mv": "abc"}, "we_sensor_zero_mv"),
        ({"we_electronic_zero_mv": float("inf")}, "we_electronic_zero_mv"),
        ({"sensor_type": "OX-B431"}, "sensor_type"),
        ({"we_zero_mv": 3}, "we_zero_mv"),  # unknown field (a typo) is refused
        ({"we_sensitivity_mv_ppb": 0, "we_sensitivity_na_ppb": None}, "we_sensitivity_mv_ppb"),
    ],
)
def test_bad_sheet_names_the_field(change, field):
    sheet = dict(SHEET)
    sheet.update(change)
    sheet = {k: v for k, v in sheet.items() if v is not None}
    with pytest.raises(ValueError, match=field):
        no2.Calibration.from_sheet(sheet)


def test_conversion_value_errors(cal):
    with pytest.raises(ValueError, match="algorithm"):
        no2.no2_ppb(5, 250, 220, 20, cal)
    with pytest.raises(ValueError, match="temperature_c"):
        no2.no2_ppb(1, 250, 220, float("nan"), cal)
    with pytest.raises(ValueError, match="we_mv"):
        no2.no2_ppb(1, None, 220, 20, cal)
    zero_ae = dict(SHEET, ae_sensor_zero_mv=0, ae_total_zero_mv=212)
    with pytest.raises(ValueError, match="ae_sensor_zero_mv"):
        no2.no2_ppb(2, 250, 220, 20, no2.Calibration.from_sheet(zero_ae))
    with pytest.raises(ValueError, match="sheet"):
        no2.Calibration.from_sheet([("we_electronic_zero_mv", 1)])


def test_negative_ppb_not_clipped(cal):
    ppb = no2.no2_ppb(4, 226.0, 216.0, 20.0, cal)  # 4 - 6 - 0 = -2 mV
    assert ppb == pytest.approx(-2 / 0.31)
    assert math.isfinite(ppb)
