"""The node's ack half of ``protocol.frame``: verify and decode an ack, and check what it lets
the node trim. ``protocol.frame_core`` is the other half (encode a data frame). A node loads
this only to check an ack and releases it after (``drivers.release``), so it does not hold it
while it logs and packs, nor the encoder while it waits for the ack (docs/protocol-frame.md,
"Node and gateway modules"). ``protocol.frame`` re-exports all of it; its ``decode_frame``
verifies through ``verify``. Layouts, the MAC and the trimming rules: ``protocol/frame.py``'s
docstring. Runs on MicroPython and CPython.
"""

import struct

from protocol import auth_core as auth  # the node's part of protocol.auth
from protocol.frame_wire import (_ACK_FIXED, _DATA_FIXED, _DIR_DOWN, _DIR_UP, _MAC_DOMAIN, DEFAULT_TAG_LEN,
                                 MAX_FRAME_BYTES, TYPE_ACK, TYPE_DATA, VERSION, _check_tag_len, _id_ok)


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
