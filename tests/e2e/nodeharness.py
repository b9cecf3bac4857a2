"""Shared helpers for the end-to-end node tests: build the real firmware with
``civicedge firmware build``, boot it from a littlefs image in the MicroPython unix port
(``simulators/mpy/board.py``) against a ``SimServer``, talk to it over its serial link through a
``SerialGatewayStub``, cut its power (SIGKILL), and look inside its flash image afterwards.

Nothing here asserts; the tests do.
"""

import json
import pathlib
import signal
import subprocess
import time

from civicedge import firmware_build as fb
from simulators import flashinspect
from simulators.fleet.node_board import rail_args
from simulators.mpyrun import REPO, popen_micropython, run_micropython
from simulators.serial_gateway import SerialGatewayStub

DEVICE = "sch1-rm12-co2"
KEY = bytes(range(16))
ROOM = {"co2_ppm": 812.0, "temperature_c": 21.5, "rh_percent": 44.0}
BOARD_PY = REPO / "simulators" / "mpy" / "board.py"
SCD41 = 0x62
# An ESP32 without PSRAM leaves MicroPython about 100 KB of free heap. This unix port is 64-bit:
# the firmware's objects take 1.46x the bytes they take on a 32-bit port such as the ESP32's
# (simulators/bench_heap.py FACTOR; the evidence in docs/benchmarks.md "heap"), so the ESP32's
# 100 KB is 146 KB here. --heap-free gives the firmware exactly that at every boot; the shim's
# own modules take the rest of the larger heap, held by a ballast (docs/simulator-board.md "Heap").
ESP32_HEAP = {"heapsize": "256K", "heap_free": "146K"}
ROOMY_HEAP = {"heapsize": "320K", "heap_free": None}  # ~227 KB free at boot, for tests about something else
# Large enough that the firmware's heap shortfalls (asserted by their own tests) cannot mask
# what a durability test is about.
LARGE_HEAP = {"heapsize": "512K", "heap_free": None}


def build_node(out, profile="classroom-co2", sets=(), board="esp32-devkitc", link="serial",
               device_id=DEVICE, key=KEY):
    """Build ``profile`` for ``board`` into ``out`` (deep sleep, so a run ends after its
    wakes), with ``sets`` ("PATH=VALUE") applied, and provision ``secrets.json``."""
    out = pathlib.Path(out)
    fb.build(board, profile, device_id, out, link=link, sets=["power.sleep=deep"] + list(sets))
    (out / "secrets.json").write_text(json.dumps({"device_key_hex": key.hex()}))
    return out


def node_config(build):
    """The node's ``config.json`` as built (a dict)."""
    return json.loads((pathlib.Path(build) / "config.json").read_text())


def kind(rec):
    return rec.get("kind") or "reading"


def values_of(rec):
    """``{quantity: (value, flag)}`` of a reading or status record."""
    return {q: (v, f) for q, v, f in rec.get("values", [])}


def parse_summary(out):
    """The board's last ``BOARD {json}`` line as a dict, or None (killed, or it crashed)."""
    lines = [line for line in (out or "").splitlines() if line.startswith("BOARD ")]
    return json.loads(lines[-1][6:]) if lines else None


def board_args(build, image, wakes, heap_free=None, extra=()):
    """board.py's command line: installs ``build`` only when the image does not exist yet;
    ``--rail`` when the build's configuration gates the sensors' power."""
    image = pathlib.Path(image)
    args = [str(BOARD_PY), "--flash", str(image), "--wakes", str(wakes)]
    config = pathlib.Path(build) / "config.json"
    if config.exists():  # a gated sensor rail: the board switches the parts' power
        args += rail_args(json.loads(config.read_text()))
    if not image.exists():
        args += ["--install", str(build)]
    if heap_free:
        args += ["--heap-free", str(heap_free)]
    return args + list(extra)


class Run:
    """One board process's outcome: ``rc``, ``out``, ``err``, ``summary`` (None if none)."""

    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err
        self.summary = parse_summary(out)

    def text(self, tail=4000):
        return ("rc %r\n--- stdout\n%s\n--- stderr\n%s" % (self.rc, (self.out or "")[-tail:],
                                                          (self.err or "")[-tail:]))


def run_node(build, image, gateway, server, wakes, heapsize="320K", heap_free=None, extra=(),
             env=None, timeout_s=240):
    """Boot the node and follow ``wakes`` deep-sleep resets; returns a ``Run``."""
    env = dict(env or {}, CIVICEDGE_UART2=gateway.port_path)
    rc, out, err = run_micropython(board_args(build, image, wakes, heap_free, extra), server=server,
                                   timeout_s=timeout_s, heapsize=heapsize, env=env)
    return Run(rc, out, err)


def start_node(build, image, gateway, server, wakes, heapsize="320K", heap_free=None, extra=(), env=None):
    """The same as ``run_node`` but returns the running ``subprocess.Popen``."""
    env = dict(env or {}, CIVICEDGE_UART2=gateway.port_path)
    return popen_micropython(board_args(build, image, wakes, heap_free, extra), server,
                             heapsize=heapsize, env=env)


def start_node_writer(code, heapsize="256K"):
    """A MicroPython process running ``code`` (``-c``) with the shim on its path and no
    simulator (flash work only), to be killed: a power cut during a flash write."""
    return popen_micropython(["-c", code], None, heapsize=heapsize, sim=False)


def finish(proc, timeout_s=240):
    """Wait for a started node; returns its ``Run`` (killed, rc None, if it overruns)."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return Run(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return Run(None, out, err + "\n[killed after %d s]" % timeout_s)


def cut_power(proc):
    """SIGKILL: the board loses power wherever it was (mid flash write included). Returns
    the ``Run`` (rc -9 if the kill landed; anything else means it had stopped by itself)."""
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    return Run(proc.returncode, out, err)


def wait_for(predicate, timeout_s, proc=None, step_s=0.01):
    """Poll ``predicate`` (real time) until true, the timeout, or ``proc`` exits; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = predicate()
        if got or time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            return got
        time.sleep(step_s)


class LinkStub(SerialGatewayStub):
    """A ``SerialGatewayStub`` whose cable can be pulled: while ``link_up()`` returns False
    (e.g. on the simulator's virtual clock) every packet from the node is lost on the way —
    neither recorded nor acked — and counted in ``lost``. ``ack`` still decides acking for
    packets that get through."""

    def __init__(self, keys, ack=True, link_up=None):
        SerialGatewayStub.__init__(self, keys, ack)
        self.link_up = link_up
        self.lost = 0

    def _handle(self, packet):
        if self.link_up is not None and not self.link_up():
            self.lost += 1
            return
        SerialGatewayStub._handle(self, packet)


def inspect_image(image, build):
    """``simulators.flashinspect.inspect_image`` for the node built into ``build``."""
    return flashinspect.inspect_image(image, node_config(build))
