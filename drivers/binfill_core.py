"""Bin fill level maths a node samples with: the speed-of-sound correction of an
uncompensated sensor's cm, the fill ratio and the median of pings (REFERENCE §4; the
derivations and sources are in ``drivers.binfill``, which re-exports every name here and
adds what only the simulators need). A node imports only this module (docs/benchmarks.md,
heap).

Pure functions; runs on MicroPython and CPython.
"""

SOUND_C0_M_S = 331.3  # REFERENCE §4: c ≈ 331.3 + 0.606·T m/s
SOUND_SLOPE_M_S_PER_C = 0.606
CALIBRATION_TEMPERATURE_C = 22.5  # MaxBotix XL-MaxSonar fixed assumption (drivers.binfill)
AIR_TEMPERATURE_MIN_C = -60.0  # plausibility window for an air temperature argument
AIR_TEMPERATURE_MAX_C = 100.0


def _number(value, name):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError("%s must be a number, got %r" % (name, value))
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError("%s must be finite, got %r" % (name, value))
    return x


def speed_of_sound_m_s(temperature_c):
    """Speed of sound in air (m/s) at ``temperature_c`` °C.

    Raises ``ValueError`` naming ``temperature_c`` outside −60..100 °C.
    """
    t = _number(temperature_c, "temperature_c")
    if not (AIR_TEMPERATURE_MIN_C <= t <= AIR_TEMPERATURE_MAX_C):
        raise ValueError("temperature_c must be within %.0f..%.0f °C of air, got %r"
                         % (AIR_TEMPERATURE_MIN_C, AIR_TEMPERATURE_MAX_C, temperature_c))
    return SOUND_C0_M_S + SOUND_SLOPE_M_S_PER_C * t


def correct_distance_cm(reported_cm, air_temperature_c, calibration_temperature_c=CALIBRATION_TEMPERATURE_C):
    """True distance (cm) from a sensor's ``reported_cm`` with air at ``air_temperature_c``.

    The sensor's cm assume the speed of sound at ``calibration_temperature_c`` (22.5 °C for
    MaxBotix XL parts). Raises ``ValueError`` for a negative or non-finite distance or an
    implausible temperature (each message names its argument).
    """
    d = _number(reported_cm, "reported_cm")
    if d < 0:
        raise ValueError("reported_cm must be >= 0, got %r" % (reported_cm,))
    try:
        c_air = speed_of_sound_m_s(air_temperature_c)
    except ValueError as e:
        raise ValueError("air_temperature_c: %s" % (e,))
    try:
        c_cal = speed_of_sound_m_s(calibration_temperature_c)
    except ValueError as e:
        raise ValueError("calibration_temperature_c: %s" % (e,))
    return d * c_air / c_cal


def fill_ratio(distance_cm, empty_cm, full_cm):
    """Fill level 0..1 from the sensor-to-surface ``distance_cm`` (REFERENCE §4).

    ``empty_cm``: sensor to floor of the empty bin; ``full_cm``: sensor to surface when full
    (at least the sensor's minimum range, e.g. 25 cm for the MB1242). Clamped to 0..1.
    Raises ``ValueError`` unless 0 < full_cm < empty_cm and distance_cm >= 0 (all finite).
    """
    d = _number(distance_cm, "distance_cm")
    empty = _number(empty_cm, "empty_cm")
    full = _number(full_cm, "full_cm")
    if full <= 0:
        raise ValueError("full_cm must be > 0 (the sensor cannot range to its own face), got %r" % (full_cm,))
    if empty <= full:
        raise ValueError("empty_cm (%r) must be greater than full_cm (%r): the floor is farther than "
                         "the full level" % (empty_cm, full_cm))
    if d < 0:
        raise ValueError("distance_cm must be >= 0, got %r" % (distance_cm,))
    ratio = (empty - d) / (empty - full)
    if ratio < 0.0:
        return 0.0
    if ratio > 1.0:
        return 1.0
    return ratio


def median(values):
    """The median of ``values`` (mean of the middle two for an even count).

    Raises ``ValueError`` naming ``values`` if it is empty.
    """
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("values must not be empty")
    mid = n // 2
    if n % 2:
        return s[mid]
    return (s[mid - 1] + s[mid]) / 2
