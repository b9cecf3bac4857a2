"""Alarm rules as data, evaluated on each device's stream of records (pure core, no I/O).

Theory of operation
-------------------
Rules come from data: a profile's ``[[alarms]]`` tables, selected and overridden per device
(``gateway.alarm_profile``: ``rules_from_profile``, ``build_rule``; re-exported here). Each
rule kind is a small state machine in ``gateway.alarm_rules`` (point rules) or
``gateway.alarm_windows`` (hour/day/year verdicts); docs/gateway-pipeline.md explains every
kind and its defaults.

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
  ``observe_many`` checks a frame's records first, then runs each rule over all of them
  (rule by rule: a rule's state is its own, so the verdicts are those of record by record);
  a rule kind may run its usual case in one loop of its own (``run_many``: ``above_for``,
  ``mean_above``), which declines state it does not expect.
* ``tick(now_s)`` closes windows that ended before ``now_s`` for devices that went quiet;
  records of a window closed that way are then too late for it.

A rule that meets state it cannot use (a corrupt or hand-edited state) is reset and counted
in ``counters["rule_errors"]``; the stream keeps flowing.
"""

import copy
from dataclasses import dataclass, field
from datetime import timezone

from gateway import alarm_rules as _point
from gateway import alarm_windows as _window
from gateway.alarm_profile import (  # noqa: F401  (re-exported: the engine's API)
    KINDS, applies, build_rule, flush_specs, rules_from_profile)
from gateway.alarm_rules import CLEARED, RAISED, REPORT  # noqa: F401  (re-exported)
from gateway.alarm_values import (  # noqa: F401 (VALID_FLAGS, VALUE_ABS_MAX: re-exported)
    _COUNTS, _FLAGGED, _T_MAX, VALID_FLAGS, VALUE_ABS_MAX, _samples, _time_ok, _uint32)
from gateway.outbox_policy import compact_json

STATE_VERSION = 1
_RULE_FAULTS = _point.RULE_FAULTS


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
        of events, in order), evaluated in one call: the records are checked first, then
        each rule runs over those evaluated (its events go to their record, in rule order)."""
        # The hot path of the gateway's ingest: each check has a fast form for the types a
        # decoder gives and falls back to the general one, so the verdicts are the same.
        plan = self._plan.get(device_id)
        result = [[] for _ in records]
        if not plan or not (type(boot_epoch) is int and 0 <= boot_epoch <= 0xFFFFFFFF
                            or _uint32(boot_epoch)):
            return result
        st, counters = None, self.counters
        ke = ks = None  # the key (boot_epoch, seq) of the last evaluated record: st["k"]
        evaluated = []  # (index, t, the record's values)
        for i, record in enumerate(records):
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
            items = record.get("values")
            evaluated.append((i, t, items if type(items) is list
                              or isinstance(items, (list, tuple)) else ()))
        if ke is not None and st is not None:
            st["k"] = [ke, ks]
        counters["evaluated"] += len(evaluated)
        if evaluated:
            samples = {}  # quantity -> its samples, shared by the rules that watch it
            for entry in plan:
                q = entry[2]
                got = samples.get(q)
                if got is None:
                    got = samples[q] = _samples(evaluated, q)
                self._run_rule(device_id, st, entry, got, result)
        return result

    def _run_rule(self, dev, st, entry, samples, result):
        """One rule over ``samples`` (``_samples``), its events into ``result``."""
        rule, rid, _q, windowed, advances = entry
        counters, tz, r = self.counters, self.tz, st["r"]
        rs = r.get(rid)
        if rs is None:
            rs = r[rid] = {}
        fast = rule.run_many
        if fast is not None:
            got = fast(rs, samples, tz, lambda t: self._reset(st, rule, t))
            if got is not None:
                late, flagged, events = got
                counters["skipped_late"] += late
                counters["excluded_flagged"] += flagged
                for i, t, evs in events:
                    result[i].extend(self._events(dev, rule, evs, t))
                return
        late = flagged = 0
        for i, t, v, code in samples:
            try:
                last = rs.get("_t")
                if last is not None and t < last:
                    late += 1
                    continue
                rs["_t"] = t
                if windowed:  # the window rules' own first test: has t passed the window?
                    w = rs.get("w")
                    evs = None if w is None or t < w[1] else rule.advance(rs, t, tz)
                else:
                    evs = rule.advance(rs, t, tz) if advances else None
                if code == _COUNTS:
                    stepped = rule.step(rs, t, v, tz)
                    evs = evs + stepped if evs else stepped
                elif code == _FLAGGED:
                    flagged += 1
            except _RULE_FAULTS:
                self._reset(st, rule, t)
                rs = r[rid]
                continue
            if evs:
                result[i].extend(self._events(dev, rule, evs, t))
        counters["skipped_late"] += late
        counters["excluded_flagged"] += flagged

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
        """The rule's state was unusable: it starts afresh at ``t`` (counted). Returns it."""
        self.counters["rule_errors"] += 1
        rs = st["r"][rule.id] = {"_t": t}
        return rs

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

    def changed(self):
        """True if evaluations or ticks since the last ``commit`` or ``rollback`` touched a
        device's state; False: the state is what it was then (nothing new to store)."""
        return bool(self._undo)

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
