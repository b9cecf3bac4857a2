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
The node's part is re-exported here: encoding a data frame into a buffer
(``protocol.frame_core``), verifying an ack and ``ack_trims`` (``protocol.frame_ack_core``),
the layout both share (``protocol.frame_wire``); this module adds the gateway's.
Runs on MicroPython and CPython.
"""

import struct

from protocol import auth
from protocol.frame_ack_core import Ack as _NodeAck
from protocol.frame_ack_core import FrameError, ack_trims, decode_ack, verify  # noqa: F401 (re-exported)
from protocol.frame_core import (  # noqa: F401 (re-exported: the node's part)
    _U32, MAX_COUNT, MIN_KEY_LEN, _check_data, _check_key, _check_u32, check_device_id, data_frame_len,
    encode_data_into, seal_data_into)
from protocol.frame_wire import (  # noqa: F401 (re-exported: what both halves share)
    _ACK_FIXED, _DATA_FIXED, _DIR_DOWN, _DIR_UP, _MAC_DOMAIN, DEFAULT_TAG_LEN, MAX_DEVICE_ID, MAX_FRAME_BYTES,
    TYPE_ACK, TYPE_DATA, VERSION, _check_tag_len, _id_ok)

NEW = "new"
DUPLICATE = "duplicate"
REPLAY = "replay"


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


class Ack(_NodeAck):
    """A verified ack: the gateway has committed ``device_id``'s records of ``boot_epoch``
    through ``seq_through``. ``frame_ack_core.decode_ack`` (the node's) gives the base class, with
    the same fields; ``ack_trims`` takes either."""

    def __eq__(self, other):
        return (isinstance(other, _NodeAck) and self.device_id == other.device_id
                and self.boot_epoch == other.boot_epoch and self.seq_through == other.seq_through)

    def __repr__(self):
        return "Ack(%r, boot_epoch=%d, seq_through=%d)" % (
            self.device_id, self.boot_epoch, self.seq_through)


def _sign(key, direction, body, tag_len):
    mac = auth.hmac_sha256(key, _MAC_DOMAIN, direction, body)
    return body + auth.truncate_tag(mac, tag_len)


def _head(frame_type, raw_id):
    return bytes((VERSION, frame_type, len(raw_id))) + raw_id


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
    frame_type, device_id, id_end, body_end, split = verify(buf, key_for_device, tag_len, expect)
    # authentic from here on
    if frame_type == TYPE_ACK:
        boot_epoch, seq_through = struct.unpack_from(">II", buf, id_end)
        return Ack(device_id, boot_epoch, seq_through)
    boot_epoch, first_seq, count = struct.unpack_from(">IIH", buf, id_end)
    if count == 0 or first_seq + count - 1 > _U32:
        raise FrameError("count", "first_seq %d count %d" % (first_seq, count))
    return DataFrame(device_id, boot_epoch, first_seq, count, bytes(memoryview(buf)[body_end:split]))


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
