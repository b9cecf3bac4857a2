"""MQTT 3.1.1 control packets, sans-IO: bytes in, packets out (OASIS MQTT 3.1.1).

Theory of operation
-------------------
Encoders are pure functions returning the whole packet as ``bytes``; a bad argument raises
``ValueError`` naming the argument. The client side needs CONNECT, PUBLISH, PUBACK,
SUBSCRIBE, PINGREQ and DISCONNECT; CONNACK, SUBACK and PINGRESP encoders exist so tests
and simulators can play the server with the same code.

Decoding is incremental: a ``PacketReader`` is fed whatever the socket returned (one byte
or many packets at once) and hands back complete packets one at a time from ``next()``.
It never holds more than one incomplete packet: the declared Remaining Length is checked
against ``max_packet_bytes`` as soon as its varint is complete, before any body arrives,
so a hostile length cannot make the node buffer 256 MB. Every malformed input raises
``MQTTProtocolError`` (a ``ValueError``) and nothing else; MQTT says the connection must
then be closed (§4.8), so the reader is dead after an error.

The decoder accepts what a server may send a client (CONNACK, PUBLISH, PUBACK, PUBREC,
PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP); ``next_raw()`` splits any stream (a test
proxy reading the client's side uses it). QoS 2 is out of scope for the client, which
never asks for it, but the packets decode so the client can refuse them knowingly.

The decoder and the encoders a node uses at every wake live in ``protocol/mqtt_wire.py``
(re-exported here, the same objects); this module adds the ones only a connection or a test
server needs, so a node loads it only to connect. Runs on MicroPython and CPython.
"""

import struct

from protocol.mqtt_wire import (  # noqa: F401  (re-exported: the whole API is here)
    CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK, UNSUBSCRIBE,
    UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, MAX_REMAINING_LENGTH, SUBACK_FAILURE,
    MQTTProtocolError, Packet, PacketReader, check_topic_name, decode_packet,
    decode_remaining_length, encode_disconnect, encode_pingreq, encode_puback, encode_publish,
    encode_remaining_length, _check_id, _fail, _field, _packet, _text)

# §3.2.2.3 Table 3.1: CONNACK return codes 0..5; §3.9.3: SUBACK 0, 1, 2 or 0x80 (failure).
CONNACK_CODES = ("accepted", "unacceptable protocol version", "identifier rejected",
                 "server unavailable", "bad user name or password", "not authorized")


def check_topic_filter(topic_filter):
    """Raise ``ValueError`` unless ``topic_filter`` is a valid subscription filter (§4.7.1)."""
    if not isinstance(topic_filter, str) or not topic_filter:
        raise ValueError("topic_filter must be a non-empty str")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != len(levels) - 1)) or ("+" in level and level != "+"):
            raise ValueError("topic_filter has a misplaced wildcard: %r" % topic_filter)


def encode_connect(client_id, keepalive_s=60, clean_session=True, user=None, password=None, will=None):
    """CONNECT (§3.1) for protocol level 4.

    ``keepalive_s`` 0..65535 (0 turns keep-alive off); ``user`` str, ``password`` str or bytes
    (a password needs a user, §3.1.2.9); ``will`` ``(topic, payload, qos, retain)``.
    An empty ``client_id`` is only allowed with ``clean_session`` (§3.1.3.1).
    Raises ``ValueError`` naming the bad argument."""
    if not isinstance(keepalive_s, int) or not 0 <= keepalive_s <= 65535:
        raise ValueError("keepalive_s must be 0..65535, got %r" % (keepalive_s,))
    if client_id == "" and not clean_session:
        raise ValueError("client_id must not be empty with clean_session=False")
    flags = 0x02 if clean_session else 0
    payload = _text(client_id, "client_id")
    if will is not None:
        w_topic, w_payload, w_qos, w_retain = will
        check_topic_name(w_topic)
        if w_qos not in (0, 1):
            raise ValueError("will qos must be 0 or 1")
        flags |= 0x04 | (w_qos << 3) | (0x20 if w_retain else 0)
        payload += _text(w_topic, "will topic") + _field(w_payload, "will payload")
    if user is not None:
        flags |= 0x80
        payload += _text(user, "user")
    if password is not None:
        if user is None:
            raise ValueError("password needs a user (MQTT 3.1.1 §3.1.2.9)")
        flags |= 0x40
        payload += _field(password, "password")
    return _packet(CONNECT << 4, b"\x00\x04MQTT\x04" + bytes((flags,)) + struct.pack(">H", keepalive_s) + payload)


def encode_subscribe(packet_id, subscriptions):
    """SUBSCRIBE (§3.8): ``subscriptions`` a list of ``(topic_filter, qos)`` with qos 0..1."""
    if not subscriptions:
        raise ValueError("subscriptions must not be empty (§3.8.3)")
    body = _check_id(packet_id)
    for topic_filter, qos in subscriptions:
        check_topic_filter(topic_filter)
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1, got %r" % (qos,))
        body += _text(topic_filter, "topic_filter") + bytes((qos,))
    return _packet((SUBSCRIBE << 4) | 2, body)


def encode_connack(session_present, return_code):
    """CONNACK (§3.2), for test servers."""
    if not 0 <= return_code <= 5:
        raise ValueError("return_code must be 0..5")
    return bytes((0x20, 2, 1 if session_present else 0, return_code))


def encode_suback(packet_id, granted):
    """SUBACK (§3.9), for test servers: ``granted`` a list of 0, 1, 2 or 0x80."""
    return _packet(SUBACK << 4, _check_id(packet_id) + bytes(granted))


def encode_pingresp():
    return b"\xd0\x00"


def decode(data, max_packet_bytes=MAX_REMAINING_LENGTH):
    """Decode exactly one complete packet from ``data``; raises ``MQTTProtocolError`` when
    it is incomplete, malformed or followed by extra bytes."""
    r = PacketReader(max_packet_bytes)
    r.feed(data)
    p = r.next()
    if p is None or r.buffered():
        _fail("not exactly one packet")
    return p
