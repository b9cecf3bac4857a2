"""The simulator socket's framing (simulators/i2c_server.py): requests are read into one
buffer per connection, so one that arrives a byte at a time, two in one segment, and the
largest payload the protocol allows are each answered exactly once, in order, by a thread per
connection and by the fleet's ``BoardHub`` alike."""

import socket
import struct

import pytest

from simulators import i2c_server as proto
from tests.sim.test_i2c_hub import serving


def _request(op, addr=0, payload=b""):
    return struct.pack(">BBH", op, addr, len(payload)) + payload


def _reply(sock):
    def read(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "server closed the connection"
            data += chunk
        return data
    status, n = struct.unpack(">BH", read(3))
    return status, read(n)


@pytest.fixture(params=["thread", "hub"])
def conn(request):
    """A connection to a server with a thread per connection, or on a ``BoardHub``."""
    with serving(request.param == "hub") as srv:
        srv.rig.setup([{"model": "echo", "address": 0x20}])
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            yield s
        finally:
            s.close()


def test_a_request_sent_a_byte_at_a_time_is_answered_once(conn):
    for b in _request(proto.OP_WRITE, 0x20, bytes([1, 0xAB, 0xCD])):
        conn.sendall(bytes([b]))
    assert _reply(conn) == (proto.ST_OK, b"\x00\x03")
    conn.sendall(_request(proto.OP_WRITE, 0x20, bytes([1])))
    assert _reply(conn) == (proto.ST_OK, b"\x00\x01")
    conn.sendall(_request(proto.OP_READ, 0x20, b"\x00\x02"))
    assert _reply(conn) == (proto.ST_OK, bytes([0xAB, 0xCD]))


def test_two_requests_in_one_segment_get_two_replies_in_order(conn):
    conn.sendall(_request(proto.OP_SCAN) + _request(proto.OP_NOW))
    assert _reply(conn) == (proto.ST_OK, bytes([0x20]))
    status, body = _reply(conn)
    assert status == proto.ST_OK and len(body) == struct.calcsize(">QdB")


def test_the_largest_payload_is_read_whole(conn):
    data = bytes([1]) + bytes(range(256)) * 255 + bytes(range(254))  # 65,535 bytes
    assert len(data) == proto.MAX_PAYLOAD
    # to an address nobody answers: the NACK comes after the whole payload was taken, and
    # the request behind it is read from where this one ended
    conn.sendall(_request(proto.OP_WRITE, 0x21, data) + _request(proto.OP_SCAN))
    assert _reply(conn) == (proto.ST_OSERROR, b"ENODEV")
    assert _reply(conn) == (proto.ST_OK, bytes([0x20]))
