"""Alarm rules as data, evaluated on each device's stream of records (pure core, no I/O).

Theory of operation
-------------------
Rules come from data: a profile's ``[[alarms]]`` tables (``hardware/profiles/*.toml``, keys
in hardware/README.md) plus, for a legionella outlet, its ``[flush_test]`` section, selected
by the device's inventory attributes (``applies_to``) and optionally overridden by the
gateway's configuration (``rules_from_profile``). Each rule kind is a small state machine in
``gateway.alarm_rules`` (point rules) or ``gateway.alarm_windows`` (hour/day/year verdicts);
docs/gateway-pipeline.md explains every kind and its defaults.

``AlarmEngine.observe(device_id, boot_epoch, record, received_s)`` runs every rule of the
device on one record and returns ``AlarmEvent``s (``raised`` / ``cleared`` / ``report``):

* **Which values count.** A value counts when its flag is ``ok`` or ``time_unsynced`` (that
  flag is about the record's time, not the value); ``stuck``, ``spike``, ``out_of_range`` and
  ``sensor_failed`` values are left out of every alarm and aggregate (RELIABILITY.md rule
  10). A flagged reading still moves time on, so it can close a window.
* **Time.** A record's own ``t`` when it has one (the node only sets it when its clock was
  trusted), else ``received_s``, the gateway's receive time. A backlog of unsynced records
  therefore collapses onto its arrival time: duration rules see it as one moment (they
  cannot raise from it) and window rules put it in the arrival's window. The record is
  stored either way; only the alarm evaluation is approximate.
* **Order.** Records are evaluated once, in key order ``(boot_epoch, seq)``: a record at or
  below the device's last evaluated key (a duplicate, or one reordered behind a newer one)
  is skipped; so is, per rule, a sample older than the rule's last one.
* **Transactions.** The pipeline evaluates before the outbox commits; ``rollback()`` puts
  every device touched since the last ``commit()`` back as it was, so a failed commit and
  the node's resend evaluate the records exactly once.
* **State** is a small JSON-able dict per device (``state()`` / ``AlarmEngine(state=...)``),
  persisted by the agent next to the outbox as ``state_json()``: the same JSON text, with
  each device's part encoded again only after its state changed (no copy of the whole).
* **Speed.** ``observe`` runs for every record the gateway takes in (tens of thousands a
  second), so it tests the usual types first and falls back to the general checks; the undo
  copies and ``state()`` use a copier for JSON-like values instead of ``copy.deepcopy``.
* ``tick(now_s)`` closes windows that ended before ``now_s`` for devices that went quiet;
  records of a window closed that way are then too late for it.

A rule that meets state it cannot use (a corrupt or hand-edited state) is reset and counted
in ``counters["rule_errors"]``; the stream keeps flowing.
"""

import copy
import math
from dataclasses import dataclass, field
from datetime import timezone

from gateway import alarm_rules as _point
from gateway import alarm_windows as _window
from gateway.alarm_rules import CLEARED, RAISED, REPORT  # noqa: F401  (re-exported)
from gateway.outbox_policy import compact_json
from protocol import quality, quantities

KINDS = {cls.kind: cls for cls in (_point.AboveFor, _point.AtOrAbove, _point.Rise,
                                   _point.FlushTime, _window.MeanAbove, _window.MaxBelow,
                                   _window.MinAtOrAbove, _window.TimeInBand)}
VALID_FLAGS = (quality.OK, quality.TIME_UNSYNCED)
STATE_VERSION = 1
_T_MAX = 2 ** 36  # Unix seconds (year ~4147): a later time is junk, not a reading's time
# No quantity civicedge measures comes near this; a value beyond it (or NaN/inf) is left out
# like a flagged one, so a window's running sum stays finite and its state storable.
VALUE_ABS_MAX = 1e15
_RULE_FAULTS = (TypeError, KeyError, IndexError, ValueError, AttributeError, ArithmeticError,
                OSError)


@dataclass
class AlarmEvent:
    """``kind``: ``raised`` / ``cleared`` / ``report``; ``value`` in the quantity's unit (a
    window's mean, max, min or hours for window rules); ``since``: Unix s when the condition
    began (raised), when the clearing condition began (cleared) or the window start (report);
    ``at``: the time of the sample (or tick) that decided it."""

    kind: str
    rule_id: str
    device_id: str
    quantity: str
    value: float
    since: float
    at: float
    severity: str
    detail: dict = field(default_factory=dict)

    def to_dict(self):
        return {"kind": self.kind, "rule": self.rule_id, "device_id": self.device_id,
                "quantity": self.quantity, "value": self.value, "since": self.since,
                "at": self.at, "severity": self.severity, "detail": dict(self.detail)}


def build_rule(spec):
    """A rule object from one ``[[alarms]]`` table (a dict). Raises ``ValueError`` naming the
    rule and the key for anything wrong."""
    if not isinstance(spec, dict):
        raise ValueError("an alarm rule must be a table, got %r" % (spec,))
    rid = spec.get("id")
    if not isinstance(rid, str) or not rid:
        raise ValueError("alarm rule %r: id must be a non-empty string" % (rid,))
    q = spec.get("quantity")
    row = quantities.BY_QUANTITY.get(q) if isinstance(q, str) else None
    if row is None or row[4] != quantities.NUM:
        raise ValueError("alarm rule %r: quantity %r is not a numeric quantity of "
                         "protocol/quantities.py" % (rid, q))
    kind = spec.get("rule")
    if kind not in KINDS:
        raise ValueError("alarm rule %r: rule %r is not one of %s"
                         % (rid, kind, ", ".join(sorted(KINDS))))
    if "applies_to" in spec and not isinstance(spec["applies_to"], dict):
        raise ValueError("alarm rule %r: applies_to must be a table" % rid)
    return KINDS[kind](spec)


def applies(spec, attributes):
    """True if every ``applies_to`` attribute of ``spec`` equals the device's (a device that
    lacks the attribute gets no such rule: say ``outlet = "hot"`` in its inventory)."""
    want = spec.get("applies_to") or {}
    attributes = attributes or {}
    return all(k in attributes and attributes[k] == v for k, v in want.items())


def flush_specs(flush_test, attributes):
    """The ``flush_time`` rule for a legionella outlet from its profile's ``[flush_test]``
    (hot: reach ``hot_target_c`` within ``hot_within_s``; cold: fall below ``cold_target_c``
    within ``cold_within_s``); test mode is readings at most 1.5 sample intervals apart."""
    kind = (attributes or {}).get("outlet")
    if not isinstance(flush_test, dict) or kind not in ("hot", "cold"):
        return []
    step = flush_test.get("sample_interval_s", 10)
    spec = {"id": "%s_flush_test" % kind, "quantity": "temperature_c", "rule": "flush_time",
            "target": flush_test.get("%s_target_c" % kind),
            "within_s": flush_test.get("%s_within_s" % kind),
            "direction": "up" if kind == "hot" else "down", "severity": "warning",
            "basis": "HSE HSG274 Part 2 sentinel outlet test (REFERENCE.md 2.5)"}
    if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
        spec["sample_max_s"] = 1.5 * step
    return [spec]


def rules_from_profile(profile, attributes=None, overrides=None):
    """The rules for one device: ``profile`` is a parsed profile TOML (a dict; the shell reads
    the file), ``attributes`` the device's inventory attributes (e.g. ``{"outlet": "hot"}``),
    ``overrides`` maps a rule id to keys replacing the profile's (gateway configuration;
    ``enabled = false`` drops the rule). Raises ``ValueError`` naming the rule and key."""
    specs = [s for s in (profile.get("alarms") or []) if isinstance(s, dict)]
    specs = [s for s in specs if applies(s, attributes)]
    specs += flush_specs(profile.get("flush_test"), attributes)
    overrides = dict(overrides or {})
    out = []
    for spec in specs:
        spec = dict(spec)
        spec.update(overrides.pop(spec.get("id"), {}))
        if spec.pop("enabled", True) is False:
            continue
        out.append(build_rule(spec))
    if overrides:
        raise ValueError("alarm overrides name rules this device does not have: %s"
                         % ", ".join(sorted(map(str, overrides))))
    return out


def _time_ok(t):
    return (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
            and 0 <= t < _T_MAX)


def _value_ok(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _uint32(x):
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 0xFFFFFFFF


def _plan(rule):
    """``(rule, id, quantity, windowed, advances)`` for ``AlarmEngine.observe``'s loop:
    ``windowed`` when the kind's ``advance`` starts with ``_Window.advance``'s test (it
    returns no events unless ``t`` passed the open window's end), ``advances`` unless the
    kind keeps ``Rule.advance`` (no events, ever)."""
    advance = type(rule).advance
    return (rule, rule.id, rule.quantity, advance in _WINDOW_ADVANCES,
            advance is not _point.Rule.advance)


_WINDOW_ADVANCES = (_window._Window.advance, _window.TimeInBand.advance)
_ATOMIC = frozenset((int, float, str, bool, type(None)))


def _copy(v):
    """``copy.deepcopy`` of a state value (JSON-like: dicts, lists, numbers, text, None) at
    a fraction of its cost; anything else goes to ``copy.deepcopy``."""
    kind = type(v)
    if kind in _ATOMIC:
        return v
    if kind is dict:
        return {k: x if type(x) in _ATOMIC else _copy(x) for k, x in v.items()}
    if kind is list:
        return [x if type(x) in _ATOMIC else _copy(x) for x in v]
    return copy.deepcopy(v)


_JSON = compact_json  # json.dumps(x, separators=(",", ":"), allow_nan=False), without its setup


class AlarmEngine:
    """Rules per device (``device_rules``: device_id → rules from ``rules_from_profile`` or
    ``build_rule``), local time ``tz`` (a ``datetime.tzinfo``; None: UTC; a UK site passes
    ``zoneinfo.ZoneInfo("Europe/London")``) and a ``state()`` to resume from. Raises
    ``ValueError`` for two rules with one id on a device or a malformed ``state``."""

    def __init__(self, device_rules, tz=None, state=None):
        self._rules = {}
        for dev, rules in dict(device_rules).items():
            rules = tuple(rules)
            ids = [r.id for r in rules]
            if len(set(ids)) != len(ids):
                raise ValueError("device %r has two alarm rules with one id: %s" % (dev, ids))
            self._rules[dev] = rules
        self._plan = {dev: tuple(_plan(r) for r in rules) for dev, rules in self._rules.items()}
        self.tz = tz or timezone.utc
        self._dev = {}
        self._undo = {}
        # device -> the JSON text of its state; never of a device touched since the last
        # commit (in _undo): _touch drops it, state_json() keeps only the others'
        self._json = {}
        self.counters = {"evaluated": 0, "excluded_flagged": 0, "skipped_duplicate": 0,
                         "skipped_late": 0, "skipped_untimed": 0, "events": 0, "rule_errors": 0}
        if state is not None:
            self.load_state(state)

    def rules_for(self, device_id):
        return self._rules.get(device_id, ())

    # -- evaluation ---------------------------------------------------------------------------
    def observe(self, device_id, boot_epoch, record, received_s=None):
        """Events from one record of ``device_id`` (a decoded reading/status/gap dict with
        ``seq``, ``t``, ``values``). Never raises for the record's content."""
        return self.observe_many(device_id, boot_epoch, (record,), received_s)[0]

    def observe_many(self, device_id, boot_epoch, records, received_s=None):
        """``[observe(device_id, boot_epoch, r, received_s) for r in records]`` (each a list
        of events, in order), evaluated in one call: what stays the same from record to
        record (the device's rules and state, the epoch check) is looked up once."""
        # The hot path of the gateway's ingest: each check has a fast form for the types a
        # decoder gives and falls back to the general one, so the verdicts are the same.
        plan = self._plan.get(device_id)
        if not plan or not (type(boot_epoch) is int and 0 <= boot_epoch <= 0xFFFFFFFF
                            or _uint32(boot_epoch)):
            return [[] for _ in records]
        result, st, counters, tz, valid = [], None, self.counters, self.tz, VALID_FLAGS
        ke = ks = None  # the key (boot_epoch, seq) of the last evaluated record: st["k"]
        evaluated = 0
        for record in records:
            out = []
            result.append(out)
            if not isinstance(record, dict):
                continue
            seq = record.get("seq")
            if not (type(seq) is int and 0 <= seq <= 0xFFFFFFFF or _uint32(seq)):
                continue
            if st is None:
                st = self._dev.get(device_id) if device_id in self._undo else None
                if st is None:
                    st = self._touch(device_id)
                k = st["k"]  # [boot_epoch, seq] of the last evaluated record, or None
                if k is not None:
                    ke, ks = k
                r = st["r"]
            if ke is not None and (boot_epoch < ke or boot_epoch == ke and seq <= ks):
                counters["skipped_duplicate"] += 1
                continue
            ke, ks = boot_epoch, seq
            if record.get("kind") == "gap":
                continue
            t = record.get("t")
            if t is None:
                t = received_s
            kind = type(t)
            if not ((kind is float or kind is int) and 0 <= t < _T_MAX) and not _time_ok(t):
                counters["skipped_untimed"] += 1
                continue
            values = {}  # quantity -> the record's last well-formed [quantity, value, flag]
            items = record.get("values")
            for item in items if type(items) is list or isinstance(items, (list, tuple)) else ():
                if type(item) is list and len(item) == 3 and type(item[0]) is str or (
                        isinstance(item, (list, tuple)) and len(item) == 3
                        and isinstance(item[0], str)):
                    values[item[0]] = item
            evaluated += 1
            for rule, rid, quantity, windowed, advances in plan:
                item = values.get(quantity)
                rs = r.get(rid)
                if rs is None:
                    rs = r[rid] = {}
                try:
                    last = rs.get("_t")
                    if last is not None and t < last:
                        counters["skipped_late"] += 1
                        continue
                    rs["_t"] = t
                    if windowed:  # the window rules' own first test: has t passed the window?
                        w = rs.get("w")
                        evs = None if w is None or t < w[1] else rule.advance(rs, t, tz)
                    else:
                        evs = rule.advance(rs, t, tz) if advances else None
                    if item is not None:
                        v = item[1]
                        if item[2] in valid and (type(v) is float or type(v) is int or (
                                _value_ok(v))) and -VALUE_ABS_MAX <= v <= VALUE_ABS_MAX:
                            stepped = rule.step(rs, t, v, tz)
                            evs = evs + stepped if evs else stepped
                        else:
                            counters["excluded_flagged"] += 1
                except _RULE_FAULTS:
                    self._reset(st, rule, t)
                    continue
                if evs:
                    out.extend(self._events(device_id, rule, evs, t))
        if ke is not None and st is not None:
            st["k"] = [ke, ks]
        counters["evaluated"] += evaluated
        return result

    def tick(self, now_s):
        """Events from closing every window that ended at or before ``now_s``."""
        if not _time_ok(now_s):
            return []
        out = []
        for dev, rules in self._rules.items():
            if dev not in self._dev:
                continue
            for rule in rules:
                rs = self._dev[dev]["r"].get(rule.id)
                w = rs.get("w") if rs else None
                if not isinstance(w, list) or len(w) != 2 or not _time_ok(w[1]) or now_s < w[1]:
                    continue
                st = self._touch(dev)
                rs = st["r"][rule.id]
                try:
                    evs = rule.advance(rs, now_s, self.tz)
                    rs["_t"] = max(rs.get("_t") or 0, w[1])  # the window is decided: later is late
                except _RULE_FAULTS:
                    self._reset(st, rule, now_s)
                    continue
                out.extend(self._events(dev, rule, evs, now_s))
        return out

    def _events(self, dev, rule, evs, at):
        self.counters["events"] += len(evs)
        return [AlarmEvent(kind, rule.id, dev, rule.quantity, value, since, at, rule.severity,
                           detail) for kind, value, since, detail in evs]

    def _reset(self, st, rule, t):
        self.counters["rule_errors"] += 1
        st["r"][rule.id] = {"_t": t}

    # -- state and transactions ---------------------------------------------------------------
    def _touch(self, dev):
        if dev not in self._undo:
            self._undo[dev] = _copy(self._dev.get(dev))
            self._json.pop(dev, None)  # its state may change: state_json() encodes it afresh
        st = self._dev.get(dev)
        if st is None:
            st = self._dev[dev] = {"k": None, "r": {}}
        return st

    def commit(self):
        """The outbox committed: keep everything evaluated since the last commit."""
        self._undo.clear()

    def rollback(self):
        """The outbox did not commit: forget everything evaluated since the last commit."""
        for dev, old in self._undo.items():
            self._json.pop(dev, None)
            if old is None:
                self._dev.pop(dev, None)
            else:
                self._dev[dev] = old
        self._undo.clear()

    def state(self):
        """Every device's alarm state as a JSON-able dict (a copy)."""
        return {"v": STATE_VERSION, "devices": {dev: _copy(st) for dev, st in self._dev.items()}}

    def state_json(self):
        """``state()`` as compact JSON text: the text of ``json.dumps(state(), separators=(",",
        ":"), allow_nan=False)``, without copying the state. Each device's part is kept until
        the device is touched again, so a batch that touched a few devices encodes only
        theirs. Raises ``ValueError`` if a state holds what JSON cannot (NaN, infinity)."""
        cache, touched, parts = self._json, self._undo, []
        for dev, st in self._dev.items():
            text = cache.get(dev)
            if text is None:
                try:
                    text = _JSON(dev) + ":" + _JSON(st)
                except (TypeError, ValueError) as e:
                    raise ValueError("alarm state of device %r cannot be stored as JSON (%s)"
                                     % (dev, e)) from None
                if dev not in touched:  # it may still change before the commit
                    cache[dev] = text
            parts.append(text)
        return '{"v":%d,"devices":{%s}}' % (STATE_VERSION, ",".join(parts))

    def active_count(self):
        """How many alarms are raised now, over every device and rule."""
        return sum(1 for st in self._dev.values() for rs in st["r"].values() if rs.get("on"))

    def forget(self, device_id):
        """Forget the order of ``device_id``'s records (its node restarted at a lower boot
        epoch after re-provisioning); rule states stay, they follow time, not keys."""
        if device_id in self._dev:
            self._touch(device_id)["k"] = None

    def active(self, device_id):
        """Ids of the device's rules whose alarm is raised."""
        st = self._dev.get(device_id) or {"r": {}}
        return sorted(rid for rid, rs in st["r"].items() if rs.get("on"))

    def load_state(self, state):
        """Resume from ``state()``. Raises ``ValueError`` if it is not one."""
        if not isinstance(state, dict) or state.get("v") != STATE_VERSION \
                or not isinstance(state.get("devices"), dict):
            raise ValueError("alarm state is not a version-%d state() dict" % STATE_VERSION)
        devs = {}
        for dev, st in state["devices"].items():
            ok = isinstance(st, dict) and isinstance(st.get("r"), dict) and all(
                isinstance(v, dict) for v in st["r"].values())
            k = st.get("k") if isinstance(st, dict) else None
            if not ok or not (k is None or (isinstance(k, list) and len(k) == 2
                                            and _uint32(k[0]) and _uint32(k[1]))):
                raise ValueError("alarm state of device %r is malformed: delete it to start "
                                 "that device's alarms afresh" % (dev,))
            devs[dev] = {"k": k, "r": copy.deepcopy(st["r"])}
        self._dev = devs
        self._undo.clear()
        self._json.clear()
