"""``BoardHub`` (simulators/i2c_hub.py): many boards' sensor servers served from one thread,
on a real ``Timeline``. A request that must wait for the fleet's time is parked, not blocking,
so the other boards go on being served and the parked one is answered when the time comes; a
board cancelled while parked is hung up on; a CONTROL request runs on a worker, so one that
blocks in real time does not hold the others. Real sockets, bounded waits."""

import contextlib
import json
import select
import struct
import threading

from simulators import i2c_server as proto
from simulators.i2c_hub import BoardHub
from simulators.i2c_server import SimServer
from simulators.fleet.timeline import Timeline
from simulators.rig import LocalRig
from simulators.clock import VirtualClock
from tests.mpy.test_shim import Client, ext


@contextlib.contextmanager
def serving(hub):
    """A started ``SimServer`` (with a started hub, if ``hub``); both stopped after."""
    board_hub = BoardHub().start() if hub else None
    try:
        with SimServer(hub=board_hub) as srv:
            yield srv
    finally:
        if board_hub is not None:
            board_hub.stop()


class Board:
    """A board on ``hub`` whose sensor server gates on ``timeline`` as ``FleetNode`` does."""

    def __init__(self, hub, timeline, name):
        self.server = SimServer(LocalRig(VirtualClock()), hub=hub).start()
        self.participant = timeline.join(name, self.server.rig.clock)
        self.server.gate = self.participant.wait_until
        self.server.gate_async = self.participant.wait_async
        self.client = Client(self.server)

    def send_sleep(self, lag_us):
        """Send an extended NOW carrying a sleep of ``lag_us``, without reading the reply."""
        self.client.sock.sendall(struct.pack(">BBH", proto.OP_NOW | proto.OP_EXT, 0, proto.EXT_HEAD.size)
                                 + proto.EXT_HEAD.pack(lag_us, 0))

    def read_now(self):
        """The reply to ``send_sleep``: the board's clock (µs) after it."""
        status, n = struct.unpack(">BH", self.client._read(3))
        body = self.client._read(n)
        assert status == proto.ST_OK
        return struct.unpack_from(">Q", body)[0]


@contextlib.contextmanager
def fleet(n, end_us=10_000_000, window_us=0):
    hub = BoardHub().start()
    timeline = Timeline(end_us=end_us, window_us=window_us)
    boards = [Board(hub, timeline, "b%d" % i) for i in range(n)]
    try:
        yield hub, timeline, boards
    finally:
        for b in boards:
            b.client.sock.close()
            b.server.stop()
        hub.stop()


def test_a_parked_request_is_answered_when_the_others_reach_its_time():
    with fleet(2) as (hub, timeline, (a, b)):
        a.send_sleep(5_000)            # a wants 5 ms; b, running at 0, holds the time
        assert ext(b.client, proto.OP_TICKS_MS, lag_us=2_000)[2][0] == 2_000  # served meanwhile
        assert select.select([a.client.sock], [], [], 0.2)[0] == []  # nothing for a yet
        b.send_sleep(8_000)            # b sleeps to 10 ms: a goes first, at its time
        assert a.read_now() == 5_000
        a.send_sleep(10_000)           # a to 15 ms: b wakes at 10 ms
        assert b.read_now() == 10_000
        assert hub.parked >= 2


def test_a_board_that_leaves_while_parked_is_hung_up_on():
    with fleet(2) as (hub, timeline, (a, b)):
        a.send_sleep(5_000)  # held back by b, running at 0
        a.participant.leave()  # its process died: the fleet cancels it
        assert a.client.sock.recv(1) == b""
        assert ext(b.client, proto.OP_NOW, lag_us=1_000)[2][0] == 1_000  # the others go on


class BlockingPeer:
    """A UART peer whose settle blocks, in real time, until ``release`` is set (as a modem's
    uplink waits for its turn on the radio)."""

    def __init__(self):
        self.release = threading.Event()

    def uart_settle(self, sent):
        assert self.release.wait(5)
        return sent, None


def test_a_control_request_that_blocks_does_not_hold_the_other_boards():
    with fleet(2, window_us=5_000) as (hub, timeline, (a, b)):
        peer = BlockingPeer()
        a.server.uart_peers[2] = peer
        assert a.client.call(proto.OP_CONTROL)[0] == proto.ST_ERROR  # an empty one, answered by a worker
        body = json.dumps(["uart_settle", [2, 7]]).encode()
        a.client.sock.sendall(struct.pack(">BBH", proto.OP_CONTROL, 0, len(body)) + body)
        # served while a's blocks (a holds the time at 0: b runs ahead within the lookahead)
        assert ext(b.client, proto.OP_NOW, lag_us=1_000)[2][0] == 1_000
        peer.release.set()
        status, n = struct.unpack(">BH", a.client._read(3))
        assert (status, json.loads(a.client._read(n))) == (proto.ST_OK, [7, None])
        assert hub.offloaded == 2


def test_boards_on_a_hub_answer_as_with_a_thread_each():
    """The same requests give the same replies, bytes for bytes, either way."""
    def replies(hub):
        with serving(hub) as srv:
            c = Client(srv)
            out = [c.control("setup", [{"model": "tmp117", "address": 0x48}])]
            out.append(ext(c, proto.OP_READ_MEM, struct.pack(">BH", 0x0F, 2), lag_us=1_500, addr=0x48))
            out.append(c.call(proto.OP_SLEEP_US, 0, struct.pack(">Q", 250_000)))
            out.append(ext(c, proto.OP_NOW))
            out.append(c.call(0x7F))  # an unknown op: ERROR
            return out
    def same(reply):  # the access point's generation is a process-wide count
        return reply[:2] + (reply[2][:3],) if len(reply) == 3 and reply[2] else reply
    assert [same(r) for r in replies(True)] == [same(r) for r in replies(False)]
