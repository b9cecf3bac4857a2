"""THE table of project quantities: SenML name, registered unit, value type, numeric code.

Every wire format looks quantities up here and nowhere else: the SenML-CBOR record profile
(``protocol/senml.py``, ``docs/protocol-senml.md``) uses the SenML name and unit, the
LoRaWAN pack uses the numeric codes.

Rules that keep the table honest
--------------------------------
* Units come from the SenML units registry (RFC 8428 §12.1, REFERENCE.md §8.2) or its
  secondary units (RFC 8798: ``ppm``, ``ppb``, ``ug/m3``, ``cm``, ``dBm``). Each project
  quantity already carries its unit in its name and maps to a unit with factor 1, so no
  value is ever scaled or rounded on the way: the number the driver produced is the number
  the council receives (``distance_cm`` stays in ``cm`` rather than ``m`` because 1 cm
  steps are integers, 3 bytes in CBOR; 6.12 m would need a 9-byte float64).
* SenML names are unique, so one name resolves to one quantity (``no2`` is the volume
  fraction in ``ppb``, ``no2-mass`` the mass concentration in ``ug/m3``) and a pack never
  holds two records with the same resolved name and time.
* ``kind`` is ``NUM`` (SenML ``v``, int or float) or ``TEXT`` (SenML ``vs``).
* Codes are stable forever: the LoRaWAN pack and its JavaScript codec decode by them. Never
  renumber or reuse one; add new quantities at the end. Codes 1..23 encode in one CBOR byte
  and fit a 5-bit field; 0 is reserved ("no quantity").

Quality-flag codes (``FLAG_CODES``) follow ``protocol.quality.FLAGS`` and are just as
stable. Runs on MicroPython and CPython.
"""

from protocol import quality

NUM = "num"
TEXT = "text"

# code, project quantity, SenML name, SenML unit (None: no unit), value kind
QUANTITIES = (
    (1, "co2_ppm", "co2", "ppm", NUM),             # SCD4x CO2 (REFERENCE §1)
    (2, "temperature_c", "temp", "Cel", NUM),      # SCD4x / TMP117 (§1, §2)
    (3, "rh_percent", "rh", "%RH", NUM),           # SCD4x relative humidity
    (4, "no2_ppb", "no2", "ppb", NUM),             # NO2-B43F via ADS1115 (§3)
    (5, "no2_ugm3", "no2-mass", "ug/m3", NUM),     # §3.3 conversion at 20 °C
    (6, "distance_cm", "dist", "cm", NUM),         # I2CXL-MaxSonar range (§4)
    (7, "fill_ratio", "fill", "/", NUM),           # bin fill 0..1 (§4)
    (8, "battery_v", "batt", "V", NUM),            # status: battery volts
    (9, "boot_reason", "boot", None, TEXT),        # status: machine.reset_cause() name
    (10, "uptime_s", "uptime", "s", NUM),          # status: seconds since boot
    (11, "rssi_dbm", "rssi", "dBm", NUM),          # status: link signal strength
)

FLAG_CODES = {
    quality.OK: 0,
    quality.STUCK: 1,
    quality.SPIKE: 2,
    quality.OUT_OF_RANGE: 3,
    quality.SENSOR_FAILED: 4,
    quality.TIME_UNSYNCED: 5,
}

BY_QUANTITY = {}
BY_SENML_NAME = {}
BY_CODE = {}
for _row in QUANTITIES:
    BY_QUANTITY[_row[1]] = _row
    BY_SENML_NAME[_row[2]] = _row
    BY_CODE[_row[0]] = _row
FLAG_BY_CODE = {}
for _flag in FLAG_CODES:
    FLAG_BY_CODE[FLAG_CODES[_flag]] = _flag
del _row, _flag


def lookup(quantity):
    """``(code, quantity, senml_name, unit, kind)`` for a project quantity name.

    Raises ``ValueError`` naming an unknown ``quantity``."""
    row = BY_QUANTITY.get(quantity)
    if row is None:
        raise ValueError("quantity %r is not in protocol/quantities.py" % (quantity,))
    return row


def code_of(quantity):
    """Stable numeric code of a project quantity (raises ``ValueError`` if unknown)."""
    return lookup(quantity)[0]


def quantity_of_code(code):
    """Project quantity name for a numeric code (raises ``ValueError`` if unknown)."""
    row = BY_CODE.get(code)
    if row is None:
        raise ValueError("quantity code %r is not assigned" % (code,))
    return row[1]


def flag_code(flag):
    """Stable numeric code of a quality flag (raises ``ValueError`` if unknown)."""
    code = FLAG_CODES.get(flag)
    if code is None:
        raise ValueError("flag %r is not one of %s" % (flag, ", ".join(quality.FLAGS)))
    return code


def flag_of_code(code):
    """Quality flag for a numeric code (raises ``ValueError`` if unknown)."""
    flag = FLAG_BY_CODE.get(code)
    if flag is None:
        raise ValueError("flag code %r is not assigned" % (code,))
    return flag
