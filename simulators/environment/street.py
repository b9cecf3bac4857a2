"""``StreetNO2``: NO2 at a roadside site, with the weather that drives it.

Theory of operation
-------------------
No state: NO2 is background plus a roadside increment, a pure function of time.

    traffic  = peak_veh_h * profile(hour, weekday) * (1 +- 8 % day-to-day, +- 5 % minutes)
    increment = 0.21 ppb per veh/h * severity * traffic * stability(hour) / (wind + 0.7 m/s)
    background = background_ppb * (1 + 0.35 winter) * clamp(3.5 / (wind + 0.5), 0.5, 2)
    no2_ppb   = background + increment * (1 +- 15 % five-minute variation)

The weekday profile has an 08:00 and a 17:00 peak; weekends are flatter, later and lower.
Dilution falls with wind speed (the 0.7 m/s stands for traffic-made turbulence, so a calm
never gives an infinite concentration), and a stable morning boundary layer (+25 % at 07:00,
-25 % at 19:00) sharpens the morning peak. Weather (``OutdoorWeather``) has multi-day calm and
windy spells, so a busy street's exceedances cluster in calm weather as real ones do. Every
random term is bounded (knots clipped at +-3 sigma, wind >= 0.3 m/s), so a site's worst case
is finite: the "quiet" preset cannot exceed about 85 ppb whatever the weather.

Presets (``site=``): "busy" -- a congested high-street canyon, ~1800 veh/h at peak, that
exceeds the 200 ug/m3 (104.6 ppb) hourly limit in most weeks (a deliberately non-compliant
hotspot); "typical" -- exceeds only in the calmest spells; "quiet" -- a residential street
that never does. Times are UK local, UTC, no DST.
"""

import math

from simulators.environment.base import (
    DAY_S,
    HOUR_S,
    EnvironmentModel,
    SmoothNoise,
    check_number,
    resolve_preset,
    season_cos,
    weekday,
    window_means,
)
from simulators.environment.weather import OutdoorWeather

SITES = {
    "busy": {"peak_veh_h": 1800.0, "severity": 1.0, "background_ppb": 14.0},
    "typical": {"peak_veh_h": 900.0, "severity": 0.8, "background_ppb": 12.0},
    "quiet": {"peak_veh_h": 200.0, "severity": 0.5, "background_ppb": 10.0},
}

# Share of the day's peak traffic, by hour (value at hh:30), UK urban count shapes.
_WEEKDAY = (0.08, 0.05, 0.04, 0.04, 0.07, 0.20, 0.50, 0.90, 1.00, 0.80, 0.70, 0.72, 0.75, 0.75,
            0.75, 0.80, 0.92, 1.00, 0.88, 0.65, 0.45, 0.35, 0.25, 0.15)
_SATURDAY = (0.15, 0.10, 0.07, 0.05, 0.05, 0.08, 0.15, 0.30, 0.45, 0.60, 0.70, 0.75, 0.78, 0.78,
             0.75, 0.72, 0.70, 0.65, 0.55, 0.45, 0.38, 0.32, 0.28, 0.20)
_SUNDAY = (0.16, 0.11, 0.07, 0.05, 0.04, 0.05, 0.09, 0.18, 0.30, 0.45, 0.58, 0.65, 0.68, 0.66,
           0.64, 0.62, 0.60, 0.56, 0.48, 0.40, 0.33, 0.26, 0.18, 0.12)
_EMISSION_PPB_PER_VEH_H = 0.21  # increment per veh/h at unit severity, per (m/s) of dilution
_TURBULENCE_MS = 0.7
LIMIT_UGM3 = 200.0  # UK AQS hourly limit (REFERENCE.md 3.3)


def traffic_share(wall_s):
    """Traffic as a share of the weekday peak (0..1), linearly between hour centres."""
    h = (wall_s % DAY_S) / HOUR_S - 0.5
    i = math.floor(h)
    f = h - i
    day = wall_s - f * HOUR_S  # the profile of the day each centre belongs to
    a = _profile(day)[i % 24]
    b = _profile(day + HOUR_S)[(i + 1) % 24]
    return a + (b - a) * f


def _profile(wall_s):
    wd = weekday(wall_s)
    return _SATURDAY if wd == 5 else _SUNDAY if wd == 6 else _WEEKDAY


class StreetNO2(EnvironmentModel):
    """Roadside NO2 and weather. Keys of ``at(t)``: ``no2_ppb``, ``background_no2_ppb``,
    ``traffic_veh_h``, ``temperature_c``, ``rh_percent``, ``wind_ms``, ``pressure_hpa``.

    Raises ``ValueError`` naming the argument for a bad parameter."""

    def __init__(self, seed=0, site="busy", peak_veh_h=None, severity=None, background_ppb=None,
                 weather_seed=None):
        EnvironmentModel.__init__(self, seed)
        p = resolve_preset(SITES, site, "site", {
            "peak_veh_h": peak_veh_h, "severity": severity, "background_ppb": background_ppb})
        self.peak_veh_h = check_number("peak_veh_h", p["peak_veh_h"], 0.0)
        self.severity = check_number("severity", p["severity"], 0.0)
        self.background_ppb = check_number("background_ppb", p["background_ppb"], 0.0)
        self.weather = OutdoorWeather(seed if weather_seed is None else weather_seed)
        self._daily = SmoothNoise(seed, "street.traffic.day", DAY_S)
        self._minutes = SmoothNoise(seed, "street.traffic.minutes", 900.0)
        self._plume = SmoothNoise(seed, "street.plume", 300.0)

    def at(self, wall_s):
        t = check_number("wall_s", wall_s)
        w = self.weather
        wind = w.wind_ms(t)
        temperature_c, rh, _ = w.air(t)
        traffic = self.peak_veh_h * traffic_share(t) * (1.0 + 0.08 * self._daily(t)) * (1.0 + 0.05 * self._minutes(t))
        stability = 1.0 + 0.25 * math.cos(2.0 * math.pi * ((t % DAY_S) / HOUR_S - 7.0) / 24.0)
        increment = _EMISSION_PPB_PER_VEH_H * self.severity * traffic * stability / (wind + _TURBULENCE_MS)
        background = self.background_ppb * (1.0 + 0.35 * season_cos(t)) * max(0.5, min(2.0, 3.5 / (wind + 0.5)))
        return {
            "no2_ppb": background + increment * (1.0 + 0.15 * self._plume(t)),
            "background_no2_ppb": background,
            "traffic_veh_h": traffic,
            "temperature_c": temperature_c + 1.0,  # urban heat island at the kerb
            "rh_percent": rh,
            "wind_ms": wind,
            "pressure_hpa": w.pressure_hpa(t),
        }

    # -- alarm ground truth ---------------------------------------------------------------
    def hourly_means_ppb(self, start_s, end_s, sample_s=60.0):
        """[(hour_start_s, mean ppb)] for each clock hour with samples in [start_s, end_s)."""
        times, values = self.sample(start_s, end_s, sample_s, "no2_ppb")
        return window_means(times, values, HOUR_S)

    def hourly_means_ugm3(self, start_s, end_s, sample_s=60.0):
        """[(hour_start_s, mean ug/m3)] on the UK reporting basis (20 deg C, 1013 hPa)."""
        from drivers.no2b43f import ppb_to_ugm3  # the one owner of the conversion

        return [(h, ppb_to_ugm3(v)) for h, v in self.hourly_means_ppb(start_s, end_s, sample_s)]

    def exceedance_hours(self, start_s, end_s, limit_ugm3=LIMIT_UGM3, sample_s=60.0):
        """[(hour_start_s, mean ug/m3)] of clock hours whose mean is above ``limit_ugm3``."""
        return [(h, v) for h, v in self.hourly_means_ugm3(start_s, end_s, sample_s) if v > limit_ugm3]
