"""``BoardHub``: every node's sensor server in a fleet (``SimServer``, one per node) served
from one thread, instead of a thread per board connection.

Why
---
With a thread per connection, each request woke its own thread, which then had to take
CPython's interpreter lock from whichever of ~100 others held it, and a request that waited
for the fleet's time blocked its thread on an ``Event`` that another thread had to set: in
the fleet ~300 µs of the runner's CPU a request (~4 context switches, ~7 futex calls),
against ~13 µs for one board alone (docs/simulation-fleet.md, "Session 9"). One thread that
waits on every connection at once takes the lock once and serves whatever is ready.

Theory of operation
-------------------
A ``SimServer`` made with ``hub=`` hands each connection it accepts to the hub (``add``).
The hub's thread waits on all of them (``selectors``), reads each request whole into its
connection's buffer, and runs its steps (``BoardRequests.steps``: a generator that yields
each virtual time the fleet's gate must reach before it goes on). At a yielded time it asks
the server's ``gate_async``: if the fleet's time allows it now, the steps go on at once;
if not, the request is *parked* on the timeline (``Participant.wait_async``), and the hub
serves the others. The timeline calls back when the time comes, or when the board is
cancelled (its process died, the run ended), from whichever thread moved the time; the
callback only queues the connection (``_ready``) and, from another thread, wakes the hub
(one byte on a socket pair, at most one pending). The hub then goes on with the steps in its
thread, or hangs up on a cancelled board, as the thread per connection did.

CONTROL requests (and any request of a server with no ``gate_async``) run on a worker
thread, through the blocking ``gate``: a CONTROL method may block in real time (a LoRaWAN
modem's uplink waits for its turn on the radio, ``inject.RadioOrder``, until the other
boards have moved on, and they must go on being served meanwhile). They are ~7 % of a
fleet's requests. Workers are made as needed and kept; the reply comes back through the
hub's thread, which alone sends on a connection and moves it in and out of the selector.

A board sends its next request only after the reply, so nothing should arrive while its
request is in progress; if something does (its end closed: a power cut), the connection
leaves the selector until the request is over, so a closed socket does not wake the hub
over and over, and is closed when the request ends (or is cancelled).
"""

import collections
import functools
import queue
import selectors
import socket
import threading
import traceback

from simulators.fleet.timeline import Cancelled
from simulators.i2c_board import MAX_PAYLOAD, OP_CONTROL, OP_EXT, OP_POSTED, REQUEST, RESPONSE

_ADD, _RESUME, _DONE = range(3)  # what a queued item asks of the hub's thread


class _Conn:
    """One board connection: its server, its ``Node``, its buffer and the request in progress."""

    __slots__ = ("server", "sock", "node", "buf", "view", "have", "steps", "watched", "resume")

    def __init__(self, server, sock, node, resume):
        self.server, self.sock, self.node = server, sock, node
        self.resume = functools.partial(resume, self)  # the timeline's callback, when parked
        self.buf = bytearray(REQUEST.size + MAX_PAYLOAD)  # a whole request always fits (i2c_server._serve)
        self.view = memoryview(self.buf)
        self.have = 0          # bytes of the next request(s) in ``buf``
        self.steps = None      # the request in progress (its steps), or None
        self.watched = False   # in the selector's read set


class BoardHub:
    """Serves the connections of any number of ``SimServer``s (module docstring). ``start``,
    then make the servers with ``hub=``; ``stop`` when they are done."""

    def __init__(self):
        self._sel = selectors.DefaultSelector()
        self._ready = collections.deque()  # (conn, _ADD | _RESUME | _DONE, value), for the hub's thread
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._conns = set()
        self._thread = threading.Thread(target=self._run, name="sim-i2c-hub", daemon=True)
        self._ident = None
        self._stopping = False
        self._jobs = queue.SimpleQueue()  # connections whose request a worker is to run
        self._idle = 0                   # workers waiting for a job
        self._idle_lock = threading.Lock()
        self.offloaded = 0               # requests run on a worker
        self.parked = 0                  # requests that waited for the fleet's time

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout_s=5.0):
        """Stop serving (once started): every connection still open is closed."""
        if self._stopping or not self._thread.is_alive():
            return
        self._stopping = True
        self._wake()
        self._thread.join(timeout_s)
        for conn in list(self._conns):
            self._close(conn)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def add(self, server, sock, node):
        """Serve ``sock``, a connection ``server`` accepted for the board ``node`` (any thread)."""
        self._post(_Conn(server, sock, node, self._resume), _ADD, None)

    # -- from other threads ------------------------------------------------------------------------
    def _post(self, conn, what, value):
        self._ready.append((conn, what, value))
        if threading.get_ident() != self._ident:
            self._wake()

    def _wake(self):
        if not self._wake_pending:  # appended first, flag read after: no item is missed
            self._wake_pending = True
            try:
                self._wake_w.send(b"x")
            except (BlockingIOError, OSError):
                pass  # a byte is pending already, or the hub has stopped

    def _resume(self, conn, cancelled):
        """The timeline's callback for a parked request (its lock held: queue it, no more)."""
        self._post(conn, _RESUME, cancelled)

    # -- the hub's thread ----------------------------------------------------------------------------
    def _run(self):
        self._ident = threading.get_ident()
        ready = self._ready
        while not self._stopping:
            while ready:
                conn, what, value = ready.popleft()
                if what == _RESUME:
                    self._go(conn, cancelled=value)
                elif what == _DONE:
                    self._finish(conn, value)
                else:
                    self._watch(conn)
            for key, _ in self._sel.select():
                if key.data is None:
                    self._wake_r.recv(64)
                    # cleared after the byte is read, before the queue is: an item queued
                    # after this sends another byte, one queued before it is read next
                    self._wake_pending = False
                else:
                    self._readable(key.data)

    def _watch(self, conn):
        self._conns.add(conn)
        conn.watched = True
        self._sel.register(conn.sock, selectors.EVENT_READ, conn)

    def _readable(self, conn):
        if conn.steps is not None:  # mid-request: its end went away; closed when the request ends
            self._sel.unregister(conn.sock)
            conn.watched = False
            return
        try:
            got = conn.sock.recv_into(conn.view[conn.have:])
        except OSError:
            got = 0
        if not got:
            self._close(conn)
            return
        conn.have += got
        self._next(conn)

    def _next(self, conn):
        """Start the request whole in ``conn``'s buffer, if there is one."""
        head, have = REQUEST.size, conn.have
        if have < head:
            return
        op, addr, n = REQUEST.unpack_from(conn.buf)
        end = head + n
        if have < end:
            return
        payload = bytes(conn.view[head:end])
        if have > end:  # the start of another request: to the front
            conn.buf[:have - end] = bytes(conn.view[end:have])
        conn.have = have - end
        server = conn.server
        conn.steps = server.steps(op, addr, payload, conn.node)
        if op & ~(OP_EXT | OP_POSTED) == OP_CONTROL or server.gate_async is None:
            self._offload(conn)
        else:
            self._go(conn)

    def _go(self, conn, cancelled=False):
        """Run ``conn``'s steps until they end, or park them at a time not yet allowed."""
        steps = conn.steps
        if cancelled:
            steps.close()
            self._finish(conn, None)
            return
        gate = conn.server.gate_async
        try:
            while True:
                target = steps.send(None)
                if not gate(target, conn.resume):
                    self.parked += 1
                    return  # resumed by the timeline (``_resume``)
        except StopIteration as done:
            reply = done.value
        except Cancelled:  # the board left the fleet (its process died, the run is over): hang up
            steps.close()
            reply = None
        except Exception:  # a bug: said, and the board sees its connection close
            traceback.print_exc()
            steps.close()
            reply = None
        self._finish(conn, reply)

    def _finish(self, conn, reply):
        """The request is over: send ``reply`` (None: hang up), then the next request."""
        conn.steps = None
        if conn.sock.fileno() < 0:
            return  # closed by ``stop``
        if reply is None:
            self._close(conn)
            return
        status, out = reply
        try:
            conn.sock.sendall(RESPONSE.pack(status, len(out)) + out)
        except OSError:
            self._close(conn)
            return
        if not conn.watched:  # something came meanwhile: look at it (its end closed, as a rule)
            self._sel.register(conn.sock, selectors.EVENT_READ, conn)
            conn.watched = True
        self._next(conn)

    def _close(self, conn):
        if conn.watched:
            self._sel.unregister(conn.sock)
            conn.watched = False
        self._conns.discard(conn)
        conn.server.forget(conn.sock)

    # -- workers (CONTROL requests) -------------------------------------------------------------
    def _offload(self, conn):
        self.offloaded += 1
        with self._idle_lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._jobs.put(conn)
        if spawn:
            threading.Thread(target=self._work, name="sim-i2c-hub-worker", daemon=True).start()

    def _work(self):
        while True:
            conn = self._jobs.get()
            try:
                reply = conn.server.drive(conn.steps)
            except Exception:  # a bug: said, and the board sees its connection close
                traceback.print_exc()
                reply = None
            self._post(conn, _DONE, reply)
            with self._idle_lock:
                self._idle += 1
