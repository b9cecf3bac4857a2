"""Posted requests (``simulators/i2c_server.py``, ``OP_POSTED``): requests a board made without
waiting for their reply (a rail switch, the watchdog's first arm) go ahead of its next
request's op and are performed first, each after its own sleep, at the board's time; one
that fails is the reply and the op is not performed."""

import json
import struct

import pytest

from simulators import i2c_server as proto
from simulators.i2c_board import EXT_HEAD, POSTED
from tests.mpy.test_shim import Client
from tests.sim.test_i2c_hub import serving

POWER_OFF = json.dumps(["power", [None, "off"]]).encode()
POWER_ON = json.dumps(["power", [None, "on"]]).encode()


def _posted(*records):
    return b"".join(POSTED.pack(op, 0, len(body), lag) + body for op, body, lag in records)


def _call(c, op, payload=b"", posted=b"", lag=0):
    body = EXT_HEAD.pack(lag, 0)
    if posted:
        op |= proto.OP_POSTED
        body += struct.pack(">H", len(posted)) + posted
    return c.call(op | proto.OP_EXT, 0x48, body + payload)


@pytest.fixture(params=["thread", "hub"])
def board(request):
    """A server with a thread per connection, or on a ``BoardHub``, and a client."""
    with serving(request.param == "hub") as srv:
        srv.rig.setup([{"model": "tmp117", "address": 0x48}])
        yield srv, Client(srv)


def test_posted_requests_go_first_each_after_its_own_sleep(board):
    srv, c = board
    dev = srv.rig.bus.devices[0x48]
    posted = _posted((proto.OP_CONTROL, POWER_OFF, 1000), (proto.OP_WDT, struct.pack(">I", 5000), 2000),
                     (proto.OP_CONTROL, POWER_ON, 3000))
    status, body = _call(c, proto.OP_NOW, posted=posted, lag=4000)
    assert status == proto.ST_OK
    assert struct.unpack_from(">Q", body)[0] == 10_000  # every sleep, then the op
    assert dev.powered and dev.ms_since_power_on() == 4.0  # off at 1 ms, on at 6 ms: the board's times
    node, = srv.nodes.values()
    assert node.wdt_deadline_us == 3000 + 5_000_000  # armed at 3 ms, as a WDT request then would


def test_a_posted_request_that_fails_is_the_reply_and_the_op_is_not_performed(board):
    srv, c = board
    bad = json.dumps(["power", [0x55, "off"]]).encode()  # no part at 0x55
    status, body = _call(c, proto.OP_SLEEP_US, struct.pack(">Q", 7000), posted=_posted((proto.OP_CONTROL, bad, 1000)))
    assert status == proto.ST_ERROR and b"0x55" in body
    assert srv.rig.clock.now_us == 1000  # its sleep went through; the request's own did not


def test_a_watchdog_that_fires_on_a_posted_sleep_is_the_reply(board):
    srv, c = board
    assert _call(c, proto.OP_WDT, struct.pack(">I", 1))[0] == proto.ST_OK  # fires at 1 ms
    status, body = _call(c, proto.OP_NOW, posted=_posted((proto.OP_CONTROL, POWER_OFF, 5000)))
    assert status == proto.ST_WDT_RESET and struct.unpack(">Q", body)[0] == 1000
    assert srv.rig.bus.devices[0x48].powered  # the rail switch after it never happened


@pytest.mark.parametrize("posted", [b"\x00", b"\x00\x05\x20\x00", struct.pack(">H", 12) + POSTED.pack(0x20, 0, 9, 0)])
def test_malformed_posted_requests_are_an_error(board, posted):
    srv, c = board
    status, body = c.call(proto.OP_NOW | proto.OP_EXT | proto.OP_POSTED, 0, EXT_HEAD.pack(0, 0) + posted)
    assert status == proto.ST_ERROR and b"malformed posted requests" in body
