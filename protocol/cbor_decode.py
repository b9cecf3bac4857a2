"""The strict CBOR decoder behind ``protocol.cbor.loads`` (RFC 8949), portable.

What it accepts and refuses is documented in ``protocol.cbor``; call ``cbor.loads``, which
imports this module on its first use (a node that only encodes never loads it).
"""

import struct

from protocol.cbor import CBORError, _check_utf8, dumps


def _half_to_float(h):
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        val = mant * 2.0 ** -24
    elif exp == 31:
        val = float("inf") if mant == 0 else float("nan")
    else:
        val = (mant + 1024) * 2.0 ** (exp - 25)
    return -val if h & 0x8000 else val


class _Decoder:
    def __init__(self, data, max_depth, max_len):
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.max_len = max_len

    def take(self, n):
        end = self.pos + n
        if end > len(self.data):
            raise CBORError("truncated: need %d bytes at offset %d, have %d"
                            % (n, self.pos, len(self.data) - self.pos))
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def length(self, n, unit, what):
        """Check a declared length ``n`` (items of at least ``unit`` bytes each)."""
        if n > self.max_len:
            raise CBORError("%s length %d exceeds the limit %d" % (what, n, self.max_len))
        if n * unit > len(self.data) - self.pos:
            raise CBORError("%s length %d exceeds the %d bytes left"
                            % (what, n, len(self.data) - self.pos))

    def item(self, depth):
        if depth > self.max_depth:
            raise CBORError("nesting deeper than %d" % self.max_depth)
        ib = self.take(1)[0]
        major = ib >> 5
        ai = ib & 0x1F
        if major == 7:
            return self.simple(ai)
        if ai < 24:
            arg = ai
        elif ai <= 27:
            arg = int.from_bytes(self.take(1 << (ai - 24)), "big")
        elif ai == 31:
            raise CBORError("indefinite length (major type %d) is not accepted" % major)
        else:
            raise CBORError("reserved additional information %d" % ai)
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            self.length(arg, 1, "byte string")
            return bytes(self.take(arg))
        if major == 3:
            self.length(arg, 1, "text string")
            raw = bytes(self.take(arg))
            _check_utf8(raw)
            return raw.decode("utf-8")
        if major == 4:
            self.length(arg, 1, "array")
            return [self.item(depth + 1) for _ in range(arg)]
        if major == 5:
            self.length(arg, 2, "map")
            out = {}
            for _ in range(arg):
                key = self.item(depth + 1)
                if isinstance(key, (list, dict)):
                    raise CBORError("map key of type %s is not accepted" % type(key).__name__)
                if key in out:
                    raise CBORError("duplicate map key %r" % (key,))
                out[key] = self.item(depth + 1)
            return out
        raise CBORError("tag %d is not accepted" % arg)

    def simple(self, ai):
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 25:
            return _half_to_float(int.from_bytes(self.take(2), "big"))
        if ai == 26:
            return struct.unpack(">f", self.take(4))[0]
        if ai == 27:
            return struct.unpack(">d", self.take(8))[0]
        if ai == 31:
            raise CBORError("unexpected break code")
        raise CBORError("simple value (additional information %d) is not accepted" % ai)


def decode(data, max_depth, max_len, canonical):
    """``protocol.cbor.loads`` (see there). Raises ``CBORError``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CBORError("data must be bytes, not %s" % type(data).__name__)
    data = bytes(data)
    if not data:
        raise CBORError("empty input")
    dec = _Decoder(data, max_depth, max_len)
    obj = dec.item(0)
    if dec.pos != len(data):
        raise CBORError("%d trailing bytes after the data item" % (len(data) - dec.pos))
    if canonical and dumps(obj) != data:
        raise CBORError("not in deterministic encoding (RFC 8949 §4.2)")
    return obj
