"""gateway.upstream: topics and payloads the gateway publishes, decoded with json / cbor2."""

import json

import cbor2
import pytest

from gateway import upstream as U
from gateway.outbox_policy import GapMarker, OutboxRow
from protocol import senml
from protocol.senml_decode import SenMLError, decode_pack

SITE, GW = "hollybank", "gw-1"
T0 = 1714557600


def row(seq, record, device="class-3", epoch=7, row_id=None, lane="routine", rx_wall_s=None):
    return OutboxRow(row_id if row_id is not None else seq + 1, device, epoch, seq, lane, 0,
                     rx_wall_s, record)


def reading(seq, t=T0, values=None, **extra):
    rec = {"seq": seq, "t": t, "values": values or [["co2_ppm", 600 + seq, "ok"],
                                                    ["temperature_c", 22.5, "ok"]]}
    rec.update(extra)
    return rec


def only(msgs, kind):
    return [m for m in msgs if m.kind == kind]


def test_topics():
    assert U.topic(SITE, "class-3", U.READINGS) == "civicedge/v1/hollybank/class-3/readings"
    assert U.topic(SITE, "class-3", U.ALARMS) == "civicedge/v1/hollybank/class-3/alarms"
    assert U.topic(SITE, "class-3", U.GAPS) == "civicedge/v1/hollybank/class-3/gaps"
    assert U.status_topic(SITE, GW) == "civicedge/v1/hollybank/gateway/gw-1/status"
    for bad in ("a/b", "+", "#", "", "x" * 65, None):
        with pytest.raises(ValueError, match="device_id"):
            U.topic(SITE, bad, U.READINGS)
    with pytest.raises(ValueError, match="kind"):
        U.topic(SITE, "d", "status")


def test_a_readings_pack_in_senml_json_exactly():
    msgs = U.encode_rows([row(41, reading(41, values=[["co2_ppm", 1612, "ok"],
                                                      ["rh_percent", 41.25, "spike"]]))],
                         SITE, GW)
    assert [(m.topic, m.kind, m.row_ids, m.records) for m in msgs] == [
        ("civicedge/v1/hollybank/class-3/readings", U.READINGS, (42,), 1)]
    assert json.loads(msgs[0].payload) == [
        {"bn": "urn:dev:org:32473-class-3:", "bepoch": 7, "bt": T0, "bseq": 41, "n": "co2",
         "u": "ppm", "v": 1612},
        {"n": "rh", "u": "%RH", "v": 41.25, "flag_": "spike"}]
    assert msgs[0].payload.startswith(b'[{"bn":"urn:dev:org:32473-class-3:","bepoch":7,')


def test_senml_cbor_is_the_nodes_deterministic_encoding_byte_for_byte():
    records = [reading(1), reading(2, t=T0 + 60), {"seq": 3, "t": T0 + 90, "kind": "status",
                                                   "values": [["battery_v", 3.71, "ok"]],
                                                   "counters": {"resets": 2}}]
    msgs = U.encode_rows([row(r["seq"], r) for r in records], SITE, GW, U.SENML_CBOR)
    assert msgs[0].payload == senml.encode_pack("class-3", 7, records)
    back = decode_pack(cbor2.loads(msgs[0].payload))
    assert back["records"][0] == reading(1) and back["records"][2]["counters"] == {"resets": 2}


def test_json_and_cbor_decode_to_the_same_records():
    rows = [row(s, reading(s, t=T0 + s)) for s in range(5)]
    j = decode_pack(json.loads(U.encode_rows(rows, SITE, GW)[0].payload))
    c = decode_pack(cbor2.loads(U.encode_rows(rows, SITE, GW, U.SENML_CBOR)[0].payload))
    assert j == c and [r["seq"] for r in j["records"]] == list(range(5))
    assert (j["device_id"], j["boot_epoch"]) == ("class-3", 7)


def test_rows_are_grouped_per_device_and_boot_epoch_in_seq_order():
    rows = [row(5, reading(5), row_id=1), row(2, reading(2), row_id=2),
            row(9, reading(9), device="bin-4", row_id=3), row(0, reading(0), epoch=8, row_id=4)]
    packs = {}
    for m in U.encode_rows(rows, SITE, GW):
        d = U.decode_readings(m.payload)
        packs[(d["device_id"], d["boot_epoch"])] = ([r["seq"] for r in d["records"]], m.row_ids)
    assert packs == {("class-3", 7): ([2, 5], (2, 1)), ("bin-4", 7): ([9], (3,)),
                     ("class-3", 8): ([0], (4,))}


def test_per_publish_and_max_bytes_split_packs():
    rows = [row(s, reading(s, t=T0 + s)) for s in range(25)]
    by_count = U.encode_rows(rows, SITE, GW, per_publish=10)
    assert [m.records for m in by_count] == [10, 10, 5]
    by_size = U.encode_rows(rows, SITE, GW, max_bytes=600)
    assert len(by_size) > 3 and all(len(m.payload) <= 600 for m in by_size)
    seqs = [r["seq"] for m in by_size for r in U.decode_readings(m.payload)["records"]]
    assert seqs == list(range(25))  # every split pack stands alone (bn, bepoch, bt)


def test_a_record_without_time_gets_the_receive_time_and_time_unsynced():
    rec = reading(4, t=None, values=[["co2_ppm", 700, "ok"], ["temperature_c", 30.0, "spike"]],
                  rx_t=T0 + 0.9)
    (m,) = U.encode_rows([row(4, rec)], SITE, GW)
    (back,) = U.decode_readings(m.payload)["records"]
    assert back == {"seq": 4, "t": T0, "values": [["co2_ppm", 700, "time_unsynced"],
                                                  ["temperature_c", 30.0, "spike"]]}
    # no rx_t: the outbox's receive wall time; neither: no time at all (SenML bt 0)
    (m,) = U.encode_rows([row(4, reading(4, t=None), rx_wall_s=T0 + 5)], SITE, GW)
    assert U.decode_readings(m.payload)["records"][0]["t"] == T0 + 5
    (m,) = U.encode_rows([row(4, reading(4, t=None))], SITE, GW)
    back = U.decode_readings(m.payload)["records"][0]
    assert back["t"] is None and back["values"][0][2] == "time_unsynced"


def test_alarm_events_go_to_the_alarms_topic_of_the_device_they_are_about():
    ev = {"kind": "raised", "rule": "co2-high", "device_id": "class-3", "quantity": "co2_ppm",
          "value": 1612, "since": T0 - 1200, "at": T0, "severity": "warning", "detail": {}}
    msgs = U.encode_rows([row(41, reading(41, alarms=[ev]), lane="alarm")], SITE, GW)
    assert [m.kind for m in msgs] == [U.ALARMS, U.READINGS]
    a = msgs[0]
    assert a.topic == "civicedge/v1/hollybank/class-3/alarms" and a.row_ids == (42,)
    assert json.loads(a.payload) == {"gateway": GW, "key": ["class-3", 7, 41], "t": T0,
                                     "alarms": [ev]}
    # the readings pack carries the values only (alarms are no SenML label)
    assert "alarms" not in U.decode_readings(msgs[1].payload)["records"][0]
    # a gateway event record: window verdicts about devices, keyed on the gateway's stream
    ev2 = dict(ev, device_id="street-2", kind="report")
    event = {"seq": 9, "t": T0, "kind": "event", "alarms": [ev, ev2]}
    msgs = U.encode_rows([row(9, event, device=GW, epoch=3)], SITE, GW)
    assert sorted((m.topic, json.loads(m.payload)["key"][0]) for m in msgs) == [
        ("civicedge/v1/hollybank/class-3/alarms", GW),
        ("civicedge/v1/hollybank/street-2/alarms", GW)]
    # an event without alarms needs no message at all
    assert U.encode_rows([row(10, {"seq": 10, "t": T0, "kind": "event"})], SITE, GW) == []


def test_a_node_gap_record_goes_in_the_pack_and_as_a_gap_message():
    gap = {"seq": 43, "t": T0, "kind": "gap", "dropped": 5, "first_seq": 30, "last_seq": 34}
    msgs = U.encode_rows([row(43, gap)], SITE, GW)
    g, r = only(msgs, U.GAPS), only(msgs, U.READINGS)
    assert json.loads(g[0].payload) == {
        "gateway": GW, "device_id": "class-3", "reason": "node_log", "key": ["class-3", 7, 43],
        "dropped": 5, "first_epoch": 7, "first_seq": 30, "last_epoch": 7, "last_seq": 34}
    assert g[0].row_ids == r[0].row_ids == (44,)
    assert U.decode_readings(r[0].payload)["records"][0]["dropped"] == 5


def test_outbox_gap_markers():
    (m,) = U.encode_gap_markers([GapMarker(12, "class-3", 7, 100, 8, 3, 40, 2)], SITE, GW)
    assert (m.topic, m.kind, m.row_ids, m.gap_ids) == (
        "civicedge/v1/hollybank/class-3/gaps", U.GAPS, (), (12,))
    assert json.loads(m.payload) == {
        "gateway": GW, "device_id": "class-3", "reason": "gateway_outbox", "marker": 12,
        "dropped": 40, "alarms": 2, "first_epoch": 7, "first_seq": 100, "last_epoch": 8,
        "last_seq": 3}


@pytest.mark.parametrize("record, why", [
    ({"seq": 1, "t": T0, "kind": "status", "values": [], "counters": {"x": -1}}, "counter"),
    ({"seq": 1, "t": T0, "values": [["wind_kph", 3, "ok"]]}, "quantity"),
    ({"seq": 1, "t": T0 + 0.5, "values": [["co2_ppm", 3, "ok"]]}, "t "),
    ({"seq": 1, "t": T0, "kind": "aggregate", "values": []}, "kind"),
    (["not", "a", "dict"], "list"),
    ({"seq": 1, "t": T0, "values": [["boot_reason", "a\ud800", "ok"]]}, "text value"),
])
def test_a_record_the_profile_refuses_becomes_an_unencodable_gap_message(record, why):
    good = row(0, reading(0), row_id=1)
    bad = row(1, record, row_id=2)
    msgs = U.encode_rows([good, bad], SITE, GW)
    (g,) = only(msgs, U.GAPS)
    body = json.loads(g.payload)
    assert g.row_ids == (2,) and g.reason == U.UNENCODABLE
    assert (body["reason"], body["key"], body["dropped"], body["record"]) == (
        "unencodable", ["class-3", 7, 1], 1, record)
    assert why in body["detail"]
    (r,) = only(msgs, U.READINGS)  # the good row still goes out
    assert r.row_ids == (1,)


def test_a_single_record_over_max_bytes_is_reported_not_lost():
    big = reading(0, values=[["boot_reason", "x" * 900, "ok"]])
    (g,) = U.encode_rows([row(0, big)], SITE, GW, max_bytes=600)
    body = json.loads(g.payload)
    assert g.kind == U.GAPS and body["reason"] == "unencodable" and len(g.payload) <= 600
    assert "max_publish_bytes" in body["detail"] and "record" not in body


def test_status_payloads():
    assert json.loads(U.status_payload(U.ONLINE, SITE, GW, since=None)) == {
        "state": "online", "site": SITE, "gateway": GW, "since": None}
    assert json.loads(U.status_payload(U.OFFLINE, SITE, GW))["state"] == "offline"
    with pytest.raises(ValueError, match="state"):
        U.status_payload("up", SITE, GW)


def test_non_finite_numbers_in_alarm_details_still_give_valid_json():
    ev = {"kind": "report", "device_id": "class-3", "value": float("nan"), "detail": {"m": 1e999}}
    (m, _) = U.encode_rows([row(0, reading(0, alarms=[ev]))], SITE, GW)
    assert json.loads(m.payload)["alarms"] == [dict(ev, value=None, detail={"m": None})]


def test_decode_readings_raises_only_senml_error():
    for junk in (b"", b"\xff\x00", b"[]", b'{"a":1}', b"[{}]"):
        with pytest.raises(SenMLError):
            U.decode_readings(junk)
        with pytest.raises(SenMLError):
            U.decode_readings(junk, U.SENML_CBOR)


@pytest.mark.parametrize("kwargs, name", [
    ({"encoding": "json"}, "encoding"), ({"per_publish": 0}, "per_publish"),
    ({"max_bytes": 100}, "max_bytes"), ({"site_id": "a/b"}, "site_id"),
    ({"gateway_id": "#"}, "gateway_id"),
])
def test_bad_arguments_are_named(kwargs, name):
    args = dict(site_id=SITE, gateway_id=GW)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        U.encode_rows([], **args)
