"""The ``heap`` benchmark: how much heap the built node firmware needs, on this 64-bit unix
port and as an ESP32 (32-bit) would need it.

1. **Least free heap.** ``board.py --heap-free N`` holds a ballast so the firmware gets
   exactly N bytes at every boot (``docs/simulator-board.md``); a bisection over N (1 KB
   steps) finds the least that completes ``WAKES`` wakes with every reading acknowledged
   over the serial link. The heap's behaviour near its limit is chaotic (where the
   conservative GC finds a stale pointer, where a block lands), so the figure reported is
   the least N from which every heap up to N + ``CONFIRM`` passes, each with two different
   total heap sizes. The baseline is the same search for a trivial firmware that only
   deep-sleeps (what the board's own boot costs), so the ratio is what the application adds.
2. **The 64-bit factor.** This port has 8-byte words and 32-byte GC blocks
   (``MICROPY_BYTES_PER_GC_BLOCK`` = 4 words, ``py/mpconfig.h``); an ESP32 has 4-byte words
   and 16-byte blocks. ``OBJECT_COSTS`` measures with ``gc.mem_alloc()`` what representative
   objects take here, next to what MicroPython's layouts predict for both word sizes
   (``layout_bytes``). Small objects cost exactly twice, byte buffers ~1.25x, loaded
   ``.mpy`` code 1.3-1.6x (bytecode is the same bytes; its pointers double). When
   ``CIVICEDGE_MICROPYTHON32`` names a 32-bit build of the unix port (recipe in
   ``docs/benchmarks.md``), the same objects and the firmware itself are measured on it too;
   otherwise the figures recorded with one (``RECORDED_32BIT``) are shown, marked so.

3. **Per profile.** The same least free heap for each profile's build with its own link's far
   end (the serial gateway stub, or the modem emulator and the LoRaWAN network stub), deep
   sleep, every wake logging and sending (``PROFILE_SETS``); and classroom-co2 on its MQTT
   link as the profile ships it, TLS against a real Mosquitto (``bench_heap_mqtt``; plain
   MQTT on the 32-bit port, which has no ``ssl``).

The ESP32-equivalent free heap for this port is ``ESP32_FREE_HEAP * FACTOR``:
``tests/e2e/nodeharness.py`` runs the firmware's long tests there.
"""

import json
import os
import pathlib
import subprocess
import tempfile

from simulators.bench_heap_mqtt import MQTTSite, mqtt_ok
from simulators.bench_heap_notes import ARTIFACTS, HISTORY, LORAWAN, MQTT, RECIPE
from simulators.mpyrun import REPO, micropython_binary, micropython_env

WAKES = 5
STEP = 1024
CONFIRM = 8 * 1024
LOW, HIGH = 8 * 1024, 400 * 1024
EXTRA_HEAPS = (128 * 1024, 192 * 1024)  # -X heapsize = heap_free + one of these
KEY = bytes(range(16))
ESP32_FREE_HEAP = 100 * 1024  # an ESP32 without PSRAM: MicroPython's free heap (issue 3)
# Live heap of the same firmware after its first boot's cycle (gc.mem_alloc() after a
# collection, minus the board's own) on the 64-bit port and a 32-bit build of the same
# MicroPython source: 112.9 KB and 77.5 KB. The least free heap (point 1) scales by less,
# 1.3-1.4, because part of what it measures is the board's own byte-sized work (reading
# main.py, the simulator's messages). The harness uses the object ratio: a 64-bit heap of
# 100 KB x 1.46 holds the same objects as the ESP32's 100 KB.
FACTOR = 1.46
# Measured once with a 32-bit build of the unix port (see docs/benchmarks.md): object -> bytes
# (2026-11-22), and each profile's least free heap (KB) for WAKES wakes (PROFILE_SETS; the
# firmware with main.py a stub and the composition root in app/main.mpy).
RECORDED_32BIT = {
    "objects": {"small int": 0, "float": 16, "str, 2 chars": 32, "bytes(100)": 128, "bytearray(16)": 32,
                "bytearray(100)": 128, "tuple of 3": 32, "list of 8": 48, "dict, 3 entries": 48,
                "dict, 16 entries": 160, "instance, 3 attributes": 48, "closure + cell": 48, "bound method": 16,
                "protocol.cbor (.mpy)": 3632, "drivers.scd4x (.mpy)": 9376, "drivers.scd4x_commands (.mpy)": 4192},
    # 2026-11-22, after the LoRaWAN link's, the sensor drivers' and the TMP117 part's cuts
    # (bench_heap_notes.LORAWAN); before the link's: 96, 104, 109, 115; before the drivers':
    # bin-level 101, street-no2 107; before the TMP117 part's: 96, 97, 99, 97
    # 2026-11-22 (session 6, the node's frame stack in protocol/*_core.py): classroom-co2 96 -> 91
    # session 7 (board and MQTT changes): 91, 93, 97, 94 and MQTT 100 before (runs differ by a few KB)
    # session 8 (2026-11-23: register reads in one transaction, the link made first, the frame's
    # ack half on demand): 92, 94, 97, 96
    "profiles_kb": {"classroom-co2": 92, "legionella-outlet": 94, "bin-level": 97, "street-no2": 96},
    "mqtt_plain_kb": 97,  # classroom-co2 over plain MQTT (bench_heap_mqtt), 2026-11-23 (103 before session 8's passes)
}
PROFILES = ("classroom-co2", "legionella-outlet", "bin-level", "street-no2")
# Every profile deep-sleeping (a run ends after its wakes) and sending at every wake, so each
# wake goes through the whole send path; street-no2 logs every sample instead of 15-min means.
PROFILE_SETS = {"classroom-co2": [], "legionella-outlet": ["link.lorawan.max_delay_s=0"],
                "bin-level": ["link.lorawan.max_delay_s=0"], "street-no2": ["mean_period_s=0"]}
_LORAWAN_IDS = ["link.lorawan.dev_eui=70b3d57ed005a1c3", "link.lorawan.join_eui=70b3d57ed0000000"]
_APP_KEY = "a0b1c2d3e4f5061728394a5b6c7d8e9f"
_TRUTH = {"co2_ppm": 800, "temperature_c": 21, "rh_percent": 45, "distance_cm": 70.0, "no2_ppb": 42.0}
_ELECTRODE = {"electrode": {"zero_algorithm": 1, "noise_ppb": 0.0}, "we": 0, "ae": 1}
_DEVICES = {"classroom-co2": [{"model": "scd4x", "address": 0x62}],
            "legionella-outlet": [{"model": "tmp117", "address": 0x48}],
            "bin-level": [{"model": "i2cxl", "address": 0x70}, {"model": "tmp117", "address": 0x48}],
            "street-no2": [{"model": "ads1115", "address": 0x48, "inputs": _ELECTRODE},
                           {"model": "tmp117", "address": 0x49}]}

# MicroPython program: each object K times, gc.mem_alloc() before/after (objects kept alive);
# then imports of .mpy modules from the path given as argv[1].
OBJECT_COSTS = r"""
import gc, sys
K = 64
keep = [None] * K
class C:
    def __init__(self, i):
        self.a = i
        self.b = i
        self.c = i
    def m(self):
        return self.a
def mk_closure(i):
    def f():
        return i
    return f
o = C(1)
def d16(i):
    d = {}
    for k in range(16):
        d[k] = i
    return d
CASES = (("small int", lambda i: i + 1000), ("float", lambda i: 1.5 * i + 0.25),
         ("str, 2 chars", lambda i: "s%d" % (i % 10)), ("bytes(100)", lambda i: bytes(100)),
         ("bytearray(16)", lambda i: bytearray(16)), ("bytearray(100)", lambda i: bytearray(100)),
         ("tuple of 3", lambda i: (i, i, i)), ("list of 8", lambda i: [i] * 8),
         ("dict, 3 entries", lambda i: {"a": i, "b": i, "c": i}), ("dict, 16 entries", d16),
         ("instance, 3 attributes", C), ("closure + cell", mk_closure), ("bound method", lambda i: o.m))
for name, fn in CASES:
    for i in range(K):
        keep[i] = None
    gc.collect()
    a = gc.mem_alloc()
    for i in range(K):
        keep[i] = fn(i)
    gc.collect()
    print("OBJ %s|%d" % (name, (gc.mem_alloc() - a) // K))
for i in range(K):
    keep[i] = None
sys.path.insert(0, sys.argv[1])
for name in ("protocol", "protocol.cbor", "drivers", "drivers.errors", "drivers.bus", "drivers.sensirion",
             "drivers.scd4x_commands", "drivers.scd4x"):
    gc.collect()
    a = gc.mem_alloc()
    __import__(name)
    gc.collect()
    print("MOD %s|%d" % (name, gc.mem_alloc() - a))
"""
_MODULES_SHOWN = ("protocol.cbor", "drivers.scd4x")


def layout_bytes(name, word):
    """What MicroPython's object layouts predict ``name`` (an ``OBJECT_COSTS`` case) takes
    on a port with ``word``-byte words: GC blocks of 4 words (py/mpconfig.h
    ``MICROPY_BYTES_PER_GC_BLOCK``), every allocation rounded up to whole blocks. Layouts
    (py/obj.h, py/objstr.h, py/objarray.h, py/objtuple.h, py/objlist.h, py/objfun.h,
    py/objtype.h, py/objclosure.h, py/objboundmeth.h): small int: none (tagged in the
    pointer); float: type pointer + the value (a double here, a single-precision float on an
    ESP32: one block either way); str/bytes: 4-word header + the data and its NUL; bytearray:
    4-word header + the data; tuple: 2 words + n items; list: 4-word header + n item words;
    dict and instance: 4-word header (type + map) + a table of 2 words per slot (a literal of
    3 gets 3 slots; 16 keys added one by one grow the table through MicroPython's primes to
    17 slots); closure: a new function object (4 words: type, context, child table, bytecode),
    the closure (3 words + one per cell) and the cell (2 words); bound method: 3 words."""
    block = 4 * word

    def blocks(n):
        return -(-n // block) * block

    return {
        "small int": 0, "float": blocks(word + 8), "str, 2 chars": blocks(4 * word) + blocks(3),
        "bytes(100)": blocks(4 * word) + blocks(101), "bytearray(16)": blocks(4 * word) + blocks(16),
        "bytearray(100)": blocks(4 * word) + blocks(100), "tuple of 3": blocks(5 * word),
        "list of 8": blocks(4 * word) + blocks(8 * word), "dict, 3 entries": blocks(4 * word) + blocks(3 * 2 * word),
        "dict, 16 entries": blocks(4 * word) + blocks(17 * 2 * word),
        "instance, 3 attributes": blocks(4 * word) + blocks(3 * 2 * word),
        "closure + cell": 2 * blocks(4 * word) + blocks(2 * word), "bound method": blocks(3 * word),
    }.get(name)


def object_costs(binary=None, lib=None):
    """``{name: bytes}`` measured by ``OBJECT_COSTS`` on ``binary`` (default: this project's
    interpreter); module imports from ``lib`` (a built firmware's ``lib``), if given."""
    with tempfile.TemporaryDirectory() as tmp:
        script = pathlib.Path(tmp) / "costs.py"
        script.write_text(OBJECT_COSTS)
        r = subprocess.run([binary or micropython_binary(), "-X", "heapsize=512K", str(script), str(lib or tmp)],
                           env=micropython_env(sim=False), cwd=REPO, capture_output=True, text=True, timeout=60)
    out = {}
    for line in r.stdout.splitlines():
        kind, _, rest = line.partition(" ")
        if kind in ("OBJ", "MOD"):
            name, _, value = rest.rpartition("|")
            out[name + (" (.mpy)" if kind == "MOD" else "")] = int(value)
    if not out:
        raise RuntimeError("object cost probe failed:\n%s" % r.stderr)
    return out


def _board(install, heap_free, binary=None, extra=EXTRA_HEAPS[1], server=None, env=None, wakes=WAKES):
    """One board run; the ``BOARD`` summary dict, or None."""
    with tempfile.TemporaryDirectory() as tmp:
        image = pathlib.Path(tmp) / "flash.img"
        args = [str(REPO / "simulators" / "mpy" / "board.py"), "--flash", str(image), "--install", str(install),
                "--wakes", str(wakes), "--heap-free", str(heap_free)]
        heapsize = "%dK" % ((heap_free + extra) // 1024)
        try:
            r = subprocess.run([binary or micropython_binary(), "-X", "heapsize=" + heapsize] + args,
                               env=micropython_env(server, server is not None, env), cwd=REPO,
                               capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return None
    lines = [line for line in r.stdout.splitlines() if line.startswith("BOARD ")]
    if not lines or "Traceback" in r.stdout + r.stderr:
        return None
    return json.loads(lines[-1][6:])


def _least(ok, low=LOW, high=HIGH):
    """The least heap (bytes, to STEP) for which ``ok(heap)`` holds, by bisection; None if
    even ``high`` fails."""
    if not ok(high):
        return None
    lo, hi = low, high
    while hi - lo > STEP:
        mid = (lo + hi) // 2 // STEP * STEP
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _least_confirmed(ok, low=LOW, high=HIGH):
    """``_least`` of ``ok(heap, extra)``, then confirmed upwards: the least heap from which
    every heap up to it + CONFIRM passes with both EXTRA_HEAPS (a failure above moves the
    answer past it); None if even ``high`` fails."""
    heap = _least(lambda h: ok(h, EXTRA_HEAPS[1]), low, high)
    while heap is not None and heap < high:
        bad = [h for h in range(heap, heap + CONFIRM + 1, 2 * STEP)
               if not all(ok(h, e) for e in EXTRA_HEAPS)]
        if not bad:
            return heap
        heap = bad[-1] + STEP
    return heap


def _trivial(binary=None):
    from simulators.i2c_server import SimServer

    def ok(heap, extra):
        with SimServer() as srv:
            s = _board(REPO / "tests" / "mpy" / "boards" / "trivial", heap, binary, extra, server=srv)
        return s is not None and s.get("end") == "wakes"
    return ok


def _node(install, binary=None, wakes=WAKES, device="sch1-rm12-co2", devices=None):
    from simulators.i2c_server import SimServer
    from simulators.serial_gateway import SerialGatewayStub

    devices = devices or [{"model": "scd4x", "truth": {"co2_ppm": 800, "temperature_c": 21, "rh_percent": 45}}]

    def ok(heap, extra):
        with SimServer() as srv, SerialGatewayStub({device: KEY}) as gw:
            srv.rig.setup(devices)
            s = _board(install, heap, binary, extra, server=srv, env={"CIVICEDGE_UART2": gw.port_path}, wakes=wakes)
            readings = sum(1 for d, e, r in gw.records if r.get("kind", "reading") == "reading")
        return s is not None and s.get("end") == "wakes" and readings >= wakes + 1
    return ok


def build_profile(name, out):
    """``name``'s build on its reference board and default link, deep sleep, ``PROFILE_SETS``,
    with its secrets; returns (directory, link type)."""
    from civicedge import firmware_build as fb
    from simulators.ads1115 import SimADS1115

    prof = fb.load_profile(name)
    link = prof["profile"]["link"]
    out = pathlib.Path(out)
    calibration = None
    if name == "street-no2":
        calibration = out.parent / (out.name + "-sheet.json")
        calibration.write_text(json.dumps(SimADS1115(0x48, inputs=_ELECTRODE, seed=9).electrode_sheet))
    sets = ["power.sleep=deep"] + PROFILE_SETS[name] + (_LORAWAN_IDS if link == "lorawan" else [])
    fb.build(prof["profile"]["board"], name, prof["profile"]["example_device_id"], out, sets=sets,
             calibration=calibration)
    (out / "secrets.json").write_text(json.dumps({"device_key_hex": KEY.hex(), "lorawan_app_key_hex": _APP_KEY}))
    return out, link


def _profile_node(name, install, link, binary=None, wakes=WAKES):
    """``ok(heap, extra)`` for a profile's build: every wake's reading delivered over ``link``."""
    from simulators.atmodem import ATModemEmulator
    from simulators.i2c_server import SimServer
    from simulators.lorawan_gateway import LoRaWANGatewayStub

    device = json.loads((pathlib.Path(install) / "config.json").read_text())["device_id"]
    devices = [dict(d, truth=_TRUTH, seed=9) for d in _DEVICES[name]]
    if link != "lorawan":
        return _node(install, binary, wakes, device, devices)

    def ok(heap, extra):
        gw = LoRaWANGatewayStub(port=2)
        with SimServer() as srv:
            srv.rig.setup(devices)
            srv.analog["35"] = 1.5
            with ATModemEmulator("rak3172", clock=srv.rig.clock, network=gw, clock_lock=srv.lock,
                                 expected_app_key=_APP_KEY) as emu:
                gw.attach(emu)
                s = _board(install, heap, binary, extra, server=srv, env={"CIVICEDGE_UART2": emu.port_path},
                           wakes=wakes)
        readings = sum(1 for d, e, r in gw.records if r.get("kind", "reading") == "reading")
        return s is not None and s.get("end") == "wakes" and readings >= wakes + 1
    return ok


def _mqtt_least(tmp, binary=None):
    """The MQTT row: classroom-co2 over MQTT, TLS unless on the 32-bit port (``binary``)."""
    site = MQTTSite(pathlib.Path(tmp) / ("mqtt32" if binary else "mqtt"), tls=binary is None)
    out = site.build(site.directory / "flash", KEY)
    devices = [dict(d, truth=_TRUTH, seed=9) for d in _DEVICES["classroom-co2"]]

    def run(install, heap, extra, server):
        return _board(install, heap, binary, extra, server=server)
    return _least_confirmed(mqtt_ok(site, out, KEY, devices, run, WAKES))


def build_classroom(out):
    """The benchmark's firmware: classroom-co2 on an ESP32-DevKitC, serial link, deep sleep."""
    from civicedge import firmware_build as fb

    fb.build("esp32-devkitc", "classroom-co2", "sch1-rm12-co2", out, link="serial", sets=["power.sleep=deep"])
    (pathlib.Path(out) / "secrets.json").write_text(json.dumps({"device_key_hex": KEY.hex()}))
    return pathlib.Path(out)


def bench_heap():
    bin32 = os.environ.get("CIVICEDGE_MICROPYTHON32")
    least, least32 = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        trivial = _least_confirmed(_trivial())
        for name in PROFILES:
            out, link = build_profile(name, pathlib.Path(tmp) / name)
            least[name] = (link, _least_confirmed(_profile_node(name, out, link)))
            least32[name] = (_least_confirmed(_profile_node(name, out, link, bin32)) if bin32 else
                             (RECORDED_32BIT["profiles_kb"].get(name) or 0) * 1024 or None)
            if name == "classroom-co2":
                costs64 = object_costs(lib=out / "lib")
                costs32 = object_costs(bin32, lib=out / "lib") if bin32 else RECORDED_32BIT["objects"]
        mqtt64 = _mqtt_least(tmp)
        mqtt32 = _mqtt_least(tmp, bin32) if bin32 else (RECORDED_32BIT["mqtt_plain_kb"] * 1024)
    equivalent = int(ESP32_FREE_HEAP * FACTOR)
    rows = [("trivial firmware (deep sleep only; baseline), this 64-bit port", _kb(trivial), "1.00")]
    for name in PROFILES:
        link, n64 = least[name]
        n32 = least32[name]
        rows.append(("%s, %s link, this 64-bit port" % (name, link), _kb(n64), _ratio(n64, trivial)))
        rows.append(("%s, %s link, a 32-bit unix port%s" % (name, link, "" if bin32 else " (recorded, see below)"),
                     _kb(n32), _ratio(n32, trivial)))
    rows.append(("classroom-co2, mqtt link with TLS (as shipped), this 64-bit port", _kb(mqtt64),
                 _ratio(mqtt64, trivial)))
    rows.append(("classroom-co2, mqtt link without TLS, a 32-bit unix port%s" % ("" if bin32 else " (recorded)"),
                 _kb(mqtt32), _ratio(mqtt32, trivial)))
    table = ["| object | this port (measured) | layout model, 8-byte words | 32-bit port (%s) | "
             "layout model, 4-byte words | 64-bit ÷ 32-bit |" % ("measured" if bin32 else "recorded"),
             "|---|---|---|---|---|---|"]
    for name in costs64:
        if name.endswith("(.mpy)") and not name.startswith(_MODULES_SHOWN):
            continue
        b64, b32 = costs64[name], costs32.get(name)
        m64, m32 = layout_bytes(name, 8), layout_bytes(name, 4)
        table.append("| %s | %d B | %s | %s | %s | %s |" % (
            name, b64, "-" if m64 is None else "%d B" % m64, "-" if b32 is None else "%d B" % b32,
            "-" if m32 is None else "%d B" % m32, "%.2f" % (b64 / b32) if b32 else "-"))
    worst = max((n for link, n in least.values()), key=lambda n: n or 10 ** 9)
    worst32 = max((n or 0 for n in least32.values()))
    goal = "met" if worst and worst <= equivalent else "not met"
    notes = [
        "Free heap at every boot (`board.py --heap-free`), to %d KB, for %d wakes with every reading delivered "
        "(each profile deep-sleeping and sending at every wake, `PROFILE_SETS`: the whole send path runs every "
        "wake); the least heap from which every heap up to %d KB above also passes, with two total heap sizes "
        "(the heap's behaviour near its limit is chaotic: see `simulators/bench_heap.py`)."
        % (STEP // 1024, WAKES, CONFIRM // 1024),
        "**The 64-bit factor.** What objects take here and on a 32-bit port (an ESP32's word size), "
        "measured with `gc.mem_alloc()` and as MicroPython's layouts predict (`layout_bytes`):\n\n" + "\n".join(table),
        "The firmware's live heap after its first wake (objects, code, interned names) is 112.9 KB here and "
        "77.5 KB on a 32-bit build of the same MicroPython: **factor %.2f**. So an ESP32's ~%d KB free heap "
        "corresponds to **%d KB** free on this port; the e2e tests run the firmware there "
        "(`tests/e2e/nodeharness.py` `ESP32_HEAP`; `tests/e2e/test_node_heap.py`: 300 wakes of the classroom node, 60 of "
        "the legionella-outlet LoRaWAN node, 100 of the classroom node on its MQTT link with TLS). "
        "Goal (every profile fits %d KB at the factor): **%s** on this port (the most, %s); on the 32-bit port "
        "the most is %s%s, against the ESP32's 100 KB. The classroom node on its MQTT link with TLS: **%s** "
        "on this port (%s); on the 32-bit port without TLS %s%s, %s the ESP32's 100 KB "
        "(docs/mqtt-link.md, \"Size and memory\")."
        % (FACTOR, ESP32_FREE_HEAP // 1024, equivalent // 1024, equivalent // 1024, goal, _kb(worst),
           _kb(worst32 or None), "" if bin32 else " (recorded)",
           "met" if mqtt64 and mqtt64 <= equivalent else "not met", _kb(mqtt64), _kb(mqtt32),
           "" if bin32 else " (recorded)",
           "within" if mqtt32 and mqtt32 <= ESP32_FREE_HEAP else "over"),
        MQTT,
        LORAWAN,
        HISTORY,
        RECIPE,
        ARTIFACTS,
    ]
    return ("Least free heap at boot on which the firmware runs and delivers", rows, notes)


def _ratio(n, base):
    return "%.2f" % (n / base) if n and base else "-"


def _kb(n):
    return "> %d KB" % (HIGH // 1024) if n is None else "%d KB" % (n // 1024)
