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

Errors: link failures are ``OSError`` (``mqtt_connect.MQTTRefused`` — an ``OSError`` — when CONNACK
refuses, carrying ``return_code``); a broker that sends malformed bytes raises
``MQTTProtocolError`` (a ``ValueError``). Either way the socket is closed, the in-flight
window kept, and the caller reconnects with backoff. Bad arguments raise ``ValueError``.

The connection half (the constructor's argument checks, TCP and TLS, CONNECT/CONNACK with the
session's resend or requeue, SUBSCRIBE/SUBACK and the subscriptions kept) is
``mqtt_connect.py``, imported by the calls that need it; the node's link releases it after
connecting (heap). The every-wake half (the socket's reads and writes, PUBACK, PUBLISH and
PINGRESP handled, the keep-alive, QoS 1 PUBLISH built in place) is ``mqtt_io.py``, imported
by ``poll``, ``publish`` and ``ping``; this class holds only the state and the small calls,
so the link can release ``mqtt_io`` and ``protocol.mqtt_wire`` while the node packs its
frames (heap). A topic is checked (``mqtt_packets``, loaded for it) the first time it is
published to, not at every publish; QoS 0 publishes are encoded by ``mqtt_packets`` too.

TLS fails closed: ``tls`` is ``{"cafile": path, "server_hostname": name}`` (or ``cadata``)
or a ready context that verifies; a failed verification raises ``MQTTTLSError`` (an
``OSError``, ``mqtt_tls.py``, the transport) and there is no plaintext fall-back. The
password is only ever sent in CONNECT: never printed, logged or put in a repr.
"""

import sys

_IO = __name__ + "_io"  # "app.mqtt_io" (or "firmware.app.mqtt_io" on CPython)


def _io():
    # The client's every-wake half: from sys.modules while it is loaded (an import statement
    # interns its names again, even for a loaded module: ~50,000 instructions on the unix port,
    # for each poll, ping and publish), else imported
    io = sys.modules.get(_IO)
    if io is None:
        from . import mqtt_io as io
    return io


class MQTTClient:
    """See the module docstring. ``MQTTClient(client_id, host, port, clock, user=None,
    password=None, keepalive_s=60, tls=None, socket_factory=None, max_inflight=8, will=None,
    timeout_ms=5000, max_packet_bytes=4096, on_message=None)``: ``clock`` the clock contract
    (``drivers.clock``); ``keepalive_s`` 0..65535 (0: no keep-alive); ``will``: ``(topic,
    payload, qos, retain)``; ``socket_factory(host, port, timeout_s)`` returns a connected
    socket (default: TCP); ``timeout_ms`` bounds every blocking socket operation and the wait
    for CONNACK/SUBACK; ``max_packet_bytes`` is the largest packet accepted from the broker.
    ``ValueError`` names a bad argument (``mqtt_connect.init``)."""

    def __init__(self, *args, **kwargs):
        from .mqtt_connect import init

        init(self, *args, **kwargs)

    def is_connected(self):
        return self._sock is not None

    def inflight_count(self):
        return len(self._inflight)

    _lent_at = 0  # lend's ``at``: the next PUBLISH's payload is already in the lent buffer there

    def lend(self, buf, at=0):
        """QoS 1 PUBLISHes are built in the bytearray ``buf`` when it fits and is not in flight
        (a node allocates it once: heap), else in a new one. ``at`` > 0: the next publish's
        payload is already in ``buf`` from index ``at`` (the caller built it there, leaving
        ``7 + len(topic)`` bytes before it); its PUBLISH is built around it, not copied."""
        self._spare = [buf]
        self._lent_at = at

    def take_requeued(self):
        """Publishes lost with the session: a list of ``(topic, payload, retain)``, oldest
        first; the client forgets them (the caller publishes them again)."""
        out, self._requeued = self._requeued, []
        return out

    def connect(self, clean_session=False):
        """Connect and wait (≤ ``timeout_ms``) for CONNACK; returns *session present*.

        Resends unacknowledged publishes with DUP=1 when the session is present, else moves
        them to ``take_requeued()`` and renews the subscriptions. Raises ``OSError``
        (``mqtt_connect.MQTTRefused`` for a refusal, ``MQTTTLSError`` for a failed
        verification) or ``MQTTProtocolError``."""
        from .mqtt_connect import connect

        return connect(self, clean_session)

    def subscribe(self, topic_filter, qos=1):
        """Subscribe and wait (≤ ``timeout_ms``) for SUBACK; returns the granted QoS.
        Raises ``OSError(EACCES)`` when the broker refuses (ACL), ``ValueError`` for a bad
        filter or qos. The subscription is renewed after a reconnect that lost the session."""
        from .mqtt_connect import subscribe_kept

        return subscribe_kept(self, topic_filter, qos)

    def close(self):
        """Drop the connection without DISCONNECT (the broker then sends the will)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def disconnect(self):
        """Send DISCONNECT (best effort, §3.14) and close; the session and window are kept."""
        if self._sock is not None:
            try:
                self._sock.sendall(b"\xe0\x00")
            except OSError:
                pass
        self.close()

    def poll(self, timeout_ms=0):
        """Wait at most ``timeout_ms`` (less when the keep-alive is due) for data, handle
        the packets there (≤ 64) and run the keep-alive; returns the number handled.
        Raises ``OSError`` (ENOTCONN when not connected, ETIMEDOUT for a dead link) or
        ``MQTTProtocolError``; the socket is then closed."""
        return _io().poll(self, timeout_ms)

    def ping(self):
        """Send a PINGREQ now, before the keep-alive would; ``poll()`` handles the PINGRESP.
        Raises ``OSError`` (ENOTCONN when not connected; the socket is closed on a send error)."""
        _io().ping(self)

    def publish(self, topic, payload, qos=1, retain=False):
        """Send a PUBLISH; returns its packet id (0 for QoS 0).

        QoS 1: the message stays in the window until PUBACK and is resent as described in
        the module docstring. A full window is given up to ``timeout_ms`` to drain, then
        ``OSError(ENOBUFS)``. If the send fails, ``OSError`` and the message is not kept.
        ``ValueError`` for a bad topic or qos."""
        return _io().publish(self, topic, payload, qos, retain)
