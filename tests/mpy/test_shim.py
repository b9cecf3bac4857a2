"""The simulator socket (simulators/i2c_server.py) from CPython, and the MicroPython side
(simulators/mpy/: machine, simlink, simclock, simrig; tests/mpy/run_checks.py) from the unix
port. The bus behaviour both runtimes share is in tests/behaviour/bus_checks.py."""

import json
import socket
import struct
import textwrap
import threading
import types

import pytest

from simulators import i2c_server as proto
from simulators.i2c_server import SimServer
from simulators.mpyrun import run_micropython
from tests.mpy.test_mpy_behaviour import RUN_CHECKS, parse_results


# -- the server, from CPython -----------------------------------------------------------------
class Client:
    def __init__(self, server):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)

    def call(self, op, addr=0, payload=b""):
        self.sock.sendall(struct.pack(">BBH", op, addr, len(payload)) + payload)
        head = self._read(3)
        status, n = struct.unpack(">BH", head)
        return status, self._read(n)

    def control(self, method, *args):
        return self.call(proto.OP_CONTROL, 0, json.dumps([method, list(args)]).encode())

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "server closed the connection"
            data += chunk
        return data


@pytest.fixture
def server():
    with SimServer() as srv:
        yield srv


def test_bus_ops_over_the_socket(server):
    c = Client(server)
    assert c.control("setup", [{"model": "echo", "address": 0x20}]) == (proto.ST_OK, b"[32]")
    assert c.call(proto.OP_SCAN) == (proto.ST_OK, bytes([0x20]))
    assert c.call(proto.OP_WRITE, 0x20, bytes([1, 0xAB, 0xCD])) == (proto.ST_OK, b"\x00\x03")
    c.call(proto.OP_WRITE, 0x20, bytes([1]))
    assert c.call(proto.OP_READ, 0x20, b"\x00\x02") == (proto.ST_OK, bytes([0xAB, 0xCD]))


def test_bus_errors_carry_errno_names(server):
    c = Client(server)
    c.control("setup", [{"model": "echo", "address": 0x20}])
    assert c.call(proto.OP_READ, 0x31, b"\x00\x01") == (proto.ST_OSERROR, b"ENODEV")
    c.control("fault", None, {"kind": "stuck_bus"})
    assert c.call(proto.OP_WRITE, 0x20, b"\x00") == (proto.ST_OSERROR, b"ETIMEDOUT")


def test_unknown_command_and_bugs_are_json_errors(server):
    c = Client(server)
    c.control("setup", [{"model": "echo", "address": 0x20, "size": 2}])
    status, body = c.call(proto.OP_WRITE, 0x20, bytes([5]))
    err = json.loads(body)
    assert status == proto.ST_UNKNOWN_COMMAND and err["type"] == "UnknownCommand"
    assert "no register 0x05" in err["message"] and err["where"].startswith("testdevice.py:")
    status, body = c.control("power", 0x20, "sideways")
    assert status == proto.ST_ERROR and json.loads(body)["type"] == "ValueError"
    for op, payload in ((0x7F, b""), (proto.OP_SLEEP_US, b"\x01"), (proto.OP_CONTROL, b"{nope"),
                        (proto.OP_CONTROL, b'["__init__", []]')):
        status, body = c.call(op, 0, payload)
        assert status == proto.ST_ERROR and json.loads(body)["type"] == "ProtocolError", (op, payload, body)


def test_clock_ops_run_on_the_virtual_clock(server):
    c = Client(server)
    c.control("reset", {"ticks_start_ms": 1000, "wall_trusted": False})
    assert c.call(proto.OP_SLEEP_US, 0, struct.pack(">Q", 2_500_000)) == (proto.ST_OK, b"")
    assert struct.unpack(">I", c.call(proto.OP_TICKS_MS)[1]) == (3500,)
    assert struct.unpack(">I", c.call(proto.OP_TICKS_US)[1]) == (3_500_000,)
    wall, trusted = struct.unpack(">dB", c.call(proto.OP_WALL)[1])
    assert wall == server.rig.clock.wall_s() and trusted == 0
    assert json.loads(c.control("now_s")[1]) == 2.5


def ext(c, op, payload=b"", lag_us=0, deadline_us=0, addr=0):
    """An extended request (OP_EXT): ``(status, payload, trailer tuple or None)``."""
    status, body = c.call(op | proto.OP_EXT, addr, proto.EXT_HEAD.pack(lag_us, deadline_us) + payload)
    if status in (proto.ST_OK, proto.ST_OSERROR):
        n = len(body) - proto.TRAILER.size
        return status, body[:n], proto.TRAILER.unpack(body[n:])
    return status, body, None


def test_extended_requests_sleep_first_and_return_the_clock(server):
    c = Client(server)
    c.control("setup", [{"model": "echo", "address": 0x20}])
    gen = server.wifi.generation
    status, out, (now, wall, trusted, ap) = ext(c, proto.OP_TICKS_MS, lag_us=1_500_000)
    assert (status, struct.unpack(">I", out)[0], now, ap) == (proto.ST_OK, 1500, 1_500_000, gen)
    assert wall == server.rig.clock.wall_s() and trusted == 1
    # a bus error still tells the clock (the sleep it carried happened)
    status, out, trailer = ext(c, proto.OP_READ, b"\x00\x01", lag_us=500_000, addr=0x31)
    assert (status, out, trailer[0]) == (proto.ST_OSERROR, b"ENODEV", server.rig.clock.now_us)
    assert trailer[0] >= 2_000_000
    # the access point's generation changes with its settings, however they are changed
    c.control("wifi", {"up": False})
    after_control = ext(c, proto.OP_NOW)[2][3]
    with server.lock:
        server.wifi.update(rssi=-70)
    assert len({gen, after_control, ext(c, proto.OP_NOW)[2][3]}) == 3
    status, body, trailer = c.call(proto.OP_TICKS_MS | proto.OP_EXT, 0, b"\x00" * 3) + (None,)
    assert status == proto.ST_ERROR and json.loads(body)["type"] == "ProtocolError"


def test_extended_requests_carry_the_watchdog(server):
    c = Client(server)
    assert ext(c, proto.OP_WDT, struct.pack(">I", 1000))[0] == proto.ST_OK  # armed at 0: fires at 1 s
    status, _, (now, *_) = ext(c, proto.OP_NOW, lag_us=800_000, deadline_us=1_700_000)  # fed at 0.7 s
    assert (status, now, json.loads(c.control("nodes")[1])[0]["wdt_deadline_us"]) == (proto.ST_OK, 800_000, 1_700_000)
    # a sleep it carries past the deadline fires it there, and the request is not performed
    status, body, _ = ext(c, proto.OP_SLEEP_US, struct.pack(">Q", 5), lag_us=2_000_000)
    assert (status, body) == (proto.ST_WDT_RESET, struct.pack(">Q", 1_700_000))
    assert server.rig.clock.now_us == 1_700_000
    # a feed that comes after the deadline has passed does not save it
    ext(c, proto.OP_WDT, struct.pack(">I", 1000))  # fires at 2.7 s
    c.call(proto.OP_SLEEP_US, 0, struct.pack(">Q", 1_000_000))  # 2.7 s: not yet past it
    server.rig.clock.advance_us(10)
    status, body, _ = ext(c, proto.OP_NOW, deadline_us=9_000_000)
    assert (status, body) == (proto.ST_WDT_RESET, struct.pack(">Q", 2_700_010))


def test_clients_share_one_rig_and_stop_closes_them():
    srv = SimServer().start()
    a, b = Client(srv), Client(srv)
    a.control("setup", [{"model": "echo", "address": 0x22}])
    assert b.call(proto.OP_SCAN) == (proto.ST_OK, b"\x22")
    srv.stop(timeout_s=2)
    assert a.sock.recv(1) == b"" and b.sock.recv(1) == b""
    assert not any(t.is_alive() for t in srv._threads)
    with pytest.raises(OSError):
        Client(srv)


# -- the MicroPython side ---------------------------------------------------------------------
def mpy(code, server=None, **kw):
    """Run ``code`` under the unix port; it prints one JSON line, returned decoded."""
    rc, out, err = run_micropython(["-c", textwrap.dedent(code)], server=server, timeout_s=30, **kw)
    assert rc == 0, "micropython exit %s\n%s\n%s" % (rc, out, err)
    return json.loads(out.strip().splitlines()[-1])


def test_machine_is_the_shim_with_esp32_errors():
    r = mpy("""
        import errno, json, machine
        from simrig import RemoteRig
        rig = RemoteRig()
        rig.setup([{"model": "echo", "address": 0x20}])
        i2c = machine.SoftI2C(scl=machine.Pin(22), sda=machine.Pin(21), freq=100000)
        acks = i2c.writevto(0x20, (b"\\x02", b"\\x05\\x06"))
        i2c.writeto(0x20, b"\\x02")
        data = i2c.readfrom(0x20, 2)
        try:
            i2c.writeto(0x40, b"\\x00")
        except OSError as e:
            nack = [e.errno == errno.ENODEV, e.args]
        print(json.dumps([machine.__file__, acks, list(data), type(data).__name__, i2c.scan(), nack]))
    """)
    assert r[0].endswith("simulators/mpy/machine.py")
    assert r[1:5] == [3, [5, 6], "bytes", [0x20]]
    assert r[5] == [True, [19]]  # OSError(ENODEV) with no message, as machine.I2C on the ESP32


def test_pin_keeps_its_level():
    r = mpy("""
        import json
        from machine import Pin
        out = Pin(5, Pin.OUT, value=1)
        a = out.value()
        out.off()
        b = out()
        out.on()
        inp = Pin(4, Pin.IN, Pin.PULL_UP)
        print(json.dumps([a, b, out.value(), inp.value(), inp.mode() == Pin.IN, inp.pull() == Pin.PULL_UP]))
    """)
    assert r == [1, 0, 1, 1, True, True]


def test_errors_that_are_not_bus_faults_raise_sim_error():
    r = mpy("""
        import json, simlink
        from simrig import RemoteRig
        rig = RemoteRig()
        rig.setup([{"model": "echo", "address": 0x20, "size": 2}])
        out = []
        for fn, args in ((rig.bus.writeto, (0x20, b"\\x09")), (rig.fault, (0x55, {"kind": "nack"})),
                         (simlink.call, (0x3F,))):
            try:
                fn(*args)
                out.append(None)
            except Exception as e:
                out.append([type(e).__name__, isinstance(e, simlink.SimError), isinstance(e, OSError), str(e)])
        print(json.dumps(out))
    """)
    unknown, rig_error, bad_op = r
    assert unknown[:3] == ["UnknownCommand", True, False] and "no register 0x09" in unknown[3]
    assert rig_error[:3] == ["SimError", True, False] and "ValueError: no simulated device at 0x55" in rig_error[3]
    assert bad_op[:3] == ["SimError", True, False] and "unknown op 0x3F" in bad_op[3]


def test_micropython_runs_on_the_servers_virtual_time():
    with SimServer() as srv:
        r = mpy("""
            import json
            from simclock import SimClock
            c = SimClock()
            t0 = c.ticks_ms()
            c.sleep_ms(1234)
            c.sleep_us(5)
            print(json.dumps([t0, c.ticks_ms(), c.ticks_us(), c.wall_trusted()]))
        """, server=srv)
        assert r == [0, 1234, 1234005, True]
        assert srv.rig.clock.now_us == 1234005


def test_the_boards_clock_keeps_its_sleeps_and_feeds_for_the_next_request():
    with SimServer() as srv:
        r = mpy("""
            import json, simclock, simlink
            t = simclock.VirtualTime()
            t0 = t.ticks_ms()
            before = simlink.counts[0]
            for _ in range(1000):
                t.sleep_ms(3)
                t.ticks_ms()
            kept = simlink.counts[0] - before  # no request: sleeps and clock reads stay here
            now_kept = simlink.now_us()
            out = [t.ticks_diff(t.ticks_ms(), t0), kept, now_kept]
            simlink.flush()
            out.append(simlink.counts[0] - before)
            wdt = __import__("machine").WDT(timeout=1000)
            for _ in range(20):  # fed every 0.9 s: never fires
                t.sleep_ms(900)
                wdt.feed()
            out.append(simlink.counts[0] - before)
            try:
                t.sleep_ms(400)
                t.sleep_ms(700)  # 1.1 s since the last feed: fires at the deadline
                out.append("not fired")
            except simlink.BoardReset as e:
                out.append([e.cause, e.at_us])
            print(json.dumps(out))
        """, server=srv)
        assert r[:3] == [3000, 0, 3_000_000]
        assert r[3] == 1  # the flush: one request
        assert r[4] == 1  # arming the watchdog (posted), 20 feeds and sleeps: no request
        assert r[5] == [3, 3_000_000 + 18_000_000 + 1_000_000]
        assert srv.rig.clock.now_us == 22_000_000


def test_the_boards_sockets_are_the_ports_with_nagle_off():
    echo = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = echo.accept()
        with conn:
            conn.sendall(conn.recv(64))

    threading.Thread(target=serve, daemon=True).start()
    try:
        r = mpy("""
            import json, simsocket as socket
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(socket.getaddrinfo("127.0.0.1", %d)[0][-1])
            s.write(b"ping")
            got = s.read(4)
            socket.quick_acks()
            kept = len(socket._open)
            s.close()
            socket.quick_acks()  # a closed one is dropped
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            print(json.dumps([got.decode(), kept, len(socket._open)]))
        """ % echo.getsockname()[1])
    finally:
        echo.close()
    assert r == ["ping", 1, 0]


def test_simlink_reassembles_fragmented_responses_and_notices_a_close():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    trailer = proto.TRAILER.pack(7, 1.5e9, 1, 3)  # every extended reply ends with the clock

    def serve():  # answers in 2-byte fragments, then cuts the third response short
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            for resp in (b"\x00\x00\x1f" + bytes(range(10)) + trailer, b"\x00\x00\x19abcd" + trailer):
                conn.recv(100)
                for i in range(0, len(resp), 2):
                    conn.sendall(resp[i:i + 2])
            conn.recv(100)
            conn.sendall(b"\x00\x00\x05ab")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        r = mpy("""
            import json, simlink
            b = bytearray(10)
            simlink.call(simlink.OP_READ, 0x20, b"\\x00\\x0a", b)
            out = [list(b), list(simlink.call(simlink.OP_TICKS_MS))]
            try:
                simlink.call(simlink.OP_TICKS_MS)
            except simlink.SimError as e:
                out.append(str(e))
            print(json.dumps(out))
        """, server=types.SimpleNamespace(address="127.0.0.1:%d" % listener.getsockname()[1]))
    finally:
        t.join(10)
        listener.close()
    assert r == [list(range(10)), list(b"abcd"), "the simulator closed the connection"]


def test_without_CIVICEDGE_SIM_the_error_says_what_to_set():
    rc, out, err = run_micropython(["-c", "import machine; machine.I2C(0).scan()"], timeout_s=30, sim=False)
    assert rc != 0 and "CIVICEDGE_SIM is not set" in out + err


def test_run_checks_reports_pass_fail_and_import_errors(tmp_path):
    (tmp_path / "fake_checks.py").write_text(textwrap.dedent("""
        def check_a_passes(rig):
            rig.setup([{"model": "echo", "address": 0x20}])
            assert rig.bus.scan() == [0x20]

        def check_b_fails(rig):
            assert 1 == 2, "boom"

        def check_c_hits_unknown_command(rig):
            rig.setup([{"model": "echo", "address": 0x20, "size": 1}])
            rig.bus.writeto(0x20, b"\\x03")

        def helper_not_a_check(rig):
            raise RuntimeError
    """))
    (tmp_path / "broken_checks.py").write_text("import no_such_module\n")
    rc, out, err = run_micropython([str(RUN_CHECKS), "fake_checks", "broken_checks"], extra_path=[tmp_path])
    results, done = parse_results(out)
    assert rc == 0 and done, (out, err)
    assert sorted(results) == ["broken_checks", "fake_checks::check_a_passes", "fake_checks::check_b_fails",
                               "fake_checks::check_c_hits_unknown_command"]
    assert results["fake_checks::check_a_passes"] == "PASS"
    assert results["fake_checks::check_b_fails"].startswith("FAIL AssertionError('boom',)")
    assert "fake_checks.py\", line 7" in results["fake_checks::check_b_fails"]  # the traceback follows
    assert results["fake_checks::check_c_hits_unknown_command"].startswith("FAIL UnknownCommand(")
    assert results["broken_checks"].startswith("FAIL ImportError(")


def test_a_crashed_run_is_not_clean(tmp_path):
    (tmp_path / "exit_checks.py").write_text(textwrap.dedent("""
        import sys
        def check_a(rig):
            pass
        def check_b_exits(rig):
            sys.exit(3)
        def check_c(rig):
            pass
    """))
    rc, out, err = run_micropython([str(RUN_CHECKS), "exit_checks"], extra_path=[tmp_path])
    results, done = parse_results(out)
    assert rc == 3 and not done
    assert results == {"exit_checks::check_a": "PASS"}


def test_a_check_run_fits_the_esp32_heap():
    r = mpy("""
        import gc, json
        from simrig import RemoteRig
        import tests.behaviour.bus_checks as b
        RemoteRig()  # loads machine (simrig imports it on first use)
        gc.collect()
        free0 = gc.mem_free()
        b.check_write_then_read_back(RemoteRig())
        b.check_sleep_advances_virtual_time(RemoteRig())
        gc.collect()
        print(json.dumps([free0, gc.mem_free()]))
    """)
    assert r[0] > 64 * 1024 and r[1] > r[0] - 1024  # the shim holds little and leaks nothing
