"""The fleet runner end to end (``civicedge sim run``): a small site — classroom nodes on
serial and on WiFi/MQTT running the real firmware, the real gateway agent in its own
process, real Mosquitto brokers — through an hour with the council's broker unreachable for
a quarter of it. Every record is accounted for (nothing lost), the reports agree with the
run's JSON, and the gateway held nothing back at the end."""

import json
import re
import xml.etree.ElementTree as ET

from civicedge import cli
from tests.gatewaykit import needs_mosquitto

SCENARIO = """\
[scenario]
name = "mini-school"
title = "Three classrooms and a short outage upstream"
seed = 3
start = "2026-03-02T09:00:00Z"
duration = "1h"
sample_every = "5m"

[[gateways]]
id = "gw1"
site = "sch1"

[[groups]]
name = "wired"
profile = "classroom-co2"
link = "serial"
count = 1
gateway = "gw1"
ids = "sch1-rm{n:02d}-co2"
environment = "classroom"
stagger = "2m"

[[groups]]
name = "wifi"
profile = "classroom-co2"
link = "mqtt"
count = 2
first = 2
gateway = "gw1"
ids = "sch1-rm{n:02d}-co2"
environment = "classroom"
stagger = "2m"

[[faults]]
kind = "broker_outage"
at = "09:20"
duration = "15m"
target = "gw1"
"""


@needs_mosquitto
def test_a_small_site_runs_end_to_end_and_every_record_is_accounted_for(tmp_path, capsys, monkeypatch):
    path = tmp_path / "mini.toml"
    path.write_text(SCENARIO)
    monkeypatch.chdir(tmp_path)  # a relative --out, as scripts/demo gives (children run elsewhere)
    rc = cli.main(["sim", "run", "mini.toml", "--out", "out"])
    out = capsys.readouterr().out
    assert rc == 0, out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    run, acct = report["run"], report["account"]
    total = acct["total"]["records"]
    assert total["lost"] == 0 and total["produced"] > 0
    # an hour at interval_s 120: ~30 readings per node, all delivered once the broker is back
    readings = acct["total"]["readings"]
    assert readings["delivered"] >= 3 * 28 and readings["held"] == 0
    assert run["held_gateway"] == {"gw1": []}
    assert [n["end"] for n in run["node_stats"].values()] == ["time"] * 3
    # the outage was taken and the backlog built up during it
    outage = [f for f in run["faults"] if f["kind"] == "broker_outage"][0]
    during = [rows for t, rows in run["backlog"]["gw1"] if outage["start_wall_s"] < t < outage["end_wall_s"]]
    assert max(during) > 0
    # the reports agree with the JSON
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot().find("testsuite")
    assert suite.get("name") == "sim.mini-school" and suite.get("failures") == "0"
    html = (tmp_path / "out" / "report.html").read_text()
    cell = re.search(r'data-key="total.readings.delivered"[^>]*data-value="(\d+)"', html)
    assert cell and int(cell.group(1)) == readings["delivered"]
    assert "lost" in out and "report.html" in out
