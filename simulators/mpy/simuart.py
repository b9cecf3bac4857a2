"""``machine.UART`` for the MicroPython unix port under simulation: a pty in raw mode
(``simchip`` re-exports it; firmware imports it from ``machine``)."""

import os
import select
import termios
import time as _real_time  # real time, for waiting on a pty (board.py replaces ``time`` later)

import simclock
import simlink
from simlink import SimError

_IDLE_POLL_US = 1000  # virtual cost of a poll that finds nothing (busy-waits must end)
_uarts = []


def _close_uarts():
    for uart in list(_uarts):
        uart.deinit()


_UART_KEYS = ("baudrate", "bits", "parity", "stop", "tx", "rx", "rts", "cts", "txbuf", "rxbuf",
              "timeout", "timeout_char", "invert", "flow")
# The most real time a read waits for the far end before it gives up (its full timeout is
# still charged to the virtual clock).
_UART_WAIT_MS = simclock.REAL_WAIT_MS
# Once some bytes of a read() have come, how long (real ms) a silence may last before the
# rest is taken not to be coming (a UART's timeout_char; its timeout is still charged).
_GAP_MS = 5
_PEER_WAIT_MS = 2000  # the most real time a settled peer's bytes take to cross the pty
_VMIN = 6  # Linux termios c_cc indices
_VTIME = 5
_counts = {}  # pty path -> [bytes written, bytes read] (kept through resets: board.py keeps this module)


class UART:
    """``machine.UART`` (ESP32 signature) on the pty slave named by ``$CIVICEDGE_UART<id>``,
    in raw mode, so every byte passes unchanged.

    Reads return what arrived (None if nothing). A read that waits out its ``timeout`` ms
    charges that time to the virtual clock (at least 1 ms when nothing came) but waits at most
    ``$CIVICEDGE_REAL_WAIT_MS`` (500) of real time for the far end (and ``_GAP_MS`` once some
    bytes of a ``read``/``readinto`` have come); a read that gets all it asked for costs no
    virtual time.

    A UART whose far end the simulator can *settle* (``control uart_peer``: a modem emulator
    in "follow" mode) never waits in real time for it: a read that finds nothing asks the
    emulator to take what was written and print all it has due by now (``uart_settle``), then
    reads exactly that; until the emulator's next scheduled output is due, and while nothing
    more is written, a read finds nothing at once. The virtual time each read costs is what
    it cost waiting in real time for an emulator that answers at once."""

    RTS = 1
    CTS = 2

    def __init__(self, id, *args, **kw):
        if id not in (0, 1, 2):
            raise ValueError("UART(%r) does not exist" % (id,))
        self.id = id
        self._f = None
        self._rx = b""
        self.baudrate = 115200
        self.bits = 8
        self.parity = None
        self.stop = 1
        self.timeout = 0
        self.timeout_char = 0
        self.init(*args, **kw)

    def init(self, *args, **kw):
        for name, value in zip(("baudrate", "bits", "parity", "stop"), args):
            kw[name] = value
        for name, value in kw.items():
            if name not in _UART_KEYS:
                raise TypeError("unexpected keyword argument '%s'" % name)
            setattr(self, name, value)
        if self._f is None:
            self._open()

    def _open(self):
        var = "CIVICEDGE_UART%d" % self.id
        path = os.getenv(var)
        if not path:
            raise SimError("%s is not set: the simulator names the pty for UART(%d) there" % (var, self.id))
        f = open(path, "r+b")
        fd = f.fileno()
        termios.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[6][_VMIN] = 0  # reads return what is there, at once
        attrs[6][_VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self._poll = select.poll()
        self._poll.register(f, select.POLLIN)
        self._f = f
        _uarts.append(self)
        self._count = _counts.get(path)
        self._quiet = None  # [bytes written, due µs]: nothing comes before due unless we write
        if self._count is None:  # the first open in this process: count from the peer's view
            # (a peer, once there, is there for the process's life: later opens, a deep-sleep
            # wake's among them, ask nothing)
            peer = simlink.control("uart_peer", self.id)
            if peer is not None:
                self._count = _counts[path] = list(peer)

    def deinit(self):
        if self._f is not None:
            self._f.close()
            self._f = None
            self._rx = b""
            _uarts.remove(self)

    def _file(self):
        if self._f is None:
            raise OSError(9)  # EBADF: deinitialised
        return self._f

    def _fill(self, wait_ms):
        """Take what the pty holds, waiting up to ``wait_ms`` real ms for something."""
        f = self._file()
        if not self._poll.poll(max(0, wait_ms)):
            return False
        got = 0
        data = f.read(512)
        while data:
            self._rx += data
            got += len(data)
            data = f.read(512)
        if self._count is not None:
            self._count[1] += got
        elif got:
            simlink.invalidate()  # a far end we cannot settle may move the clock (an emulator in "advance" mode)
        return got > 0

    def _settle(self):
        """A peer that can settle: everything it has to say by now is in ``_rx`` (see the
        class docstring)."""
        count = self._count
        q = self._quiet
        if q is not None and q[0] == count[0] and (q[1] is None or simclock.now_us() < q[1]):
            return  # nothing written since, and nothing due yet
        emitted, due = simlink.control("uart_settle", self.id, count[0])  # sends the sleep not sent yet
        self._quiet = [count[0], due]
        start = _real_time.ticks_ms()
        while count[1] < emitted and _real_time.ticks_diff(_real_time.ticks_ms(), start) < _PEER_WAIT_MS:
            self._fill(_PEER_WAIT_MS)

    def _done(self, want, line):
        return b"\n" in self._rx if line else len(self._rx) >= want

    def _read_until(self, want, line=False):
        """Bytes until ``want`` are held (or a newline, for ``line``), or the timeout."""
        self._fill(0)
        if not self._done(want, line):
            if self._count is not None:
                self._settle()
            else:
                self._wait(want, line)
            if not self._done(want, line):
                simclock.advance_us(max(self.timeout * 1000, 0 if self._rx else _IDLE_POLL_US))
        n = self._rx.find(b"\n") + 1 if line and b"\n" in self._rx else min(want, len(self._rx))
        out, self._rx = self._rx[:n], self._rx[n:]
        return out or None

    def _wait(self, want, line):
        """Wait in real time (bounded) for the far end until ``_done``."""
        simlink.flush()  # the far end sees this board's time while it waits
        start = _real_time.ticks_ms()
        budget = min(self.timeout, _UART_WAIT_MS)
        counts = simlink.counts
        counts[2] += 1
        while True:
            waited = _real_time.ticks_diff(_real_time.ticks_ms(), start)
            left = budget - waited
            if self._rx and not line:
                left = min(left, _GAP_MS)
            if left > 0 and self._fill(left) and not self._done(want, line):
                continue
            if not self._rx and self.timeout > 0 and simlink.patient(waited):
                budget += _UART_WAIT_MS  # nothing yet from a far end that is up: no virtual time passes
                continue
            counts[3] += _real_time.ticks_diff(_real_time.ticks_ms(), start)
            counts[4] += not self._done(want, line)
            return

    def read(self, nbytes=None):
        """Up to ``nbytes`` bytes (None: all that arrives before the timeout), or None."""
        return self._read_until(1 << 30 if nbytes is None else nbytes)

    def readinto(self, buf, nbytes=None):
        """Read into ``buf``; returns the count, or None if nothing arrived."""
        data = self._read_until(len(buf) if nbytes is None else nbytes)
        if data is None:
            return None
        buf[:len(data)] = data
        return len(data)

    def readline(self):
        """Bytes up to and including a newline (fewer at the timeout), or None."""
        return self._read_until(1 << 30, line=True)

    def any(self):
        """Bytes waiting (a poll that finds none costs 1 ms of virtual time)."""
        self._fill(0)
        if not self._rx and self._count is not None:
            self._settle()
        if not self._rx:
            simclock.advance_us(_IDLE_POLL_US)
        return len(self._rx)

    def write(self, buf):
        """Send ``buf``; returns the number of bytes written."""
        f = self._file()
        simlink.flush()  # the far end timestamps what it gets with this board's time
        n = f.write(buf)
        if self._count is not None and n:
            self._count[0] += n
        return n

    def flush(self):
        pass

    def txdone(self):
        return True

    def sendbreak(self):
        pass
