"""protocol.cbor against published vectors: REFERENCE.md §8.3/§8.4 and RFC 8949 Appendix A
(the preferred, shortest-float encodings), cross-checked with cbor2."""

import math

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.cbor import CBORError, dumps, encode_head, loads

# REFERENCE.md §8.3: the pack, and its 84-byte encoding with shortest floats + sorted keys.
PACK_8_3 = [
    {-2: "urn:dev:mac:0024befffe804ff1:", -3: 1714557600, 0: "co2", 1: "ppm", 2: 612},
    {0: "temp", 1: "Cel", 2: 22.5},
    {0: "rh", 1: "%RH", 2: 41.25},
]
PACK_8_3_HEX = (
    "83 a5 00 63 636f32 01 63 70706d 02 19 0264 21 78 1d"
    + "75726e3a6465763a6d61633a303032346265666666653830346666313a"  # the 29-byte urn
    + "22 1a 663212a0 a3 00 64 74656d70 01 63 43656c 02 f9 4da0"
    + "a3 00 62 7268 01 63 255248 02 f9 5128")


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize("obj, hexstr", [
    ({2: 22.5}, "a1 02 f9 4d a0"),
    ({2: 612}, "a1 02 19 02 64"),
    (21.1, "fb 40 35 19 99 99 99 99 9a"),
    (612.0, "f9 60 c8"),
    (22.5, "f9 4d a0"),
])
def test_reference_8_3_and_8_4_vectors(obj, hexstr):
    assert dumps(obj) == h(hexstr)
    assert cbor2.loads(dumps(obj)) == obj


def test_reference_8_3_pack_is_84_bytes_byte_exact():
    out = dumps(PACK_8_3)
    assert len(out) == 84
    assert out == h(PACK_8_3_HEX)
    assert cbor2.loads(out) == PACK_8_3
    assert loads(out) == PACK_8_3
    # cbor2's default (float64, insertion order) is the 96-byte figure of §8.3
    assert len(cbor2.dumps(PACK_8_3)) == 96


def test_senml_keys_0_to_8_sort_before_minus_1_to_minus_6():
    record = {-6: 0, -5: 0, -4: 0, -3: 0, -2: 0, -1: 0}
    record.update((k, 0) for k in range(9))
    out = dumps(record)
    keys = out[1::2]                      # every key and value is one byte here
    assert list(keys) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25]


def test_bytewise_order_differs_from_cbor2_length_first_order():
    # REFERENCE.md §8.4 item 4: 100 (18 64) vs -1 (20)
    assert dumps({100: 0, -1: 0}) == h("a2 18 64 00 20 00")
    assert cbor2.dumps({100: 0, -1: 0}, canonical=True) == h("a2 20 00 18 64 00")


# RFC 8949 Appendix A (diagnostic -> preferred encoding), the items this encoder supports.
@pytest.mark.parametrize("obj, hexstr", [
    (0, "00"), (1, "01"), (10, "0a"), (23, "17"), (24, "1818"), (25, "1819"), (100, "1864"),
    (1000, "1903e8"), (1000000, "1a000f4240"), (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"), (-18446744073709551616, "3bffffffffffffffff"),
    (-1, "20"), (-10, "29"), (-100, "3863"), (-1000, "3903e7"),
    (0.0, "f90000"), (-0.0, "f98000"), (1.0, "f93c00"), (1.1, "fb3ff199999999999a"),
    (1.5, "f93e00"), (65504.0, "f97bff"), (100000.0, "fa47c35000"),
    (3.4028234663852886e+38, "fa7f7fffff"), (1.0e+300, "fb7e37e43c8800759c"),
    (5.960464477539063e-8, "f90001"), (0.00006103515625, "f90400"), (-4.0, "f9c400"),
    (-4.1, "fbc010666666666666"), (math.inf, "f97c00"), (-math.inf, "f9fc00"),
    (False, "f4"), (True, "f5"), (None, "f6"),
    (b"", "40"), (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"), ("a", "6161"), ("IETF", "6449455446"), ("\"\\", "62225c"),
    ("\u00fc", "62c3bc"), ("\u6c34", "63e6b0b4"), ("\U00010151", "64f0908591"),
    ([], "80"), ([1, 2, 3], "83010203"), ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"), ({1: 2, 3: 4}, "a201020304"), ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    ({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
     "a56161614161626142616361436164614461656145"),
])
def test_rfc8949_appendix_a(obj, hexstr):
    assert dumps(obj) == h(hexstr)
    assert loads(h(hexstr)) == obj
    if obj == obj:
        assert cbor2.loads(dumps(obj)) == obj


def test_nan_is_the_canonical_half_and_decodes_to_nan():
    assert dumps(math.nan) == h("f97e00")
    assert dumps(-math.nan) == h("f97e00")
    assert math.isnan(loads(h("f97e00")))
    assert math.isnan(cbor2.loads(dumps(math.nan)))


@pytest.mark.parametrize("x, hexstr", [
    (2.0 ** -24, "f90001"),              # smallest float16 subnormal
    (1023 * 2.0 ** -24, "f903ff"),       # largest subnormal
    (2.0 ** -25, "fa33000000"),          # below float16: float32
    (3 * 2.0 ** -25, "fa33c00000"),      # needs one more bit than a subnormal has
    (65519.0, "fa477fef00"),             # between 65504 and float16's overflow
    (1.0 + 2.0 ** -10, "f93c01"),        # 10 mantissa bits fit
    (1.0 + 2.0 ** -11, "fa3f801000"),    # the 11th does not
    (1.0 + 2.0 ** -23, "fa3f800001"),
    (1.0 + 2.0 ** -24, "fb3ff0000010000000"),
    (2.0 ** -149, "fa00000001"),         # float32 subnormal
    (2.0 ** -150, "fb3690000000000000"),
])
def test_shortest_float_boundaries(x, hexstr):
    assert dumps(x) == h(hexstr)
    assert loads(h(hexstr)) == x
    assert cbor2.loads(h(hexstr)) == x


def test_int_and_float_are_different_items():
    assert dumps(1) != dumps(1.0)
    assert loads(dumps(1.0)) == 1.0 and isinstance(loads(dumps(1.0)), float)
    assert isinstance(loads(dumps(1)), int)


@pytest.mark.parametrize("obj", [2 ** 64, -2 ** 64 - 1, {1, 2}, object(), 1j])
def test_encoder_refuses_what_cbor_cannot_carry(obj):
    with pytest.raises(CBORError):
        dumps(obj)


def test_encoder_refuses_text_that_is_not_unicode():
    with pytest.raises(CBORError):
        dumps("a\ud800")


def test_encoder_refuses_a_self_referencing_list():
    a = []
    a.append(a)
    with pytest.raises(CBORError, match="nesting"):
        dumps(a)


@pytest.mark.parametrize("hexstr, message", [
    ("", "empty"),
    ("19 01", "truncated"),
    ("62 61", "bytes left"),
    ("01 02", "trailing"),
    ("5f 41 00 ff", "indefinite"),
    ("9f ff", "indefinite"),
    ("bf ff", "indefinite"),
    ("ff", "break"),
    ("1c", "reserved"),
    ("c1 1a 514b67b0", "tag"),
    ("f7", "simple"),
    ("f8 20", "simple"),
    ("f0", "simple"),
    ("61 ff", "UTF-8"),
    ("62 c0 80", "UTF-8"),            # overlong NUL
    ("63 ed a0 80", "UTF-8"),         # surrogate U+D800
    ("64 f4 90 80 80", "UTF-8"),      # above U+10FFFF
    ("62 e6 b0", "UTF-8"),            # truncated sequence
    ("a2 01 00 01 00", "duplicate"),
    ("a1 80 00", "key"),
    ("9a ffffffff", "length"),
    ("5b ffffffffffffffff", "length"),
    ("ba 00010000 00", "length"),
])
def test_decoder_rejects_malformed_input_with_cborerror(hexstr, message):
    with pytest.raises(CBORError, match=message) as info:
        loads(h(hexstr))
    assert isinstance(info.value, ValueError)


def test_decoder_depth_and_length_limits():
    deep = b"\x81" * 17 + b"\x00"
    with pytest.raises(CBORError, match="nesting"):
        loads(deep)
    assert loads(b"\x81" * 16 + b"\x00", max_depth=16) is not None
    with pytest.raises(CBORError, match="limit"):
        loads(dumps(list(range(20))), max_len=10)
    with pytest.raises(CBORError, match="bytes"):
        loads("a1 02 f9 4d a0")


@pytest.mark.parametrize("hexstr", [
    "18 05",                 # 5 not in its shortest form
    "fb 4036800000000000",   # 22.5 as float64
    "a2 20 00 18 64 00",     # cbor2's length-first key order
    "f9 7e01",               # a NaN with a payload
])
def test_canonical_mode_refuses_non_deterministic_encodings(hexstr):
    loads(h(hexstr))                       # well-formed
    with pytest.raises(CBORError, match="deterministic"):
        loads(h(hexstr), canonical=True)


def test_decoder_reads_every_float_width_and_cbor2_output():
    obj = {"f16": 1.5, "f32": 100000.0, "f64": 21.1, "neg": -0.0, "b": b"\x00\xff",
           "l": [None, True, False, -(2 ** 64)], "n": {1: {"x": []}}}
    got = loads(cbor2.dumps(obj))
    assert got == obj
    assert math.copysign(1.0, got["neg"]) == -1.0
    assert loads(dumps(obj), canonical=True) == obj



@given(st.dictionaries(st.one_of(st.integers(-30, 30), st.booleans(), st.text("abz", max_size=3)),
                       st.one_of(st.integers(-2 ** 40, 2 ** 40), st.text("xy", max_size=4), st.none()), max_size=12))
def test_map_keys_in_bytewise_order_of_their_encodings_whatever_the_keys(obj):
    # one-byte int keys (SenML's labels) take a path that sorts them without copies: the
    # bytes must still be those of sorting every key's own encoding (RFC 8949 §4.2.1)
    head = bytearray()
    encode_head(head, 5, len(obj))
    pairs = sorted((dumps(k), dumps(v)) for k, v in obj.items())
    assert dumps(obj) == bytes(head) + b"".join(k + v for k, v in pairs)
    assert loads(dumps(obj)) == obj
