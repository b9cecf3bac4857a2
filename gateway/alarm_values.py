"""Which values the alarm rules of ``gateway.alarms`` count, and a frame's samples of one
quantity (pure).

A value counts when its flag is ``ok`` or ``time_unsynced`` (that flag is about the record's
time, not the value), it is a finite number, and within ``VALUE_ABS_MAX``; ``stuck``,
``spike``, ``out_of_range`` and ``sensor_failed`` values, and absurd ones, are left out of
every alarm and aggregate (RELIABILITY.md rule 10). A time is Unix seconds below ``_T_MAX``.
"""

import math

from gateway.alarm_rules import ABSENT as _ABSENT
from gateway.alarm_rules import COUNTS as _COUNTS
from gateway.alarm_rules import FLAGGED as _FLAGGED
from protocol import quality

VALID_FLAGS = (quality.OK, quality.TIME_UNSYNCED)
_T_MAX = 2 ** 36  # Unix seconds (year ~4147): a later time is junk, not a reading's time
# No quantity civicedge measures comes near this; a value beyond it (or NaN/inf) is left out
# like a flagged one, so a window's running sum stays finite and its state storable.
VALUE_ABS_MAX = 1e15


def _time_ok(t):
    return (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
            and 0 <= t < _T_MAX)


def _value_ok(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _uint32(x):
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 0xFFFFFFFF


def _samples(evaluated, quantity):
    """``[(index, t, value, code)]`` of ``quantity`` in the evaluated records (its last
    well-formed ``[quantity, value, flag]``): ``code`` ``_COUNTS`` (the value counts: a
    number, flag ``ok``/``time_unsynced``, within ``VALUE_ABS_MAX``), ``_FLAGGED`` (there,
    left out) or ``_ABSENT``."""
    out, valid = [], VALID_FLAGS
    for i, t, items in evaluated:
        item = None
        for it in items:
            if type(it) is list and len(it) == 3 and type(it[0]) is str or (
                    isinstance(it, (list, tuple)) and len(it) == 3 and isinstance(it[0], str)):
                if it[0] == quantity:
                    item = it
        if item is None:
            out.append((i, t, None, _ABSENT))
            continue
        v = item[1]
        if item[2] in valid and (type(v) is float or type(v) is int or _value_ok(v)) \
                and -VALUE_ABS_MAX <= v <= VALUE_ABS_MAX:
            out.append((i, t, v, _COUNTS))
        else:
            out.append((i, t, v, _FLAGGED))
    return out
