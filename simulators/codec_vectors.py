"""Test vectors for the ChirpStack/TTS payload codec (``protocol/js/civicedge_codec.js``).

Every vector is a ``decodeUplink`` input and what the Python side says about it: packs made
by ``protocol.lorapack.pack`` and malformed payloads, each decoded by the reference decoder
``protocol.lorapack_decode.unpack`` and converted to the codec's JSON shape
(``codec_data``; docs/protocol-lorawan.md, "The payload codec"). The JavaScript codec must
give exactly that ``data`` for a valid pack, and an error containing the Python
``PackError`` message for a malformed one.

The packs come from what nodes really send: a few hours to days of readings per profile
(``simulators.daysim``: the real drivers reading the simulated sensors), flagged by
``protocol.quality.QualityChecker`` with the profile's own rules (``hardware/profiles``),
with the profile's status records, injected faults (a failed read, a spike, a stuck
sensor, an out-of-range value), records taken before the clock was set, gaps within and
across boot epochs, and edge values; cut into uplinks at each data rate's payload limit.

``python -m simulators.codec_vectors [out.json]`` writes them (e.g. to try the codec in
ChirpStack's or TTS's test panel). CPython only.
"""

import json
import random
import sys
import time

from civicedge.hardware_render import load_profile
from drivers.no2b43f import ppb_to_ugm3
from firmware.app.links.lorawan import fit_status
from protocol import airtime, lorapack, quantities, quality
from protocol.lorapack import PackError, pack
from protocol.lorapack_decode import unpack
from simulators.daysim import run_day

FPORT = 2                 # link.lorawan.port's default: the FPort packs come on
CLOCK_AHEAD_S = 300       # the codec warns about a record time this far after recvTime
T0 = 1767225600           # 2026-01-01T00:00:00Z
U32 = 0xFFFFFFFF
EPOCH_S = lorapack.EPOCH_S
PROFILES = ("classroom-co2", "legionella-outlet", "bin-level", "street-no2")  # daysim.PROFILES
LIMITS = tuple(sorted({airtime.max_app_payload(dr) for dr in range(6)}))  # 51, 115, 222 B


# ---- the codec's JSON shape ----------------------------------------------------------------

def iso_time(t):
    """``t`` (seconds since 1970, UTC) as ``2026-01-01T00:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _value(q, v, flag):
    unit = quantities.lookup(q)[3]
    out = {"quantity": q, "flag": flag}
    if v is not None:
        out["value"] = v
    if unit is not None:
        out["unit"] = unit
    return out


def codec_data(boot_epoch, records):
    """``unpack``'s ``(boot_epoch, records)`` as the codec's ``data``: keys absent, never
    null (no time: no ``t``/``time``; a failed read: no ``value``; text: no ``unit``)."""
    out = []
    for rec in records:
        kind = rec.get("kind", "reading")
        o = {"seq": rec["seq"], "kind": kind}
        if rec["t"] is not None:
            o["t"] = rec["t"]
            o["time"] = iso_time(rec["t"])
        if kind == "gap":
            for k in ("dropped", "first_epoch", "first_seq", "last_epoch", "last_seq"):
                o[k] = rec[k]
        else:
            o["values"] = [_value(q, v, f) for q, v, f in rec["values"]]
            if kind == "status":
                o["counters"] = dict(rec["counters"])
        out.append(o)
    return {"version": lorapack.VERSION, "boot_epoch": boot_epoch, "records": out}


def clock_warnings(data, recv_time):
    """The codec's warning for the first record time-stamped more than ``CLOCK_AHEAD_S``
    after ``recv_time`` (seconds), if any."""
    if recv_time is None:
        return []
    for rec in data["records"]:
        if "t" in rec and rec["t"] - int(recv_time) > CLOCK_AHEAD_S:
            return ["record seq %d is time-stamped %d s after the uplink was received: "
                    "the node's clock is ahead" % (rec["seq"], rec["t"] - int(recv_time))]
    return []


def expect(payload, recv_time=None):
    """What the codec must say about ``payload``: ``{"data", "warnings"}``, or ``{"error"}``
    with the Python decoder's ``PackError`` message."""
    try:
        epoch, records = unpack(bytes(payload))
    except PackError as e:
        return {"error": str(e)}
    data = codec_data(epoch, records)
    return {"data": data, "warnings": clock_warnings(data, recv_time)}


def vector(name, payload, fport=FPORT, recv_time=None):
    """One vector: ``{"name", "input": {"bytes"[, "fPort"][, "recvTime"]}, "expect"}``.
    ``recv_time`` (seconds) goes in as an ISO 8601 string; the runner makes it a Date."""
    inp = {"bytes": list(payload)}
    if fport is not None:
        inp["fPort"] = fport
    if recv_time is not None:
        inp["recvTime"] = iso_time(recv_time)
    return {"name": name, "input": inp, "expect": expect(payload, recv_time)}


# ---- real-looking records --------------------------------------------------------------------

def node_records(profile, hours, seed=3, t0=T0, seq0=0, unsynced=0, faults=None):
    """A node's log for ``hours`` of ``profile``: readings from ``simulators.daysim``,
    flagged with the profile's quality rules, and a status record every
    ``status_every_n_cycles``. ``unsynced``: that many first cycles have no time (the clock
    not yet set). ``faults``: ``{(cycle, quantity): value}`` replaces a reading (None = the
    read failed)."""
    prof = load_profile(profile)
    every = prof["profile"]["status_every_n_cycles"]
    checker = quality.QualityChecker(prof.get("quality", {}))
    battery = prof["power"]["battery_monitor"]
    cycles = {}
    for s in run_day(profile, seed=seed, duration_s=3600 * hours):
        cycles.setdefault(s.t_s, []).append((s.quantity, s.reading))
    faults = faults or {}
    records, seq = [], seq0
    for cycle, t_s in enumerate(sorted(cycles)):
        t = None if cycle < unsynced else t0 + int(t_s)
        values = []
        for q, v in cycles[t_s]:
            v = faults.get((cycle, q), v)
            values.append([q, v, checker.check(q, v)])
        if profile == "street-no2":
            ppb = values[0][1]
            values.append(["no2_ugm3", None if ppb is None else ppb_to_ugm3(ppb), values[0][2]])
        records.append({"seq": seq, "t": t, "values": values})
        seq += 1
        if cycle % every == every - 1:
            volts = round(3.3 - cycle * 0.0004, 3)
            status = [["battery_v", volts, checker.check("battery_v", volts)]] if battery else []
            status += [["boot_reason", "deepsleep" if battery else "power_on", "ok"],
                       ["uptime_s", int(t_s), "ok"], ["rssi_dbm", -97 - cycle % 7, "ok"]]
            records.append({"seq": seq, "t": t, "kind": "status", "values": status,
                            "counters": {"boots": 1 + cycle // every, "cycles": cycle + 1,
                                         "crc_errors": cycle // 50, "sensor_failures": 0,
                                         "uplinks": cycle // 10, "airtime_ms": 1200 * cycle}})
            seq += 1
    return records


def uplinks(records, max_bytes, boot_epoch):
    """``records`` cut into packs of at most ``max_bytes``, as the node's LoRaWAN link sends
    them: a status record cut to fit alone with 4 bytes to spare (its ``fit_status``)."""
    records = [fit_status(r, max_bytes - 4, boot_epoch) if r.get("kind") == "status" else r
               for r in records]
    out, i = [], 0
    while i < len(records):
        payload, n = pack(records[i:], max_bytes, boot_epoch)
        out.append(payload)
        i += n
    return out


# Per profile: hours of readings, and faults at (cycle, quantity) covering every flag.
_RUNS = {
    "classroom-co2": (6, {(20, "co2_ppm"): None, (40, "co2_ppm"): 3900, (60, "rh_percent"): 101.5,
                          (80, "temperature_c"): None, (81, "temperature_c"): None}),
    "legionella-outlet": (12, {(30, "temperature_c"): 130.25, (31, "temperature_c"): None}),
    "bin-level": (48, {(10, "distance_cm"): 5.0, (11, "distance_cm"): None}),
    "street-no2": (3, {(30 + i, "no2_ppb"): 41.7 for i in range(12)}),  # a stuck electrode
}


def profile_vectors():
    out = []
    for k, profile in enumerate(PROFILES):
        hours, faults = _RUNS[profile]
        epoch = 100 + k
        records = node_records(profile, hours, seed=3 + k, seq0=7, unsynced=5, faults=faults)
        for limit in LIMITS:
            for i, payload in enumerate(uplinks(records, limit, epoch)):
                out.append(vector("%s %dB uplink %d" % (profile, limit, i), payload))
    return out


# ---- hand-made packs: every kind, flag and edge ---------------------------------------------

def _r(seq, t, *values, **extra):
    rec = {"seq": seq, "t": t, "values": [list(v) for v in values]}
    rec.update(extra)
    return rec


# docs/protocol-lorawan.md "Example" (tests/unit/test_lorapack.py GOLDEN)
GOLDEN_RECORDS = [
    _r(400, T0, ("co2_ppm", 612, "ok"), ("temperature_c", 21.5, "ok"), ("rh_percent", 41.2, "ok")),
    _r(401, T0 + 120, ("co2_ppm", 618, "ok"), ("temperature_c", 21.5078125, "ok"), ("rh_percent", 41.3, "ok")),
    _r(402, T0 + 240, ("co2_ppm", 625, "ok"), ("temperature_c", 21.5078125, "ok"), ("rh_percent", 41.3, "ok")),
    _r(403, T0 + 360, ("co2_ppm", 1900, "spike"), ("temperature_c", 21.515625, "ok"), ("rh_percent", 41.4, "ok")),
    _r(404, T0 + 481, ("co2_ppm", 640, "ok"), ("temperature_c", 21.5, "ok"), ("rh_percent", 41.4, "ok")),
]
GOLDEN_GAP = [  # docs/protocol-lorawan.md, "Gap records"
    {"seq": 0, "t": T0, "kind": "gap", "dropped": 120, "first_epoch": 3, "first_seq": 0,
     "last_epoch": 62, "last_seq": 1},
    _r(1, T0, ("distance_cm", 61, "ok"), ("fill_ratio", 0.75, "ok")),
]
MIXED = [  # tests/unit/test_lorapack.py: status, a failed read, a gap, records without time
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
_BIG = 2 ** 31 - 1


def edge_batches():
    """``(name, records, max_bytes, boot_epoch)`` of hand-made batches."""
    pipes = [_r(7 + i, T0 + 300 * i, ("temperature_c", 55.25 - i / 128, "ok"),
                ("temperature_c", 14.5 + i / 128, "ok")) for i in range(6)]
    flags = [_r(i, T0 + 60 * i, ("co2_ppm", 800 + i, f), ("rh_percent", 40.0, "ok"))
             for i, f in enumerate(quality.FLAGS)]
    yield "golden example", GOLDEN_RECORDS, 51, 12
    yield "golden gap across epochs", GOLDEN_GAP, 51, 190
    yield "two pipe sensors, hot and cold", pipes, 51, 9
    yield "every flag on co2", flags, 222, 3
    yield "every flag as a None value", [_r(i, T0, ("co2_ppm", None, f)) for i, f in
                                         enumerate(quality.FLAGS)], 222, 3
    yield "status, gaps, unsynced", MIXED, 222, 4000000000
    yield "gap in the epoch before", [{"seq": 5, "t": None, "kind": "gap", "dropped": 120,
                                       "first_epoch": 41, "first_seq": 380, "last_epoch": 41,
                                       "last_seq": 499}], 51, 42
    yield "gap in the batch epoch", [{"seq": 5, "t": None, "kind": "gap", "dropped": 120,
                                      "first_seq": 380, "last_seq": 499}], 51, 42
    yield "gap at the uint32 limits", [{"seq": U32, "t": U32, "kind": "gap", "dropped": U32,
                                        "first_epoch": 0, "first_seq": U32, "last_epoch": U32,
                                        "last_seq": 0}], 51, 2 ** 31
    yield "extreme values", [
        _r(0, 0, ("co2_ppm", _BIG - 1, "out_of_range"), ("temperature_c", -_BIG / 128, "ok"),
           ("fill_ratio", 0.0, "ok"), ("no2_ppb", -5.3, "ok")),
        _r(1, U32, ("co2_ppm", -_BIG, "out_of_range"), ("temperature_c", (_BIG - 1) / 128, "ok"),
           ("fill_ratio", 1.0, "ok"), ("no2_ppb", 0.05, "ok")),
        _r(2, EPOCH_S, ("co2_ppm", 0, "ok"), ("temperature_c", -40.0, "ok"),
           ("fill_ratio", 0.0005, "ok"), ("no2_ppb", -0.05, "ok")),
    ], 242, U32
    yield "time goes back, jitters, jumps", [
        _r(1, T0 + 1000, ("battery_v", 3.3, "ok")), _r(2, T0 + 940, ("battery_v", 3.29, "ok")),
        _r(3, T0 + 1061, ("battery_v", 3.29, "ok")), _r(1000, T0 + 10 ** 8, ("battery_v", 3.28, "ok")),
        _r(1001, None, ("battery_v", 3.28, "ok")), _r(1002, EPOCH_S + 5, ("battery_v", 3.27, "ok")),
    ], 242, 0
    yield "text edges and odd counter names", [
        {"seq": 1, "t": T0, "kind": "status", "values": [["boot_reason", "", "ok"],
                                                         ["boot_reason", "~" * 64, "ok"],
                                                         ["boot_reason", None, "sensor_failed"]],
         "counters": {"__proto__": 1, "constructor": -2, "hasOwnProperty": _BIG, "toString": -_BIG,
                      " ": 0, "x" * 32: 5}},
        {"seq": 2, "t": T0, "kind": "status", "values": [], "counters": {}},
    ], 242, 1
    yield "schemas change mid-batch", [
        _r(1, T0, ("co2_ppm", 500, "ok")), _r(2, T0 + 60, ("co2_ppm", 501, "ok"), ("rh_percent", 40.1, "ok")),
        _r(3, T0 + 120, ("co2_ppm", 502, "ok")), _r(4, T0 + 180, ("co2_ppm", None, "sensor_failed")),
        _r(5, T0 + 240, ("co2_ppm", 503, "ok")), _r(6, T0 + 300),
        _r(7, T0 + 360, ("uptime_s", 3, "ok"), ("rssi_dbm", -120, "ok"), ("no2_ugm3", 99.9, "stuck")),
    ], 242, 77
    yield "32 values in a record", [_r(1, T0, *[("rssi_dbm", -i, "ok") for i in range(32)])], 242, 1
    yield "255 empty readings (runs of 128 and 127)", [_r(i, T0 + 60 * i) for i in range(300)], 242, 1
    yield "one reading", [_r(0, None, ("distance_cm", 765, "ok"))], 51, 0


def edge_vectors():
    out = []
    for name, records, limit, epoch in edge_batches():
        payload, n = pack(records, limit, epoch)
        out.append(vector(name, payload))
    payload = pack(GOLDEN_RECORDS, 51, 12)[0]
    out.append(vector("golden, received on time", payload, recv_time=T0 + 490))
    out.append(vector("golden, the node's clock 10 min ahead", payload, recv_time=T0 - 600))
    out.append(vector("golden, no FPort given", payload, fport=None))
    return out


# ---- malformed -------------------------------------------------------------------------------

_BAD = [  # (name, hex): one fault each, made by hand from the format's rules
    ("empty", ""),
    ("version 0", "00 00 00 00 01 80"),
    ("version 2", "02 00 00 00 01 80"),
    ("version 255", "ff"),
    ("count 0", "01 00 00 00 00"),
    ("6-byte varint in the header", "01 80 80 80 80 80 00 00 00 01 80"),
    ("boot epoch above uint32", "01 80 80 80 80 10 00 00 01 80"),
    ("interval above uint32", "01 00 00 ff ff ff ff 1f 01 80"),
    ("record kind 3", "01 00 00 00 01 60"),
    ("unknown quantity code 99", "01 00 00 00 01 10 01 63 00"),
    ("unknown quantity code 0", "01 00 00 00 01 10 01 00 00"),
    ("quantity code 2^35-1", "01 00 00 00 01 10 01 ff ff ff ff 7f 00"),
    ("time delta without a time", "01 00 00 00 01 01 00"),
    ("run passes the count", "01 00 00 00 01 81"),
    ("padding nibble", "01 00 00 00 01 18 01 01 01 00"),
    ("flag code 6", "01 00 00 00 01 18 01 01 60 00"),
    ("flag code 7", "01 00 00 00 01 18 01 01 70 00"),
    ("6-byte varint in a value", "01 00 00 00 01 10 01 01 ff ff ff ff ff 00"),
    ("33 values", "01 00 00 00 01 10 21" + " 01" * 33),
    ("non-printable text", "01 00 00 00 01 30 01 09 02 41 ff 00"),
    ("text of 65", "01 00 00 00 01 30 01 09 41" + " 41" * 65 + " 00"),
    ("text past the end", "01 00 00 00 01 30 01 09 05 41 41"),
    ("counter name of 33", "01 00 00 00 01 30 00 01 21" + " 61" * 33 + " 00"),
    ("gap with flags", "01 00 00 00 01 4b 01 00 00"),
    ("gap first epoch below 0", "01 00 00 00 01 53 01 01 00 00 00"),
    ("gap first epoch 2^32", "01 ff ff ff ff 0f 00 00 01 53 01 02 00 00 00"),
    ("gap last epoch above uint32", "01 00 00 00 01 53 01 00 ff ff ff ff 1f 00 00"),
    ("gap last seq 2^32", "01 00 00 00 01 43 01 ff ff ff ff 0f 01"),
    ("gap dropped 2^32", "01 00 00 00 01 43 80 80 80 80 10 00 00"),
    ("gap truncated", "01 00 00 00 01 53 01 00 01 00"),
    ("seq step past uint32", "01 00 fe ff ff ff 0f 00 01 07 05"),
    ("time before 1970", "01 00 00 00 01 12 ff ff ff ff 7f 00"),
    ("predicted time past uint32", "01 00 00 ff ff ff ff 0f 02 02 80 80 80 80 10 80"),
    ("value drifts out of range", "01 00 00 00 02 10 01 01 ff ff ff ff 7f 80 ff ff ff ff 7f"),
    ("trailing byte", "01 00 00 00 01 00 ff"),
]


def malformed_vectors(real=None, seed=6):
    """Hand-made faults; every prefix of three packs; bit flips and inserted bytes in
    ``real`` packs (default: the profiles' uplinks); random bytes. Each with what ``unpack``
    says (a damaged pack may still be a valid one)."""
    out = [vector("bad: " + name, bytes.fromhex(h)) for name, h in _BAD]
    golden = pack(GOLDEN_RECORDS, 51, 12)[0]
    out.append(vector("bad: golden + trailing zero", golden + b"\x00"))
    mixed = pack(MIXED, 222, 4000000000)[0]
    gap = pack(GOLDEN_GAP, 51, 190)[0]
    for name, payload in (("golden", golden), ("status+gap", mixed), ("gap", gap)):
        for i in range(len(payload)):
            out.append(vector("bad: %s cut to %d bytes" % (name, i), payload[:i]))
    rng = random.Random(seed)
    if real is None:
        real = [bytes(v["input"]["bytes"]) for v in profile_vectors()]
    real = real[::7]
    for i in range(60):
        p = bytearray(rng.choice(real))
        j = rng.randrange(len(p))
        if i % 3 == 0:
            p[j] ^= 1 << rng.randrange(8)
        elif i % 3 == 1:
            p[j] = rng.randrange(256)
        else:
            p.insert(j, rng.randrange(256))
        out.append(vector("damaged %d" % i, bytes(p)))
    for i in range(40):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        out.append(vector("random %d" % i, junk if i % 2 else b"\x01" + junk))
    return out


def all_vectors():
    """Every vector: the profiles' uplinks, the hand-made packs, the malformed."""
    profiles = profile_vectors()
    real = [bytes(v["input"]["bytes"]) for v in profiles]
    return profiles + edge_vectors() + malformed_vectors(real)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    text = json.dumps({"vectors": all_vectors()}, indent=1)
    if argv:
        with open(argv[0], "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
