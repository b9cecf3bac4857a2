"""The fleet run's accounting (issue 5, Contract 2): every produced key lands in exactly one
category, epochs are contiguous ranges, gap ranges and held keys count, lost keys are listed,
latency uses trusted times only, and the alarm ground truth (strict / lenient by the sensor's
accuracy) yields hits, misses and false alarms. Run records are small and hand-made."""

import copy
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.no2b43f import ppb_to_ugm3
from simulators.fleet.accounting import account

T0 = 1772434800.0  # 2026-03-02 07:00 UTC, a Monday
H = 3600.0
CO2 = "classroom-co2"


def node(dev, profile=CO2, gateway="gw1", link="mqtt", interval_s=120, **extra):
    return dict({"id": dev, "group": "g", "profile": profile, "link": link, "gateway": gateway,
                 "interval_s": interval_s, "mean_period_s": 0}, **extra)


def copy_of(dev, epoch, seq, t="auto", arrived=None, kind="reading", flag="ok", q="co2_ppm",
            v=800.0):
    t = T0 + 120.0 * seq if t == "auto" else t
    return {"device": dev, "epoch": epoch, "seq": seq, "kind": kind, "t": t,
            "values": {q: [v, flag]} if kind == "reading" else {},
            "arrived_wall_s": (t or T0) + 5.0 if arrived is None else arrived}


def gap(dev, e0, s0, e1, s1, dropped, reason="policy"):
    return {"device": dev, "reason": reason, "first_epoch": e0, "first_seq": s0,
            "last_epoch": e1, "last_seq": s1, "dropped": dropped, "arrived_wall_s": T0 + H}


def make_run(nodes, arrived=(), gaps=(), alarm_events=(), held_node=None, held_gateway=None,
             truth=None, hours=10):
    return {"scenario": {"name": "t", "title": "Test", "seed": 1, "start_wall_s": T0,
                         "end_wall_s": T0 + hours * H, "path": None},
            "nodes": list(nodes), "gateways": [{"id": "gw1", "site": "s1", "lorawan": False}],
            "faults": [], "arrived": list(arrived), "gaps": list(gaps),
            "alarm_events": list(alarm_events), "held_node": held_node or {},
            "held_gateway": held_gateway or {}, "truth": truth or {}, "backlog": {},
            "node_stats": {}, "timing": {}, "counters": {}}


def cats(d):
    return {k: d[k] for k in ("produced", "delivered", "duplicates", "dropped", "held_node",
                              "held_gateway", "held", "lost")}


# -- records --------------------------------------------------------------------------------
def epoch3_run():
    """Epoch 3, seqs 0..10: 4 arrives twice, 7..8 in a gap range, 9 held on the node,
    5 is a hole; 0..4, 6, 10 arrived. The node's ``next_seq`` is its reservation mark."""
    arrived = [copy_of("a", 3, s) for s in (0, 1, 2, 3, 4, 6, 10)] + [copy_of("a", 3, 4)]
    held = {"a": {"mount": "ok", "state": {"boot_epoch": 3, "next_seq": 64},
                  "keys": [[3, 9, "reading"]]}}
    return make_run([node("a")], arrived, [gap("a", 3, 7, 3, 8, 2)], held_node=held)


def test_epoch_range_categories_and_the_hole_is_lost():
    acc = account(epoch3_run())
    dev = acc["devices"]["a"]
    assert dev["epochs"] == [[3, 0, 10]]
    assert cats(dev["records"]) == {"produced": 11, "delivered": 7, "duplicates": 1, "dropped": 2,
                                    "held_node": 1, "held_gateway": 0, "held": 1, "lost": 1}
    assert dev["records"]["dropped_by_reason"] == {"policy": 2}
    assert acc["lost_keys"] == [["a", 3, 5]]
    assert acc["verdict"] == {"lost_records": 1, "lost_readings": 1, "ok": False}
    assert cats(acc["total"]["records"]) == cats(dev["records"])
    assert cats(acc["profiles"][CO2]["readings"]) == cats(dev["readings"])
    assert acc["gaps"] == {"messages": 1, "distinct": 1, "reported_dropped": 2,
                           "reported_by_reason": {"policy": 2}, "mismatches": []}


def test_nothing_lost_when_every_key_is_accounted_for():
    run = epoch3_run()
    run["held_gateway"] = {"gw1": [["a", 3, 5]]}
    acc = account(run)
    assert acc["devices"]["a"]["records"]["held_gateway"] == 1
    assert acc["devices"]["a"]["records"]["lost"] == 0
    assert acc["lost_keys"] == [] and acc["verdict"]["ok"] is True


def test_next_seq_is_ignored_and_a_missing_seq_0_is_lost():
    # the flash inspection reports the reservation mark (64) as next_seq, not the last seq
    # used: 4..63 are not counted; seq 0, below the lowest known seq 1, was produced
    arrived = [copy_of("a", 5, s) for s in (1, 2, 3)]
    held = {"a": {"mount": "ok", "state": {"boot_epoch": 5, "next_seq": 64}, "keys": []}}
    acc = account(make_run([node("a")], arrived, held_node=held))
    assert acc["devices"]["a"]["epochs"] == [[5, 0, 3]]
    assert cats(acc["devices"]["a"]["records"])["produced"] == 4
    assert acc["lost_keys"] == [["a", 5, 0]]
    del held["a"]["state"]
    assert account(make_run([node("a")], arrived, held_node=held))["devices"] == acc["devices"]


def test_epochs_are_separate_ranges_and_a_skip_at_an_epoch_end_is_allowed():
    # epoch 1 ended at seq 2 (a reboot abandoned 3..63 of its reservation): nothing lost
    arrived = [copy_of("a", 1, s) for s in (0, 1, 2)] + [copy_of("a", 2, s) for s in (0, 1)]
    acc = account(make_run([node("a")], arrived))
    assert acc["devices"]["a"]["epochs"] == [[1, 0, 2], [2, 0, 1]]
    assert acc["devices"]["a"]["records"]["produced"] == 5
    assert acc["verdict"]["ok"] is True and acc["warnings"] == []


def test_seqs_below_an_epochs_lowest_known_seq_are_lost():
    # epoch 1 known from seq 4 (arrived), epoch 2 from seq 2 (held at the gateway): each
    # epoch starts at seq 0, so 1:0..3 and 2:0..1 were produced and are nowhere
    acc = account(make_run([node("a")], [copy_of("a", 1, s) for s in (4, 5)],
                           held_gateway={"gw1": [["a", 2, 2]]}))
    rec = acc["devices"]["a"]["records"]
    assert acc["devices"]["a"]["epochs"] == [[1, 0, 5], [2, 0, 2]]
    assert (rec["produced"], rec["delivered"], rec["held_gateway"], rec["lost"]) == (9, 2, 1, 6)
    assert acc["lost_keys"] == [["a", 1, s] for s in range(4)] + [["a", 2, 0], ["a", 2, 1]]
    assert acc["warnings"] == []


def test_precedence_delivered_then_gateway_then_node_then_dropped():
    arrived = [copy_of("a", 1, s) for s in (0, 1, 6)]
    held_node = {"a": {"mount": "ok", "state": {"boot_epoch": 1, "next_seq": 7},
                       "keys": [[1, s, "reading"] for s in (1, 3, 4, 5)]}}
    held_gw = {"gw1": [["a", 1, 3], ["a", 1, 4]]}
    run = make_run([node("a")], arrived, [gap("a", 1, 1, 1, 3, 1)], held_node=held_node,
                   held_gateway=held_gw)
    acc = account(run)
    # 0, 1, 6 delivered (1 also in the gap range and on the node); 3, 4 at the gateway (and
    # on the node); 5 on the node; 2, a hole inside the gap range, is the one dropped
    assert cats(acc["devices"]["a"]["records"]) == {
        "produced": 7, "delivered": 3, "duplicates": 0, "dropped": 1, "held_node": 1,
        "held_gateway": 2, "held": 3, "lost": 0}
    assert acc["gaps"]["mismatches"] == [] and acc["devices"]["a"]["gaps_reported_dropped"] == 1


def test_gap_range_across_epochs_and_reasons_by_first_gap_message():
    arrived = [copy_of("a", 1, s) for s in (0, 1)] + [copy_of("a", 2, s) for s in (2, 3)]
    # epoch 1 is known to seq 2 (the gap range's first key); 1:2, 2:0 and 2:1 are holes
    gaps = [gap("a", 1, 2, 2, 1, 3, reason="node_log"),
            gap("a", 2, 0, 2, 1, 2, reason="gateway_outbox"),
            gap("a", 2, 0, 2, 1, 2, reason="gateway_outbox")]  # the same message twice
    acc = account(make_run([node("a")], arrived, gaps))
    rec = acc["devices"]["a"]["records"]
    assert acc["devices"]["a"]["epochs"] == [[1, 0, 2], [2, 0, 3]]
    assert rec["dropped"] == 3 and rec["dropped_by_reason"] == {"node_log": 3}
    assert rec["lost"] == 0
    # the gap messages report 5 (3 + 2, the copy once) for 3 holes: a mismatch to look at
    assert acc["gaps"] == {"messages": 3, "distinct": 2, "reported_dropped": 5,
                           "reported_by_reason": {"gateway_outbox": 2, "node_log": 3},
                           "mismatches": [{"device": "a", "holes": 3, "reported": 5}]}


def test_a_widened_marker_supersedes_the_one_sent_before_it():
    arrived = [copy_of("a", 1, s) for s in (0, 3, 6)]
    gaps = [gap("a", 1, 1, 1, 2, 2, reason="gateway_outbox"),
            gap("a", 1, 1, 1, 5, 4, reason="gateway_outbox")]  # re-sent after widening
    acc = account(make_run([node("a")], arrived, gaps))
    assert acc["devices"]["a"]["records"]["dropped"] == 4
    assert acc["gaps"]["reported_dropped"] == 4 and acc["gaps"]["mismatches"] == []
    assert acc["verdict"]["ok"] is True


def test_node_log_gap_records_count_by_their_own_key_even_when_one_spans_another():
    """Two node log gap records whose ranges overlap but neither holds the other's key are
    separate drops (firmware/app/store.py: a merged range may overlap a newer gap's); a copy
    of the same gap record (same key) counts once."""
    arrived = [copy_of("a", 1, s) for s in (0, 9, 10, 12)]
    older = dict(gap("a", 1, 4, 1, 6, 3, reason="node_log"), key=["a", 1, 10])
    wider = dict(gap("a", 1, 1, 1, 8, 5, reason="node_log"), key=["a", 1, 11])  # 1-3, 7-8
    acc = account(make_run([node("a")], arrived, [older, wider, dict(wider)], held_node={
        "a": {"mount": "ok", "state": {"boot_epoch": 1, "next_seq": 13}, "keys": [[1, 11, "gap"]]}}))
    assert acc["devices"]["a"]["records"]["dropped"] == 8
    assert acc["gaps"]["reported_by_reason"] == {"node_log": 8} and acc["gaps"]["mismatches"] == []
    broken = dict(wider, dropped=4)  # a count one short is a mismatch, not hidden
    acc = account(make_run([node("a")], arrived, [older, broken], held_node={
        "a": {"mount": "ok", "state": {"boot_epoch": 1, "next_seq": 13}, "keys": [[1, 11, "gap"]]}}))
    assert acc["gaps"]["mismatches"] == [{"device": "a", "holes": 8, "reported": 7}]


def test_a_gap_record_merged_into_a_later_one_is_a_hole_its_count_explains():
    """The node's log dropped readings 1-3 into gap record A (key 10), then 4-9, A and 11 into
    gap record B (key 12). B's count is every key lost (firmware/app/store.py): A's 3, A's own
    key and 4-9, 11, so the holes (1-11) are exactly what B reports."""
    arrived = [copy_of("a", 1, s) for s in (0, 13)] + [copy_of("a", 1, 12, kind="gap")]
    b = dict(gap("a", 1, 1, 1, 11, 11, reason="node_log"), key=["a", 1, 12])
    for gaps, held_gaps in (([b], []), ([b, dict(b)], [b]), ([], [b])):  # arrived / held / both
        held = {"a": {"mount": "ok", "state": {"boot_epoch": 1, "next_seq": 64},
                      "keys": [] if gaps else [[1, 12, "gap"]], "gaps": held_gaps}}
        acc = account(make_run([node("a")], arrived if gaps else arrived[:2], gaps, held_node=held))
        assert acc["devices"]["a"]["records"]["dropped"] == 11
        assert acc["gaps"]["reported_by_reason"] == {"node_log": 11}
        assert acc["gaps"]["mismatches"] == [] and acc["verdict"]["ok"] is True
    # a log that left the merged record's own key out of its count is one short: shown
    acc = account(make_run([node("a")], arrived, [dict(b, dropped=10)]))
    assert acc["gaps"]["mismatches"] == [{"device": "a", "holes": 11, "reported": 10}]
    # A had been sent before it was dropped (its ack never came) and arrived: the node counted
    # a key that arrived, which shows as a mismatch rather than hiding anything
    a = dict(gap("a", 1, 1, 1, 3, 3, reason="node_log"), key=["a", 1, 10])
    acc = account(make_run([node("a")], arrived + [copy_of("a", 1, 10, kind="gap")], [a, b]))
    assert acc["devices"]["a"]["records"]["dropped"] == 10
    assert acc["gaps"]["mismatches"] == [{"device": "a", "holes": 10, "reported": 14}]


def test_a_gap_record_still_on_the_node_makes_its_range_dropped_not_lost():
    """The run ends before the node sent its gap record: the keys it describes are dropped
    (by reason node_log), not lost; a copy that also arrived counts once."""
    arrived = [copy_of("a", 1, s) for s in (0, 1, 5)]
    held_gap = dict(gap("a", 1, 2, 1, 4, 3, reason="node_log"), key=["a", 1, 6])
    held = {"a": {"mount": "ok", "state": {"boot_epoch": 1, "next_seq": 7},
                  "keys": [[1, 6, "gap"]], "gaps": [held_gap]}}
    for arrived_gaps in ([], [dict(held_gap)]):
        acc = account(make_run([node("a")], arrived, arrived_gaps, held_node=held))
        assert cats(acc["devices"]["a"]["records"]) == {
            "produced": 7, "delivered": 3, "duplicates": 0, "dropped": 3, "held_node": 1,
            "held_gateway": 0, "held": 1, "lost": 0}
        assert acc["gaps"]["mismatches"] == [] and acc["verdict"]["ok"] is True
    del held["a"]["gaps"]  # what the run record held before: the range looks lost
    assert account(make_run([node("a")], arrived, held_node=held))["devices"]["a"]["records"]["lost"] == 3


def test_readings_view_leaves_out_status_and_gap_records():
    arrived = [copy_of("a", 1, 0), copy_of("a", 1, 1, kind="status"),
               copy_of("a", 1, 1, kind="status"), copy_of("a", 1, 2), copy_of("a", 1, 4)]
    held = {"a": {"mount": "ok", "state": {"boot_epoch": 1, "next_seq": 6},
                  "keys": [[1, 5, "gap"]]}}
    acc = account(make_run([node("a")], arrived, held_node=held))
    rec, rd = acc["devices"]["a"]["records"], acc["devices"]["a"]["readings"]
    assert (rec["produced"], rec["delivered"], rec["duplicates"], rec["held_node"]) == (6, 4, 1, 1)
    assert (rd["produced"], rd["delivered"], rd["duplicates"], rd["held_node"]) == (4, 3, 0, 0)
    assert rec["lost"] == rd["lost"] == 1  # seq 3: kind unknown, counted as a reading
    assert acc["lost_keys"] == [["a", 1, 3]]


def test_lost_keys_are_listed_up_to_100_but_all_counted():
    arrived = [copy_of("a", 1, 0), copy_of("a", 1, 500)]
    acc = account(make_run([node("a")], arrived))
    assert acc["devices"]["a"]["records"]["lost"] == 499
    assert len(acc["lost_keys"]) == 100 and acc["lost_keys"][0] == ["a", 1, 1]


def test_latency_uses_first_copies_with_trusted_time_only():
    arrived = [copy_of("a", 1, s, arrived=T0 + 120.0 * s + lat)
               for s, lat in zip(range(10), (1, 2, 3, 4, 5, 6, 7, 8, 9, 100))]
    arrived.append(copy_of("a", 1, 0, arrived=T0 + 5000.0))  # a late duplicate: not its latency
    arrived.append(copy_of("a", 1, 10, flag="time_unsynced", arrived=T0 + 9000.0))
    arrived.append(copy_of("a", 1, 11, t=None, arrived=T0 + 9000.0))
    arrived.append(copy_of("a", 1, 12, kind="status", arrived=T0 + 9000.0))
    acc = account(make_run([node("a"), node("b", profile="bin-level", link="lorawan")],
                           arrived + [copy_of("b", 1, 0, q="fill_ratio", v=0.2, arrived=T0 + 20)]))
    lat = acc["profiles"][CO2]["latency"]
    assert lat == {"n": 10, "p50_s": 5.0, "p90_s": 9.0, "p99_s": 100.0, "max_s": 100.0,
                   "untrusted": 2}
    assert acc["profiles"]["bin-level"]["latency"]["n"] == 1
    assert acc["total"]["latency"]["n"] == 11 and acc["total"]["latency"]["max_s"] == 100.0


def test_result_is_json_and_deterministic_and_the_run_untouched():
    run = epoch3_run()
    before = copy.deepcopy(run)
    a, b = account(run), account(run)
    assert run == before
    assert json.dumps(a, allow_nan=False, sort_keys=True) == json.dumps(b, allow_nan=False,
                                                                         sort_keys=True)


# -- alarms -----------------------------------------------------------------------------------
def co2_truth(hours=10, episodes=()):
    """Truth every 5 min: 800 ppm, with ``(from_h, to_h, ppm)`` episodes."""
    times = [T0 + i * 300.0 for i in range(int(hours * 12))]
    vals = []
    for t in times:
        h = (t - T0) / H
        vals.append(next((v for a, b, v in episodes if a <= h < b), 800.0))
    return {"times": times, "values": {"co2_ppm": vals}}


def ev(kind, dev, rule, since_h, at_h, value=2000.0):
    return {"kind": kind, "rule": rule, "device_id": dev, "quantity": "co2_ppm", "value": value,
            "since": T0 + since_h * H, "at": T0 + at_h * H, "severity": "warning",
            "detail": {}, "arrived_wall_s": T0 + at_h * H + 10}


R = "co2_high_20min"


def alarm_run():
    # A (1-2 h) and B (4-5 h) are clear exceedances; 7-8 h sits in the don't-care band
    # (1550 ppm: above 1500 but within the SCD41's 115 ppm); 9-9.5 h the truth is 800 ppm
    truth = co2_truth(episodes=((1, 2, 2000.0), (4, 5, 2000.0), (7, 8, 1550.0)))
    events = [ev("raised", "a", R, 1.0, 1.34), ev("cleared", "a", R, 2.0, 2.1),
              ev("raised", "a", R, 7.0, 7.34), ev("cleared", "a", R, 8.0, 8.1),
              ev("raised", "a", R, 9.0, 9.34), ev("cleared", "a", R, 9.5, 9.6)]
    events.append(dict(events[0]))  # the same event delivered twice counts once
    return make_run([node("a")], alarm_events=events, truth={"a": truth})


def test_alarm_hit_miss_false_and_the_band():
    al = account(alarm_run())["alarms"]
    assert al["total"] == {"expected": 2, "hits": 1, "misses": 1, "false_alarms": 1, "raised": 3}
    assert [(h["start"], h["end"]) for h in al["hits"]] == [(T0 + 1 * H, T0 + 2 * H + 300)]
    assert [m["start"] for m in al["misses"]] == [T0 + 4 * H]
    assert [(f["device"], f["rule"], f["since"]) for f in al["false_alarms"]] == [("a", R, T0 + 9 * H)]
    assert al["bands"][CO2][R]["threshold"] == 115.0  # SCD41: 40 ppm + 5 % at 1500 ppm
    # the lenient truth sees the band episode, the strict one does not
    assert any(p["start"] == T0 + 7 * H for p in al["possible_episodes"])
    assert not any(p["start"] == T0 + 7 * H for p in al["expected_episodes"])


def test_alarm_counts_per_profile_and_total_agree():
    acc = account(alarm_run())
    assert acc["total"]["alarms"] == acc["alarms"]["total"]
    assert acc["profiles"][CO2]["alarms"] == acc["alarms"]["total"]


def test_alarm_matching_tolerates_the_reporting_delay():
    # the tolerance of a classroom node on MQTT: 120 s x 1 reading + no batching + 10 min;
    # the truth's episode runs 1 h to 2 h 05 (cleared after 5 min below the clear level).
    # Raised 50 min after it ended: a miss and a false alarm
    truth = co2_truth(episodes=((1, 2, 2000.0),))
    late = [ev("raised", "a", R, 2.9, 3.0), ev("cleared", "a", R, 3.1, 3.2)]
    al = account(make_run([node("a")], alarm_events=late, truth={"a": truth}))["alarms"]
    assert al["total"]["misses"] == 1 and al["total"]["false_alarms"] == 1
    # raised 10 min after it ended: within the tolerance, a hit
    ok = [ev("raised", "a", R, 2.25, 2.4), ev("cleared", "a", R, 2.5, 2.6)]
    al = account(make_run([node("a")], alarm_events=ok, truth={"a": truth}))["alarms"]
    assert al["total"]["hits"] == 1 and al["total"]["false_alarms"] == 0


def test_tolerance_grows_with_batching_and_consecutive_readings():
    # a bin node: 1800 s x 2 readings + 3600 s batching on LoRaWAN + 10 min = 2 h 10 min
    times = [T0 + i * 300.0 for i in range(8 * 12)]
    fill = [0.9 if 2 * H <= t - T0 < 4 * H else 0.3 for t in times]
    n = node("b", profile="bin-level", link="lorawan", interval_s=1800)
    late = [{"kind": "raised", "rule": "bin_full", "device_id": "b", "quantity": "fill_ratio",
             "value": 0.9, "since": T0 + 5.5 * H, "at": T0 + 6 * H, "severity": "warning",
             "detail": {}, "arrived_wall_s": T0 + 6 * H}]
    run = make_run([n], alarm_events=late, truth={"b": {"times": times, "values": {"fill_ratio": fill}}},
                   hours=8)
    al = account(run)["alarms"]
    assert [(h["rule"], h["start"]) for h in al["hits"]] == [("bin_full", T0 + 2 * H)]
    assert [(m["rule"], m["start"]) for m in al["misses"]] == [("bin_fast_rise", T0 + 2 * H)]
    assert al["total"]["false_alarms"] == 0
    assert al["bands"]["bin-level"]["bin_fast_rise"]["delta"] == 0.03


def test_rule_without_truth_is_unchecked_and_never_false():
    events = [ev("raised", "a", R, 1.0, 1.34)]
    truth = {"times": [T0, T0 + 300], "values": {"temperature_c": [20.0, 20.0]}}
    al = account(make_run([node("a")], alarm_events=events, truth={"a": truth}))["alarms"]
    assert {"device": "a", "rule": R, "reason": "no truth series of co2_ppm"} in al["unchecked"]
    assert al["total"]["false_alarms"] == 0 and al["total"]["raised"] == 0


def test_no2_hourly_mean_from_the_ppb_truth_in_ugm3():
    # 08:00-09:00 at 150 ppb (~287 ug/m3 > 200 + band): the hour closes at 09:00 -> expected
    times = [T0 + i * 60.0 for i in range(4 * 60)]
    ppb = [150.0 if 1 * H <= t - T0 < 2 * H else 30.0 for t in times]
    n = node("s", profile="street-no2", link="lorawan", interval_s=60, mean_period_s=900)
    run = make_run([n], truth={"s": {"times": times, "values": {"no2_ppb": ppb}}}, hours=4)
    al = account(run)["alarms"]
    assert [(m["rule"], m["start"]) for m in al["misses"]] == [("no2_hourly_mean_over_200", T0 + H)]
    band = al["bands"]["street-no2"]["no2_hourly_mean_over_200"]["threshold"]
    assert 15 < band < 30 and abs(band / ppb_to_ugm3(1.0) - 10.84) < 0.05  # 4 sigma + 1 ppb
    run["alarm_events"] = [{"kind": "raised", "rule": "no2_hourly_mean_over_200",
                            "device_id": "s", "quantity": "no2_ugm3", "value": 287.0,
                            "since": T0 + H, "at": T0 + 2 * H + 60, "severity": "warning",
                            "detail": {}, "arrived_wall_s": T0 + 2 * H + 90}]
    assert account(run)["alarms"]["total"]["hits"] == 1


def test_attribute_selected_daily_rule_on_a_hot_outlet():
    # a hot outlet at 45 C for two days never reaches 50 C: each closed day is an alarm
    times = [T0 - 7 * H + i * 300.0 for i in range(2 * 288)]  # from Monday 00:00, two days
    n = node("p", profile="legionella-outlet", link="lorawan", interval_s=300,
             attributes={"outlet": "hot"})
    run = make_run([n], truth={"p": {"times": times, "values": {"temperature_c": [45.0] * 576}}},
                   hours=41)
    run["scenario"]["start_wall_s"] = T0 - 7 * H
    al = account(run)["alarms"]
    assert [(m["rule"], m["start"]) for m in al["misses"]] == [("hot_outlet_below_50", T0 - 7 * H)]
    assert al["bands"]["legionella-outlet"]["hot_outlet_below_50"]["threshold"] == 0.1


# -- property ---------------------------------------------------------------------------------
DEVS = ("a", "b")
u8 = st.integers(0, 12)
keys = st.tuples(st.sampled_from(DEVS), st.integers(1, 3), u8)
kinds = st.sampled_from(("reading", "status", "gap"))


@st.composite
def runs(draw):
    arrived = [dict(copy_of(d, e, s, kind=k, flag=draw(st.sampled_from(("ok", "time_unsynced"))),
                            t=draw(st.one_of(st.none(), st.floats(T0, T0 + 9 * H))),
                            arrived=draw(st.floats(T0, T0 + 10 * H))))
               for (d, e, s), k in draw(st.lists(st.tuples(keys, kinds), max_size=25))]
    gaps = []
    for d, e0, s0, e1, s1 in draw(st.lists(st.tuples(st.sampled_from(DEVS), st.integers(1, 3), u8,
                                                     st.integers(1, 3), u8), max_size=4)):
        gaps.append(gap(d, e0, s0, e1, s1, draw(st.integers(0, 20)),
                        reason=draw(st.sampled_from(("policy", "log_overflow")))))
    held_node = {}
    for d in draw(st.lists(st.sampled_from(DEVS), unique=True)):
        held_node[d] = {"mount": "ok",
                        "state": {"boot_epoch": draw(st.integers(1, 3)), "next_seq": draw(u8)},
                        "keys": [[e, s, draw(kinds)] for _, e, s in draw(st.lists(keys, max_size=5))]}
    held_gw = {"gw1": [list(k) for k in draw(st.lists(keys, max_size=5))]}
    events = [ev(draw(st.sampled_from(("raised", "cleared"))), draw(st.sampled_from(DEVS)), R,
                 draw(st.floats(0, 10)), draw(st.floats(0, 10))) for _ in range(draw(st.integers(0, 4)))]
    vals = draw(st.lists(st.floats(300, 3000), min_size=0, max_size=40))
    truth = {"a": {"times": [T0 + 900.0 * i for i in range(len(vals))], "values": {"co2_ppm": vals}}}
    nodes = [node("a"), node("b", profile=draw(st.sampled_from((CO2, "bin-level", "nope"))))]
    return make_run(nodes, arrived, gaps, events, held_node, held_gw, truth)


@settings(max_examples=150, deadline=None)
@given(runs())
def test_property_account_never_raises_and_categories_add_up(run):
    acc = account(run)
    json.dumps(acc, allow_nan=False)
    for dev, d in acc["devices"].items():
        for view in ("readings", "records"):
            c = d[view]
            assert c["produced"] == c["delivered"] + c["dropped"] + c["held"] + c["lost"]
            assert min(c[k] for k in ("delivered", "duplicates", "dropped", "held_node",
                                      "held_gateway", "lost")) >= 0
            assert c["held"] == c["held_node"] + c["held_gateway"]
        assert sum(d["records"]["dropped_by_reason"].values()) == d["records"]["dropped"]
        assert d["readings"]["produced"] <= d["records"]["produced"]
        assert d["readings"]["lost"] == d["records"]["lost"]
        assert d["readings"]["dropped"] == d["records"]["dropped"]
        # every epoch starts at seq 0 and runs to its highest known seq, nothing more
        assert all(lo == 0 for _, lo, _ in d["epochs"])
        assert d["records"]["produced"] == sum(hi + 1 for _, _, hi in d["epochs"])
    assert acc["verdict"]["lost_records"] == sum(d["records"]["lost"] for d in acc["devices"].values())
    assert len(acc["lost_keys"]) == min(100, acc["verdict"]["lost_records"])
    al = acc["alarms"]["total"]
    assert al["expected"] == al["hits"] + al["misses"]
    # the node state's next_seq (a reservation mark) plays no part
    moved = copy.deepcopy(run)
    for held in moved["held_node"].values():
        held["state"]["next_seq"] += 64
    assert account(moved) == acc


def test_held_gap_records_pairs_each_gap_with_its_own_key():
    """flashinspect's report lists gap contents in the order of the held gap records."""
    from simulators.flashinspect import held_gap_records
    report = {"held": [(1, 3, "reading"), (1, 6, "gap"), (2, 0, "reading"), (2, 9, "gap")],
              "gaps": [((1, 2), (1, 4), 3), ((1, 7), (2, 8), 12)]}
    got = held_gap_records("a", report)
    assert [g["key"] for g in got] == [["a", 1, 6], ["a", 2, 9]]
    assert [(g["first_epoch"], g["first_seq"], g["last_epoch"], g["last_seq"], g["dropped"])
            for g in got] == [(1, 2, 1, 4, 3), (1, 7, 2, 8, 12)]
    assert {g["reason"] for g in got} == {"node_log"} and {g["device"] for g in got} == {"a"}
