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
stable. The table and ``BY_QUANTITY`` live in ``protocol.quantities_core`` (what a node
imports), re-exported here. Runs on MicroPython and CPython.
"""

from protocol import quality
from protocol.quantities_core import BY_QUANTITY, NUM, QUANTITIES, TEXT  # noqa: F401 (re-exported)

FLAG_CODES = {
    quality.OK: 0,
    quality.STUCK: 1,
    quality.SPIKE: 2,
    quality.OUT_OF_RANGE: 3,
    quality.SENSOR_FAILED: 4,
    quality.TIME_UNSYNCED: 5,
}

BY_SENML_NAME = {}
BY_CODE = {}
for _row in QUANTITIES:
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
