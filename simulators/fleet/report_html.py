"""The fleet run's HTML report: one self-contained page (inline CSS and SVG; no scripts, no
external addresses) a council officer can read.

Every number of the summary tables sits in a cell carrying ``data-key`` (its dotted path in
the accounting dict, e.g. ``total.readings.delivered``) and ``data-value`` (the JSON of that
number), so a test can check the page against report.json. Every text is escaped.
"""

import json
import math
from html import escape

from protocol import quality
from simulators.fleet import report_svg as svg
from simulators.fleet.accounting import load_profiles
from simulators.fleet.accounting_alarms import truth_series

CHARTED_DEVICES = 3  # representative devices charted per profile
EXPLAIN = (
    ("produced", "readings the sensors produced (every record number the nodes handed out)"),
    ("delivered", "reached the council's platform (each counted once)"),
    ("duplicates", "extra copies that arrived again after a retry; the platform keeps one"),
    ("dropped", "deliberately dropped by the gateway's policy or a full node log, and "
                "announced with a gap marker"),
    ("held", "still waiting on a node or in a gateway's queue when the run ended (sent "
             "when the link allows; not lost)"),
    ("lost", "disappeared without trace; must be zero"),
    ("latency", "time from the reading being taken to arriving upstream, on the simulated "
                "clock (readings with a trusted clock); readings held through an outage arrive "
                "the moment the link is back: a real gateway's reconnect (up to 2 minutes) and "
                "sending its queue (seconds) come on top"),
    ("alarms", "alarms the true conditions called for: hit (raised), missed (not raised); "
               "false: raised while conditions were clearly fine"),
)
CSS = """
body { font: 14px/1.45 sans-serif; margin: 24px auto; max-width: 980px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px; }
h3 { font-size: 15px; } .muted { color: #666; }
.verdict { display: inline-block; padding: 4px 12px; border-radius: 4px; font-weight: bold; }
.ok { background: #dff0d8; color: #24612a; } .bad { background: #f8d7da; color: #8a1f28; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 8px; }
th { text-align: left; border-bottom: 2px solid #999; } td { border-bottom: 1px solid #ddd; }
td.n { text-align: right; font-variant-numeric: tabular-nums; } tr.total td { font-weight: bold; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; }
.sw { display: inline-block; width: 12px; height: 10px; margin-right: 4px; vertical-align: middle; }
"""
_LEGEND = {"truth": ("#1f5fa8", "truth (simulated environment)"),
           "reported": ("#e07b00", "reported reading"), "flagged": ("#c00", "flagged reading"),
           "raised": ("#c00", "alarm raised"), "episode": ("#f6c343", "alarm the truth calls for"),
           "fault-node": ("#d9534f", "fault on this node"),
           "fault": ("#aaa", "fault on its gateway"), "limit": ("#c00", "alarm threshold")}


def dig(account, key):
    """The value at dotted path ``key`` of ``account`` (names hold no dots)."""
    v = account
    for part in key.split("."):
        v = v[part]
    return v


def fmt(v):
    """A number as the page shows it: ints exactly, floats to 0.1, None as a dash."""
    if v is None:
        return "&ndash;"
    if isinstance(v, float):
        return "%.1f" % v
    return escape(str(v))


def cell(account, *path):
    """A ``<td>`` of the number at ``account[path[0]][path[1]]...``, keyed by the dotted
    path."""
    v = account
    for part in path:
        v = v[part]
    key = ".".join(map(str, path))
    return '<td class="n" data-key="%s" data-value="%s">%s</td>' % (
        escape(key), escape(json.dumps(v)), fmt(v))


def cell_span(account, *path):
    """Like ``cell`` for a number inside a sentence."""
    return cell(account, *path).replace("<td", "<span", 1).replace("</td>", "</span>")


def _utc(t):
    return svg.fmt_time(t, True) if isinstance(t, (int, float)) else "?"


def _headline(run, acc):
    sc = run.get("scenario") or {}
    t0, t1 = sc.get("start_wall_s", 0), sc.get("end_wall_s", 0)
    lost = acc["verdict"]["lost_records"]
    verdict = ('<span class="verdict ok">Nothing lost</span>' if lost == 0 else
               '<span class="verdict bad">%d record%s lost</span>' % (lost, "s" * (lost != 1)))
    hours = (t1 - t0) / 3600.0 if isinstance(t1, (int, float)) else 0
    return ("<h1>%s</h1><p class=\"muted\">Scenario <b>%s</b> (seed %s) &middot; simulated "
            "%s to %s UTC (%.1f h) &middot; %d nodes, %d gateways</p><p>%s &middot; "
            "%s of %s readings delivered</p>"
            % (escape(str(sc.get("title") or sc.get("name") or "")), escape(str(sc.get("name"))),
               escape(str(sc.get("seed"))), escape(_utc(t0)), escape(_utc(t1)), hours,
               len(run.get("nodes") or []), len(run.get("gateways") or []), verdict,
               fmt(acc["total"]["readings"]["delivered"]),
               fmt(acc["total"]["readings"]["produced"])))


def _summary(acc, view):
    cols = ("produced", "delivered", "duplicates", "dropped", "held", "lost")
    head = "".join("<th>%s</th>" % c for c in cols)
    rows = []
    for name, prefix in [(p, ("profiles", p)) for p in acc["profiles"]] + [("total", ("total",))]:
        cells = "".join(cell(acc, *prefix, view, c) for c in cols)
        if view == "readings":
            cells += "".join(cell(acc, *prefix, "latency", c) for c in ("p50_s", "p99_s"))
            cells += "".join(cell(acc, *prefix, "alarms", c)
                             for c in ("expected", "hits", "misses", "false_alarms"))
        rows.append('<tr class="%s"><td>%s</td>%s</tr>'
                    % ("total" if name == "total" else "", escape(name), cells))
    extra = ("<th>latency p50 s</th><th>p99 s</th><th>alarms expected</th><th>hit</th>"
             "<th>missed</th><th>false</th>" if view == "readings" else "")
    return "<table><tr><th>%s</th>%s%s</tr>%s</table>" % (
        "profile", head, extra, "".join(rows))


def _explain():
    return "<dl>%s</dl>" % "".join("<dt><b>%s</b></dt><dd>%s</dd>" % (escape(k), escape(v))
                                   for k, v in EXPLAIN)


def _gaps(acc):
    g = acc["gaps"]
    text = ("<p>Gap markers received: %s (%s distinct), reporting %s dropped%s.</p>"
            % (cell_span(acc, "gaps", "messages"), cell_span(acc, "gaps", "distinct"),
               cell_span(acc, "gaps", "reported_dropped"), escape("".join(
                   " (%s: %d)" % kv for kv in g["reported_by_reason"].items()))))
    if g["mismatches"]:
        text += "<p class=\"verdict bad\">Drops not matching their gap markers: %s</p>" % escape(
            "; ".join("%(device)s %(holes)d missing, %(reported)d reported" % m
                      for m in g["mismatches"][:20]))
    return text


def _alarm_lists(acc):
    al, out = acc["alarms"], [
        "<p>An alarm is <b>expected</b> where the true value was beyond the alarm rule by more "
        "than the sensor's accuracy; a <b>false</b> alarm is one raised while the true value "
        "stayed on the safe side by more than that accuracy. In between, either is fine.</p>"]
    for key, title in (("misses", "Missed alarms"), ("false_alarms", "False alarms")):
        items = al[key]
        if not items:
            out.append("<p>%s: none.</p>" % title)
            continue
        rows = "".join("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"
                       % (escape(i["device"]), escape(i["rule"]),
                          escape(_utc(i.get("start", i.get("since")))), escape(_utc(i["end"])))
                       for i in items)
        out.append("<h3>%s (%d)</h3><table><tr><th>device</th><th>rule</th><th>from</th>"
                   "<th>to</th></tr>%s</table>" % (title, len(items), rows))
    if al["unchecked"]:
        out.append("<p class=\"muted\">Not checked against the truth: %s</p>" % escape(
            "; ".join("%s %s (%s)" % (u["device"], u["rule"], u["reason"])
                      for u in al["unchecked"][:20])))
    return "".join(out)


def _fault_label(f):
    return "%s: %s" % (f.get("kind"), ", ".join(map(str, f.get("targets") or [])))


def _fault_timeline(run, t0, t1):
    faults = [f for f in run.get("faults") or [] if isinstance(f, dict)]
    if not faults:
        return "<p>No faults were scheduled.</p>"
    ch = svg.TimeChart(t0, t1, 0, len(faults), height=40 + 24 * len(faults),
                       title="Fault timeline")
    for i, f in enumerate(faults):
        a, b = f.get("start_wall_s"), f.get("end_wall_s")
        y = ch.y(len(faults) - i) + 4
        if not isinstance(a, (int, float)):
            continue
        label = escape(_fault_label(f))
        x0 = x1 = ch.x(a)
        if isinstance(b, (int, float)):
            x1 = ch.x(b)
            ch.raw('<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="16"><title>%s '
                   '%s-%s</title></rect>' % (x0, y, max(x1 - x0, 2.0), label,
                                            escape(_utc(a)), escape(_utc(b))))
        else:
            ch.raw('<line class="instant" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>'
                   % (x0, x0, y, y + 16))
        anchor = "end" if x0 > ch.w * 0.6 else "start"
        ch.raw('<text x="%.1f" y="%.1f" text-anchor="%s">%s</text>'
               % (x0 - 4 if anchor == "end" else x1 + 4, y + 12, anchor, label))
    return ch.svg(y_ticks=False)


def _legend(keys):
    return '<div class="legend">%s</div>' % "".join(
        '<span><i class="sw" style="background:%s"></i>%s</span>' % (_LEGEND[k][0],
                                                                    escape(_LEGEND[k][1]))
        for k in keys)


def _reported(run, dev, q):
    """``(ts, vs, flagged_ts, flagged_vs)`` of ``q`` in the device's delivered readings
    (first copy of each key, with a time)."""
    seen, ok, bad = set(), ([], []), ([], [])
    for c in run.get("arrived") or []:
        if c.get("device") != dev or c.get("kind") != "reading":
            continue
        k = (c.get("epoch"), c.get("seq"))
        values = c.get("values")
        vf = values.get(q) if isinstance(values, dict) else None
        t = c.get("t")
        if k in seen or not isinstance(vf, (list, tuple)) or len(vf) < 2 \
                or not isinstance(t, (int, float)) or not isinstance(vf[0], (int, float)) \
                or not math.isfinite(vf[0]):
            continue
        seen.add(k)
        dest = ok if vf[1] in (quality.OK, quality.TIME_UNSYNCED) else bad
        dest[0].append(t)
        dest[1].append(vf[0])
    return ok + bad


def _pick(acc, run, devices):
    """Up to ``CHARTED_DEVICES`` devices worth charting: alarm trouble, then faults, then
    the first."""
    al, targets = acc["alarms"], set()
    for f in run.get("faults") or []:
        targets.update(map(str, f.get("targets") or []))

    def score(d):
        trouble = sum(1 for k in ("misses", "false_alarms") for i in al[k] if i["device"] == d)
        hits = sum(1 for i in al["hits"] if i["device"] == d)
        lost = acc["devices"][d]["records"]["lost"]
        return (-(trouble + lost), -hits, d not in targets, d)
    return sorted(devices, key=score)[:CHARTED_DEVICES]


def _device_chart(run, acc, node, profile, t0, t1):
    dev = node["id"]
    rules = [s for s in (profile.get("alarms") or []) if isinstance(s, dict)]
    quantities = [s.get("quantity") for s in rules]
    for c in run.get("arrived") or []:
        if c.get("device") == dev and c.get("kind") == "reading" \
                and isinstance(c.get("values"), dict):
            quantities.extend(sorted(c["values"]))
            break
    truth = (run.get("truth") or {}).get(dev) or {}
    q, rep = None, None
    for cand in quantities:
        rep = _reported(run, dev, cand)
        if rep[0] or truth_series(truth, cand):
            q = cand
            break
    if q is None:
        return "<p>%s: no readings to chart.</p>" % escape(dev)
    ts = truth_series(truth, q) or ([], [], q, 1.0)
    limits = [s["threshold"] for s in rules if s.get("quantity") == q
              and isinstance(s.get("threshold"), (int, float))]
    y0, y1 = svg.value_range(ts[1] + rep[1] + rep[3], limits)
    ch = svg.TimeChart(t0, t1, y0, y1, y_label=q, title="%s %s" % (dev, q))
    for ep in acc["alarms"]["expected_episodes"]:
        if ep["device"] == dev:
            ch.shade(ep["start"], ep["end"], "episode", "expected alarm %s" % ep["rule"])
    for f in run.get("faults") or []:
        targets = set(map(str, f.get("targets") or []))
        a, b = f.get("start_wall_s"), f.get("end_wall_s")
        if not isinstance(a, (int, float)) or not (dev in targets or node.get("gateway") in targets):
            continue
        cls = "fault-node" if dev in targets else "fault"
        ch.shade(a, b if isinstance(b, (int, float)) else a, cls, _fault_label(f))
    ch.dots(*svg.thin(rep[0], rep[1]), "reported")
    ch.dots(rep[2], rep[3], "flagged", r=2.5)
    ch.line(*svg.thin(ts[0], ts[1]), "truth")
    for lim in limits:
        ch.hline(lim, "limit", "threshold %s" % lim)
    for e in run.get("alarm_events") or []:
        if e.get("device_id") == dev and e.get("kind") == "raised" \
                and isinstance(e.get("at"), (int, float)):
            ch.marker(e["at"], "raised", "%s raised %s" % (e.get("rule"), _utc(e["at"])))
    return "<h3>%s</h3>%s%s" % (escape(dev), ch.svg(), _legend(
        ("truth", "reported", "flagged", "raised", "episode", "fault-node", "fault", "limit")))


def _device_table(acc, devices):
    cols = ("produced", "delivered", "duplicates", "dropped", "held", "lost")
    rows = "".join("<tr><td>%s</td>%s</tr>" % (escape(d), "".join(
        cell(acc, "devices", d, "readings", c) for c in cols)) for d in devices)
    return "<table><tr><th>device</th>%s</tr>%s</table>" % (
        "".join("<th>%s</th>" % c for c in cols), rows)


def _backlog(run, gw, t0, t1):
    pts = [p for p in (run.get("backlog") or {}).get(gw) or []
           if isinstance(p, (list, tuple)) and len(p) >= 2]
    ts, vs = [p[0] for p in pts], [p[1] for p in pts]
    ch = svg.TimeChart(t0, t1, 0, max(vs + [1]) * 1.1, height=170, y_label="rows queued",
                       title="%s outbox backlog" % gw)
    for f in run.get("faults") or []:
        if gw in set(map(str, f.get("targets") or [])) and isinstance(f.get("start_wall_s"),
                                                                      (int, float)):
            b = f.get("end_wall_s")
            ch.shade(f["start_wall_s"], b if isinstance(b, (int, float)) else f["start_wall_s"],
                     "fault", _fault_label(f))
    ch.line(ts, vs, "backlog")
    return "<h3>Gateway %s</h3>%s" % (escape(gw), ch.svg())


def latest_status(run):
    """``{device: its latest status record}`` (by boot epoch and seq) among those that arrived:
    ``epoch``, ``seq``, ``t``, ``values`` (battery volts, boot reason), ``counters`` (boots,
    cycles, the flash log's ``dropped``/``gaps``, the link's), ``arrived_wall_s``."""
    out = {}
    for a in run.get("arrived") or []:
        if isinstance(a, dict) and a.get("kind") == "status" and isinstance(a.get("seq"), int) \
                and isinstance(a.get("epoch"), int):
            old = out.get(a.get("device"))
            if old is None or (a["epoch"], a["seq"]) > (old["epoch"], old["seq"]):
                out[a.get("device")] = {k: a.get(k) for k in ("epoch", "seq", "t", "values", "counters",
                                                              "arrived_wall_s")}
    return dict(sorted(out.items(), key=lambda kv: str(kv[0])))


STATUS_COUNTERS = ("boots", "cycles", "dropped", "gaps", "sensor_failures", "uplinks", "link_errors")


def _status_table(run):
    status = latest_status(run)
    if not status:
        return "<p class=\"muted\">No status record arrived.</p>"
    rows = []
    for dev, s in status.items():
        values = s.get("values") if isinstance(s.get("values"), dict) else {}
        counters = s.get("counters") if isinstance(s.get("counters"), dict) else {}
        vals = [(values.get(q) or [None])[0] for q in ("boot_reason", "battery_v")]
        rows.append("<tr><td>%s</td><td>%s</td>%s%s</tr>" % (
            escape(str(dev)), escape(_utc(s["t"]) if isinstance(s.get("t"), (int, float)) else "-"),
            "".join("<td>%s</td>" % fmt(v) for v in vals),
            "".join("<td class=\"n\">%s</td>" % fmt(counters.get(c)) for c in STATUS_COUNTERS)))
    head = ("device", "at", "boot reason", "battery V") + STATUS_COUNTERS
    return "<table><tr>%s</tr>%s</table>" % ("".join("<th>%s</th>" % h for h in head), "".join(rows))


def render(run, acc, profiles=None):
    """The report page (text) of ``run`` and its accounting ``acc``; ``profiles`` as for
    ``accounting.account`` (default: read from hardware/profiles)."""
    sc = run.get("scenario") or {}
    t0, t1 = sc.get("start_wall_s") or 0, sc.get("end_wall_s") or 0
    nodes = [n for n in run.get("nodes") or [] if isinstance(n, dict) and "id" in n]
    if profiles is None:
        profiles = load_profiles({n.get("profile") for n in nodes if n.get("profile")})
    parts = [_headline(run, acc), "<h2>Readings</h2>", _summary(acc, "readings"), _explain(),
             "<h2>All records (readings, status and gap records)</h2>", _summary(acc, "records"),
             _gaps(acc),
             "<h2>Alarms</h2>", _alarm_lists(acc), "<h2>Faults</h2>",
             _fault_timeline(run, t0, t1)]
    for prof in acc["profiles"]:
        devs = sorted(d for d, v in acc["devices"].items() if v["profile"] == prof)
        by_id = {n["id"]: n for n in nodes}
        title = ((profiles.get(prof) or {}).get("profile") or {}).get("title") or prof
        parts.append("<h2>%s <span class=\"muted\">(%s, %d nodes)</span></h2>"
                     % (escape(str(title)), escape(prof), len(devs)))
        parts.append(_device_table(acc, devs))
        for d in _pick(acc, run, [d for d in devs if d in by_id]):
            parts.append(_device_chart(run, acc, by_id[d], profiles.get(prof) or {}, t0, t1))
    parts.append("<h2>Node status</h2><p>Each node's latest status record: why it last booted, "
                 "its battery, and its own counters (records its flash log dropped, gap records "
                 "it wrote...).</p>" + _status_table(run))
    parts.append("<h2>Gateway backlogs</h2><p>Rows waiting in each gateway's queue for the "
                 "council's platform; shaded: faults on that gateway.</p>")
    for gw in sorted(run.get("backlog") or {}):
        parts.append(_backlog(run, gw, t0, t1))
    if acc["lost_keys"]:
        parts.append("<h2>Lost records (first %d)</h2><p>%s</p>" % (len(acc["lost_keys"]), escape(
            ", ".join("%s/%s/%s" % tuple(k) for k in acc["lost_keys"]))))
    if acc["warnings"]:
        parts.append("<h2>Notes</h2><ul>%s</ul>" % "".join(
            "<li>%s</li>" % escape(w) for w in acc["warnings"][:200]))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>%s</title>"
            "<style>%s%s</style></head><body>%s</body></html>\n"
            % (escape("civicedge simulation: %s" % (sc.get("title") or sc.get("name"))), CSS,
               svg.STYLE, "\n".join(parts)))
