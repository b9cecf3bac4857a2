"""What both halves of a node's frame code share: the layout's constants, the device_id
pattern and the tag length's check. ``protocol.frame_core`` (encode a data frame) and
``protocol.frame_ack_core`` (verify and decode an ack) import it, so a node that holds one
half does not hold the other (docs/protocol-frame.md, "Node and gateway modules").
``protocol.frame`` re-exports all of it. Runs on MicroPython and CPython.
"""

from protocol import auth_core as auth  # the node's part of protocol.auth

VERSION = 1
TYPE_DATA = 0x01  # node -> gateway
TYPE_ACK = 0x02   # gateway -> node
DEFAULT_TAG_LEN = 16  # bytes; why 16 and not 8: protocol/auth.py docstring
MAX_DEVICE_ID = 32    # issue 3: device_id matches [a-z0-9][a-z0-9-]{0,31}
MAX_FRAME_BYTES = 4096  # whole frame incl. tag; bounds every buffer on both ends

_MAC_DOMAIN = b"civicedge-frame-v1"
_DIR_UP = b"U"
_DIR_DOWN = b"D"
_DATA_FIXED = 10  # boot_epoch u32 + first_seq u32 + count u16
_ACK_FIXED = 8    # boot_epoch u32 + seq_through u32


def _id_ok(raw):
    # [a-z0-9][a-z0-9-]{0,31} without re (bytes in, so no Unicode surprises)
    if not 1 <= len(raw) <= MAX_DEVICE_ID or raw[0] == 0x2D:
        return False
    for c in raw:
        if not (0x61 <= c <= 0x7A or 0x30 <= c <= 0x39 or c == 0x2D):
            return False
    return True


def _check_tag_len(tag_len):
    if not isinstance(tag_len, int) or not auth.MIN_TAG_LEN <= tag_len <= auth.DIGEST_SIZE:
        raise ValueError("tag_len must be an int from %d to %d, got %r"
                         % (auth.MIN_TAG_LEN, auth.DIGEST_SIZE, tag_len))
