"""Reports of a fleet run: report.json (the run record and its accounting), junit.xml (the
verdicts a CI reads) and report.html (``simulators.fleet.report_html``), plus the terminal
summary table ``scripts/demo`` prints.

Times in the files are Unix seconds (virtual clock); latencies are seconds.
"""

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from simulators.fleet import report_html

JSON_NAME, JUNIT_NAME, HTML_NAME = "report.json", "junit.xml", "report.html"
LISTED = 100  # keys / episodes listed in one JUnit failure


def _finite(v):
    """``v`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def to_json(run, account):
    """report.json's text: ``{"run": run, "account": account, "status": each node's latest
    status record}`` (``report_html.latest_status``; complete; NaN/inf as null)."""
    doc = {"run": run, "account": account, "status": report_html.latest_status(run)}
    try:
        return json.dumps(doc, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(_finite(doc), allow_nan=False, separators=(",", ":"))


# -- JUnit ----------------------------------------------------------------------------------
def _case(suite, name, failure=None, detail=""):
    case = ET.SubElement(suite, "testcase", classname=suite.get("name"), name=name, time="0")
    if failure:
        f = ET.SubElement(case, "failure", message=failure, type="AccountingError")
        f.text = detail
    return case


def _keys(keys):
    return "\n".join("%s epoch %s seq %s" % tuple(k) for k in keys[:LISTED])


def _episodes(items):
    return "\n".join("%s %s %s..%s" % (i["device"], i["rule"], i.get("start", i.get("since")),
                                       i["end"]) for i in items[:LISTED])


def to_junit(run, account):
    """junit.xml's text: ``<testsuites>`` holding ``<testsuite name="sim.<scenario>">`` with
    ``no_lost_records``, ``no_lost_readings``, ``alarms_expected_raised``,
    ``no_false_alarms``, ``drops_match_gap_reports`` and one ``no_lost_records[<device>]`` per device."""
    name = "sim.%s" % ((run.get("scenario") or {}).get("name") or "run")
    root = ET.Element("testsuites", name=name)
    suite = ET.SubElement(root, "testsuite", name=name)
    tot, al = account["total"], account["alarms"]
    lost, lost_r = tot["records"]["lost"], tot["readings"]["lost"]
    _case(suite, "no_lost_records",
          lost and "%d of %d records lost" % (lost, tot["records"]["produced"]),
          _keys(account["lost_keys"]))
    _case(suite, "no_lost_readings",
          lost_r and "%d of %d readings lost" % (lost_r, tot["readings"]["produced"]),
          _keys(account["lost_keys"]))
    _case(suite, "alarms_expected_raised",
          al["misses"] and "%d of %d expected alarms not raised"
          % (len(al["misses"]), tot["alarms"]["expected"]), _episodes(al["misses"]))
    _case(suite, "no_false_alarms",
          al["false_alarms"] and "%d false alarm(s)" % len(al["false_alarms"]),
          _episodes(al["false_alarms"]))
    mism = account["gaps"]["mismatches"]
    _case(suite, "drops_match_gap_reports",
          mism and "%d devices' holes inside gap ranges differ from the reported drops"
          % len(mism), "\n".join("%(device)s: %(holes)d missing, %(reported)d reported" % m
                                 for m in mism[:LISTED]))
    for dev in sorted(account["devices"]):
        n = account["devices"][dev]["records"]["lost"]
        keys = [k for k in account["lost_keys"] if k[0] == dev]
        _case(suite, "no_lost_records[%s]" % dev, n and "%d records of %s lost" % (n, dev),
              _keys(keys))
    props = ET.Element("properties")
    for key in ("produced", "delivered", "duplicates", "dropped", "held", "lost"):
        ET.SubElement(props, "property", name="readings.%s" % key,
                      value=str(tot["readings"][key]))
    suite.insert(0, props)
    cases = suite.findall("testcase")
    failures = sum(1 for c in cases if c.find("failure") is not None)
    wall = (run.get("timing") or {}).get("wall_s")
    t = "%.3f" % wall if isinstance(wall, (int, float)) and math.isfinite(wall) else "0"
    for el in (root, suite):
        el.set("tests", str(len(cases)))
        el.set("failures", str(failures))
        el.set("errors", "0")
        el.set("time", t)
    suite.set("skipped", "0")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# -- files and the terminal table -------------------------------------------------------------
def write_reports(run, account, out_dir):
    """Write report.json, junit.xml and report.html into ``out_dir`` (made if missing);
    returns ``{"json", "junit", "html"}`` paths (str). Raises ``OSError`` if it cannot."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_NAME, "junit": out / JUNIT_NAME, "html": out / HTML_NAME}
    paths["json"].write_text(to_json(run, account), encoding="utf-8")
    paths["junit"].write_text(to_junit(run, account), encoding="utf-8")
    paths["html"].write_text(report_html.render(run, account), encoding="utf-8")
    return {k: str(p) for k, p in paths.items()}


def _n(v, fmt="%d"):
    return "-" if v is None else fmt % v


def summary_table(account):
    """The readings summary as fixed-width text: one row per profile and a total; columns
    produced, delivered, duplicates, dropped, held, lost, latency p50/p99 (s), alarms
    hit/miss/false."""
    head = ("profile", "produced", "delivered", "dups", "dropped", "held", "lost", "p50 s",
            "p99 s", "alarms h/m/f")
    rows = []
    items = list(account["profiles"].items()) + [("total", account["total"])]
    for name, p in items:
        r, lat, al = p["readings"], p["latency"], p["alarms"]
        rows.append((name, _n(r["produced"]), _n(r["delivered"]), _n(r["duplicates"]),
                     _n(r["dropped"]), _n(r["held"]), _n(r["lost"]), _n(lat["p50_s"], "%.1f"),
                     _n(lat["p99_s"], "%.1f"),
                     "%d/%d/%d" % (al["hits"], al["misses"], al["false_alarms"])))
    widths = [max(len(str(row[i])) for row in [head] + rows) for i in range(len(head))]

    def line(row):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths)))
    rule = "-" * len(line(head))
    return "\n".join([line(head), rule] + [line(r) for r in rows[:-1]] + [rule, line(rows[-1])])
