"""Hypothesis: the LoRaWAN upstream envelope and downlink commands.

- Arbitrary bytes into ``decode_uplink`` / ``parse_downlink`` raise only ``EnvelopeError``.
- Arbitrary outbox rows (good, odd and malformed records, alarm events, several devices and
  epochs) always make progress, every uplink stays within its room, and each record arrives
  exactly as ``protocol.lorapack`` alone would carry it (or as its one-record stand-in gap).
- Arbitrary downlink bytes delivered by the modem emulator are applied or rejected and
  counted (``downlinks == downlinks_applied + bad_downlinks``); the forwarder keeps going.
"""

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.forward import lorawan_decode as dl
from gateway.forward import lorawan_envelope as env
from gateway.forward.lorawan_decode import decode_uplink
from gateway.outbox_policy import OutboxRow
from protocol import lorapack, quantities
from protocol.lorapack_decode import unpack

T = 1767571200
DEVICES = ["sch1-rm12-co2", "sch1-kit-hot1", "ward3-bin-0042", "gw-1"]
RULES = ["co2_high_20min", "hot_outlet_below_50", "bin_full"]
NUMERIC = sorted(q for q, (code, d) in lorapack.QUANTITIES.items() if d is not None)
FLAGS = sorted(quantities.FLAG_CODES)

section = st.sampled_from([b"", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05", b"\x06"])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=242),
                 st.builds(lambda s, b: b"\x01" + s + b, section, st.binary(max_size=120))))
def test_arbitrary_uplink_bytes_raise_only_envelope_error(payload):
    try:
        out = decode_uplink(payload, devices=DEVICES, rules=RULES)
    except env.EnvelopeError:
        return
    assert set(out) == {"records", "gaps", "status", "directory"}


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 255), st.binary(max_size=40))
def test_arbitrary_downlink_bytes_parse_or_raise_envelope_error(port, payload):
    try:
        commands = dl.parse_downlink(port, payload)
    except env.EnvelopeError:
        return
    assert port == env.DOWNLINK_PORT and commands
    assert dl.encode_commands(commands) == payload  # nothing ignored, nothing invented


value = st.one_of(st.integers(-10 ** 6, 10 ** 6), st.floats(-10 ** 5, 10 ** 5, allow_nan=False),
                  st.floats(), st.none(), st.text(max_size=3))
item = st.one_of(st.tuples(st.sampled_from(NUMERIC), value, st.sampled_from(FLAGS)).map(list),
                 st.tuples(st.just("boot_reason"), st.text(string.printable[:94], max_size=70),
                           st.sampled_from(FLAGS)).map(list),
                 st.tuples(st.text(max_size=4), value, st.text(max_size=4)).map(list))
when = st.one_of(st.none(), st.integers(T - 10 ** 6, T + 10 ** 6), st.floats(T, T + 10 ** 5),
                 st.sampled_from([float("nan"), -5, 2 ** 33, "soon"]))
event = st.fixed_dictionaries({
    "kind": st.sampled_from(["raised", "cleared", "report", "odd"]), "rule": st.sampled_from(RULES),
    "device_id": st.sampled_from(DEVICES), "quantity": st.sampled_from(NUMERIC + ["x"]), "value": value,
    "since": when, "at": when, "severity": st.sampled_from(["info", "warning", "critical", "?"])})


@st.composite
def record(draw, seq):
    kind = draw(st.sampled_from(["reading", "reading", "reading", "status", "gap", "event", "odd"]))
    rec = {"seq": seq, "t": draw(when), "kind": kind}
    if draw(st.booleans()):
        rec["rx_t"] = draw(when)
    if kind in ("reading", "status", "odd"):
        rec["values"] = draw(st.lists(item, max_size=4))
    if kind == "status":
        rec["counters"] = draw(st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=40),
                                               st.integers(-2 ** 33, 2 ** 33), max_size=8))
    if kind == "gap":
        first = draw(st.integers(0, 1000))
        rec.update(dropped=draw(st.integers(0, 10 ** 6)), first_seq=first,
                   last_seq=first + draw(st.integers(-3, 500)))
    if kind == "event" or draw(st.integers(0, 4)) == 0:
        rec["alarms"] = draw(st.lists(st.one_of(event, st.just("junk")), max_size=3))
    return rec


@st.composite
def rows(draw):
    out, used = [], set()
    for i in range(draw(st.integers(1, 24))):
        dev = draw(st.sampled_from(DEVICES))
        epoch = draw(st.sampled_from([0, 1, 190, 2 ** 32 - 1]))
        seq = draw(st.integers(0, 2 ** 32 - 1) | st.integers(0, 60))
        if (dev, epoch, seq) in used:
            continue
        used.add((dev, epoch, seq))
        lane = draw(st.sampled_from(["routine", "routine", "alarm"]))
        out.append(OutboxRow(i + 1, dev, epoch, seq, lane, 0, None, draw(record(seq))))
    return out


def _alone(p):
    """What the pack alone carries of a prepared row's record (the oracle)."""
    epoch, (rec,) = unpack(lorapack.pack([p.record], 4096, p.row.boot_epoch)[0])
    return rec


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows(), st.sampled_from([env.MIN_ROOM, 51, 115, 222]), st.sampled_from([None, 1, 7]))
def test_arbitrary_rows_all_arrive_as_the_pack_carries_them(rs, room, cap):
    prepared = {r.row_id: env.prepare(r) for r in rs}
    left = dict(prepared)
    arrived = {}
    while left:
        b = env.UplinkBuilder(room)
        used = b.add_rows(list(left.values()), cap)
        assert used, "no progress"  # every row can always go, if only as its stand-in
        assert len(b.payload()) <= room and (cap is None or len(used) <= cap)
        assert b.records == len(used) and not set(used) - set(left)
        out = decode_uplink(b.payload(), devices=DEVICES, rules=RULES)
        keys = [(d, e, r["seq"]) for d, e, r in out["records"]]
        assert sorted(keys) == sorted((left[i].row.device_id, left[i].row.boot_epoch, left[i].row.seq)
                                      for i in used)
        for d, e, r in out["records"]:
            arrived[(d, e, r["seq"])] = r
        for i in used:
            del left[i]
    for p in prepared.values():
        got = dict(arrived[(p.row.device_id, p.row.boot_epoch, p.row.seq)])
        alarms = got.pop("alarms", [])
        if p.record is None:
            assert got["kind"] == "event" and got["t"] == p.t
        elif got.get("kind") == "status" and got != _alone(p):  # trimmed to fit a small room
            assert set(got["counters"].items()) < set(_alone(p)["counters"].items())
        elif got == env.stand_in_gap(p.row, p.t) | {"first_epoch": p.row.boot_epoch,
                                                    "last_epoch": p.row.boot_epoch} and got != _alone(p):
            # in its place: the pack cannot carry it, or it alone overflows an empty uplink
            assert p.unpackable or len(lorapack.pack([p.record], 4096, p.row.boot_epoch)[0]) + 7 > room
        else:
            assert got == _alone(p)
        assert len(alarms) <= len(p.events)
        for a in alarms:
            assert a["rule"] in RULES and a["device_id"] in DEVICES


def test_arbitrary_downlinks_through_the_modem_are_applied_or_counted(tmp_path):
    from tests.sim.test_forward_lorawan import Site, readings

    s = Site(tmp_path, dr=5)
    seq = [0]
    try:
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.integers(1, 223), st.binary(max_size=24))
        def one(port, payload):
            before = s.fwd.counters()
            s.emu.queue_downlink(port, payload)
            s.put(readings("hot", 1, start_seq=seq[0], alarm_at=(seq[0],)))  # alarms go even when paused
            seq[0] += 1
            s.drain()
            c = s.fwd.counters()
            assert c["downlinks"] == before["downlinks"] + 1
            assert c["downlinks_applied"] + c["bad_downlinks"] == c["downlinks"]
            try:
                dl.parse_downlink(port, payload)
                assert c["downlinks_applied"] == before["downlinks_applied"] + 1
            except env.EnvelopeError:
                assert c["bad_downlinks"] == before["bad_downlinks"] + 1
            assert s.outbox.stats().rows["alarm"] == 0
        one()
        assert s.fwd.counters()["modem_errors"] == 0 and s.fwd.counters()["internal_errors"] == 0
    finally:
        s.close()
