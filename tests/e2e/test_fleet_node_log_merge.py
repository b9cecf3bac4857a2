"""A node's flash log overflowing for so long that its gap records are themselves dropped and
merged into later ones (issues 3 and 5: exact drop counts), in a fleet run: one LoRaWAN tap
sensor with the smallest log the firmware accepts (16 KiB, ~200 of its records) waking every
5 s, and radio interference at its only gateway for 50 minutes (~600 wakes, three logs' worth).

The claim: every key that never arrives upstream is explained exactly by the gap records
that do arrive (or are still on the node's flash): their ``dropped`` sum equals the number of
missing keys, merged gap records' own keys included (firmware/app/store.py), and equals the
node's own count; the fleet accounting finds no mismatch and nothing lost.
"""

import pytest

from simulators.fleet import accounting
from simulators.fleet import scenario as scenario_mod
from simulators.fleet.runner import FleetRun
from tests.e2e.test_fleet_faults import OVERFLOW as DEVICE, OVERFLOW_GROUP
from tests.gatewaykit import needs_mosquitto

# the overflow tap of the every-fault run (16 KiB log), waking every 5 s instead of 7
GROUP = OVERFLOW_GROUP.replace('"interval_s=7"', '"interval_s=5"')
assert GROUP != OVERFLOW_GROUP
SCENARIO = """
[scenario]
name = "node-log-merge"
title = "A tap sensor's log overflows three times over while the band is jammed"
seed = 5
start = "2026-03-02T10:00:00Z"
duration = "75m"
sample_every = "5m"

[[gateways]]
id = "civ1-gw"
site = "civ1"
lorawan = true
""" + GROUP + """
[[faults]]
kind = "lora_interference"
at = "10:05"
duration = "50m"
target = ["civ1-gw"]
"""


@pytest.fixture(scope="module")
def merged_run(tmp_path_factory):
    sc = scenario_mod.loads(SCENARIO, where="test_fleet_node_log_merge")
    run = FleetRun(sc, tmp_path_factory.mktemp("node-log-merge") / "run", say=lambda line: None).prepare().run()
    return run, accounting.account(run)


@needs_mosquitto
def test_merged_gap_records_explain_every_missing_key_exactly(merged_run):
    run, acct = merged_run
    jam = run["faults"][0]
    held = run["held_node"][DEVICE]
    gaps = {tuple(g["key"]): g for g in run["gaps"] + held["gaps"] if g["reason"] == "node_log"}
    status = max((a for a in run["arrived"] if a["device"] == DEVICE and a["kind"] == "status"),
                 key=lambda a: (a["epoch"], a["seq"]))
    assert status["t"] > jam["end_wall_s"]  # the node's counters after the last drop
    # gap records were themselves dropped: the node wrote more than arrived or are held
    assert status["counters"]["gaps"] > len(gaps) >= 1
    # the keys of the epoch never seen upstream nor still on the node (one boot: one epoch)
    (epoch,) = {a["epoch"] for a in run["arrived"] if a["device"] == DEVICE}
    seen = {a["seq"] for a in run["arrived"] if a["device"] == DEVICE} | {k[1] for k in held["keys"]}
    missing = [q for q in range(max(seen) + 1) if q not in seen]
    dropped = sum(g["dropped"] for g in gaps.values())
    assert len(missing) == dropped == status["counters"]["dropped"] > 0
    # and each of them lies in a gap record's range (none of which holds a key that arrived)
    ranges = [((g["first_epoch"], g["first_seq"]), (g["last_epoch"], g["last_seq"])) for g in gaps.values()]
    assert all(any(lo <= (epoch, q) <= hi for lo, hi in ranges) for q in missing)
    assert not [q for q in seen if any(lo <= (epoch, q) <= hi for lo, hi in ranges)]
    # the fleet accounting agrees, with nothing lost and no mismatch
    mine = acct["devices"][DEVICE]["records"]
    assert acct["gaps"]["mismatches"] == [] and acct["verdict"]["ok"] is True
    assert mine["dropped"] == mine["dropped_by_reason"]["node_log"] == dropped
    assert acct["devices"][DEVICE]["gaps_reported_dropped"] == dropped and mine["lost"] == 0
