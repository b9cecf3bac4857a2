"""The SenML-CBOR record profile (protocol/senml.py, docs/protocol-senml.md): each record
kind byte-level through cbor2, decode_pack's errors, the quantity table, and sizes."""

import json

import cbor2
import pytest

from drivers.scd4x import rh_percent_from_word, temperature_c_from_word
from protocol import quality, quantities
from protocol.senml import (DEFAULT_PEN, SenMLError, base_name, encode_pack, pack_records,
                            parse_base_name, to_json_labels)
from protocol.senml_decode import decode_pack, decode_pack_bytes

T0 = 1714557600          # 2024-05-01 10:00:00 UTC
DEV = "sch1-rm12-co2"
BN = "urn:dev:org:32473-sch1-rm12-co2:"


def reading(seq, t, *values):
    return {"seq": seq, "t": t, "values": [list(v) for v in values]}


def roundtrip(records, epoch=17):
    data = encode_pack(DEV, epoch, records)
    obj = cbor2.loads(data)
    decoded = decode_pack(obj)
    assert decode_pack_bytes(data) == decoded          # our own decoder agrees with cbor2
    assert decode_pack(json.loads(json.dumps(to_json_labels(obj)))) == decoded  # and JSON
    again = encode_pack(DEV, epoch, decoded["records"])
    assert decode_pack_bytes(again) == decoded                    # a fixed point
    if all(r.get("kind") != "gap" or "first_epoch" in r and "last_epoch" in r for r in records):
        assert again == data   # stable (a gap without epochs comes back with the pack's)
    return data, obj, decoded


def test_reading_pack_exact_records_and_bytes():
    records = [reading(5, T0, ("co2_ppm", 612, "ok"), ("temperature_c", 22.5, "ok"),
                       ("rh_percent", 41.25, "ok"))]
    data, obj, decoded = roundtrip(records)
    assert obj == [
        {-2: BN, -3: T0, 0: "co2", 1: "ppm", 2: 612, "bseq": 5, "bepoch": 17},
        {0: "temp", 1: "Cel", 2: 22.5},
        {0: "rh", 1: "%RH", 2: 41.25},
    ]
    # deterministic: 0 n, 1 u, 2 v, then -2 bn, -3 bt, then text keys by encoded bytes
    assert data.hex() == (
        "83" "a7" "00" "63636f32" "01" "6370706d" "02" "190264"
        "21" "7820" + BN.encode().hex() + "22" "1a663212a0"
        "64" + b"bseq".hex() + "05" "66" + b"bepoch".hex() + "11"
        "a3" "00" "6474656d70" "01" "6343656c" "02" "f94da0"
        "a3" "00" "627268" "01" "63255248" "02" "f95128")
    assert decoded == {"device_id": DEV, "pen": DEFAULT_PEN, "boot_epoch": 17, "records": records}


def test_the_nodes_encoder_writes_the_same_bytes_into_its_reused_buffer():
    # protocol.senml_core.encode_pack_into (what a node imports) empties the buffer first
    from protocol import senml_core

    records = [reading(5, T0, ("co2_ppm", 612, "ok"), ("temperature_c", 22.5, "ok"))]
    buf = bytearray(b"\xff" * 300)
    assert senml_core.encode_pack_into(buf, DEV, 17, records) is buf
    assert bytes(buf) == encode_pack(DEV, 17, records)
    with pytest.raises(SenMLError, match="seq"):
        senml_core.encode_pack_into(buf, DEV, 17, [dict(records[0], seq=-1)])
    assert SenMLError is senml_core.SenMLError


def test_group_base_fields_only_when_they_change():
    records = [reading(1, T0, ("co2_ppm", 600, "ok")),
               reading(2, T0 + 300, ("co2_ppm", 610, "ok"), ("temperature_c", 21.0, "ok")),
               reading(3, T0 + 300, ("co2_ppm", 620, "ok"))]
    _, obj, decoded = roundtrip(records)
    assert [r.get("bseq") for r in obj] == [1, 2, None, 3]
    assert [r.get(-3) for r in obj] == [T0, T0 + 300, None, None]   # same time: no bt again
    assert all("bkind" not in r and 6 not in r for r in obj)        # no per-value t
    assert decoded["records"] == records


def test_flags_sensor_failed_has_no_value_and_flag_is_must_understand():
    records = [reading(9, T0, ("co2_ppm", None, "sensor_failed"), ("temperature_c", 80.5, "spike"),
                       ("rh_percent", 41.0, "stuck"), ("no2_ppb", -30, "out_of_range"))]
    _, obj, decoded = roundtrip(records)
    assert obj[0] == {-2: BN, -3: T0, 0: "co2", 1: "ppm", "flag_": "sensor_failed",
                      "bseq": 9, "bepoch": 17}
    assert 2 not in obj[0]                                  # no invented number
    assert [r.get("flag_") for r in obj] == ["sensor_failed", "spike", "stuck", "out_of_range"]
    assert decoded["records"] == records


def test_untimed_records_have_no_absolute_time_and_say_time_unsynced():
    records = [reading(0, None, ("co2_ppm", 700, "ok"), ("temperature_c", None, "sensor_failed")),
               reading(1, T0, ("co2_ppm", 710, "ok")),
               reading(2, None, ("co2_ppm", 720, "spike"))]
    _, obj, decoded = roundtrip(records)
    assert -3 not in obj[0] and 6 not in obj[0]             # nothing invented
    assert obj[0]["flag_"] == "time_unsynced"
    assert obj[1]["flag_"] == "sensor_failed"                # the worse flag wins
    assert obj[2][-3] == T0 and "flag_" not in obj[2]
    assert obj[3][-3] == 0 and obj[3]["flag_"] == "spike"    # back to "no base time"
    got = decoded["records"]
    assert got[0] == reading(0, None, ("co2_ppm", 700, "time_unsynced"),
                             ("temperature_c", None, "sensor_failed"))
    assert got[1:] == records[1:]


def test_status_record_with_text_value_and_counters():
    status = {"seq": 40, "t": T0, "kind": "status",
              "values": [["battery_v", 3.71, "ok"], ["boot_reason", "deepsleep", "ok"],
                         ["uptime_s", 12, "ok"]],
              "counters": {"wakes": 300, "i2c_errors": 2, "log_dropped": 0}}
    _, obj, decoded = roundtrip([reading(39, T0, ("co2_ppm", 650, "ok")), status])
    assert obj[1] == {0: "batt", 1: "V", 2: 3.71, "bseq": 40, "bkind": "status"}
    assert obj[2] == {0: "boot", 3: "deepsleep"}             # vs, no unit
    assert obj[4:] == [{0: "count.i2c_errors", 1: "count", 2: 2},
                       {0: "count.log_dropped", 1: "count", 2: 0},
                       {0: "count.wakes", 1: "count", 2: 300}]
    assert decoded["records"][1] == status


def test_gap_record_says_how_many_and_which_seqs():
    # Without epochs: the range is in the pack's epoch; the bytes are as before the epochs.
    gap = {"seq": 120, "t": T0 + 60, "kind": "gap", "dropped": 100, "first_seq": 3,
           "last_seq": 102}
    after = reading(121, T0 + 300, ("distance_cm", 612, "ok"), ("fill_ratio", 0.25, "ok"))
    data, obj, decoded = roundtrip([gap, after])
    assert obj[0] == {-2: BN, -3: T0 + 60, 0: "dropped", 1: "count", 2: 100, "bseq": 120,
                      "bepoch": 17, "bkind": "gap", "first_seq": 3, "last_seq": 102}
    assert obj[1]["bkind"] == "reading"
    assert decoded["records"] == [dict(gap, first_epoch=17, last_epoch=17), after]
    # the same range with its epochs spelled out decodes the same, two labels longer
    spelled = dict(gap, first_epoch=17, last_epoch=17)
    data2, obj2, decoded2 = roundtrip([spelled, after])
    assert decoded2 == decoded
    assert obj2[0] == dict(obj[0], first_epoch=17, last_epoch=17)
    assert len(data2) == len(data) + 12 + 11 + 2


def test_gap_spanning_boot_epochs_exact_labels_and_bytes():
    # A deep-sleep node: every wake is an epoch, so a drop takes records of several. The
    # range is ordered by key, so last_seq (2, in epoch 17) is below first_seq (380, in 15).
    gap = {"seq": 7, "t": None, "kind": "gap", "dropped": 41, "first_epoch": 15,
           "first_seq": 380, "last_epoch": 17, "last_seq": 2}
    data, obj, decoded = roundtrip([gap], epoch=17)
    assert obj == [{-2: BN, 0: "dropped", 1: "count", 2: 41, "bseq": 7, "bepoch": 17,
                    "bkind": "gap", "first_seq": 380, "last_seq": 2, "first_epoch": 15,
                    "last_epoch": 17}]
    # text keys in bytewise order of their encodings, i.e. shortest first
    assert data.hex() == (
        "81" "ab" "00" "6764726f70706564" "01" "65636f756e74" "02" "1829"
        "21" "7820" + BN.encode().hex() +
        "64" + b"bseq".hex() + "07" "65" + b"bkind".hex() + "63676170"
        "66" + b"bepoch".hex() + "11" "68" + b"last_seq".hex() + "02"
        "69" + b"first_seq".hex() + "19017c" "6a" + b"last_epoch".hex() + "11"
        "6b" + b"first_epoch".hex() + "0f")
    assert decoded["records"] == [gap]
    # a pack's epoch may be anything: the range's epochs are independent of it
    later = dict(gap, seq=0)
    assert roundtrip([later], epoch=4000000000)[2]["records"] == [later]


def test_gap_without_one_epoch_takes_the_packs_for_it():
    gap = {"seq": 9, "t": T0, "kind": "gap", "dropped": 5, "first_epoch": 16, "first_seq": 70,
           "last_seq": 1}
    _, obj, decoded = roundtrip([gap], epoch=17)
    assert "last_epoch" not in obj[0] and obj[0]["first_epoch"] == 16
    assert decoded["records"] == [dict(gap, last_epoch=17)]


def test_base_name_is_an_rfc9039_org_urn():
    assert base_name(DEV) == BN
    assert base_name("n1", pen=12345) == "urn:dev:org:12345-n1:"
    assert parse_base_name("urn:dev:org:12345-n1-x:") == (12345, "n1-x")
    for bad in ("Sch1", "-a", "a" * 33, "", "a_b", None):
        with pytest.raises(SenMLError, match="device_id"):
            base_name(bad)


def _gap(**changes):
    rec = {"seq": 1, "t": T0, "kind": "gap", "dropped": 1, "first_seq": 0, "last_seq": 0}
    rec.update(changes)
    return rec


def _one(**changes):
    rec = {"seq": 1, "t": T0, "values": [["co2_ppm", 600, "ok"]]}
    rec.update(changes)
    return [rec]


@pytest.mark.parametrize("records, message", [
    ([], "non-empty"),
    (_one(seq=-1), "seq"),
    (_one(seq="1"), "seq"),
    (_one(t=100), "2\\*\\*28"),
    (_one(t=1.7e9), "Unix seconds"),
    (_one(kind="alarm"), "kind"),
    (_one(extra=1), "unknown key 'extra'"),
    (_one(values=[["co2", 600, "ok"]]), "quantity 'co2'"),
    (_one(values=[["co2_ppm", 600, "good"]]), "flag 'good'"),
    (_one(values=[["co2_ppm", None, "ok"]]), "no value"),
    (_one(values=[["co2_ppm", 600, "sensor_failed"]]), "sensor_failed but has value"),
    (_one(values=[["co2_ppm", float("nan"), "ok"]]), "finite"),
    (_one(values=[["co2_ppm", True, "ok"]]), "finite number"),
    (_one(values=[["boot_reason", 3, "ok"]]), "text"),
    (_one(values=[["co2_ppm", 1, "ok"], ["co2_ppm", 2, "ok"]]), "twice"),
    (_one(values=[]), "at least one value"),
    (_one(values=[["co2_ppm", 600]]), "\\[quantity, value, flag\\]"),
    (_one(values=[["co2_ppm", 2 ** 70, "ok"]]), "64 bits"),
    ([{"seq": 1, "t": T0, "kind": "status", "values": [], "counters": {"n": 2 ** 64}}], "64-bit"),
    (_one() + _one(), "increase"),
    ([{"seq": 1, "t": T0, "kind": "status", "values": []}], "counters"),
    ([{"seq": 1, "t": T0, "kind": "status", "values": [], "counters": {"Bad": 1}}], "counter"),
    ([{"seq": 1, "t": T0, "kind": "gap", "dropped": 0, "first_seq": 1, "last_seq": 1}],
     "dropped"),
    ([{"seq": 1, "t": T0, "kind": "gap", "dropped": 1, "last_seq": 1}], "no 'first_seq'"),
    ([_gap(first_seq=5, last_seq=4)], "ends at \\(epoch 1, seq 4\\), before its start "
                                      "\\(epoch 1, seq 5\\)"),
    ([_gap(first_epoch=3, last_epoch=2, first_seq=0, last_seq=9)], "before its start"),
    ([_gap(first_epoch=2)], "before its start"),          # the missing last_epoch is the pack's 1
    ([_gap(first_epoch=-1)], "first_epoch -1 must be a uint32"),
    ([_gap(last_epoch=2 ** 32)], "last_epoch 4294967296 must be a uint32"),
    ([_gap(first_epoch=None)], "first_epoch None"),
    ([_gap(first_epoch=True)], "first_epoch True"),
    (_one(first_epoch=1), "unknown key 'first_epoch'"),
])
def test_encode_refuses_bad_records_naming_the_problem(records, message):
    with pytest.raises(SenMLError, match=message):
        encode_pack(DEV, 1, records)


def test_encode_refuses_bad_boot_epoch():
    with pytest.raises(SenMLError, match="boot_epoch"):
        encode_pack(DEV, 2 ** 32, _one())


def _pack(labels=None, **first_changes):
    obj = cbor2.loads(encode_pack(DEV, 17, [
        reading(5, T0, ("co2_ppm", 612, "ok"), ("temperature_c", 22.5, "ok")),
        {"seq": 6, "t": T0, "kind": "gap", "dropped": 2, "first_seq": 1, "last_seq": 2}]))
    for key, value in first_changes.items():
        key = {"bn": -2, "bt": -3, "n": 0, "u": 1, "v": 2, "vs": 3, "t": 6}.get(key, key)
        if value is KeyError:
            del obj[0][key]
        else:
            obj[0][key] = value
    obj[0].update(labels or {})        # raw labels, as they are
    return obj


@pytest.mark.parametrize("obj, message", [
    ({}, "non-empty array"),
    ([], "non-empty array"),
    ([1], "not a map"),
    (_pack(bn=KeyError), "base name bn"),
    (_pack(bepoch=KeyError), "bepoch"),
    (_pack(bn="urn:dev:mac:0024befffe804ff1:"), "urn:dev:org"),
    (_pack(bn="urn:dev:org:x-a:"), "PEN"),
    (_pack(bn=7), "base name"),
    (_pack(bepoch=-1), "bepoch"),
    (_pack(bseq=KeyError), "no bseq"),
    (_pack(bseq="5"), "bseq '5'"),
    (_pack(bseq=6), "above the previous"),
    (_pack(n="co3"), "'co3' is not a quantity"),
    (_pack(n=5), "name n must be text"),
    (_pack(u="K"), "unit 'K' should be 'ppm'"),
    (_pack(u=KeyError), "unit None should be 'ppm'"),
    (_pack(v="612"), "finite number"),
    (_pack(v=KeyError), "no value"),
    (_pack(vs="x"), "both v and vs"),
    (_pack(flag_="bogus"), "flag_ 'bogus'"),
    (_pack(flag_="sensor_failed"), "sensor_failed but has a value"),
    (_pack(bt=12345), "relative"),
    (_pack(bt=T0 + 0.5), "whole seconds"),
    (_pack(t=5 - T0), "relative"),
    (_pack(t=float("inf")), "t inf must be a finite"),
    (_pack(bt="now"), "bt 'now'"),
    (_pack(bkind="alarm"), "bkind"),
    (_pack(bver=11), "bver"),
    (_pack({-5: 1.0}), "'bv' is not used"),
    (_pack({9: 1}), "unknown integer label 9"),
    (_pack({"n": "co2"}), "given twice"),
    (_pack({2.5: 1}), "neither an integer nor text"),
    (_pack({"sum_": 1}), "must-understand label 'sum_'"),
    (_pack(first_seq=1), "gap records only"),
    (_pack(last_epoch=1), "gap records only"),
])
def test_decode_pack_errors_name_the_problem(obj, message):
    with pytest.raises(SenMLError, match=message):
        decode_pack(obj)


def test_decode_pack_refuses_inconsistent_groups():
    obj = _pack()
    obj[1]["bepoch"] = 18
    with pytest.raises(SenMLError, match="bepoch"):
        decode_pack(obj)
    obj = _pack()
    obj[1][-2] = "urn:dev:org:32473-other:"
    with pytest.raises(SenMLError, match="one device"):
        decode_pack(obj)
    obj = _pack()
    obj[1][6] = 60                                    # t inside a group: another time
    with pytest.raises(SenMLError, match="differs from seq 5"):
        decode_pack(obj)
    obj = _pack()
    obj[1]["bkind"] = "status"                        # not at a group start
    with pytest.raises(SenMLError, match="bkind"):
        decode_pack(obj)
    obj = _pack()
    obj.append({0: "co2", 1: "ppm", 2: 1})           # a second record in the gap group
    with pytest.raises(SenMLError, match="gap seq 6"):
        decode_pack(obj)
    obj = _pack()
    obj[1][0] = "co2"                                 # same name twice in one reading
    with pytest.raises(SenMLError, match="twice"):
        decode_pack(obj)


@pytest.mark.parametrize("labels, message", [
    ({"first_epoch": 18}, "ends at \\(epoch 17, seq 2\\), before its start \\(epoch 18, seq 1\\)"),
    ({"first_seq": 3}, "before its start"),
    ({"last_epoch": 16}, "before its start"),
    ({"first_epoch": -1}, "first_epoch -1 must be a uint32"),
    ({"last_epoch": 2 ** 32}, "last_epoch 4294967296"),
    ({"first_epoch": 17.0}, "first_epoch 17.0"),
    ({"last_seq": KeyError}, "last_seq None"),
])
def test_decode_checks_a_gaps_range_by_key(labels, message):
    obj = _pack()
    for key, value in labels.items():
        if value is KeyError:
            del obj[2][key]
        else:
            obj[2][key] = value
    with pytest.raises(SenMLError, match=message):
        decode_pack(obj)


def test_decode_accepts_last_seq_below_first_seq_in_a_later_epoch():
    obj = _pack()
    obj[2].update({"first_seq": 90, "last_seq": 2, "first_epoch": 16})
    gap = decode_pack(obj)["records"][1]
    assert gap == {"seq": 6, "t": T0, "kind": "gap", "dropped": 2, "first_epoch": 16,
                   "first_seq": 90, "last_epoch": 17, "last_seq": 2}


def test_decode_ignores_unknown_labels_that_are_not_must_understand():
    obj = _pack(note="installed 2024")
    assert decode_pack(obj) == decode_pack(_pack())


def test_decode_pack_bytes_wraps_cbor_errors():
    with pytest.raises(SenMLError, match="not valid CBOR"):
        decode_pack_bytes(b"\x9f")
    with pytest.raises(SenMLError, match="non-empty array"):
        decode_pack_bytes(b"\xa0")


def test_quantity_table_is_unique_registered_and_codes_are_small():
    rows = quantities.QUANTITIES
    for column in range(3):
        assert len({r[column] for r in rows}) == len(rows)
    # RFC 8428 §12.1 registry and RFC 8798 secondary units (REFERENCE.md §8.2)
    registered = {"Cel", "%RH", "m", "/", "count", "V", "s", "ppm", "ppb", "ug/m3", "cm", "dBm"}
    for code, quantity, name, unit, kind in rows:
        assert 1 <= code < 24
        assert unit is None and kind == quantities.TEXT or unit in registered
        assert quantities.code_of(quantity) == code
        assert quantities.quantity_of_code(code) == quantity
    assert sorted(quantities.FLAG_CODES) == sorted(quality.FLAGS)
    assert [quantities.flag_code(f) for f in quality.FLAGS] == [0, 1, 2, 3, 4, 5]
    assert quantities.flag_of_code(4) == "sensor_failed"
    for bad in (lambda: quantities.code_of("co2"), lambda: quantities.quantity_of_code(0),
                lambda: quantities.flag_code("good"), lambda: quantities.flag_of_code(9)):
        with pytest.raises(ValueError):
            bad()
    # codes are a wire contract: these must never change
    assert [(r[0], r[1]) for r in rows[:8]] == [
        (1, "co2_ppm"), (2, "temperature_c"), (3, "rh_percent"), (4, "no2_ppb"),
        (5, "no2_ugm3"), (6, "distance_cm"), (7, "fill_ratio"), (8, "battery_v")]


def classroom_batch(n=10, seq0=1000, battery=True):
    """SCD4x-shaped readings (values from the driver's own word conversions) every 300 s."""
    out = []
    for i in range(n):
        values = [["co2_ppm", 600 + 37 * i, "ok"],
                  ["temperature_c", temperature_c_from_word(25000 + 40 * i), "ok"],
                  ["rh_percent", rh_percent_from_word(26000 + 500 * i), "ok"]]
        if battery:
            values.append(["battery_v", 3.6 - 0.001 * i, "ok"])
        out.append({"seq": seq0 + i, "t": T0 + 300 * i, "values": values})
    return out


def test_sizes_of_a_classroom_batch_against_senml_json():
    # Deterministic encoding => exact sizes; docs/protocol-senml.md quotes these numbers.
    data = encode_pack(DEV, 17, classroom_batch())
    as_json = json.dumps(to_json_labels(cbor2.loads(data)), separators=(",", ":"))
    assert len(data) == 875 and len(as_json) == 1800
    assert len(cbor2.dumps(cbor2.loads(data))) == 955          # cbor2 default: float64
    three = encode_pack(DEV, 17, classroom_batch(battery=False))
    assert len(three) == 675
    assert len(data) * 2 < len(as_json)


def test_pack_records_streams_plain_dicts():
    recs = list(pack_records(DEV, 1, classroom_batch(n=2)))
    assert len(recs) == 8 and all(isinstance(r, dict) for r in recs)


def test_the_examples_in_docs_protocol_senml_are_exact():
    import pathlib
    import re
    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol-senml.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", doc, re.S)
    pairs = [(blocks[i][1], blocks[i + 1][1]) for i in range(len(blocks) - 1)
             if blocks[i][0] == "" and blocks[i + 1][0] == "json"]
    assert len(pairs) == 3
    for hexblock, jsonblock in pairs:
        data = bytes.fromhex("".join(hexblock.split()))
        obj = cbor2.loads(data)
        assert to_json_labels(obj) == json.loads(jsonblock)
        pack = decode_pack(obj)
        assert encode_pack(pack["device_id"], pack["boot_epoch"], pack["records"]) == data


# ---------------------------------------------------------------------------- the node's gaps

class _TrustedClock:
    def wall_s(self):
        return T0 + 0.5

    def wall_trusted(self):
        return True


def real_log_gap(root):
    """Fill a tiny real flash log (firmware/app/store.py) across two boots until its bound
    drops records of both: ``(boot_epoch, records)`` of the pending records of the second
    epoch, the log's own gap record among them."""
    from firmware.app.state import NodeState
    from firmware.app.store import RecordLog

    def boot():
        st = NodeState(str(root))
        log = RecordLog(str(root), 1024, clock=_TrustedClock(), state=st, segment_bytes=512)
        st.boot("deepsleep", log.max_epoch())
        return st, log

    def sample(i):
        return {"t": T0 + 300 * i, "values": [["co2_ppm", 400 + i, "ok"],
                                              ["temperature_c", 21.5 + i / 128, "ok"]]}

    st, log = boot()
    for i in range(3):                       # the first segment is part-filled in epoch 1
        log.append(sample(i))
    st, log = boot()                          # epoch 2 appends to the same segment
    i = 3
    while log.stats()["dropped"] == 0:
        log.append(sample(i))
        i += 1
    pending = log.pending(1000, mark_sent=False)
    epoch = st.boot_epoch
    records = [r for e, r in pending if e == epoch]
    assert len(records) == len(pending)       # epoch 1 is wholly gone: all left is epoch 2
    return epoch, records


def test_a_gap_from_the_real_flash_log_round_trips_unchanged(tmp_path):
    epoch, records = real_log_gap(tmp_path)
    gaps = [r for r in records if r.get("kind") == "gap"]
    assert len(gaps) == 1
    gap = gaps[0]
    assert (gap["first_epoch"], gap["first_seq"]) == (1, 0) and gap["last_epoch"] == 2 == epoch
    assert sorted(gap) == ["dropped", "first_epoch", "first_seq", "kind", "last_epoch",
                           "last_seq", "seq", "t"]
    data, obj, decoded = roundtrip(records, epoch=epoch)
    assert decoded["records"] == records and decoded["boot_epoch"] == epoch
    (dropped,) = [r for r in obj if r.get(0) == "dropped"]
    assert (dropped["first_epoch"], dropped["first_seq"], dropped["last_epoch"],
            dropped["last_seq"]) == (1, 0, 2, gap["last_seq"])
    assert decode_pack(cbor2.loads(encode_pack(DEV, epoch, [gap])))["records"] == [gap]


def test_a_merged_gap_from_the_real_flash_log_keeps_its_exact_count_on_both_uplinks(tmp_path):
    """A node that stays awake with its link down long enough that its log drops its own gap
    records (firmware/app/store.py merges them into the next): the last gap's ``dropped``
    counts every key that will never arrive, merged gap records' keys included, and comes
    back unchanged from SenML-CBOR and from the LoRaWAN pack."""
    from firmware.app.state import NodeState
    from firmware.app.store import RecordLog
    from protocol.lorapack import pack
    from protocol.lorapack_decode import unpack

    st = NodeState(str(tmp_path))
    log = RecordLog(str(tmp_path), 2048, clock=_TrustedClock(), state=st, segment_bytes=512)
    epoch = st.boot("power_on", log.max_epoch())
    i = 0
    while log.stats()["gaps"] < 10:  # 4 segments: older gap records are dropped in turn
        log.append({"t": T0 + 60 * i, "values": [["co2_ppm", 400 + i % 50, "ok"]]})
        i += 1
    records = [r for _, r in log.pending(1000, mark_sent=False)]
    gaps = [r for r in records if r.get("kind") == "gap"]
    held = {r["seq"] for r in records}
    missing = [q for q in range(records[-1]["seq"]) if q not in held]
    assert log.stats()["gaps"] > len(gaps)  # some gap records were merged into later ones
    assert sum(g["dropped"] for g in gaps) == len(missing) == log.stats()["dropped"]
    assert len(missing) > i - (len(records) - len(gaps))  # more keys than readings lost
    _, _, decoded = roundtrip(records, epoch=epoch)
    assert decoded["records"] == records
    out, n = [], 0
    while n < len(records):
        payload, taken = pack(records[n:], 222, epoch)
        got_epoch, got = unpack(payload)
        assert got_epoch == epoch
        out.extend(got)
        n += taken
    assert [r for r in out if r.get("kind") == "gap"] == gaps
