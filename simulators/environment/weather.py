"""Outdoor weather at a UK site, shared by the models that live outdoors or ventilate to it.

A pure function of (seed, t): air temperature with a seasonal and a daily cycle (coldest
around 04:00, warmest around 15:00) plus a multi-day synoptic anomaly; wind speed
log-normal about a median with multi-day calm and windy spells; relative humidity from a
dew point that follows the daily mean temperature (so RH is high at night, lower in the
afternoon); pressure for completeness. Magnitudes are typical of lowland England. Being pure,
the air a model asks at a grid time is memoised across every instance with the same seed and
parameters (``shared_air``).
"""

import math

from simulators.environment.base import DAY_S, HOUR_S, SmoothNoise, hour_of_day, season_cos

# (seed, parameters) -> {t: air(t)}: one memo for every ``OutdoorWeather`` with them (a
# fleet's classrooms share the site's weather and step on the same grid). Bounded: a memo
# starts afresh when it holds _SHARED_AIR_TIMES times, the table when it has _SHARED_AIR_SETS.
_SHARED_AIR = {}
_SHARED_AIR_SETS = 4
_SHARED_AIR_TIMES = 8192


def saturation_vapour_pressure_hpa(temperature_c):
    """Magnus formula over water (hPa)."""
    return 6.112 * math.exp(17.62 * temperature_c / (243.12 + temperature_c))


def absolute_humidity_gm3(temperature_c, rh_percent):
    """Water vapour density (g/m3) of air at ``temperature_c`` and ``rh_percent``."""
    e_hpa = rh_percent / 100.0 * saturation_vapour_pressure_hpa(temperature_c)
    return 216.7 * e_hpa / (273.15 + temperature_c)


def rh_from_absolute(temperature_c, humidity_gm3):
    """Relative humidity (%) of air at ``temperature_c`` holding ``humidity_gm3``, clipped to
    0-100 (condensation holds it at 100)."""
    e_hpa = humidity_gm3 * (273.15 + temperature_c) / 216.7
    return max(0.0, min(100.0, 100.0 * e_hpa / saturation_vapour_pressure_hpa(temperature_c)))


class OutdoorWeather:
    """Outdoor weather. ``mean_c`` annual mean, ``seasonal_amp_c`` half the winter-summer
    swing of daily means, ``diurnal_amp_c`` half the day-night swing, ``wind_median_ms``."""

    def __init__(self, seed=0, mean_c=10.5, seasonal_amp_c=6.0, diurnal_amp_c=3.5, wind_median_ms=4.0):
        self.mean_c = mean_c
        self.seasonal_amp_c = seasonal_amp_c
        self.diurnal_amp_c = diurnal_amp_c
        self.wind_median_ms = wind_median_ms
        self._synoptic_t = SmoothNoise(seed, "weather.temp.synoptic", 3 * DAY_S)
        self._day_t = SmoothNoise(seed, "weather.temp.day", DAY_S / 2)
        self._synoptic_w = SmoothNoise(seed, "weather.wind.synoptic", 2 * DAY_S)
        self._hour_w = SmoothNoise(seed, "weather.wind.hour", 3 * HOUR_S)
        self._humid = SmoothNoise(seed, "weather.humid", 2 * DAY_S)
        self._pressure = SmoothNoise(seed, "weather.pressure", 4 * DAY_S)
        if len(_SHARED_AIR) >= _SHARED_AIR_SETS:
            _SHARED_AIR.clear()
        self._air_memo = _SHARED_AIR.setdefault((seed, mean_c, seasonal_amp_c, diurnal_amp_c, wind_median_ms), {})

    def _daily_mean_c(self, t):
        winter = season_cos(t, lag_days=15.0)  # coldest at the end of January
        return self.mean_c - self.seasonal_amp_c * winter + 2.5 * self._synoptic_t(t) + 0.8 * self._day_t(t)

    def _diurnal_c(self, t):
        amp = self.diurnal_amp_c * (1.0 - 0.3 * season_cos(t))
        return amp * math.cos(2.0 * math.pi * (hour_of_day(t) - 15.0) / 24.0)

    def temperature_c(self, t):
        """Outdoor air temperature (deg C)."""
        return self._daily_mean_c(t) + self._diurnal_c(t)

    def wind_ms(self, t):
        """Wind speed at 10 m (m/s), 0.3-25."""
        diurnal = 1.0 + 0.15 * math.sin(2.0 * math.pi * (hour_of_day(t) - 9.0) / 24.0)
        seasonal = 1.0 + 0.12 * season_cos(t)
        z = 0.55 * self._synoptic_w(t) + 0.15 * self._hour_w(t)
        return max(0.3, min(25.0, self.wind_median_ms * math.exp(z) * diurnal * seasonal))

    def air(self, t):
        """(temperature_c, rh_percent, absolute_humidity_gm3) outdoors, computed together."""
        mean_c = self._daily_mean_c(t)
        temperature_c = mean_c + self._diurnal_c(t)
        dew_c = mean_c - max(0.5, 3.0 + 1.5 * self._humid(t) - 1.0 * season_cos(t))
        ratio = saturation_vapour_pressure_hpa(dew_c) / saturation_vapour_pressure_hpa(temperature_c)
        rh = max(5.0, min(100.0, 100.0 * ratio))
        return temperature_c, rh, absolute_humidity_gm3(temperature_c, rh)

    def shared_air(self, t):
        """``air(t)``, memoised across every ``OutdoorWeather`` with this seed and these
        parameters: for the models that ask it at the times of a shared grid."""
        memo = self._air_memo
        out = memo.get(t)
        if out is None:
            if len(memo) >= _SHARED_AIR_TIMES:
                memo.clear()
            out = memo[t] = self.air(t)
        return out

    def rh_percent(self, t):
        """Outdoor relative humidity (%)."""
        return self.air(t)[1]

    def absolute_humidity_gm3(self, t):
        """Outdoor water vapour density (g/m3)."""
        return self.air(t)[2]

    def pressure_hpa(self, t):
        """Sea-level pressure (hPa)."""
        return 1013.25 + 10.0 * self._pressure(t)
