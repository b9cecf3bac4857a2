"""A fault-injecting TCP proxy on a free loopback port, for network fault tests.

Put it between a client (the gateway's MQTT forwarder) and a server (Mosquitto) and change
its behaviour while they talk (RELIABILITY.md's network faults)::

    with TCPProxy(broker.host, broker.port) as proxy:
        forwarder connects to (proxy.host, proxy.port)
        proxy.blackhole()        # bytes vanish both ways; connections stay open (a dead route)
        proxy.heal()             # pass everything again
        proxy.reset_all()        # every open connection gets a TCP RST (SO_LINGER 0)
        proxy.refuse(True)       # new connections are accepted and closed at once
        proxy.set_latency(0.2)   # each chunk is held 0.2 s, both ways
        proxy.set_slicing(1)     # bytes go on in slices of 1 byte (exercises partial reads)

Behaviour applies to data as it is pumped, so a change takes effect on open connections
too. A blackholed connection's bytes are read and discarded (nothing is queued, so memory
is bounded); latency holds chunks in a per-direction queue. Counters say what happened.
Listens on loopback only. CPython only; wall time (real sockets).
"""

import collections
import select
import socket
import struct
import threading
import time

_POLL_S = 0.02  # the accept loop's look at ``_stopping`` (x5)
_CHUNK = 65536


class _Pipe:
    """One proxied connection: client socket <-> server socket, pumped by one thread."""

    def __init__(self, proxy, client, server):
        self.proxy, self.client, self.server = proxy, client, server
        self.pending = {client: collections.deque(), server: collections.deque()}
        self.closed = False
        # close() wakes the thread: it sleeps until bytes come or a held chunk falls due
        self._wake_r, self._wake_w = socket.socketpair()

    def other(self, sock):
        return self.server if sock is self.client else self.client

    def run(self):
        p = self.proxy
        try:
            while not self.closed and not p._stopping:
                readable, _, _ = select.select([self.client, self.server, self._wake_r], [], [], self._due_s())
                for sock in readable:
                    if sock is self._wake_r:
                        continue  # close(): the loop's test ends it
                    data = sock.recv(_CHUNK)
                    if not data:
                        self.closed = True
                        break
                    p._count("bytes_up" if sock is self.client else "bytes_down", len(data))
                    if p._blackhole:
                        p._count("bytes_blackholed", len(data))
                        continue
                    self.pending[self.other(sock)].append((time.monotonic() + p._latency_s,
                                                           data))
                self._flush()
        except (OSError, ValueError):  # ValueError: closed by another thread before the select
            pass
        finally:
            self.close()
            self._wake_r.close()
            self._wake_w.close()

    def _due_s(self):
        """Seconds until the next held chunk (latency) is due; None: nothing held."""
        due = [queue[0][0] for queue in self.pending.values() if queue]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _flush(self):
        now = time.monotonic()
        p = self.proxy
        for dest, queue in self.pending.items():
            while queue and queue[0][0] <= now:
                _, data = queue.popleft()
                if p._blackhole:
                    continue
                step = p._slice or len(data)
                for i in range(0, len(data), step):
                    dest.sendall(data[i:i + step])
                    if p._slice:
                        time.sleep(0.0005)

    def reset(self):
        """Abort both sides with a TCP RST."""
        for sock in (self.client, self.server):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.close()

    def close(self):
        self.closed = True
        for sock in (self.client, self.server):
            try:
                sock.close()
            except OSError:
                pass
        try:
            self._wake_w.send(b"x")
        except OSError:  # the thread has ended (and closed it)
            pass


class TCPProxy:
    """Forward ``127.0.0.1:<port>`` (``port`` 0: a free one) to ``target_host:target_port``.
    ``counters`` (a dict): connections, refused, resets, bytes_up (client to server),
    bytes_down, bytes_blackholed, connect_errors (the target did not answer)."""

    def __init__(self, target_host, target_port, port=0):
        self.target = (target_host, int(target_port))
        self.host = "127.0.0.1"
        self._listener = socket.create_server((self.host, port))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pipes = []
        self._threads = []
        self._stopping = False
        self._blackhole = False
        self._refuse = False
        self._latency_s = 0.0
        self._slice = 0
        self.counters = collections.Counter()
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcpproxy-accept",
                                          daemon=True)
        self._acceptor.start()

    # -- faults ------------------------------------------------------------------------------
    def blackhole(self):
        """Discard every byte both ways from now on, keeping connections open."""
        self._blackhole = True

    def heal(self):
        """Back to a clean pass-through: no blackhole, no refusal, no latency, no slicing."""
        self._blackhole = self._refuse = False
        self._latency_s, self._slice = 0.0, 0

    def refuse(self, on=True):
        """Accept and immediately close new connections (a server that is down)."""
        self._refuse = bool(on)

    @property
    def passing(self):
        """True when new connections are let through and bytes pass (no refusal, no blackhole)."""
        return not (self._refuse or self._blackhole)

    def set_latency(self, seconds):
        """Hold each chunk ``seconds`` (>= 0) before passing it on, both directions."""
        if not seconds >= 0:
            raise ValueError("seconds must be >= 0, got %r" % (seconds,))
        self._latency_s = float(seconds)

    def set_slicing(self, nbytes):
        """Pass data on in slices of ``nbytes`` (0: whole chunks)."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError("nbytes must be an int >= 0, got %r" % (nbytes,))
        self._slice = nbytes

    def reset_all(self):
        """Send a TCP RST on every open connection; returns how many were reset."""
        with self._lock:
            pipes, self._pipes = [p for p in self._pipes if not p.closed], []
        for p in pipes:
            p.reset()
        self._count("resets", len(pipes))
        return len(pipes)

    def open_connections(self):
        with self._lock:
            return sum(not p.closed for p in self._pipes)

    # -- running -----------------------------------------------------------------------------
    def _count(self, name, n=1):
        with self._lock:
            self.counters[name] += n

    def _accept_loop(self):
        while not self._stopping:
            try:
                readable, _, _ = select.select([self._listener], [], [], _POLL_S * 5)
                if not readable:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refuse:
                self._count("refused")
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._count("connect_errors")
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(None)
            pipe = _Pipe(self, client, server)
            t = threading.Thread(target=pipe.run, name="tcpproxy-pipe", daemon=True)
            with self._lock:
                self._pipes = [p for p in self._pipes if not p.closed] + [pipe]
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
                self.counters["connections"] += 1
            t.start()

    def close(self):
        """Stop accepting, close every connection, join the threads."""
        self._stopping = True
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            pipes, threads = list(self._pipes), list(self._threads)
        for p in pipes:
            p.close()
        self._acceptor.join(timeout=2)
        for t in threads:
            t.join(timeout=2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
