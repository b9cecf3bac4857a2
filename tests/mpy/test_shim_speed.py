"""What the fleet's speed rests on in the shim, checked for sameness: a real wait for a far end
that the simulator says is up costs no virtual time however long it takes (``simlink.patient``,
``SimServer.far_end``); ``board.py --flash-read`` and ``--code-rom`` change how littlefs
reads and where imports come from, never what the firmware sees, and ``--late-collect``
leaves a wake's first collection to the firmware's with the same result; ``coderom`` writes the
ROMFS format byte for byte as ``mpremote romfs`` does."""

import contextlib
import io
import json
import os
import socket
import ssl
import subprocess
import textwrap
import threading
import time

import pytest
from mpremote.romfs import VfsRomWriter

from simulators.broker import make_test_tls
from simulators.fleet.node_board import FLASH_READ
from simulators.i2c_server import SimServer
from simulators.mpyrun import REPO, SHIM, micropython_binary, run_micropython

BOARD_PY = str(SHIM / "board.py")


@pytest.fixture
def server():
    with SimServer() as srv:
        yield srv


def _far_end(answer_after_s):
    """A listener whose one connection gets b"ack" ``answer_after_s`` real s after it is
    accepted (None: never); returns ``(port, close)``."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve():
        conn, _ = listener.accept()
        with conn:
            if answer_after_s is not None and not done.wait(answer_after_s):
                conn.sendall(b"ack")
            done.wait(30)

    threading.Thread(target=serve, daemon=True).start()

    def close():
        done.set()
        listener.close()
    return listener.getsockname()[1], close


POLL = """
    import json, socket, simclock, simlink
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", %d)[0][-1])
    p = simclock.VirtualSelect().poll()
    p.register(s, 1)
    simlink.now_us()  # the clock known before the wait
    t0 = simlink.now_us()
    got = p.poll(1000)
    t1 = simlink.now_us()
    print(json.dumps([len(got), t1 - t0, simlink.counts[4], simlink.counts[5]]))
"""


@pytest.mark.parametrize("far_end, answer_after_s, max_ms, expect", [
    (True, 0.3, 60000, [1, 0, 0, 0]),          # up: waits past REAL_WAIT_MS, no virtual time
    (None, None, 60000, [0, 1000000, 1, 0]),   # unknown (a board on its own): the timeout passes
    (False, None, 60000, [0, 1000000, 1, 0]),  # down: the timeout passes, no long real wait
    (True, None, 100, [0, 1000000, 1, 1]),     # up but silent past REAL_WAIT_MAX_MS: counted
])
def test_a_socket_wait_costs_virtual_time_only_when_the_far_end_is_not_up(server, far_end, answer_after_s,
                                                                            max_ms, expect):
    server.far_end = far_end
    port, close = _far_end(answer_after_s)
    try:
        rc, out, err = run_micropython(["-c", textwrap.dedent(POLL % port)], server=server, timeout_s=60,
                                       env={"CIVICEDGE_REAL_WAIT_MS": "50", "CIVICEDGE_REAL_WAIT_MAX_MS": str(max_ms)})
    finally:
        close()
    assert rc == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == expect


def _tls_far_end(tmp_path, script):
    """A TLS listener (a throw-away CA's certificate for 127.0.0.1) whose one connection is
    served by ``script(tls_conn)``; returns ``(port, the CA's PEM path, close)``."""
    paths = make_test_tls(str(tmp_path))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(paths["certfile"], paths["keyfile"])
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve():
        try:
            conn, _ = listener.accept()
            with ctx.wrap_socket(conn, server_side=True) as t:
                script(t)
                done.wait(30)
        except OSError:
            pass  # the test is over (the listener closed)

    threading.Thread(target=serve, daemon=True).start()

    def close():
        done.set()
        listener.close()
    return listener.getsockname()[1], paths["cafile"], close


TLS_CLIENT = """
    import json, socket, simclock, simlink, simsocket, sys, tls
    sys.path.insert(0, %r)
    from app.mqtt_tls import pem_to_der
    s = simsocket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", %d)[0][-1])
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    ctx.load_verify_locations(pem_to_der(open(%r, "rb").read()))
    t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    stale = simsocket.socket()  # another socket the firmware made, closed: looked past
    stale.close()

    def ready(timeout):
        p = simclock.VirtualSelect().poll()
        p.register(t, 1)
        got = p.poll(timeout)
        return [type(o).__name__ for o, _ in got]

    out = {"empty": ready(0)}
    t.write(b"go")
    t0 = simlink.now_us()
    out["wait"] = ready(1000)
    out["virtual_us"] = simlink.now_us() - t0
    out["part"] = t.recv(2)
    out["held"] = ready(0)  # the rest of the record is in the TLS layer, not on the socket
    out["rest"] = t.recv(64)
    out["drained"] = ready(0)
    print(json.dumps(out))
"""


def test_a_tls_socket_wait_sees_the_answer_and_what_the_tls_layer_holds(server, tmp_path):
    # the look without the port's sleep (simclock._VirtualPoll) must give what the port's
    # poll gives: nothing before the answer, the answer (0 virtual time: the far end is up),
    # the part of a record read already held in the TLS layer, nothing once it is drained
    server.far_end = True

    def script(t):
        assert t.recv(16) == b"go"
        time.sleep(0.3)  # longer than CIVICEDGE_REAL_WAIT_MS: the far end is slow, not gone
        t.sendall(b"answer")

    port, ca, close = _tls_far_end(tmp_path, script)
    try:
        rc, out, err = run_micropython(["-c", textwrap.dedent(TLS_CLIENT % (str(REPO / "firmware"), port, ca))],
                                       server=server, timeout_s=60,
                                       env={"CIVICEDGE_REAL_WAIT_MS": "50", "CIVICEDGE_REAL_WAIT_MAX_MS": "60000"})
    finally:
        close()
    assert rc == 0, err
    got = json.loads(out.strip().splitlines()[-1])
    assert got == {"empty": [], "wait": ["SSLSocket"], "virtual_us": 0, "part": "an", "held": ["SSLSocket"],
                   "rest": "swer", "drained": []}


def test_a_uart_read_waits_for_a_far_end_that_is_up_without_virtual_time(server):
    server.far_end = True
    master, slave = os.openpty()
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(SHIM), str(REPO)]), CIVICEDGE_SIM=server.address,
               CIVICEDGE_UART1=os.ttyname(slave), CIVICEDGE_REAL_WAIT_MS="50", CIVICEDGE_REAL_WAIT_MAX_MS="60000")
    code = """
        import simclock
        from machine import UART
        u = UART(1, baudrate=9600, timeout=100)
        t0 = simclock.now_us()
        print("READY")
        line = u.readline()
        print("LINE", line, simclock.now_us() - t0)
    """
    proc = subprocess.Popen([micropython_binary(), "-X", "heapsize=100K", "-c", textwrap.dedent(code)], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(0.3)  # longer than CIVICEDGE_REAL_WAIT_MS: the far end is slow, not gone
        os.write(master, b"ack\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    assert out.strip() == "LINE b'ack\\n' 0"


def _tree(root):
    files = {"app/__init__.py": b"", "app/x.mpy": bytes(range(256)) * 3, "lib/drivers/a.mpy": b"M\x06" + b"\x00" * 200,
             "lib/protocol/b.py": b"VALUE = 7\n" * 20, "config.json": b"{}", "data/seg0": b"\xff" * 100}
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _reference_rom(root):
    """``mpremote romfs``'s image of the code files (.py, .mpy) under ``root``."""
    w = VfsRomWriter()

    def walk(d):
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            if os.path.isdir(p):
                if any(f.endswith((".py", ".mpy")) for _, _, fs in os.walk(p) for f in fs):
                    w.opendir(name)
                    walk(p)
                    w.closedir()
            elif name.endswith((".py", ".mpy")):
                with open(p, "rb") as f:
                    w.mkfile(name, f.read())
    with contextlib.redirect_stdout(io.StringIO()):
        walk(str(root))
    return w.finalise()


def test_coderom_writes_the_romfs_format_as_mpremote_does_and_it_imports(tmp_path):
    _tree(tmp_path / "tree")
    out = tmp_path / "mine.rom"
    rc, text, err = run_micropython(["-c", textwrap.dedent("""
        import coderom, sys
        image = coderom.build(%r)
        f = open(%r, "wb")
        f.write(image)
        f.close()
        coderom.mount(image, "/code")
        sys.path[:] = ["/code/lib"]
        import protocol.b
        print(protocol.b.VALUE, protocol.b.__file__)
    """ % (str(tmp_path / "tree"), str(out)))], sim=False, heapsize="200K")
    assert rc == 0, err
    assert text.split() == ["7", "/code/lib/protocol/b.py"]
    assert out.read_bytes() == _reference_rom(tmp_path / "tree")


FIRMWARE = {
    "main.py": """
import json, machine, sys
import probe
try:
    with open("count") as f:
        n = int(f.read())
except OSError:
    n = 0
with open("count", "w") as f:
    f.write(str(n + 1))
print("APP " + json.dumps({"n": n + 1, "probe": probe.VALUE, "from": probe.__file__.split("/")[1],
                           "cause": machine.reset_cause(), "path": sys.path}))
machine.deepsleep(1000)
""",
    "lib/probe.py": "VALUE = 41 + 1\n",
}


def _run_board(server, tmp_path, name, *options):
    fw = tmp_path / ("fw-" + name)
    for rel, text in FIRMWARE.items():
        (fw / rel).parent.mkdir(parents=True, exist_ok=True)
        (fw / rel).write_text(text)
    args = [BOARD_PY, "--flash", str(tmp_path / (name + ".img")), "--wakes", "3", "--install", str(fw)] + list(options)
    rc, out, err = run_micropython(args, server=server, heapsize="300K", timeout_s=120)
    assert rc == 0, out[-2000:] + err[-2000:]
    apps = [json.loads(ln[4:]) for ln in out.splitlines() if ln.startswith("APP ")]
    board = [json.loads(ln[6:]) for ln in out.splitlines() if ln.startswith("BOARD ")][0]
    return apps, board


def test_flash_read_and_code_rom_change_nothing_the_firmware_sees(tmp_path):
    with SimServer() as s1:
        plain, b1 = _run_board(s1, tmp_path, "plain")
    with SimServer() as s2:
        fast, b2 = _run_board(s2, tmp_path, "fast", "--flash-read", str(FLASH_READ), "--code-rom")
    assert [a["from"] for a in plain] == ["flash"] * 4
    assert [a["from"] for a in fast] == ["code"] * 4  # imported from the RAM copy
    # the code ROM holds every code file the flash does: the flash is off the import path, so
    # the imports that miss (json: a built-in, looked for on the path first) skip littlefs
    assert {tuple(a["path"]) for a in plain} == {("/flash", "/flash/lib", ".frozen")}
    assert {tuple(a["path"]) for a in fast} == {("/code", "/code/lib", ".frozen")}
    strip = [{k: v for k, v in a.items() if k not in ("from", "path")} for a in plain]
    assert strip == [{k: v for k, v in a.items() if k not in ("from", "path")} for a in fast]
    assert [a["n"] for a in fast] == [1, 2, 3, 4] and {a["probe"] for a in fast} == {42}
    assert b1["virtual_s"] == b2["virtual_s"] and b1["resets"] == b2["resets"]


LATE_FIRMWARE = {
    "boot.py": "import gc\ngc.collect()\n",
    "main.py": """
import gc, json, machine
free = gc.mem_free()  # after boot.py's collection: the old boot's garbage is gone
garbage = [bytearray(1000) for _ in range(40)]  # left for the next boot's collection
with open("count", "a") as f:
    f.write("x")
with open("count") as f:
    n = len(f.read())
print("APP " + json.dumps({"n": n, "free": free, "cause": machine.reset_cause()}))
machine.deepsleep(1000)
""",
}


def test_late_collect_leaves_the_old_boot_to_the_firmwares_first_collection(tmp_path):
    runs = {}
    for name, options in (("a", ()), ("b", ("--late-collect",))):  # (names of one length: the same argv)
        fw = tmp_path / ("late-fw-" + name)
        fw.mkdir()
        for rel, text in LATE_FIRMWARE.items():
            (fw / rel).write_text(text)
        args = [BOARD_PY, "--flash", str(tmp_path / (name + ".img")), "--wakes", "3", "--install", str(fw),
                "--code-rom"] + list(options)
        with SimServer() as server:
            rc, out, err = run_micropython(args, server=server, heapsize="300K", timeout_s=120)
        assert rc == 0, out[-2000:] + err[-2000:]
        runs[name] = ([json.loads(ln[4:]) for ln in out.splitlines() if ln.startswith("APP ")],
                      [json.loads(ln[6:]) for ln in out.splitlines() if ln.startswith("BOARD ")][0])
    (apps, board), (late_apps, late_board) = runs["a"], runs["b"]
    assert [a["n"] for a in late_apps] == [1, 2, 3, 4]
    assert [(a["n"], a["cause"]) for a in late_apps] == [(a["n"], a["cause"]) for a in apps]
    # each wake's free heap after boot.py's collection, from the power-on boot's (the option
    # is in argv), the same within a few 16-byte blocks: the collector scans the C stack
    # conservatively, and boot.py collects from deeper frames than the board
    first, late_first = apps[0]["free"], late_apps[0]["free"]
    for a, b in zip(apps[1:], late_apps[1:]):
        assert abs((a["free"] - first) - (b["free"] - late_first)) <= 64, (apps, late_apps)
    assert late_board["virtual_s"] == board["virtual_s"] and late_board["resets"] == board["resets"]
    assert late_board["mem_free"][0] > 0 and late_board["mem_free"][1:] == [-1] * 3  # (the power-on boot: measured)


def test_late_collect_needs_the_code_rom(tmp_path):
    with SimServer() as server:
        rc, out, err = run_micropython([BOARD_PY, "--flash", str(tmp_path / "x.img"), "--late-collect"],
                                       server=server, heapsize="300K", timeout_s=60)
    assert rc != 0 and "--late-collect needs --code-rom" in out + err


ROM_AREA = """
import os, sys, uctypes, coderom
area = coderom.area(os.getenv("CIVICEDGE_ROM_AREA"))
image = coderom.build(%r, area)
small = coderom.build(%r, (area[0], len(image) - 1))
coderom.mount(image, "/code")
sys.path[:] = ["/code/lib"]
import protocol.b
print(area[1], uctypes.addressof(image) == area[0], uctypes.addressof(small) == area[0], bytes(small) == bytes(image),
      protocol.b.VALUE)
"""


def test_the_fleets_launcher_gives_the_code_rom_memory_outside_the_heap(tmp_path):
    # nodes.interpreter() maps ROM_AREA_K outside MicroPython's heap and names it in
    # $CIVICEDGE_ROM_AREA: the image is built there (no heap taken, never scanned by the
    # collector) when it fits, else in the heap, the same bytes either way
    from simulators.fleet import nodes
    from simulators.mpyrun import micropython_env

    _tree(tmp_path / "tree")
    tree = str(tmp_path / "tree")
    r = subprocess.run(nodes.interpreter() + ["-X", "heapsize=200K", "-c", textwrap.dedent(ROM_AREA % (tree, tree))],
                       env=micropython_env(None, sim=False), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0].startswith("coderom: the image (") and "larger than the ROM area" in r.stdout
    assert r.stdout.splitlines()[1].split() == [str(nodes.ROM_AREA_K * 1024), "True", "False", "True", "7"]


@pytest.mark.parametrize("spec, expect", [(None, None), ("", None), ("4096 512", (4096, 512))])
def test_coderom_area_reads_the_launchers_variable(spec, expect):
    rc, out, err = run_micropython(["-c", "import coderom; print(coderom.area(%r))" % (spec,)], sim=False)
    assert rc == 0, err
    assert out.strip() == str(expect)


def test_coderom_area_refuses_a_malformed_variable():
    rc, out, err = run_micropython(["-c", "import coderom\ntry:\n coderom.area('12')\nexcept ValueError as e:\n print(e)"],
                                   sim=False)
    assert rc == 0, err
    assert "'ADDRESS SIZE'" in out and "'12'" in out
