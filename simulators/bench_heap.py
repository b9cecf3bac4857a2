"""The ``heap`` benchmark: the smallest free heap at boot on which a built node firmware runs
its wake cycles and delivers its readings, in the MicroPython unix port.

``board.py --heap-free N`` holds a ballast so the firmware gets exactly N bytes at every boot
(``docs/simulator-board.md``); a bisection over N finds the least that completes ``WAKES``
wakes with every reading acknowledged over the serial link. The baseline is the same search
for a trivial firmware that only deep-sleeps (the cost of the interpreter's own boot), so the
ratio says how much more the application needs. An ESP32 without PSRAM gives MicroPython
about 100 KB; this port is 64-bit, so its objects take up to twice the bytes.
"""

import json
import pathlib
import tempfile

from simulators.mpyrun import REPO, run_micropython

WAKES = 5
STEP = 8 * 1024
LOW, HIGH = 32 * 1024, 512 * 1024
KEY = bytes(range(16))


def _runs(install, heap_free, server=None, env=None, check=None):
    with tempfile.TemporaryDirectory() as tmp:
        image = pathlib.Path(tmp) / "flash.img"
        args = [str(REPO / "simulators" / "mpy" / "board.py"), "--flash", str(image), "--install", str(install),
                "--wakes", str(WAKES), "--heap-free", str(heap_free)]
        rc, out, err = run_micropython(args, server=server, timeout_s=120,
                                       heapsize="%dK" % ((heap_free + 192 * 1024) // 1024), env=env)
    lines = [line for line in out.splitlines() if line.startswith("BOARD ")]
    if not lines or json.loads(lines[-1][6:]).get("end") != "wakes":
        return False
    return check() if check else True


def _least(ok):
    """The least heap (bytes, to STEP) for which ``ok(heap)`` holds, by bisection."""
    lo, hi = LOW, HIGH
    if not ok(hi):
        return None
    while hi - lo > STEP:
        mid = (lo + hi) // 2 // STEP * STEP
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _node(install):
    from simulators.i2c_server import SimServer
    from simulators.serial_gateway import SerialGatewayStub

    def ok(heap):
        with SimServer() as srv, SerialGatewayStub({"sch1-rm12-co2": KEY}) as gw:
            srv.rig.setup([{"model": "scd4x", "truth": {"co2_ppm": 800, "temperature_c": 21, "rh_percent": 45}}])
            readings = lambda: sum(1 for d, e, r in gw.records if r.get("kind", "reading") == "reading") >= WAKES
            return _runs(install, heap, server=srv, env={"CIVICEDGE_UART2": gw.port_path}, check=readings)
    return ok


def bench_heap():
    from civicedge import firmware_build as fb

    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "flash"
        fb.build("esp32-devkitc", "classroom-co2", "sch1-rm12-co2", out, link="serial", sets=["power.sleep=deep"])
        (out / "secrets.json").write_text(json.dumps({"device_key_hex": KEY.hex()}))
        trivial = _least(lambda heap: _runs(REPO / "tests" / "mpy" / "boards" / "trivial", heap))
        node = _least(_node(out))
    rows = [("trivial firmware (deep sleep only; baseline)", _kb(trivial), "1.00"),
            ("classroom-co2, serial link, built .mpy", _kb(node),
             "%.2f" % (node / trivial) if node and trivial else "-")]
    notes = ["Free heap at every boot (`board.py --heap-free`), to %d KB, for %d wakes with every reading "
             "acknowledged. An ESP32 without PSRAM gives MicroPython about 100 KB; this unix port is 64-bit "
             "(objects up to twice the bytes), so the firmware does not yet fit an ESP32 with its modules "
             "loaded into RAM: freezing them into the firmware image is the open work." % (STEP // 1024, WAKES)]
    return ("Least free heap at boot on which the firmware runs and delivers", rows, notes)


def _kb(n):
    return "> %d KB" % (HIGH // 1024) if n is None else "%d KB" % (n // 1024)
