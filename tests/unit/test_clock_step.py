"""The RTC step detector (firmware/app/clock.py ``rtc_step_s`` and ``StepWatch``) on CPython,
over the simulators' VirtualClock (ticks and a wall time that a clock-jump fault steps)."""

import pytest

from firmware.app.clock import STEP_MIN_S, StepWatch, rtc_step_s
from simulators.clock import VirtualClock

T0 = 1_763_000_000  # 2025-11


def test_within_tolerance_is_no_step():
    assert rtc_step_s(T0, T0 + 300, 300_000) == 0
    assert rtc_step_s(T0, T0 + 315, 300_000) == 0  # +5 %: the RC oscillator's drift
    assert rtc_step_s(T0, T0 + 300 + STEP_MIN_S, 300_000) == 0  # the floor on a short interval
    assert rtc_step_s(T0, T0 + 3600 + 350, 3_600_000) == 0  # under 10 % of an hour


def test_steps_forward_and_back_are_signed_seconds():
    assert rtc_step_s(T0, T0 + 300 + 1800, 300_000) == 1800
    assert rtc_step_s(T0, T0 + 300 - 86400, 300_000) == -86400
    assert rtc_step_s(T0, T0 + 3600 + 400, 3_600_000) == 400  # over 10 % of an hour


def test_a_known_range_is_stepped_only_outside_it():
    assert rtc_step_s(T0, T0 + 250, 200_000, 300_000) == 0
    assert rtc_step_s(T0, T0 + 150, 200_000, 300_000) == 0  # 200 s less the 60 s floor
    assert rtc_step_s(T0, T0 + 50, 200_000, 300_000) == -150
    assert rtc_step_s(T0, T0 + 400, 200_000, 300_000) == 100


def test_bad_known_times_raise_value_error_naming_them():
    with pytest.raises(ValueError, match="known_min_ms"):
        rtc_step_s(T0, T0, -1)
    with pytest.raises(ValueError, match="known_min_ms"):
        rtc_step_s(T0, T0, 5, 4)


def test_watch_in_one_process_uses_the_ticks():
    clock = VirtualClock(start_wall_s=T0)
    persist = {}
    watch = StepWatch(clock, persist, 300_000)
    assert watch.start() == (T0, 0)  # nothing to compare yet
    watch.end()
    clock.advance_s(300)
    assert watch.start()[1] == 0
    clock.advance_s(300)
    clock.jump_wall(1800)
    wall, step = watch.start()
    assert (wall, step) == (T0 + 2400, 1800)
    clock.advance_s(300)
    assert watch.start()[1] == 0  # measured from the stepped time on


def _wake(persist, wall_s, boot_s, interval_ms=300_000):
    """A new process after a deep sleep: ticks restart at 0; its cycle starts ``boot_s`` in,
    the RTC then reading ``wall_s``."""
    clock = VirtualClock(start_wall_s=wall_s - boot_s)
    clock.advance_s(boot_s)
    return StepWatch(clock, persist, interval_ms).start()


def test_watch_across_deep_sleep_uses_the_requested_sleep():
    clock = VirtualClock(start_wall_s=T0 - 2)
    clock.advance_s(2)  # the cycle starts 2 s after boot
    persist = {}
    watch = StepWatch(clock, persist, 300_000)
    watch.start()
    clock.advance_s(8)  # awake 8 s: the root sleeps 300 s less 8..10 s
    watch.end()
    assert persist["ck"] == [T0, 2000, 10000, 300_000]
    # 8 s awake + 290..292 s asleep + 2 s booting: the RTC should read T0 + 300..302
    assert _wake(dict(persist), T0 + 301, 2)[1] == 0
    assert _wake(dict(persist), T0 + 302 + 1800, 2)[1] == 1800  # beyond the latest
    assert _wake(dict(persist), T0 + 300 - 86400, 2)[1] == -86400
    # a downlink changed the interval for this boot: the sleep was still the old one
    assert _wake(dict(persist), T0 + 301, 2, interval_ms=3_600_000)[1] == 0


def test_watch_after_a_restart_uses_the_ticks_that_went_on():
    clock = VirtualClock(start_wall_s=T0)
    clock.advance_s(5000)  # ticks since power-on, kept through machine.soft_reset
    persist = {}
    StepWatch(clock, persist, 60_000).start()
    clock.advance_s(60)
    assert StepWatch(clock, dict(persist), 60_000, ticks_kept=True).start()[1] == 0
    clock.jump_wall(-7200)
    assert StepWatch(clock, dict(persist), 60_000, ticks_kept=True).start()[1] == -7200


def test_watch_skips_untrusted_time_and_damaged_memory():
    clock = VirtualClock(start_wall_s=T0, wall_trusted=False)
    persist = {"ck": [T0 - 300, 0, 5, 300_000]}
    assert StepWatch(clock, persist, 300_000).start() == (None, 0)
    assert persist["ck"][0] is None
    clock.set_wall_trusted(True)
    for bad in ([None, 0, 5, 1], [T0, 9, 5, 1], [T0, "x", 5, 1], [T0, 0, 5, -1], [T0, 0, 5], "junk"):
        assert StepWatch(clock, {"ck": bad}, 300_000).start() == (T0, 0)
