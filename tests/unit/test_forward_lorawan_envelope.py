"""The LoRaWAN upstream envelope (gateway/forward/lorawan_envelope.py, lorawan_decode.py):
a golden vector byte by byte, every section kind round-tripped, alarm rows first, the payload
limit, stand-ins for records the pack cannot carry, and the downlink command codec."""

import pytest

from gateway.forward import lorawan_decode as dl
from gateway.forward import lorawan_envelope as env
from gateway.forward.lorawan_decode import decode_uplink
from gateway.outbox_policy import GapMarker, OutboxRow
from protocol import lorapack

T = 1767571200  # 2026-01-05 00:00:00 UTC
HOT, AQM = "sch1-kit-hot1", "aqm-high-st-01"
RULE = "hot_outlet_below_50"
EVENT = {"kind": "raised", "rule": RULE, "device_id": HOT, "quantity": "temperature_c", "value": 49.5,
         "since": T + 300, "at": T + 300, "severity": "critical", "detail": {"threshold": 50}}
GOLDEN_ROWS = [
    OutboxRow(7, HOT, 190, 11, "alarm", 0, None,
              {"seq": 11, "t": T + 300, "values": [["temperature_c", 49.5, "ok"]], "alarms": [EVENT]}),
    OutboxRow(5, HOT, 190, 10, "routine", 0, None,
              {"seq": 10, "t": T, "values": [["temperature_c", 51.0, "ok"]]}),
    OutboxRow(6, AQM, 4, 2, "routine", 0, None,
              {"seq": 2, "t": None, "rx_t": T + 12.4,
               "values": [["no2_ugm3", 41.3, "ok"], ["temperature_c", 8.5, "ok"]]}),
]
# docs/gateway-lorawan-upstream.md annotates these 76 bytes.
GOLDEN = bytes.fromhex(
    "01"
    "02 b5813a49 0f 01be010b0001 12 d8fec73c 0102 8063 01 00 e8 ec1a 02 8063 00 00"
    "01 b5813a49 0f 01be010a0001 12 80fac73c 0102 8066"
    "01 71564c92 11 0104020001 12 98fac73c 020502 ba06 8011")


def _row(i, dev, seq, rec, lane="routine", epoch=1):
    return OutboxRow(i, dev, epoch, seq, lane, 0, None, rec)


def _reading(seq, t, *values):
    return {"seq": seq, "t": t, "values": [list(v) for v in values]}


def test_golden_envelope():
    b = env.UplinkBuilder(115)
    assert b.add_rows([env.prepare(r) for r in GOLDEN_ROWS]) == [7, 5, 6]  # the alarm first
    assert b.payload() == GOLDEN
    out = decode_uplink(GOLDEN, devices=[HOT, AQM], rules=[RULE])
    assert out["records"] == [
        (HOT, 190, {"seq": 11, "t": T + 300, "values": [["temperature_c", 49.5, "ok"]],
                    "alarms": [{k: v for k, v in EVENT.items() if k != "detail"}]}),
        (HOT, 190, {"seq": 10, "t": T, "values": [["temperature_c", 51.0, "ok"]]}),
        (AQM, 4, {"seq": 2, "t": T + 12, "values": [["no2_ugm3", 41.3, "ok"], ["temperature_c", 8.5, "ok"]]}),
    ]
    assert out["gaps"] == [] and out["status"] is None


def test_hashes_are_stable_and_unnamed_ones_come_back_as_hex():
    assert env.device_hash(HOT) == bytes.fromhex("b5813a49")
    assert env.rule_hash(RULE) == 0xEC1A
    out = decode_uplink(GOLDEN)
    assert out["records"][0][0] == "#b5813a49"
    assert out["records"][0][2]["alarms"][0]["rule"] == "#ec1a"


def test_the_profiles_rule_ids_do_not_collide():
    import tomllib
    from pathlib import Path

    ids = []
    for path in Path(__file__).resolve().parents[2].glob("hardware/profiles/*.toml"):
        data = tomllib.loads(path.read_text())
        ids += [a["id"] for a in data.get("alarms", [])]
    assert len(ids) >= 8
    assert len({env.rule_hash(i) for i in ids}) == len(ids)


def test_a_51_byte_uplink_holds_the_alarm_and_what_fits():
    b = env.UplinkBuilder(51)
    assert b.add_rows([env.prepare(r) for r in GOLDEN_ROWS]) == [7]
    assert len(b.payload()) <= 51 and b.records == 1


def test_many_devices_round_trip_within_every_payload_limit():
    rows, i = [], 0
    for seq in range(60):
        for dev, vals in (("rm12", (("co2_ppm", 600 + seq), ("temperature_c", 21.5), ("rh_percent", 41.2))),
                          ("hot1", (("temperature_c", 57.25 - seq / 64),)),
                          ("bin42", (("distance_cm", 120 - seq), ("fill_ratio", 0.25 + seq / 1000)))):
            i += 1
            rows.append(_row(i, dev, seq, _reading(seq, T + 120 * seq, *[(q, v, "ok") for q, v in vals])))
    for room in (51, 115, 222):
        left, sent = list(rows), []
        while left:
            b = env.UplinkBuilder(room)
            used = b.add_rows([env.prepare(r) for r in left])
            assert used and len(b.payload()) <= room
            out = decode_uplink(b.payload(), devices=["rm12", "hot1", "bin42"])
            sent += [(d, r["seq"], r["values"]) for d, e, r in out["records"]]
            left = [r for r in left if r.row_id not in used]
        expected = sorted((r.device_id, r.seq, r.record["values"]) for r in rows)
        assert sorted(sent) == [(d, s, [[q, pytest.approx(v, abs=1 / 128), f] for q, v, f in vals])
                                for d, s, vals in expected]


def test_max_records_caps_an_uplink():
    rows = [_row(i + 1, "hot1", i, _reading(i, T + 300 * i, ("temperature_c", 57.0, "ok")))
            for i in range(20)]
    b = env.UplinkBuilder(222)
    assert b.add_rows([env.prepare(r) for r in rows], max_records=3) == [1, 2, 3]
    assert [r["seq"] for _, _, r in decode_uplink(b.payload())["records"]] == [0, 1, 2]


def test_status_gap_and_node_gap_records_travel():
    rows = [
        _row(1, "hot1", 5, {"seq": 5, "t": T, "kind": "status",
                            "values": [["battery_v", 3.61, "ok"], ["boot_reason", "deepsleep", "ok"]],
                            "counters": {"boots": 3, "dropped": 0}}),
        _row(2, "hot1", 6, {"seq": 6, "t": T + 1, "kind": "gap", "dropped": 120, "first_epoch": 1,
                            "first_seq": 0, "last_epoch": 1, "last_seq": 119}),
    ]
    b = env.UplinkBuilder(115)
    assert b.add_rows([env.prepare(r) for r in rows]) == [1, 2]
    recs = [r for _, _, r in decode_uplink(b.payload())["records"]]
    assert recs[0]["kind"] == "status" and recs[0]["counters"] == {"boots": 3, "dropped": 0}
    assert recs[0]["values"] == [["battery_v", 3.61, "ok"], ["boot_reason", "deepsleep", "ok"]]
    assert recs[1] == {"seq": 6, "t": T + 1, "kind": "gap", "dropped": 120, "first_epoch": 1, "first_seq": 0,
                       "last_epoch": 1, "last_seq": 119}


@pytest.mark.parametrize("record", [
    {"seq": 3, "t": T, "values": [["co2_ppm", float("nan"), "ok"]]},  # not a number
    {"seq": 3, "t": T, "values": [["made_up_ppm", 1, "ok"]]},  # no such quantity
    {"seq": 3, "t": T, "values": [["co2_ppm", 1e12, "ok"]]},  # beyond the pack's range
    {"seq": 3, "t": T, "kind": "mystery"},
    {"seq": 3, "t": T, "values": "garbage"},
])
def test_a_record_the_pack_cannot_carry_goes_as_a_one_record_gap_in_its_place(record):
    p = env.prepare(_row(1, "rm12", 3, record, epoch=9))
    assert p.unpackable
    b = env.UplinkBuilder(51)
    assert b.add_rows([p]) == [1] and b.unpackable == 1
    (dev, epoch, rec), = decode_uplink(b.payload(), devices=["rm12"])["records"]
    assert (dev, epoch) == ("rm12", 9)
    assert rec == {"seq": 3, "t": T, "kind": "gap", "dropped": 1, "first_epoch": 9, "first_seq": 3,
                   "last_epoch": 9, "last_seq": 3}


def test_a_status_record_too_big_for_the_uplink_keeps_what_fits():
    counters = {"counter_%02d" % i: i * 1000 for i in range(30)}
    p = env.prepare(_row(1, "rm12", 4, {"seq": 4, "t": T, "kind": "status",
                                        "values": [["battery_v", 3.3, "ok"]], "counters": counters}))
    assert not p.unpackable
    b = env.UplinkBuilder(51)
    assert b.add_rows([p]) == [1] and b.trimmed >= 1 and len(b.payload()) <= 51
    (_, _, rec), = decode_uplink(b.payload())["records"]
    assert rec["values"] == [["battery_v", 3.3, "ok"]]
    assert 0 < len(rec["counters"]) < 30
    assert all(counters[k] == v for k, v in rec["counters"].items())


def test_gateway_event_records_and_subjects():
    report = {"kind": "report", "rule": "no2_hourly_mean_over_200", "device_id": AQM, "quantity": "no2_ugm3",
              "value": 55.3, "since": T, "at": T + 3600, "severity": "info"}
    odd = {"kind": "weird", "rule": "x", "device_id": AQM, "quantity": "not_a_quantity", "value": 1,
           "since": None, "at": float("inf"), "severity": "loud"}
    row = _row(1, "gw-1", 2, {"seq": 2, "t": T + 3600.2, "kind": "event", "alarms": [report, odd, "junk"]},
               epoch=3)
    b = env.UplinkBuilder(51)
    assert b.add_rows([env.prepare(row)]) == [1]
    (dev, epoch, rec), = decode_uplink(b.payload(), devices=["gw-1", AQM],
                                       rules=["no2_hourly_mean_over_200", "x"])["records"]
    assert (dev, epoch, rec["seq"], rec["t"], rec["kind"]) == ("gw-1", 3, 2, T + 3600, "event")
    assert rec["alarms"] == [
        {k: v for k, v in report.items()},
        {"kind": "other", "rule": "x", "device_id": AQM, "quantity": None, "value": None, "at": None,
         "since": None, "severity": "other"}]


def test_gap_markers_status_and_directory_sections():
    b = env.UplinkBuilder(222)
    assert b.add_gap(GapMarker(4, "rm12", 2, 10, 2, 250, 200, 1))
    assert b.add_gap(GapMarker(5, "hot1", 3, 900, 5, 2, 40, 0))
    names = b.add_status({"rows_routine": 51234, "rows_alarm": 2, "oldest_age_s": 86400, "paused": 1,
                          "not_a_key": 5, "cap": None})
    assert names == ["rows_routine", "rows_alarm", "oldest_age_s", "paused"]
    assert b.add_directory(["rm12", "hot1"]) == ["rm12", "hot1"]
    assert b.gaps == [4, 5]
    out = decode_uplink(b.payload())  # the directory names the devices: no inventory needed
    assert out["gaps"] == [
        {"device_id": "rm12", "dropped": 200, "alarms": 1, "first_epoch": 2, "first_seq": 10,
         "last_epoch": 2, "last_seq": 250},
        {"device_id": "hot1", "dropped": 40, "alarms": 0, "first_epoch": 3, "first_seq": 900,
         "last_epoch": 5, "last_seq": 2}]
    assert out["status"] == {"rows_routine": 51234, "rows_alarm": 2, "oldest_age_s": 86400, "paused": 1}
    assert out["directory"] == {"rm12": env.device_hash("rm12"), "hot1": env.device_hash("hot1")}


def test_a_status_section_carries_the_most_useful_keys_first_when_room_is_short():
    b = env.UplinkBuilder(env.MIN_ROOM)
    values = {k: 10 ** 6 for k in env.STATUS_KEYS}
    names = b.add_status(values)
    assert names == list(env.STATUS_KEYS[:len(names)]) and 0 < len(names) < len(env.STATUS_KEYS)
    assert len(b.payload()) <= env.MIN_ROOM


def test_builder_refuses_a_room_too_small():
    with pytest.raises(ValueError, match="room"):
        env.UplinkBuilder(env.MIN_ROOM - 1)


@pytest.mark.parametrize("payload, why", [
    (b"", "unknown envelope version"), (b"\x02", "version"), (b"\x01\x09", "section type"),
    (b"\x01\x01\xb5\x81\x3a\x49\x30\x01", "passes the end"), (b"\x01\x05\x01\x63\x00", "status key"),
    (b"\x01\x06\x01\x00\x00\x00\x00\x02\xff\xfe", "UTF-8"), (b"\x01\x04\x00\x00", "truncated"),
])
def test_malformed_envelopes_raise_envelope_error(payload, why):
    with pytest.raises(env.EnvelopeError, match=why if payload else "truncated"):
        decode_uplink(payload)


def test_downlink_commands():
    raw = dl.encode_commands([(dl.CMD_CAP, 12), (dl.CMD_PAUSE, 90), (dl.CMD_STATUS, None)])
    assert raw == bytes.fromhex("010c 02005a 04")
    assert dl.parse_downlink(env.DOWNLINK_PORT, raw) == [
        dl.Command(dl.CMD_CAP, 12), dl.Command(dl.CMD_PAUSE, 90), dl.Command(dl.CMD_STATUS, None)]
    assert dl.parse_downlink(21, b"\x03\x05") == [dl.Command(3, None), dl.Command(5, None)]


@pytest.mark.parametrize("port, payload, why", [
    (10, b"\x03", "port"), (21, b"", "empty"), (21, b"\x07", "unknown command"),
    (21, b"\x02\x00", "cut short"), (21, b"\x01", "cut short"), (21, b"\x03" * 33, "at most"),
])
def test_malformed_downlinks_are_envelope_errors(port, payload, why):
    with pytest.raises(env.EnvelopeError, match=why):
        dl.parse_downlink(port, payload)


def test_resolution_is_the_packs():
    # Values travel at the pack's resolution: what arrives is the value rounded to it.
    row = _row(1, "rm12", 0, _reading(0, T, ("temperature_c", 21.4321, "ok"), ("rh_percent", 41.26, "spike")))
    b = env.UplinkBuilder(51)
    b.add_rows([env.prepare(row)])
    (_, _, rec), = decode_uplink(b.payload())["records"]
    assert rec["values"] == [["temperature_c", lorapack.scaled("temperature_c", 21.4321) / 128, "ok"],
                             ["rh_percent", 41.3, "spike"]]
