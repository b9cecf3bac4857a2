"""HMAC-SHA256 (RFC 2104) over ``hashlib.sha256``, a constant-time compare, and tag truncation.

MicroPython has ``hashlib.sha256`` but no ``hmac`` module, so this is the one portable HMAC of
the project: the node signs its frames with it and the gateway verifies them with the same
code (tests check it against RFC 4231's vectors and CPython's ``hmac``).

Keys are never logged, printed or put in an exception message by this module; callers must
keep to the same rule (RELIABILITY.md, "Security checks"). Error messages name lengths only.

Tag length
----------
``truncate_tag`` keeps the leftmost bytes of the MAC (RFC 2104 §5, RFC 4868 §2.3). The
project's floor is 8 bytes (64 bits): a forger then needs ~2**63 online tries, each counted
and dropped by the receiver. Node frames on serial and MQTT use 16 bytes (128 bits,
``protocol.frame.DEFAULT_TAG_LEN``), matching the 128-bit device key: those links are not
airtime-bound, and 8 more bytes against a frame of ~40 bytes of header plus a SenML pack is
cheap. LoRaWAN does not carry these frames (its pack is protected by the LoRaWAN MIC).
Runs on MicroPython and CPython.

Speed (CPython only)
--------------------
A gateway verifies a frame and signs its ack with the same device key many thousand times a
second. On CPython, ``hmac_sha256`` keeps each key's two padded SHA-256 states (after the
inner and outer pad blocks) in a bounded cache and works on copies of them, which saves
building two pads and hashing two blocks per MAC (5x faster for a frame), and
``compare_digest`` asks the stdlib's C ``hmac.compare_digest``. The results are the same
(tests/unit/test_auth.py checks CPython's against RFC 4231 and ``hmac``; tests/mpy checks
MicroPython's against the same vectors and CPython's bytes). The cache holds what the keys
already give (the process holds the keys anyway) and never leaves the process. MicroPython
has no ``hmac`` module and cannot copy a hash object, so it takes neither path.
"""

import hashlib
import sys

BLOCK_SIZE = 64   # SHA-256 block size in bytes (FIPS 180-4 §5.1.2 / RFC 2104 "B")
DIGEST_SIZE = 32  # SHA-256 output in bytes (RFC 2104 "L")
MIN_TAG_LEN = 8   # project floor for a truncated tag, bytes (see module docstring)

_IPAD = 0x36  # RFC 2104 §2
_OPAD = 0x5C


def _xor_pad(key, pad):
    return bytes(b ^ pad for b in key) + bytes([pad]) * (BLOCK_SIZE - len(key))


if sys.implementation.name == "cpython":  # the speed-ups of the module docstring
    from hmac import compare_digest as _c_compare_digest
    _PAD_CACHE = {}  # key bytes -> (inner, outer) padded SHA-256 states, copied at each use
else:  # MicroPython: no hmac module, and its hash objects cannot be copied
    _c_compare_digest = _PAD_CACHE = None
_PAD_CACHE_MAX = 4096  # keys (a site's devices); emptied when full, then refilled


def _pads(key):
    """The SHA-256 states after the inner and the outer pad block of ``key`` (bytes)."""
    if len(key) > BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    return hashlib.sha256(_xor_pad(key, _IPAD)), hashlib.sha256(_xor_pad(key, _OPAD))


def hmac_sha256(key, msg, *more):
    """HMAC-SHA256 under ``key`` (bytes-like, any length) of ``msg`` followed by each of
    ``more`` (bytes-like parts, fed in order: the same as their concatenation, without the
    copy): 32 bytes.

    A key longer than the 64-byte block is hashed first (RFC 2104 §2). Raises ``TypeError``
    if an argument is not bytes-like; no message ever contains the key."""
    key = bytes(key)
    cache = _PAD_CACHE
    pads = None if cache is None else cache.get(key)
    if pads is None:
        pads = _pads(key)
        if cache is not None:
            if len(cache) >= _PAD_CACHE_MAX:
                cache.clear()
            cache[key] = pads
    inner, outer = pads
    if cache is not None:  # the cached states stay as they are
        inner, outer = inner.copy(), outer.copy()
    inner.update(msg)
    for part in more:
        inner.update(part)
    outer.update(inner.digest())
    return outer.digest()


def compare_digest(a, b):
    """True when the bytes-like ``a`` and ``b`` are equal, in time that depends only on
    their lengths (never on where they first differ). Unequal lengths return False at once:
    a tag's length is public."""
    if len(a) != len(b):
        return False
    if _c_compare_digest is not None:
        try:
            return _c_compare_digest(a, b)
        except Exception:  # noqa: BLE001 (not a plain buffer: the portable loop decides)
            pass
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def truncate_tag(mac, tag_len):
    """The leftmost ``tag_len`` bytes of ``mac``.

    Raises ``ValueError`` (naming ``tag_len``) unless ``MIN_TAG_LEN <= tag_len <= len(mac)``."""
    if not isinstance(tag_len, int) or tag_len < MIN_TAG_LEN or tag_len > len(mac):
        raise ValueError("tag_len must be an int from %d to %d bytes, got %r"
                         % (MIN_TAG_LEN, len(mac), tag_len))
    return bytes(mac[:tag_len])


def tag(key, msg, tag_len=DIGEST_SIZE):
    """HMAC-SHA256 of ``msg`` under ``key`` truncated to ``tag_len`` bytes (8..32).

    Raises ``ValueError`` for a ``tag_len`` outside 8..32."""
    if not isinstance(tag_len, int) or tag_len < MIN_TAG_LEN or tag_len > DIGEST_SIZE:
        raise ValueError("tag_len must be an int from %d to %d bytes, got %r"
                         % (MIN_TAG_LEN, DIGEST_SIZE, tag_len))
    return truncate_tag(hmac_sha256(key, msg), tag_len)


def verify(key, msg, received_tag):
    """True when ``received_tag`` (8..32 bytes) is the truncated HMAC-SHA256 of ``msg``
    under ``key``; False otherwise (including a tag of a length outside 8..32). Never raises
    for a bad tag: the caller decides what a failure means and counts it."""
    n = len(received_tag)
    if n < MIN_TAG_LEN or n > DIGEST_SIZE:
        return False
    return compare_digest(hmac_sha256(key, msg)[:n], received_tag)
