"""The clock contract's tick arithmetic and Deadline, across a tick wrap, on the virtual
clock. tests/mpy/test_firmware_clock.py runs the firmware's clock under MicroPython."""

from drivers.clock import TICKS_PERIOD, Deadline, ticks_add, ticks_diff
from simulators.clock import VirtualClock


def test_ticks_diff_and_add_wrap_like_micropython():
    assert ticks_add(TICKS_PERIOD - 1, 1) == 0
    assert ticks_diff(0, TICKS_PERIOD - 1) == 1
    assert ticks_diff(TICKS_PERIOD - 1, 0) == -1
    assert ticks_diff(ticks_add(123, 5000), 123) == 5000


def test_virtual_clock_ticks_wrap_and_deadline_waits_across_the_wrap():
    clock = VirtualClock(ticks_start_ms=TICKS_PERIOD - 300)
    d = Deadline(clock)
    d.set_ms(500)  # ends 200 ms after the wrap
    clock.sleep_ms(400)
    assert clock.ticks_ms() == 100  # wrapped
    assert d.remaining_ms() == 100
    d.wait()
    assert d.remaining_ms() == 0
    assert clock.now_us == 500_000


def test_deadline_keeps_the_later_of_two_busy_times():
    clock = VirtualClock()
    d = Deadline(clock)
    d.set_ms(800)
    d.set_ms(20)
    assert d.remaining_ms() == 800


def test_wall_jump_moves_wall_time_only():
    clock = VirtualClock(start_wall_s=1_767_571_200)
    clock.jump_wall(-86400)
    assert clock.wall_s() == 1_767_571_200 - 86400
    assert clock.ticks_ms() == 0
