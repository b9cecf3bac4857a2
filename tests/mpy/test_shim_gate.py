"""The sensor server's gate (the fleet's timeline) and the sleeps a board sends: a sleep that
rides on the next request (``lag_us``) and a SLEEP_US request of its own give the gate the same
targets, and the board the same clock and watchdog (``simulators/i2c_board.py``)."""

import struct

import pytest

from simulators import i2c_server as proto
from simulators.fleet.timeline import Cancelled
from tests.mpy.test_shim import Client, ext
from tests.sim.test_i2c_hub import serving


@pytest.mark.parametrize("hub", [False, True], ids=["thread", "hub"])
def test_a_sleep_carried_by_a_request_passes_the_gate_as_a_sleep_request_does(hub):
    """The fleet's gate sees the same targets, and the board the same clock and watchdog,
    whether its sleeps go as SLEEP_US requests or ride on the next request (``lag_us``),
    served by a thread per connection or by the fleet's ``BoardHub``."""
    def run(carried):
        targets, replies = [], []
        with serving(hub) as srv:
            def gate(target_us):  # the fleet's timeline: the clock is at the target on return
                targets.append(target_us)
                if target_us > 4_500_000:
                    raise Cancelled("the fleet ends this board")
                with srv.lock:
                    srv.rig.clock.advance_us(target_us - srv.rig.clock.now_us)
            srv.gate = gate
            srv.gate_async = lambda target_us, resume: gate(target_us) or True  # never parks
            c = Client(srv)
            ext(c, proto.OP_WDT, struct.pack(">I", 1000))  # fires at 1 s
            for lag in (300_000, 600_000, 200_000, 5_000_000, 1_400_000):
                if carried:
                    reply = ext(c, proto.OP_NOW, lag_us=lag)[:2]
                else:
                    reply = c.call(proto.OP_SLEEP_US, 0, struct.pack(">Q", lag))
                    if reply[0] == proto.ST_OK:
                        reply = ext(c, proto.OP_NOW)[:2]
                replies.append(reply)
                if reply[0] == proto.ST_WDT_RESET:
                    ext(c, proto.OP_WDT, struct.pack(">I", 2000))  # the board restarts it
            if carried:
                c.sock.sendall(struct.pack(">BBH", proto.OP_NOW | proto.OP_EXT, 0, 16) + proto.EXT_HEAD.pack(20_000_000, 0))
            else:
                c.sock.sendall(struct.pack(">BBH", proto.OP_SLEEP_US, 0, 8) + struct.pack(">Q", 20_000_000))
            closed = c.sock.recv(1) == b""  # cancelled while it waited: the server hangs up
            now = srv.rig.clock.now_us
        return targets, replies, closed, now

    carried = run(True)
    assert carried == run(False)
    targets, replies, closed, now = carried
    # a sleep past the watchdog's deadline is gated to just after it, and fires it there; the
    # last one (to just after the deadline of the watchdog restarted at 3 s) the fleet cancels
    assert targets == [300_000, 900_000, 1_000_001, 3_000_002, 4_400_002, 5_000_003]
    assert [r[0] for r in replies] == [proto.ST_OK, proto.ST_OK, proto.ST_WDT_RESET, proto.ST_WDT_RESET, proto.ST_OK]
    assert (replies[2][1], replies[3][1]) == (struct.pack(">Q", 1_000_001), struct.pack(">Q", 3_000_002))
    assert closed and now == 4_400_002
