"""The simulator socket's numbers (``simulators/i2c_server.py`` documents the protocol) and
what ``SimServer`` does for each connection, i.e. each board: its watchdog (``Node``,
``WDTFired``), the fleet's gate for requests that sleep, the extended request (``OP_EXT``)
that carries a board's sleeps and watchdog deadline and gets its clock back, the posted
requests that go ahead of it (``OP_POSTED``), and each op's answer (``BoardRequests``, a
mixin: ``rig``, ``lock``, ``gate``, ``wifi`` and ``_control`` are the server's)."""

import errno
import json
import os
import struct
import traceback

from simulators.i2c import UnknownCommand
from simulators.i2c_control import ProtocolError

OP_WRITE = 0x01
OP_READ = 0x02
OP_SCAN = 0x03
OP_READ_MEM = 0x04
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

OP_POSTED = 0x40  # or-ed into an extended request's op: posted requests go first
OP_EXT = 0x80

REQUEST = struct.Struct(">BBH")
RESPONSE = struct.Struct(">BH")
EXT_HEAD = struct.Struct(">QQ")  # an extended request's lag (µs) and watchdog deadline (µs as NOW)
POSTED = struct.Struct(">BBHQ")  # a posted request's op, addr, payload length and lag (µs)
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
    """How a board's requests are answered (see the module docstring).

    A request's *steps* (``_request``, ``_extended``) are a generator: it yields each virtual
    time (µs, as NOW) the fleet's gate must reach before it goes on, and returns the reply
    ``(status, payload)``. ``drive`` runs one in the calling thread, each gate blocking it
    (``SimServer``'s thread per connection); ``simulators/i2c_hub.py`` parks it instead and
    resumes it when the fleet's time comes, serving every board from one thread. A driver
    that is told the board was cancelled while it waited drops the steps and hangs up."""

    def steps(self, op, addr, payload, node):
        """The steps of one request as it came off the socket (``op`` with ``OP_EXT`` or not)."""
        if op & OP_EXT:
            return self._extended(op & ~OP_EXT, addr, payload, node)
        return self._request(op, addr, payload, node)

    def drive(self, steps):
        """Run a request's ``steps`` here, blocking in ``gate`` at each yielded time: the
        reply, or None if the fleet cancelled the board while it waited."""
        try:
            target = next(steps)
            while True:
                try:
                    self.gate(target)  # the clock is at ``target`` when it returns
                except Exception:  # the fleet cancelled this board
                    steps.close()
                    return None
                target = steps.send(None)
        except StopIteration as done:
            return done.value

    def _request(self, op, addr, payload, node, trailer=False):
        """Steps: gate (the fleet's hook), then ``handle``; with ``trailer`` the clock is
        appended to an OK or OSERROR reply."""
        if self.gate is not None and op in _GATED:
            target = self._gate_target(op, payload, node)
            if target is not None:
                yield target
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
        """Steps of an extended request: ``u64 lag_us, u64 watchdog deadline (0: unchanged)``
        before the op's payload (with ``OP_POSTED``, then the posted requests: ``_posted``);
        the posted requests are performed, the deadline set (after checking the old one),
        ``lag_us`` slept, then the op performed; the reply carries the clock (module
        docstring)."""
        if len(payload) < EXT_HEAD.size:
            return ST_ERROR, error_body(ProtocolError("extended request of %d bytes: the %d-byte head is missing"
                                                       % (len(payload), EXT_HEAD.size)))
        lag, deadline = EXT_HEAD.unpack_from(payload)
        payload = payload[EXT_HEAD.size:]
        if op & OP_POSTED:
            op &= ~OP_POSTED
            reply, payload = yield from self._posted(payload, node)
            if reply is not _SLEPT:
                return reply
        if deadline and node is not None:
            with self.lock:
                if node.wdt_deadline_us is not None:
                    now = self.rig.clock.now_us
                    if now > node.wdt_deadline_us:  # fired before this feed
                        node.wdt_deadline_us = None
                        return ST_WDT_RESET, _U64.pack(now)
                    node.wdt_deadline_us = deadline
        if lag:
            reply = yield from self._sleep(lag, node)
            if reply is not _SLEPT:
                return reply
        return (yield from self._request(op, addr, payload, node, trailer=True))

    def _posted(self, payload, node):
        """Steps of the posted requests before an extended request's op: ``u16 length`` then
        that many bytes of ``u8 op, u8 addr, u16 n, u64 lag_us, n bytes of payload`` records,
        each performed in turn as an extended request with no watchdog deadline would be (its
        lag slept, then the op). ``(_SLEPT, the op's own payload)`` when all went through,
        else ``(the failed one's reply, None)``: the request's op is then not performed."""
        try:
            (m,) = struct.unpack_from(">H", payload)
            if len(payload) < 2 + m:
                raise struct.error("%d bytes of posted requests announced, %d sent" % (m, len(payload) - 2))
            i, end = 2, 2 + m
            while i < end:
                op, addr, n, lag = POSTED.unpack_from(payload, i)
                i += POSTED.size
                if i + n > end:
                    raise struct.error("a posted request's %d bytes run past the posted requests" % n)
                body, i = payload[i:i + n], i + n
                if lag:
                    reply = yield from self._sleep(lag, node)
                    if reply is not _SLEPT:
                        return reply, None
                reply = yield from self._request(op, addr, body, node, trailer=True)
                if reply[0] != ST_OK:
                    return reply, None
        except struct.error as e:
            return (ST_ERROR, error_body(ProtocolError("malformed posted requests: %s" % e))), None
        return _SLEPT, payload[end:]

    def _sleep(self, lag, node):
        """Steps of the extended request's sleep: what a SLEEP_US request of ``lag`` µs does
        through ``_request`` (the gate, then the watchdog and the clock under the lock),
        without packing it into one. ``_SLEPT`` or a WDT_RESET reply."""
        target = self._gate_target(OP_SLEEP_US, None, node, lag) if self.gate is not None else None
        if target is not None:
            yield target
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

    # -- the ops ---------------------------------------------------------------------------
    def handle(self, op, addr, payload, node=None):
        """Answer one request from ``node`` (a ``Node``; None: no watchdog):
        ``(status, response payload)``. Never raises."""
        try:
            if node is not None:
                self._check_watchdog(node, op, payload)
            out = self._dispatch(op, addr, payload, node)
            if len(out) > MAX_PAYLOAD:
                raise ProtocolError("response of %d bytes exceeds %d" % (len(out), MAX_PAYLOAD))
            return ST_OK, out
        except WDTFired as e:
            return ST_WDT_RESET, struct.pack(">Q", e.at_us)
        except OSError as e:
            return ST_OSERROR, errno.errorcode.get(e.errno, "EIO").encode()
        except UnknownCommand as e:
            return ST_UNKNOWN_COMMAND, error_body(e)
        except Exception as e:  # a bug, surfaced to the client as SimError
            return ST_ERROR, error_body(e)

    def _dispatch(self, op, addr, payload, node=None):
        rig = self.rig
        if op == OP_WRITE:
            return struct.pack(">H", rig.bus.writeto(addr, payload))
        if op == OP_READ:
            buf = bytearray(self._unpack(">H", payload)[0])
            rig.bus.readfrom_into(addr, buf)
            return bytes(buf)
        if op == OP_READ_MEM:
            memaddr, n = self._unpack(">BH", payload)
            buf = bytearray(n)
            rig.bus.readfrom_mem_into(addr, memaddr, buf)
            return bytes(buf)
        if op == OP_SCAN:
            return bytes(rig.bus.scan())
        if op == OP_TICKS_MS:
            return struct.pack(">I", rig.clock.ticks_ms())
        if op == OP_TICKS_US:
            return struct.pack(">I", rig.clock.ticks_us())
        if op == OP_SLEEP_US:
            rig.clock.advance_us(self._unpack(">Q", payload)[0])
            return b""
        if op == OP_WALL:
            return struct.pack(">dB", rig.clock.wall_s(), bool(rig.clock.wall_trusted()))
        if op == OP_NOW:
            return struct.pack(">QdB", rig.clock.now_us, rig.clock.wall_s(), bool(rig.clock.wall_trusted()))
        if op == OP_BOOT_AT:
            at_us, cause = self._unpack(">QB", payload)
            if at_us > rig.clock.now_us:
                rig.clock.advance_us(at_us - rig.clock.now_us)
            if node is not None:
                if cause != 0:
                    node.wdt_deadline_us = None
                name = CAUSE_NAMES.get(cause, str(cause))
                node.boots[name] = node.boots.get(name, 0) + 1
            return struct.pack(">Q", rig.clock.now_us)
        if op == OP_WDT:
            if node is None:
                raise ProtocolError("WDT is per connection")
            node.wdt_deadline_us = rig.clock.now_us + self._unpack(">I", payload)[0] * 1000
            return b""
        if op == OP_HALT:
            return b""  # no watchdog armed (an armed one fired in _check_watchdog)
        if op == OP_CONTROL:
            return json.dumps(self._control(payload)).encode()
        raise ProtocolError("unknown op 0x%02X" % op)

    @staticmethod
    def _unpack(fmt, payload):
        try:
            return struct.unpack(fmt, payload)
        except struct.error:
            raise ProtocolError("payload %r does not match %s" % (bytes(payload), fmt)) from None
