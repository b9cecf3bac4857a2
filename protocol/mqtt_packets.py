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

The splitting (``header``, ``take``) and the packets a connected node receives (PUBLISH,
PUBACK, PINGRESP) live in ``protocol/mqtt_wire.py`` (re-exported here, the same objects), which loads this module only to
decode any other packet (``decode_other``); this one has every encoder and the rest of the
decoder, so a node loads it only to connect (docs/mqtt-link.md "Memory"). Runs on MicroPython
and CPython.
"""

import struct

from protocol.mqtt_wire import (  # noqa: F401  (re-exported: the whole API is here)
    MAX_REMAINING_LENGTH, MQTTProtocolError, Packet, _fail, decode_packet, decode_remaining_length,
    encode_remaining_length, header, packet_id, take)

# Control packet types, §2.2.1 Table 2.1.
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
SUBACK_FAILURE = 0x80

# §2.2.2 Table 2.2: the fixed-header flags each type must carry (PUBLISH's are its own).
_REQUIRED_FLAGS = {PUBREL: 2, SUBSCRIBE: 2, UNSUBSCRIBE: 2}

# §3.2.2.3 Table 3.1: CONNACK return codes 0..5; §3.9.3: SUBACK 0, 1, 2 or 0x80 (failure).
CONNACK_CODES = ("accepted", "unacceptable protocol version", "identifier rejected",
                 "server unavailable", "bad user name or password", "not authorized")


# ---- encoding ----
def _field(data, name):
    # §1.5.3: a string is a 2-byte big-endian length and its UTF-8 bytes (no U+0000).
    b = data.encode() if isinstance(data, str) else bytes(data)
    if len(b) > 65535:
        raise ValueError("%s is longer than 65535 bytes" % name)
    return struct.pack(">H", len(b)) + b


def _text(s, name):
    if not isinstance(s, str):
        raise ValueError("%s must be a str" % name)
    if "\x00" in s:
        raise ValueError("%s must not contain U+0000" % name)
    return _field(s, name)


def _packet(first_byte, body):
    return bytes((first_byte,)) + encode_remaining_length(len(body)) + body


def _check_id(packet_id):
    if not isinstance(packet_id, int) or not 1 <= packet_id <= 65535:
        raise ValueError("packet_id must be 1..65535, got %r" % (packet_id,))
    return struct.pack(">H", packet_id)


def check_topic_name(topic):
    """Raise ``ValueError`` unless ``topic`` is a valid topic name to publish to (§4.7)."""
    if not isinstance(topic, str) or not topic:
        raise ValueError("topic must be a non-empty str")
    if "+" in topic or "#" in topic:
        raise ValueError("topic must not contain wildcards: %r" % topic)


def encode_publish(topic, payload, qos=0, packet_id=0, dup=False, retain=False):
    """PUBLISH (§3.3). ``payload`` bytes (a str is sent as UTF-8); ``qos`` 0 or 1 (this
    project never uses 2); ``packet_id`` 1..65535 for QoS 1, ignored for QoS 0; ``dup`` only
    with QoS 1 (§3.3.1.1). Raises ``ValueError`` naming the bad argument."""
    check_topic_name(topic)
    if qos not in (0, 1):
        raise ValueError("qos must be 0 or 1, got %r" % (qos,))
    if dup and not qos:
        raise ValueError("dup must be False for qos 0")
    body = _text(topic, "topic")
    if qos:
        body += _check_id(packet_id)
    first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    return _packet(first, body + (payload.encode() if isinstance(payload, str) else bytes(payload)))


def encode_puback(packet_id):
    """PUBACK (§3.4): ``40 02`` and the packet id."""
    return b"\x40\x02" + _check_id(packet_id)


def encode_pingreq():
    return b"\xc0\x00"


def encode_disconnect():
    return b"\xe0\x00"


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


# ---- decoding: the packets mqtt_wire.decode_packet leaves to this module ----
def decode_other(kind, flags, body):
    """Decode a packet other than PUBLISH, PUBACK and PINGRESP (``mqtt_wire.decode_packet``
    does those and calls this for the rest); raises ``MQTTProtocolError``."""
    n = len(body)
    if flags != _REQUIRED_FLAGS.get(kind, 0):
        _fail("reserved flags %d for packet type %d (§2.2.2)" % (flags, kind))
    p = Packet(kind)
    if kind == CONNACK:
        if n != 2 or body[0] & 0xFE or body[1] > 5:
            _fail("malformed CONNACK")
        p.session_present = bool(body[0])
        p.return_code = body[1]
        if p.return_code and p.session_present:
            _fail("CONNACK refusal with session present (§3.2.2.2)")
    elif kind in (PUBREC, PUBREL, PUBCOMP, UNSUBACK):
        if n != 2:
            _fail("packet type %d must have length 2" % kind)
        p.packet_id = packet_id(body, 0)
    elif kind == SUBACK:
        if n < 3:
            _fail("SUBACK without return codes")
        p.packet_id = packet_id(body, 0)
        p.granted = list(body[2:])
        for code in p.granted:
            if code not in (0, 1, 2, SUBACK_FAILURE):
                _fail("SUBACK return code 0x%02x" % code)
    else:
        _fail("packet type %d is not one a server sends a client" % kind)
    return p



class PacketReader:
    """Splits a byte stream into packets: ``feed()`` what the socket returned, then call
    ``next()`` until it returns None. ``max_packet_bytes`` bounds the Remaining Length
    accepted (the body), checked as soon as its varint is complete. After an error the
    reader is dead (§4.8: the connection must be closed)."""

    def __init__(self, max_packet_bytes=8192):
        self.max_packet_bytes = max_packet_bytes
        self._buf = b""
        self._dead = False

    def _do(self, fn, *args):
        if self._dead:
            _fail("stream already failed")
        self._dead = True  # unless fn returns
        out = fn(*args)
        self._dead = False
        return out

    def feed(self, data):
        """Append received bytes; raises ``MQTTProtocolError`` at once for a bad header."""
        self._buf += bytes(data)
        self._do(header, self._buf, self.max_packet_bytes)

    def buffered(self):
        """Bytes held, not yet returned as packets."""
        return len(self._buf)

    def next_raw(self):
        """``(kind, flags, body)`` of the next complete packet, or None."""
        got = self._do(take, self._buf, self.max_packet_bytes)
        if got is None:
            return None
        self._buf = got[3]
        return got[:3]

    def next(self):
        """The next complete ``Packet``, or None; raises ``MQTTProtocolError``."""
        raw = self.next_raw()
        return None if raw is None else self._do(decode_packet, *raw)

def decode(data, max_packet_bytes=MAX_REMAINING_LENGTH):
    """Decode exactly one complete packet from ``data``; raises ``MQTTProtocolError`` when
    it is incomplete, malformed or followed by extra bytes."""
    r = PacketReader(max_packet_bytes)
    r.feed(data)
    p = r.next()
    if p is None or r.buffered():
        _fail("not exactly one packet")
    return p
