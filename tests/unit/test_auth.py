"""protocol.auth: the portable HMAC-SHA256 against RFC 4231's published vectors and CPython's
``hmac``, truncation, and the constant-time compare."""

import hashlib
import hmac

import pytest

from protocol import auth

# RFC 4231 §4.2-4.8, HMAC-SHA-256 rows: (key hex, data hex, expected MAC hex).
# Test case 5's MAC is the published 128-bit truncation.
RFC4231 = [
    ("0b" * 20, b"Hi There".hex(),
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe".hex(), b"what do ya want for nothing?".hex(),
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    ("aa" * 20, "dd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)).hex(), "cd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    ("0c" * 20, b"Test With Truncation".hex(),
     "a3b6167473100ee06e0c796c2955552b"),
    ("aa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    ("aa" * 131, (b"This is a test using a larger than block-size key and a larger than "
                  b"block-size data. The key needs to be hashed before being used by the "
                  b"HMAC algorithm.").hex(),
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


@pytest.mark.parametrize("key_hex,data_hex,mac_hex", RFC4231)
def test_rfc4231_vectors(key_hex, data_hex, mac_hex):
    key, data, want = bytes.fromhex(key_hex), bytes.fromhex(data_hex), bytes.fromhex(mac_hex)
    mac = auth.hmac_sha256(key, data)
    assert len(mac) == auth.DIGEST_SIZE
    assert mac[:len(want)] == want
    assert auth.tag(key, data, len(want)) == want
    # the published vectors and CPython's own hmac agree with ours
    assert mac == hmac.new(key, data, hashlib.sha256).digest()


@pytest.mark.parametrize("key_len", [0, 1, 16, 32, 63, 64, 65, 200])
@pytest.mark.parametrize("msg_len", [0, 1, 55, 64, 1000])
def test_matches_cpython_hmac_at_block_boundaries(key_len, msg_len):
    key = bytes((7 * i + 3) & 0xFF for i in range(key_len))
    msg = bytes((11 * i + 5) & 0xFF for i in range(msg_len))
    assert auth.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_parts_are_fed_as_their_concatenation():
    key = b"k" * 16
    whole = auth.hmac_sha256(key, b"abcdefgh")
    assert auth.hmac_sha256(key, b"ab", b"cde", memoryview(b"xfghx")[1:4]) == whole
    assert auth.hmac_sha256(bytearray(key), bytearray(b"abcdefgh")) == whole


@pytest.mark.parametrize("n", [8, 12, 16, 31, 32])
def test_tag_is_the_leftmost_n_bytes(n):
    key, msg = bytes(16), b"payload"
    full = hmac.new(key, msg, hashlib.sha256).digest()
    assert auth.tag(key, msg, n) == full[:n]
    assert auth.truncate_tag(full, n) == full[:n]
    assert auth.verify(key, msg, full[:n])


@pytest.mark.parametrize("n", [0, 4, 7, 33, 8.0, None])
def test_tag_lengths_outside_8_to_32_are_refused(n):
    with pytest.raises(ValueError, match="tag_len"):
        auth.tag(bytes(16), b"m", n)


def test_verify_rejects_wrong_tag_wrong_key_and_short_tags():
    key, msg = bytes(range(16)), b"reading"
    good = auth.tag(key, msg, 16)
    assert auth.verify(key, msg, good)
    assert not auth.verify(key, msg + b"!", good)
    assert not auth.verify(bytes(16), msg, good)
    assert not auth.verify(key, msg, good[:-1] + bytes([good[-1] ^ 1]))
    # a forger cannot shorten the tag below the floor to improve the odds
    assert not auth.verify(key, msg, good[:7])
    assert not auth.verify(key, msg, b"")
    assert not auth.verify(key, msg, auth.hmac_sha256(key, msg) + b"\x00")


def test_compare_digest_agrees_with_cpython():
    cases = [(b"", b""), (b"a", b"a"), (b"a", b"b"), (b"ab", b"a"), (bytes(16), bytes(16)),
             (bytes(16), bytes(15) + b"\x01"), (b"\x80" + bytes(15), bytes(16))]
    for a, b in cases:
        assert auth.compare_digest(a, b) is hmac.compare_digest(a, b)
    assert auth.compare_digest(memoryview(b"xyz"), bytearray(b"xyz"))


def test_the_key_never_appears_in_an_error_message():
    secret = bytes.fromhex("5ec7e75ec7e75ec7e75ec7e75ec7e75e")
    with pytest.raises(ValueError) as info:
        auth.tag(secret, b"m", 4)
    text = str(info.value) + repr(info.value)
    assert secret.hex() not in text and repr(secret) not in text
