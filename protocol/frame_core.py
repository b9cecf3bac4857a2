"""The node's part of ``protocol.frame``: encode a data frame into a buffer, and decode and
verify an ack (and check what it lets the node trim).

``protocol.frame`` imports and re-exports all of this and adds what only a gateway (and the
tests) use: ``DataFrame``, ``encode_data``/``encode_ack``, the data path of ``decode_frame``,
``classify``/``advance``. A node imports only this module (``app/links/framed.py``), so it
does not hold the gateway's code in its heap (docs/protocol-frame.md, "Node and gateway
modules"). Layouts, the MAC and the trimming rules: ``protocol/frame.py``'s docstring.
Runs on MicroPython and CPython.
"""

import struct

from protocol import auth_core as auth  # the node's part of protocol.auth

VERSION = 1
TYPE_DATA = 0x01  # node -> gateway
TYPE_ACK = 0x02   # gateway -> node
DEFAULT_TAG_LEN = 16  # bytes; why 16 and not 8: protocol/auth.py docstring
MAX_DEVICE_ID = 32    # issue 3: device_id matches [a-z0-9][a-z0-9-]{0,31}
MAX_COUNT = 0xFFFF    # count is a uint16
MAX_FRAME_BYTES = 4096  # whole frame incl. tag; bounds every buffer on both ends
MIN_KEY_LEN = 16      # device keys are 16 or 32 random bytes (issue 3)

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


class Ack:
    """A verified ack: the gateway has committed ``device_id``'s records of ``boot_epoch``
    through ``seq_through``. (``protocol.frame.Ack`` adds comparison and repr.)"""

    type = TYPE_ACK

    def __init__(self, device_id, boot_epoch, seq_through):
        self.device_id = device_id
        self.boot_epoch = boot_epoch
        self.seq_through = seq_through


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


def _check_data(key, device_id, boot_epoch, first_seq, count, payload, tag_len):
    # encode_data's checks; returns (device_id bytes, frame size)
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ValueError("payload must be bytes")
    return _check_fields(key, device_id, boot_epoch, first_seq, count, len(payload), tag_len)


def _check_fields(key, device_id, boot_epoch, first_seq, count, payload_len, tag_len):
    # the checks of a frame carrying payload_len payload bytes; (device_id bytes, frame size)
    _check_key(key)
    _check_tag_len(tag_len)
    raw_id = check_device_id(device_id)
    _check_u32("boot_epoch", boot_epoch)
    _check_u32("first_seq", first_seq)
    if not isinstance(count, int) or not 1 <= count <= MAX_COUNT or first_seq + count - 1 > _U32:
        raise ValueError("count must be 1..%d and first_seq + count - 1 <= 4294967295, got %r"
                         % (MAX_COUNT, count))
    size = 3 + len(raw_id) + _DATA_FIXED + payload_len + tag_len
    if size > MAX_FRAME_BYTES:
        raise ValueError("payload too long: frame would be %d bytes, max %d"
                         % (size, MAX_FRAME_BYTES))
    return raw_id, size


def data_frame_len(device_id, payload_len, tag_len=DEFAULT_TAG_LEN):
    """Bytes in a data frame of ``device_id`` (str) carrying ``payload_len`` payload bytes
    (``data_frame_len(device_id, 0, 0)``: the header before the payload)."""
    return 3 + len(device_id) + _DATA_FIXED + payload_len + tag_len


def encode_data_into(buf, at, key, device_id, boot_epoch, first_seq, count, payload,
                     tag_len=DEFAULT_TAG_LEN):
    """``frame.encode_data``'s frame, the same bytes, written into the bytearray ``buf`` from
    index ``at`` instead of a new object (a node reuses one buffer for every frame); returns
    the index after the tag. Raises ``ValueError`` naming the argument: device_id pattern,
    boot_epoch/first_seq outside uint32, count outside 1..65535 or running past seq 2**32-1,
    key shorter than 16 bytes, tag_len outside 8..32, a frame longer than
    ``MAX_FRAME_BYTES``, or ``buf`` when the frame does not fit after ``at``."""
    raw_id, size = _check_data(key, device_id, boot_epoch, first_seq, count, payload, tag_len)
    if at < 0 or len(buf) - at < size:
        raise ValueError("buf must hold %d bytes from index %d, has %d" % (size, at, len(buf) - at))
    p = at + 3 + len(raw_id) + _DATA_FIXED
    buf[p:p + len(payload)] = payload
    return seal_data_into(buf, at, key, device_id, boot_epoch, first_seq, count, len(payload), tag_len)


def seal_data_into(buf, at, key, device_id, boot_epoch, first_seq, count, payload_len,
                   tag_len=DEFAULT_TAG_LEN):
    """The frame of ``encode_data_into``, the same bytes, around a payload already in the
    bytearray ``buf``: its ``payload_len`` bytes from index ``at + data_frame_len(device_id,
    0, 0)`` (a node packs its SenML there, leaving room for the header: no copy, no second
    buffer). Writes the header from ``at`` and the tag after the payload (``buf`` grows to
    hold it when it is shorter); returns the index after the tag. Raises ``ValueError`` as
    ``encode_data_into`` does, and naming ``buf`` when it does not hold the payload."""
    raw_id, size = _check_fields(key, device_id, boot_epoch, first_seq, count, payload_len, tag_len)
    n_id = len(raw_id)
    p = at + 3 + n_id + _DATA_FIXED + payload_len  # the payload's end
    if at < 0 or len(buf) < p:
        raise ValueError("buf must hold the payload up to index %d, has %d" % (p, len(buf)))
    buf[at] = VERSION
    buf[at + 1] = TYPE_DATA
    buf[at + 2] = n_id
    buf[at + 3:at + 3 + n_id] = raw_id
    struct.pack_into(">IIH", buf, at + 3 + n_id, boot_epoch, first_seq, count)
    mac = auth.hmac_sha256(key, _MAC_DOMAIN, _DIR_UP, memoryview(buf)[at:p])
    buf[p:p + tag_len] = memoryview(mac)[:tag_len]
    return p + tag_len


def verify(buf, key_for_device, tag_len=DEFAULT_TAG_LEN, expect=None):
    """Check a frame's header, lengths and tag: ``(frame_type, device_id, id_end, body_end,
    tag_at)`` of an authentic frame, its fields not yet read (``frame.decode_frame`` and
    ``decode_ack`` read them). Arguments and errors as ``frame.decode_frame``."""
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
    split = n - tag_len
    mac = auth.hmac_sha256(key, _MAC_DOMAIN, direction, memoryview(buf)[:split])
    if not auth.compare_digest(mac[:tag_len], memoryview(buf)[split:]):
        raise FrameError("bad_tag", device_id)
    return frame_type, device_id, id_end, body_end, split


def decode_ack(buf, key_for_device, tag_len=DEFAULT_TAG_LEN):
    """Verify and decode an ack: an ``Ack``. ``frame.decode_frame(..., expect=TYPE_ACK)``
    without the gateway's code: raises ``FrameError`` for anything not an authentic ack
    (a data frame is ``type``), ``ValueError`` only for a bad ``tag_len``."""
    _, device_id, id_end, _, _ = verify(buf, key_for_device, tag_len, TYPE_ACK)
    boot_epoch, seq_through = struct.unpack_from(">II", buf, id_end)
    return Ack(device_id, boot_epoch, seq_through)


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
