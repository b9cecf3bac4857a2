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
def gap_fields(draw, epoch):
    """A gap's range, ordered by (epoch, seq): mostly within the batch's epoch (epochs left
    out or given), else within another epoch, or across epochs (then last_seq is anything)."""
    how = draw(st.sampled_from(("none", "batch", "near", "across", "across", "far", "first only")))
    if how in ("none", "batch"):
        e1 = e2 = epoch
    elif how == "near":
        e1 = e2 = min(U32, max(0, epoch + draw(st.integers(-70, 70))))
    elif how == "across":
        e1 = max(0, epoch - draw(st.integers(1, 10 ** 5)))
        e2 = min(U32, e1 + draw(st.integers(1, 10 ** 4)))
    elif how == "far":
        e1 = draw(st.integers(0, U32))
        e2 = draw(st.integers(e1, U32))
    else:
        e1, e2 = draw(st.integers(0, epoch)), epoch
    first = draw(st.integers(0, U32))
    out = {"first_seq": first, "last_seq": draw(st.integers(first, U32) if e1 == e2 else
                                               st.integers(0, U32))}
    if how not in ("none", "first only"):
        out.update(first_epoch=e1, last_epoch=e2)
    elif how == "first only":
        out["first_epoch"] = e1
    return out


@st.composite
def batches(draw, epoch=5):
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
            rec.update(kind="gap", dropped=draw(st.integers(0, U32)))
            rec.update(draw(gap_fields(epoch)))
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


@st.composite
def epoch_batches(draw):
    epoch = draw(st.integers(0, U32))
    return epoch, draw(batches(epoch))


def expected(rec, epoch):
    """``rec`` as the decoder gives it back: values at the documented resolution, a gap's
    missing epochs the batch's."""
    out = {"seq": rec["seq"], "t": rec["t"]}
    if rec.get("kind") == "gap":
        out.update(rec)
        out.setdefault("first_epoch", epoch)
        out.setdefault("last_epoch", epoch)
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
@given(epoch_batches(), st.one_of(st.sampled_from((51, 115, 222, 242)), st.integers(1, 255)))
def test_round_trip_within_resolution_and_limit(batch, max_bytes):
    epoch, records = batch
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
    assert got == [expected(r, epoch) for r in records[:n]]
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


@settings(max_examples=200, deadline=None)
@given(st.integers(0, U32).flatmap(lambda e: st.tuples(st.just(e), gap_fields(e))))
def test_gap_epochs_cost_nothing_in_the_batch_epoch_and_little_near_it(args):
    epoch, fields = args
    rec = dict(fields, seq=0, t=None, kind="gap", dropped=1)
    payload, n = pack([rec], 242, epoch)
    assert unpack(payload) == (epoch, [expected(rec, epoch)])
    bare = {k: v for k, v in rec.items() if k not in ("first_epoch", "last_epoch")}
    e1, e2 = rec.get("first_epoch", epoch), rec.get("last_epoch", epoch)
    if e1 == e2 == epoch:
        assert payload == pack([bare], 242, epoch)[0]       # the format without epochs
    elif e1 == e2 and -64 <= e1 - epoch <= 63:
        # two bytes: zigzag(first_epoch - epoch), span 0; the seqs as without epochs
        assert len(payload) == len(pack([bare], 242, epoch)[0]) + 2


@settings(max_examples=200, deadline=None)
@given(st.integers(0, U32), st.integers(0, U32), st.integers(0, U32), st.integers(0, U32),
       st.integers(0, U32))
def test_a_gap_ending_before_it_starts_is_refused(epoch, e1, s1, e2, s2):
    if (e2, s2) > (e1, s1):
        (e1, s1), (e2, s2) = (e2, s2), (e1, s1)
    assume((e2, s2) != (e1, s1))
    rec = {"seq": 0, "t": None, "kind": "gap", "dropped": 1, "first_epoch": e1, "first_seq": s1,
           "last_epoch": e2, "last_seq": s2}
    try:
        pack([rec], 242, epoch)
    except ValueError as e:
        assert "is before" in str(e)
    else:
        raise AssertionError("packed a gap that ends before it starts")
