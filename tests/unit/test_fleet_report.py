"""The fleet run's reports: report.json holds the run and its accounting, junit.xml is valid
JUnit with the CI's cases and counts, report.html is self-contained (no scripts, no external
addresses), escapes text, and every number in its tables equals the JSON's (``data-key``
cells); the terminal summary table shows the same numbers."""

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

from simulators.fleet.accounting import account
from simulators.fleet.report import summary_table, write_reports
from simulators.fleet.report_svg import fmt_time, multi_day, nice_ticks

T0 = 1772434800.0  # 2026-03-02 07:00 UTC
H = 3600.0
TITLE = 'Oakfield <script>alert("x")</script> & Co'


def reading(dev, epoch, seq, co2=800.0, lat=4.0, kind="reading"):
    t = T0 + 120.0 * seq
    return {"device": dev, "epoch": epoch, "seq": seq, "kind": kind, "t": t,
            "values": {"co2_ppm": [co2, "ok"]} if kind == "reading" else {},
            "arrived_wall_s": t + lat}


def make_run(hours=10, lose=True):
    nodes = [{"id": d, "group": "rooms", "profile": "classroom-co2", "link": "mqtt",
              "gateway": "gw1", "interval_s": 120, "mean_period_s": 0} for d in ("rm01", "rm02")]
    nodes.append({"id": "bin1", "group": "bins", "profile": "bin-level", "link": "lorawan",
                  "gateway": "gw2", "interval_s": 1800, "mean_period_s": 0})
    times = [T0 + i * 300.0 for i in range(int(hours * 12))]
    co2 = [2000.0 if 1 * H <= t - T0 < 2 * H else 800.0 for t in times]
    arrived = [reading("rm01", 1, s, co2=co2[min(len(co2) - 1, int(s * 120 // 300))])
               for s in range(0, 30)]
    arrived += [reading("rm01", 1, 3), reading("rm01", 1, 30, kind="status")]
    skip = {7} if lose else set()
    arrived += [reading("rm02", 1, s, lat=30.0) for s in range(0, 12) if s not in skip]
    arrived += [{"device": "bin1", "epoch": 2, "seq": s, "kind": "reading", "t": T0 + 1800.0 * s,
                 "values": {"fill_ratio": [0.2, "ok"], "distance_cm": [86.0, "ok"]},
                 "arrived_wall_s": T0 + 1800.0 * s + 3600} for s in range(4)]
    events = [{"kind": "raised", "rule": "co2_high_20min", "device_id": "rm01",
               "quantity": "co2_ppm", "value": 2000.0, "since": T0 + H, "at": T0 + H + 1200,
               "severity": "warning", "detail": {}, "arrived_wall_s": T0 + H + 1210}]
    return {
        "scenario": {"name": "school", "title": TITLE, "seed": 7, "start_wall_s": T0,
                     "end_wall_s": T0 + hours * H, "path": None},
        "nodes": nodes,
        "gateways": [{"id": "gw1", "site": "sch1", "lorawan": False},
                     {"id": "gw2", "site": "sch1", "lorawan": True}],
        "faults": [{"kind": "broker_outage", "targets": ["gw1"], "start_wall_s": T0 + 5 * H,
                    "end_wall_s": T0 + 5.75 * H, "params": {}},
                   {"kind": "clock_jump", "targets": ["rm02"], "start_wall_s": T0 + 3 * H,
                    "end_wall_s": None, "params": {"jump": "-2h"}}],
        "arrived": arrived,
        "gaps": [{"device": "rm02", "reason": "policy", "first_epoch": 1, "first_seq": 12,
                  "last_epoch": 1, "last_seq": 13, "dropped": 2, "arrived_wall_s": T0 + H}],
        "alarm_events": events,
        "held_node": {"rm02": {"mount": "ok", "state": {"boot_epoch": 1, "next_seq": 15},
                               "keys": [[1, 14, "reading"]]}},
        "held_gateway": {"gw1": [], "gw2": []},
        "truth": {"rm01": {"times": times, "values": {"co2_ppm": co2}},
                  "rm02": {"times": times, "values": {"co2_ppm": [800.0] * len(times)}},
                  "bin1": {"times": times, "values": {"fill_ratio": [0.2] * len(times)}}},
        "backlog": {"gw1": [[t, 40 if 5 * H <= t - T0 < 5.75 * H else 0] for t in times],
                    "gw2": [[t, 1] for t in times]},
        "node_stats": {}, "timing": {"wall_s": 12.5}, "counters": {},
    }


class Cells(HTMLParser):
    """Collects ``data-key`` cells (key, data-value, text) and every tag and attribute."""

    def __init__(self):
        super().__init__()
        self.cells, self.tags, self.attrs, self._cur = [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        self.attrs.extend(v or "" for v in a.values())
        if "data-key" in a:
            self._cur = [a["data-key"], a["data-value"], ""]
            self.cells.append(self._cur)

    def handle_endtag(self, tag):
        self._cur = None

    def handle_data(self, data):
        if self._cur is not None:
            self._cur[2] += data


def dig(doc, key):
    for part in key.split("."):
        doc = doc[part]
    return doc


def written(tmp_path, run=None):
    run = run or make_run()
    acc = account(run)
    paths = write_reports(run, acc, tmp_path / "out")
    return run, acc, paths


def test_write_reports_writes_three_files_and_json_holds_run_and_account(tmp_path):
    run, acc, paths = written(tmp_path)
    assert set(paths) == {"json", "junit", "html"}
    doc = json.loads(open(paths["json"], encoding="utf-8").read())
    assert doc["run"] == json.loads(json.dumps(run))
    assert doc["account"] == json.loads(json.dumps(acc))
    assert doc["account"]["total"]["readings"]["lost"] == 1


def test_junit_is_parseable_with_cases_counts_and_failure_details(tmp_path):
    _, acc, paths = written(tmp_path)
    root = ET.parse(paths["junit"]).getroot()
    suite = root.find("testsuite")
    assert suite.get("name") == "sim.school"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert {"no_lost_records", "no_lost_readings", "alarms_expected_raised", "no_false_alarms",
            "drops_match_gap_reports", "no_lost_records[rm01]", "no_lost_records[rm02]", "no_lost_records[bin1]"} == set(cases)
    failed = [n for n, c in cases.items() if c.find("failure") is not None]
    assert sorted(failed) == ["no_lost_readings", "no_lost_records", "no_lost_records[rm02]"]
    assert suite.get("tests") == root.get("tests") == str(len(cases))
    assert suite.get("failures") == root.get("failures") == "3"
    assert "rm02 epoch 1 seq 7" in cases["no_lost_records"].find("failure").text
    assert cases["no_lost_records"].find("failure").get("message") == "1 of %d records lost" % (
        acc["total"]["records"]["produced"])
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["readings.delivered"] == str(acc["total"]["readings"]["delivered"])


def test_junit_clean_run_passes_and_a_miss_fails_the_alarm_case(tmp_path):
    run = make_run(lose=False)
    run["alarm_events"] = []
    _, acc, paths = written(tmp_path, run)
    suite = ET.parse(paths["junit"]).getroot().find("testsuite")
    failed = {c.get("name"): c.find("failure") for c in suite.findall("testcase")
              if c.find("failure") is not None}
    assert list(failed) == ["alarms_expected_raised"]
    assert "rm01 co2_high_20min" in failed["alarms_expected_raised"].text
    assert acc["verdict"]["ok"] is True


def test_html_numbers_equal_the_json(tmp_path):
    _, _, paths = written(tmp_path)
    doc = json.loads(open(paths["json"], encoding="utf-8").read())["account"]
    p = Cells()
    p.feed(open(paths["html"], encoding="utf-8").read())
    keys = {c[0] for c in p.cells}
    for must in ("total.readings.delivered", "total.readings.lost", "total.records.produced",
                 "profiles.classroom-co2.readings.duplicates", "profiles.bin-level.readings.held",
                 "total.latency.p50_s", "total.alarms.hits", "devices.rm02.readings.lost",
                 "gaps.reported_dropped"):
        assert must in keys
    for key, value, text in p.cells:
        want = dig(doc, key)
        assert json.loads(value) == want, key
        if isinstance(want, int):
            assert text.strip() == str(want), key
        elif isinstance(want, float):
            assert abs(float(text) - want) <= 0.05, key


def test_html_is_self_contained_and_escaped(tmp_path):
    _, _, paths = written(tmp_path)
    html = open(paths["html"], encoding="utf-8").read()
    assert "http" not in html and "//" not in "".join(Cells().attrs)
    p = Cells()
    p.feed(html)
    assert "script" not in p.tags and "img" not in p.tags and "link" not in p.tags
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in html
    assert p.tags.count("svg") == 1 + 3 + 2  # faults, 2 rooms + 1 bin, 2 backlogs
    assert "1 record lost" in html
    assert ">12:00<" in html and "UTC" in html  # axis labels in UTC HH:MM


def test_html_axis_shows_the_day_when_the_run_spans_days(tmp_path):
    _, _, paths = written(tmp_path, make_run(hours=30))
    assert ">Tue 03 00:00<" in open(paths["html"], encoding="utf-8").read()


def test_summary_table_shows_the_account_numbers():
    acc = account(make_run())
    lines = summary_table(acc).splitlines()
    assert len({len(line) for line in lines}) == 1  # fixed width
    rows = {line.split()[0]: line.split() for line in lines if not line.startswith("-")}
    assert set(rows) == {"profile", "classroom-co2", "bin-level", "total"}
    for name, part in (("classroom-co2", acc["profiles"]["classroom-co2"]), ("total", acc["total"])):
        r, al = part["readings"], part["alarms"]
        assert rows[name][1:7] == [str(r[k]) for k in ("produced", "delivered", "duplicates",
                                                        "dropped", "held", "lost")]
        assert rows[name][7] == "%.1f" % part["latency"]["p50_s"]
        assert rows[name][9] == "%d/%d/%d" % (al["hits"], al["misses"], al["false_alarms"])


def test_axis_helpers():
    assert fmt_time(T0) == "07:00" and fmt_time(T0, True) == "Mon 02 07:00"
    assert not multi_day(T0, T0 + 17 * H) and multi_day(T0, T0 + 17 * H + 1)
    assert multi_day(T0 - 7 * H, T0 + 17 * H) is False  # 00:00 to 24:00 is one day
    assert nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]


def test_each_nodes_latest_status_is_in_the_json_and_on_the_page(tmp_path):
    run = make_run()
    for seq, boots, dropped in ((5, 1, 0), (40, 1, 7)):   # the later one wins
        rec = reading("rm01", 1, seq, kind="status")
        rec["values"] = {"boot_reason": ["power_on", "ok"], "battery_v": [3.61, "ok"]}
        rec["counters"] = {"boots": boots, "cycles": seq, "dropped": dropped, "gaps": 1}
        run["arrived"].append(rec)
    run, acc, paths = written(tmp_path, run)
    doc = json.loads(open(paths["json"], encoding="utf-8").read())
    assert list(doc["status"]) == ["rm01"]
    latest = doc["status"]["rm01"]
    assert (latest["seq"], latest["counters"]["dropped"]) == (40, 7)
    assert latest["values"]["boot_reason"][0] == "power_on"
    page = open(paths["html"], encoding="utf-8").read()
    row = page[page.index("<h2>Node status</h2>"):].split("<tr>")[2]
    cells = [c.split("</td>")[0] for c in row.split("<td")[1:]]
    assert [c.split(">", 1)[1] for c in cells[:4]][2:] == ["power_on", "3.6"]
    assert [c.split(">", 1)[1] for c in cells[4:8]] == ["1", "40", "7", "1"]
