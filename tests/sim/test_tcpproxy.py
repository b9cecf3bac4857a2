"""The fault-injecting TCP proxy against a real echo server on loopback."""

import socket
import threading
import time

import pytest

from simulators.tcpproxy import TCPProxy


@pytest.fixture
def echo():
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn):
        with conn:
            while not stop.is_set():
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()
    stop.set()
    t.join(2)
    srv.close()


def _recv_exactly(sock, n, timeout_s=5.0):
    sock.settimeout(timeout_s)
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _wait(pred, timeout_s=5.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_passes_bytes_both_ways(echo):
    with TCPProxy(*echo) as proxy:
        with socket.create_connection((proxy.host, proxy.port)) as c:
            c.sendall(b"hello civicedge")
            assert _recv_exactly(c, 15) == b"hello civicedge"
        assert proxy.counters["connections"] == 1
        assert proxy.counters["bytes_up"] == 15
        assert _wait(lambda: proxy.counters["bytes_down"] == 15)


def test_slicing_delivers_the_same_bytes(echo):
    payload = bytes(range(256)) * 8
    with TCPProxy(*echo) as proxy:
        proxy.set_slicing(7)
        with socket.create_connection((proxy.host, proxy.port)) as c:
            c.sendall(payload)
            assert _recv_exactly(c, len(payload)) == payload


def test_blackhole_discards_and_heal_restores(echo):
    with TCPProxy(*echo) as proxy:
        with socket.create_connection((proxy.host, proxy.port)) as c:
            proxy.blackhole()
            c.sendall(b"lost")
            c.settimeout(0.3)
            with pytest.raises(TimeoutError):
                c.recv(10)
            assert _wait(lambda: proxy.counters["bytes_blackholed"] >= 4)
            proxy.heal()
            c.sendall(b"found")
            assert _recv_exactly(c, 5) == b"found"


def test_reset_all_aborts_open_connections(echo):
    with TCPProxy(*echo) as proxy:
        with socket.create_connection((proxy.host, proxy.port)) as c:
            c.sendall(b"x")
            assert _recv_exactly(c, 1) == b"x"
            assert proxy.reset_all() == 1
            c.settimeout(5)
            try:
                got = c.recv(10)
            except ConnectionResetError:
                got = None
            assert got in (None, b"")
        assert proxy.counters["resets"] == 1


def test_refuse_closes_new_connections(echo):
    with TCPProxy(*echo) as proxy:
        proxy.refuse(True)
        with socket.create_connection((proxy.host, proxy.port)) as c:
            c.settimeout(5)
            try:
                got = c.recv(10)
            except ConnectionResetError:
                got = b""
            assert got == b""
        assert _wait(lambda: proxy.counters["refused"] == 1)


def test_latency_delays_but_keeps_order(echo):
    with TCPProxy(*echo) as proxy:
        proxy.set_latency(0.05)
        with socket.create_connection((proxy.host, proxy.port)) as c:
            for i in range(5):
                c.sendall(b"%d" % i)
            assert _recv_exactly(c, 5) == b"01234"
        with pytest.raises(ValueError):
            proxy.set_latency(-1)
        with pytest.raises(ValueError):
            proxy.set_slicing(-1)


def test_passing_says_whether_a_fault_stops_the_traffic(echo):
    with TCPProxy(*echo) as proxy:
        assert proxy.passing
        proxy.refuse(True)
        assert not proxy.passing
        proxy.refuse(False)
        proxy.blackhole()
        assert not proxy.passing
        proxy.heal()
        assert proxy.passing
        with socket.create_connection((proxy.host, proxy.port)) as c:
            c.sendall(b"ok")
            assert _recv_exactly(c, 2) == b"ok"
