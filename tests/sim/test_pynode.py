"""The CPython node stand-in against the gateway-side stub, byte for byte."""

from protocol import frame
from simulators.gateway_stub import GatewayCore
from simulators.pynode import PyNode

KEY = bytes(range(16))


def test_frames_decode_and_acks_trim():
    node = PyNode("sch1-rm1", KEY, boot_epoch=3, batch=4)
    core = GatewayCore({"sch1-rm1": KEY})
    assert node.produce(10) == 9
    sent = []
    while True:
        buf = node.frame()
        if buf is None:
            break
        ack = core.handle_frame(buf, device_id="sch1-rm1")
        assert ack is not None
        sent.append(node.handle_ack(ack))
    assert sent == [3, 7, 9]
    assert node.pending() == 0 and node.acked_through == 9
    assert sorted(r[2]["seq"] for r in core.records) == list(range(10))
    assert all(e == 3 for _, e, _ in core.records)


def test_resend_starts_from_the_oldest_unacked():
    node = PyNode("sch1-rm1", KEY, batch=3)
    node.produce(5)
    first = node.frame()
    node.frame()  # sent, its ack lost
    node.resend()
    again = node.frame()
    assert again == first  # same readings, same bytes
    assert node.counters["resends"] == 1


def test_forged_and_beyond_acks_are_counted_not_trimmed():
    node = PyNode("sch1-rm1", KEY, batch=5)
    node.produce(5)
    node.frame()
    forged = frame.encode_ack(bytes(16), "sch1-rm1", 1, 4)
    beyond = frame.encode_ack(KEY, "sch1-rm1", 1, 99)
    other_epoch = frame.encode_ack(KEY, "sch1-rm1", 2, 4)
    for buf in (forged, beyond, other_epoch, b"\x00garbage"):
        assert node.handle_ack(buf) is None
    assert node.counters["bad_acks"] == 4
    assert node.pending() == 5
    assert node.handle_ack(frame.encode_ack(KEY, "sch1-rm1", 1, 4)) == 4
    assert node.pending() == 0
