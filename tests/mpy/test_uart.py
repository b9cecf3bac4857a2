"""``machine.UART`` of the MicroPython shim over a pty: a CPython test holds the master end
(``os.openpty()``), the unix port opens the slave named by ``CIVICEDGE_UART1``. Every byte
value must pass unchanged both ways (raw mode: no echo, no CR/LF mapping, no XON/XOFF, no
^C/^D), reads time out as MicroPython's do (None), and a timed-out read costs its timeout on
the virtual clock."""

import os
import select
import subprocess
import textwrap

import pytest

from simulators.i2c_server import SimServer
from simulators.mpyrun import REPO, SHIM, micropython_binary

TRICKY = bytes([0x00, 0x0A, 0x0D, 0x11, 0x13, 0x03, 0x04, 0x1A, 0x7F, 0xFF, 0x0A, 0x0D, 0x0D, 0x0A])
ALL_BYTES = bytes(range(256))


class Board:
    """A ``micropython -c code`` process with UART(1) on a fresh pty; its stdout lines are the
    synchronisation points."""

    def __init__(self, code, server, uart=True):
        self.master, self.slave = os.openpty()
        env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(SHIM), str(REPO)]), CIVICEDGE_SIM=server.address)
        env.pop("CIVICEDGE_UART1", None)
        if uart:
            env["CIVICEDGE_UART1"] = os.ttyname(self.slave)
        self.proc = subprocess.Popen([micropython_binary(), "-X", "heapsize=100K", "-c", textwrap.dedent(code)],
                                     env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def line(self):
        """The board's next stdout line (fails the test on EOF, with stderr)."""
        text = self.proc.stdout.readline()
        if not text:
            raise AssertionError("micropython ended early: %s" % self.proc.stderr.read())
        return text.rstrip("\n")

    def expect(self, text):
        got = self.line()
        assert got == text, got

    def write(self, data):
        os.write(self.master, data)

    def read_exactly(self, n, timeout_s=5.0):
        data = b""
        while len(data) < n:
            ready, _, _ = select.select([self.master], [], [], timeout_s)
            assert ready, "only %r of %d bytes arrived" % (data, n)
            data += os.read(self.master, n - len(data))
        return data

    def nothing_more(self, wait_s=0.2):
        ready, _, _ = select.select([self.master], [], [], wait_s)
        return not ready

    def finish(self):
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        os.close(self.master)
        os.close(self.slave)
        return out


@pytest.fixture
def server():
    with SimServer() as srv:
        yield srv


def test_every_byte_passes_unchanged_both_ways(server):
    board = Board("""
        import sys
        from machine import UART
        u = UART(1, 115200, tx=17, rx=16, timeout=2000)
        print("READY")
        got = u.read(%d)
        print("GOT", got.hex())
        u.write(got)
        u.write(bytes(range(256)))
        print("SENT")
    """ % len(TRICKY), server)
    board.expect("READY")
    board.write(TRICKY)
    assert board.line() == "GOT " + TRICKY.hex()
    board.expect("SENT")
    assert board.read_exactly(len(TRICKY) + 256) == TRICKY + ALL_BYTES
    assert board.nothing_more()  # no echo of what the test wrote
    board.finish()


def test_timeouts_return_none_and_cost_virtual_time(server):
    board = Board("""
        import simclock
        from machine import UART
        u = UART(1, baudrate=9600, timeout=250)
        t0 = simclock.now_us()
        nothing = u.read(4)
        t1 = simclock.now_us()
        print("EMPTY", nothing, t1 - t0, u.readline(), u.any())
        u.init(timeout=1500)
        print("READY")
        print("PART", u.read(10), u.readinto(bytearray(4)))
        print("READY")
        print("LINE", u.readline(), u.readline())
        u.deinit()
        try:
            u.read(1)
        except OSError as e:
            print("DEINIT", e.errno)
    """, server)
    assert board.line() == "EMPTY None 250000 None 0"
    board.expect("READY")
    board.write(b"abc")  # fewer than asked: read gives what came, readinto the rest (none)
    assert board.line() == "PART b'abc' None"
    board.expect("READY")
    board.write(b"+EVT:JOINED\r\nOK")  # one whole line, then a partial one at the timeout
    assert board.line() == r"LINE b'+EVT:JOINED\r\n' b'OK'"
    assert board.line() == "DEINIT 9"
    board.finish()


def test_any_readinto_and_a_line_in_pieces(server):
    board = Board("""
        from machine import UART
        u = UART(1, 115200, timeout=2000)
        print("READY")
        while not u.any():
            pass
        buf = bytearray(8)
        n = u.readinto(buf)
        print("INTO", n, bytes(buf[:n]).hex())
        print("READY")
        print("LINE", u.readline())
    """, server)
    board.expect("READY")
    board.write(b"\x11\x00\x13\n\r")
    assert board.line() == "INTO 5 1100130a0d"
    board.expect("READY")
    board.write(b"AT+VER")
    board.write(b"=4.1\r\n")
    assert board.line() == r"LINE b'AT+VER=4.1\r\n'"
    board.finish()


def test_a_uart_the_simulator_did_not_wire_is_a_sim_error(server):
    board = Board("""
        import simlink
        from machine import UART
        try:
            UART(3)
        except ValueError as e:
            print("NO SUCH UART", e)
        try:
            UART(1)
        except simlink.SimError as e:
            print("UNWIRED", e)
    """, server, uart=False)
    assert board.line() == "NO SUCH UART UART(3) does not exist"
    assert board.line().startswith("UNWIRED CIVICEDGE_UART1 is not set")
    board.finish()
