"""The clock contract every component receives from its composition root.

Nothing below a composition root reads ``time`` directly, so the simulator can run the
whole chain on one virtual clock. A clock object has:

``ticks_ms()``
    Monotonic milliseconds. May wrap (at 2**30 on the ESP32 port, 2**62 on the unix port):
    never subtract two ticks, use the same clock's ``ticks_diff`` and ``ticks_add``.
``ticks_diff(a, b)``
    ``a - b`` in milliseconds, correct across one wrap (as ``time.ticks_diff``).
``ticks_add(t, delta_ms)``
    ``t + delta_ms`` modulo the wrap.
``sleep_ms(ms)``
    Block (or, on a virtual clock, advance time) for ``ms`` milliseconds.
``wall_s()``
    Wall-clock time in Unix seconds (float or int).
``wall_trusted()``
    True once wall time comes from a trusted source (NTP, GPS, the gateway); until then
    records carry ``time_unsynced`` and ordering uses ``(boot_epoch, seq)``.

Implementations: ``simulators.clock.VirtualClock`` (CPython simulations);
``gateway.clock.SystemClock`` (CPython on the Pi); the firmware's own over ``time`` (MicroPython);
``simulators/mpy/simclock.py`` (the virtual clock over the simulator socket).
"""

# The ESP32 port's ticks period; the simulator's clocks use it so wrap bugs show in CI.
TICKS_PERIOD = 1 << 30
_TICKS_HALF = TICKS_PERIOD // 2


def ticks_diff(a, b):
    """``a - b`` for ticks that wrap at ``TICKS_PERIOD`` (as MicroPython's ``time.ticks_diff``)."""
    return ((a - b + _TICKS_HALF) & (TICKS_PERIOD - 1)) - _TICKS_HALF


def ticks_add(t, delta):
    """``t + delta`` modulo ``TICKS_PERIOD``."""
    return (t + delta) & (TICKS_PERIOD - 1)


class WallTrust:
    """The trusted-wall-time flag every clock implementation carries (a mixin)."""

    def __init__(self, wall_trusted=False):
        self._trusted = bool(wall_trusted)

    def wall_trusted(self):
        return self._trusted

    def set_wall_trusted(self, trusted):
        self._trusted = bool(trusted)


class Deadline:
    """Time until a device is ready again, kept on an injected clock.

    Drivers use it to honour a part's execution time without blocking in the protocol: a
    command that starts a long operation records when it ends; the next command waits only
    for what is left (``wait()``), and a scheduler can ask ``remaining_ms()`` and sleep itself.
    """

    def __init__(self, clock):
        self._clock = clock
        self._until = None

    def set_ms(self, ms):
        """The device is busy for ``ms`` milliseconds from now."""
        clock = self._clock
        until = clock.ticks_add(clock.ticks_ms(), int(ms))
        if self._until is None or clock.ticks_diff(until, self._until) > 0:
            self._until = until

    def remaining_ms(self):
        """Milliseconds until ready (0 when ready)."""
        if self._until is None:
            return 0
        left = self._clock.ticks_diff(self._until, self._clock.ticks_ms())
        if left <= 0:
            self._until = None
            return 0
        return left

    def wait(self):
        """Sleep on the injected clock until ready."""
        left = self.remaining_ms()
        if left > 0:
            self._clock.sleep_ms(left)
            self._until = None
