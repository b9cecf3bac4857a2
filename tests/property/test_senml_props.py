"""Hypothesis: protocol.cbor against cbor2 (round trips bit-exact, canonical agreement where
RFC 8949 §4.2 and cbor2's length-first order coincide), the decoders' error discipline, and
SenML packs round-tripping through cbor2.

Float policy (documented in protocol/cbor.py): every non-NaN float, including -0.0, the
infinities and subnormals, round-trips bit-exact; every NaN is sent as f9 7e 00 (payload not
kept). SenML values must be finite (SenML JSON has no NaN or infinity).
"""

import math
import string
import struct

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import quality, quantities
from protocol.cbor import CBORError, dumps, loads
from protocol.senml import SenMLError, encode_pack
from protocol.senml_decode import decode_pack

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

ints = st.integers(min_value=-2 ** 64, max_value=2 ** 64 - 1)
floats = st.floats(allow_nan=False)          # includes ±inf, -0.0, subnormals
scalars = st.one_of(st.none(), st.booleans(), ints, floats, st.text(max_size=12),
                    st.binary(max_size=12))
# keys Python holds distinct from each other (no bool/float beside ints)
keys = st.one_of(ints, st.text(max_size=6), st.binary(max_size=6))
values = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(keys, kids, max_size=4)), max_leaves=20)


def same(a, b):
    """Equal with types kept apart (1 vs 1.0 vs True) and floats compared bit for bit."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@SETTINGS
@given(values)
def test_values_round_trip_through_cbor2_and_our_decoder_bit_exact(obj):
    data = dumps(obj)
    assert same(cbor2.loads(data), obj)
    assert same(loads(data, max_len=1 << 16, canonical=True), obj)


@SETTINGS
@given(floats)
def test_floats_take_the_shortest_exact_width(x):
    def fits(fmt):
        try:
            return struct.unpack(fmt, struct.pack(fmt, x))[0] == x
        except OverflowError:
            return False
    want = 3 if fits(">e") else 5 if fits(">f") else 9
    data = dumps(x)
    assert len(data) == want
    assert struct.pack(">d", cbor2.loads(data)) == struct.pack(">d", x)


@SETTINGS
@given(st.integers(min_value=0, max_value=0xFFFF).filter(lambda b: (b & 0x7C00) != 0x7C00 or
                                                         (b & 0x3FF) == 0))
def test_every_float16_decodes_like_cpython_struct(bits):
    raw = bits.to_bytes(2, "big")
    expected = struct.unpack(">e", raw)[0]
    got = loads(b"\xf9" + raw)
    assert struct.pack(">d", got) == struct.pack(">d", expected)
    assert dumps(got) == b"\xf9" + raw          # and it is its own shortest form


def same_length_maps(kids):
    small_int_keys = st.dictionaries(st.integers(min_value=-24, max_value=23), kids, max_size=5)
    three_letter_keys = st.dictionaries(
        st.text(alphabet=string.ascii_letters, min_size=3, max_size=3), kids, max_size=5)
    return st.one_of(st.lists(kids, max_size=4), small_int_keys, three_letter_keys)


@SETTINGS
@given(st.recursive(scalars, same_length_maps, max_leaves=20))
def test_equals_cbor2_canonical_where_key_lengths_agree(obj):
    # REFERENCE.md §8.4: bytewise and length-first order coincide for equal-length keys
    assert dumps(obj) == cbor2.dumps(obj, canonical=True)


@SETTINGS
@given(st.binary(max_size=80))
def test_decoder_fed_arbitrary_bytes_raises_only_cborerror(data):
    try:
        obj = loads(data)
    except CBORError:
        return
    assert loads(dumps(obj)) is not None or obj is None


@SETTINGS
@given(values, st.data())
def test_decoder_fed_damaged_encodings_raises_only_cborerror(obj, data):
    raw = bytearray(dumps(obj))
    how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    at = data.draw(st.integers(min_value=0, max_value=len(raw)))
    if how == "cut":
        del raw[at:]
    elif how == "insert":
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=3))
    elif raw:
        raw[min(at, len(raw) - 1)] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        loads(bytes(raw))
    except CBORError:
        pass


# ---------------------------------------------------------------------------- SenML

T_MIN = 1 << 28
num_values = st.one_of(st.integers(min_value=-2 ** 63, max_value=2 ** 63),
                       st.floats(allow_nan=False, allow_infinity=False))
times = st.one_of(st.none(), st.integers(min_value=T_MIN, max_value=2 ** 40))


@st.composite
def value_lists(draw):
    rows = draw(st.lists(st.sampled_from(quantities.QUANTITIES), min_size=1, max_size=5,
                         unique_by=lambda r: r[0]))
    out = []
    for _, quantity, _, _, kind in rows:
        flag = draw(st.sampled_from(quality.FLAGS))
        if flag == quality.SENSOR_FAILED:
            value = None
        elif kind == quantities.TEXT:
            value = draw(st.text(max_size=12))
        else:
            value = draw(num_values)
        out.append([quantity, value, flag])
    return out


U32 = 2 ** 32 - 1
u32 = st.integers(min_value=0, max_value=U32)


@st.composite
def gap_ranges(draw, epoch):
    """A gap's range fields, ordered by (epoch, seq): without epochs (the pack's), within one
    epoch, across epochs (then last_seq is anything), or with only one epoch given."""
    how = draw(st.sampled_from(["no epochs", "one epoch", "across", "across", "first only",
                                "last only"]))
    if how == "no epochs":
        e1 = e2 = epoch
    elif how == "one epoch":
        e1 = e2 = draw(st.one_of(st.just(epoch), u32))
    elif how == "across":
        e1 = draw(st.integers(0, U32 - 1))
        e2 = draw(st.one_of(st.integers(e1 + 1, min(U32, e1 + 5)), st.integers(e1 + 1, U32)))
    elif how == "first only":
        e1, e2 = draw(st.integers(0, epoch)), epoch
    else:
        e1, e2 = epoch, draw(st.integers(epoch, U32))
    first = draw(u32)
    last = draw(st.integers(first, U32) if e1 == e2 else u32)
    out = {"first_seq": first, "last_seq": last}
    if how in ("one epoch", "across", "first only"):
        out["first_epoch"] = e1
    if how in ("one epoch", "across", "last only"):
        out["last_epoch"] = e2
    return out


@st.composite
def record_lists(draw, epoch=1):
    seqs = sorted(draw(st.sets(st.integers(min_value=0, max_value=2 ** 32 - 1),
                               min_size=1, max_size=6)))
    out = []
    for seq in seqs:
        kind = draw(st.sampled_from(["reading", "status", "gap"]))
        rec = {"seq": seq, "t": draw(times)}
        if kind == "gap":
            rec.update(kind="gap", dropped=draw(st.integers(min_value=1, max_value=2 ** 32)))
            rec.update(draw(gap_ranges(epoch)))
        elif kind == "status":
            counters = draw(st.dictionaries(
                st.from_regex(r"[a-z0-9][a-z0-9_]{0,31}", fullmatch=True),
                st.integers(min_value=0, max_value=2 ** 64 - 1), max_size=3))
            vals = draw(value_lists()) if not counters or draw(st.booleans()) else []
            rec.update(kind="status", values=vals, counters=counters)
        else:
            rec["values"] = draw(value_lists())
        out.append(rec)
    return out


@st.composite
def packs(draw):
    epoch = draw(u32)
    return epoch, draw(record_lists(epoch))


def expected(records, epoch):
    """What decode_pack gives back: untimed ``ok`` values become ``time_unsynced``; a gap's
    missing epochs are the pack's."""
    out = []
    for rec in records:
        rec = dict(rec)
        if rec.get("kind") == "gap":
            rec.setdefault("first_epoch", epoch)
            rec.setdefault("last_epoch", epoch)
        if "values" in rec:
            rec["values"] = [[q, v, quality.TIME_UNSYNCED if rec["t"] is None and f == "ok"
                              else f] for q, v, f in rec["values"]]
        out.append(rec)
    return out


device_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True)


@SETTINGS
@given(device_ids, packs())
def test_packs_round_trip_through_cbor2(device_id, pack):
    epoch, records = pack
    data = encode_pack(device_id, epoch, records)
    got = decode_pack(cbor2.loads(data))
    assert got["device_id"] == device_id and got["boot_epoch"] == epoch
    assert same(got["records"], expected(records, epoch))
    again = encode_pack(device_id, epoch, got["records"])
    assert same(decode_pack(cbor2.loads(again))["records"], got["records"])
    if all(r.get("kind") != "gap" or "first_epoch" in r and "last_epoch" in r for r in records):
        assert again == data
    else:  # the epochs the pack left out come back as the pack's: same records, spelled out
        assert again == encode_pack(device_id, epoch, expected(records, epoch))


@SETTINGS
@given(u32, st.data())
def test_gaps_without_epochs_cost_no_bytes_and_mean_the_packs_epoch(epoch, data):
    bare = []
    for r in data.draw(record_lists(epoch)):
        if r.get("kind") == "gap":
            lo, hi = sorted((r["first_seq"], r["last_seq"]))
            r = {"seq": r["seq"], "t": r["t"], "kind": "gap", "dropped": r["dropped"],
                 "first_seq": lo, "last_seq": hi}
        bare.append(r)
    spelled = [dict(r, first_epoch=epoch, last_epoch=epoch) if r.get("kind") == "gap" else r
               for r in bare]
    got = decode_pack(cbor2.loads(encode_pack("n1", epoch, bare)))["records"]
    assert same(got, expected(spelled, epoch))
    assert same(decode_pack(cbor2.loads(encode_pack("n1", epoch, spelled)))["records"], got)
    n_gaps = sum(1 for r in bare if r.get("kind") == "gap")
    extra = len(encode_pack("n1", epoch, spelled)) - len(encode_pack("n1", epoch, bare))
    head = 1 if epoch < 24 else 2 if epoch < 256 else 3 if epoch < 65536 else 5
    assert extra == n_gaps * (12 + 11 + 2 * head)   # the two labels and their values, only


@SETTINGS
@given(u32, u32, u32, u32, u32)
def test_a_gap_that_ends_before_it_starts_is_refused_both_ways(epoch, e1, s1, e2, s2):
    if (e2, s2) >= (e1, s1):
        (e1, s1), (e2, s2) = (e2, s2), (e1, s1)
    if (e2, s2) == (e1, s1):
        return
    bad = {"seq": 0, "t": None, "kind": "gap", "dropped": 1, "first_epoch": e1, "first_seq": s1,
           "last_epoch": e2, "last_seq": s2}
    try:
        encode_pack("n1", epoch, [bad])
    except SenMLError as e:
        assert "before its start" in str(e)
    else:
        raise AssertionError("encoded a gap ending before it starts")
    good = dict(bad, first_epoch=e2, first_seq=s2, last_epoch=e1, last_seq=s1)
    obj = cbor2.loads(encode_pack("n1", epoch, [good]))
    obj[0].update({"first_epoch": e1, "first_seq": s1, "last_epoch": e2, "last_seq": s2})
    try:
        decode_pack(obj)
    except SenMLError as e:
        assert "before its start" in str(e)
    else:
        raise AssertionError("decoded a gap ending before it starts")


label_pool = st.sampled_from([-7, -6, -3, -2, -1, 0, 1, 2, 3, 6, 9, "bseq", "bepoch", "bkind",
                              "flag_", "first_seq", "last_seq", "first_epoch", "last_epoch", "n", "bn",
                              "x_", "note"])
junk = st.recursive(
    st.one_of(scalars, st.floats(), st.sampled_from(
        ["co2", "ppm", "Cel", "dropped", "count", "count.x", "status", "gap", "spike",
         "sensor_failed", "urn:dev:org:1-a:", 0, T_MIN, 1714557600])),
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(label_pool, kids,
                                                                       max_size=6)),
    max_leaves=6)


def decode_only_senml_errors(obj):
    try:
        decode_pack(obj)
    except SenMLError:
        pass


@SETTINGS
@given(st.lists(st.dictionaries(label_pool, junk, max_size=7), max_size=3))
def test_decode_pack_fed_structured_junk_raises_only_senmlerror(obj):
    decode_only_senml_errors(obj)


@SETTINGS
@given(record_lists(), st.data())
def test_decode_pack_fed_damaged_packs_raises_only_senmlerror(records, data):
    obj = cbor2.loads(encode_pack("n1", 1, records))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        rec = obj[data.draw(st.integers(min_value=0, max_value=len(obj) - 1))]
        label = data.draw(label_pool)
        if label in rec and data.draw(st.booleans()):
            del rec[label]
        else:
            rec[label] = data.draw(junk)
    decode_only_senml_errors(obj)


@SETTINGS
@given(st.binary(max_size=80))
def test_decode_pack_fed_whatever_cbor2_decodes_raises_only_senmlerror(data):
    try:
        obj = cbor2.loads(data)
    except Exception:                       # cbor2's own business, not ours
        return
    decode_only_senml_errors(obj)


def test_nan_and_infinity_are_not_senml_values():
    for bad in (math.nan, math.inf, -math.inf):
        try:
            encode_pack("n1", 1, [{"seq": 1, "t": None, "values": [["co2_ppm", bad, "ok"]]}])
        except SenMLError as e:
            assert "finite" in str(e)
        else:
            raise AssertionError("encoded a non-finite value %r" % bad)
