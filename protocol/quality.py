"""Quality flags for readings, and the pure checker that sets them.

Theory of operation
-------------------
Every reading carries one flag (the record's quality extension field). The checker keeps,
per quantity, the last accepted value and a run length of identical values; nothing else.
Rules are data (a profile's file), per quantity:

``lo``, ``hi``
    the valid range (the part's output range or the physically possible): outside it the
    reading is ``out_of_range``.
``max_step``
    the largest plausible change between consecutive readings. A jump larger than that is a
    ``spike``; if the next reading agrees with the jumped value (within ``max_step``) the
    level really changed (a window opened, a tap ran) and it is accepted as ``ok``.
``stuck_n``
    that many identical consecutive values is ``stuck`` (0 turns it off: a sonar over an
    unchanged bin legitimately repeats its centimetre).

A read that failed (bus error, CRC error after retry) is ``sensor_failed`` and carries no
value: the caller records the flag, never an invented value. Flagged values are kept raw
and excluded from aggregates and alarms by whoever aggregates.
Runs on MicroPython and CPython.
"""

OK = "ok"
STUCK = "stuck"
SPIKE = "spike"
OUT_OF_RANGE = "out_of_range"
SENSOR_FAILED = "sensor_failed"
TIME_UNSYNCED = "time_unsynced"
FLAGS = (OK, STUCK, SPIKE, OUT_OF_RANGE, SENSOR_FAILED, TIME_UNSYNCED)

# Defaults from the parts' output ranges (REFERENCE.md §1.4, §2.1, §4) and what a room,
# a pipe or a street can physically show. Profiles override them.
DEFAULT_RULES = {
    "co2_ppm": {"lo": 250, "hi": 40000, "max_step": 1500, "stuck_n": 6},
    "temperature_c": {"lo": -40, "hi": 125, "max_step": 15, "stuck_n": 0},
    "rh_percent": {"lo": 0, "hi": 100, "max_step": 30, "stuck_n": 6},
    "no2_ppb": {"lo": -20, "hi": 5000, "max_step": 400, "stuck_n": 6},
    "distance_cm": {"lo": 20, "hi": 765, "max_step": 800, "stuck_n": 0},
}


class QualityChecker:
    """Flags a stream of readings per quantity (see the module docstring).

    ``rules`` maps quantity name → dict with ``lo``, ``hi``, ``max_step``, ``stuck_n``
    (missing keys: no such check). Quantities without rules are only checked for failure.
    """

    def __init__(self, rules=None):
        self.rules = {}
        for name, rule in (rules if rules is not None else DEFAULT_RULES).items():
            for key in rule:
                if key not in ("lo", "hi", "max_step", "stuck_n"):
                    raise ValueError("rule for %s has unknown key %r" % (name, key))
            self.rules[name] = rule
        self._last = {}       # stream key -> last accepted value
        self._pending = {}    # stream key -> value of an unconfirmed jump
        self._same = {}       # stream key -> (value, run length)

    def check(self, quantity, value, key=None):
        """The flag for ``value`` of ``quantity`` (None = the read failed).

        ``key`` names the stream whose history the stuck and spike checks use (default: the
        quantity); give each sensor its own (``"pipe.temperature_c"``) when two parts report
        the same quantity."""
        if value is None:
            return SENSOR_FAILED
        rule = self.rules.get(quantity)
        if rule is None:
            return OK
        lo = rule.get("lo")
        hi = rule.get("hi")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return OUT_OF_RANGE
        key = quantity if key is None else key
        if self._is_stuck(key, value, rule.get("stuck_n", 0)):
            return STUCK
        return self._step(key, value, rule.get("max_step"))

    def snapshot(self):
        """The checker's memory as a JSON-able dict (kept in RTC memory across deep sleep)."""
        return {"l": self._last, "p": self._pending, "s": self._same}

    def restore(self, snap):
        """Continue from a ``snapshot()``; a malformed one is ignored (a fresh start)."""
        try:
            last, pending, same = dict(snap["l"]), dict(snap["p"]), {}
            for k, pair in snap["s"].items():
                same[k] = (pair[0], int(pair[1]))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            return False
        self._last, self._pending, self._same = last, pending, same
        return True

    def _is_stuck(self, key, value, stuck_n):
        prev, run = self._same.get(key, (None, 0))
        run = run + 1 if value == prev else 1
        self._same[key] = (value, run)
        return bool(stuck_n) and run >= stuck_n

    def _step(self, key, value, max_step):
        last = self._last.get(key)
        if max_step is None or last is None or abs(value - last) <= max_step:
            self._last[key] = value
            self._pending.pop(key, None)
            return OK
        pending = self._pending.get(key)
        if pending is not None and abs(value - pending) <= max_step:
            self._last[key] = value
            del self._pending[key]
            return OK
        self._pending[key] = value
        return SPIKE
