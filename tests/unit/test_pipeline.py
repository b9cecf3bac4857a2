"""The gateway's core pipeline at the byte level: real frames (``protocol.frame``) carrying
real SenML-CBOR packs (``protocol.senml``), real LoRaWAN packs (``protocol.lorapack``), and
what ``Ingest`` makes of them: records, lanes, counters, acks, replay state."""

import json

import cbor2
import pytest

from gateway.alarms import AlarmEngine, build_rule
from gateway.pipeline import ALARM, ROUTINE, Ingest, normalise_dev_eui
from protocol import frame, lorapack, senml

KEY = bytes(range(16, 48))
OTHER_KEY = bytes(range(100, 132))
DEV = "sch1-rm12-co2"
T0 = 1771236000  # 2026-02-16 10:00 UTC
EUI = "70B3D57ED0001234"
BIN = "ward3-bin-0042"


def readings(first_seq, n, t0=T0, step=120, co2=800):
    return [{"seq": first_seq + i, "t": t0 + i * step,
             "values": [["co2_ppm", co2 + i, "ok"], ["temperature_c", 21.5, "ok"]]}
            for i in range(n)]


def data_frame(records, epoch=7, device=DEV, key=KEY, first_seq=None, count=None, tag_len=16):
    payload = senml.encode_pack(device, epoch, records)
    first = records[0]["seq"] if first_seq is None else first_seq
    n = len(records) if count is None else count
    return frame.encode_data(key, device, epoch, first, n, payload, tag_len)


def raw_frame(payload, epoch=7, first_seq=0, count=1):
    """An authentic frame around any payload bytes (a node with a broken encoder)."""
    return frame.encode_data(KEY, DEV, epoch, first_seq, count, payload)


def decode_ack(ack, key=KEY, tag_len=16):
    return frame.decode_frame(ack, {DEV: key}.get, tag_len, expect=frame.TYPE_ACK)


def ingest(**kw):
    return Ingest({DEV: KEY, "other-node": OTHER_KEY}, **kw)


# -- the good path --------------------------------------------------------------------------
def test_good_frame_gives_records_keys_lanes_and_an_ack():
    ing = ingest()
    recs = readings(40, 3)
    res = ing.ingest_frame(data_frame(recs), "serial:/dev/ttyUSB0", received_s=T0 + 400)
    assert res.accepted and res.reason is None
    assert [r.key for r in res.records] == [(DEV, 7, 40), (DEV, 7, 41), (DEV, 7, 42)]
    assert [r.lane for r in res.records] == [ROUTINE] * 3
    assert [r.record["values"][0] for r in res.records] == [["co2_ppm", 800 + i, "ok"]
                                                            for i in range(3)]
    assert res.records[0].record["t"] == T0 and not any(r.duplicate for r in res.records)
    assert decode_ack(res.ack) == frame.Ack(DEV, 7, 42)
    assert res.counters == {"received": 1, "accepted": 1, "records": 3}
    assert (res.boot_epoch, res.first_seq, res.seq_through) == (7, 40, 42)


def test_status_and_gap_records_pass_through_with_their_kind():
    ing = ingest()
    recs = [{"seq": 1, "t": T0, "values": [["co2_ppm", 700, "ok"]]},
            {"seq": 2, "t": T0, "kind": "status", "values": [["boot_reason", "deepsleep", "ok"]],
             "counters": {"boots": 3}},
            {"seq": 3, "t": None, "kind": "gap", "dropped": 5, "first_seq": 10, "last_seq": 14}]
    res = ing.ingest_frame(data_frame(recs), "mqtt")
    assert [r.kind for r in res.records] == ["reading", "status", "gap"]
    assert res.records[1].record["counters"] == {"boots": 3}
    assert res.records[2].record["dropped"] == 5
    assert decode_ack(res.ack).seq_through == 3


def test_an_untimed_reading_keeps_its_time_unsynced_flag():
    res = ingest().ingest_frame(data_frame([{"seq": 0, "t": None,
                                             "values": [["co2_ppm", 900, "ok"]]}]), "s")
    assert res.records[0].record["t"] is None
    assert res.records[0].record["values"] == [["co2_ppm", 900, "time_unsynced"]]


def test_a_shorter_agreed_tag_works_and_a_mismatched_one_is_refused():
    ing8 = ingest(tag_len=8)
    res = ing8.ingest_frame(data_frame(readings(0, 1), tag_len=8), "s")
    assert res.accepted and decode_ack(res.ack, tag_len=8).seq_through == 0
    res = ing8.ingest_frame(data_frame(readings(1, 1)), "s")  # a 16-byte tag: not this link's
    assert not res.accepted and res.ack is None


# -- forged and damaged frames --------------------------------------------------------------
def test_a_frame_with_another_key_is_a_bad_tag_and_gets_no_ack():
    ing = ingest()
    res = ing.ingest_frame(data_frame(readings(0, 2), key=OTHER_KEY), "s")
    assert not res.accepted and res.ack is None and res.records == []
    assert res.reason == "auth_failures.bad_tag"
    assert ing.counters == {"received": 1, "auth_failures.bad_tag": 1}
    assert "re-provision" in res.detail and KEY.hex() not in res.detail


def test_an_unknown_device_is_counted_by_reason():
    ing = ingest()
    res = ing.ingest_frame(data_frame(readings(0, 1), device="stranger", key=KEY), "s")
    assert res.reason == "auth_failures.unknown_device" and res.ack is None
    assert ing.counters["auth_failures.unknown_device"] == 1


def test_every_truncation_is_rejected_without_an_ack():
    ing = ingest()
    buf = data_frame(readings(0, 2))
    reasons = set()
    for n in range(len(buf)):
        res = ing.ingest_frame(buf[:n], "s")
        assert not res.accepted and res.ack is None and res.records == []
        reasons.add(res.reason)
    assert reasons == {"auth_failures.short", "auth_failures.bad_tag"}
    assert ing.counters["received"] == len(buf)
    assert sum(v for k, v in ing.counters.items() if k.startswith("auth_failures.")) == len(buf)


def test_every_single_bit_flip_is_rejected_without_an_ack():
    ing = ingest()
    buf = data_frame(readings(0, 2))
    for i in range(len(buf) * 8):
        bad = bytearray(buf)
        bad[i // 8] ^= 1 << (i % 8)
        res = ing.ingest_frame(bytes(bad), "s")
        assert not res.accepted and res.ack is None, i
        assert res.reason.startswith("auth_failures."), res.reason
    assert ing.counters.get("accepted", 0) == 0
    assert ing.counters["auth_failures.bad_tag"] > len(buf) * 8 // 2
    assert ing.replay_state()["devices"] == {}


def test_a_frame_from_another_device_than_the_transport_says_is_refused():
    res = ingest().ingest_frame(data_frame(readings(0, 1)), "mqtt", device_id="other-node")
    assert res.reason == "auth_failures.source_mismatch" and res.ack is None


def test_input_that_is_not_bytes_is_counted_not_raised():
    ing = ingest()
    for junk in (None, "text", 42, [1, 2]):
        assert ing.ingest_frame(junk, "s").reason == "decode_errors.not_bytes"
    assert ing.ingest_frame(memoryview(data_frame(readings(0, 1))), "s").accepted


# -- authentic frames whose content is wrong: not acked, the node keeps its records -------
@pytest.mark.parametrize("payload, reason", [
    (b"\xff\x00", "decode_errors.cbor"),
    (cbor2.dumps({"not": "a pack"}), "decode_errors.senml"),
    (cbor2.dumps([{0: "urn:dev:org:32473-sch1-rm12-co2:"}]), "decode_errors.senml"),
    (senml.encode_pack("other-node", 7, readings(0, 1)), "decode_errors.device_id"),
    (senml.encode_pack(DEV, 8, readings(0, 1)), "decode_errors.boot_epoch"),
])
def test_an_authentic_frame_that_does_not_decode_is_counted_and_not_acked(payload, reason):
    ing = ingest()
    res = ing.ingest_frame(raw_frame(payload), "s")
    assert res.reason == reason and res.ack is None and res.records == []
    assert "not acked" in res.detail
    assert ing.counters[reason] == 1 and ing.replay_state()["devices"] == {}


def test_a_record_outside_the_frames_range_is_held_back_until_a_frame_covers_it():
    ing = ingest()
    # seqs 10, 11, 14 (the node skipped 12-13) in a frame announcing 3 records from 10
    recs = readings(10, 2) + readings(14, 1)
    res = ing.ingest_frame(data_frame(recs), "s")
    assert [r.seq for r in res.records] == [10, 11]
    assert res.counters["records_held.seq_range"] == 1
    assert decode_ack(res.ack).seq_through == 12
    ing.commit()
    res = ing.ingest_frame(data_frame(readings(14, 1)), "s")
    assert [r.seq for r in res.records] == [14] and not res.records[0].duplicate


# -- replays and duplicates -----------------------------------------------------------------
def test_an_older_boot_epoch_is_a_replay():
    ing = ingest()
    assert ing.ingest_frame(data_frame(readings(0, 2), epoch=5), "s").accepted
    ing.commit()
    res = ing.ingest_frame(data_frame(readings(0, 2), epoch=4), "s")
    assert res.reason == "replays" and res.ack is None and res.records == []
    assert ing.counters["replays"] == 1 and "Ingest.forget" in res.detail
    assert ing.ingest_frame(data_frame(readings(2, 1), epoch=5), "s").accepted
    assert ing.ingest_frame(data_frame(readings(0, 1), epoch=6), "s").accepted


def test_a_duplicate_frame_gives_the_records_again_marked_and_the_same_ack():
    ing = ingest()
    buf = data_frame(readings(0, 3))
    first = ing.ingest_frame(buf, "s")
    ing.commit()
    again = ing.ingest_frame(buf, "s")
    assert again.accepted and again.ack == first.ack
    assert [r.key for r in again.records] == [r.key for r in first.records]
    assert all(r.duplicate for r in again.records)
    assert again.counters["duplicates"] == 3 and ing.counters["duplicates"] == 3


def test_a_partial_overlap_counts_only_the_known_records():
    ing = ingest()
    ing.ingest_frame(data_frame(readings(0, 4)), "s")
    res = ing.ingest_frame(data_frame(readings(2, 4)), "s")
    assert [r.duplicate for r in res.records] == [True, True, False, False]
    assert res.counters["duplicates"] == 2
    assert ing.replay_state()["devices"][DEV] == {"e": 7, "r": [[0, 5]]}


def test_a_reordered_frame_of_the_current_epoch_is_accepted_as_new():
    ing = ingest()
    ing.ingest_frame(data_frame(readings(10, 2)), "s")
    res = ing.ingest_frame(data_frame(readings(5, 2)), "s")
    assert res.accepted and not any(r.duplicate for r in res.records)
    assert decode_ack(res.ack).seq_through == 6
    assert ing.replay_state()["devices"][DEV]["r"] == [[5, 6], [10, 11]]


def test_a_new_epoch_replaces_the_old_ranges_and_ranges_stay_bounded():
    ing = ingest(max_ranges=3)
    for s in (0, 10, 20, 30, 40):
        ing.ingest_frame(data_frame(readings(s, 1)), "s")
    assert ing.replay_state()["devices"][DEV]["r"] == [[20, 20], [30, 30], [40, 40]]
    # the forgotten range is no longer known: accepted as new, the outbox's key dedupes it
    assert not ing.ingest_frame(data_frame(readings(0, 1)), "s").records[0].duplicate
    ing.ingest_frame(data_frame(readings(0, 1), epoch=8), "s")
    assert ing.replay_state()["devices"][DEV] == {"e": 8, "r": [[0, 0]]}


def test_rollback_forgets_the_batch_and_commit_keeps_it():
    ing = ingest()
    buf = data_frame(readings(0, 2), epoch=9)
    ing.ingest_frame(buf, "s")
    ing.rollback()  # the outbox did not commit: no ack was sent, the node will resend
    assert ing.replay_state()["devices"] == {}
    assert ing.ingest_frame(data_frame(readings(0, 1), epoch=3), "s").accepted  # no replay
    ing.rollback()
    res = ing.ingest_frame(buf, "s")
    assert not any(r.duplicate for r in res.records)
    ing.commit()
    assert all(r.duplicate for r in ing.ingest_frame(buf, "s").records)
    assert ing.ingest_frame(data_frame(readings(0, 1), epoch=3), "s").reason == "replays"


def test_replay_state_survives_json_and_a_restart():
    ing = ingest()
    ing.ingest_frame(data_frame(readings(0, 3), epoch=12), "s")
    ing.commit()
    saved = json.loads(json.dumps(ing.replay_state()))
    again = ingest(replay_state=saved)
    assert again.ingest_frame(data_frame(readings(0, 1), epoch=11), "s").reason == "replays"
    assert all(r.duplicate for r in again.ingest_frame(data_frame(readings(1, 2), epoch=12),
                                                       "s").records)


@pytest.mark.parametrize("state", [
    {"v": 2, "devices": {}}, {"devices": {}}, [],
    {"v": 1, "devices": {DEV: {"e": -1, "r": [[0, 1]]}}},
    {"v": 1, "devices": {DEV: {"e": 1, "r": []}}},
    {"v": 1, "devices": {DEV: {"e": 1, "r": [[5, 2]]}}},
    {"v": 1, "devices": {DEV: {"e": 1}}},
])
def test_a_malformed_replay_state_is_refused_by_name(state):
    with pytest.raises(ValueError, match="replay state"):
        ingest(replay_state=state)


def test_forget_lets_a_reflashed_node_start_again_at_a_lower_epoch():
    ing = ingest(alarms=_co2_engine())
    ing.ingest_frame(data_frame([_co2(0, 900)], epoch=30), "s")
    ing.commit()
    assert ing.ingest_frame(data_frame([_co2(1, 1600)], epoch=0), "s").reason == "replays"
    ing.forget(DEV)
    res = ing.ingest_frame(data_frame([_co2(1, 1600)], epoch=0), "s")
    assert res.accepted and [e.kind for e in res.events] == ["raised"]


def test_bad_construction_arguments_name_the_argument_never_the_key():
    with pytest.raises(ValueError, match="key for device 'x1'") as e:
        Ingest({"x1": b"short"})
    assert "short" not in str(e.value).replace("'x1'", "")
    with pytest.raises(ValueError, match="device_id"):
        Ingest({"Bad_Id": KEY})
    with pytest.raises(ValueError, match="tag_len"):
        Ingest({DEV: KEY}, tag_len=4)
    with pytest.raises(ValueError, match="devEUI"):
        Ingest({}, dev_euis={"12": BIN})


# -- alarms through the pipeline --------------------------------------------------------------
def _co2_engine():
    rule = build_rule({"id": "co2_3", "quantity": "co2_ppm", "rule": "at_or_above",
                       "threshold": 1500, "hysteresis": 100})
    return AlarmEngine({DEV: [rule]})


def _co2(seq, ppm, flag="ok"):
    return {"seq": seq, "t": T0 + seq * 120, "values": [["co2_ppm", ppm, flag]]}


def test_a_record_that_raises_or_clears_goes_in_the_alarm_lane():
    ing = ingest(alarms=_co2_engine())
    recs = [_co2(0, 900), _co2(1, 1600), _co2(2, 1700), _co2(3, 1450), _co2(4, 1300)]
    res = ing.ingest_frame(data_frame(recs), "s")
    assert [r.lane for r in res.records] == [ROUTINE, ALARM, ROUTINE, ROUTINE, ALARM]
    assert [(e.kind, e.rule_id, e.value) for e in res.events] == [
        ("raised", "co2_3", 1600), ("cleared", "co2_3", 1300)]
    assert res.records[1].events[0].since == T0 + 120


def test_flagged_values_never_raise():
    ing = ingest(alarms=_co2_engine())
    res = ing.ingest_frame(data_frame([_co2(0, 3000, "spike"), _co2(1, 3000, "stuck"),
                                       _co2(2, 3000, "out_of_range")]), "s")
    assert res.events == [] and {r.lane for r in res.records} == {ROUTINE}


def test_a_duplicate_frame_raises_nothing_again_and_a_rollback_evaluates_once_more():
    eng = _co2_engine()
    ing = ingest(alarms=eng)
    buf = data_frame([_co2(0, 1600)])
    assert [e.kind for e in ing.ingest_frame(buf, "s").events] == ["raised"]
    ing.rollback()  # not committed: the alarm was never stored
    assert eng.active(DEV) == []
    assert [e.kind for e in ing.ingest_frame(buf, "s").events] == ["raised"]
    ing.commit()
    again = ing.ingest_frame(buf, "s")
    assert again.events == [] and again.records[0].lane == ROUTINE and eng.active(DEV) == ["co2_3"]


# -- LoRaWAN uplinks --------------------------------------------------------------------------
def _bin_records(first_seq, n, fill=0.42):
    return [{"seq": first_seq + i, "t": T0 + i * 1800,
             "values": [["distance_cm", 70, "ok"], ["fill_ratio", fill, "ok"]]} for i in range(n)]


def _uplink(records, epoch=3):
    payload, n = lorapack.pack(records, 222, epoch)
    assert n == len(records)
    return payload


def lora(**kw):
    return Ingest({}, dev_euis={EUI: BIN}, **kw)


def test_a_lorawan_uplink_gives_records_and_no_ack():
    ing = lora()
    res = ing.ingest_lorawan(EUI.lower(), _uplink(_bin_records(20, 3)), "dedup-1")
    assert res.accepted and res.ack is None and res.device_id == BIN
    assert [r.key for r in res.records] == [(BIN, 3, 20), (BIN, 3, 21), (BIN, 3, 22)]
    assert res.records[0].record["values"] == [["distance_cm", 70, "ok"],
                                               ["fill_ratio", 0.42, "ok"]]
    assert res.source == "lorawan:%s" % EUI.lower()


def test_chirpstack_redelivery_is_dropped_on_its_deduplication_id():
    ing = lora()
    payload = _uplink(_bin_records(0, 2))
    assert ing.ingest_lorawan(EUI, payload, "3ac7e3c4-aaaa").accepted
    res = ing.ingest_lorawan(EUI, payload, "3ac7e3c4-aaaa")
    assert res.reason == "duplicate_uplinks" and res.records == []
    # the same records under another id (a node's resend): accepted, known as duplicates
    res = ing.ingest_lorawan(EUI, payload, "3ac7e3c4-bbbb")
    assert res.accepted and all(r.duplicate for r in res.records)
    assert ing.counters["duplicate_uplinks"] == 1 and ing.counters["duplicates"] == 2


def test_the_deduplication_memory_is_bounded_and_rolled_back():
    ing = lora(dedup_size=2)
    for i in range(3):
        ing.ingest_lorawan(EUI, _uplink(_bin_records(i, 1)), "id-%d" % i)
    ing.commit()
    assert ing.ingest_lorawan(EUI, _uplink(_bin_records(0, 1)), "id-0").accepted  # forgotten
    assert ing.ingest_lorawan(EUI, _uplink(_bin_records(2, 1)), "id-2").reason == \
        "duplicate_uplinks"
    ing.ingest_lorawan(EUI, _uplink(_bin_records(5, 1)), "id-5")
    ing.rollback()
    assert ing.ingest_lorawan(EUI, _uplink(_bin_records(5, 1)), "id-5").accepted


@pytest.mark.parametrize("eui, payload, reason", [
    ("0000000000000001", None, "auth_failures.unknown_device"),
    ("not-an-eui", None, "decode_errors.dev_eui"),
    (EUI, b"", "decode_errors.pack"),
    (EUI, b"\x01\x02", "decode_errors.pack"),
    (EUI, "AfQ=", "decode_errors.not_bytes"),
])
def test_bad_uplinks_are_counted_by_reason(eui, payload, reason):
    ing = lora()
    res = ing.ingest_lorawan(eui, _uplink(_bin_records(0, 1)) if payload is None else payload,
                             "x")
    assert res.reason == reason and not res.accepted and ing.counters[reason] == 1


def test_a_lorawan_pack_from_an_older_epoch_is_a_replay():
    ing = lora()
    ing.ingest_lorawan(EUI, _uplink(_bin_records(0, 1), epoch=4), "a")
    res = ing.ingest_lorawan(EUI, _uplink(_bin_records(0, 1), epoch=3), "b")
    assert res.reason == "replays" and ing.counters["replays"] == 1


def test_dev_eui_forms_are_normalised():
    assert normalise_dev_eui("70-B3-D5-7E-D0-00-12-34") == "70b3d57ed0001234"
    assert normalise_dev_eui("70b3d57ed000123") is None and normalise_dev_eui(7) is None


def test_a_rejections_detail_stays_short_whatever_the_input():
    ing = lora()
    res = ing.ingest_lorawan("x" * 10000, b"", "id")
    assert res.reason == "decode_errors.dev_eui" and len(res.detail) < 400
    res = ingest().ingest_frame(raw_frame(cbor2.dumps(["y" * 3000])), "s" * 1000)
    assert res.reason == "decode_errors.senml" and len(res.detail) < 500
