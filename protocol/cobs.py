"""Consistent Overhead Byte Stuffing (Cheshire & Baker, IEEE/ACM Trans. Networking 7(2), 1999).

COBS rewrites a packet so it contains no 0x00 byte, at a cost of one byte plus one per 254
bytes, so 0x00 can delimit packets on a byte stream (``protocol.serial_link``). The encoded
form is a series of blocks: a code byte ``c`` (1..255) followed by ``c - 1`` data bytes; a
block with ``c < 255`` stands for its data followed by a 0x00, except the last block, whose
implied zero is dropped. A 255-block (254 data bytes) implies no zero, and none is started
after one that ends the data (the paper's and Wikipedia's form: 254 non-zero bytes encode as
``FF`` + the bytes).

``encode``/``decode`` work on one packet without the 0x00 delimiter. ``encode_into`` writes
the encoding into a caller's buffer instead of a new one: a node on a ~100 KB heap encodes
every serial frame into one bytearray allocated when its link starts (``app/links/serial.py``),
since late in a wake its heap may hold 20 KB free with no 1 KB in one piece. The encoder never
writes ahead of what it has read, so the packet may sit in that same buffer a little further
on (``max_encoded_len(n) - n`` bytes) and be encoded in place. Runs on MicroPython and CPython.
"""


class CobsError(ValueError):
    """Bytes that no COBS encoder produces (a 0x00 inside, a block running past the end, or
    nothing at all)."""


def max_encoded_len(n):
    """Largest encoding of ``n`` raw bytes, delimiter not included: n + ceil(n/254), min 1."""
    return n + (n + 253) // 254 if n else 1


def encode(data):
    """COBS encoding of the bytes-like ``data`` (bytes, no 0x00 inside, no delimiter)."""
    out = bytearray(max_encoded_len(len(data)))
    w = encode_into(data, out)
    return bytes(out) if w == len(out) else bytes(memoryview(out)[:w])


def encode_into(data, out, start=0):
    """Write the COBS encoding of the bytes-like ``data`` into the bytearray ``out`` from index
    ``start``; returns the index after its last byte (no delimiter written).

    ``data`` may be a memoryview of ``out`` itself beginning at least
    ``max_encoded_len(len(data)) - len(data)`` bytes after ``start`` (encoding in place: each
    byte is read before anything is written over it). Raises ``ValueError`` naming ``out``
    if fewer than ``max_encoded_len(len(data))`` bytes follow ``start``."""
    n = len(data)
    if start < 0 or len(out) - start < max_encoded_len(n):
        raise ValueError("out must hold %d bytes from index %d, has %d"
                         % (max_encoded_len(n), start, len(out) - start))
    code_at = start  # where the current block's code byte goes
    w = start + 1    # next write position
    code = 1
    i = 0
    while i < n:
        b = data[i]
        i += 1
        if b == 0:
            out[code_at] = code
            code_at = w
            w += 1
            code = 1
        else:
            out[w] = b
            w += 1
            code += 1
            if code == 0xFF and i < n:
                out[code_at] = code
                code_at = w
                w += 1
                code = 1
    out[code_at] = code
    return w


def decode(enc):
    """The packet that COBS-encoded ``enc`` (bytes-like, delimiter not included) stands for.

    Raises ``CobsError`` if ``enc`` is empty, holds a 0x00, or a block runs past its end."""
    n = len(enc)
    if n == 0:
        raise CobsError("empty COBS packet")
    out = bytearray()
    i = 0
    while i < n:
        code = enc[i]
        if code == 0:
            raise CobsError("0x00 inside a COBS packet at offset %d" % i)
        end = i + code
        if end > n:
            raise CobsError("block at offset %d needs %d bytes, %d left" % (i, code - 1, n - i - 1))
        j = i + 1
        while j < end:
            if enc[j] == 0:
                raise CobsError("0x00 inside a COBS packet at offset %d" % j)
            j += 1
        out += enc[i + 1:end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)
