"""MQTT 3.1.1 (OASIS), the part a connected node needs at every exchange: splitting the byte
stream into packets (``header``, ``take``) and decoding the three packets a connected node
receives: PUBLISH, PUBACK and PINGRESP. Sans-IO; runs on MicroPython and CPython.

``protocol/mqtt_packets.py`` is the whole API: it re-exports this, and adds ``PacketReader``
(a stream splitter for tests and proxies, on ``take``), the encoders and the decoding of
every other packet (``decode_other``: CONNACK and SUBACK, which a connection
waits for, and the ones a client refuses). ``decode_packet`` loads it only for such a packet:
a connection has it loaded anyway, and a node releases it once connected, so its heap does not
hold it while it samples, logs and sends (docs/mqtt-link.md "Memory"). The decoder's rules
(the length limit, every malformed input an ``MQTTProtocolError``, a dead reader after one)
are described there.
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_PUBLISH = const(3)  # §2.2.1 Table 2.1
_PUBACK = const(4)
_PINGRESP = const(13)
# §2.2.3: four varint bytes at most, so 268,435,455 (REFERENCE §9).
MAX_REMAINING_LENGTH = const(268435455)


class MQTTProtocolError(ValueError):
    """Bytes that are not a valid MQTT 3.1.1 packet stream; close the connection (§4.8)."""


def _fail(why):
    raise MQTTProtocolError(why)


def encode_remaining_length(n):
    """The §2.2.3 varint for a Remaining Length ``n`` (0..268435455); ``ValueError`` beyond."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError("remaining length %d outside 0..%d" % (n, MAX_REMAINING_LENGTH))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


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


class Packet:
    """One decoded packet: ``kind`` (a type constant) and the fields its type carries.

    PUBLISH: ``topic`` (str), ``payload`` (bytes), ``qos``, ``dup``, ``retain``,
    ``packet_id`` (0 for QoS 0). CONNACK: ``session_present``, ``return_code``.
    SUBACK: ``packet_id``, ``granted`` (list). PUBACK/PUBREC/PUBREL/PUBCOMP/UNSUBACK:
    ``packet_id``. PINGRESP: nothing. The defaults are the class's (heap: an instance
    holds only what its packet set)."""

    packet_id = 0
    topic = None
    payload = b""
    qos = 0
    dup = False
    retain = False
    session_present = False
    return_code = 0
    granted = None

    def __init__(self, kind):
        self.kind = kind


def packet_id(body, pos):
    """The §2.3.1 packet id at ``body[pos:]``; ``MQTTProtocolError`` if missing or 0."""
    if len(body) < pos + 2:
        _fail("packet id missing")
    pid = (body[pos] << 8) | body[pos + 1]
    if not pid:
        _fail("packet id 0 (§2.3.1)")
    return pid


def _text(b):
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


def decode_packet(kind, flags, body):
    """Decode one packet's body given its fixed header; raises ``MQTTProtocolError``."""
    body = bytes(body)
    n = len(body)
    if kind == _PUBLISH:
        qos = (flags >> 1) & 3
        if qos == 3:
            _fail("PUBLISH with QoS 3 (§3.3.1.2)")
        if qos == 0 and flags & 8:
            _fail("PUBLISH QoS 0 with DUP set (§3.3.1.1)")
        if n < 2:
            _fail("PUBLISH without topic")
        pos = 2 + ((body[0] << 8) | body[1])
        if pos == 2 or pos > n:
            _fail("PUBLISH topic length %d does not fit" % (pos - 2))
        p = Packet(kind)
        p.topic = t = _text(body[2:pos])
        if "+" in t or "#" in t:
            _fail("PUBLISH topic with wildcard (§3.3.2.1)")
        if qos:
            p.packet_id = packet_id(body, pos)
            pos += 2
            p.qos = qos
        p.dup = bool(flags & 8)
        p.retain = bool(flags & 1)
        p.payload = body[pos:]
        return p
    if kind != _PUBACK and kind != _PINGRESP:
        from protocol.mqtt_packets import decode_other

        return decode_other(kind, flags, body)
    if flags:  # §2.2.2 Table 2.2
        _fail("reserved flags %d for packet type %d (§2.2.2)" % (flags, kind))
    p = Packet(kind)
    if kind == _PINGRESP:
        if n:
            _fail("PINGRESP with a body")
    elif n != 2:
        _fail("packet type %d must have length 2" % kind)
    else:
        p.packet_id = packet_id(body, 0)
    return p


def header(buf, max_packet_bytes):
    """``(kind, body_start, body_len)`` of the packet at the start of ``buf``, or None while its
    fixed header is incomplete; ``MQTTProtocolError`` for a reserved type, a fifth length byte
    or a body over ``max_packet_bytes`` (checked before any of the body has arrived)."""
    if not buf:
        return None
    kind = buf[0] >> 4
    if kind == 0 or kind == 15:
        _fail("reserved packet type %d" % kind)
    got = decode_remaining_length(buf, 1)
    if got and got[0] > max_packet_bytes:
        _fail("packet type %d declares %d bytes, limit %d" % (kind, got[0], max_packet_bytes))
    return got and (kind, got[1], got[0])


def take(buf, max_packet_bytes):
    """``(kind, flags, body, rest)`` of the first complete packet in ``buf``, or None;
    ``MQTTProtocolError`` as ``header``."""
    h = header(buf, max_packet_bytes)
    if h is None or len(buf) < h[1] + h[2]:
        return None
    end = h[1] + h[2]
    return h[0], buf[0] & 0x0F, buf[h[1]:end], buf[end:]
