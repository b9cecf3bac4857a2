"""The point rule kinds of ``gateway.alarms`` (window rules: ``gateway.alarm_windows``).

Theory of operation
-------------------
A rule watches one quantity of one device. The engine (``gateway.alarms.AlarmEngine``) feeds
it samples in time order: ``advance(st, t, tz)`` first (a window rule closes the windows that
``t`` has passed), then ``step(st, t, v, tz)`` with the sample's value when the value counts.
Both return events as ``(kind, value, since, detail)`` tuples, ``kind`` one of ``raised`` /
``cleared`` / ``report``. ``st`` is the rule's state for that device: a dict of numbers,
lists and None only, so it serialises as JSON and is restored exactly.

``run_many(st, samples, tz, reset)``, where a kind has one (``AboveFor`` here,
``MeanAbove``), runs the rule over a frame's samples ``(index, t, value, code)`` in one loop
and gives the engine's verdicts, events and state for them: ``(late, flagged, [(index, t,
events)])``, or None (before changing anything) for state it does not expect, which the
engine's own loop then handles (tests/property/test_alarms_many_props.py holds them equal).

``above_for``    above ``threshold`` continuously for ``duration_s``; clears once below
                 ``clear_below`` (threshold - ``hysteresis``) for ``clear_for_s``; a gap in
                 valid samples longer than ``max_gap_s`` restarts both timers.
``at_or_above``  ``consecutive`` readings >= ``threshold``; clears after as many readings
                 below ``clear_below``.
``rise``         the value is >= ``delta`` above its minimum over the last ``within_s``, for
                 ``consecutive`` readings; clears after as many readings without it.
``flush_time``   HSE sentinel test: from a draw-off's start (a fast move toward ``target``)
                 the value must reach ``target`` within ``within_s``.
Defaults and reasons: docs/gateway-pipeline.md.
"""

import math

RAISED, CLEARED, REPORT = "raised", "cleared", "report"
SEVERITIES = ("info", "warning", "critical")
COMMON_KEYS = ("id", "quantity", "rule", "severity", "basis", "applies_to")
COUNTS, FLAGGED, ABSENT = 0, 1, 2  # a sample's value: counts, is left out, is not there
# What a rule's own code may raise on state it cannot use (a corrupt or hand-edited state):
# the engine then resets that rule's state and counts a rule_error.
RULE_FAULTS = (TypeError, KeyError, IndexError, ValueError, AttributeError, ArithmeticError,
               OSError)
_NUM = (int, float)
_BIG = 2.0 ** 62  # state numbers are times and sums far below this; past it run_many declines


def _plain_number(x):
    """True for None or an int/float within +-2**62 (arithmetic with it cannot raise)."""
    return x is None or (type(x) in _NUM and -_BIG < x < _BIG)


def in_order(samples, t0):
    """``(samples, late, last)``: the samples a rule takes after time ``t0`` (its last, or
    None), each at or after the one before (the others are late: skipped and counted), and
    the time of the last taken (``t0`` if none)."""
    kept, late = [], 0
    for sample in samples:
        t = sample[1]
        if t0 is not None and t < t0:
            late += 1
            continue
        t0 = t
        kept.append(sample)
    return kept, late, t0
_RISE_KEEP = 256  # bound on the rise rule's window of candidate minima


# -- spec checks ------------------------------------------------------------------------------
def _where(spec):
    return "alarm rule %r" % (spec.get("id"),)


def number(spec, key, default=None, low=None, required=False, integer=False, above=None):
    """``spec[key]`` as a finite number (``default`` when absent). Raises ``ValueError``
    naming the rule and the key."""
    if key not in spec:
        if required:
            raise ValueError("%s: %r is required" % (_where(spec), key))
        return default
    v = spec[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or (integer and not isinstance(v, int)):
        raise ValueError("%s: %s must be a finite %s, got %r"
                         % (_where(spec), key, "integer" if integer else "number", v))
    if low is not None and v < low:
        raise ValueError("%s: %s must be >= %r, got %r" % (_where(spec), key, low, v))
    if above is not None and v <= above:
        raise ValueError("%s: %s must be > %r, got %r" % (_where(spec), key, above, v))
    return v


class Rule:
    """Base: the common keys. ``keys`` lists the kind's own keys (others are refused)."""

    kind = None
    keys = ()
    run_many = None  # (st, samples, tz, reset) -> (late, flagged, events) or None: see above

    def __init__(self, spec):
        for key in spec:
            if key not in COMMON_KEYS and key not in self.keys:
                raise ValueError("%s: unknown key %r for rule %r (known: %s)"
                                 % (_where(spec), key, self.kind, ", ".join(self.keys)))
        self.id = spec["id"]
        self.quantity = spec["quantity"]
        self.severity = spec.get("severity", "warning")
        if self.severity not in SEVERITIES:
            raise ValueError("%s: severity must be one of %s, got %r"
                             % (_where(spec), ", ".join(SEVERITIES), self.severity))
        self.spec = dict(spec)

    def advance(self, st, t, tz):
        return []

    def step(self, st, t, v, tz):
        raise NotImplementedError


class AboveFor(Rule):
    kind = "above_for"
    keys = ("threshold", "duration_s", "hysteresis", "clear_below", "clear_for_s", "max_gap_s")

    def __init__(self, spec):
        Rule.__init__(self, spec)
        self.threshold = number(spec, "threshold", required=True)
        self.duration_s = number(spec, "duration_s", required=True, low=0)
        hyst = number(spec, "hysteresis", 0.05 * abs(self.threshold), low=0)
        self.clear_below = number(spec, "clear_below", self.threshold - hyst)
        if self.clear_below > self.threshold:
            raise ValueError("%s: clear_below must be <= threshold" % _where(spec))
        self.clear_for_s = number(spec, "clear_for_s", 300, low=0)
        self.max_gap_s = number(spec, "max_gap_s", max(self.duration_s, self.clear_for_s), low=0)

    def step(self, st, t, v, tz):
        last = st.get("l")
        if last is not None and t - last > self.max_gap_s:  # a run must be seen, not assumed
            st["r"] = st["c"] = None
        st["l"] = t
        if not st.get("on"):
            if v <= self.threshold:
                st["r"] = None
                return []
            if st.get("r") is None:
                st["r"] = t
            if t - st["r"] < self.duration_s:
                return []
            st["on"], st["s"], st["c"] = True, st["r"], None
            return [(RAISED, v, st["r"], {"threshold": self.threshold,
                                          "duration_s": self.duration_s})]
        if v >= self.clear_below:
            st["c"] = None
            return []
        if st.get("c") is None:
            st["c"] = t
        if t - st["c"] < self.clear_for_s:
            return []
        since = st["c"]
        st["on"], st["r"], st["c"] = False, None, None
        return [(CLEARED, v, since, {"clear_below": self.clear_below,
                                     "clear_for_s": self.clear_for_s, "raised_since": st["s"]})]


    def run_many(self, st, samples, tz, reset):
        """``step`` over ``samples`` in one loop (see the module docstring)."""
        get = st.get
        for key in ("_t", "l", "r", "c", "s"):
            if not _plain_number(get(key)):
                return None
        on = get("on")
        if on is not None and type(on) is not bool or on and "s" not in st:
            return None  # step() would fail on it (a hand-edited state): the engine resets it
        samples, late, t0 = in_order(samples, get("_t"))
        l, r, c, s = get("l"), get("r"), get("c"), get("s")
        w_l = w_r = w_c = w_on = w_s = False  # the keys step() would have written
        thr, dur, clear, clear_for, gap = (self.threshold, self.duration_s, self.clear_below,
                                           self.clear_for_s, self.max_gap_s)
        flagged = 0
        out = []
        for i, t, v, code in samples:
            if code:
                flagged += code == FLAGGED
                continue
            if l is not None and t - l > gap:  # a run must be seen, not assumed
                r = c = None
                w_r = w_c = True
            l = t
            w_l = True
            if not on:
                if v <= thr:
                    r = None
                    w_r = True
                    continue
                if r is None:
                    r = t
                    w_r = True
                if t - r < dur:
                    continue
                on, s, c = True, r, None
                w_on = w_s = w_c = True
                out.append((i, t, [(RAISED, v, r, {"threshold": thr, "duration_s": dur})]))
                continue
            if v >= clear:
                c = None
                w_c = True
                continue
            if c is None:
                c = t
                w_c = True
            if t - c < clear_for:
                continue
            since = c
            on, r, c = False, None, None
            w_on = w_r = w_c = True
            out.append((i, t, [(CLEARED, v, since, {"clear_below": clear,
                                                    "clear_for_s": clear_for,
                                                    "raised_since": s})]))
        for key, wrote, x in (("_t", samples, t0), ("l", w_l, l), ("r", w_r, r), ("c", w_c, c),
                              ("on", w_on, on), ("s", w_s, s)):
            if wrote:
                st[key] = x
        return late, flagged, out


class _Debounced(Rule):
    """Raise after ``consecutive`` readings meeting ``_bad``, clear after as many meeting
    ``_good`` (the rule's hysteresis)."""

    def _debounce(self, st, t, v, bad, good, detail):
        if not st.get("on"):
            if not bad:
                st["n"], st["f"] = 0, None
                return []
            st["n"] = st.get("n", 0) + 1
            if st.get("f") is None:
                st["f"] = t
            if st["n"] < self.consecutive:
                return []
            st["on"], st["s"], st["c"], st["cf"] = True, st["f"], 0, None
            return [(RAISED, v, st["f"], detail)]
        if not good:
            st["c"], st["cf"] = 0, None
            return []
        st["c"] = st.get("c", 0) + 1
        if st.get("cf") is None:
            st["cf"] = t
        if st["c"] < self.consecutive:
            return []
        since = st["cf"]
        st["on"], st["n"], st["f"] = False, 0, None
        return [(CLEARED, v, since, dict(detail, raised_since=st["s"]))]


class AtOrAbove(_Debounced):
    kind = "at_or_above"
    keys = ("threshold", "consecutive", "hysteresis", "clear_below")

    def __init__(self, spec):
        Rule.__init__(self, spec)
        self.threshold = number(spec, "threshold", required=True)
        self.consecutive = number(spec, "consecutive", 1, low=1, integer=True)
        hyst = number(spec, "hysteresis", 0.05 * abs(self.threshold), low=0)
        self.clear_below = number(spec, "clear_below", self.threshold - hyst)
        if self.clear_below > self.threshold:
            raise ValueError("%s: clear_below must be <= threshold" % _where(spec))

    def step(self, st, t, v, tz):
        return self._debounce(st, t, v, v >= self.threshold, v < self.clear_below,
                              {"threshold": self.threshold, "consecutive": self.consecutive})


class Rise(_Debounced):
    kind = "rise"
    keys = ("delta", "within_s", "consecutive")

    def __init__(self, spec):
        Rule.__init__(self, spec)
        self.delta = number(spec, "delta", required=True, above=0)
        self.within_s = number(spec, "within_s", required=True, above=0)
        self.consecutive = number(spec, "consecutive", 1, low=1, integer=True)

    def step(self, st, t, v, tz):
        q = st.setdefault("q", [])  # [t, v] with increasing v: the window's candidate minima
        while q and q[0][0] < t - self.within_s:
            q.pop(0)
        while q and q[-1][1] >= v:
            q.pop()
        q.append([t, v])
        if len(q) > _RISE_KEEP:  # only a long steady climb gets here: forget the oldest
            q.pop(0)
        risen = v - q[0][1] >= self.delta
        return self._debounce(st, t, v, risen, not risen,
                              {"delta": self.delta, "within_s": self.within_s,
                               "from_value": q[0][1], "consecutive": self.consecutive})


class FlushTime(Rule):
    """A clamp on the pipe cannot see the water flow; it sees the temperature move. While
    readings come at most ``sample_max_s`` apart (the engineer's test mode), a move of at
    least ``start_delta`` toward ``target`` between two readings starts a run, timed from the
    earlier reading (the flow began after it: conservative by up to one interval). The run
    passes if a reading reaches ``target`` (>= going ``up``, < going ``down``) within
    ``within_s``, fails otherwise; a move back before a verdict ends it undecided. Every
    verdict is reported; a failure raises, the next pass clears."""

    kind = "flush_time"
    keys = ("target", "within_s", "direction", "sample_max_s", "start_delta")
    reports = True

    def __init__(self, spec):
        Rule.__init__(self, spec)
        self.target = number(spec, "target", required=True)
        self.within_s = number(spec, "within_s", required=True, above=0)
        self.direction = spec.get("direction")
        if self.direction not in ("up", "down"):
            raise ValueError("%s: direction must be 'up' (hot) or 'down' (cold)" % _where(spec))
        self.sample_max_s = number(spec, "sample_max_s", 15, above=0)
        self.start_delta = number(spec, "start_delta", 0.5, above=0)

    def step(self, st, t, v, tz):
        p = st.get("p")
        st["p"] = [t, v]
        up = self.direction == "up"
        if p is None or t - p[0] > self.sample_max_s:  # not in test mode: nothing to time
            st["r"] = None
            return []
        moved = v - p[1] if up else p[1] - v
        run = st.get("r")
        if run is None:
            was_there = p[1] >= self.target if up else p[1] < self.target
            if moved < self.start_delta or was_there:
                return []
            st["r"] = run = p[0]
        elif moved <= -self.start_delta:  # the draw stopped before a verdict
            st["r"] = None
            return []
        reached = v >= self.target if up else v < self.target
        elapsed = t - run
        if not reached and elapsed <= self.within_s:
            return []
        st["r"] = None
        passed = reached and elapsed <= self.within_s
        detail = {"target": self.target, "within_s": self.within_s, "started": run,
                  "elapsed_s": elapsed, "passed": passed}
        out = [(REPORT, v, run, dict(detail))]
        if passed and st.get("on"):
            st["on"] = False
            out.append((CLEARED, v, run, detail))
        elif not passed and not st.get("on"):
            st["on"] = True
            out.append((RAISED, v, run, detail))
        return out


