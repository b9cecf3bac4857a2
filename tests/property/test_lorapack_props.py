"""Hypothesis properties of the LoRaWAN pack: any batch of valid records round-trips at the
documented resolution within the byte limit, and ``unpack`` meets arbitrary or damaged bytes
with ``PackError`` only."""

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocol import lorapack
from protocol.lorapack import PackError, pack
from protocol.lorapack_decode import unpack
from protocol.quality import FLAGS

NUMERIC = sorted(lorapack.RESOLUTION)
U32 = 0xFFFFFFFF

numbers = st.one_of(st.integers(-10 ** 6, 10 ** 6),
                    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
numeric_value = st.tuples(st.sampled_from(NUMERIC), st.one_of(st.none(), numbers), st.sampled_from(FLAGS))
text_value = st.tuples(st.just("boot_reason"),
                       st.one_of(st.none(), st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                                     max_size=20)),
                       st.sampled_from(FLAGS))


@st.composite
def batches(draw):
    n = draw(st.integers(1, 40))
    seq = draw(st.integers(0, U32 - 50000))
    interval = draw(st.sampled_from((60, 120, 300, 1800)))
    t = draw(st.one_of(st.none(), st.integers(0, U32 - 10 ** 6)))
    schema = draw(st.lists(numeric_value, max_size=4))
    records = []
    for _ in range(n):
        # Mostly what a node produces (seq + 1, on time, same quantities), sometimes not.
        seq += draw(st.sampled_from((1, 1, 1, 1, 2, 1000)))
        how = draw(st.sampled_from(("on time", "on time", "on time", "jitter", "none", "any")))
        if how == "on time" and t is not None:
            t += interval
        elif how == "jitter" and t is not None:
            t += interval + draw(st.integers(-5, 5))
        elif how == "none":
            t = None
        elif how == "any":
            t = draw(st.integers(0, U32 - 10 ** 6))
        kind = draw(st.sampled_from(("reading",) * 6 + ("status", "gap")))
        rec = {"seq": min(seq, U32), "t": t}
        if kind == "gap":
            first = draw(st.integers(0, U32))
            rec.update(kind="gap", dropped=draw(st.integers(0, U32)), first_seq=first,
                       last_seq=draw(st.integers(first, U32)))
        elif kind == "status":
            rec.update(kind="status",
                       values=[list(v) for v in draw(st.lists(st.one_of(numeric_value, text_value), max_size=4))],
                       counters=draw(st.dictionaries(st.text(st.characters(min_codepoint=33, max_codepoint=126),
                                                             min_size=1, max_size=12),
                                                     st.integers(-(2 ** 31 - 1), 2 ** 31 - 1), max_size=4)))
        else:
            if draw(st.integers(0, 9)) == 0:
                schema = draw(st.lists(numeric_value, max_size=4))
            rec["values"] = [[q, draw(st.one_of(st.none(), numbers)) if draw(st.booleans()) else v, f]
                             for q, v, f in schema]
        records.append(rec)
    return records


def expected(rec):
    """``rec`` as the decoder gives it back: values at the documented resolution."""
    out = {"seq": rec["seq"], "t": rec["t"]}
    if rec.get("kind") == "gap":
        out.update(rec)
        return out
    values = []
    for q, v, f in rec["values"]:
        d = lorapack.QUANTITIES[q][1]
        if v is not None and d is not None:
            w = lorapack.scaled(q, v)
            decoded = w if d == 1 else w / d
            assert abs(decoded - v) <= 0.5 / d + 1e-9 * max(1.0, abs(v))  # the stated resolution
            v = decoded
        values.append([q, v, f])
    out["values"] = values
    if rec.get("kind") == "status":
        out["kind"] = "status"
        out["counters"] = dict(rec["counters"])
    return out


@settings(max_examples=100, deadline=None)
@given(batches(), st.integers(0, U32), st.one_of(st.sampled_from((51, 115, 222, 242)), st.integers(1, 255)))
def test_round_trip_within_resolution_and_limit(records, epoch, max_bytes):
    try:
        payload, n = pack(records, max_bytes, epoch)
    except ValueError as e:
        assert "more than max_bytes" in str(e)
        whole, _ = pack(records[:1], 10 ** 6, epoch)
        assert len(whole) > max_bytes
        return
    assert 1 <= n <= len(records) and len(payload) <= max_bytes
    got_epoch, got = unpack(payload)
    assert got_epoch == epoch
    assert got == [expected(r) for r in records[:n]]
    if n < len(records):  # as many as fit: one more would not have (same predicted interval)
        interval = lorapack._interval(records[:lorapack.LOOKAHEAD])
        bigger, m = pack(records[:n + 1], 10 ** 6, epoch, interval)
        assert m == n + 1 and len(bigger) > max_bytes
    # decoding is a fixed point: what came out packs to the same records again
    again, m = pack(got, 10 ** 6, epoch)
    assert m == n and unpack(again) == (epoch, got)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_unpack_of_arbitrary_bytes_raises_only_packerror(data):
    for payload in (data, b"\x01" + data):
        try:
            epoch, records = unpack(payload)
        except PackError:
            continue
        assert 0 <= epoch <= U32 and 1 <= len(records) <= 255


@settings(max_examples=100, deadline=None)
@given(batches(), st.data())
def test_damaged_payloads_raise_only_packerror(records, data):
    payload, _ = pack(records, 242, 5)
    i = data.draw(st.integers(0, len(payload) - 1))
    how = data.draw(st.sampled_from(("flip", "truncate", "insert")))
    if how == "flip":
        damaged = payload[:i] + bytes((payload[i] ^ data.draw(st.integers(1, 255)),)) + payload[i + 1:]
    elif how == "truncate":
        damaged = payload[:i]
    else:
        damaged = payload[:i] + bytes((data.draw(st.integers(0, 255)),)) + payload[i:]
    assume(damaged != payload)
    try:
        unpack(damaged)
    except PackError:
        pass
