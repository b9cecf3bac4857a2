"""The MicroPython side of the simulator socket (the protocol is documented once, in
``simulators/i2c_server.py``): one connection per interpreter, to the address in the
``CIVICEDGE_SIM`` environment variable (``"127.0.0.1:PORT"``), opened on first use.

``call(op, addr, payload)`` sends one request and returns the OK payload, or raises what
the status says: ``OSError(errno.<name>)`` for a bus failure (as ``machine.I2C`` on the
ESP32), ``UnknownCommand`` when a device model met a command it does not implement, and
``SimError`` for anything else (a bug: never mistaken for a bus fault). When the board's
watchdog has fired (status WDT_RESET) any call raises ``BoardReset``, which the board runner
(``board.py``) catches to restart the application, as the chip resets.
"""

import errno
import json
import os
import socket

from micropython import const

OP_WRITE = const(0x01)
OP_READ = const(0x02)
OP_SCAN = const(0x03)
OP_TICKS_MS = const(0x10)
OP_TICKS_US = const(0x11)
OP_SLEEP_US = const(0x12)
OP_WALL = const(0x13)
OP_NOW = const(0x14)
OP_BOOT_AT = const(0x15)
OP_WDT = const(0x16)
OP_HALT = const(0x17)
OP_CONTROL = const(0x20)

_ST_OK = const(0x00)
_ST_OSERROR = const(0x01)
_ST_UNKNOWN_COMMAND = const(0x02)
_ST_WDT_RESET = const(0x04)

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


def connect(address=None):
    """Open the connection (``address`` defaults to ``$CIVICEDGE_SIM``); returns the socket."""
    global _sock
    if _sock is None:
        address = address or os.getenv("CIVICEDGE_SIM")
        if not address:
            raise SimError("CIVICEDGE_SIM is not set: start simulators.i2c_server and set "
                           "CIVICEDGE_SIM=127.0.0.1:PORT")
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


def call(op, addr=0, payload=b"", into=None):
    """One request. Returns the OK payload (bytes), or fills ``into`` and returns None.

    Raises ``OSError`` (bus failure), ``UnknownCommand`` or ``SimError`` (see the module).
    """
    s = _sock or connect()
    n = len(payload)
    req = bytearray(4 + n)
    req[0] = op
    req[1] = addr
    req[2] = n >> 8
    req[3] = n & 0xFF
    req[4:] = payload
    s.write(req)
    _read_exact(s, _head)
    status = _head[0]
    n = _head[1] << 8 | _head[2]
    if status == _ST_OK and into is not None and n == len(into):
        _read_exact(s, into)
        return None
    body = s.read(n) if n else b""
    if len(body) < n:
        raise SimError("the simulator closed the connection")
    if status == _ST_OK:
        if into is not None:
            raise SimError("expected %d bytes, the simulator sent %d" % (len(into), n))
        return body
    if status == _ST_OSERROR:
        raise OSError(getattr(errno, body.decode(), errno.EIO))
    if status == _ST_WDT_RESET:
        raise BoardReset(_WDT_RESET, u64(body))
    err = json.loads(body)
    text = "%s: %s (at %s)" % (err["type"], err["message"], err["where"])
    if status == _ST_UNKNOWN_COMMAND:
        raise UnknownCommand(text)
    raise SimError(text)


def u64(b, i=0):
    """The big-endian unsigned 64-bit integer at ``b[i:i+8]``."""
    n = 0
    for k in range(i, i + 8):
        n = n << 8 | b[k]
    return n


def control(method, *args):
    """Call a rig method in the server (see its CONTROL op); returns its JSON result."""
    return json.loads(call(OP_CONTROL, 0, json.dumps([method, args]).encode()))
