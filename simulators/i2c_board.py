"""The simulator socket's numbers (``simulators/i2c_server.py`` documents the protocol) and
what ``SimServer`` does for each connection, i.e. each board, before it answers: its
watchdog (``Node``, ``WDTFired``), the fleet's gate for requests that sleep, and the
extended request (``OP_EXT``) that carries a board's sleeps and watchdog deadline and gets
its clock back (``BoardRequests``, a mixin: ``rig``, ``lock``, ``gate``, ``wifi`` and
``handle`` are the server's)."""

import json
import os
import struct
import traceback

from simulators.i2c_control import ProtocolError

OP_WRITE = 0x01
OP_READ = 0x02
OP_SCAN = 0x03
OP_TICKS_MS = 0x10
OP_TICKS_US = 0x11
OP_SLEEP_US = 0x12
OP_WALL = 0x13
OP_NOW = 0x14
OP_BOOT_AT = 0x15
OP_WDT = 0x16
OP_HALT = 0x17
OP_CONTROL = 0x20

ST_OK = 0x00
ST_OSERROR = 0x01
ST_UNKNOWN_COMMAND = 0x02
ST_ERROR = 0x03
ST_WDT_RESET = 0x04

OP_EXT = 0x80

REQUEST = struct.Struct(">BBH")
RESPONSE = struct.Struct(">BH")
EXT_HEAD = struct.Struct(">QQ")  # an extended request's lag (µs) and watchdog deadline (µs as NOW)
TRAILER = struct.Struct(">QdBI")  # an extended reply's NOW, wall, trusted, access-point generation
MAX_PAYLOAD = 0xFFFF
_U64 = struct.Struct(">Q")
_GATED = frozenset((OP_SLEEP_US, OP_BOOT_AT, OP_HALT))  # the ops that may wait for the fleet's gate
_SLEPT = (ST_OK, b"")  # an extended request's sleep went through: the op follows

# Reset causes as the ESP32 port's machine module numbers them (BOOT_AT's cause byte).
CAUSE_NAMES = {0: "soft_reboot", 1: "pwron", 2: "hard", 3: "wdt", 4: "deepsleep", 5: "soft"}


def error_body(exc):
    tb = traceback.extract_tb(exc.__traceback__)
    where = "%s:%d" % (os.path.basename(tb[-1].filename), tb[-1].lineno) if tb else ""
    return json.dumps({"type": type(exc).__name__, "message": str(exc), "where": where}).encode()


class Node:
    """What the server keeps for one connection (one board): its watchdog and boot counts."""

    def __init__(self):
        self.wdt_deadline_us = None
        self.boots = {}

    def as_dict(self):
        return {"boots": dict(self.boots), "wdt_deadline_us": self.wdt_deadline_us}


class WDTFired(Exception):
    """The connection's watchdog deadline passed (answered with ``WDT_RESET``)."""

    def __init__(self, at_us):
        super().__init__(at_us)
        self.at_us = at_us


class BoardRequests:
    """How a board's requests reach ``handle`` (see the module docstring)."""

    def _request(self, op, addr, payload, node, trailer=False):
        """Gate (the fleet's hook), then ``handle``; with ``trailer`` the clock is appended
        to an OK or OSERROR reply. None: the fleet cancelled the board while it waited."""
        if self.gate is not None and op in _GATED:
            target = self._gate_target(op, payload, node)
            if target is not None:
                try:
                    self.gate(target)  # the clock is at ``target`` when it returns
                except Exception:  # the fleet cancelled this board
                    return None
                if op == OP_SLEEP_US:  # what is left of the sleep: nothing
                    with self.lock:
                        payload = _U64.pack(max(0, target - self.rig.clock.now_us))
        with self.lock:
            status, out = self.handle(op, addr, payload, node)
            if trailer and status <= ST_OSERROR:
                out += self._trailer()
        return status, out

    def _trailer(self):
        """The extended reply's trailer: the clock now and the access point's generation."""
        clock = self.rig.clock
        return TRAILER.pack(clock.now_us, clock.wall_s(), bool(clock.wall_trusted()),
                            self.wifi.generation & 0xFFFFFFFF)

    def _extended(self, op, addr, payload, node):
        """An extended request: ``u64 lag_us, u64 watchdog deadline (0: unchanged)`` before
        the op's payload; the deadline is set (after checking the old one), ``lag_us`` slept,
        then the op performed; the reply carries the clock (module docstring)."""
        if len(payload) < EXT_HEAD.size:
            return ST_ERROR, error_body(ProtocolError("extended request of %d bytes: the %d-byte head is missing"
                                                       % (len(payload), EXT_HEAD.size)))
        lag, deadline = EXT_HEAD.unpack_from(payload)
        payload = payload[EXT_HEAD.size:]
        if deadline and node is not None:
            with self.lock:
                if node.wdt_deadline_us is not None:
                    now = self.rig.clock.now_us
                    if now > node.wdt_deadline_us:  # fired before this feed
                        node.wdt_deadline_us = None
                        return ST_WDT_RESET, _U64.pack(now)
                    node.wdt_deadline_us = deadline
        if lag:
            reply = self._sleep(lag, node)
            if reply is not _SLEPT:
                return reply
        return self._request(op, addr, payload, node, trailer=True)

    def _sleep(self, lag, node):
        """The extended request's sleep: what a SLEEP_US request of ``lag`` µs does through
        ``_request`` (the gate, then the watchdog and the clock under the lock), without
        packing it into one. ``_SLEPT``, a WDT_RESET reply, or None (cancelled)."""
        target = self._gate_target(OP_SLEEP_US, None, node, lag) if self.gate is not None else None
        if target is not None:
            try:
                self.gate(target)  # the clock is at ``target`` when it returns
            except Exception:  # the fleet cancelled this board
                return None
        with self.lock:
            clock = self.rig.clock
            if target is not None:  # what is left of the sleep: nothing
                lag = max(0, target - clock.now_us)
            if node is not None and node.wdt_deadline_us is not None:
                try:
                    self._check_watchdog(node, OP_SLEEP_US, _U64.pack(lag))
                except WDTFired as e:
                    return ST_WDT_RESET, _U64.pack(e.at_us)
            clock.advance_us(lag)
        return _SLEPT

    def _gate_target(self, op, payload, node, lag=None):
        """Where ``op`` would take the clock (µs, as NOW), or None if it does not wait.
        ``lag``: a sleep's µs, given instead of SLEEP_US's payload."""
        with self.lock:
            now = self.rig.clock.now_us
            deadline = node.wdt_deadline_us if node is not None else None
        try:
            if op == OP_SLEEP_US:
                target = now + (lag if lag is not None else struct.unpack(">Q", payload)[0])
            elif op == OP_BOOT_AT:
                target = struct.unpack(">QB", payload)[0]
                deadline = None  # a reset stops the watchdog
            else:
                target = deadline  # HALT: asleep until the watchdog fires (None: it never does)
        except struct.error:
            return None  # malformed: handle() answers ERROR without waiting
        if target is not None and deadline is not None:
            target = min(target, deadline + 1)
        return target if target is not None and target > now else None

    def _check_watchdog(self, node, op, payload):
        """Raise ``WDTFired`` if ``node``'s watchdog has fired by now, or would during this
        SLEEP_US or HALT (the clock then stops at the deadline)."""
        deadline = node.wdt_deadline_us
        if deadline is None or op == OP_BOOT_AT:
            return
        clock = self.rig.clock
        until = clock.now_us
        if op == OP_SLEEP_US and len(payload) == 8:
            until += struct.unpack(">Q", payload)[0]
        elif op == OP_HALT:
            until = max(until, deadline + 1)
        if until > deadline:
            if deadline > clock.now_us:
                clock.advance_us(deadline - clock.now_us)
            node.wdt_deadline_us = None
            raise WDTFired(clock.now_us)
