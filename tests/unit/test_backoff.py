"""gateway.backoff: jittered exponential backoff 1→120 s (pure), unit and property tests."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.backoff import DEFAULT_MAX_S, DEFAULT_MIN_S, Backoff


class Ends:
    """An rng that always answers one end of the interval (the extremes a real one can hit)."""

    def __init__(self, high):
        self.high = high

    def uniform(self, a, b):
        return b if self.high else a


def test_defaults_are_one_to_one_hundred_twenty_seconds():
    b = Backoff()
    assert (b.min_s, b.max_s) == (DEFAULT_MIN_S, DEFAULT_MAX_S) == (1.0, 120.0)


def test_first_retry_waits_the_minimum_then_the_ceiling_doubles_to_the_cap():
    b = Backoff(1, 120, rng=Ends(high=True))
    assert [b.next_s() for _ in range(10)] == [1, 2, 4, 8, 16, 32, 64, 120, 120, 120]


def test_low_draws_never_go_below_the_minimum():
    b = Backoff(1, 120, rng=Ends(high=False))
    assert [b.next_s() for _ in range(5)] == [1.0] * 5


def test_reset_after_a_success_starts_again_at_the_minimum():
    b = Backoff(1, 120, rng=Ends(high=True))
    for _ in range(6):
        b.next_s()
    assert b.failures == 6
    b.reset()
    assert b.failures == 0 and b.ceiling_s() == 1.0 and b.next_s() == 1.0


def test_jitter_spreads_delays_and_a_seed_repeats_them():
    a = Backoff(rng=random.Random(7))
    b = Backoff(rng=random.Random(7))
    da = [a.next_s() for _ in range(40)]
    assert da == [b.next_s() for _ in range(40)]
    capped = da[10:]  # all at the 120 s ceiling: uniform in [1, 120]
    assert len(set(capped)) == len(capped) and min(capped) < 60 < max(capped)


def test_thousands_of_failures_do_not_overflow():
    b = Backoff(rng=Ends(high=True))
    for _ in range(5000):
        d = b.next_s()
    assert d == 120.0 and b.ceiling_s(10 ** 6) == 120.0


@pytest.mark.parametrize("kwargs, name", [
    ({"min_s": 0}, "min_s"), ({"min_s": -1}, "min_s"), ({"min_s": float("nan")}, "min_s"),
    ({"max_s": float("inf")}, "max_s"), ({"min_s": 5, "max_s": 2}, "max_s"),
    ({"min_s": True}, "min_s"), ({"max_s": "120"}, "max_s"),
])
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Backoff(**kwargs)


@settings(max_examples=200, deadline=None)
@given(min_s=st.floats(0.001, 100), span=st.floats(0, 1000), seed=st.integers(0, 2 ** 32),
       steps=st.lists(st.booleans(), max_size=60))
def test_every_delay_is_within_min_and_max_and_under_its_ceiling(min_s, span, seed, steps):
    max_s = min_s + span
    b = Backoff(min_s, max_s, rng=random.Random(seed))
    prev_ceiling = 0.0
    for succeeded in steps:
        if succeeded:
            b.reset()
            prev_ceiling = 0.0
            continue
        ceiling = b.ceiling_s()
        d = b.next_s()
        assert min_s <= d <= max_s
        assert d <= ceiling <= max_s
        assert ceiling >= prev_ceiling  # the ceiling never shrinks without a success
        prev_ceiling = ceiling
