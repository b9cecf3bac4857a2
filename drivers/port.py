"""The serial-port contract, and line I/O on it with a deadline on the injected clock.

A *port* is the subset of pyserial that the ESP32's ``machine.UART`` also has:

``write(buf) -> int``
    Queue ``buf`` for sending; returns the number of bytes taken (``machine.UART`` may
    return ``None`` when its write timed out: treated as 0).
``read(n) -> bytes``
    Up to ``n`` bytes; fewer, ``b""`` or ``None`` when nothing arrived within the port's
    own read timeout (both mean "nothing").

Nothing else is used: no ``in_waiting``, ``readline``, ``flush`` or ``reset_input_buffer``,
so every implementation below works unchanged:

- ``machine.UART(1, baudrate=115200, tx=17, rx=16, timeout=10)`` on the ESP32 (and the
  board shim's UART over a pty under the unix port);
- ``serial.Serial("/dev/ttyUSB0", 115200, timeout=0.01)`` on the Pi (pyserial);
- ``serial.serial_for_url("loop://", timeout=0.01)`` or a pty in tests.

**Open the port with a short read timeout** (10-50 ms). A port without one
(pyserial's default ``timeout=None``) blocks in ``read`` forever and no deadline here
can help. A deadline is checked between reads, so a call returns at most one port read
timeout after its own deadline.

Time is the injected clock's (``drivers.clock``): when a read returns nothing and the
clock has not moved by ``poll_ms`` (a virtual clock, or a port with no read timeout),
``read_line`` sleeps the rest of ``poll_ms`` on that clock, so it never spins and, on a
``VirtualClock``, waiting costs virtual time exactly as it costs real time on a board.

Runs on MicroPython and CPython.
"""

import errno

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_LF = const(0x0A)
_CR = const(0x0D)
# Empty writes in a row before a port that takes nothing counts as stuck.
_MAX_STALLED_WRITES = const(16)

DEFAULT_POLL_MS = 20
DEFAULT_MAX_LEN = 256


class LineError(ValueError):
    """A line that did not end properly: longer than ``max_len`` (``reason`` "too long")
    or cut off by the deadline part-way (``reason`` "incomplete"). ``data`` holds the
    bytes read so far (at most ``max_len + 1``)."""

    def __init__(self, reason, data):
        self.reason = reason
        self.data = bytes(data)
        super().__init__("serial line %s after %d bytes: %r" % (reason, len(self.data), self.data[:48]))


def read_line(port, clock, timeout_ms, max_len=DEFAULT_MAX_LEN, poll_ms=DEFAULT_POLL_MS):
    """Read one line: the bytes before LF, with a trailing CR removed (lines end CR LF).

    Returns the line (``b""`` for an empty line), or ``None`` when ``timeout_ms``
    milliseconds pass on ``clock`` with nothing read. The deadline is checked whenever a
    read returns nothing, so bytes already received are always taken. Never unbounded:
    raises ``LineError`` when more than ``max_len`` bytes arrive without a line end, or
    when the port falls silent part-way through a line past the deadline. ``OSError`` from
    the port propagates.
    """
    if timeout_ms < 0:
        raise ValueError("timeout_ms must be >= 0, got %r" % (timeout_ms,))
    start = clock.ticks_ms()
    buf = bytearray()
    while True:
        before = clock.ticks_ms()
        got = port.read(1)
        now = clock.ticks_ms()
        elapsed = clock.ticks_diff(now, start)
        if got:
            c = got[0]
            if c == _LF:
                if buf and buf[-1] == _CR:
                    return bytes(buf[:-1])
                return bytes(buf)
            if len(buf) >= max_len and not (c == _CR and len(buf) == max_len):
                buf.append(c)
                raise LineError("too long", buf)
            buf.append(c)
            continue  # bytes still arriving: max_len bounds the line, not the clock
        if elapsed >= timeout_ms:
            if buf:
                raise LineError("incomplete", buf)
            return None
        waited = clock.ticks_diff(now, before)
        if waited < poll_ms:
            clock.sleep_ms(min(poll_ms - waited, timeout_ms - elapsed))


def write_line(port, line):
    """Write ``line`` (bytes or str) followed by CR LF, all of it.

    Raises ``OSError(errno.ETIMEDOUT)`` when the port keeps taking nothing (a UART whose
    write times out every time); ``OSError`` from the port propagates.
    """
    if isinstance(line, str):
        line = line.encode()
    data = memoryview(bytes(line) + b"\r\n")
    stalled = 0
    while len(data):
        n = port.write(data)
        if not n:
            stalled += 1
            if stalled >= _MAX_STALLED_WRITES:
                raise OSError(errno.ETIMEDOUT, "serial port takes no data")
            continue
        stalled = 0
        data = data[n:]


def discard_input(port, max_bytes=1024):
    """Read and drop whatever is waiting (stale replies, a boot banner); returns the number
    of bytes dropped. Bounded by ``max_bytes``; each call costs one port read timeout."""
    dropped = 0
    while dropped < max_bytes:
        got = port.read(min(64, max_bytes - dropped))
        if not got:
            break
        dropped += len(got)
    return dropped
