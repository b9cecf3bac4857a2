"""Hypothesis: the fast decoder of usual packs (``protocol.senml_usual.decode_usual``) returns
exactly what the checked decoder returns, or None, whatever it is fed: node packs, and node
packs with their keys and values swapped for look-alikes (``True``/``1.0`` for the label 1,
bools, NaN, huge ints, floats for ints) or moved. What it returns also passes the pipeline's
own record check, which the pipeline skips for it."""

import math
import struct

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.pipeline import _check_values
from protocol import quality, quantities
from protocol.senml import BT, L_SEQ, N, U, V, SenMLError, encode_pack
from protocol.senml_decode import _decode_checked
from protocol.senml_usual import decode_usual

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
T0 = 1767225600
NUMERIC = [r for r in quantities.QUANTITIES if r[4] == quantities.NUM]


def same(a, b):
    """Equal with types kept apart (1 vs 1.0 vs True) and floats compared bit for bit."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


numbers = st.one_of(st.integers(min_value=-2 ** 63, max_value=2 ** 63),
                    st.floats(allow_nan=False, allow_infinity=False, width=32))


@st.composite
def node_records(draw):
    """Records as a node logs them: mostly timed 4-value readings, some status records, a
    flagged or failed value now and then, sometimes no time."""
    out, seq = [], draw(st.integers(0, 2 ** 32 - 40))
    for _ in range(draw(st.integers(1, 8))):
        seq += draw(st.sampled_from([1, 1, 1, 2, 7]))
        t = draw(st.one_of(st.integers(T0, T0 + 10 ** 6), st.just(None)) if draw(
            st.integers(0, 9)) == 0 else st.integers(T0, T0 + 10 ** 6))
        if draw(st.integers(0, 7)) == 0:
            values = [["boot_reason", "poweron", "ok"]]
            if draw(st.booleans()):  # a numeric value in a status record too
                flag = draw(st.sampled_from(quality.FLAGS[:4]))
                values.append(["battery_v", draw(numbers), flag])
            out.append({"seq": seq, "t": t, "kind": "status", "values": values,
                        "counters": {"boots": draw(st.integers(0, 99)), "cycles": seq}})
            continue
        rows = draw(st.lists(st.sampled_from(NUMERIC), min_size=1, max_size=4,
                             unique_by=lambda r: r[0]))
        values = []
        for row in rows:
            flag = draw(st.sampled_from([quality.OK] * 6 + list(quality.FLAGS)))
            value = None if flag == quality.SENSOR_FAILED else draw(numbers)
            values.append([row[1], value, flag])
        out.append({"seq": seq, "t": t, "values": values})
    return out


LOOKALIKES = {N: [False, 0.0], U: [True, 1.0], V: [2.0], BT: [-3.0], L_SEQ: [b"bseq"]}
JUNK = st.one_of(st.none(), st.booleans(), st.floats(), st.integers(-2 ** 70, 2 ** 70),
                 st.text(max_size=5), st.sampled_from(["co2", "ppm", "temp", "Cel", "ok"]))


def damage(obj, data):
    """Change one to three SenML records of the decoded pack ``obj`` in place."""
    for _ in range(data.draw(st.integers(1, 3))):
        rec = obj[data.draw(st.integers(0, len(obj) - 1))]
        how = data.draw(st.sampled_from(["lookalike", "value", "drop", "reorder"]))
        keys = list(rec)
        key = data.draw(st.sampled_from(keys))
        if how == "lookalike" and key in LOOKALIKES:
            items = [(data.draw(st.sampled_from(LOOKALIKES[key])) if k == key else k, v)
                     for k, v in rec.items()]
            rec.clear()
            rec.update(items)
        elif how == "value":
            rec[key] = data.draw(JUNK)
        elif how == "drop":
            del rec[key]
        else:
            items = list(rec.items())
            items.insert(0, items.pop())
            rec.clear()
            rec.update(items)


def agree(obj):
    try:
        want = _decode_checked(obj)
    except SenMLError:
        want = None
    got = decode_usual(obj)
    if got is not None:
        assert want is not None and same(got, want)
        assert _check_values(got["records"]) is None
    return got, want


@SETTINGS
@given(node_records())
def test_node_packs_take_the_fast_path_and_decode_as_the_checked_decoder_does(records):
    obj = cbor2.loads(encode_pack("sch1-rm01-co2", 7, records))
    got, want = agree(obj)
    assert got is not None and want is not None


@SETTINGS
@given(node_records(), st.data())
def test_damaged_node_packs_decode_as_the_checked_decoder_does_or_not_at_all(records, data):
    obj = cbor2.loads(encode_pack("sch1-rm01-co2", 7, records))
    damage(obj, data)
    agree(obj)


def test_a_lookalike_label_never_takes_a_short_path():
    obj = cbor2.loads(encode_pack("n1", 1, [{"seq": 0, "t": T0, "values": [
        ["co2_ppm", 500, "ok"], ["temperature_c", 20.5, "ok"]]}, {"seq": 1, "t": T0 + 1,
                                                                  "values": [
        ["co2_ppm", 501, "ok"], ["temperature_c", 20.25, "ok"]]}]))
    assert decode_usual(obj) is not None
    for i in (1, 2, 3):
        for key, fakes in LOOKALIKES.items():
            for fake in fakes:
                bad = [dict(r) for r in obj]
                if key not in bad[i]:
                    continue
                bad[i] = {fake if k == key else k: v for k, v in bad[i].items()}
                assert decode_usual(bad) is None, (i, key, fake)
                try:
                    _decode_checked(bad)
                except SenMLError:
                    pass


def test_non_finite_and_out_of_range_values_leave_the_fast_path():
    for v in (math.nan, math.inf, -math.inf, 2 ** 64, True):
        obj = cbor2.loads(encode_pack("n1", 1, [{"seq": 0, "t": T0, "values": [
            ["co2_ppm", 500, "ok"], ["temperature_c", 20.5, "ok"]]}]))
        obj[1][V] = v
        assert decode_usual(obj) is None
