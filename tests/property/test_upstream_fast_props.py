"""gateway.upstream_fast writes exactly the bytes of the general path, or declines.

For arbitrary records (mostly plausible, some not): whenever the fast path gives a pack, the
general path (``protocol.senml.pack_records`` behind ``gateway.upstream``) gives the same
bytes, in SenML JSON and CBOR; whenever the general path refuses a pack, the fast path
declines. A plain reading as the outbox stores it (its JSON text, ``Outbox.take(raw=True)``)
gives the same bytes as the decoded record. And ``encode_rows`` over raw rows gives the same
messages as over decoded rows, whatever the stored text is.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import upstream as U
from gateway import upstream_fast as F
from gateway.outbox_policy import OutboxRow, _encode
from protocol import quality
from protocol.quantities import NUM, QUANTITIES
from protocol.senml import SenMLError

T_MIN = 1 << 28
PEN = U.DEFAULT_PEN
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

good_numbers = st.one_of(st.integers(-(2 ** 63), 2 ** 63), st.floats(allow_nan=False,
                                                                      allow_infinity=False))
odd_values = st.one_of(st.integers(-(2 ** 70), 2 ** 70), st.floats(), st.booleans(), st.none(),
                       st.text(max_size=3), st.lists(st.integers(), max_size=1))


@st.composite
def values(draw, plain):
    """[[quantity, value, flag]...]: with ``plain``, number quantities only, never failed."""
    rows = [q for q in QUANTITIES if q[4] == NUM] if plain else list(QUANTITIES)
    chosen = draw(st.lists(st.sampled_from(rows), min_size=1, max_size=6,
                           unique_by=(lambda r: r[1]) if plain or draw(st.booleans()) else None))
    flags = [f for f in quality.FLAGS if not plain or f != quality.SENSOR_FAILED]
    out = []
    for _code, name, _senml, _unit, kind in chosen:
        flag = draw(st.sampled_from(flags))
        if not plain and draw(st.integers(0, 9)) == 0:
            out.append([draw(st.sampled_from([name, "bogus", 7])), draw(odd_values),
                        draw(st.sampled_from(flags + ["weird"]))])
        elif flag == quality.SENSOR_FAILED:
            out.append([name, None, flag])
        elif kind == NUM:
            out.append([name, draw(good_numbers), flag])
        else:
            out.append([name, draw(st.text(max_size=8)), flag])
    return out


@st.composite
def record(draw, seq, plain=False):
    rec = {"seq": seq, "t": draw(st.integers(T_MIN, 2 ** 40)), "values": draw(values(plain))}
    if plain:
        return rec
    kind = draw(st.sampled_from(["none", "reading", "status", "other"]))
    if kind == "reading":
        rec["kind"] = "reading"
    elif kind == "status":
        rec["kind"] = "status"
        rec["counters"] = draw(st.dictionaries(
            st.sampled_from(["resets", "crc_errors", "9x", "Bad", ""]),
            st.one_of(st.integers(0, 2 ** 40), st.integers(-2, -1), st.booleans()), max_size=3))
    elif kind == "other":
        rec[draw(st.sampled_from(["kind", "extra", "alarms", "rx_t"]))] = draw(
            st.sampled_from(["gap", "event", 1, [], 1767225600.5]))
    if draw(st.integers(0, 9)) == 0:
        rec["t"] = draw(st.sampled_from([None, T_MIN - 1, 1767225600.0, True, "1767225600"]))
    return rec


def general(device, epoch, records, encoding):
    try:
        return U._encode_pack(device, epoch, [U.senml_record(r) for r in records], encoding, PEN)
    except SenMLError:
        return None


def rows_of(records, device="class-3", epoch=7):
    return [OutboxRow(i + 1, device, epoch, r["seq"], "routine", 0, None, r)
            for i, r in enumerate(records)]


packs = st.tuples(st.integers(1, 5), st.integers(0, 2 ** 32 - 6),
                  st.sampled_from([0, 7, 2 ** 32 - 1, 2 ** 32, -1]),
                  st.sampled_from(["class-3", "b", "x" * 32, "Bad", "a" * 33]))


@SETTINGS
@given(data=st.data(), pack=packs, encoding=st.sampled_from(U.ENCODINGS))
def test_the_fast_path_writes_the_general_paths_bytes_or_declines(data, pack, encoding):
    n, start, epoch, device = pack
    records = [data.draw(record(start + i)) for i in range(n)]
    fast = (F.pack_cbor if encoding == U.SENML_CBOR else F.pack_json)(device, epoch, records, PEN)
    slow = general(device, epoch, records, encoding)
    if fast is not None:
        assert fast == slow
    if slow is None:
        assert fast is None


@SETTINGS
@given(data=st.data(), n=st.integers(1, 6), start=st.integers(0, 2 ** 32 - 7))
def test_a_stored_plain_reading_gives_the_bytes_of_its_record(data, n, start):
    records = [data.draw(record(start + i, plain=True)) for i in range(n)]
    texts = [_encode(r) for r in records]  # exactly what Outbox.put_many stores
    from_text = F.pack_json("class-3", 7, texts, PEN)
    # it declines only numbers repr writes with an exponent (below 1e-4 or from 1e16)
    assert from_text is not None or any(isinstance(v, float) and "e" in repr(v)
                                        for r in records for _q, v, _f in r["values"])
    if from_text is not None:
        assert from_text == F.pack_json("class-3", 7, records, PEN)
        assert from_text == general("class-3", 7, records, U.SENML_JSON)


@SETTINGS
@given(data=st.data(), n=st.integers(1, 8), encoding=st.sampled_from(U.ENCODINGS),
       per_publish=st.integers(1, 4))
def test_raw_rows_give_the_messages_of_decoded_rows(data, n, encoding, per_publish):
    records = [data.draw(st.one_of(record(i, plain=True), record(i))) for i in range(n)]
    texts = []
    for r in records:
        try:
            texts.append(_encode(r))
        except (ValueError, TypeError):  # not storable (NaN): the outbox refuses it anyway
            texts.append(json.dumps(r, allow_nan=True))
    decoded = rows_of([json.loads(t) for t in texts])
    raw = [row._replace(record=t) for row, t in zip(decoded, texts)]
    want = U.encode_rows(decoded, "site", "gw-1", encoding, per_publish)
    assert U.encode_rows(raw, "site", "gw-1", encoding, per_publish) == want


def test_stored_text_that_is_not_json_is_reported_not_raised():
    row = OutboxRow(5, "class-3", 7, 1, "routine", 0, None, '{"seq":1,"t":')
    msgs = U.encode_rows([row], "site", "gw-1")
    assert [(m.kind, m.reason, m.row_ids) for m in msgs] == [(U.GAPS, U.UNENCODABLE, (5,))]
    assert "not JSON" in json.loads(msgs[0].payload)["detail"]
