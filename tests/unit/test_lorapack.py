"""The LoRaWAN pack: the documented golden example byte for byte, resolutions, what is
refused, fitting each data rate's payload limit, and density against Cayenne LPP on the
readings the real drivers produce from the simulated sensors."""

import pytest

from protocol import airtime, lorapack
from protocol.lorapack import PackError, pack
from protocol.lorapack_decode import unpack
from simulators.daysim import run_day

T0 = 1767225600  # 2026-01-01T00:00:00Z


def _r(seq, t, *values):
    return {"seq": seq, "t": t, "values": [list(v) for v in values]}


# docs/protocol-lorawan.md, "Example": a classroom node, boot epoch 12, 2-minute interval.
GOLDEN_RECORDS = [
    _r(400, T0, ("co2_ppm", 612, "ok"), ("temperature_c", 21.5, "ok"), ("rh_percent", 41.2, "ok")),
    _r(401, T0 + 120, ("co2_ppm", 618, "ok"), ("temperature_c", 21.5078125, "ok"), ("rh_percent", 41.3, "ok")),
    _r(402, T0 + 240, ("co2_ppm", 625, "ok"), ("temperature_c", 21.5078125, "ok"), ("rh_percent", 41.3, "ok")),
    _r(403, T0 + 360, ("co2_ppm", 1900, "spike"), ("temperature_c", 21.515625, "ok"), ("rh_percent", 41.4, "ok")),
    _r(404, T0 + 481, ("co2_ppm", 640, "ok"), ("temperature_c", 21.5, "ok"), ("rh_percent", 41.4, "ok")),
]
GOLDEN = bytes.fromhex(
    "01 0c 90 03 78 05"                 # version 1, epoch 12, first seq 400, interval 120 s, 5 records
    "12 80 e2 9d 3c 03 01 02 03"         # schema + absolute time; 3 quantities: co2, temp, rh
    "c8 09 80 2b b8 06"                 # 612 ppm, 2752/128 °C, 412/10 %
    "81 0c 02 02 0e 00 00"              # run of 2 regular readings: +6 +1 +1, +7 0 0
    "08 20 00 f6 13 02 02"              # flags (co2 spike), +1275 +1 +1
    "09 02 00 00 d7 13 03 00"           # 1 s late, flags back to ok, -1260 -2 0
)


def test_golden_example_byte_exact():
    payload, n = pack(GOLDEN_RECORDS, 51, 12)
    assert n == 5
    assert payload == GOLDEN
    assert unpack(GOLDEN) == (12, GOLDEN_RECORDS)


def test_status_and_gap_records_round_trip():
    recs = [
        _r(7, T0, ("temperature_c", 55.25, "ok"), ("temperature_c", 14.5, "ok")),
        {"seq": 8, "t": T0, "kind": "status", "values": [["battery_v", 3.61, "ok"],
                                                         ["boot_reason", "deepsleep", "ok"],
                                                         ["uptime_s", 86400, "ok"]],
         "counters": {"i2c_errors": 2, "wakes": 300}},
        _r(9, T0 + 300, ("temperature_c", None, "sensor_failed"), ("temperature_c", 14.5, "ok")),
        {"seq": 11, "t": None, "kind": "gap", "dropped": 3, "first_seq": 0, "last_seq": 2},
        _r(12, None, ("temperature_c", 54.0078125, "time_unsynced"), ("temperature_c", 14.5, "time_unsynced")),
        _r(13, None, ("temperature_c", 54.0, "time_unsynced"), ("temperature_c", 14.5, "time_unsynced")),
    ]
    payload, n = pack(recs, 222, 4000000000)
    assert n == len(recs)
    # a gap without epochs is in the batch's epoch, and comes back saying so
    recs[3].update(first_epoch=4000000000, last_epoch=4000000000)
    assert unpack(payload) == (4000000000, recs)
    assert pack(recs, 222, 4000000000) == (payload, n)  # the same bytes when spelled out


# docs/protocol-lorawan.md, "Gap records": a deep-sleeping bin sensor (a new boot epoch at
# every wake) in the wake of epoch 190 reports 120 records dropped from (3, 0) to (62, 1).
GAP_RECORDS = [
    {"seq": 0, "t": T0, "kind": "gap", "dropped": 120, "first_epoch": 3, "first_seq": 0,
     "last_epoch": 62, "last_seq": 1},
    _r(1, T0, ("distance_cm", 61, "ok"), ("fill_ratio", 0.75, "ok")),
]
GAP_GOLDEN = bytes.fromhex(
    "01 be 01 00 00 02"        # version 1, epoch 190, first seq 0, interval 0, 2 records
    "52 80 e2 9d 3c"           # gap, epochs follow, time absolute
    "78"                       # 120 dropped
    "f5 02 3b"                 # first epoch 190 + unzigzag(373) = 3; last epoch 3 + 59 = 62
    "00 01"                    # first_seq 0; last_seq 1 (epochs differ: not a difference)
    "10 02 06 07 7a dc 0b"     # a reading: schema dist, fill; 61 cm, 750/1000
)


def test_gap_spanning_epochs_golden_bytes():
    payload, n = pack(GAP_RECORDS, 51, 190)
    assert (payload, n) == (GAP_GOLDEN, 2)
    assert unpack(GAP_GOLDEN) == (190, GAP_RECORDS)


def _gap(**fields):
    rec = {"seq": 500, "t": None, "kind": "gap", "dropped": 120, "first_seq": 380, "last_seq": 499}
    rec.update(fields)
    return rec


def test_a_gap_within_the_batch_epoch_costs_what_it_did_before_epochs():
    # control 0x40 (gap, time as predicted: none), 120, 380, 499 - 380: the format before gap epochs
    old = bytes.fromhex("01 be 01 f4 03 00 01" "40 78 fc 02 77")
    assert pack([_gap()], 51, 190)[0] == old
    assert pack([_gap(first_epoch=190, last_epoch=190)], 51, 190)[0] == old
    assert unpack(old)[1] == [_gap(first_epoch=190, last_epoch=190)]
    # one earlier epoch costs two bytes: zigzag(-1) and a span of 0
    other = pack([_gap(first_epoch=189, last_epoch=189)], 51, 190)[0]
    assert other == bytes.fromhex("01 be 01 f4 03 00 01" "50 78 01 00 fc 02 77")
    assert unpack(other)[1] == [_gap(first_epoch=189, last_epoch=189)]


@pytest.mark.parametrize("fields", [
    dict(first_epoch=7, first_seq=4000000000, last_epoch=8, last_seq=0),  # last_seq below first
    dict(first_epoch=0, last_epoch=0xFFFFFFFF, first_seq=0xFFFFFFFF, last_seq=0xFFFFFFFF),
    dict(first_epoch=0xFFFFFFFF, last_epoch=0xFFFFFFFF, first_seq=0, last_seq=0xFFFFFFFF),
    dict(first_epoch=190, last_epoch=191, last_seq=3),   # spans into the batch's next epoch
    dict(first_epoch=0),                                 # only one given: the other is 190
    dict(last_epoch=4000000000, last_seq=0),
    dict(dropped=0, first_seq=0, last_seq=0),
])
def test_gap_ranges_round_trip(fields):
    rec = _gap(**fields)
    payload, n = pack([rec], 51, 190)
    want = dict(rec)
    want.setdefault("first_epoch", 190)
    want.setdefault("last_epoch", 190)
    assert n == 1 and unpack(payload) == (190, [want])


@pytest.mark.parametrize("quantity,value,decoded", [
    ("co2_ppm", 812, 812),
    ("temperature_c", 21.0078125, 21.0078125),   # TMP117 LSB: exact
    ("temperature_c", -40.3, -40.296875),        # SCD4x float: nearest 1/128
    ("rh_percent", 45.34, 45.3),
    ("no2_ppb", -3.46, -3.5),
    ("no2_ugm3", 41.25, 41.3),
    ("distance_cm", 123, 123),
    ("fill_ratio", 0.8234, 0.823),
    ("battery_v", 3.714, 3.71),
    ("rssi_dbm", -117, -117),
    ("boot_reason", "power_on", "power_on"),
])
def test_resolutions(quantity, value, decoded):
    payload, _ = pack([_r(0, None, (quantity, value, "ok"))], 51, 0)
    got = unpack(payload)[1][0]["values"][0][1]
    assert got == decoded and type(got) is type(decoded)


@pytest.mark.parametrize("record,match", [
    (_r(0, None, ("co2_ppm", float("nan"), "ok")), "co2_ppm"),
    (_r(0, None, ("temperature_c", float("inf"), "ok")), "temperature_c"),
    (_r(0, None, ("co2_ppm", 3e9, "ok")), "not representable"),
    (_r(0, None, ("co2_ppm", "800", "ok")), "co2_ppm"),
    (_r(0, None, ("lux", 3, "ok")), "lux"),
    (_r(0, None, ("co2_ppm", 800, "fine")), "flag"),
    (_r(0, None, ("boot_reason", "d\u00e9marrage", "ok")), "ASCII"),
    (_r(0, 1.5, ("co2_ppm", 800, "ok")), "t"),
    (_r(-1, None), "seq"),
    ({"seq": 0, "t": None, "kind": "alarm"}, "kind"),
    ({"seq": 0, "t": None, "kind": "gap", "dropped": 1, "first_seq": 5, "last_seq": 4},
     r"\(last_epoch, last_seq\) \(0, 4\) is before \(first_epoch, first_seq\) \(0, 5\)"),
    (_gap(first_epoch=3, last_epoch=2, first_seq=0, last_seq=9), "is before"),
    (_gap(first_epoch=1), "is before"),        # last_epoch missing: the batch's epoch 0
    (_gap(first_epoch=-1), "first_epoch"),
    (_gap(last_epoch=2 ** 32), "last_epoch"),
    (_gap(first_epoch=None), "first_epoch"),
    (_gap(last_epoch=True), "last_epoch"),
    (_gap(first_seq=None), "first_seq"),
    ({"seq": 0, "t": None, "kind": "status", "values": [], "counters": {"x": 1.5}}, "counter"),
])
def test_unrepresentable_records_are_refused_never_corrupted(record, match):
    with pytest.raises(ValueError, match=match):
        pack([record], 242, 0)


def test_pack_argument_errors():
    with pytest.raises(ValueError, match="empty"):
        pack([], 51, 0)
    with pytest.raises(ValueError, match="boot_epoch"):
        pack(GOLDEN_RECORDS, 51, -1)
    with pytest.raises(ValueError, match="max_bytes"):
        pack(GOLDEN_RECORDS, 0, 0)
    with pytest.raises(ValueError, match="more than max_bytes"):
        pack(GOLDEN_RECORDS, 17, 12)  # the first record alone needs 6 + 15 bytes
    # seq must increase within a batch: a step back (another epoch's log?) ends the batch
    assert pack([GOLDEN_RECORDS[1], GOLDEN_RECORDS[0]], 51, 12)[1] == 1
    assert pack([GOLDEN_RECORDS[1], GOLDEN_RECORDS[1]], 51, 12)[1] == 1


def test_a_bad_record_ends_the_batch_and_is_reported_when_first():
    bad = _r(403, T0 + 360, ("co2_ppm", float("nan"), "ok"))
    recs = GOLDEN_RECORDS[:3] + [bad] + GOLDEN_RECORDS[4:]
    payload, n = pack(recs, 222, 12)
    assert n == 3
    assert unpack(payload)[1] == GOLDEN_RECORDS[:3]
    with pytest.raises(ValueError, match="co2_ppm"):
        pack(recs[3:], 222, 12)


def test_long_regular_runs_split_at_128():
    recs = [_r(i, T0 + 300 * i, ("temperature_c", 60.0, "ok")) for i in range(200)]
    payload, n = pack(recs, 242, 1)
    assert n == 200
    # header 1+1+1+2+1, first record 1+4+2+2, then 0xFF + 128 values, 0xC6 + 71 values
    assert len(payload) == 6 + 9 + 1 + 128 + 1 + 71
    assert payload.count(0xFF) == 1 and payload[15] == 0xFF and payload[15 + 129] == 0x80 | 70
    assert unpack(payload) == (1, recs)


# ---- fitting the data rates ----------------------------------------------------------------

def _daysim_records(profile, hours, extra=(), seq0=1000):
    by_t = {}
    for s in run_day(profile, seed=3, duration_s=3600 * hours):
        by_t.setdefault(s.t_s, []).append([s.quantity, s.reading, "ok"])
    return [{"seq": seq0 + i, "t": T0 + int(t), "values": by_t[t] + [list(e) for e in extra]}
            for i, t in enumerate(sorted(by_t))]


@pytest.fixture(scope="module")
def classroom4():
    # classroom-co2 (SCD41 CO2, T, RH through the real driver) plus battery volts: 4 values.
    return _daysim_records("classroom-co2", 24, extra=[("battery_v", 3.3, "ok")])


LIMITS = sorted({airtime.max_app_payload(d, repeater_compatible=r) for d in range(6) for r in (True, False)}
                | {32})


@pytest.mark.parametrize("max_bytes", LIMITS)
def test_fits_every_data_rate_limit_with_as_many_readings_as_fit(classroom4, max_bytes):
    i = 0
    while i < len(classroom4):
        payload, n = pack(classroom4[i:], max_bytes, 77)
        assert 1 <= n and len(payload) <= max_bytes
        assert unpack(payload)[1] == _quantised(classroom4[i:i + n])
        if i + n < len(classroom4) and n < lorapack.MAX_RECORDS:
            # one more would not have fitted
            interval = lorapack._interval(classroom4[i:i + lorapack.LOOKAHEAD])
            more, m = pack(classroom4[i:i + n + 1], 10 ** 6, 77, interval)
            assert m == n + 1 and len(more) > max_bytes
        i += n


def _quantised(recs):
    out = []
    for rec in recs:
        values = []
        for q, v, f in rec["values"]:
            d = lorapack.RESOLUTION[q]
            w = lorapack.scaled(q, v)
            values.append([q, w if d == 1 else w / d, f])
        out.append(dict(rec, values=values))
    return out


# ---- density against Cayenne LPP -------------------------------------------------------------

# Cayenne LPP (myDevices; the extended types of the ElectronicCats/TTN CayenneLPP libraries):
# per value 1 channel byte + 1 type byte + data. Type: (code, data bytes, multiplier, signed).
_LPP = {
    "co2_ppm": (125, 2, 1, False),        # concentration, 1 ppm unsigned
    "temperature_c": (103, 2, 10, True),  # temperature, 0.1 °C signed
    "rh_percent": (104, 1, 2, False),     # relative humidity, 0.5 % unsigned
    "battery_v": (116, 2, 100, False),    # voltage, 0.01 V unsigned
    "no2_ppb": (2, 2, 100, True),         # analog input, 0.01 signed (no NO2 type)
    "distance_cm": (130, 4, 10, False),   # distance, 0.001 m unsigned
    "fill_ratio": (120, 1, 100, False),   # percentage, 1 % unsigned
}
_LPP_UNIXTIME = 133  # 4 bytes unsigned


def lpp_encode(values, channel=1, t=None):
    """Cayenne LPP bytes for ``[[quantity, value, flag], ...]`` (+ unixtime when ``t``)."""
    out = bytearray()
    for i, (q, v, _) in enumerate(values):
        code, size, mult, signed = _LPP[q]
        out += bytes((channel + i, code)) + int(round(v * mult)).to_bytes(size, "big", signed=signed)
    if t is not None:
        out += bytes((channel + len(values), _LPP_UNIXTIME)) + t.to_bytes(4, "big")
    return bytes(out)


def test_lpp_helper_matches_a_published_example():
    # OndrejKnebl/CayenneLPP README: channel 1, temperature 25.5 °C -> 01 67 00 FF.
    assert lpp_encode([["temperature_c", 25.5, "ok"]]) == bytes.fromhex("016700ff")


def _per_uplink(recs, max_bytes):
    counts, sizes = [], 0
    i = 0
    while i < len(recs):
        payload, n = pack(recs[i:], max_bytes, 77)
        counts.append(n)
        sizes += len(payload)
        i += n
    return counts, sizes


def test_density_goals_for_a_four_value_reading(classroom4):
    lpp_timed = len(lpp_encode(classroom4[0]["values"], t=classroom4[0]["t"]))
    lpp_bare = len(lpp_encode(classroom4[0]["values"]))
    assert (lpp_timed, lpp_bare) == (21, 15)
    for max_bytes in (51, 222):
        counts, total = _per_uplink(classroom4, max_bytes)
        full = counts[:-1]  # the last uplink takes what is left
        # Goal 1: at most 16 bytes per 4-value reading on average in a batch.
        assert total / len(classroom4) <= 16
        # Goal 2: at least 3x Cayenne LPP's readings per uplink, LPP carrying the same
        # information (values + time, at coarser resolution); a bare LPP reading without
        # time cannot be batched, so that is the fair comparison.
        assert min(full) >= 3 * (max_bytes // lpp_timed)


@pytest.mark.parametrize("payload,match", [
    (b"", "truncated"),
    (GOLDEN[:-1], "truncated"),
    (GOLDEN + b"\x00", "trailing"),
    (b"\x02" + GOLDEN[1:], "version"),
    (bytes.fromhex("01 00 00 00 00"), "header"),                 # count 0
    (bytes.fromhex("01 00 00 00 01 60"), "kind"),                # kind 3
    (bytes.fromhex("01 00 00 00 01 10 01 63 00"), "code 99"),    # unknown quantity code
    (bytes.fromhex("01 00 00 00 01 01 00"), "time delta"),       # delta with no time before
    (bytes.fromhex("01 00 00 00 01 81"), "run"),                 # run of 2 > count 1
    (bytes.fromhex("01 00 00 00 01 18 01 01 01 00"), "padding"),  # 1 value, flag byte 01
    (bytes.fromhex("01 00 00 00 01 18 01 01 60 00"), "flag"),    # flag code 6
    (bytes.fromhex("01 00 ff ff ff ff ff 00 01 80"), "varint"),  # 6-byte varint
    (bytes.fromhex("01 00 ff ff ff ff 7f 00 01 80"), "header"),  # first_seq > uint32
    (bytes.fromhex("01 00 00 00 01 10 21") + bytes(33), "values"),  # 33 values
    (bytes.fromhex("01 00 00 00 01 30 01 09 02 41 ff 00"), "text"),  # non-printable text
    (bytes.fromhex("01 00 00 00 01 4b 01 00 00"), "gap record with flags"),
    (bytes.fromhex("01 00 00 00 01 53 01 01 00 00 00"), "gap field"),  # first epoch 0 - 1
    (bytes.fromhex("01 ff ff ff ff 0f 00 00 01 53 01 02 00 00 00"), "gap field"),  # 2**32
    (bytes.fromhex("01 00 00 00 01 53 01 00 ff ff ff ff 1f 00 00"), "gap field"),  # last epoch
    (bytes.fromhex("01 00 00 00 01 43 01 ff ff ff ff 0f 01"), "gap field"),  # last_seq 2**32
    (bytes.fromhex("01 00 00 00 01 53 01 00 01 00 ff ff ff ff 1f"), "gap field"),
    (bytes.fromhex("01 00 00 00 01 53 01 00 01 00"), "truncated"),
])
def test_unpack_reports_malformed_input_as_packerror(payload, match):
    with pytest.raises(PackError, match=match):
        unpack(payload)
    assert issubclass(PackError, ValueError)


def test_pack_streams_any_iterable_and_takes_a_given_interval():
    assert pack(iter(GOLDEN_RECORDS), 51, 12) == (GOLDEN, 5)
    assert pack((r for r in GOLDEN_RECORDS), 51, 12) == (GOLDEN, 5)
    payload, n = pack(GOLDEN_RECORDS, 51, 12, interval_s=60)  # a wrong guess costs bytes only
    assert n == 5 and len(payload) > len(GOLDEN)
    assert unpack(payload) == (12, GOLDEN_RECORDS)
    with pytest.raises(ValueError, match="interval_s"):
        pack(GOLDEN_RECORDS, 51, 12, interval_s=-1)


def test_a_gap_from_the_real_flash_log_packs_and_unpacks_unchanged(tmp_path):
    from tests.unit.test_senml import real_log_gap
    epoch, records = real_log_gap(tmp_path)
    (gap,) = [r for r in records if r.get("kind") == "gap"]
    assert gap["first_epoch"] < gap["last_epoch"] == epoch
    payload, n = pack(records, 242, epoch)
    assert n == len(records)
    assert unpack(payload) == (epoch, records)
    payload, n = pack([gap], 51, epoch)
    assert unpack(payload) == (epoch, [gap])
