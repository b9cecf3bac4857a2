"""A small deterministic CBOR encoder and a strict decoder (RFC 8949), portable.

Theory of operation
-------------------
``dumps`` writes the RFC 8949 §4.2.1 "core deterministic encoding" (REFERENCE.md §8.4):

* integers, lengths and the major-type argument in their shortest form;
* floats in the shortest of float16 / float32 / float64 that gives back exactly the same
  value (22.5 -> ``f9 4d a0``, 612.0 -> ``f9 60 c8``, 21.1 -> ``fb 40 35 19 99 99 99 99 9a``);
  -0.0 keeps its sign, infinities are float16, and every NaN is written as the one
  canonical ``f9 7e 00`` (§4.2.2: a NaN payload is not preserved);
* definite lengths only;
* map keys in bytewise lexicographic order of their encodings (so SenML's 0..8 come before
  -1..-6), which is *not* cbor2's ``canonical=True`` length-first order when keys differ in
  encoded length (REFERENCE.md §8.4 item 4).

Types: ``int`` (-2**64 .. 2**64-1), ``float``, ``bool``, ``None``, ``str``, ``bytes`` /
``bytearray``, ``list`` / ``tuple`` (arrays), ``dict`` (maps). Integer-vs-float is the
caller's choice: 1 and 1.0 are different items. Anything else raises ``CBORError``.

On an ESP32 MicroPython floats are single precision (``MICROPY_FLOAT_IMPL_FLOAT`` in
micropython/micropython ``ports/esp32/mpconfigport.h``), so a float from the node is never
longer than float32 there; the unix port (tests) has doubles and encodes like CPython.

``loads`` (its code in ``protocol.cbor_decode``, loaded on first use) decodes one data item and raises only ``CBORError`` (a ``ValueError``) on
malformed input: truncation, trailing bytes, reserved or indefinite-length forms, tags,
simple values other than false/true/null, invalid UTF-8 (checked here: MicroPython's own
``decode`` accepts surrogates and overlong forms), duplicate map keys (keys
Python holds equal, such as 1, 1.0 and True, count as duplicates), array or map keys,
nesting deeper than ``max_depth`` and any length above ``max_len`` or above the bytes left
(so a forged length cannot make it allocate). With ``canonical=True`` it also refuses any
input that is not exactly what ``dumps`` would write. Recursion is bounded by ``max_depth``.
"""

import struct

MAX_DEPTH = 16     # SenML needs 2; config/downlinks a few more
MAX_LEN = 4096     # largest string/array/map length the decoder accepts by default

_UINT64_LIMIT = 1 << 64


class CBORError(ValueError):
    """Malformed CBOR, or a value that cannot be encoded."""


# ---------------------------------------------------------------------------- encoder

def encode_head(buf, major, n):
    """Append to ``buf`` the head of a data item: major type 0..7 and argument ``n``
    (0 <= n < 2**64) in its shortest form. For streaming an array whose items follow."""
    mt = major << 5
    if n < 24:
        buf.append(mt | n)
    elif n < 0x100:
        buf.append(mt | 24)
        buf.append(n)
    elif n < 0x10000:
        buf.append(mt | 25)
        buf.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        buf.append(mt | 26)
        buf.extend(n.to_bytes(4, "big"))
    else:
        buf.append(mt | 27)
        buf.extend(n.to_bytes(8, "big"))


def _half_bits(b32):
    """float16 bits equal to the float32 with bits ``b32``, or None if it has none.

    Done by hand: MicroPython's ``struct`` 'e' format is not in every port's build."""
    sign = (b32 >> 16) & 0x8000
    exp = (b32 >> 23) & 0xFF
    mant = b32 & 0x7FFFFF
    if exp == 0xFF:                      # infinity (NaN is handled by the caller)
        return sign | 0x7C00 if mant == 0 else None
    if exp == 0:                         # zero; float32 subnormals are below float16's range
        return sign if mant == 0 else None
    e = exp - 127
    if -14 <= e <= 15:                   # float16 normal: 10 mantissa bits
        if mant & 0x1FFF:
            return None
        return sign | ((e + 15) << 10) | (mant >> 13)
    if -24 <= e < -14:                   # float16 subnormal: m * 2**-24, m < 1024
        sig = mant | 0x800000
        shift = -(e + 1)
        if sig & ((1 << shift) - 1):
            return None
        return sign | (sig >> shift)
    return None


def _float(buf, x):
    if x != x:
        buf.extend(b"\xf9\x7e\x00")      # RFC 8949 §4.2.2: the canonical NaN
        return
    try:
        f32 = struct.pack(">f", x)
        exact32 = struct.unpack(">f", f32)[0] == x
    except OverflowError:                # CPython refuses |x| > float32 max; MicroPython gives inf
        exact32 = False
    if not exact32:
        buf.append(0xFB)
        buf.extend(struct.pack(">d", x))
        return
    h = _half_bits(int.from_bytes(f32, "big"))
    if h is None:
        buf.append(0xFA)
        buf.extend(f32)
    else:
        buf.append(0xF9)
        buf.extend(h.to_bytes(2, "big"))


def encode_into(buf, obj, _depth=0):
    """Append the deterministic encoding of ``obj`` to the bytearray ``buf``.

    Raises ``CBORError`` for an unsupported type, an integer outside -2**64..2**64-1 or
    nesting deeper than ``MAX_DEPTH`` (which also stops a self-referencing list)."""
    if _depth > MAX_DEPTH:
        raise CBORError("nesting deeper than %d" % MAX_DEPTH)
    if obj is None:
        buf.append(0xF6)
    elif obj is True:
        buf.append(0xF5)
    elif obj is False:
        buf.append(0xF4)
    elif isinstance(obj, int):
        if obj >= 0:
            if obj >= _UINT64_LIMIT:
                raise CBORError("integer %d does not fit CBOR's 64-bit argument" % obj)
            encode_head(buf, 0, obj)
        else:
            if obj < -_UINT64_LIMIT:
                raise CBORError("integer %d does not fit CBOR's 64-bit argument" % obj)
            encode_head(buf, 1, -1 - obj)
    elif isinstance(obj, float):
        _float(buf, obj)
    elif isinstance(obj, str):
        try:
            b = obj.encode("utf-8")
        except UnicodeError:             # CPython: a lone surrogate
            raise CBORError("text %r is not valid Unicode" % (obj,))
        _check_utf8(b)                   # MicroPython encodes lone surrogates without a word
        encode_head(buf, 3, len(b))
        buf.extend(b)
    elif isinstance(obj, (bytes, bytearray)):
        encode_head(buf, 2, len(obj))
        buf.extend(obj)
    elif isinstance(obj, (list, tuple)):
        encode_head(buf, 4, len(obj))
        for item in obj:
            encode_into(buf, item, _depth + 1)
    elif isinstance(obj, dict):
        encode_head(buf, 5, len(obj))
        small = _small_int_keys(obj)
        if small is not None:  # every key one byte (SenML's labels): sorted without copies
            for k in small:
                buf.append(_small_int_head(k))
                encode_into(buf, obj[k], _depth + 1)
            return
        pairs = []
        for k, v in obj.items():
            kb = bytearray()
            encode_into(kb, k, _depth + 1)
            pairs.append((bytes(kb), v))
        pairs.sort(key=_first)
        for kb, v in pairs:
            buf.extend(kb)
            encode_into(buf, v, _depth + 1)
    else:
        raise CBORError("cannot encode %s as CBOR" % type(obj).__name__)


def _first(pair):
    return pair[0]


def _small_int_head(k):
    # the one byte that encodes an int key within -24..23 (major 0 or 1, argument < 24)
    return k if k >= 0 else 0x1F - k


def _small_int_keys(obj):
    """The keys of the dict ``obj`` in encoded order if each is an int within -24..23 (each
    encodes as one byte, so the byte order is the order of those bytes), else None."""
    for k in obj:
        if not isinstance(k, int) or isinstance(k, bool) or not -24 <= k <= 23:
            return None
    return sorted(obj, key=_small_int_head)


def dumps(obj):
    """Deterministic CBOR bytes of ``obj`` (see the module docstring). Raises ``CBORError``."""
    buf = bytearray()
    encode_into(buf, obj)
    return bytes(buf)


# ---------------------------------------------------------------------------- decoder

def _check_utf8(b):
    """Raise CBORError unless ``b`` is well-formed UTF-8 (RFC 3629: no overlongs, no
    surrogates, nothing above U+10FFFF)."""
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            need, lo, hi = 1, 0x80, 0xBF
        elif 0xE0 <= c <= 0xEF:
            need = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        elif 0xF0 <= c <= 0xF4:
            need = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        else:
            raise CBORError("invalid UTF-8 lead byte 0x%02x in text string" % c)
        if i + need >= n:
            raise CBORError("truncated UTF-8 sequence in text string")
        if not lo <= b[i + 1] <= hi:
            raise CBORError("invalid UTF-8 in text string")
        for j in range(i + 2, i + need + 1):
            if not 0x80 <= b[j] <= 0xBF:
                raise CBORError("invalid UTF-8 in text string")
        i += need + 1


def loads(data, max_depth=MAX_DEPTH, max_len=MAX_LEN, canonical=False):
    """Decode one CBOR data item from ``data`` (bytes-like) into Python values.

    Maps become dicts, arrays lists, byte strings bytes. ``max_depth`` bounds nesting,
    ``max_len`` every declared length. With ``canonical`` the input must be exactly
    ``dumps(result)``. Raises ``CBORError`` (a ``ValueError``) for anything malformed,
    including a non-bytes ``data`` and bytes left over after the item.

    The decoder itself is ``protocol.cbor_decode``, imported on the first call: a node
    encodes SenML but decodes CBOR only for a LoRaWAN downlink, so it keeps the decoder's
    code out of its heap until then."""
    from protocol.cbor_decode import decode

    return decode(data, max_depth, max_len, canonical)
