"""The node's MQTT client builds a QoS 1 PUBLISH around a payload already in its lent buffer
(``MQTTClient.lend(buf, at)``: the deep-sleep MQTT link's frame, built after room for the
PUBLISH's header): the bytes on the wire are ``encode_publish``'s, against scripted broker
bytes over a socketpair (CPython, virtual clock; the helpers of the client's own tests)."""

from protocol import mqtt_packets as mp
from tests.e2e.test_mqtt_client_mpy import UP, _client_packets, _scripted


def _client():
    c, theirs = _scripted(mp.encode_connack(False, 0))
    c.connect(clean_session=False)
    return c, theirs


def _sent(theirs):
    # the packets after CONNECT, as bytes
    return [bytes([k << 4 | f]) + mp.encode_remaining_length(len(b)) + bytes(b) for k, f, b in _client_packets(theirs)[1:]]


def test_a_publish_is_built_around_its_payload_in_the_lent_buffer():
    c, theirs = _client()
    at = 7 + len(UP)  # what the link leaves before its frame
    payloads = [bytes(range(100)), bytes(i % 251 for i in range(1200))]  # 1- and 2-byte remaining lengths
    want = []
    for pid, payload in enumerate(payloads, 1):
        buf = bytearray(b"\xee" * at) + payload
        c.lend(buf, at)
        c.publish(UP, memoryview(buf)[at:])
        want.append(mp.encode_publish(UP, payload, 1, pid))
        item = c._inflight[-1]
        assert item[2] is buf and bytes(item[1]) == want[-1]  # in the lent buffer, not a copy
        assert bytes(buf[at:]) == payload and bytes(buf[len(buf) - len(want[-1]):]) == want[-1]
    assert _sent(theirs) == want


def test_without_room_before_the_payload_the_publish_gets_its_own_buffer():
    c, theirs = _client()
    payload = b"frame" * 20
    buf = bytearray(b"\xee" * 4) + payload  # 4 bytes: too few for the header
    c.lend(buf, 4)
    c.publish(UP, memoryview(buf)[4:])
    assert c._inflight[-1][2] is not buf and bytes(buf) == b"\xee" * 4 + payload  # untouched
    c.publish(UP, b"next")  # ``at`` was for one publish only
    assert _sent(theirs) == [mp.encode_publish(UP, payload, 1, 1), mp.encode_publish(UP, b"next", 1, 2)]
