"""MQTT 3.1.1 QoS 1 client for the node's WiFi link: thin I/O around ``protocol.mqtt_wire``
(the packets it handles at every wake; ``protocol.mqtt_packets`` has the rest).

Theory of operation
-------------------
``connect()`` opens TCP (then TLS when asked), sends CONNECT and waits for CONNACK. With
``clean_session=False`` the broker keeps the node's session across connections: its
subscriptions and the QoS 1 publishes either side has not had acknowledged.

``publish(qos=1)`` sends at once and keeps the encoded packet in a small RAM window
(``max_inflight``) until its PUBACK comes back. The window is not a buffer: the node's
flash log is, and the link trims the log only on the gateway's authenticated ack. The
window only lets the client keep MQTT's own promise (§4.4): after a reconnect whose
CONNACK says *session present*, every unacknowledged publish is sent again, in order, with
DUP=1; when the session is gone (broker restarted without persistence, expired) they are
handed back to the caller through ``take_requeued()`` and subscriptions made with
``subscribe()`` are made again. Receivers deduplicate (every reading has its key).

``poll(timeout_ms)`` waits at most ``timeout_ms`` for data, handles the packets that are
there (PUBACK, PUBLISH — calling ``on_message(topic, payload)`` then acknowledging QoS 1 —,
PINGRESP, SUBACK; at most 64 per call) and runs the keep-alive on the injected clock: a PINGREQ when nothing was
sent or received for ``keepalive_s``, and a dead link declared (socket closed,
``OSError(ETIMEDOUT)``) when nothing at all was received for 1.5 × ``keepalive_s`` — the
same limit the broker applies to us (§3.1.2.10). Every wait is bounded by ``timeout_ms``
or the socket timeout; every loop by a count.

Errors: link failures are ``OSError`` (``MQTTRefused`` — an ``OSError`` — when CONNACK
refuses, carrying ``return_code``); a broker that sends malformed bytes raises
``MQTTProtocolError`` (a ``ValueError``). Either way the socket is closed, the in-flight
window kept, and the caller reconnects with backoff. Bad arguments raise ``ValueError``.

The connection half (argument checks, TCP and TLS, CONNECT/CONNACK with the session's
resend or requeue, SUBSCRIBE/SUBACK) is ``mqtt_connect.py``, imported by the calls that need
it; the node's link releases it after connecting (heap).

TLS fails closed: ``tls`` is ``{"cafile": path, "server_hostname": name}`` (or ``cadata``)
or a ready context that verifies; a failed verification raises ``MQTTTLSError`` (an
``OSError``, ``mqtt_tls.py``, the transport) and there is no plaintext fall-back. The
password is only ever sent in CONNECT: never printed, logged or put in a repr.
"""

import errno
import select

from protocol import mqtt_wire as mp
from protocol.mqtt_wire import MQTTProtocolError

_READ_CHUNK = 512       # bytes per socket read: small for the ESP32's heap
_MAX_READS = 16         # socket reads to complete one packet before giving up for now
_MAX_PACKETS = 64       # packets handled per poll() before returning to the caller


class MQTTRefused(OSError):
    """CONNACK refused the connection; ``return_code`` 1..5 (MQTT 3.1.1 §3.2.2.3)."""

    def __init__(self, return_code):
        from protocol.mqtt_packets import CONNACK_CODES  # raised while connecting: it is loaded

        super().__init__(errno.ECONNREFUSED, "MQTT connection refused: %s" % CONNACK_CODES[return_code])
        self.return_code = return_code


class MQTTClient:
    """See the module docstring. ``clock``: the clock contract (``drivers.clock``);
    ``keepalive_s`` 0..65535 (0: no keep-alive); ``will``: ``(topic, payload, qos, retain)``;
    ``socket_factory(host, port, timeout_s)`` returns a connected socket (default: TCP);
    ``timeout_ms`` bounds every blocking socket operation and the wait for CONNACK/SUBACK;
    ``max_packet_bytes`` is the largest packet accepted from the broker."""

    def __init__(self, client_id, host, port, clock, user=None, password=None, keepalive_s=60,
                 tls=None, socket_factory=None, max_inflight=8, will=None, timeout_ms=5000,
                 max_packet_bytes=4096, on_message=None):
        from .mqtt_connect import check_args  # up front: CONNECT's encoder names the bad argument

        check_args(client_id, keepalive_s, user, password, will, max_inflight, tls)
        self.client_id = client_id
        self.host = host
        self.port = port
        self.clock = clock
        self.user = user
        self._password = password
        self.keepalive_s = keepalive_s
        self.will = will
        self.tls = tls
        self.socket_factory = socket_factory  # None: mqtt_tls.tcp_socket
        self.max_inflight = max_inflight
        self.timeout_ms = timeout_ms
        self.max_packet_bytes = max_packet_bytes
        self.on_message = on_message
        self._sock = None
        self._reader = None
        self._inflight = []       # [packet_id, encoded PUBLISH (a view), its bytearray], oldest first
        self._spare = []          # PUBLISH buffers to reuse (``lend``)
        self._requeued = []       # (topic, payload, retain) lost with a session
        self._subs = []           # [topic_filter, qos] to renew when the session is lost
        self._pid = 0
        self._acks = {}           # SUBACK packet id -> granted code
        self._ping_out = False
        self._last_rx = self._last_tx = 0
        self.counters = {"connects": 0, "published": 0, "acked": 0, "resent": 0, "received": 0,
                         "pings": 0, "dead_links": 0}

    def __repr__(self):
        return "<MQTTClient %s@%s:%d connected=%r inflight=%d>" % (
            self.client_id, self.host, self.port, self.is_connected(), len(self._inflight))

    # ---- state ----
    def is_connected(self):
        return self._sock is not None

    def inflight_count(self):
        return len(self._inflight)

    def lend(self, buf):
        """QoS 1 PUBLISHes are built in the bytearray ``buf`` when it fits and is not in flight
        (a node allocates it once: heap), else in a new one."""
        self._spare = [buf]

    def take_requeued(self):
        """Publishes lost with the session: a list of ``(topic, payload, retain)``, oldest
        first; the client forgets them (the caller publishes them again)."""
        out, self._requeued = self._requeued, []
        return out

    # ---- connection ----
    def connect(self, clean_session=False):
        """Connect and wait (≤ ``timeout_ms``) for CONNACK; returns *session present*.

        Resends unacknowledged publishes with DUP=1 when the session is present, else moves
        them to ``take_requeued()`` and renews the subscriptions. Raises ``OSError``
        (``MQTTRefused`` for a refusal, ``MQTTTLSError`` for a failed verification) or
        ``MQTTProtocolError``."""
        from .mqtt_connect import connect

        return connect(self, clean_session, MQTTRefused)

    def close(self):
        """Drop the connection without DISCONNECT (the broker then sends the will)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def disconnect(self):
        """Send DISCONNECT (best effort) and close; the session and window are kept."""
        if self._sock is not None:
            try:
                self._send(mp.encode_disconnect())
            except OSError:
                pass
        self.close()

    # ---- I/O ----
    def _fail(self, exc):
        self.close()
        raise exc

    def _send(self, data):
        # sendall: plain and TLS sockets have it on both runtimes; it blocks ≤ the timeout
        if self._sock is None:
            raise OSError(errno.ENOTCONN, "MQTT not connected")
        try:
            self._sock.sendall(data)
        except OSError:
            self.close()
            raise
        self._last_tx = self.clock.ticks_ms()

    def _readable(self, timeout_ms):
        sock = self._sock
        pending = getattr(sock, "pending", None)  # CPython's SSLSocket buffers records
        if pending is not None and pending():
            return True
        p = select.poll()
        p.register(sock, select.POLLIN)
        return bool(p.poll(max(0, int(timeout_ms))))

    def _receive(self, timeout_ms):
        # The next complete packet: from what the reader holds, else from the socket within
        # timeout_ms; None when none. Packets behind it stay in the reader for the next
        # call, so a CONNACK refusal is returned before the broker's close is read.
        try:
            p = self._reader.next()
            for i in range(_MAX_READS):
                if p is not None or not self._readable(timeout_ms if i == 0 else 0):
                    break
                data = self._sock.recv(_READ_CHUNK)
                if data is None:  # a TLS record not complete yet
                    continue
                if not data:
                    raise OSError(errno.ECONNRESET, "MQTT connection closed by the broker")
                self._last_rx = self.clock.ticks_ms()
                self._reader.feed(data)
                p = self._reader.next()
        except (OSError, MQTTProtocolError):
            self.close()
            raise
        return p

    def _waits(self):
        # (deadline, slices): waits of ≤ 100 ms each, as many as fit in timeout_ms, so the
        # real time spent is bounded even on a virtual clock that nobody advances.
        clock = self.clock
        return clock.ticks_add(clock.ticks_ms(), self.timeout_ms), self.timeout_ms // 100 + 1

    def _handle(self, p):
        kind = p.kind
        if kind == mp.PUBACK:
            for i, item in enumerate(self._inflight):
                if item[0] == p.packet_id:
                    del self._inflight[i]
                    self.counters["acked"] += 1
                    if not self._spare:
                        self._spare.append(item[2])
                    break
        elif kind == mp.PUBLISH and p.qos < 2:
            self.counters["received"] += 1
            if self.on_message is not None:
                try:
                    self.on_message(p.topic, p.payload)
                except BaseException:
                    self.close()  # unacked: the broker delivers it again after reconnect
                    raise
            if p.qos:
                self._send(mp.encode_puback(p.packet_id))
        elif kind == mp.PINGRESP:
            self._ping_out = False
        elif kind == mp.SUBACK:
            self._acks[p.packet_id] = p.granted[0]
        else:  # QoS 2 flows, UNSUBACK, a second CONNACK: nothing we asked for
            self._fail(MQTTProtocolError("unexpected packet type %d" % kind))

    def _keepalive(self, check_dead):
        # Returns the ms until the keep-alive next needs attention (a ping or the verdict).
        if not self.keepalive_s or self._sock is None:
            return 0x3FFFFFFF  # largest small int on a 32-bit port
        clock = self.clock
        now = clock.ticks_ms()
        k = self.keepalive_s * 1000
        quiet_rx = clock.ticks_diff(now, self._last_rx)
        if check_dead and quiet_rx >= k * 3 // 2:
            self.counters["dead_links"] += 1
            self._fail(OSError(errno.ETIMEDOUT, "MQTT: nothing from the broker for 1.5 x keepalive"))
        if self._ping_out:
            return max(0, k * 3 // 2 - quiet_rx)
        quiet = max(quiet_rx, clock.ticks_diff(now, self._last_tx))
        if quiet >= k:
            self._send(mp.encode_pingreq())
            self._ping_out = True
            self.counters["pings"] += 1
            return max(0, k * 3 // 2 - quiet_rx)
        return k - quiet

    def poll(self, timeout_ms=0):
        """Wait at most ``timeout_ms`` (less when the keep-alive is due) for data, handle
        the packets there (≤ 64) and run the keep-alive; returns the number handled.
        Raises ``OSError`` (ENOTCONN when not connected, ETIMEDOUT for a dead link) or
        ``MQTTProtocolError``; the socket is then closed."""
        if self._sock is None:
            raise OSError(errno.ENOTCONN, "MQTT not connected")
        p = self._receive(min(timeout_ms, self._keepalive(False)))
        n = 0
        while p is not None and n < _MAX_PACKETS:
            self._handle(p)
            n += 1
            p = self._receive(0) if n < _MAX_PACKETS else None
        self._keepalive(True)
        return n

    def ping(self):
        """Send a PINGREQ now, before the keep-alive would; ``poll()`` handles the PINGRESP.
        Raises ``OSError`` (ENOTCONN when not connected; the socket is closed on a send error)."""
        self._send(mp.encode_pingreq())
        self._ping_out = True
        self.counters["pings"] += 1

    # ---- publish / subscribe ----
    def _next_pid(self):
        used = [item[0] for item in self._inflight] + list(self._acks)
        for _ in range(len(used) + 1):
            self._pid = self._pid % 65535 + 1
            if self._pid not in used:
                return self._pid
        raise OSError(errno.ENOBUFS, "MQTT: no free packet id")

    def publish(self, topic, payload, qos=1, retain=False):
        """Send a PUBLISH; returns its packet id (0 for QoS 0).

        QoS 1: the message stays in the window until PUBACK and is resent as described in
        the module docstring. A full window is given up to ``timeout_ms`` to drain, then
        ``OSError(ENOBUFS)``. If the send fails, ``OSError`` and the message is not kept."""
        if qos == 0:
            self._send(mp.encode_publish(topic, payload, 0, 0, False, retain))
            return 0
        if qos != 1:
            raise ValueError("qos must be 0 or 1, got %r" % (qos,))
        if len(self._inflight) >= self.max_inflight:
            clock = self.clock
            deadline, slices = self._waits()
            for _ in range(slices):
                left = clock.ticks_diff(deadline, clock.ticks_ms())
                if len(self._inflight) < self.max_inflight or left <= 0:
                    break
                self.poll(min(left, 100))
            if len(self._inflight) >= self.max_inflight:
                raise OSError(errno.ENOBUFS, "MQTT: %d publishes unacknowledged" % len(self._inflight))
        pid = self._next_pid()
        pkt, buf = self._publish_packet(topic, payload, pid, retain)
        self._send(pkt)
        self._inflight.append([pid, pkt, buf])
        self.counters["published"] += 1
        return pid

    def _publish_packet(self, topic, payload, pid, retain):
        # encode_publish's bytes (it checks the arguments; header made for no payload) in the
        # lent buffer when it fits, else a new one: (a view of the packet, its buffer)
        head = mp.encode_publish(topic, b"", 1, pid, False, retain)
        payload = payload.encode() if isinstance(payload, str) else payload
        i = 1
        while head[i] & 0x80:  # past the Remaining Length varint (§2.2.3)
            i += 1
        var = memoryview(head)[i + 1:]  # topic name and packet id (§3.3.2)
        rl = mp.encode_remaining_length(len(var) + len(payload))
        j, n = 1 + len(rl), 1 + len(rl) + len(var) + len(payload)
        buf = self._spare.pop() if self._spare and len(self._spare[-1]) >= n else bytearray(n)
        buf[0] = head[0]
        buf[1:j] = rl
        buf[j:j + len(var)] = var
        buf[j + len(var):n] = payload
        return memoryview(buf)[:n], buf

    def subscribe(self, topic_filter, qos=1):
        """Subscribe and wait (≤ ``timeout_ms``) for SUBACK; returns the granted QoS.
        Raises ``OSError(EACCES)`` when the broker refuses (ACL), ``ValueError`` for a bad
        filter. The subscription is renewed after a reconnect that lost the session."""
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1, got %r" % (qos,))
        from .mqtt_connect import subscribe

        granted = subscribe(self, topic_filter, qos)  # it checks the filter first
        for item in self._subs:
            if item[0] == topic_filter:
                item[1] = qos
                break
        else:
            self._subs.append([topic_filter, qos])
        return granted
