"""The window rule kinds of ``gateway.alarms``: a verdict per hour, day or year.

Theory of operation
-------------------
A window rule aggregates one quantity's valid samples over a window of local time
(``window_bounds``: the clock hour, the local day from midnight, the calendar year) and
decides when the window closes: on the first sample (any flag) at or after its end, or on the
engine's ``tick``. A verdict needs ``min_samples`` valid samples; a window with fewer decides
nothing and breaks a ``consecutive`` streak. The next window is the hysteresis: an alarm
raised by one window clears on the first window that does not exceed. ``hours`` and
``weekdays`` restrict which samples a day's verdict uses (e.g. the school day).
State, events and ``step``/``advance`` as in ``gateway.alarm_rules``; ``MeanAbove`` without
``hours``/``weekdays`` has a ``run_many``.
"""

from datetime import datetime, timedelta

from gateway.alarm_rules import (
    CLEARED, COUNTS, FLAGGED, RAISED, REPORT, RULE_FAULTS, Rule, _plain_number, _where,
    in_order, number)

WINDOWS = ("hour", "day", "year")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _hhmm(spec, text):
    try:
        hh, mm = str(text).split(":")
        s, m = int(hh) * 3600 + int(mm) * 60, int(mm)
    except ValueError:
        s = m = -1
    if not 0 <= s <= 86400 or not 0 <= m < 60:
        raise ValueError("%s: hours must be two 'HH:MM' times, got %r" % (_where(spec), text))
    return s


def window_bounds(window, t, tz):
    """``(start_s, end_s)`` of the ``hour`` / ``day`` / ``year`` (local time in ``tz``, a
    ``datetime.tzinfo``) holding Unix time ``t``."""
    local = datetime.fromtimestamp(t, tz)
    if window == "hour":
        start = local.replace(minute=0, second=0, microsecond=0).timestamp()
        return start, start + 3600
    if window == "day":
        d = local.date()
        n = d + timedelta(days=1)
        return (datetime(d.year, d.month, d.day, tzinfo=tz).timestamp(),
                datetime(n.year, n.month, n.day, tzinfo=tz).timestamp())
    return (datetime(local.year, 1, 1, tzinfo=tz).timestamp(),
            datetime(local.year + 1, 1, 1, tzinfo=tz).timestamp())


class _Window(Rule):
    """A verdict per ``window`` (local time), decided when the window closes."""

    reports = False  # also a ``report`` event for every decided window

    def __init__(self, spec):
        Rule.__init__(self, spec)
        self.window = spec.get("window")
        if self.window not in WINDOWS:
            raise ValueError("%s: window must be one of %s, got %r"
                             % (_where(spec), ", ".join(WINDOWS), self.window))
        self.min_samples = number(spec, "min_samples", 1, low=1, integer=True)
        self.consecutive = number(spec, "consecutive", 1, low=1, integer=True)
        self.hours = None
        self.weekdays = None
        if "hours" in spec:
            h = spec["hours"]
            if not isinstance(h, (list, tuple)) or len(h) != 2:
                raise ValueError("%s: hours must be [start, end] as 'HH:MM'" % _where(spec))
            self.hours = (_hhmm(spec, h[0]), _hhmm(spec, h[1]))
            if self.hours[1] <= self.hours[0] or self.window != "day":
                raise ValueError("%s: hours needs window 'day' and end after start" % _where(spec))
        if "weekdays" in spec:
            w = spec["weekdays"]
            if not isinstance(w, (list, tuple)) or not all(
                    isinstance(d, str) and d[:3].lower() in _WEEKDAYS for d in w):
                raise ValueError("%s: weekdays must be a list of 'mon'..'sun'" % _where(spec))
            self.weekdays = frozenset(_WEEKDAYS.index(d[:3].lower()) for d in w)
        self._every = self.hours is None and self.weekdays is None  # every sample counts

    def _included(self, t, tz):
        if self.hours is None and self.weekdays is None:
            return True
        local = datetime.fromtimestamp(t, tz)
        if self.weekdays is not None and local.weekday() not in self.weekdays:
            return False
        s = local.hour * 3600 + local.minute * 60 + local.second
        return self.hours is None or self.hours[0] <= s < self.hours[1]

    def advance(self, st, t, tz):
        # gateway.alarms.AlarmEngine.observe makes this first test itself (its fast path):
        # a subclass's advance must start with the same test (TimeInBand's does)
        w = st.get("w")
        if w is None or t < w[1]:
            return []
        return self.close(st, tz)

    def step(self, st, t, v, tz):
        if self._every or self._included(t, tz):
            if st.get("w") is None:
                st["w"] = list(window_bounds(self.window, t, tz))
                st["a"] = self._empty()
            st["a"] = self._add(st["a"], v)
        return []

    def close(self, st, tz):
        """Close the open window: its events."""
        w, agg = st.get("w"), st.get("a")
        st["w"] = st["a"] = None
        if w is None:
            return []
        verdict = self._verdict(agg)
        adjacent = st.get("pe") == w[0]
        st["pe"] = w[1]
        if verdict is None:          # too little valid data: no decision, the streak breaks
            st["k"] = 0
            return []
        bad, value, detail = verdict
        detail.update(window=self.window, window_start=w[0], window_end=w[1])
        out = [(REPORT, value, w[0], dict(detail))] if self.reports else []
        if not bad:
            st["k"] = 0
            if st.get("on"):
                st["on"] = False
                out.append((CLEARED, value, w[0], detail))
            return out
        st["k"] = st.get("k", 0) + 1 if adjacent else 1
        if st["k"] == 1:
            st["ks"] = w[0]
        self._count_year(st, w, detail, tz)
        if not st.get("on") and st["k"] >= self.consecutive:
            st["on"] = True
            out.append((RAISED, value, st["ks"], dict(detail, consecutive=st["k"])))
        return out

    def _count_year(self, st, w, detail, tz):
        pass


class MeanAbove(_Window):
    kind = "mean_above"
    keys = ("threshold", "window", "consecutive", "allowed_per_year", "min_samples", "hours",
            "weekdays")

    def __init__(self, spec):
        _Window.__init__(self, spec)
        self.threshold = number(spec, "threshold", required=True)
        self.allowed_per_year = number(spec, "allowed_per_year", None, low=0, integer=True)

    def _empty(self):
        return [0.0, 0]

    def _add(self, agg, v):
        return [agg[0] + v, agg[1] + 1]

    def run_many(self, st, samples, tz, reset):
        """``advance`` and ``step`` over ``samples`` in one loop, the window's sum and count
        kept in locals (``gateway.alarm_rules``' module docstring)."""
        get = st.get
        w, a = get("w"), get("a")
        if not self._every or not _plain_number(get("_t")) or (w is None) != (a is None) or (
                w is not None and not (type(w) is list and len(w) == 2 and type(a) is list
                                       and len(a) == 2 and _plain_number(w[0])
                                       and _plain_number(w[1]) and w[1] is not None
                                       and _plain_number(a[0]) and type(a[1]) is int)):
            return None
        samples, late, t0 = in_order(samples, get("_t"))
        total, n = (a[0], a[1]) if a is not None else (0.0, 0)
        w_a = False
        flagged = 0
        out = []
        for i, t, v, code in samples:
            try:
                if w is not None and t >= w[1]:  # the window closed: its verdict
                    st["_t"] = t
                    if w_a:
                        st["a"] = [total, n]
                    w_a = False
                    evs = self.close(st, tz)
                    w = get("w")
                    if evs:
                        out.append((i, t, evs))
                if code == COUNTS:
                    if w is None:
                        w = st["w"] = list(window_bounds(self.window, t, tz))
                        total, n = 0.0, 0
                    total += v
                    n += 1
                    w_a = True
                elif code == FLAGGED:
                    flagged += 1
            except RULE_FAULTS:
                st = reset(t)  # as the engine does: the state starts afresh
                get, w, w_a = st.get, None, False
        if samples:
            st["_t"] = t0
        if w_a:
            st["a"] = [total, n]
        return late, flagged, out

    def _verdict(self, agg):
        if agg[1] < self.min_samples:
            return None
        mean = agg[0] / agg[1]
        return mean > self.threshold, mean, {"threshold": self.threshold, "samples": agg[1]}

    def _count_year(self, st, w, detail, tz):
        if self.allowed_per_year is None:
            return
        if st.get("ye") is None or w[0] >= st["ye"]:  # a new calendar year: count afresh
            st["ye"], st["yc"] = window_bounds("year", w[0], tz)[1], 0
        st["yc"] += 1
        detail.update(exceedances_this_year=st["yc"], allowed_per_year=self.allowed_per_year,
                      allowance_exceeded=st["yc"] > self.allowed_per_year)


class MaxBelow(_Window):
    kind = "max_below"
    keys = ("threshold", "window", "consecutive", "min_samples", "hours", "weekdays")

    def __init__(self, spec):
        _Window.__init__(self, spec)
        self.threshold = number(spec, "threshold", required=True)

    def _empty(self):
        return [None, 0]

    def _add(self, agg, v):
        return [v if agg[0] is None else max(agg[0], v), agg[1] + 1]

    def _verdict(self, agg):
        if agg[1] < self.min_samples:
            return None
        return agg[0] < self.threshold, agg[0], {"threshold": self.threshold, "samples": agg[1]}


class MinAtOrAbove(MaxBelow):
    kind = "min_at_or_above"

    def _add(self, agg, v):
        return [v if agg[0] is None else min(agg[0], v), agg[1] + 1]

    def _verdict(self, agg):
        if agg[1] < self.min_samples:
            return None
        return agg[0] >= self.threshold, agg[0], {"threshold": self.threshold, "samples": agg[1]}


class TimeInBand(_Window):
    """Each valid sample stands for the time until the next one (at most ``max_gap_s``),
    clipped to its window; the hours whose sample lay within ``lo``..``hi`` are summed."""

    kind = "time_in_band"
    keys = ("lo", "hi", "window", "threshold_h", "max_gap_s")
    reports = True

    def __init__(self, spec):
        _Window.__init__(self, spec)
        self.lo = number(spec, "lo", required=True)
        self.hi = number(spec, "hi", required=True)
        if self.hi < self.lo:
            raise ValueError("%s: hi must be >= lo" % _where(spec))
        self.threshold_h = number(spec, "threshold_h", 0, low=0)
        self.max_gap_s = number(spec, "max_gap_s", 3600, above=0)

    def _credit(self, st, upto):
        p, w = st.get("p"), st.get("w")
        if p is None or w is None:
            return
        end = min(upto, p[2], w[1])
        if end > p[0]:
            if p[1]:
                st["a"][0] += end - p[0]
            p[0] = end

    def advance(self, st, t, tz):
        w = st.get("w")
        if w is None or t < w[1]:
            return []
        self._credit(st, w[1])  # the last sample's share up to the window's end
        return self.close(st, tz)

    def step(self, st, t, v, tz):
        if st.get("w") is None:
            st["w"] = list(window_bounds(self.window, t, tz))
            st["a"] = [0.0, 0]
            if st.get("p") is not None:  # the previous sample carries into this window
                st["p"][0] = max(st["p"][0], st["w"][0])
        self._credit(st, t)
        st["a"][1] += 1
        st["p"] = [t, 1 if self.lo <= v <= self.hi else 0, t + self.max_gap_s]
        return []

    def _verdict(self, agg):
        hours = agg[0] / 3600.0
        bad = self.threshold_h > 0 and hours > self.threshold_h
        return bad, hours, {"lo": self.lo, "hi": self.hi, "threshold_h": self.threshold_h,
                            "samples": agg[1]}
