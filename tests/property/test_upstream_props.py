"""gateway.upstream over arbitrary record shapes: every row goes out exactly as documented.

Each batch of outbox rows is encoded (SenML JSON or CBOR, random ``per_publish`` and
``max_bytes``) and every message decoded again with ``json`` / ``cbor2`` and
``protocol.senml_decode.decode_pack``: each row that is a reading, status or gap record is in
exactly one readings pack, decoded equal to the record (as the module docstring transforms
it); each alarm event is in an alarms message; each refused record is in exactly one
``unencodable`` gap message; no payload is over ``max_bytes``.
"""

import json
import math
from collections import Counter

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import upstream as U
from gateway.outbox_policy import OutboxRow
from protocol import quality
from protocol.quantities import NUM, QUANTITIES
from protocol.senml_decode import decode_pack

T_MIN = 1 << 28
DEVICES = ("class-3", "bin-4", "gw-1")

numbers = st.one_of(st.integers(-(2 ** 63), 2 ** 63 - 1),
                    st.floats(allow_nan=False, allow_infinity=False))
times = st.one_of(st.none(), st.integers(T_MIN, 2 ** 40))


@st.composite
def values(draw):
    rows = draw(st.lists(st.sampled_from(QUANTITIES), unique_by=lambda r: r[1], max_size=5))
    out = []
    for _code, name, _senml, _unit, kind in rows:
        flag = draw(st.sampled_from(quality.FLAGS))
        if flag == quality.SENSOR_FAILED:
            v = None
        elif kind == NUM:
            v = draw(numbers)
        else:
            v = draw(st.text(max_size=20))
        out.append([name, v, flag])
    return out


events = st.lists(st.fixed_dictionaries({
    "kind": st.sampled_from(["raised", "cleared", "report"]), "rule": st.sampled_from(["r1", "r2"]),
    "device_id": st.sampled_from(DEVICES), "value": numbers, "at": st.integers(T_MIN, 2 ** 34)}),
    max_size=3)


@st.composite
def record(draw, seq):
    kind = draw(st.sampled_from(["reading", "reading", "status", "gap", "event", "bogus"]))
    rec = {"seq": seq, "t": draw(times)}
    if kind in ("reading", "status"):
        rec["values"] = draw(values())
        if kind == "status":
            rec["kind"] = "status"
            rec["counters"] = draw(st.dictionaries(st.sampled_from(["resets", "crc_errors"]),
                                                   st.integers(-2, 2 ** 40)))
        elif not rec["values"] or draw(st.booleans()):
            rec["values"] = rec["values"] or [["co2_ppm", 400, "ok"]]
    elif kind == "gap":
        first = draw(st.integers(0, 2 ** 32 - 1))
        rec.update(kind="gap", dropped=draw(st.integers(1, 1000)), first_seq=first,
                   last_seq=draw(st.integers(first, 2 ** 32 - 1)))
    else:
        rec["kind"] = kind
    if rec["t"] is None and draw(st.booleans()):
        rec["rx_t"] = draw(st.floats(T_MIN, 2 ** 34))
    alarms = draw(events)
    if alarms or kind == "event" and draw(st.booleans()):
        rec["alarms"] = alarms
    return rec


@st.composite
def batches(draw):
    rows, used = [], set()
    for row_id in range(1, draw(st.integers(0, 25)) + 1):
        dev, epoch = draw(st.sampled_from(DEVICES)), draw(st.integers(0, 2))
        seq = draw(st.integers(0, 60))
        if (dev, epoch, seq) in used:
            continue
        used.add((dev, epoch, seq))
        rx_wall = draw(st.one_of(st.none(), st.floats(T_MIN, 2 ** 34)))
        rows.append(OutboxRow(row_id, dev, epoch, seq, "routine", 0, rx_wall,
                              draw(record(seq))))
    return rows


def expected(row):
    """What decode_pack must give back for ``row`` (the module docstring's transformation)."""
    rec = {k: v for k, v in row.record.items() if k not in ("alarms", "rx_t")}
    if rec["t"] is None:
        rx = row.record.get("rx_t", row.rx_wall_s)
        rec["t"] = int(rx) if rx is not None else None
        if "values" in rec:
            rec["values"] = [[q, v, quality.TIME_UNSYNCED if f == quality.OK else f]
                             for q, v, f in rec["values"]]
    if rec.get("kind") == "reading":
        del rec["kind"]
    if rec.get("kind") == "gap":
        rec.setdefault("first_epoch", row.boot_epoch)
        rec.setdefault("last_epoch", row.boot_epoch)
    return rec


def valid(row):
    rec = row.record
    kind = rec.get("kind", "reading")
    if kind == "status" and any(c < 0 for c in rec["counters"].values()):
        return False
    if kind in ("reading", "status") and not rec["values"] and not rec.get("counters"):
        return False
    return kind in ("reading", "status", "gap")


def same(a, b):
    """Equal, with floats compared exactly (and -0.0 == 0.0 as SenML numbers are)."""
    if isinstance(a, float) or isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=batches(), encoding=st.sampled_from(U.ENCODINGS), per_publish=st.integers(1, 8),
       max_bytes=st.sampled_from([700, 2000, U.DEFAULT_MAX_PUBLISH_BYTES]))
def test_every_row_goes_out_once_and_decodes_to_its_record(rows, encoding, per_publish,
                                                           max_bytes):
    msgs = U.encode_rows(rows, "site-a", "gw-1", encoding, per_publish, max_bytes)
    by_id = {r.row_id: r for r in rows}
    in_packs, unencodable, node_gaps, alarms = Counter(), Counter(), Counter(), Counter()
    for m in msgs:
        assert len(m.payload) <= max_bytes
        if m.kind == U.READINGS:
            obj = cbor2.loads(m.payload) if encoding == U.SENML_CBOR else json.loads(m.payload)
            pack = decode_pack(obj)
            assert 1 <= len(pack["records"]) == len(m.row_ids) == m.records <= per_publish
            assert m.topic == "civicedge/v1/site-a/%s/readings" % pack["device_id"]
            for got, rid in zip(pack["records"], m.row_ids):
                row = by_id[rid]
                assert (pack["device_id"], pack["boot_epoch"], got["seq"]) == (
                    row.device_id, row.boot_epoch, row.seq)
                assert same(got, expected(row)), (got, expected(row))
                in_packs[rid] += 1
        else:
            body = json.loads(m.payload)
            (rid,) = m.row_ids
            row = by_id[rid]
            if m.kind == U.ALARMS:
                assert body["key"] == [row.device_id, row.boot_epoch, row.seq]
                for ev in body["alarms"]:
                    assert m.topic == "civicedge/v1/site-a/%s/alarms" % ev["device_id"]
                    alarms[(rid, json.dumps(ev, sort_keys=True))] += 1
            elif body["reason"] == U.UNENCODABLE:
                assert body["key"] == [row.device_id, row.boot_epoch, row.seq]
                assert body["dropped"] == 1
                if "record" in body:
                    assert body["record"] == row.record
                else:  # too large to attach within max_bytes
                    assert "too large" in body["detail"]
                unencodable[rid] += 1
            else:
                assert body["reason"] == U.NODE_LOG and body["dropped"] == row.record["dropped"]
                node_gaps[rid] += 1
    for row in rows:
        if valid(row):
            assert in_packs[row.row_id] == 1 and unencodable[row.row_id] == 0
        elif row.record.get("kind") != "event":
            assert unencodable[row.row_id] == 1 and in_packs[row.row_id] == 0
        if row.record.get("kind") == "gap":
            assert node_gaps[row.row_id] == 1
        want = Counter((row.row_id, json.dumps(ev, sort_keys=True))
                       for ev in row.record.get("alarms", []))
        assert {k: v for k, v in alarms.items() if k[0] == row.row_id} == dict(want)
        carried = any(row.row_id in m.row_ids for m in msgs)
        assert carried == (row.record.get("kind") != "event" or bool(row.record.get("alarms")))
