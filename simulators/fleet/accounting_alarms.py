"""Alarm ground truth of a fleet run: the alarms the truth calls for against those raised.

Theory of operation
-------------------
The expected alarms come from the same rule code the gateway runs (``gateway.alarms``): each
device's rules are built from its profile's ``[[alarms]]`` (``rules_from_profile``, with the
node's inventory ``attributes`` when the run record gives them), and the environment's truth
series (``run["truth"]``, sampled every ``sample_s``) is fed to an ``AlarmEngine`` twice, with
every rule shifted by the sensor's accuracy (``simulators.daysim.ACCURACY``) at the rule's
threshold:

* **strict** (the truth must be clearly bad: above ``threshold + accuracy``, a rise above
  ``delta + 2 * accuracy``, a daily maximum below ``threshold - accuracy`` ...): each episode
  it raises is *expected*; it is a **hit** if the gateway raised that rule on that device
  with an alarm interval overlapping the episode (widened by the tolerance below), else a
  **miss**;
* **lenient** (shifted the other way): a raised alarm that overlaps no lenient episode is a
  **false alarm** -- the truth stayed clearly on the safe side. Anything else lies in the
  don't-care band and counts as neither.

An episode (truth or raised) runs from its ``raised`` event's ``since`` (when the condition
began, or the window's start) to the ``at`` of the next ``cleared`` event, or the run's end.
The tolerance is the node's reporting delay: ``max(interval_s, mean_period_s) *
consecutive + the link's max_delay_s (batching) + 10 min``. Window rules are evaluated in
the gateway's local time (``run["scenario"]["timezone"]``, default ``Europe/London``, the
gateway's default); a window still open at the run's end decides nothing. A profile rule
the node's attributes do not select is added if the gateway raised it anyway. Rules whose
quantity the truth lacks (``no2_ugm3`` is derived from ``no2_ppb``) are listed in
``unchecked``; their raised alarms are neither hits nor false. Times: Unix seconds.
"""

import math
import zoneinfo
from datetime import timezone

from drivers.no2b43f import ppb_to_ugm3
from gateway.alarms import RAISED, CLEARED, AlarmEngine, applies, build_rule, rules_from_profile
from simulators.daysim import ACCURACY

DEFAULT_TIMEZONE = "Europe/London"
SLACK_S = 600  # the contract's "+ 10 min" of the matching tolerance
_EPS = 1e-9
# rule kind -> (rule attribute, direction): strict = value + direction * band, lenient the
# other way; rise's delta is a difference of two readings, so twice the band
SHIFTS = {
    "above_for": (("threshold", 1), ("clear_below", 1)),
    "at_or_above": (("threshold", 1), ("clear_below", 1)),
    "rise": (("delta", 2),),
    "mean_above": (("threshold", 1),),
    "max_below": (("threshold", -1),),
    "min_at_or_above": (("threshold", 1),),
    "time_in_band": (("lo", 1), ("hi", -1)),
    "flush_time": (("target", None),),  # direction from the rule: down +1, up -1
}
# a quantity the truth lacks, derived from one it has: (source, factor); bands scale too
DERIVED = {"no2_ugm3": ("no2_ppb", ppb_to_ugm3(1.0))}


def zero_counts():
    """The alarm counts of a profile with no rules: expected, hits, misses, false alarms,
    raised."""
    return {"expected": 0, "hits": 0, "misses": 0, "false_alarms": 0, "raised": 0}


def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _tz(name):
    try:
        return zoneinfo.ZoneInfo(name) if name not in (None, "UTC") else timezone.utc
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        return timezone.utc


def truth_series(truth, quantity):
    """``(times, values, source_quantity, factor)`` of ``quantity`` from one device's truth
    (numeric samples only), or None."""
    src, factor = quantity, 1.0
    values = (truth.get("values") or {}).get(quantity)
    if values is None and quantity in DERIVED:
        src, factor = DERIVED[quantity]
        values = (truth.get("values") or {}).get(src)
    if values is None:
        return None
    pairs = [(t, v * factor) for t, v in zip(truth.get("times") or [], values)
             if _num(t) and _num(v)]
    return [t for t, _ in pairs], [v for _, v in pairs], src, factor


def _band(profile, src, factor):
    """``f(value in the rule's unit) -> accuracy in that unit``, or None."""
    entry = ACCURACY.get((profile, src))
    if entry is None:
        return None
    fn = entry[0]
    return lambda v: fn(v / factor) * factor


def _variants(spec, band, values):
    """``(strict, lenient, bands)`` rules from ``spec`` (``bands``: attribute -> the accuracy
    used)."""
    base = build_rule(spec)
    strict, lenient, bands = dict(spec), dict(spec), {}
    for attr, sign in SHIFTS[base.kind]:
        if sign is None:
            sign = 1 if base.direction == "down" else -1
        v = getattr(base, attr)
        a = max(band(x) for x in values) if attr == "delta" and values else band(v)
        bands[attr] = a
        strict[attr], lenient[attr] = v + sign * a, v - sign * a
    if base.kind == "rise":
        lenient["delta"] = max(lenient["delta"], _EPS)
    if base.kind == "time_in_band" and strict["lo"] > strict["hi"]:
        strict["lo"] = strict["hi"] = (base.lo + base.hi) / 2.0
    return build_rule(strict), build_rule(lenient), bands


def _episodes(events, end_s):
    """``{(device, rule): [[since, raised_at, end], ...]}`` from ``raised``/``cleared``
    event dicts in time order."""
    out = {}
    for e in events:
        eps = out.setdefault((e["device_id"], e["rule"]), [])
        if e["kind"] == RAISED:
            if eps and eps[-1][2] is None:
                eps[-1][2] = e["at"]
            eps.append([e["since"], e["at"], None])
        elif e["kind"] == CLEARED and eps and eps[-1][2] is None:
            eps[-1][2] = e["at"]
    for eps in out.values():
        for ep in eps:
            if ep[2] is None:
                ep[2] = max(end_s, ep[1])
    return out


def _overlaps(a_lo, a_hi, b_lo, b_hi, tol):
    return a_lo <= b_hi + tol and b_lo <= a_hi + tol


def _observed(run):
    """The alarm events on .../alarms, each once (copies of an event dropped), in ``at``
    order."""
    seen, out = set(), []
    for e in run.get("alarm_events") or []:
        if not isinstance(e, dict) or e.get("kind") not in (RAISED, CLEARED) \
                or not _num(e.get("since")) or not _num(e.get("at")):
            continue
        ident = (str(e.get("device_id")), str(e.get("rule")), e["kind"], e["since"], e["at"])
        if ident not in seen:
            seen.add(ident)
            out.append({"kind": e["kind"], "device_id": ident[0], "rule": ident[1],
                        "since": e["since"], "at": e["at"], "value": e.get("value")})
    out.sort(key=lambda e: (e["at"], e["kind"] == RAISED))
    return out


def _device_rules(node, profile, raised_ids):
    """The profile's rule specs for ``node``, plus any the gateway raised for it."""
    specs = [s for s in (profile.get("alarms") or []) if isinstance(s, dict)]
    rules = rules_from_profile(profile, node.get("attributes") or {})
    have = {r.id for r in rules}
    out = [r.spec for r in rules]
    extra = [s for s in specs if s.get("id") in raised_ids and s.get("id") not in have
             and not applies(s, node.get("attributes"))]
    for s in extra:
        s = dict(s)
        s.pop("applies_to", None)
        out.append(s)
    return out, [s["id"] for s in extra]


def _tolerance(node, profile, spec):
    interval = max(x for x in (node.get("interval_s"), node.get("mean_period_s"),
                               (profile.get("profile") or {}).get("interval_s"), 0) if _num(x))
    link = ((profile.get("link") or {}).get(node.get("link")) or {})
    delay = link.get("max_delay_s") if _num(link.get("max_delay_s")) else 0
    consecutive = spec.get("consecutive") if _num(spec.get("consecutive")) else 1
    return interval * consecutive + delay + SLACK_S


def evaluate(run, profiles, profile_of):
    """Hits, misses and false alarms of ``run`` (see the module docstring). ``profiles``:
    profile name -> parsed TOML; ``profile_of``: device -> profile name. Returns ``total``
    and ``profiles`` counts (``zero_counts`` keys), ``hits``, ``misses``, ``false_alarms``,
    ``expected_episodes``, ``possible_episodes`` (lists of dicts, times in Unix s),
    ``unchecked``, ``bands`` (profile -> rule -> attribute -> accuracy) and ``warnings``."""
    scen = run.get("scenario") or {}
    end_s = scen.get("end_wall_s") if _num(scen.get("end_wall_s")) else 0.0
    tz = _tz(scen.get("timezone", DEFAULT_TIMEZONE))
    nodes = {n["id"]: n for n in run.get("nodes") or [] if isinstance(n, dict) and "id" in n}
    observed = _observed(run)
    raised_ids = {}
    for e in observed:
        if e["kind"] == RAISED:
            raised_ids.setdefault(e["device_id"], set()).add(e["rule"])
    strict_rules, lenient_rules, tolerance, checked = {}, {}, {}, set()
    unchecked, bands, warnings, samples = [], {}, [], {}
    for dev in sorted(nodes):
        prof_name = profile_of.get(dev)
        profile = profiles.get(prof_name)
        if profile is None:
            unchecked.append({"device": dev, "rule": "*", "reason": "no profile %r" % prof_name})
            continue
        try:
            specs, assumed = _device_rules(nodes[dev], profile, raised_ids.get(dev, ()))
        except ValueError as e:
            warnings.append("%s: alarm rules of profile %r: %s" % (dev, prof_name, e))
            continue
        for rid in assumed:
            warnings.append("%s: rule %s raised although the node's attributes do not select "
                            "it; checked against the truth anyway" % (dev, rid))
        truth = (run.get("truth") or {}).get(dev) or {}
        for spec in specs:
            q, rid = spec["quantity"], spec["id"]
            series = truth_series(truth, q)
            band = _band(prof_name, series[2], series[3]) if series else None
            if series is None or band is None or build_rule(spec).kind not in SHIFTS:
                why = ("no truth series of %s" % q if series is None else
                       "no accuracy band for %s" % q if band is None else "rule kind")
                unchecked.append({"device": dev, "rule": rid, "reason": why})
                continue
            strict, lenient, b = _variants(spec, band, series[1])
            bands.setdefault(prof_name, {})[rid] = b
            strict_rules.setdefault(dev, []).append(strict)
            lenient_rules.setdefault(dev, []).append(lenient)
            tolerance[(dev, rid)] = _tolerance(nodes[dev], profile, spec)
            checked.add((dev, rid))
            samples.setdefault(dev, {})[q] = series[:2]
    expected = _run_engine(strict_rules, samples, tz, end_s)
    possible = _run_engine(lenient_rules, samples, tz, end_s)
    seen_eps = _episodes(observed, end_s)
    hits, misses, false_alarms = [], [], []
    for (dev, rid), eps in sorted(expected.items()):
        tol, obs = tolerance[(dev, rid)], seen_eps.get((dev, rid), [])
        for since, at, end in eps:
            match = [o for o in obs if _overlaps(since, end, o[0], o[2], tol)]
            item = {"device": dev, "rule": rid, "start": since, "raised_at": at, "end": end}
            if match:
                hits.append(dict(item, observed_since=match[0][0], observed_at=match[0][1]))
            else:
                misses.append(item)
    raised = []
    for (dev, rid), obs in sorted(seen_eps.items()):
        if (dev, rid) not in checked:
            continue
        tol, eps = tolerance[(dev, rid)], possible.get((dev, rid), [])
        for since, at, end in obs:
            raised.append((dev, rid))
            if not any(_overlaps(since, end, p[0], p[2], tol) for p in eps):
                false_alarms.append({"device": dev, "rule": rid, "since": since, "at": at,
                                     "end": end})
    total, per = zero_counts(), {}
    for key, items in (("expected", [(h["device"], 0) for h in hits + misses]),
                       ("hits", [(h["device"], 0) for h in hits]),
                       ("misses", [(m["device"], 0) for m in misses]),
                       ("false_alarms", [(f["device"], 0) for f in false_alarms]),
                       ("raised", raised)):
        for dev, _ in items:
            total[key] += 1
            per.setdefault(profile_of.get(dev, "unknown"), zero_counts())[key] += 1

    def flat(eps):
        return [{"device": d, "rule": r, "start": s, "raised_at": a, "end": e}
                for (d, r), lst in sorted(eps.items()) for s, a, e in lst]

    return {"total": total, "profiles": dict(sorted(per.items())), "hits": hits,
            "misses": misses, "false_alarms": false_alarms,
            "expected_episodes": flat(expected), "possible_episodes": flat(possible),
            "unchecked": unchecked, "bands": bands, "warnings": warnings}


def _run_engine(device_rules, samples, tz, end_s):
    """Episodes (``_episodes``) of ``device_rules`` fed each device's truth samples in time
    order as records with flag ``ok``; windows that ended by ``end_s`` are closed."""
    engine = AlarmEngine(device_rules, tz=tz)
    events = []
    for dev in sorted(device_rules):
        per_q = samples.get(dev, {})
        merged = {}
        for q, (times, values) in per_q.items():
            for t, v in zip(times, values):
                merged.setdefault(t, []).append([q, v, "ok"])
        for i, t in enumerate(sorted(merged)):
            rec = {"seq": i, "t": t, "values": merged[t], "kind": "reading"}
            events.extend(e.to_dict() for e in engine.observe(dev, 1, rec))
    events.extend(e.to_dict() for e in engine.tick(end_s))
    events = [e for e in events if e["kind"] in (RAISED, CLEARED)]
    events.sort(key=lambda e: (e["at"], e["kind"] == RAISED))
    return _episodes(events, end_s)
