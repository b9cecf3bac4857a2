"""MQTT 3.1.1 control packets, the part a node uses at every wake: the decoder (``PacketReader``)
and the encoders of PUBLISH, PUBACK, PINGREQ and DISCONNECT (OASIS MQTT 3.1.1). Sans-IO.

``protocol/mqtt_packets.py`` is the whole API (it re-exports all of this with the encoders
only a connection or a test server needs: CONNECT, SUBSCRIBE, CONNACK, SUBACK, PINGRESP); the
node loads that only to connect, so its heap does not hold those while it samples, logs and
sends (docs/mqtt-link.md "Memory"). Decoding and errors are described there. Runs on
MicroPython and CPython.
"""

import struct

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# Control packet types, §2.2.1 Table 2.1.
CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
PUBREC = const(5)
PUBREL = const(6)
PUBCOMP = const(7)
SUBSCRIBE = const(8)
SUBACK = const(9)
UNSUBSCRIBE = const(10)
UNSUBACK = const(11)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

# §2.2.3: four varint bytes at most, so 268,435,455 (REFERENCE §9).
MAX_REMAINING_LENGTH = const(268435455)
SUBACK_FAILURE = const(0x80)

# §2.2.2 Table 2.2: the fixed-header flags each type must carry (PUBLISH's are its own).
_REQUIRED_FLAGS = {PUBREL: 2, SUBSCRIBE: 2, UNSUBSCRIBE: 2}
_ID_ONLY = (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK)


class MQTTProtocolError(ValueError):
    """Bytes that are not a valid MQTT 3.1.1 packet stream; close the connection (§4.8)."""


# ---- encoding -------------------------------------------------------------------------
def encode_remaining_length(n):
    """The §2.2.3 varint for a Remaining Length ``n`` (0..268435455); ``ValueError`` beyond."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError("remaining length %d outside 0..%d" % (n, MAX_REMAINING_LENGTH))
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


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


# ---- decoding -------------------------------------------------------------------------

class Packet:
    """One decoded packet: ``kind`` (a type constant) and the fields its type carries.

    PUBLISH: ``topic`` (str), ``payload`` (bytes), ``qos``, ``dup``, ``retain``,
    ``packet_id`` (0 for QoS 0). CONNACK: ``session_present``, ``return_code``.
    SUBACK: ``packet_id``, ``granted`` (list). PUBACK/PUBREC/PUBREL/PUBCOMP/UNSUBACK:
    ``packet_id``. PINGRESP: nothing."""

    def __init__(self, kind):
        self.kind = kind
        self.packet_id = 0
        self.topic = None
        self.payload = b""
        self.qos = 0
        self.dup = False
        self.retain = False
        self.session_present = False
        self.return_code = 0
        self.granted = None

    def __repr__(self):
        return "<Packet kind=%d id=%d topic=%r qos=%d dup=%r len=%d>" % (
            self.kind, self.packet_id, self.topic, self.qos, self.dup, len(self.payload))


def _fail(why):
    raise MQTTProtocolError(why)


def _decode_text(b):
    # §1.5.3: well-formed UTF-8, no U+0000, no surrogates (MicroPython decodes those).
    if b"\x00" in b:
        _fail("string contains U+0000")
    i = b.find(b"\xed")
    while i >= 0:
        if i + 1 < len(b) and b[i + 1] >= 0xA0:
            _fail("string contains a UTF-16 surrogate")
        i = b.find(b"\xed", i + 1)
    try:
        return str(b, "utf-8")
    except (UnicodeError, ValueError):
        _fail("string is not valid UTF-8")


def _packet_id(body, pos):
    if len(body) < pos + 2:
        _fail("packet id missing")
    pid = (body[pos] << 8) | body[pos + 1]
    if pid == 0:
        _fail("packet id 0 (§2.3.1)")
    return pid


def decode_packet(kind, flags, body):
    """Decode one packet's body given its fixed header; raises ``MQTTProtocolError``."""
    body = bytes(body)
    n = len(body)
    if kind != PUBLISH and flags != _REQUIRED_FLAGS.get(kind, 0):
        _fail("reserved flags %d for packet type %d (§2.2.2)" % (flags, kind))
    p = Packet(kind)
    if kind == PUBLISH:
        qos = (flags >> 1) & 3
        if qos == 3:
            _fail("PUBLISH with QoS 3 (§3.3.1.2)")
        if qos == 0 and flags & 8:
            _fail("PUBLISH QoS 0 with DUP set (§3.3.1.1)")
        if n < 2:
            _fail("PUBLISH without topic")
        tlen = (body[0] << 8) | body[1]
        pos = 2 + tlen
        if tlen == 0 or pos > n:
            _fail("PUBLISH topic length %d does not fit" % tlen)
        p.topic = _decode_text(body[2:pos])
        if "+" in p.topic or "#" in p.topic:
            _fail("PUBLISH topic with wildcard (§3.3.2.1)")
        if qos:
            p.packet_id = _packet_id(body, pos)
            pos += 2
        p.qos = qos
        p.dup = bool(flags & 8)
        p.retain = bool(flags & 1)
        p.payload = body[pos:]
    elif kind == CONNACK:
        if n != 2 or body[0] & 0xFE or body[1] > 5:
            _fail("malformed CONNACK")
        p.session_present = bool(body[0])
        p.return_code = body[1]
        if p.return_code and p.session_present:
            _fail("CONNACK refusal with session present (§3.2.2.2)")
    elif kind in _ID_ONLY:
        if n != 2:
            _fail("packet type %d must have length 2" % kind)
        p.packet_id = _packet_id(body, 0)
    elif kind == SUBACK:
        if n < 3:
            _fail("SUBACK without return codes")
        p.packet_id = _packet_id(body, 0)
        p.granted = list(body[2:])
        for code in p.granted:
            if code not in (0, 1, 2, SUBACK_FAILURE):
                _fail("SUBACK return code 0x%02x" % code)
    elif kind == PINGRESP:
        if n:
            _fail("PINGRESP with a body")
    else:
        _fail("packet type %d is not one a server sends a client" % kind)
    return p


def decode_remaining_length(buf, pos=1):
    """``(value, next_pos)`` of the §2.2.3 varint at ``buf[pos:]``, or None if it is not all
    there yet; ``MQTTProtocolError`` for a fifth byte."""
    value = 0
    for i in range(4):
        if pos + i >= len(buf):
            return None
        b = buf[pos + i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, pos + i + 1
    _fail("Remaining Length longer than 4 bytes (§2.2.3)")


class PacketReader:
    """Splits a byte stream into packets; see the module docstring.

    ``max_packet_bytes`` bounds the Remaining Length accepted (the body: variable header and
    payload). Call ``next()`` until it returns None after every ``feed()``."""

    def __init__(self, max_packet_bytes=8192):
        if not 2 <= max_packet_bytes <= MAX_REMAINING_LENGTH:
            raise ValueError("max_packet_bytes must be 2..%d" % MAX_REMAINING_LENGTH)
        self.max_packet_bytes = max_packet_bytes
        self._buf = b""
        self._dead = False

    def feed(self, data):
        """Append received bytes; raises ``MQTTProtocolError`` at once for a bad header."""
        if self._dead:
            _fail("stream already failed")
        if data:
            self._buf += bytes(data)
            self._header()

    def buffered(self):
        """Bytes held, not yet returned as packets."""
        return len(self._buf)

    def _header(self):
        # (kind, flags, body_start, body_len) of the first packet, or None if incomplete.
        buf = self._buf
        if not buf:
            return None
        kind = buf[0] >> 4
        if kind in (0, 15):
            self._dead = True
            _fail("reserved packet type %d" % kind)
        try:
            got = decode_remaining_length(buf, 1)
        except MQTTProtocolError:
            self._dead = True
            raise
        if got is None:
            return None
        length, start = got
        if length > self.max_packet_bytes:
            self._dead = True
            _fail("packet type %d declares %d bytes, limit %d" % (kind, length, self.max_packet_bytes))
        return kind, buf[0] & 0x0F, start, length

    def next_raw(self):
        """``(kind, flags, body)`` of the next complete packet, or None."""
        if self._dead:
            _fail("stream already failed")
        h = self._header()
        if h is None:
            return None
        kind, flags, start, length = h
        end = start + length
        if len(self._buf) < end:
            return None
        body = self._buf[start:end]
        self._buf = self._buf[end:]
        return kind, flags, body

    def next(self):
        """The next complete ``Packet``, or None; raises ``MQTTProtocolError``."""
        raw = self.next_raw()
        if raw is None:
            return None
        try:
            return decode_packet(*raw)
        except MQTTProtocolError:
            self._dead = True
            raise
