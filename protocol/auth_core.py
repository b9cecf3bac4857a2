"""The node's part of ``protocol.auth``: HMAC-SHA256 (``hmac_sha256``) and the constant-time
``compare_digest``, all a node needs to sign a frame and verify an ack.

``protocol.auth`` imports and re-exports all of this and adds ``truncate_tag``, ``tag`` and
``verify``, which the gateway and the tests use; a node imports only this module (through
``protocol.frame_core``). Keys, tag lengths and the CPython speed-ups: ``protocol/auth.py``'s
docstring. Runs on MicroPython and CPython.
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
