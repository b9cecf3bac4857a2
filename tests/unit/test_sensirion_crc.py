"""Sensirion CRC-8 and word framing against the published vectors (REFERENCE §1.2)."""

import pytest

from drivers.errors import CRCError
from drivers.sensirion import command_bytes, crc8, pack_word, unpack_words

# REFERENCE §1.2 check vectors: (word bytes, CRC).
VECTORS = [
    (b"\xbe\xef", 0x92),
    (b"\x00\x00", 0x81),
    (b"\x00\x01", 0xB0),
    (b"\x01\xe0", 0xB4),
    (b"\x7f\xce", 0x7B),
    (b"\x01\xf4", 0x33),
    (b"\x66\x67", 0xA2),
    (b"\x5e\xb9", 0x3C),
    (b"\x80\x06", 0x04),
    (b"\x05\xda", 0x29),
    (b"\x03\xdb", 0x42),
    (b"\xf8\x96", 0x31),
    (b"\x9f\x07", 0xC2),
    (b"\x3b\xbe", 0x89),
]


@pytest.mark.parametrize("data,crc", VECTORS, ids=[v[0].hex() for v in VECTORS])
def test_crc8_matches_published_vector(data, crc):
    assert crc8(data) == crc


@pytest.mark.parametrize("data,crc", VECTORS, ids=[v[0].hex() for v in VECTORS])
def test_pack_word_appends_the_crc(data, crc):
    word = (data[0] << 8) | data[1]
    assert pack_word(word) == data + bytes([crc])


def test_crc8_over_a_slice_of_a_longer_buffer():
    buf = bytes.fromhex("01F4336667A25EB93C")
    assert [crc8(buf, i, i + 2) for i in (0, 3, 6)] == [0x33, 0xA2, 0x3C]


def test_unpack_words_reads_the_measurement_example():
    assert unpack_words(bytes.fromhex("01F4336667A25EB93C"), 3) == [0x01F4, 0x6667, 0x5EB9]


def test_unpack_words_defaults_to_every_whole_word():
    assert unpack_words(bytes.fromhex("F896319F07C23BBE89")) == [0xF896, 0x9F07, 0x3BBE]


def test_unpack_words_raises_crc_error_with_both_values_and_the_word():
    with pytest.raises(CRCError) as info:
        unpack_words(bytes.fromhex("01F4336667A35EB93C"), 3)
    assert (info.value.expected, info.value.received, info.value.word) == (0xA2, 0xA3, 0x6667)


def test_unpack_words_short_buffer_is_a_value_error_naming_buf():
    with pytest.raises(ValueError, match="buf"):
        unpack_words(b"\x01\xf4", 1)


def test_command_bytes_has_no_crc_on_the_command_and_one_per_word():
    assert command_bytes(0xEC05) == b"\xec\x05"
    assert command_bytes(0x2416, (1,)) == bytes.fromhex("24160001B0")


@pytest.mark.parametrize("bad", [-1, 0x10000, 1.5, None])
def test_pack_word_refuses_values_outside_16_bits(bad):
    with pytest.raises(ValueError, match="value"):
        pack_word(bad)


def test_command_bytes_refuses_a_bad_word_naming_words():
    with pytest.raises(ValueError, match="words"):
        command_bytes(0x2416, (0x10000,))
