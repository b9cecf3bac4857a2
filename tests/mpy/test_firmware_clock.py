"""The firmware's MicroClock (the clock contract over ``time``) and the drivers' Deadline in
the MicroPython unix port, whose tick period (2**62) differs from the ESP32's (2**30)."""

from simulators.mpyrun import run_micropython


def test_microclock_and_deadline_in_the_micropython_unix_port():
    code = (
        "from firmware.app.clock import MicroClock\n"
        "from drivers.clock import Deadline\n"
        "c = MicroClock()\n"
        "t0 = c.ticks_ms()\n"
        "d = Deadline(c)\n"
        "d.set_ms(30)\n"
        "assert 0 < d.remaining_ms() <= 30\n"
        "d.wait()\n"
        "assert c.ticks_diff(c.ticks_ms(), t0) >= 30\n"
        "assert c.wall_s() > 1.7e9 and c.wall_trusted() is True\n"  # the host's clock is set

        "print('MICROCLOCK OK')\n")
    rc, out, err = run_micropython(["-c", code], sim=False, timeout_s=30)
    assert rc == 0, err
    assert "MICROCLOCK OK" in out
