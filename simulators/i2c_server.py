"""The simulator socket: a ``LocalRig`` (virtual clock + ``SimI2CBus`` + devices) served over
a Unix socket and loopback TCP, so code running in the MicroPython unix port (``simulators/mpy/``) drives the
same simulated devices, on the same virtual time, as CPython code does in-process.

This docstring is the one description of the protocol; ``simulators/mpy/simlink.py`` is the
client side and ``docs/simulator-socket.md`` points here.

Theory of operation
-------------------
One request, one response, in order, on a connection to the server's Unix socket (what
``SimServer.address`` names, ``"unix:PATH"``: the fleet's and the tests' boards) or to its TCP
port on 127.0.0.1 (``tcp_address``, ``"127.0.0.1:PORT"``: a board started by hand). Every
integer is big-endian. ::

    request:  op (1 byte)  addr (1 byte)  length (2 bytes)  payload (length bytes)
    response: status (1 byte)             length (2 bytes)  payload (length bytes)

``addr`` is the 7-bit I2C address for the bus ops and 0 for the others. Payloads are at most
65,535 bytes.

Ops (payload sent → payload returned on OK):

=====  ===========  ===================================  ==========================================
op     name         request payload                      OK response payload
=====  ===========  ===================================  ==========================================
0x01   WRITE        the bytes to write to ``addr``       u16: bytes ACKed (``machine.I2C.writeto``)
0x02   READ         u16: n                               the n bytes read from ``addr``
0x03   SCAN         (none)                               one byte per ACKing address, ascending
0x04   READ_MEM     u8 register address, u16 n           the n bytes read from that register of
                                                         ``addr``: one combined transaction (the
                                                         register address written, a repeated
                                                         START, the read: ``readfrom_mem_into``);
                                                         a NACK in either phase is OSERROR
0x10   TICKS_MS     (none)                               u32: ``clock.ticks_ms()`` (wraps at 2**30)
0x11   TICKS_US     (none)                               u32: ``clock.ticks_us()`` (wraps at 2**30)
0x12   SLEEP_US     u64: microseconds                    (none); the virtual clock advanced by that
0x13   WALL         (none)                               f64 ``wall_s()`` then u8 ``wall_trusted()``
0x14   NOW          (none)                               u64 virtual µs since the clock was made
                                                         (monotonic, never wraps), f64 ``wall_s()``,
                                                         u8 ``wall_trusted()``
0x15   BOOT_AT      u64 µs (absolute, as NOW), u8 cause  u64 NOW after: the board reset (deep-sleep
                                                         wake, ``machine.reset``, watchdog); the clock
                                                         advances to that time if it is later, the
                                                         connection's watchdog stops (cause 0, a
                                                         soft reboot, keeps it) and the boot counts
0x16   WDT          u32: timeout ms                      (none); arm or feed the connection's
                                                         watchdog: it fires ``timeout`` ms from now
0x17   HALT         (none)                               (none) if no watchdog is armed; else the
                                                         clock advances to the deadline and the
                                                         status is WDT_RESET (the app stopped and
                                                         nothing feeds the watchdog any more)
0x20   CONTROL      UTF-8 JSON ``[method, [args...]]``   UTF-8 JSON of the method's result
=====  ===========  ===================================  ==========================================

The MicroPython process has no time of its own: ``sleep`` advances the server's
``VirtualClock`` and bus transactions cost wire time on it, exactly as in CPython.

Extended requests (``OP_EXT``, 0x80, or-ed into any op; what ``simlink`` sends): the payload
starts with ``u64 lag_us, u64 deadline_us`` before the op's own. The server first takes the
watchdog deadline (0: unchanged; a watchdog already past its old deadline fires instead:
WDT_RESET), then sleeps ``lag_us`` (as SLEEP_US: the fleet's gate, a watchdog crossed on the
way fires and the op is not performed), then performs the op. An OK or OSERROR reply ends
with a 21-byte trailer: ``u64 NOW, f64 wall_s, u8 wall_trusted, u32 access-point
generation`` (it changes whenever the ``wifi`` settings do). So a board keeps its clock
between requests, sends its sleeps and watchdog feeds with the next request, and re-reads
the access point only when it changed (``simulators/mpy/simlink.py``).

Posted requests (``OP_POSTED``, 0x40, or-ed into an extended request's op): between the
16-byte head and the op's own payload come ``u16 length`` and that many bytes of posted
requests, each ``u8 op, u8 addr, u16 n, u64 lag_us, n bytes of payload``: requests the board
made earlier whose reply it did not wait for (a rail switch, the watchdog's first arm: ops
that do not move the clock). The server performs them first, in order, each as an extended
request without a deadline (``lag_us`` slept, then the op), then the head's deadline, lag
and op as above. A posted request that does not answer OK (an error, or a watchdog that
fires on its way) is the reply, and the request's own op is not performed. So a wake's rail
switches and watchdog arm cost no round trip, yet reach the simulated parts at the board's
time and in the board's order.

CONTROL methods are the ``LocalRig`` methods ``setup``, ``fault``, ``clear_faults``,
``set_truth``, ``power``, ``recover``, ``counters``, ``attr``, ``advance_s``, ``now_s``, ``wall``
(same arguments, JSON-able; ``power`` with a null address switches every part on the bus,
as the board's switched sensor rail does: ``simulators/mpy/simrail.py`` sends one per rail
change), plus the server's own:

``reset`` ``[clock_kwargs]``
    Replace the rig with a fresh ``LocalRig`` on a new ``VirtualClock(**clock_kwargs)`` (a
    behaviour check starts from one, as on CPython); the access point and analog inputs
    return to their defaults.
``wifi`` ``[settings]``
    The simulated WiFi access point: ``settings`` (a dict, optional) updates any of ``up``
    (bool), ``ssid``/``key`` (str, or None = any), ``assoc_ms`` (association + DHCP time,
    default 1500: REFERENCE §5 gives 1-3 s), ``scan_ms`` (one failed attempt when no AP
    answers, default 2000), ``rssi`` (dBm); returns the whole state, with ``changed_us``
    (NOW when ``up`` last changed).
``wifi_link`` ``[poll_us]``
    The board's view (``simulators/mpy/network.py``): advance the clock by ``poll_us`` (the
    cost of one poll, so a busy-wait for association ends), then return ``[NOW, state]``.
``analog`` ``[pin, volts]``
    Set (with ``volts``) or read the voltage on an ADC pin (``machine.ADC``); reading a pin
    never set is an ERROR (a wiring mistake in the test, not a voltage).
``nodes`` ``[]``
    One dict per connected board: ``boots`` (by cause name), ``wdt_deadline_us``.
``uart_peer`` ``[uart_id]``
    ``[consumed, emitted]`` byte counts of the board's peer on that UART
    (``SimServer.uart_peers``: a modem emulator in "follow" mode), or None: no peer.
``uart_settle`` ``[uart_id, sent]``
    The peer takes the board's bytes up to ``sent`` and writes all it has due by now:
    ``[emitted, due_us]`` (``due_us``: when its next scheduled output is due, or None). A
    board's UART reads it then, instead of waiting in real time (``simulators/mpy/simuart.py``).

All connections share the one rig. Each connection is one board (one ``micropython``
process): its watchdog (ops WDT, HALT, BOOT_AT) is its own and goes with the connection, as
a power cut (killing the process) takes it.

Status codes (the response to any op):

=====  ================  ==============================================================
code   name              payload and what the client raises
=====  ================  ==============================================================
0x00   OK                as in the op table
0x01   OSERROR           the errno *name* in ASCII (``ENODEV`` for a NACK, ``ETIMEDOUT``
                         for a stuck bus or over-long clock stretch): the client raises
                         ``OSError(errno.<name>)`` as ``machine.I2C`` does on the ESP32
                         (names, not numbers, so the two ports' errno tables never matter;
                         an unknown name becomes ``EIO``)
0x02   UNKNOWN_COMMAND   JSON ``{"type", "message", "where"}``: a device model met a
                         command it does not implement (``simulators.i2c.UnknownCommand``);
                         the client raises its own ``UnknownCommand`` (a ``SimError``)
0x03   ERROR             JSON ``{"type", "message", "where"}``: any other exception (a bad
                         rig call, a model bug, an unknown op or a malformed request); the
                         client raises ``SimError`` — never an ``OSError``, so a bug is
                         never mistaken for a bus fault and swallowed
0x04   WDT_RESET         u64: NOW when the watchdog fired. The connection's watchdog
                         deadline had passed, so the board has reset: answered to any op
                         but BOOT_AT (the op is not performed) once the clock is past the
                         deadline; a SLEEP_US across it advances the clock only to the
                         deadline. The watchdog is then off. The client raises
                         ``simlink.BoardReset``
=====  ================  ==============================================================

``where`` is ``file:line`` of the innermost frame that raised, for debugging.

Use: ``with SimServer() as srv:`` then run ``micropython`` with ``CIVICEDGE_SIM=srv.address``
(``"unix:PATH"``; ``"127.0.0.1:PORT"`` works too) in its environment. ``srv.rig`` is the hosted rig; hold ``srv.lock``
to touch it while clients are connected. From a shell: ``python -m simulators.i2c_server``.
"""

import json
import os
import select
import shutil
import socket
import tempfile
import threading

from simulators.i2c_board import (  # noqa: F401  (the protocol's numbers, re-exported)
    CAUSE_NAMES, EXT_HEAD, MAX_PAYLOAD, OP_BOOT_AT, OP_CONTROL, OP_EXT, OP_HALT, OP_NOW, OP_POSTED, OP_READ,
    OP_READ_MEM, OP_SCAN, OP_SLEEP_US, OP_TICKS_MS, OP_TICKS_US, OP_WALL, OP_WDT, OP_WRITE, POSTED, REQUEST,
    RESPONSE, ST_ERROR, ST_OK, ST_OSERROR, ST_UNKNOWN_COMMAND, ST_WDT_RESET, TRAILER, BoardRequests, Node,
    WDTFired, error_body)
from simulators.i2c_control import WIFI_DEFAULTS, AccessPoint, ControlMethods
from simulators.rig import LocalRig


class SimServer(BoardRequests, ControlMethods):
    """A ``LocalRig`` served on ``host``:``port`` (port 0: a free one) and, with ``unix``, on
    a Unix socket in a temporary directory of its own (removed by ``stop``). A context manager.

    One thread accepts connections, one thread serves each (or, with ``hub``, a
    ``simulators.i2c_hub.BoardHub``'s one thread serves them with those of other servers: the
    fleet's); every request's ops run under ``self.lock``. ``stop()`` closes every connection
    and joins the threads.
    """

    def __init__(self, rig=None, host="127.0.0.1", port=0, unix=True, hub=None):
        self.rig = rig if rig is not None else LocalRig()
        self.lock = threading.Lock()
        self._host = host
        self._port = port
        self._unix = unix and hasattr(socket, "AF_UNIX")
        self._listener = None
        self._unix_listener = None
        self._unix_dir = None
        self._wake_r = self._wake_w = None
        self._threads = []
        self._conns = set()
        self._stopping = False
        self.nodes = {}  # connection -> Node
        # The fleet runner's hook (simulators/fleet/timeline.py): called, outside the lock,
        # with the virtual time (µs, as NOW) a SLEEP_US, BOOT_AT or HALT would move this
        # board's clock to; it returns when the fleet's global time allows. None: no fleet.
        self.gate = None
        # The same hook for a ``hub``'s thread, which must not block: ``gate_async(target_us,
        # resume)`` returns True if the fleet's time allows now, else False and calls
        # ``resume(cancelled)`` when it does (``Participant.wait_async``). None: the hub runs
        # such a request on a worker thread, through ``gate``.
        self.gate_async = None
        self._hub = hub
        # UART id -> a peer of this board that can settle (``ATModemEmulator`` in "follow"
        # mode): CONTROL uart_peer, uart_settle
        self.uart_peers = {}
        # Whether this board's far end (the gateway its serial or MQTT link answers through)
        # is up: True, False, or None (unknown: a board on its own). CONTROL far_end; the
        # board's real waits use it (simlink.patient) so that its clock never depends on
        # how long a live far end takes in real time.
        self.far_end = None
        self._reset_environment()

    def _reset_environment(self):
        self.wifi = AccessPoint(WIFI_DEFAULTS, changed_us=0)
        self.analog = {}

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def port(self):
        return self._listener.getsockname()[1]

    @property
    def address(self):
        """The value for ``CIVICEDGE_SIM``: ``"unix:PATH"`` (a Unix socket, cheaper a round
        trip than loopback TCP) when the server has one, else ``"host:port"``; the TCP
        listener is there either way (``tcp_address``: for a board started by hand)."""
        if self._unix_listener is not None:
            return "unix:" + self._unix_listener.getsockname()
        return self.tcp_address

    @property
    def tcp_address(self):
        """``"host:port"``."""
        return "%s:%d" % (self._host, self.port)

    def start(self):
        self._listener = socket.create_server((self._host, self._port))
        if self._unix:
            self._unix_dir = tempfile.mkdtemp(prefix="civicedge-sim-")
            self._unix_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._unix_listener.bind(os.path.join(self._unix_dir, "s"))
            self._unix_listener.listen()
        self._wake_r, self._wake_w = socket.socketpair()
        t = threading.Thread(target=self._accept_loop, name="sim-i2c-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self, timeout_s=5.0):
        """Close the listener and every connection; wait (bounded) for the threads."""
        if self._listener is None or self._stopping:
            return
        self._stopping = True
        self._wake_w.send(b"x")
        self._threads[0].join(timeout_s)  # the accept loop: no connection arrives after this
        with self.lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads[1:]:
            t.join(timeout_s)
        for s in (self._listener, self._unix_listener, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        if self._unix_dir is not None:
            shutil.rmtree(self._unix_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _accept_loop(self):
        listeners = [s for s in (self._listener, self._unix_listener) if s is not None]
        while not self._stopping:
            ready, _, _ = select.select(listeners + [self._wake_r], [], [])
            if self._wake_r in ready or self._stopping:
                return
            for listener in ready:
                self._accept(listener)

    def _accept(self, listener):
        conn, _ = listener.accept()
        if listener is self._listener:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self._conns.add(conn)
            self.nodes[conn] = node = Node()
        if self._hub is not None:
            self._hub.add(self, conn, node)
            return
        t = threading.Thread(target=self._serve, args=(conn,), name="sim-i2c-conn", daemon=True)
        self._threads.append(t)
        t.start()

    def _serve(self, conn):
        # One buffer per connection, read into in place (no file object, one recv per request
        # as a rule): a request is at most REQUEST.size + MAX_PAYLOAD bytes, and a client
        # sends its next request only after the reply, so a whole one always fits.
        buf = bytearray(REQUEST.size + MAX_PAYLOAD)
        view = memoryview(buf)
        head = REQUEST.size
        have = 0
        node = self.nodes.get(conn)
        try:
            while True:
                while have < head:
                    got = conn.recv_into(view[have:])
                    if not got:
                        return
                    have += got
                op, addr, n = REQUEST.unpack_from(buf)
                end = head + n
                while have < end:
                    got = conn.recv_into(view[have:])
                    if not got:
                        return
                    have += got
                payload = bytes(view[head:end])
                if have > end:  # the start of another request: to the front
                    buf[:have - end] = bytes(view[end:have])
                have -= end
                reply = self.drive(self.steps(op, addr, payload, node))
                if reply is None:  # the fleet cancelled this board: hang up
                    return
                status, out = reply
                conn.sendall(RESPONSE.pack(status, len(out)) + out)
        except OSError:
            return  # the client went away, or stop() shut the connection
        finally:
            self.forget(conn)

    def forget(self, conn):
        """``conn`` is over (its board went away, was cancelled, or the server stops): close it."""
        with self.lock:
            self._conns.discard(conn)
            self.nodes.pop(conn, None)
        conn.close()


def main(argv=None):
    """Serve a rig until interrupted: ``python -m simulators.i2c_server [PORT] [DEVICES_JSON]``."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    usage = "usage: python -m simulators.i2c_server [PORT] [DEVICES_JSON]"
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    try:
        port = int(argv[0]) if argv else 0
        devices = json.loads(argv[1]) if len(argv) > 1 else None
    except ValueError as e:
        print("%s\n  bad argument: %s" % (usage, e), file=sys.stderr)
        return 2
    with SimServer(port=port) as srv:
        if devices is not None:
            srv.rig.setup(devices)
        print("CIVICEDGE_SIM=%s" % srv.tcp_address, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    raise SystemExit(main())
