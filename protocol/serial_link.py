"""Serial framing for node frames: ``00 | COBS(frame | CRC-32 LE) | 00``. Sans-IO.

Theory of operation
-------------------
A UART or USB-serial line is a byte stream with noise, dropped bytes and a far end that may
start mid-packet. Each frame (``protocol.frame`` bytes, opaque here) gets a CRC-32 for link
errors (``binascii.crc32``: the zlib/IEEE 802.3 CRC, reflected polynomial 0x04C11DB7, init
and xorout 0xFFFFFFFF), appended **little-endian** (the order zlib's gzip trailer and the
Ethernet FCS use). The lot is COBS-encoded (``protocol.cobs``) so it holds no 0x00, and
0x00 delimits it. The encoder sends a 0x00 before the packet too: whatever garbage the
receiver holds (a boot-time glitch, half a packet) is closed off and dropped instead of
spoiling this packet. Empty packets (consecutive 0x00) are idle fill and ignored.

The CRC is for link errors only; authenticity is the frame's HMAC tag. A packet that passes
the CRC still goes through ``protocol.frame.decode_frame``.

``SerialDecoder.feed(bytes)`` returns the complete frames it found (CRC stripped) and never
raises on bad input: it counts each dropped packet by kind in ``counters``:
``crc`` (CRC mismatch, or too short to hold one), ``cobs`` (not valid COBS), ``oversize``
(more than ``max_frame`` bytes before a delimiter; the rest up to the next 0x00 is skipped
without buffering), and ``frames`` (good ones). Its buffer never exceeds the COBS size of
``max_frame`` + 4 bytes, so memory stays bounded whatever the line sends. Resynchronisation
is automatic at the next 0x00. Runs on MicroPython and CPython; no port here.
"""

import binascii
import struct

from protocol import cobs
from protocol.frame_core import MAX_FRAME_BYTES  # not protocol.frame: a node loads only the core

DELIMITER = b"\x00"
CRC_LEN = 4


def crc32(data):
    """CRC-32 (zlib/IEEE 802.3) of ``data`` as an unsigned int."""
    return binascii.crc32(data) & 0xFFFFFFFF


def encode_packet(frame):
    """The bytes to write for one frame: ``00 COBS(frame + crc32_le(frame)) 00``.

    Raises ``ValueError`` if ``frame`` is empty or longer than ``MAX_FRAME_BYTES``."""
    if not 0 < len(frame) <= MAX_FRAME_BYTES:
        raise ValueError("frame must be 1..%d bytes, got %d" % (MAX_FRAME_BYTES, len(frame)))
    frame = frame if isinstance(frame, bytes) else bytes(frame)  # MicroPython join: bytes only
    raw = b"".join((frame, struct.pack("<I", crc32(frame))))
    return b"".join((DELIMITER, cobs.encode(raw), DELIMITER))


class SerialDecoder:
    """Streaming decoder: feed it bytes as they arrive, get whole frames back.

    ``max_frame``: the largest frame (without CRC) accepted, bytes."""

    def __init__(self, max_frame=MAX_FRAME_BYTES):
        if not isinstance(max_frame, int) or max_frame < 1:
            raise ValueError("max_frame must be a positive int, got %r" % (max_frame,))
        self.max_frame = max_frame
        self._max_encoded = cobs.max_encoded_len(max_frame + CRC_LEN)
        self._buf = bytearray()
        self._skipping = False  # inside an oversize packet: drop until the next 0x00
        self.counters = {"frames": 0, "crc": 0, "cobs": 0, "oversize": 0}

    @property
    def errors(self):
        """Dropped packets of every kind."""
        c = self.counters
        return c["crc"] + c["cobs"] + c["oversize"]

    @property
    def buffered(self):
        """Bytes held for an unfinished packet (bounded by the COBS size of max_frame + 4)."""
        return len(self._buf)

    def feed(self, data):
        """Take the bytes-like ``data`` (``None`` or ``b""``: nothing, as a port read timeout
        gives) and return the list of complete, CRC-checked frames it finished. Never
        raises on line contents."""
        frames = []
        if not data:
            return frames
        data = bytes(data)
        n = len(data)
        start = 0
        while start < n:
            zero = data.find(DELIMITER, start)
            end = n if zero < 0 else zero
            if not self._skipping and end > start:
                if len(self._buf) + (end - start) > self._max_encoded:
                    self.counters["oversize"] += 1
                    self._skipping = True
                    self._buf = bytearray()
                else:
                    self._buf += data[start:end]
            if zero < 0:
                break
            if not self._skipping and self._buf:
                frame = self._finish(self._buf)
                if frame is not None:
                    frames.append(frame)
            self._buf = bytearray()
            self._skipping = False
            start = zero + 1
        return frames

    def _finish(self, packet):
        try:
            raw = cobs.decode(packet)
        except cobs.CobsError:
            self.counters["cobs"] += 1
            return None
        if len(raw) > self.max_frame + CRC_LEN:
            self.counters["oversize"] += 1
            return None
        if len(raw) <= CRC_LEN:
            self.counters["crc"] += 1
            return None
        frame = raw[:-CRC_LEN]
        if struct.unpack("<I", raw[-CRC_LEN:])[0] != crc32(frame):
            self.counters["crc"] += 1
            return None
        self.counters["frames"] += 1
        return frame
