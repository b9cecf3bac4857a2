"""The node frame (node → gateway data) and the authenticated ack (gateway → node).

Theory of operation
-------------------
A node sends its flash log oldest first, one frame at a time: a **data frame** carries the
records ``first_seq .. first_seq + count - 1`` of one ``boot_epoch`` as an opaque payload
(the SenML-CBOR pack of ``protocol.senml``). The gateway commits the records, then answers
with an **ack** naming ``(device_id, boot_epoch, seq_through)``; the node trims its log up to
``seq_through`` for that epoch. Both directions end in an HMAC-SHA256 tag (``protocol.auth``)
under the device key, truncated to ``tag_len`` bytes (16 by default; a link setting agreed
by both ends and never read from the wire, so a frame cannot talk a receiver into a shorter
tag). Layouts: docs/protocol-frame.md. Integers are big-endian.

The MAC covers ``_MAC_DOMAIN + direction + every frame byte before the tag``. The type byte
(data / ack) and the direction byte (``U`` node→gateway, ``D`` gateway→node) make a data
frame useless as an ack and the reverse, even if an attacker rewrites the type byte; the
domain string keeps these tags apart from any other use of the key.

Decoding looks at only what it needs to find the key (version, type, device_id), checks the
lengths, verifies the tag in constant time, and only then reads the counters. Every failure
is ``FrameError`` with a ``reason`` code the receiver counts.

Replay and trimming rules, as pure functions:

``classify(last, boot_epoch, seq_through)`` (gateway)
    ``last`` is the last accepted ``(boot_epoch, seq)`` for the device (None: nothing yet).
    A frame from an older boot epoch is a ``replay`` (reject, count); one whose records all
    lie at or below ``last`` in the same epoch is a ``duplicate`` (re-ack, count, insert
    nothing new); anything reaching beyond ``last`` is ``new`` (insert each record
    idempotently on its key, so a partial overlap is harmless). ``advance`` gives the new
    ``last`` once the records are committed.
``ack_trims(ack, current_boot_epoch, last_sent_seq)`` (node)
    An authentic ack only ever states "the gateway has committed through seq_through in
    this epoch", which stays true, so replaying an old ack of the same epoch trims nothing
    that was not already delivered. An ack for another epoch, or beyond what the node sent
    in this epoch, is refused: it cannot make the node delete unsent data.
The ack is cumulative, so the node keeps one frame in flight and sends its log in order.
Runs on MicroPython and CPython.
"""

import struct

from protocol import auth

VERSION = 1
TYPE_DATA = 0x01  # node -> gateway
TYPE_ACK = 0x02   # gateway -> node
DEFAULT_TAG_LEN = 16  # bytes; why 16 and not 8: protocol/auth.py docstring
MAX_DEVICE_ID = 32    # issue 3: device_id matches [a-z0-9][a-z0-9-]{0,31}
MAX_COUNT = 0xFFFF    # count is a uint16
MAX_FRAME_BYTES = 4096  # whole frame incl. tag; bounds every buffer on both ends
MIN_KEY_LEN = 16      # device keys are 16 or 32 random bytes (issue 3)

NEW = "new"
DUPLICATE = "duplicate"
REPLAY = "replay"

_MAC_DOMAIN = b"civicedge-frame-v1"
_DIR_UP = b"U"
_DIR_DOWN = b"D"
_U32 = 0xFFFFFFFF
_DATA_FIXED = 10  # boot_epoch u32 + first_seq u32 + count u16
_ACK_FIXED = 8    # boot_epoch u32 + seq_through u32


class FrameError(ValueError):
    """A frame or ack that must be dropped. ``reason`` is one short code to count:
    ``short``, ``length``, ``version``, ``type``, ``device_id``, ``unknown_device``,
    ``bad_tag``, ``count``, ``ack_epoch``, ``ack_beyond``."""

    def __init__(self, reason, detail=""):
        self.reason = reason
        super().__init__(reason + ": " + detail if detail else reason)


class DataFrame:
    """A verified data frame: records ``first_seq .. seq_through`` of ``boot_epoch``."""

    type = TYPE_DATA

    def __init__(self, device_id, boot_epoch, first_seq, count, payload):
        self.device_id = device_id
        self.boot_epoch = boot_epoch
        self.first_seq = first_seq
        self.count = count
        self.payload = payload

    @property
    def seq_through(self):
        """The last seq the frame carries."""
        return self.first_seq + self.count - 1

    def __eq__(self, other):
        return (isinstance(other, DataFrame) and self.device_id == other.device_id
                and self.boot_epoch == other.boot_epoch and self.first_seq == other.first_seq
                and self.count == other.count and self.payload == other.payload)

    def __repr__(self):
        return "DataFrame(%r, boot_epoch=%d, first_seq=%d, count=%d, payload=<%d bytes>)" % (
            self.device_id, self.boot_epoch, self.first_seq, self.count, len(self.payload))


class Ack:
    """A verified ack: the gateway has committed ``device_id``'s records of ``boot_epoch``
    through ``seq_through``."""

    type = TYPE_ACK

    def __init__(self, device_id, boot_epoch, seq_through):
        self.device_id = device_id
        self.boot_epoch = boot_epoch
        self.seq_through = seq_through

    def __eq__(self, other):
        return (isinstance(other, Ack) and self.device_id == other.device_id
                and self.boot_epoch == other.boot_epoch and self.seq_through == other.seq_through)

    def __repr__(self):
        return "Ack(%r, boot_epoch=%d, seq_through=%d)" % (
            self.device_id, self.boot_epoch, self.seq_through)


def _id_ok(raw):
    # [a-z0-9][a-z0-9-]{0,31} without re (bytes in, so no Unicode surprises)
    if not 1 <= len(raw) <= MAX_DEVICE_ID or raw[0] == 0x2D:
        return False
    for c in raw:
        if not (0x61 <= c <= 0x7A or 0x30 <= c <= 0x39 or c == 0x2D):
            return False
    return True


def check_device_id(device_id):
    """The ASCII bytes of ``device_id`` (a str matching ``[a-z0-9][a-z0-9-]{0,31}``).

    Raises ``ValueError`` naming ``device_id`` otherwise."""
    if not isinstance(device_id, str):
        raise ValueError("device_id must be a str, got %r" % (device_id,))
    raw = device_id.encode()
    if not _id_ok(raw):
        raise ValueError("device_id must match [a-z0-9][a-z0-9-]{0,31}, got %r" % (device_id,))
    return raw


def _check_u32(name, value):
    if not isinstance(value, int) or not 0 <= value <= _U32:
        raise ValueError("%s must be an int from 0 to 4294967295, got %r" % (name, value))


def _check_key(key):
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_LEN:
        # never put the key itself in a message
        raise ValueError("key must be bytes of at least %d bytes" % MIN_KEY_LEN)


def _check_tag_len(tag_len):
    if not isinstance(tag_len, int) or not auth.MIN_TAG_LEN <= tag_len <= auth.DIGEST_SIZE:
        raise ValueError("tag_len must be an int from %d to %d, got %r"
                         % (auth.MIN_TAG_LEN, auth.DIGEST_SIZE, tag_len))


def _sign(key, direction, body, tag_len):
    mac = auth.hmac_sha256(key, _MAC_DOMAIN, direction, body)
    return body + auth.truncate_tag(mac, tag_len)


def _head(frame_type, raw_id):
    return bytes((VERSION, frame_type, len(raw_id))) + raw_id


def _check_data(key, device_id, boot_epoch, first_seq, count, payload, tag_len):
    # encode_data's checks; returns (device_id bytes, frame size)
    _check_key(key)
    _check_tag_len(tag_len)
    raw_id = check_device_id(device_id)
    _check_u32("boot_epoch", boot_epoch)
    _check_u32("first_seq", first_seq)
    if not isinstance(count, int) or not 1 <= count <= MAX_COUNT or first_seq + count - 1 > _U32:
        raise ValueError("count must be 1..%d and first_seq + count - 1 <= 4294967295, got %r"
                         % (MAX_COUNT, count))
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ValueError("payload must be bytes")
    size = 3 + len(raw_id) + _DATA_FIXED + len(payload) + tag_len
    if size > MAX_FRAME_BYTES:
        raise ValueError("payload too long: frame would be %d bytes, max %d"
                         % (size, MAX_FRAME_BYTES))
    return raw_id, size


def data_frame_len(device_id, payload_len, tag_len=DEFAULT_TAG_LEN):
    """Bytes in a data frame of ``device_id`` (str) carrying ``payload_len`` payload bytes."""
    return 3 + len(device_id) + _DATA_FIXED + payload_len + tag_len


def encode_data(key, device_id, boot_epoch, first_seq, count, payload, tag_len=DEFAULT_TAG_LEN):
    """A data frame (bytes) carrying ``count`` records from ``first_seq`` of ``boot_epoch``.

    ``payload`` is opaque bytes (the SenML-CBOR pack). Raises ``ValueError`` naming the
    argument: device_id pattern, boot_epoch/first_seq outside uint32, count outside
    1..65535 or running past seq 2**32-1, key shorter than 16 bytes, tag_len outside 8..32,
    or a frame longer than ``MAX_FRAME_BYTES``."""
    raw_id, size = _check_data(key, device_id, boot_epoch, first_seq, count, payload, tag_len)
    # one join: a node builds this on a ~100 KB heap, so no intermediate copies
    # MicroPython's join takes bytes only, not bytearray
    payload = payload if isinstance(payload, bytes) else bytes(payload)
    body = b"".join((_head(TYPE_DATA, raw_id), struct.pack(">IIH", boot_epoch, first_seq, count),
                     payload))
    return _sign(key, _DIR_UP, body, tag_len)


def encode_data_into(buf, at, key, device_id, boot_epoch, first_seq, count, payload,
                     tag_len=DEFAULT_TAG_LEN):
    """``encode_data``'s frame, the same bytes, written into the bytearray ``buf`` from index
    ``at`` instead of a new object (a node reuses one buffer for every frame); returns the
    index after the tag. Raises ``ValueError`` as ``encode_data`` does, and naming ``buf``
    when the frame does not fit after ``at``."""
    raw_id, size = _check_data(key, device_id, boot_epoch, first_seq, count, payload, tag_len)
    if at < 0 or len(buf) - at < size:
        raise ValueError("buf must hold %d bytes from index %d, has %d" % (size, at, len(buf) - at))
    n_id = len(raw_id)
    buf[at] = VERSION
    buf[at + 1] = TYPE_DATA
    buf[at + 2] = n_id
    p = at + 3
    buf[p:p + n_id] = raw_id
    p += n_id
    struct.pack_into(">IIH", buf, p, boot_epoch, first_seq, count)
    p += _DATA_FIXED
    buf[p:p + len(payload)] = payload
    p += len(payload)
    mac = auth.hmac_sha256(key, _MAC_DOMAIN, _DIR_UP, memoryview(buf)[at:p])
    buf[p:p + tag_len] = memoryview(mac)[:tag_len]
    return p + tag_len


def encode_ack(key, device_id, boot_epoch, seq_through, tag_len=DEFAULT_TAG_LEN):
    """An ack (bytes): the gateway has committed ``device_id``'s records of ``boot_epoch``
    through ``seq_through``. Raises ``ValueError`` naming a bad argument (as
    ``encode_data``)."""
    _check_key(key)
    _check_tag_len(tag_len)
    raw_id = check_device_id(device_id)
    _check_u32("boot_epoch", boot_epoch)
    _check_u32("seq_through", seq_through)
    body = _head(TYPE_ACK, raw_id) + struct.pack(">II", boot_epoch, seq_through)
    return _sign(key, _DIR_DOWN, body, tag_len)


def ack_for(key, frame, tag_len=DEFAULT_TAG_LEN):
    """The ack for a verified ``DataFrame`` once its records are committed."""
    return encode_ack(key, frame.device_id, frame.boot_epoch, frame.seq_through, tag_len)


def decode_frame(buf, key_for_device, tag_len=DEFAULT_TAG_LEN, expect=None):
    """Verify and decode one frame: a ``DataFrame`` or an ``Ack``.

    ``key_for_device(device_id)`` returns the device key (bytes) or None for an unknown
    device. ``expect`` (``TYPE_DATA`` on the gateway, ``TYPE_ACK`` on the node) refuses the
    other type. Raises ``FrameError`` (see its reasons) for anything not an authentic frame;
    ``ValueError`` only for a bad ``tag_len`` argument. Fields past the device_id are read
    only after the tag verifies."""
    _check_tag_len(tag_len)
    n = len(buf)
    if n > MAX_FRAME_BYTES:
        raise FrameError("length", "%d bytes, max %d" % (n, MAX_FRAME_BYTES))
    if n < 3:
        raise FrameError("short", "%d bytes" % n)
    if buf[0] != VERSION:
        raise FrameError("version", "got %d, want %d" % (buf[0], VERSION))
    frame_type = buf[1]
    if frame_type == TYPE_DATA:
        fixed, direction = _DATA_FIXED, _DIR_UP
    elif frame_type == TYPE_ACK:
        fixed, direction = _ACK_FIXED, _DIR_DOWN
    else:
        raise FrameError("type", "unknown type 0x%02x" % frame_type)
    if expect is not None and frame_type != expect:
        raise FrameError("type", "got 0x%02x, expected 0x%02x" % (frame_type, expect))
    id_end = 3 + buf[2]
    if n < id_end:
        raise FrameError("short", "%d bytes, device_id needs %d" % (n, id_end))
    raw_id = bytes(buf[3:id_end])
    if not _id_ok(raw_id):
        raise FrameError("device_id", "not [a-z0-9][a-z0-9-]{0,31}")
    body_end = id_end + fixed
    if n < body_end + tag_len:
        raise FrameError("short", "%d bytes, need at least %d" % (n, body_end + tag_len))
    if frame_type == TYPE_ACK and n != body_end + tag_len:
        raise FrameError("length", "ack is %d bytes, must be %d" % (n, body_end + tag_len))
    device_id = raw_id.decode()
    key = key_for_device(device_id)
    if key is None:
        raise FrameError("unknown_device", device_id)
    mv = memoryview(buf)
    split = n - tag_len
    mac = auth.hmac_sha256(key, _MAC_DOMAIN, direction, mv[:split])
    if not auth.compare_digest(mac[:tag_len], mv[split:]):
        raise FrameError("bad_tag", device_id)
    # authentic from here on
    if frame_type == TYPE_ACK:
        boot_epoch, seq_through = struct.unpack_from(">II", buf, id_end)
        return Ack(device_id, boot_epoch, seq_through)
    boot_epoch, first_seq, count = struct.unpack_from(">IIH", buf, id_end)
    if count == 0 or first_seq + count - 1 > _U32:
        raise FrameError("count", "first_seq %d count %d" % (first_seq, count))
    return DataFrame(device_id, boot_epoch, first_seq, count, bytes(mv[body_end:split]))


def ack_trims(ack, current_boot_epoch, last_sent_seq):
    """Node side: the seq through which a verified ``ack`` lets the node trim its log.

    ``current_boot_epoch`` is the epoch of the records the node is awaiting an ack for (its
    in-flight frame), ``last_sent_seq`` the highest seq it has sent in that epoch (None if
    none). Raises ``FrameError``: ``type`` (not an Ack), ``ack_epoch`` (another boot epoch:
    it must not trim these records), ``ack_beyond`` (acks a seq never sent)."""
    if not isinstance(ack, Ack):
        raise FrameError("type", "not an ack")
    if ack.boot_epoch != current_boot_epoch:
        raise FrameError("ack_epoch", "ack for epoch %d, records of epoch %d"
                         % (ack.boot_epoch, current_boot_epoch))
    if last_sent_seq is None or ack.seq_through > last_sent_seq:
        raise FrameError("ack_beyond", "ack through %d, sent through %r"
                         % (ack.seq_through, last_sent_seq))
    return ack.seq_through


def classify(last, boot_epoch, seq_through):
    """Gateway side: ``NEW``, ``DUPLICATE`` or ``REPLAY`` for a verified frame ending at
    ``(boot_epoch, seq_through)``, given the device's last accepted ``(boot_epoch, seq)``
    (None when nothing has been accepted). See the module docstring for what each means."""
    if last is None:
        return NEW
    last_epoch, last_seq = last
    if boot_epoch < last_epoch:
        return REPLAY
    if boot_epoch > last_epoch or seq_through > last_seq:
        return NEW
    return DUPLICATE


def advance(last, boot_epoch, seq_through):
    """The device's new last accepted ``(boot_epoch, seq)`` once a frame ending at
    ``(boot_epoch, seq_through)`` is committed: the later of the two (never goes back)."""
    here = (boot_epoch, seq_through)
    if last is None or here > tuple(last):
        return here
    return tuple(last)
