"""``machine.UART`` for the MicroPython unix port under simulation: a pty in raw mode
(``simchip`` re-exports it; firmware imports it from ``machine``)."""

import os
import select
import termios
import time as _real_time  # real time, for waiting on a pty (board.py replaces ``time`` later)

import simclock
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
_VMIN = 6  # Linux termios c_cc indices
_VTIME = 5


class UART:
    """``machine.UART`` (ESP32 signature) on the pty slave named by ``$CIVICEDGE_UART<id>``,
    in raw mode, so every byte passes unchanged.

    Reads return what arrived (None if nothing). A read that waits out its ``timeout`` ms
    charges that time to the virtual clock (at least 1 ms when nothing came) but waits at most
    ``$CIVICEDGE_REAL_WAIT_MS`` (500) of real time for the far end; a read that gets all it
    asked for costs no virtual time."""

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
        got = False
        data = f.read(512)
        while data:
            self._rx += data
            got = True
            data = f.read(512)
        return got

    def _read_until(self, want, line=False):
        """Bytes until ``want`` are held (or a newline, for ``line``), or the timeout."""
        start = _real_time.ticks_ms()
        budget = min(self.timeout, _UART_WAIT_MS)
        self._fill(0)
        while not (len(self._rx) >= want if not line else b"\n" in self._rx):
            left = budget - _real_time.ticks_diff(_real_time.ticks_ms(), start)
            if left <= 0 or not self._fill(left):
                simclock.advance_us(max(self.timeout * 1000, 0 if self._rx else _IDLE_POLL_US))
                break
        n = self._rx.find(b"\n") + 1 if line and b"\n" in self._rx else min(want, len(self._rx))
        out, self._rx = self._rx[:n], self._rx[n:]
        return out or None

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
        if not self._rx:
            simclock.advance_us(_IDLE_POLL_US)
        return len(self._rx)

    def write(self, buf):
        """Send ``buf``; returns the number of bytes written."""
        return self._file().write(buf)

    def flush(self):
        pass

    def txdone(self):
        return True

    def sendbreak(self):
        pass
