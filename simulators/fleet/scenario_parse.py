"""Checks for the fields of a scenario file (``simulators.fleet.scenario``): the error type,
a checked view of one TOML table, and the parsers of durations, start times and fault times.

Every failure is a ``ScenarioError`` whose message names the file, the table (``groups[2]``,
``faults[0]``, ``scenario``) and the key, and says what was expected. Durations are whole
seconds: ``"90s"``, ``"45m"``, ``"10h"``, ``"2d"``, ``"1h30m"`` (units in that order, each at
most once), or a plain int of seconds. Times are Unix seconds (int, UTC).
"""

import calendar
import datetime
import math
import re

REQUIRED = object()
_DURATION = re.compile(r"([+-]?)(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?\Z")
_START = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:Z|z|\+00:00)\Z")
_HHMM = re.compile(r"([0-9]{1,2}):([0-9]{2})\Z")
_DAY_S = 86400
_UNITS_S = (86400, 3600, 60, 1)


class ScenarioError(ValueError):
    """A scenario file that cannot be run. ``where`` (the file), ``table`` (e.g. ``groups[2]``)
    and ``key`` say where; the message says what was expected."""

    def __init__(self, message, where=None, table=None, key=None):
        ValueError.__init__(self, message)
        self.where, self.table, self.key = where, table, key


def show(value):
    """``repr(value)``, cut to 60 characters (a message must stay readable)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def parse_duration(value, signed=False):
    """Seconds (int) of ``value``: a duration string or an int of seconds. With ``signed``, a
    string must start with ``+`` or ``-`` and the result may be negative. Raises ``ValueError``
    saying what was expected (the caller names the key)."""
    expected = ("a signed duration such as '-2h', '+1d', '+1h30m', or an int of seconds" if signed
                else "a duration such as '90s', '45m', '10h', '2d', '1h30m', or an int of seconds")
    if is_int(value):
        if not signed and value < 0:
            raise ValueError("expected %s >= 0, got %s" % (expected, show(value)))
        return value
    m = _DURATION.match(value) if isinstance(value, str) else None
    if m is None or not any(m.groups()[1:]) or bool(m.group(1)) != signed:
        raise ValueError("expected %s, got %s" % (expected, show(value)))
    seconds = sum(int(g or 0) * u for g, u in zip(m.groups()[1:], _UNITS_S))
    return -seconds if m.group(1) == "-" else seconds


def parse_start(value):
    """Unix seconds (int) of an RFC 3339 UTC time (``2026-03-02T07:00:00Z`` or ``+00:00``; whole
    seconds), given as a string or as a TOML offset date-time. Raises ``ValueError``."""
    expected = "an RFC 3339 UTC time such as '2026-03-02T07:00:00Z' (whole seconds, 'Z' or +00:00)"
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() != datetime.timedelta(0) or value.microsecond:
            raise ValueError("expected %s, got %s" % (expected, show(value)))
        when = value.replace(tzinfo=None)
    else:
        m = _START.match(value) if isinstance(value, str) else None
        if m is None:
            raise ValueError("expected %s, got %s" % (expected, show(value)))
        try:
            when = datetime.datetime(*(int(g) for g in m.groups()))
        except ValueError:
            raise ValueError("expected %s; %s is not a date and time" % (expected, show(value))) from None
    wall_s = calendar.timegm(when.timetuple())
    if wall_s < 0:
        raise ValueError("expected a time from 1970-01-01T00:00:00Z on, got %s" % show(value))
    return wall_s


def parse_at(value, start_wall_s):
    """Seconds after the start (int) of a fault's ``at``: ``"HH:MM"`` on the start day (UTC) or
    ``"+4h30m"`` after the start. Raises ``ValueError``."""
    expected = "'HH:MM' (UTC, on the start day) or '+DURATION' after the start (e.g. '+4h30m')"
    if isinstance(value, str) and value.startswith("+"):
        try:
            return parse_duration(value, signed=True)
        except ValueError:
            raise ValueError("expected %s, got %s" % (expected, show(value))) from None
    m = _HHMM.match(value) if isinstance(value, str) else None
    if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError("expected %s, got %s" % (expected, show(value)))
    midnight = start_wall_s - start_wall_s % _DAY_S
    return midnight + int(m.group(1)) * 3600 + int(m.group(2)) * 60 - start_wall_s


class Table:
    """A checked view of one TOML table: ``where`` the file, ``name`` the table (``groups[2]``).

    Refuses a value that is not a table, and any key not in ``allowed``."""

    def __init__(self, where, name, data, allowed):
        self.where, self.name = where, name
        if not isinstance(data, dict):
            raise ScenarioError("%s: %s: expected a table, got %s" % (where, name, show(data)), where, name)
        for key in data:
            if key not in allowed:
                raise ScenarioError("%s: %s: unknown key %s (allowed: %s)"
                                    % (where, name, show(key), ", ".join(allowed)), where, name, key)
        self.data = data

    def error(self, key, what):
        """A ``ScenarioError`` about ``key`` of this table (``key`` None: the table itself)."""
        label = self.name if key is None else "%s.%s" % (self.name, key)
        return ScenarioError("%s: %s: %s" % (self.where, label, what), self.where, self.name, key)

    def has(self, key):
        return key in self.data

    def raw(self, key, default=REQUIRED):
        if key in self.data:
            return self.data[key]
        if default is REQUIRED:
            raise self.error(key, "missing (required)")
        return default

    def string(self, key, default=REQUIRED, pattern=None, what="a string"):
        """A str; with ``pattern`` (a compiled regex, matched whole) described by ``what``."""
        value = self.raw(key, default)
        if value is default and key not in self.data:
            return value
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            raise self.error(key, "expected %s, got %s" % (what, show(value)))
        return value

    def choice(self, key, options, default=REQUIRED):
        value = self.raw(key, default)
        if key in self.data and (not isinstance(value, str) or value not in options):
            raise self.error(key, "expected one of %s, got %s" % (", ".join(map(repr, options)), show(value)))
        return value

    def integer(self, key, low, high, default=REQUIRED):
        value = self.raw(key, default)
        if key in self.data and (not is_int(value) or not low <= value <= high):
            raise self.error(key, "expected an int from %d to %d, got %s" % (low, high, show(value)))
        return value

    def boolean(self, key, default=REQUIRED):
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "expected true or false, got %s" % show(value))
        return value

    def number(self, key, default=REQUIRED):
        """A finite float (an int is taken as a float)."""
        value = self.raw(key, default)
        if key not in self.data:
            return value
        return check_number(self, key, value)

    def duration(self, key, low, high, default=REQUIRED, signed=False):
        """Whole seconds in [low, high]; ``high`` may be described in the message as seconds."""
        value = self.raw(key, default)
        if key not in self.data:
            return value
        try:
            seconds = parse_duration(value, signed)
        except ValueError as e:
            raise self.error(key, str(e)) from None
        if not low <= seconds <= high:
            raise self.error(key, "expected a duration from %ds to %ds, got %s (%ds)"
                             % (low, high, show(value), seconds))
        return seconds

    def array(self, key, default=REQUIRED, min_len=0):
        value = self.raw(key, default)
        if key in self.data and (not isinstance(value, list) or len(value) < min_len):
            raise self.error(key, "expected an array of at least %d item(s), got %s" % (min_len, show(value)))
        return value


def check_number(table, key, value):
    """``value`` as a finite float, or the table's error about ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise table.error(key, "expected a number, got %s" % show(value))
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):
        raise table.error(key, "expected a finite number, got %s" % show(value))
    return v


def json_plain(value):
    """True if ``value`` is made of str, int, float, bool, lists and str-keyed tables only (no
    TOML date or time: the run record is JSON)."""
    if isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(json_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and json_plain(v) for k, v in value.items())
    return False
