"""Hypothesis properties of the gateway's core pipeline and alarm engine: arbitrary bytes,
damaged frames, authentic frames around hostile CBOR, and arbitrary LoRaWAN payloads never
raise and are always counted; valid records come through unchanged; arbitrary reading
streams never crash the alarm engine, and its state survives JSON and rollback exactly."""

import json
import pathlib
import tomllib

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.alarms import AlarmEngine, rules_from_profile
from gateway.pipeline import Ingest
from protocol import frame, lorapack, quality, senml

KEY = bytes(range(32))
DEV = "node-1"
EUI = "0123456789abcdef"
PROFILES = pathlib.Path(__file__).resolve().parents[2] / "hardware" / "profiles"
T0 = 1771236000
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def all_rules():
    rules = []
    for path in sorted(PROFILES.glob("*.toml")):
        rules += rules_from_profile(tomllib.loads(path.read_text()), {"outlet": "hot"})
    return rules


RULES = all_rules()


def new_ingest(**kw):
    return Ingest({DEV: KEY}, dev_euis={EUI: DEV}, **kw)


def check_counted(ing, res, before):
    """One input: ``received`` +1, and either accepted or exactly one reason counted."""
    assert ing.counters["received"] == before + 1
    if res.accepted:
        assert res.reason is None and res.counters.get("accepted") == 1
    else:
        assert res.reason and res.counters.get(res.reason) == 1
        assert res.ack is None and res.records == [] and res.events == []
        assert res.detail


# -- arbitrary bytes ------------------------------------------------------------------------
@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_into_ingest_frame_never_raise_and_are_counted(junk):
    ing = new_ingest()
    res = ing.ingest_frame(junk, "fuzz")
    check_counted(ing, res, 0)
    assert not res.accepted


@FAST
@given(st.data())
def test_damaged_frames_never_raise_and_only_the_original_is_accepted(data):
    n = data.draw(st.integers(1, 4))
    epoch = data.draw(st.integers(0, 9))
    recs = [{"seq": i, "t": T0 + 60 * i, "values": [["co2_ppm", 500 + i, "ok"]]}
            for i in range(n)]
    good = frame.encode_data(KEY, DEV, epoch, 0, n, senml.encode_pack(DEV, epoch, recs))
    buf = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(("flip", "cut", "insert", "set")))
        i = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del buf[i:i + data.draw(st.integers(1, 8))]
        elif op == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif buf:
            buf[i] = data.draw(st.integers(0, 255))
    ing = new_ingest()
    res = ing.ingest_frame(bytes(buf), "fuzz")
    check_counted(ing, res, 0)
    assert res.accepted == (bytes(buf) == good)


# -- authentic frames, hostile content --------------------------------------------------------
cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 64, 2 ** 64 - 1) | st.floats()
    | st.text(max_size=12) | st.binary(max_size=12),
    lambda kids: (st.lists(kids, max_size=4)
                  | st.dictionaries(st.integers(-12, 12) | st.text(max_size=8), kids, max_size=4)
                  | st.builds(cbor2.CBORTag, st.integers(0, 300), kids)),
    max_leaves=16)


@FAST
@given(st.binary(max_size=300) | cbor_values.map(cbor2.dumps))
def test_an_authentic_frame_around_any_payload_never_raises(payload):
    ing = new_ingest()
    res = ing.ingest_frame(frame.encode_data(KEY, DEV, 1, 0, 4, payload), "fuzz")
    check_counted(ing, res, 0)
    assert res.accepted or res.reason.startswith("decode_errors.")


@FAST
@given(st.data())
def test_a_valid_pack_with_one_field_replaced_never_raises(data):
    recs = [{"seq": i, "t": T0 + 60 * i, "values": [["co2_ppm", 500 + i, "ok"],
                                                      ["temperature_c", 20.5, "spike"]]}
            for i in range(3)]
    pack = cbor2.loads(senml.encode_pack(DEV, 2, recs))
    rec = data.draw(st.sampled_from(pack))
    key = data.draw(st.sampled_from(sorted(rec, key=str) + ["flag_", "bseq", -1, 99]))
    rec[key] = data.draw(cbor_values)
    ing = new_ingest()
    res = ing.ingest_frame(frame.encode_data(KEY, DEV, 2, 0, 3, cbor2.dumps(pack)), "fuzz")
    check_counted(ing, res, 0)
    for r in res.records:  # whatever got through is well formed
        assert 0 <= r.seq <= 2 and r.lane == "routine"
        assert all(v[2] in quality.FLAGS for v in r.record.get("values", ()))


@FAST
@given(st.binary(max_size=300), st.one_of(st.none(), st.text(max_size=40)),
       st.sampled_from([EUI, EUI.upper(), "ffffffffffffffff", "zz", ""]))
def test_arbitrary_lorawan_payloads_never_raise_and_are_counted(payload, dedup_id, eui):
    ing = new_ingest()
    res = ing.ingest_lorawan(eui, payload, dedup_id)
    check_counted(ing, res, 0)
    assert res.ack is None


# -- valid input comes through unchanged ------------------------------------------------------
flags = st.sampled_from(quality.FLAGS)


@st.composite
def record_lists(draw):
    first = draw(st.integers(0, 2 ** 32 - 40))
    seqs = sorted(draw(st.sets(st.integers(first, first + 30), min_size=1, max_size=8)))
    out = []
    for s in seqs:
        flag = draw(flags)
        value = None if flag == quality.SENSOR_FAILED else draw(
            st.integers(-10 ** 6, 10 ** 6) | st.floats(-1e6, 1e6, allow_nan=False))
        t = draw(st.none() | st.integers(2 ** 28, 2 ** 32))
        out.append({"seq": s, "t": t, "values": [["co2_ppm", value, flag]]})
    return out


@FAST
@given(record_lists(), st.integers(0, 2 ** 32 - 1))
def test_records_of_a_good_frame_come_through_with_their_keys(recs, epoch):
    ing = new_ingest(alarms=AlarmEngine({DEV: RULES}))
    first, last = recs[0]["seq"], recs[-1]["seq"]
    buf = frame.encode_data(KEY, DEV, epoch, first, last - first + 1,
                            senml.encode_pack(DEV, epoch, recs))
    res = ing.ingest_frame(buf, "s")
    assert res.accepted and [r.key for r in res.records] == [(DEV, epoch, r["seq"]) for r in recs]
    for got, sent in zip(res.records, recs):
        assert got.record["t"] == sent["t"]
        q, v, f = sent["values"][0]
        want = quality.TIME_UNSYNCED if sent["t"] is None and f == quality.OK else f
        assert got.record["values"] == [[q, v, want]]
    assert frame.decode_frame(res.ack, {DEV: KEY}.get, expect=frame.TYPE_ACK) == \
        frame.Ack(DEV, epoch, last)
    assert res.events == [e for r in res.records for e in r.events]
    for r in res.records:
        assert (r.lane == "alarm") == any(e.kind in ("raised", "cleared") for e in r.events)
    again = ing.ingest_frame(buf, "s")
    assert again.ack == res.ack and again.counters["duplicates"] == len(recs)


@FAST
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=20),
       st.integers(0, 1000), st.integers(0, 2 ** 20))
def test_lorawan_packs_come_through_with_their_keys(fills, first, epoch):
    recs = [{"seq": first + i, "t": T0 + 1800 * i, "values": [["fill_ratio", f, "ok"]]}
            for i, f in enumerate(fills)]
    payload, n = lorapack.pack(recs, 222, epoch)
    res = new_ingest().ingest_lorawan(EUI, payload, "id")
    assert res.accepted and [r.key for r in res.records] == [(DEV, epoch, first + i)
                                                           for i in range(n)]


# -- the alarm engine on arbitrary streams ----------------------------------------------------
QUANTITIES = sorted({r.quantity for r in RULES})
junk_numbers = (st.floats() | st.integers(-2 ** 70, 2 ** 70) | st.none() | st.text(max_size=3)
                | st.booleans())
times = (st.none() | st.floats() | st.integers(-10, 2 ** 40)
         | st.integers(T0, T0 + 3 * 86400) | st.floats(T0, T0 + 3 * 86400))
plausible = st.builds(lambda t, q, v, f: (t, [[q, v, f]]), st.integers(T0, T0 + 3 * 86400),
                      st.sampled_from(QUANTITIES), st.floats(-100, 3000), flags)
wild = st.builds(lambda t, vals: (t, vals), times, st.lists(
    st.tuples(st.sampled_from(QUANTITIES) | st.text(max_size=4), junk_numbers,
              flags | st.text(max_size=4)).map(list) | junk_numbers, max_size=4))
chaotic = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200), plausible | wild),
                   max_size=60)
SCALE = {"co2_ppm": 3000, "fill_ratio": 1.2, "temperature_c": 70, "no2_ugm3": 600}


@st.composite
def ordered(draw):
    """A node's stream: rising keys and times, values either side of the thresholds."""
    t, seq, out = T0, 0, []
    quantity = draw(st.sampled_from(QUANTITIES))
    for _ in range(draw(st.integers(0, 60))):
        t += draw(st.sampled_from((1, 10, 60, 120, 300, 1800, 3600, 20000)))
        seq += draw(st.integers(1, 2))
        v = draw(st.floats(0, SCALE[quantity]))
        f = draw(st.sampled_from((quality.OK,) * 6 + quality.FLAGS))
        out.append((0, seq, (None if draw(st.integers(0, 9)) == 0 else t, [[quantity, v, f]])))
    return out


streams = ordered() | chaotic


def run(engine, stream, received=T0):
    out = []
    for epoch, seq, (t, values) in stream:
        rec = {"seq": seq, "t": t, "values": values}
        out += [e.to_dict() for e in engine.observe("d", epoch, rec, received_s=received + seq)]
    return out


@FAST
@given(streams)
def test_arbitrary_reading_streams_never_crash_the_alarm_engine(stream):
    eng = AlarmEngine({"d": RULES})
    run(eng, stream)
    eng.tick(T0 + 4 * 86400)
    assert eng.counters["rule_errors"] == 0
    state = eng.state()
    assert json.loads(json.dumps(state)) == state  # no NaN, nothing JSON cannot hold


@FAST
@given(streams, st.integers(0, 60))
def test_state_through_json_mid_stream_gives_the_same_events(stream, cut):
    whole = run(AlarmEngine({"d": RULES}), stream)
    first = AlarmEngine({"d": RULES})
    got = run(first, stream[:cut])
    second = AlarmEngine({"d": RULES}, state=json.loads(json.dumps(first.state())))
    got += run(second, stream[cut:])
    assert got == whole


@FAST
@given(streams, st.integers(0, 60))
def test_a_rolled_back_batch_evaluates_as_if_it_never_happened(stream, cut):
    whole = run(AlarmEngine({"d": RULES}), stream)
    eng = AlarmEngine({"d": RULES})
    got = run(eng, stream[:cut])
    eng.commit()
    run(eng, stream[cut:])
    eng.rollback()
    got += run(eng, stream[cut:])
    assert got == whole


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=4),
                           lambda kids: st.lists(kids, max_size=3)
                           | st.dictionaries(st.text(max_size=3), kids, max_size=3),
                           max_leaves=8)
rule_state = st.dictionaries(st.sampled_from(("_t", "w", "a", "on", "r", "c", "s", "l", "k", "ks",
                                              "pe", "q", "n", "f", "cf", "p", "ye", "yc")),
                             json_values, max_size=6)


@FAST
@given(st.dictionaries(st.sampled_from(sorted({r.id for r in RULES})), rule_state), streams)
def test_a_corrupt_saved_state_never_crashes_the_engine(states, stream):
    eng = AlarmEngine({"d": RULES}, state={"v": 1, "devices": {"d": {"k": None, "r": states}}})
    run(eng, stream)
    eng.tick(T0 + 4 * 86400)
    json.dumps(eng.state())
