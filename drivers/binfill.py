"""Bin fill level maths, independent of the distance sensor (REFERENCE §4).

- ``speed_of_sound_m_s(t)``: c ≈ 331.3 + 0.606·T m/s (REFERENCE §4).
- ``correct_distance_cm``: an ultrasonic sensor without temperature compensation (the
  MaxBotix I2CXL, REFERENCE §4) turns echo time into cm with one fixed speed of sound, so its
  cm are true cm only at that speed's temperature. MaxBotix: "Our standard LV-MaxSonar and
  XL-MaxSonar sensors assume the temperature is 22.5 degrees Celsius" and scale 58 µs per cm
  of range (maxbotix.com articles/033 "Calculating Distance from Pin 2"; found with the
  `search` tool). 58 µs/cm round trip is 344.8 m/s, which is c(22.5 °C) = 344.9 m/s by the
  formula above, so ``CALIBRATION_TEMPERATURE_C = 22.5``. True distance = reported ×
  c(T_air) / c(22.5 °C): at 0 °C a reported 100 cm is 96.0 cm (≈ 0.18 %/°C).
- ``fill_ratio``: clamp((D_empty − d) / (D_empty − D_full), 0, 1) (REFERENCE §4).
- ``median``: of 3–5 readings, the REFERENCE §4 way to drop a lid-open or ghost echo.

The node's part (everything but ``reported_cm_for``, which the simulators use) is
``drivers.binfill_core``, re-exported here; a node imports only that (docs/benchmarks.md, heap).

Pure functions; runs on MicroPython and CPython.
"""

from drivers.binfill_core import (  # noqa: F401  (re-exported: the module's public names)
    AIR_TEMPERATURE_MAX_C, AIR_TEMPERATURE_MIN_C, CALIBRATION_TEMPERATURE_C, SOUND_C0_M_S, SOUND_SLOPE_M_S_PER_C,
    _number, correct_distance_cm, fill_ratio, median, speed_of_sound_m_s)


def reported_cm_for(true_cm, air_temperature_c, calibration_temperature_c=CALIBRATION_TEMPERATURE_C):
    """What an uncompensated sensor reports (cm, unrounded) for ``true_cm`` in air at
    ``air_temperature_c``: the inverse of ``correct_distance_cm``."""
    d = _number(true_cm, "true_cm")
    return d * speed_of_sound_m_s(calibration_temperature_c) / speed_of_sound_m_s(air_temperature_c)
