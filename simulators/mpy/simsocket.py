"""The ``socket`` module for firmware under ``board.py``: the port's own, except that a
stream socket is made with ``TCP_NODELAY``, and ``quick_acks()`` (which ``select`` calls
before it waits in real time) puts every open one in TCP quick-ack mode.

Why: the firmware's sockets reach real brokers on loopback, and every exchange is a few
small writes each way. With Nagle's algorithm on both ends and the kernel's delayed ACKs,
a small write that follows another waits for the first one's ACK, up to 40 ms of real time,
at almost every step of a publish, its PUBACK and the gateway's ack. That is real time only
(a reply that arrives costs the board no virtual time, ``simclock.VirtualSelect``), so the
simulated node behaves the same; the fleet just runs faster.
"""

import socket as _socket

_IPPROTO_TCP = 6  # not exported by the unix port's socket module
_TCP_NODELAY = 1
_TCP_QUICKACK = 12  # Linux
_open = []  # stream sockets made here that may still be open
_KEEP = 4  # the most looked after (a node has one or two connections)


def socket(af=_socket.AF_INET, type=_socket.SOCK_STREAM, proto=0):
    s = _socket.socket(af, type, proto)
    if type == _socket.SOCK_STREAM:
        try:
            s.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        except OSError:
            return s
        if len(_open) >= _KEEP:  # the oldest (abandoned unclosed?) is left to the collector
            _open.pop(0)
        _open.append(s)
    return s


def quick_acks():
    """Acknowledge what arrives at once on every open stream socket (Linux forgets the mode
    as soon as traffic looks interactive again, so ``select`` sets it before every wait)."""
    for s in list(_open):
        try:
            s.setsockopt(_IPPROTO_TCP, _TCP_QUICKACK, 1)
        except OSError:  # closed
            _open.remove(s)


def open_sockets():
    """The stream sockets made here that may still be open (``quick_acks`` drops the closed)."""
    return _open


def _reset():
    """A reset (``board.py``): the chip's connections are gone; sockets of the old boot are
    left as they were (closed when collected) but no longer looked after here."""
    _open.clear()


def __getattr__(name):
    return getattr(_socket, name)
