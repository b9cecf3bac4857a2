"""``ClassroomCO2``: CO2, temperature and humidity in a UK classroom.

Theory of operation
-------------------
The room is one well-mixed volume V (m3) ventilated at Q = ACH * V / 3600 (m3/s):

    V dC/dt = N * G * 1e6 + Q * (C_out - C)          CO2, ppm (G in m3/s per person)
    Vm dw/dt = N * m + Q * (w_out - w)                 water vapour, g/m3 (Vm = 4 V: the
                                                       room's surfaces buffer moisture)
    Cth dT/dt = P_heat + N * P_occ - H * (T - T_out)   air + contents, deg C (H = UA + rho*cp*Q)

Inputs are constant over each 60 s step, so each step is the exact exponential solution and
CO2 never undershoots outdoor air. Occupancy follows a UK school timetable (registration
08:45, break 10:30-10:45, lunch 12:15-13:15, end 15:15, the teacher stays until 16:30),
Monday-Friday outside ``holidays``. Each school day draws, from its own seeded RNG, the
class's absences, whether each lesson is spent elsewhere (PE, assembly) and whether windows
are opened in each lesson and break. Heating runs 06:30-16:00 on school days with a
proportional thermostat, otherwise it holds ``setback_c``. Outdoor air comes from
``OutdoorWeather``. The week's run starts Saturday 00:00 (a weekend empty room forgets its
history), so any start date is cheap. Times are UK local, UTC, no DST.

Ventilation presets (``ventilation=``): "poor" (sealed, 0.7 ACH, windows never opened in
lessons: exceeds 1500 ppm for well over 20 min every full school day), "typical" and "good"
(mechanical, 5 ACH: stays far below 1500 ppm).
"""

from simulators.environment.base import (
    DAY_S,
    GridModel,
    binomial,
    check_number,
    day_index,
    duration_where_s,
    intervals_where,
    parse_date,
    parse_hhmm,
    relax,
    resolve_preset,
    slot_rng,
    weekday,
)
from simulators.environment.weather import OutdoorWeather, rh_from_absolute

# A UK school day (start, end, kind). "staff": the teacher alone, marking.
UK_SCHOOL_DAY = (
    ("08:45", "10:30", "lesson"),
    ("10:30", "10:45", "break"),
    ("10:45", "12:15", "lesson"),
    ("12:15", "13:15", "lunch"),
    ("13:15", "15:15", "lesson"),
    ("15:15", "16:30", "staff"),
)
_KINDS = ("lesson", "break", "lunch", "staff")

VENTILATION = {
    "poor": {"ach_closed": 0.7, "ach_open": 2.0, "open_in_lessons": 0.0, "open_at_breaks": 1.0},
    "typical": {"ach_closed": 1.2, "ach_open": 4.0, "open_in_lessons": 0.35, "open_at_breaks": 0.8},
    "good": {"ach_closed": 5.0, "ach_open": 8.0, "open_in_lessons": 0.5, "open_at_breaks": 1.0},
}

_RAMP_S = 180.0  # pupils come in over 3 min
_PUPIL_W = 70.0  # sensible heat per pupil (W)
_ADULT_W = 100.0
_PUPIL_GH = 50.0  # moisture per pupil (g/h)
_ADULT_GH = 70.0
_UA_W_K = 60.0  # fabric heat loss (W/K)
_CTH_J_K = 2.0e6  # air + furniture + inner surfaces (J/K)
_RHO_CP = 1200.0  # air, J/(m3 K)
_MOISTURE_BUFFER = 4.0
_HEAT_ON_S = 6.5 * 3600
_HEAT_OFF_S = 16.0 * 3600


class ClassroomCO2(GridModel):
    """A classroom's air. Keys of ``at(t)``: ``co2_ppm``, ``temperature_c``, ``rh_percent``,
    ``occupants``, ``pupils_today``, ``ventilation_ach``, ``windows_open``, ``heating_w``,
    ``school_day``, ``outdoor_co2_ppm``, ``outdoor_temperature_c``, ``outdoor_rh_percent``.

    Raises ``ValueError`` naming the argument for a bad parameter."""

    step_s = 60
    warmup_s = 2 * DAY_S

    def __init__(self, seed=0, volume_m3=180.0, pupils=30, ventilation="typical", ach_closed=None,
                 ach_open=None, open_in_lessons=None, open_at_breaks=None, outdoor_co2_ppm=420.0,
                 co2_lps_per_pupil=0.0045, co2_lps_per_adult=0.0055, absence_rate=0.05,
                 away_prob=0.08, heating_setpoint_c=20.0, setback_c=14.0, heater_kw=6.0,
                 holidays=(), timetable=None, weather_seed=None):
        GridModel.__init__(self, seed)
        vent = resolve_preset(VENTILATION, ventilation, "ventilation", {
            "ach_closed": ach_closed, "ach_open": ach_open,
            "open_in_lessons": open_in_lessons, "open_at_breaks": open_at_breaks})
        self.volume_m3 = check_number("volume_m3", volume_m3, 0.0, low_open=True)
        if isinstance(pupils, bool) or not isinstance(pupils, int) or pupils < 0:
            raise ValueError("pupils must be an int >= 0, got %r" % (pupils,))
        self.pupils = pupils
        self.ach_closed = check_number("ach_closed", vent["ach_closed"], 0.0, low_open=True)
        self.ach_open = check_number("ach_open", vent["ach_open"], 0.0, low_open=True)
        self.open_in_lessons = check_number("open_in_lessons", vent["open_in_lessons"], 0.0, 1.0)
        self.open_at_breaks = check_number("open_at_breaks", vent["open_at_breaks"], 0.0, 1.0)
        self.outdoor_co2_ppm = check_number("outdoor_co2_ppm", outdoor_co2_ppm, 0.0)
        self._g_pupil = check_number("co2_lps_per_pupil", co2_lps_per_pupil, 0.0) * 1e-3
        self._g_adult = check_number("co2_lps_per_adult", co2_lps_per_adult, 0.0) * 1e-3
        self.absence_rate = check_number("absence_rate", absence_rate, 0.0, 1.0)
        self.away_prob = check_number("away_prob", away_prob, 0.0, 1.0)
        self.heating_setpoint_c = check_number("heating_setpoint_c", heating_setpoint_c, -10.0, 30.0)
        self.setback_c = check_number("setback_c", setback_c, -10.0, 30.0)
        self._p_max = check_number("heater_kw", heater_kw, 0.0) * 1000.0
        self._holidays = _holiday_days(holidays)
        self._timetable = _timetable(UK_SCHOOL_DAY if timetable is None else timetable)
        self.weather = OutdoorWeather(seed if weather_seed is None else weather_seed)
        self._plans = {}

    # -- timetable ------------------------------------------------------------------------
    def is_school_day(self, wall_s):
        """True on Monday-Friday outside the configured holidays."""
        return weekday(wall_s) < 5 and day_index(wall_s) not in self._holidays

    def _plan(self, day):
        """The day's segments [(start_s, end_s, pupils, adults, ach, windows_open)]."""
        plan = self._plans.get(day)
        if plan is not None:
            return plan
        if len(self._plans) > 64:
            self._plans.clear()
        plan = []
        day0 = day * DAY_S
        if self.is_school_day(day0):
            rng = slot_rng(self.seed, "classroom.day", day)
            rate = self.absence_rate * (0.5 + rng.random())
            if rng.random() < 0.03:  # a trip or an outbreak: a third of the class away
                rate = max(rate, 1.0 / 3.0)
            present = self.pupils - binomial(rng, self.pupils, min(1.0, rate))
            for a, b, kind in self._timetable:
                u_away, u_open = rng.random(), rng.random()
                if kind == "lesson":
                    away = u_away < self.away_prob
                    is_open = u_open < self.open_in_lessons
                    n_p, n_a = (0, 0) if away else (present, 1)
                elif kind == "staff":
                    is_open, n_p, n_a = False, 0, 1
                else:
                    is_open, n_p, n_a = u_open < self.open_at_breaks, 0, 0
                plan.append((day0 + a, day0 + b, n_p, n_a, self.ach_open if is_open else self.ach_closed, is_open))
        self._plans[day] = plan
        return plan

    def _inputs(self, t):
        """(pupils, adults, ach, windows_open) at ``t``; pupils ramp in over 3 min."""
        for a, b, n_p, n_a, ach, is_open in self._plan(int(t // DAY_S)):
            if a <= t < b:
                return n_p * min(1.0, (t - a) / _RAMP_S), n_a, ach, is_open
        return 0.0, 0, self.ach_closed, False

    def _setpoint_c(self, t):
        s = t % DAY_S
        if _HEAT_ON_S <= s < _HEAT_OFF_S and self.is_school_day(t):
            return self.heating_setpoint_c
        return self.setback_c

    def _heating_w(self, temperature_c, setpoint_c):
        # Proportional thermostat: full power 0.5 K below the setpoint.
        p = self._p_max * (setpoint_c - temperature_c) / 0.5
        return max(0.0, min(self._p_max, p))

    # -- integration ----------------------------------------------------------------------
    def _initial_state(self, t0):
        w = self.weather
        return [self.outdoor_co2_ppm, max(self.setback_c, w.temperature_c(t0)), w.absolute_humidity_gm3(t0)]

    def _advance(self, state, t0, t1):
        dt = t1 - t0
        mid = 0.5 * (t0 + t1)
        n_p, n_a, ach, _ = self._inputs(mid)
        v = self.volume_m3
        q = ach * v / 3600.0
        co2, temp, hum = state
        co2_ss = self.outdoor_co2_ppm + (n_p * self._g_pupil + n_a * self._g_adult) * 1e6 / q
        co2 = relax(co2, co2_ss, dt, v / q)
        # A whole step's middle is a time of the grid every classroom shares; a query's
        # remainder step has its own.
        air = self.weather.shared_air if dt == self.step_s else self.weather.air
        t_out, _, hum_out = air(mid)
        hum_ss = hum_out + (n_p * _PUPIL_GH + n_a * _ADULT_GH) / 3600.0 / q
        hum = relax(hum, hum_ss, dt, _MOISTURE_BUFFER * v / q)
        # Heat: pick the thermostat's regime at the step start, then solve it exactly.
        h = _UA_W_K + _RHO_CP * q
        gains = n_p * _PUPIL_W + n_a * _ADULT_W
        setpoint = self._setpoint_c(t0)
        p = self._heating_w(temp, setpoint)
        if 0.0 < p < self._p_max:
            k = self._p_max / 0.5
            target = (k * setpoint + gains + h * t_out) / (k + h)
            temp = relax(temp, target, dt, _CTH_J_K / (k + h))
        else:
            temp = relax(temp, t_out + (p + gains) / h, dt, _CTH_J_K / h)
        state[0], state[1], state[2] = co2, temp, hum

    def _observe(self, state, t):
        co2, temp, hum = state
        n_p, n_a, ach, is_open = self._inputs(t)
        plan = self._plan(int(t // DAY_S))
        t_out, rh_out, _ = self.weather.air(t)
        return {
            "co2_ppm": co2,
            "temperature_c": temp,
            "rh_percent": rh_from_absolute(temp, hum),
            "occupants": int(round(n_p)) + n_a,
            "pupils_today": max((s[2] for s in plan), default=0),
            "ventilation_ach": ach,
            "windows_open": is_open,
            "heating_w": self._heating_w(temp, self._setpoint_c(t)),
            "school_day": self.is_school_day(t),
            "outdoor_co2_ppm": self.outdoor_co2_ppm,
            "outdoor_temperature_c": t_out,
            "outdoor_rh_percent": rh_out,
        }

    # -- alarm ground truth ---------------------------------------------------------------
    def co2_exceedances(self, start_s, end_s, threshold_ppm=1500.0, min_duration_s=1200.0, sample_s=60.0):
        """[(start_s, end_s)] where CO2 > ``threshold_ppm`` for >= ``min_duration_s``."""
        times, co2 = self.sample(start_s, end_s, sample_s, "co2_ppm")
        return intervals_where(times, [c > threshold_ppm for c in co2], sample_s, min_duration_s)

    def mean_co2_ppm(self, start_s, end_s, sample_s=60.0):
        """Mean CO2 (ppm) over [start_s, end_s)."""
        _, co2 = self.sample(start_s, end_s, sample_s, "co2_ppm")
        return sum(co2) / len(co2) if co2 else float("nan")

    def seconds_above(self, start_s, end_s, threshold_ppm=1500.0, sample_s=60.0):
        """Seconds in [start_s, end_s) with CO2 > ``threshold_ppm``."""
        _, co2 = self.sample(start_s, end_s, sample_s, "co2_ppm")
        return duration_where_s([c > threshold_ppm for c in co2], sample_s)


def _holiday_days(holidays):
    """Holidays as ISO dates or [first, last] ISO date pairs (inclusive) -> set of day indices."""
    days = set()
    for item in holidays:
        if isinstance(item, str):
            days.add(parse_date(item, "holidays"))
            continue
        try:
            first, last = item
        except (TypeError, ValueError):
            raise ValueError("holidays: expected 'YYYY-MM-DD' or [first, last], got %r" % (item,)) from None
        a, b = parse_date(first, "holidays"), parse_date(last, "holidays")
        if b < a:
            raise ValueError("holidays: %r ends before it starts" % (item,))
        days.update(range(a, b + 1))
    return frozenset(days)


def _timetable(rows):
    """[(start 'HH:MM', end 'HH:MM', kind)] -> sorted [(start_s, end_s, kind)], validated."""
    out = []
    for row in rows:
        try:
            a, b, kind = row
        except (TypeError, ValueError):
            raise ValueError("timetable: expected [start, end, kind], got %r" % (row,)) from None
        a, b = parse_hhmm(a, "timetable"), parse_hhmm(b, "timetable")
        if kind not in _KINDS or b <= a:
            raise ValueError("timetable: bad row %r (kinds: %s; end after start)" % (row, ", ".join(_KINDS)))
        out.append((a, b, kind))
    out.sort()
    for (_, b, _), (a, _, _) in zip(out, out[1:]):
        if a < b:
            raise ValueError("timetable: rows overlap at %02d:%02d" % (a // 3600, a % 3600 // 60))
    return tuple(out)
