"""Virtual time over the simulator socket: the board's own clock (``VirtualTime``, the
``time`` module the firmware sees under ``board.py``). ``SimClock``, the clock contract for
checks run with a ``RemoteRig``, is ``simrig``'s (re-exported here), so the checks do not load
this module.

The board clock is ``simlink``'s: read from the last reply plus the sleeps not sent yet, no
round trip (``simlink`` explains how that stays exact).

Under ``board.py`` the firmware's ``select`` is ``VirtualSelect``: a poll that waits and
finds nothing charges its timeout to the virtual clock (after waiting at most
``$CIVICEDGE_REAL_WAIT_MS``, default 500, of real time for the far end, a real broker or
emulator); one that finds something costs no virtual time. While the simulator says the far
end is up (a fleet's gateway that runs: ``simlink.patient``) a wait with a timeout goes on in
real time, up to ``$CIVICEDGE_REAL_WAIT_MAX_MS`` (5000), so that a slow far end does not move
the board's clock. Before it waits it sends the
sleeps not sent yet (the far end may look at the fleet's time) and puts the firmware's
sockets in quick-ACK mode (``simsocket``). ``virtual_asyncio_core()`` is the
``_asyncio`` it gets, so ``asyncio`` schedules on virtual ticks too.

The board clock models an ESP32's two clocks on that virtual time:

- ticks (``time.ticks_ms``/``ticks_us``) count from 0 at every boot, as the ESP32's
  ``esp_timer`` does (a deep-sleep wake is a boot), and wrap at 2**30 like the ESP32 port's;
- the RTC (``time.time``, ``machine.RTC().datetime``) keeps counting through deep sleep,
  watchdog and soft resets, and restarts at a power cut: from 0 (1970-01-01, the ESP32
  port's epoch since MicroPython 1.22) unless ``power_on(rtc_synced=True)``, which starts it
  at the simulator's wall time. Setting it (``set_wall_s``) keeps an offset from the
  simulator's wall time, so a clock jump injected on the server (``rig.wall``) moves it too.
"""

import os
import sys
import select as _port_select  # the port's own, under VirtualSelect
import time as _port_time  # the port's own: calendar maths only (gmtime, mktime)

import simlink
from drivers.clock import TICKS_PERIOD, ticks_add, ticks_diff
from simrig import SimClock  # noqa: F401 (re-exported)

# -- the board's clock --------------------------------------------------------------------
_MASK = TICKS_PERIOD - 1
_boot_us = 0  # virtual µs (OP_NOW) of this boot
_rtc_offset_s = 0.0  # the board's RTC minus the simulator's wall time


def now():
    """``(virtual µs since the simulator's clock began, simulator wall seconds)``."""
    return simlink.now_us(), simlink.wall()[0]


now_us = simlink.now_us
advance_us = simlink.advance  # let ``us`` µs pass (the watchdog may fire: ``BoardReset``)


def power_on(rtc_synced=False):
    """A power-on: the RTC restarts (see the module docstring)."""
    global _rtc_offset_s
    _rtc_offset_s = 0.0 if rtc_synced else -now()[1]


def boot(at_us):
    """Every boot: ticks count from ``at_us`` (virtual µs, as ``now``)."""
    global _boot_us
    _boot_us = at_us


def wall_s():
    """The board's RTC in Unix seconds (float)."""
    return now()[1] + _rtc_offset_s


def set_wall_s(seconds):
    """Set the board's RTC to ``seconds`` (Unix)."""
    global _rtc_offset_s
    _rtc_offset_s = seconds - now()[1]


class VirtualTime:
    """The ``time`` module for firmware under ``board.py`` (installed in ``sys.modules``):
    MicroPython's ``time`` API on the board clock. Sleeping advances the virtual clock."""

    ticks_diff = staticmethod(ticks_diff)
    ticks_add = staticmethod(ticks_add)

    def ticks_ms(self):
        return ((now_us() - _boot_us) // 1000) & _MASK

    def ticks_us(self):
        return (now_us() - _boot_us) & _MASK

    ticks_cpu = ticks_us

    def sleep_ms(self, ms):
        advance_us(int(ms) * 1000)  # negative: returns at once, as the port does

    def sleep_us(self, us):
        advance_us(int(us))

    def sleep(self, seconds):
        if seconds < 0:
            raise OSError(22)  # EINVAL, as the port's time.sleep
        advance_us(round(seconds * 1000000))

    def time(self):
        return int(wall_s())

    def time_ns(self):
        return int(wall_s() * 1000000) * 1000

    def gmtime(self, secs=None):
        return _port_time.gmtime(int(wall_s() if secs is None else secs))

    localtime = gmtime  # the ESP32 port keeps UTC unless told a time zone

    def mktime(self, t):
        return _port_time.mktime(t)


REAL_WAIT_MS = int(os.getenv("CIVICEDGE_REAL_WAIT_MS") or 500)
_TLS_SLICE_MS = 10  # the longest real wait between two looks at TLS sockets (_VirtualPoll)


def _tls_read(obj, eventmask):
    """Whether ``obj``, registered for ``eventmask`` (None: the default, in and out), is a TLS
    socket waited on only to read (``_VirtualPoll``)."""
    return eventmask == _port_select.POLLIN and type(obj).__name__ == "SSLSocket"


class _VirtualPoll:
    """A ``select.poll()`` object whose waiting is virtual (see the module docstring).

    A TLS socket is not one of the port's own sockets, and the port's poll of such an object
    sleeps a real ms before each look, ``poll(0)`` included (an MQTT node's cycle took ~5 such
    sleeps of ~1.3 ms each, most of them after its broker and gateway had answered); the
    ESP32's looks first. So when every registered object is a TLS socket registered to read
    (what the firmware makes: ``app/mqtt_io.py``), a look registers the firmware's own sockets
    (``simsocket``) alongside, to write, which a connected socket can: the port's poll then
    returns at once, having asked the TLS sockets as it always does (``_look``). A wait that
    finds nothing waits in real time for something to read on those sockets (a TLS socket's
    own is one of them) and looks again; if that finds nothing (part of a TLS record came, or
    another socket woke it), the port's own polling waits out the rest, as before."""

    def __init__(self):
        self._poll = _port_select.poll()
        self._registered = {}  # id -> [obj, whether a TLS socket registered to read only]

    def register(self, obj, *eventmask):
        self._poll.register(obj, *eventmask)
        self._registered[id(obj)] = [obj, _tls_read(obj, eventmask[0] if eventmask else None)]

    def unregister(self, obj):
        self._poll.unregister(obj)
        self._registered.pop(id(obj), None)

    def modify(self, obj, eventmask):
        self._poll.modify(obj, eventmask)
        entry = self._registered.get(id(obj))
        if entry is not None:
            entry[1] = _tls_read(obj, eventmask)

    def _sockets(self, net):
        """The firmware's open sockets if every registered object is a TLS socket registered
        to read, else None (the port's poll as it is)."""
        if net is None or not self._registered:
            return None
        for _, tls_read in self._registered.values():
            if not tls_read:
                return None
        return net.open_sockets() or None

    def _look(self, socks):
        """The port's ``poll(0)`` of the registered TLS sockets, without its sleep."""
        probe = _port_select.poll()
        for obj, _ in self._registered.values():
            probe.register(obj, _port_select.POLLIN)
        for s in socks:
            probe.register(s, _port_select.POLLOUT)
        return [r for r in probe.poll(0) if id(r[0]) in self._registered]  # not the sockets added

    def _tls_wait(self, real_ms, socks):
        """Wait up to ``real_ms`` real ms (class docstring): looks, and between them waits
        for something to read on ``socks``, at most ``_TLS_SLICE_MS`` at a time (so a TLS
        socket whose own socket ``simsocket`` no longer keeps is still seen soon)."""
        t0 = _port_time.ticks_ms()
        raw = None
        while True:
            ready = self._look(socks)
            left = real_ms - _port_time.ticks_diff(_port_time.ticks_ms(), t0)
            if ready or left <= 0:
                return ready
            if raw is None:
                raw = _port_select.poll()
                for s in socks:
                    raw.register(s, _port_select.POLLIN)
            if raw.poll(min(left, _TLS_SLICE_MS)):
                left = real_ms - _port_time.ticks_diff(_port_time.ticks_ms(), t0)
                return self._look(socks) or self._poll.poll(max(0, left))

    def _wait(self, timeout):
        net = sys.modules.get("simsocket")
        if timeout == 0:
            socks = self._sockets(net)
            return self._poll.poll(0) if socks is None else self._look(socks)
        counts = simlink.counts
        waited = 0
        while True:
            simlink.flush()  # the far end may look at this board's time while it waits
            if net is not None:
                net.quick_acks()  # (drops the closed sockets)
            socks = self._sockets(net)
            real = REAL_WAIT_MS if timeout < 0 else min(timeout, REAL_WAIT_MS)
            t0 = _port_time.ticks_ms()
            if socks is not None:
                ready = self._tls_wait(real, socks)
            else:
                ready = self._poll.poll(real if self._registered else 0)
            dt = _port_time.ticks_diff(_port_time.ticks_ms(), t0)
            counts[2] += 1
            counts[3] += dt
            if ready:
                return ready
            waited += dt
            if timeout > 0 and self._registered and simlink.patient(waited):
                continue  # a far end that is up: its answer costs no virtual time
            counts[4] += 1
            advance_us((REAL_WAIT_MS if timeout < 0 else timeout) * 1000)
            if timeout > 0:
                return ready

    def poll(self, timeout=-1):
        return self._wait(timeout)

    def ipoll(self, timeout=-1, flags=0):
        self._wait(timeout)
        return self._poll.ipoll(0, flags)


class VirtualSelect:
    """The ``select`` module for firmware under ``board.py`` (installed in ``sys.modules``)."""

    POLLIN = _port_select.POLLIN
    POLLOUT = _port_select.POLLOUT
    POLLERR = _port_select.POLLERR
    POLLHUP = _port_select.POLLHUP

    def poll(self):
        return _VirtualPoll()


def virtual_asyncio_core():
    """An ``_asyncio`` for firmware under ``board.py``: the port's C ``TaskQueue`` keys a task
    pushed without a time on the port's real ticks; this one uses the board's."""
    import _asyncio

    board_time = VirtualTime()

    class TaskQueue(_asyncio.TaskQueue):
        def push(self, task, key=None):
            super().push(task, board_time.ticks_ms() if key is None else key)

    class Core:
        pass

    Core.Task = _asyncio.Task
    Core.TaskQueue = TaskQueue
    return Core
