"""Sensirion I2C framing: the CRC-8 and 16-bit word packing shared by Sensirion parts.

Every Sensirion data word on the wire is two bytes, MSB first, followed by a CRC-8 over those
two bytes; command codes carry no CRC (REFERENCE §1 "Bus facts"; SCD4x datasheet v1.3 §3.2,
§3.11). This module is the one owner of that CRC in the project: drivers (SCD4x, SHT4x) and
simulators import it from here.

Pure functions, no I/O. Runs on MicroPython and CPython.
"""

from drivers.errors import CRCError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# REFERENCE §1.2 / datasheet §3.11 table 32: width 8, poly 0x31, init 0xFF, no reflection,
# final XOR 0x00.
_CRC8_POLYNOMIAL = const(0x31)
_CRC8_INIT = const(0xFF)

WORD_LEN = 3  # bytes per word on the wire: MSB, LSB, CRC


def crc8(data, start=0, end=None):
    """CRC-8 (poly 0x31, init 0xFF) over ``data[start:end]`` (bytes-like); returns 0..255."""
    if end is None:
        end = len(data)
    crc = _CRC8_INIT
    for i in range(start, end):
        crc ^= data[i]
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ _CRC8_POLYNOMIAL) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
    return crc


def _check_word(value, name):
    if not isinstance(value, int) or value < 0 or value > 0xFFFF:
        raise ValueError("%s must be an int 0..0xFFFF, got %r" % (name, value))


def pack_word(value):
    """The 3 wire bytes of the 16-bit ``value``: MSB, LSB, CRC. ``ValueError`` names ``value``."""
    _check_word(value, "value")
    msb = (value >> 8) & 0xFF
    lsb = value & 0xFF
    return bytes((msb, lsb, crc8(bytes((msb, lsb)))))


def command_bytes(command, words=()):
    """A command frame: the 16-bit ``command`` (no CRC) then each of ``words`` with its CRC.

    Raises ``ValueError`` naming ``command`` or ``words`` if a value is not 0..0xFFFF.
    """
    _check_word(command, "command")
    buf = bytearray(2 + WORD_LEN * len(words))
    buf[0] = (command >> 8) & 0xFF
    buf[1] = command & 0xFF
    pos = 2
    for w in words:
        _check_word(w, "words")
        buf[pos:pos + WORD_LEN] = pack_word(w)
        pos += WORD_LEN
    return bytes(buf)


def unpack_words(buf, count=None):
    """The ``count`` 16-bit words in a read buffer of (MSB, LSB, CRC) triples, as a list.

    ``count`` None means every whole triple in ``buf``. Raises ``CRCError(expected, received,
    word)`` for the first word whose CRC does not match, ``ValueError`` (naming ``buf``) if
    ``buf`` is shorter than ``count`` words.
    """
    if count is None:
        count = len(buf) // WORD_LEN
    if len(buf) < WORD_LEN * count:
        raise ValueError("buf holds %d bytes, %d words need %d" % (len(buf), count, WORD_LEN * count))
    out = []
    for i in range(count):
        pos = WORD_LEN * i
        expected = crc8(buf, pos, pos + 2)
        received = buf[pos + 2]
        word = (buf[pos] << 8) | buf[pos + 1]
        if expected != received:
            raise CRCError(expected, received, word)
        out.append(word)
    return out
