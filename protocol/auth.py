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

The HMAC and the compare (with those speed-ups) are ``protocol.auth_core``, the part a node
imports, re-exported here.
"""

from protocol.auth_core import (  # noqa: F401 (re-exported: the node's part)
    _IPAD, _OPAD, _PAD_CACHE, _PAD_CACHE_MAX, BLOCK_SIZE, DIGEST_SIZE, MIN_TAG_LEN, _pads,
    _xor_pad, compare_digest, hmac_sha256)


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
