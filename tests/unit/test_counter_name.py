"""The status record's counter names (``app.node._counter_name``): every character but a-z and
0-9 becomes one "_", multi-byte characters included, as the character-by-character version did."""

from hypothesis import given
from hypothesis import strategies as st

from firmware.app.node import _counter_name


def _by_character(k):
    return "".join(ch if ("a" <= ch <= "z" or "0" <= ch <= "9") else "_" for ch in k)


def test_names_the_platform_sees():
    assert _counter_name("frames_sent") == "frames_sent"
    assert _counter_name("A-b.c d") == "__b_c_d"
    assert _counter_name("ünï€😀9") == "_n___9"
    assert _counter_name("") == ""


@given(st.text())
def test_one_underscore_for_each_character_that_is_not_a_lowercase_letter_or_digit(k):
    assert _counter_name(k) == _by_character(k)
