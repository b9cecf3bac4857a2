"""Alarm rules from data: a device's rules from its profile (``gateway.alarms``' input).

Rules come from a profile's ``[[alarms]]`` tables (``hardware/profiles/*.toml``, keys in
hardware/README.md) plus, for a legionella outlet, its ``[flush_test]`` section, selected by
the device's inventory attributes (``applies_to``) and optionally overridden by the gateway's
configuration (``rules_from_profile``). Each rule kind is a class of ``gateway.alarm_rules``
(point rules) or ``gateway.alarm_windows`` (hour/day/year verdicts), named in ``KINDS``;
docs/gateway-pipeline.md explains every kind and its defaults. Pure: the shell reads the
files.
"""

from gateway import alarm_rules as _point
from gateway import alarm_windows as _window
from protocol import quantities

KINDS = {cls.kind: cls for cls in (_point.AboveFor, _point.AtOrAbove, _point.Rise,
                                   _point.FlushTime, _window.MeanAbove, _window.MaxBelow,
                                   _window.MinAtOrAbove, _window.TimeInBand)}


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
