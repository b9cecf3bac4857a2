"""The node's encoding half of ``protocol.frame``: encode a data frame into a buffer.

Its ack half (verify and decode an ack, ``ack_trims``) is ``protocol.frame_ack_core``, which
a node loads only to check an ack; what both share is ``protocol.frame_wire``.
``protocol.frame`` imports and re-exports all three and adds what only a gateway (and
the tests) use: ``DataFrame``, ``encode_data``/``encode_ack``, the data path of
``decode_frame``, ``classify``/``advance``. A node imports only these modules
(``app/links/framed.py``), so it does not hold the gateway's code in its heap, nor the ack's
while it packs (docs/protocol-frame.md, "Node and gateway modules"). Layouts, the MAC and
the trimming rules: ``protocol/frame.py``'s docstring. Runs on MicroPython and CPython.
"""

import struct

from protocol import auth_core as auth  # the node's part of protocol.auth
from protocol.frame_wire import (_DATA_FIXED, _DIR_UP, _MAC_DOMAIN, DEFAULT_TAG_LEN, MAX_FRAME_BYTES, TYPE_DATA,
                                 VERSION, _check_tag_len, _id_ok)

MAX_COUNT = 0xFFFF    # count is a uint16
MIN_KEY_LEN = 16      # device keys are 16 or 32 random bytes (issue 3)
_U32 = 0xFFFFFFFF


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
