"""The MicroPython side of the simulator socket (the protocol is documented once, in
``simulators/i2c_server.py``): one connection per interpreter, to the address in the
``CIVICEDGE_SIM`` environment variable (``"unix:PATH"``, a Unix socket, or
``"127.0.0.1:PORT"``), opened on first use.

``call(op, addr, payload)`` sends one request and returns the OK payload, or raises what
the status says: ``OSError(errno.<name>)`` for a bus failure (as ``machine.I2C`` on the
ESP32), ``UnknownCommand`` when a device model met a command it does not implement, and
``SimError`` for anything else (a bug: never mistaken for a bus fault). When the board's
watchdog has fired (status WDT_RESET) any call raises ``BoardReset``, which the board runner
(``board.py``) catches to restart the application, as the chip resets.

The board's clock, kept here between calls
------------------------------------------
Every request is *extended* (op | ``OP_EXT``): it carries the time this board has slept
since its last request and its watchdog deadline, and every reply ends with the server's
clock (NOW, wall, trusted) and the access point's generation. The server's clock moves only
during this board's own requests (wire time, sleeps, the fleet's timeline parking a sleep)
or when a UART peer that moves it replies (``invalidate``), so between requests the clock is
known here and nothing needs asking:

- ``now_us`` answers from the last reply plus the sleep not yet sent (``_lag``); ``wall``
  from the last reply once nothing is left to send (so its float is the server's own);
- ``advance(us)`` (a sleep) only adds to ``_lag``; the next request carries it and the server
  sleeps it first (through the fleet's gate), so the clock the next request sees is the same
  as if every sleep had been sent at once. ``flush()`` sends it now: before a real wait or a
  write to a UART, where the far end must see this board's time;
- the watchdog is kept here too (``wdt``): a feed moves the deadline that the next request
  carries; a sleep or a clock read past the deadline is sent at once, and the server fires
  the watchdog exactly where it did when every feed and clock read was a request;
- a request whose reply nothing waits for and that does not move the clock (the watchdog's
  first arm, a rail switch: ``simrail``) is *posted* (``post``): kept with the sleep before
  it, and sent ahead of the next request's op, which the server performs after it
  (``OP_POSTED``), so the parts see it at this board's time, in this board's order.

Each reply is read in two reads: its 3-byte head, then its payload and trailer together (a
payload over ~40 bytes on its own). ``strict = True`` (the REPL agent) sends every sleep,
clock read, feed and posted request as it happens.
"""

import errno
import json
import os
import socket
import struct

from micropython import const

OP_WRITE = const(0x01)
OP_READ = const(0x02)
OP_SCAN = const(0x03)
OP_READ_MEM = const(0x04)
OP_TICKS_MS = const(0x10)
OP_TICKS_US = const(0x11)
OP_SLEEP_US = const(0x12)
OP_WALL = const(0x13)
OP_NOW = const(0x14)
OP_BOOT_AT = const(0x15)
OP_WDT = const(0x16)
OP_HALT = const(0x17)
OP_CONTROL = const(0x20)
OP_POSTED = const(0x40)
OP_EXT = const(0x80)

_ST_OK = const(0x00)
_ST_OSERROR = const(0x01)
_ST_UNKNOWN_COMMAND = const(0x02)
_ST_WDT_RESET = const(0x04)
_TRAILER = const(21)  # u64 NOW, f64 wall, u8 trusted, u32 access-point generation

_IPPROTO_TCP = const(6)  # not exported by the unix port's socket module
_TCP_NODELAY = const(1)


class SimError(Exception):
    """The simulator reported an error that is not a bus failure (a bug in the host or model)."""


class UnknownCommand(SimError):
    """A simulated device was sent a command or register it does not implement."""


class BoardStop(BaseException):
    """The simulation's time limit (``board.py --until-s``) is reached: the run ends here,
    as a test's or a fleet's bound, not as anything a chip does."""


class BoardReset(BaseException):
    """The board resets now; ``board.py`` restarts the application. A ``BaseException`` so
    that the firmware's ``except Exception`` does not swallow it (the chip does not return).

    ``cause``: the ``machine.*_RESET`` it reports next boot (None: a soft reboot, which leaves
    the cause as it was); ``at_us``: virtual µs (as OP_NOW) when the board comes back (a
    deep-sleep wake time) or reset (None: never — a deep sleep with no wake source).
    """

    def __init__(self, cause, at_us):
        super().__init__(cause, at_us)
        self.cause = cause
        self.at_us = at_us


_WDT_RESET = const(3)  # machine.WDT_RESET (the ESP32 port's numbering)

_sock = None
_head = bytearray(3)
# A reply after its 3-byte head: its payload and trailer are read in one piece into ``_rx``
# when they fit (two reads a reply), else the payload on its own and the trailer into
# ``_rx``'s start. The last OK/OSERROR reply's trailer (NOW, wall, trusted, generation) stays
# at ``_rx[_toff:]``, decoded into small ints in place; the wall float only when asked for
# (``wall``): nothing the shim allocates per reply outlives the reply, since objects it kept
# between the firmware's allocations would fragment the firmware's heap
# (tests/e2e/test_node_heap.py).
_RX = const(64)
_rx = bytearray(_RX)
_toff = 0
# Posted requests (``post``) not sent yet: ``_npost`` bytes of ``u8 op, u8 addr, u16 n,
# u64 lag_us, payload`` records, in a buffer of its own (kept, never regrown)
_POST = const(80)
_post = bytearray(_POST)
_npost = 0
strict = False
# The clock as the last reply left it, and what is not sent yet (module docstring).
_valid = False
_now = 0  # µs, as OP_NOW
gen = -1  # the access point's generation (network.py re-reads it when this changes)
_lag = 0  # µs slept since the last request
_wdt_ms = 0  # the running watchdog's timeout (0: none)
_wdt_at = 0  # its deadline, µs as OP_NOW
_wdt_sent = True  # the server has that deadline
# board.py reports these: requests sent, sleeps kept here, real waits for a far end (socket
# polls, UART reads), the real ms they took, how many ended with nothing, and how many of
# those gave up on a far end that was up (``patient``)
counts = [0, 0, 0, 0, 0, 0]
# The most real time a wait goes on for a far end the simulator says is up (``patient``).
REAL_WAIT_MAX_MS = int(os.getenv("CIVICEDGE_REAL_WAIT_MAX_MS") or 5000)


def connect(address=None):
    """Open the connection (``address`` defaults to ``$CIVICEDGE_SIM``); returns the socket."""
    global _sock
    if _sock is None:
        address = address or os.getenv("CIVICEDGE_SIM")
        if not address:
            raise SimError("CIVICEDGE_SIM is not set: start simulators.i2c_server and set "
                           "CIVICEDGE_SIM=127.0.0.1:PORT")
        if address.startswith("unix:"):  # sockaddr_un: the family (native u16), the path
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(struct.pack("H", socket.AF_UNIX) + address[5:].encode() + b"\0")
        else:
            host, port = address.rsplit(":", 1)
            s = socket.socket()
            s.connect(socket.getaddrinfo(host, int(port))[0][-1])
            s.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        _sock = s
    return _sock


def close():
    global _sock
    if _sock is not None:
        _sock.close()
        _sock = None


def _read_exact(s, buf):
    n = s.readinto(buf)  # nearly always all of it
    if n == len(buf):
        return
    mv = memoryview(buf)
    got = 0
    while n:
        got += n
        if got == len(buf):
            return
        n = s.readinto(mv[got:])
    raise SimError("the simulator closed the connection")


def call(op, addr=0, payload=b"", into=None, lag=None):
    """One request. Returns the OK payload (bytes), or fills ``into`` and returns None.
    ``lag``: the sleep it carries (default: all not sent yet).

    Raises ``OSError`` (bus failure), ``UnknownCommand`` or ``SimError`` (see the module).
    """
    global _lag, _wdt_sent, _valid, _now, gen, _wdt_ms, _toff, _npost
    s = _sock or connect()
    n = len(payload)
    m = _npost
    h = 22 + m if m else 20
    req = bytearray(h + n)
    struct.pack_into(">BBHQQ", req, 0, op | OP_EXT | (OP_POSTED if m else 0), addr, h - 4 + n,
                     _lag if lag is None else lag, 0 if _wdt_sent else _wdt_at)
    if m:
        req[20] = m >> 8
        req[21] = m & 0xFF
        req[22:h] = memoryview(_post)[:m]
        _npost = 0
    req[h:] = payload
    _lag = 0
    _wdt_sent = True
    counts[0] += 1
    s.write(req)
    _read_exact(s, _head)
    status = _head[0]
    n = _head[1] << 8 | _head[2]
    if status > _ST_OSERROR:
        body = s.read(n) if n else b""
        if len(body) < n:
            raise SimError("the simulator closed the connection")
        _valid = False
        if status == _ST_WDT_RESET:
            _wdt_ms = 0
            raise BoardReset(_WDT_RESET, u64(body))
        err = json.loads(body)
        text = "%s: %s (at %s)" % (err["type"], err["message"], err["where"])
        if status == _ST_UNKNOWN_COMMAND:
            raise UnknownCommand(text)
        raise SimError(text)
    if n < _TRAILER:
        body = s.read(n) if n else b""
        raise SimError("the simulator closed the connection" if len(body) < n else
                       "a reply of %d bytes without the clock (a server older than this shim?)" % n)
    _valid = False  # until the trailer is whole (wall() reads it in place)
    body = None
    k = n - _TRAILER  # the payload's bytes
    if n <= _RX:
        if s.readinto(_rx, n) != n:  # (the stream's readinto reads all n, but at the end)
            raise SimError("the simulator closed the connection")
        if status == _ST_OK and into is not None and k == len(into):
            i = 0
            while i < k:
                into[i] = _rx[i]
                i += 1
        elif k:
            body = bytes(_rx[:k])
        t = k
    else:
        if status == _ST_OK and into is not None and k == len(into):
            _read_exact(s, into)
        else:
            body = s.read(k)
            if len(body) < k:
                raise SimError("the simulator closed the connection")
        if s.readinto(_rx, _TRAILER) != _TRAILER:
            raise SimError("the simulator closed the connection")
        t = 0
    _toff = t
    _now = u64(_rx, t)
    gen = _rx[t + 17] << 24 | _rx[t + 18] << 16 | _rx[t + 19] << 8 | _rx[t + 20]
    _valid = True
    if status == _ST_OSERROR:
        raise OSError(getattr(errno, body.decode(), errno.EIO))
    if into is not None:
        if body is not None or k != len(into):
            raise SimError("expected %d bytes, the simulator sent %d" % (len(into), k))
        return None
    return body or b""


def u64(b, i=0):
    """The big-endian unsigned 64-bit integer at ``b[i:i+8]``."""
    n = 0
    for k in range(i, i + 8):
        n = n << 8 | b[k]
    return n


def control(method, *args):
    """Call a rig method in the server (see its CONTROL op); returns its JSON result."""
    return json.loads(call(OP_CONTROL, 0, json.dumps([method, args]).encode()))


def post(op, payload):
    """A request whose reply nothing here waits for (a rail switch, the watchdog's first arm)
    and that does not move the clock: kept, with the sleep not sent yet before it, to go
    ahead of the next request's op (the server performs it first, at this board's time then:
    i2c_server's ``OP_POSTED``). Sent at once (``call``) if strict, if the clock is unknown,
    if a watchdog feed is not sent yet or the watchdog would fire, or if there is no room.
    A posted request's error is raised by the request it goes with."""
    global _lag, _now, _npost
    n = len(payload)
    m = _npost
    if strict or not _valid or not _wdt_sent or _fired() or m + 12 + n > _POST:
        call(op, 0, payload)
        return
    struct.pack_into(">BBHQ", _post, m, op, 0, n, _lag)
    _post[m + 12:m + 12 + n] = payload
    _npost = m + 12 + n
    _now += _lag  # where the server's clock will be when it performs it
    _lag = 0


# -- the board's clock (module docstring) ---------------------------------------------------
def _fired(extra_us=0):
    return _wdt_ms and _now + _lag + extra_us > _wdt_at


def _sync():
    if strict or not _valid or _fired():
        call(OP_NOW)  # a watchdog past its deadline fires here: BoardReset


def now_us():
    """Virtual µs (as OP_NOW) on this board's clock."""
    _sync()
    return _now + _lag


def wall():
    """``(simulator wall seconds, trusted)`` on this board's clock: the server's, as of a
    request with nothing left to send (its float sum is the server's own, to the last bit)."""
    if _lag or _npost:
        sleep()
    else:
        _sync()
    return struct.unpack_from(">d", _rx, _toff + 8)[0], _rx[_toff + 16] != 0


def advance(us):
    """Let ``us`` µs of virtual time pass (sent with the next request; at once if strict, if
    the clock is unknown, or if the watchdog would fire meanwhile: ``BoardReset``)."""
    global _lag
    if us <= 0:
        return
    if strict or not _valid or _fired(us):
        sleep(us)
    else:
        _lag += us
        counts[1] += 1


def sleep(us=0):
    """Sleep ``us`` µs plus what is not sent yet, now (the fleet's gate may park it)."""
    call(OP_SLEEP_US, 0, struct.pack(">Q", _lag + us), lag=0)


def flush():
    """Send the sleep and the posted requests not sent yet (before a real wait, or a write a
    far end timestamps)."""
    if _lag or _npost:
        sleep()


def patient(waited_ms):
    """Whether a real wait for a far end that found nothing in ``waited_ms`` real ms should go
    on, with no virtual time passing: yes while the simulator says the far end is up (CONTROL
    ``far_end``; a fleet's gateway that is running) and ``REAL_WAIT_MAX_MS`` has not passed.
    So a live far end's answer costs the board the same virtual time however long it takes
    in real time; a far end that is down (or unknown) lets the wait's timeout pass at once
    (virtual time) as before. A wait that gives up on a live far end is counted
    (``counts[5]``): its board's clock may then depend on real timing."""
    if control("far_end") is not True:
        return False
    if waited_ms < REAL_WAIT_MAX_MS:
        return True
    counts[5] += 1
    return False


def invalidate():
    """The clock may have moved without this board (a UART peer that advances it)."""
    global _valid
    _valid = False


def wdt(timeout_ms):
    """Arm or feed the watchdog: it fires ``timeout_ms`` from now."""
    global _wdt_ms, _wdt_at, _wdt_sent
    if strict or not _wdt_ms:
        post(OP_WDT, struct.pack(">I", timeout_ms))  # armed when the server performs it
        _wdt_ms = timeout_ms
        _wdt_at = _now + timeout_ms * 1000
        return
    _wdt_at = now_us() + timeout_ms * 1000  # now_us(): one already overdue fires first
    _wdt_ms = timeout_ms
    _wdt_sent = False


def boot_at(at_us, cause):
    """Op BOOT_AT: the board resets, its clock at least ``at_us`` (the sleep not sent yet
    is inside that); returns NOW after. A reset (``cause`` not 0) stops the watchdog."""
    global _wdt_ms
    out = call(OP_BOOT_AT, 0, struct.pack(">QB", at_us, cause or 0), lag=0)
    if cause:
        _wdt_ms = 0
    return u64(out)
