"""The LoRaWAN pack and the airtime functions under the MicroPython unix port (at the
default ESP32-sized heap, records streamed from a file as a node streams its log): the same
records give the same bytes as CPython, decode back, and the REFERENCE airtimes hold."""

import json

from protocol import airtime
from protocol.lorapack import pack
from simulators.daysim import run_day
from simulators.mpyrun import run_micropython
from tests.unit.test_airtime import VECTORS
from tests.unit.test_lorapack import GOLDEN, GOLDEN_RECORDS, T0

LIMITS = (51, 115, 222, 242)

_SCRIPT = r"""
import gc
import json
from protocol import airtime, lorapack, lorapack_decode


def undo(x):
    # floats travel as exact ["f", numerator, log2(denominator)]
    if isinstance(x, list):
        if len(x) == 3 and x[0] == "f":
            return x[1] / (1 << x[2])
        return [undo(v) for v in x]
    if isinstance(x, dict):
        return dict((k, undo(x[k])) for k in x)
    return x


def stream(path, skip):
    # the records of one batch file, one per line, read lazily as a node reads its log
    f = open(path)
    i = 0
    for line in f:
        if i >= skip:
            yield undo(json.loads(line))
        i += 1
    f.close()


for i in range(len(JOB["sizes"])):
    path = JOB["dir"] + "/b%d.jsonl" % i
    if i == 0:
        print("G", lorapack.pack(stream(path, 0), 51, 12)[0].hex())
    for max_bytes in JOB["limits"]:
        at = 0
        while at < JOB["sizes"][i]:
            payload, n = lorapack.pack(stream(path, at), max_bytes, 9)
            epoch, back = lorapack_decode.unpack(payload)
            again, m = lorapack.pack(back, 1000, 9)
            ok = epoch == 9 and len(back) == n and m == n and lorapack_decode.unpack(again)[1] == back
            print("P", i, max_bytes, at, n, payload.hex(), "ok" if ok else "BAD")
            at += n
            back = again = None
            gc.collect()
for dr, n_app in JOB["airtime"]:
    sf, bw, _ = airtime.DR_EU868[dr]
    toa = airtime.time_on_air_ms(airtime.app_payload_to_phy(n_app), sf, bw)
    print("A", dr, n_app, int(toa * 10 + 0.5))
print("E", int(airtime.time_on_air_ms(13, 7) * 10 + 0.5), int(airtime.time_on_air_ms(13, 12) * 10 + 0.5))
dc = airtime.DutyCycle()
toa = airtime.dr_airtime_ms(0, 51)
for k in range(12):
    dc.record("M", toa, k * 280000)
now = 12 * 280000
w = dc.wait_ms("M", toa, now)
print("W", w, dc.can_send("M", toa, now + w - 1), dc.can_send("M", toa, now + w))
print("DONE")
"""


def _exact(x):
    if isinstance(x, float):
        num, den = x.as_integer_ratio()
        return ["f", num, den.bit_length() - 1]
    if isinstance(x, list):
        return [_exact(v) for v in x]
    if isinstance(x, dict):
        return {k: _exact(v) for k, v in x.items()}
    return x


def _batches():
    by_t = {}
    for s in run_day("classroom-co2", seed=5, duration_s=6 * 3600):
        by_t.setdefault(s.t_s, []).append([s.quantity, s.reading, "ok"])
    classroom = [{"seq": 10 + i, "t": T0 + int(t), "values": by_t[t] + [["battery_v", 3.3, "ok"]]}
                 for i, t in enumerate(sorted(by_t))][:80]
    pipe = [{"seq": i, "t": T0 + 300 * i, "values": [["temperature_c", s.reading, "ok"]]}
            for i, s in enumerate(run_day("legionella-outlet", seed=5, duration_s=6 * 3600))]
    mixed = [
        {"seq": 1, "t": None, "kind": "status", "values": [["battery_v", 3.61, "ok"],
                                                          ["boot_reason", "deepsleep", "ok"]],
         "counters": {"wakes": 300, "i2c_errors": 2}},
        {"seq": 2, "t": None, "values": [["temperature_c", None, "sensor_failed"]]},
        {"seq": 4, "t": T0, "kind": "gap", "dropped": 3, "first_seq": 0, "last_seq": 2},
        {"seq": 5, "t": T0 + 61, "values": [["no2_ppb", -3.46, "time_unsynced"], ["fill_ratio", 0.8234, "ok"]]},
        {"seq": 6, "t": T0 + 62, "kind": "gap", "dropped": 300, "first_epoch": 2, "first_seq": 17,
         "last_epoch": 8, "last_seq": 3},
        {"seq": 7, "t": T0 + 62, "kind": "gap", "dropped": 1, "first_epoch": 4000000000,
         "first_seq": 5, "last_epoch": 4000000000, "last_seq": 5},
        {"seq": 8, "t": None, "kind": "gap", "dropped": 2, "first_epoch": 9, "first_seq": 0,
         "last_epoch": 9, "last_seq": 1},
    ]
    return [GOLDEN_RECORDS, classroom, pipe, mixed]


def test_pack_bytes_and_airtime_match_cpython_under_micropython(tmp_path):
    batches = _batches()
    for i, b in enumerate(batches):
        (tmp_path / ("b%d.jsonl" % i)).write_text("".join(json.dumps(_exact(r)) + "\n" for r in b))
    job = {"dir": str(tmp_path), "sizes": [len(b) for b in batches], "limits": LIMITS,
           "airtime": [[dr, n] for dr, n, _ in VECTORS]}
    script = tmp_path / "run.py"
    script.write_text("JOB = %s\n" % json.dumps(job) + _SCRIPT)
    rc, out, err = run_micropython([str(script)], sim=False, timeout_s=60)
    assert rc == 0, err
    lines = out.split("\n")
    assert "DONE" in lines

    want = []
    for i, recs in enumerate(batches):
        for max_bytes in LIMITS:
            at = 0
            while at < len(recs):
                payload, n = pack(recs[at:], max_bytes, 9)
                want.append("P %d %d %d %d %s ok" % (i, max_bytes, at, n, payload.hex()))
                at += n
    got = [ln for ln in lines if ln.startswith("P ")]
    assert got == want
    assert len(got) > 20
    assert "G " + GOLDEN.hex() in lines

    for dr, n_app, expected in VECTORS:
        assert "A %d %d %d" % (dr, n_app, round(expected * 10)) in lines
    assert "E 463 11551" in lines
    dc = airtime.DutyCycle()  # the same duty-cycle scenario in CPython
    for k in range(12):
        dc.record("M", airtime.dr_airtime_ms(0, 51), k * 280000)
    assert dc.wait_ms("M", airtime.dr_airtime_ms(0, 51), 12 * 280000) == 240000
    assert "W 240000 False True" in lines
