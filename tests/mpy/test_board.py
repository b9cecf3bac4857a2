"""The board runner (simulators/mpy/board.py) and the shim's chip: small test firmwares from
tests/mpy/boards/ run from a littlefs image under a 100 KB heap, through deep sleep, watchdog
and soft resets inside one interpreter, and through power cuts (a killed process)."""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import textwrap
import threading

import pytest

from simulators import i2c_server as proto
from simulators.i2c_server import SimServer
from simulators.mpyrun import REPO, SHIM, micropython_binary, run_micropython
from tests.killkit import output_after_kill

BOARDS = REPO / "tests" / "mpy" / "boards"
BOARD_PY = str(SHIM / "board.py")
# The board's own heap for these small firmwares: the shim is compiled from source at start-up
# (~70 KB with its pools), and how much room that leaves depends on the checkout's path (its
# interned names), so these tests leave it a margin; the firmware's budget is tested with
# --heap-free (tests/e2e/test_node_heap.py).
HEAP = "128K"


@pytest.fixture
def server():
    with SimServer() as srv:
        yield srv


def firmware(tmp_path, name, mode=None):
    """A copy of tests/mpy/boards/<name> to install, with ``mode`` as its mode.json."""
    fw = tmp_path / ("fw-" + name)
    shutil.copytree(BOARDS / name, fw)
    if mode is not None:
        (fw / "mode.json").write_text(json.dumps(mode))
    return fw


def board_args(image, fw=None, wakes=0, *extra):
    args = [BOARD_PY, "--flash", str(image), "--wakes", str(wakes)] + list(extra)
    return args + (["--install", str(fw)] if fw is not None else [])


def parse(out):
    """``(APP records, the BOARD summary)`` from the runner's stdout."""
    apps = [json.loads(line[4:]) for line in out.splitlines() if line.startswith("APP ")]
    summary = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("BOARD ")]
    assert len(summary) == 1, out
    return apps, summary[0]


def run_board(server, image, fw=None, wakes=0, *extra, expect_rc=0):
    rc, out, err = run_micropython(board_args(image, fw, wakes, *extra), server=server, heapsize=HEAP, timeout_s=120)
    assert rc == expect_rc, "exit %s\n%s\n%s" % (rc, out[-3000:], err[-3000:])
    apps, summary = parse(out)
    return apps, summary, out


def test_deep_sleep_restarts_the_application_keeping_rtc_memory_and_flash(server, tmp_path):
    fw = firmware(tmp_path, "counter", {"sleep_ms": 60000, "action": "deepsleep"})
    apps, summary, _ = run_board(server, tmp_path / "flash.img", fw, 5)
    assert [a["rtc"] for a in apps] == [1, 2, 3, 4, 5, 6]  # RTC memory kept: N wakes -> N + 1
    assert [a["flash"] for a in apps] == [1, 2, 3, 4, 5, 6]
    assert [a["imports"] for a in apps] == [1] * 6  # module globals start again each wake
    assert [a["booted_by"] for a in apps] == ["boot.py"] * 6
    assert [a["cause"] for a in apps] == [1, 4, 4, 4, 4, 4]  # PWRON_RESET, then DEEPSLEEP_RESET
    assert [a["wake"] for a in apps] == [0, 4, 4, 4, 4, 4]  # TIMER_WAKE after a timed sleep
    assert [a["ticks_ms"] for a in apps] == [300] * 6  # ticks restart at each boot (+0.3 s boot)
    # The RTC counts from 0 at power-on and keeps counting through deep sleep.
    assert [a["time"] for a in apps] == [int(0.3 + 60.3 * k) for k in range(6)]
    assert summary["end"] == "wakes" and summary["boots"] == 6
    assert summary["resets"] == {"deepsleep": 6, "wdt": 0, "soft": 0, "soft_reboot": 0}
    assert summary["virtual_s"] == pytest.approx(5 * 60 + 6 * 0.3)
    assert server.rig.clock.now_us == 301_800_000


def test_memory_does_not_grow_over_200_wakes(server, tmp_path):
    fw = firmware(tmp_path, "counter", {"sleep_ms": 1000, "action": "deepsleep"})
    apps, summary, _ = run_board(server, tmp_path / "flash.img", fw, 200)
    assert len(apps) == 201 and apps[-1]["rtc"] == 201 and apps[-1]["flash"] == 201
    assert {a["imports"] for a in apps} == {1}
    mem = summary["mem_free"]
    assert len(mem) == 201
    assert min(mem[-10:]) >= max(mem[1:11]) - 256, (mem[:12], mem[-12:])


def test_a_power_cut_loses_rtc_memory_but_not_the_flash(server, tmp_path):
    image = tmp_path / "flash.img"
    fw = firmware(tmp_path, "counter", {"sleep_ms": 1000, "action": "deepsleep"})
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(SHIM), str(REPO)]), CIVICEDGE_SIM=server.address)
    proc = subprocess.Popen([micropython_binary(), "-X", "heapsize=" + HEAP] + board_args(image, fw, 100000),
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = 0
    while seen < 8:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        seen += line.startswith("APP ")
    proc.send_signal(signal.SIGKILL)  # a power cut, at whatever it was doing
    rest, _ = output_after_kill(proc, 30)
    printed = [json.loads(line[4:]) for line in rest.splitlines() if line.startswith("APP ")]
    last_flash = printed[-1]["flash"] if printed else 8
    apps, summary, _ = run_board(server, image, None, 1)
    first = apps[0]
    assert first["cause"] == 1 and first["wake"] == 0  # PWRON_RESET
    assert first["rtc"] == 1  # RTC memory started empty
    assert first["time"] == 0  # the RTC restarted too
    # The flash count survived: the cut came after the last boot it printed, perhaps after
    # that boot's successor had already written its count.
    assert first["flash"] in (last_flash + 1, last_flash + 2)
    assert apps[1]["rtc"] == 2 and apps[1]["flash"] == first["flash"] + 1


def test_an_image_that_does_not_mount_is_an_error_never_reformatted(server, tmp_path):
    image = tmp_path / "flash.img"
    run_board(server, image, BOARDS / "trivial", 0)
    with open(image, "r+b") as f:  # both littlefs superblock copies (blocks 0 and 1) trashed
        f.write(b"\x5a" * 8192)
    before = image.read_bytes()
    rc, out, err = run_micropython(board_args(image, None, 0), server=server, heapsize=HEAP, timeout_s=60)
    assert rc != 0 and "does not mount as littlefs" in out + err
    assert image.read_bytes() == before


def test_heap_free_leaves_the_firmware_a_set_heap(server, tmp_path):
    rc, out, err = run_micropython(board_args(tmp_path / "flash.img", BOARDS / "trivial", 3, "--heap-free", "100K"),
                                   server=server, heapsize="200K", timeout_s=60)
    assert rc == 0, err
    _, summary = parse(out)
    assert summary["ballast"] > 0
    assert all(abs(m - 100 * 1024) <= 1024 for m in summary["mem_free"]), summary["mem_free"]


def test_gc_scale_multiplies_the_firmwares_gc_threshold(server, tmp_path):
    fw = tmp_path / "fw-gc"
    fw.mkdir()
    (fw / "main.py").write_text(
        "import gc, json\n"
        "gc.threshold(8192)\n"
        "gc.collect()\n"
        "print('APP ' + json.dumps({'seen': gc.threshold(), 'free': gc.mem_free() > 0}))\n")
    for scale, seen in ((1, 8192), (2, 8192)):
        apps, _, _ = run_board(server, tmp_path / ("flash%d.img" % scale), fw, 0, "--gc-scale", str(scale))
        assert apps == [{"seen": seen, "free": True}]
    out = run_micropython(["-c", "import board, gc\ng = board._GC(3)\ng.threshold(960)\n"
                                 "print(gc.threshold(), g.threshold(), g.mem_free() > 0)"],
                          server=server, heapsize=HEAP, timeout_s=60)
    assert out[1].split()[-3:] == ["2880", "960", "True"], out  # the real threshold is scaled (16-byte blocks)


def test_a_watchdog_not_fed_resets_the_board(server, tmp_path):
    apps, summary, out = run_board(server, tmp_path / "flash.img", BOARDS / "watchdog", 10)
    # boot 1: not fed; boot 2: an uncaught error, the watchdog still running; boot 3: deep
    # sleep; boot 4: ends normally with no watchdog.
    assert [a["boot"] for a in apps] == [1, 2, 3, 4]  # RTC memory survives a watchdog reset
    assert [a["cause"] for a in apps] == [1, 3, 3, 4]  # PWRON, WDT, WDT, DEEPSLEEP
    assert "RuntimeError: an uncaught error with the watchdog running" in out
    assert "unreachable" not in out
    assert summary["end"] == "ended" and summary["resets"]["wdt"] == 2
    # Fed at 1.8, 3.3, 4.8 s (after the 0.3 s boot); fires 2 s after the last feed; and so on.
    assert summary["virtual_s"] == pytest.approx(6.8 + 6.8 + 0.3 + 4.5 + 10 + 0.3)


def test_lightsleep_advances_time_without_a_reset(server, tmp_path):
    fw = firmware(tmp_path, "counter", {"sleep_ms": 1000, "action": "lightsleep", "cycles": 3})
    apps, summary, _ = run_board(server, tmp_path / "flash.img", fw, 2)
    assert [(a["slept_ms"], a["imports_after"]) for a in apps] == [(3000, 1)] * 3
    assert [a["cause"] for a in apps] == [1, 4, 4]
    assert summary["virtual_s"] == pytest.approx(3 * (0.3 + 3.0) + 2 * 1.0)


@pytest.mark.parametrize("action, causes, resets", [
    ("reset", [1, 5, 5], {"soft": 3}),  # machine.reset(): SOFT_RESET, as on the ESP32 port
    ("soft_reset", [1, 1, 1], {"soft_reboot": 3}),  # a soft reboot leaves the cause alone
])
def test_resets_keep_rtc_memory(server, tmp_path, action, causes, resets):
    fw = firmware(tmp_path, "counter", {"sleep_ms": 1000, "action": action})
    apps, summary, _ = run_board(server, tmp_path / "flash.img", fw, 2)
    assert [a["cause"] for a in apps] == causes
    assert [a["rtc"] for a in apps] == [1, 2, 3] and [a["imports"] for a in apps] == [1, 1, 1]
    assert summary["resets"] == dict({"deepsleep": 0, "wdt": 0, "soft": 0, "soft_reboot": 0}, **resets)


def test_an_uncaught_error_stops_the_application(server, tmp_path):
    fw = firmware(tmp_path, "counter", {"sleep_ms": 1000, "action": "crash"})
    apps, summary, out = run_board(server, tmp_path / "flash.img", fw, 5, expect_rc=1)
    assert len(apps) == 1 and summary["end"] == "error"
    assert "RuntimeError: crash on purpose" in out and 'File "main.py", line 3' in out


class EchoServer:
    """A TCP server on loopback that answers each connection with what it received."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(conn.recv(64))


def test_wlan_joins_the_access_point_and_reaches_loopback(server, tmp_path):
    echo = EchoServer()
    fw = firmware(tmp_path, "wifi", {"timeout_ms": 10000, "sleep_ms": 5000, "port": echo.port})
    apps, summary, _ = run_board(server, tmp_path / "flash.img", fw, 1)
    echo.sock.close()
    for seen in apps:  # the second boot starts with the radio off, as after any reset
        assert (seen["active_at_boot"], seen["connected_at_boot"], seen["status_at_boot"]) == (False, False, 1000)
        assert seen["inactive_connect"] == "Wifi Not Started"
        assert seen["connected"] and seen["status"] == 1010  # STAT_GOT_IP
        assert seen["ifconfig"][0] == "127.0.0.1" and seen["echo"] == "hello from the board"
        assert 1500 <= seen["waited_ms"] < 1700  # association costs virtual time
        assert seen["mac"] == "240ac4000001"


@pytest.mark.parametrize("ap, mode, status", [
    ({"up": False}, {}, 1001),  # retries for ever: STAT_CONNECTING
    ({"up": False}, {"reconnects": 2}, 201),  # STAT_NO_AP_FOUND after 2 attempts
    ({"ssid": "elsewhere"}, {"reconnects": 2}, 201),
    ({"key": "other"}, {"reconnects": 2}, 202),  # STAT_WRONG_PASSWORD
])
def test_wlan_cannot_join_a_missing_access_point(server, tmp_path, ap, mode, status):
    server.wifi.update(ap)
    fw = firmware(tmp_path, "wifi", dict(mode, timeout_ms=8000))
    apps, _, _ = run_board(server, tmp_path / "flash.img", fw, 0)
    assert (apps[0]["connected"], apps[0]["status"]) == (False, status)
    assert apps[0]["waited_ms"] >= 8000 and apps[0]["ifconfig"][0] == "0.0.0.0"


def test_select_and_asyncio_wait_on_the_virtual_clock(server, tmp_path):
    echo = EchoServer()
    fw = firmware(tmp_path, "poller", {"port": echo.port})
    apps, _, _ = run_board(server, tmp_path / "flash.img", fw, 0)
    echo.sock.close()
    assert apps == [{"quiet": 0, "quiet_ms": 2000, "ready": 1, "ready_ms": 0, "data": "ping", "nap_ms": 30000}]


def mpy(code, server):
    rc, out, err = run_micropython(["-c", textwrap.dedent(code)], server=server, heapsize=HEAP, timeout_s=30)
    assert rc == 0, "micropython exit %s\n%s\n%s" % (rc, out, err)
    return json.loads(out.strip().splitlines()[-1])


def test_rtc_wdt_adc_and_chip_calls(server):
    server.analog["35"] = 1.85
    r = mpy("""
        import json, machine, simclock
        rtc = machine.RTC()
        rtc.memory(bytes(2048))
        try:
            rtc.memory(bytes(2049))
        except ValueError as e:
            too_long = str(e)
        simclock.power_on()
        unset = rtc.datetime()
        rtc.datetime((2026, 3, 4, 2, 10, 20, 30, 0))
        now = rtc.datetime()
        adc = machine.ADC(machine.Pin(35), atten=machine.ADC.ATTN_11DB)
        uv = adc.read_uv()
        adc.atten(machine.ADC.ATTN_0DB)
        print(json.dumps([len(rtc.memory()), too_long, unset[:7], now[:7], uv, adc.read_uv(),
                          machine.reset_cause(), machine.PWRON_RESET, machine.unique_id().hex(),
                          machine.freq(), machine.WDT_RESET, machine.DEEPSLEEP_RESET, machine.SOFT_RESET,
                          machine.HARD_RESET]))
    """, server)
    assert r[0:2] == [2048, "buffer too long"]
    assert r[2] == [1970, 1, 1, 3, 0, 0, 0]  # an ESP32's RTC after power-on (Thursday)
    assert r[3] == [2026, 3, 4, 2, 10, 20, 30]
    assert r[4:6] == [1850000, 1100000]  # clipped to the 0 dB range (1.1 V)
    assert r[6:] == [1, 1, "240ac4000001", 160000000, 3, 4, 5, 2]


# -- the board ops of the simulator socket, from CPython ----------------------------------------
def call(sock, op, payload=b""):
    sock.sendall(struct.pack(">BBH", op, 0, len(payload)) + payload)
    status, n = struct.unpack(">BH", sock.recv(3, socket.MSG_WAITALL))
    return status, sock.recv(n, socket.MSG_WAITALL) if n else b""


def test_watchdog_ops_are_per_connection(server):
    a = socket.create_connection(("127.0.0.1", server.port))
    b = socket.create_connection(("127.0.0.1", server.port))
    assert call(a, proto.OP_WDT, struct.pack(">I", 1000)) == (proto.ST_OK, b"")
    assert call(a, proto.OP_SLEEP_US, struct.pack(">Q", 600_000)) == (proto.ST_OK, b"")
    assert call(a, proto.OP_WDT, struct.pack(">I", 1000)) == (proto.ST_OK, b"")  # fed at 0.6 s
    # A sleep across the deadline stops there: the watchdog fired at 1.6 s.
    assert call(a, proto.OP_SLEEP_US, struct.pack(">Q", 5_000_000)) == (proto.ST_WDT_RESET, struct.pack(">Q", 1_600_000))
    assert call(b, proto.OP_TICKS_MS) == (proto.ST_OK, struct.pack(">I", 1600))  # b has no watchdog
    assert call(a, proto.OP_TICKS_MS)[0] == proto.ST_OK  # fired once, then off
    call(a, proto.OP_WDT, struct.pack(">I", 2000))
    status, body = call(a, proto.OP_HALT)  # the app stopped: the watchdog fires at its deadline
    assert (status, body) == (proto.ST_WDT_RESET, struct.pack(">Q", 3_600_000))
    call(a, proto.OP_WDT, struct.pack(">I", 2000))
    assert call(a, proto.OP_BOOT_AT, struct.pack(">QB", 10_000_000, 4)) == (proto.ST_OK, struct.pack(">Q", 10_000_000))
    assert call(a, proto.OP_HALT) == (proto.ST_OK, b"")  # a deep-sleep reset stopped the watchdog
    status, body = call(a, proto.OP_NOW)
    now_us, wall_s, trusted = struct.unpack(">QdB", body)
    assert now_us == 10_000_000 and wall_s == server.rig.clock.wall_s() and trusted == 1
    assert [n.boots for n in server.nodes.values() if n.boots] == [{"deepsleep": 1}]
    a.close()
    b.close()
