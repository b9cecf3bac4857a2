"""Accounting of a fleet run: every record the nodes produced matched to what arrived upstream
(issue 5, "Contract 2"), with latency percentiles and the alarm ground truth.

Theory of operation
-------------------
A record key is ``(device, epoch, seq)``. Within one boot epoch a node hands out seqs
contiguously (firmware/app/state.py), so every seq between an epoch's lowest and highest
seq known anywhere -- copies that arrived, keys still held on the node or in a gateway's
outbox, the ends of gap ranges -- was produced and must be accounted for; an epoch starts
at seq 0 (``NodeState.boot``). The tail of an epoch after its highest known seq cannot be
checked this way (the node's persisted ``next_seq`` is a reservation mark, not the last seq
used): the runner's sensor-cycle counts are the cross-check there. Keys are handled as integers ``epoch * 2**32 + seq``
so a gap range that spans epochs is one interval; ranges are counted with interval
arithmetic, never enumerated (a corrupt seq near 2**32 costs nothing).

Each produced key falls in exactly one category, in this order of precedence:

* ``delivered``: at least one copy arrived (``duplicates`` counts the copies beyond the
  first; they are not keys);
* ``held_gateway``: still in a gateway's outbox at the end;
* ``held_node``: still in the node's flash log at the end;
* ``dropped``: none of these, inside a gap range (``dropped_by_reason``: by the reason of
  the first gap message, in arrival order, covering it). A gap range may hold keys that
  were kept (gateway/outbox_policy.py: "the holes upstream are exactly ``dropped``"), so
  the holes are compared with the gap messages' ``dropped`` counts; a message contained in
  a later one of the same device and reason with at least its count (a marker re-sent
  after widening, or a copy) is not counted twice; a node's gap records (``node_log``) go by
  their own key: their ``dropped`` counts every key the log lost, a gap record merged into a
  later one included (firmware/app/store.py), so one spanning older ones is a drop of its
  own, not a copy; a gap record still on a node's flash at the end
  (``held_node[device]["gaps"]``) counts as a gap message too (its key once, whether or not
  a copy also arrived). A record the node sent but dropped before its ack came is counted by
  the node yet arrived: a mismatch (reported above the holes), shown, never hidden.
  Holes that differ from the reported counts: ``gaps.mismatches`` (``drops_match_gap_reports``);
* ``lost``: none of these (``lost = produced - delivered - dropped - held``; must be 0).

The ``readings`` view counts keys whose kind is ``reading`` or unknown (a dropped or lost
key's kind is unknown: it counts as a reading, the conservative choice); ``records`` counts
every kind. Latency (seconds) is ``arrived_wall_s - t`` of each delivered reading's first
copy, for readings with a trusted time only (``t`` set and no value flagged
``time_unsynced``). The alarm ground truth is ``simulators.fleet.accounting_alarms``.

All times are Unix seconds on the simulation's virtual clock. ``account`` never mutates the
run and returns plain JSON-able data, identical for identical runs.
"""

import math
import tomllib
from bisect import bisect_left, bisect_right
from pathlib import Path

from protocol import quality
from simulators.fleet import accounting_alarms

PROFILES_DIR = Path(__file__).resolve().parents[2] / "hardware" / "profiles"
SEQ_SPAN = 1 << 32  # seq is a uint32: key = epoch * SEQ_SPAN + seq
LOST_LISTED = 100
CATEGORIES = ("produced", "delivered", "duplicates", "dropped", "held_node", "held_gateway",
              "held", "lost")
PERCENTILES = (50, 90, 99)


# -- intervals: sorted lists of disjoint inclusive [lo, hi] ---------------------------------
def _union(ivs):
    out = []
    for lo, hi in sorted(ivs):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


def _intersect(a, b):
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append([lo, hi])
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _subtract(a, b):
    out = []
    for lo, hi in a:
        for blo, bhi in b:
            if bhi < lo or blo > hi:
                continue
            if blo > lo:
                out.append([lo, blo - 1])
            lo = bhi + 1
            if lo > hi:
                break
        if lo <= hi:
            out.append([lo, hi])
    return out


def _measure(ivs):
    return sum(hi - lo + 1 for lo, hi in ivs)


def _inside(sorted_keys, ivs):
    """How many of ``sorted_keys`` lie in the intervals ``ivs``."""
    return sum(bisect_right(sorted_keys, hi) - bisect_left(sorted_keys, lo) for lo, hi in ivs)


# -- input checks --------------------------------------------------------------------------
def _u32(x):
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < SEQ_SPAN


def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _key(epoch, seq):
    return epoch * SEQ_SPAN + seq if _u32(epoch) and _u32(seq) else None


def _split(key):
    return [key // SEQ_SPAN, key % SEQ_SPAN]


def load_profiles(names, directory=PROFILES_DIR):
    """Parsed ``hardware/profiles/<name>.toml`` for each name that has a file (others are
    left out: their devices' alarms are reported unchecked)."""
    out = {}
    for name in sorted({n for n in names if isinstance(n, str)}):
        path = Path(directory) / ("%s.toml" % name)
        if path.is_file():
            with open(path, "rb") as f:
                out[name] = tomllib.load(f)
    return out


# -- one device ---------------------------------------------------------------------------
class _Device:
    """What is known of one device's keys."""

    def __init__(self):
        self.copies = {}      # key -> number of copies arrived
        self.first = {}       # key -> its first arrived copy
        self.kind = {}        # key -> kind, where any source says it
        self.held_node = set()
        self.held_gateway = set()
        self.gaps = []        # (lo key, hi key, reason, dropped, node gap record key) in arrival order
        self.known = []       # keys that bound the epochs' ranges
        self.malformed = 0

    def count(self):
        """``(records, readings, epochs, lost keys)``: category counts (dicts) and the
        produced ranges as ``[[epoch, lo_seq, hi_seq], ...]``."""
        by_epoch = {}
        for k in self.known:
            e, s = divmod(k, SEQ_SPAN)
            lo, hi = by_epoch.get(e, (s, s))
            by_epoch[e] = (min(lo, s), max(hi, s))
        epochs = [[e, lo, hi] for e, (lo, hi) in sorted(by_epoch.items())]
        produced = _union([[e * SEQ_SPAN + lo, e * SEQ_SPAN + hi] for e, lo, hi in epochs])
        delivered = sorted(self.copies)
        hg = sorted(k for k in self.held_gateway if k not in self.copies)
        hn = sorted(k for k in self.held_node if k not in self.copies and k not in self.held_gateway)
        hn_set, hg_set = set(hn), set(hg)
        explicit = sorted(set(delivered) | hn_set | hg_set)
        covered, by_reason = [], {}
        for lo, hi, reason, _n, _k in self.gaps:
            new = _subtract(_intersect([[lo, hi]], produced), covered)
            n = _measure(new) - _inside(explicit, new)
            if n:
                by_reason[reason] = by_reason.get(reason, 0) + n
            covered = _union(covered + [[lo, hi]])
        dropped_ivs = _intersect(covered, produced)
        dropped = _measure(dropped_ivs) - _inside(explicit, dropped_ivs)
        rec = {"produced": _measure(produced), "delivered": len(delivered),
               "duplicates": sum(self.copies.values()) - len(delivered), "dropped": dropped,
               "held_node": len(hn), "held_gateway": len(hg)}
        rec["held"] = rec["held_node"] + rec["held_gateway"]
        rec["lost"] = rec["produced"] - rec["delivered"] - dropped - rec["held"]
        rec["dropped_by_reason"] = dict(sorted(by_reason.items()))
        # the readings view: take away the keys known to be of another kind; a kind is only
        # known from a copy or the node's log, so such a key is never dropped or lost
        rd = {k: v for k, v in rec.items() if k != "dropped_by_reason"}
        for k, kind in self.kind.items():
            if kind == "reading":
                continue
            rd["produced"] -= 1
            if k in self.copies:
                rd["delivered"] -= 1
                rd["duplicates"] -= self.copies[k] - 1
            elif k in hg_set:
                rd["held_gateway"] -= 1
                rd["held"] -= 1
            elif k in hn_set:
                rd["held_node"] -= 1
                rd["held"] -= 1
        rd["dropped_by_reason"] = dict(rec["dropped_by_reason"])
        lost = []
        for lo, hi in _subtract(produced, dropped_ivs):
            k = lo
            while k <= hi and len(lost) < LOST_LISTED:
                i = bisect_left(explicit, k)
                if i < len(explicit) and explicit[i] == k:
                    k += 1
                    continue
                lost.append(k)
                k += 1
        return rec, rd, epochs, lost

    def reported(self):
        """``{reason: dropped}`` over this device's gap messages, copies left out (module
        docstring: contained in a later one with at least its count; node_log: same key)."""
        out, seen = {}, set()
        for i, (lo, hi, reason, n, key) in enumerate(self.gaps):
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            elif any(r2 == reason and k2 is None and lo2 <= lo and hi <= hi2 and n2 >= n
                     for lo2, hi2, r2, n2, k2 in self.gaps[i + 1:]):
                continue
            out[reason] = out.get(reason, 0) + n
        return out


def _device_of(run_devices, dev):
    d = run_devices.get(dev)
    if d is None:
        d = run_devices[dev] = _Device()
    return d


def _collect(run):
    """``{device: _Device}`` from the run record's sections."""
    devs = {}
    for n in run.get("nodes") or []:
        if isinstance(n, dict) and isinstance(n.get("id"), str):
            _device_of(devs, n["id"])
    for c in run.get("arrived") or []:
        d = _device_of(devs, str(c.get("device")))
        k = _key(c.get("epoch"), c.get("seq"))
        if k is None:
            d.malformed += 1
            continue
        d.copies[k] = d.copies.get(k, 0) + 1
        if k not in d.first:
            d.first[k] = c
        if isinstance(c.get("kind"), str):
            d.kind.setdefault(k, c["kind"])
        d.known.append(k)
    gaps = list(run.get("gaps") or [])
    for dev, held in sorted((run.get("held_node") or {}).items()):
        d = _device_of(devs, str(dev))
        gaps.extend(g for g in (held or {}).get("gaps") or () if isinstance(g, dict))
        for item in (held or {}).get("keys") or []:
            k = _key(item[0], item[1]) if isinstance(item, (list, tuple)) and len(item) >= 2 \
                else None
            if k is None:
                d.malformed += 1
                continue
            d.held_node.add(k)
            if len(item) >= 3 and isinstance(item[2], str):
                d.kind.setdefault(k, item[2])
            d.known.append(k)
    for gw in sorted(run.get("held_gateway") or {}):
        for item in run["held_gateway"][gw] or []:
            if not isinstance(item, (list, tuple)) or len(item) < 3:
                continue
            d = _device_of(devs, str(item[0]))
            k = _key(item[1], item[2])
            if k is None:
                d.malformed += 1
                continue
            d.held_gateway.add(k)
            d.known.append(k)
    for g in gaps:  # those that arrived, then those still on a node's flash (same key: once)
        d = _device_of(devs, str(g.get("device")))
        lo = _key(g.get("first_epoch"), g.get("first_seq"))
        hi = _key(g.get("last_epoch"), g.get("last_seq"))
        if lo is None or hi is None or hi < lo:
            d.malformed += 1
            continue
        key = g.get("key") if g.get("reason") == "node_log" else None
        d.gaps.append((lo, hi, str(g.get("reason")), g.get("dropped") if _num(g.get("dropped")) else 0,
                       tuple(key) if isinstance(key, list) else None))
        d.known.extend((lo, hi))
    for d in devs.values():  # every epoch starts at seq 0 (firmware/app/state.py boot)
        d.known.extend({k - k % SEQ_SPAN for k in d.known})
    return devs


# -- latency -------------------------------------------------------------------------------
def _trusted_latency(copy):
    """``arrived_wall_s - t`` (s) of a reading's copy, or None if its time is not trusted."""
    t, arrived = copy.get("t"), copy.get("arrived_wall_s")
    if not _num(t) or not _num(arrived):
        return None
    values = copy.get("values")
    for vf in values.values() if isinstance(values, dict) else ():
        if isinstance(vf, (list, tuple)) and len(vf) >= 2 and vf[1] == quality.TIME_UNSYNCED:
            return None
    return arrived - t


def percentiles(xs):
    """``{"n", "p50_s", "p90_s", "p99_s", "max_s"}`` by the nearest-rank method (seconds,
    rounded to ms); None values when ``xs`` is empty."""
    xs = sorted(xs)
    out = {"n": len(xs)}
    for p in PERCENTILES:
        out["p%d_s" % p] = round(xs[max(0, math.ceil(p / 100 * len(xs)) - 1)], 3) if xs else None
    out["max_s"] = round(xs[-1], 3) if xs else None
    return out


# -- the whole run -------------------------------------------------------------------------
def _add(into, cats):
    for k in CATEGORIES:
        into[k] += cats[k]
    for reason, n in cats["dropped_by_reason"].items():
        into["dropped_by_reason"][reason] = into["dropped_by_reason"].get(reason, 0) + n


def _zero():
    return dict({k: 0 for k in CATEGORIES}, dropped_by_reason={})


def account(run, profiles=None):
    """The accounting of ``run`` (the Contract 2 run record, a dict) as a JSON-able dict:
    ``scenario``, ``total`` / ``profiles[p]`` / ``devices[d]`` each with ``readings`` and
    ``records`` (``CATEGORIES`` counts plus ``dropped_by_reason``), ``latency`` (seconds;
    total and per profile) and ``alarms`` (hits, misses, false alarms); ``lost_keys`` (the
    first ``LOST_LISTED`` lost ``[device, epoch, seq]``), ``gaps`` (the gap messages:
    ``messages``, ``distinct``, ``reported_dropped`` and by reason), the ``alarms`` detail
    (``simulators.fleet.accounting_alarms.evaluate``), ``warnings`` and ``verdict``.
    ``profiles`` maps a profile name to its parsed TOML (default: read from
    hardware/profiles). Never raises for a well-typed run record."""
    nodes = {n["id"]: n for n in run.get("nodes") or [] if isinstance(n, dict) and "id" in n}
    devs = _collect(run)
    profile_of = {dev: str(nodes.get(dev, {}).get("profile") or "unknown") for dev in devs}
    if profiles is None:
        profiles = load_profiles(p for p in profile_of.values() if p != "unknown")
    total = {"readings": _zero(), "records": _zero()}
    by_profile, devices, lost_keys, lat, warnings = {}, {}, [], {}, []
    lost_total = 0
    for dev in sorted(devs):
        d, prof = devs[dev], profile_of[dev]
        rec, rd, epochs, lost = d.count()
        p = by_profile.setdefault(prof, {"devices": 0, "readings": _zero(), "records": _zero()})
        p["devices"] += 1
        for view, cats in (("readings", rd), ("records", rec)):
            _add(total[view], cats)
            _add(p[view], cats)
        lost_total += rec["lost"]
        lost_keys.extend([dev] + _split(k) for k in lost)
        devices[dev] = {"profile": prof, "readings": rd, "records": rec, "epochs": epochs,
                        "malformed": d.malformed}
        if d.malformed:
            warnings.append("%s: %d malformed keys ignored" % (dev, d.malformed))
        xs = lat.setdefault(prof, [[], 0])
        for k, c in sorted(d.first.items()):
            if d.kind.get(k, "reading") != "reading":
                continue
            x = _trusted_latency(c)
            if x is None:
                xs[1] += 1
            else:
                xs[0].append(x)
    alarms = accounting_alarms.evaluate(run, profiles, profile_of)
    warnings.extend(alarms.pop("warnings"))
    all_x = sorted(x for xs, _ in lat.values() for x in xs)
    total["latency"] = dict(percentiles(all_x), untrusted=sum(u for _, u in lat.values()))
    total["alarms"] = alarms["total"]
    for prof, p in by_profile.items():
        xs, untrusted = lat.get(prof, [[], 0])
        p["latency"] = dict(percentiles(xs), untrusted=untrusted)
        p["alarms"] = alarms["profiles"].get(prof, accounting_alarms.zero_counts())
    gap_msgs = [g for g in run.get("gaps") or [] if isinstance(g, dict)]
    distinct = {(str(g.get("device")), str(g.get("reason")), g.get("first_epoch"),
                 g.get("first_seq"), g.get("last_epoch"), g.get("last_seq"), g.get("dropped"))
                for g in gap_msgs}
    reported, mismatches = {}, []
    for dev in sorted(devs):
        mine = devs[dev].reported()
        for reason, n in mine.items():
            reported[reason] = reported.get(reason, 0) + n
        holes = devices[dev]["records"]["dropped"]
        devices[dev]["gaps_reported_dropped"] = sum(mine.values())
        if holes != sum(mine.values()):
            mismatches.append({"device": dev, "holes": holes, "reported": sum(mine.values())})
            warnings.append("%s: %d keys missing inside gap ranges, but the gap messages report "
                            "%d dropped" % (dev, holes, sum(mine.values())))
    return {
        "scenario": dict(run.get("scenario") or {}),
        "total": total,
        "profiles": dict(sorted(by_profile.items())),
        "devices": devices,
        "lost_keys": lost_keys[:LOST_LISTED],
        "gaps": {"messages": len(gap_msgs), "distinct": len(distinct),
                 "reported_dropped": sum(reported.values()),
                 "reported_by_reason": dict(sorted(reported.items())),
                 "mismatches": mismatches},
        "alarms": alarms,
        "warnings": warnings,
        "verdict": {"lost_records": lost_total, "lost_readings": total["readings"]["lost"],
                    "ok": lost_total == 0},
    }
