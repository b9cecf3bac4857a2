"""The connection half of the node's MQTT client (``app.mqtt.MQTTClient``, whose ``connect``
and ``subscribe`` call these): argument checks, TCP and TLS (``mqtt_tls``), CONNECT and
CONNACK with the persistent session's resend or requeue, SUBSCRIBE and SUBACK. The link
loads it for a connection and releases it, with ``mqtt_tls``, once connected, so a node
holds none of it while it samples, logs and sends (heap: docs/mqtt-link.md "Memory"). The
behaviour is the client's, documented in ``app/mqtt.py``. Runs on MicroPython and CPython.
"""

import errno

from protocol import mqtt_packets as mp

from .mqtt import _MAX_PACKETS
from .mqtt_tls import check_tls, tcp_socket, wrap_tls


def check_args(client_id, keepalive_s, user, password, will, max_inflight, tls):
    """``ValueError`` naming the first bad argument of ``MQTTClient``."""
    mp.encode_connect(client_id, keepalive_s, False, user, password, will)  # it names the bad one
    if not 1 <= max_inflight <= 1000:
        raise ValueError("max_inflight must be 1..1000")
    check_tls(tls)


def _open(c):
    sock = (c.socket_factory or tcp_socket)(c.host, c.port, c.timeout_ms / 1000)
    if c.tls is not None:
        sock = wrap_tls(sock, c.tls, c.host)
    c._sock = sock
    c._reader = mp.PacketReader(c.max_packet_bytes)
    c._acks = {}
    c._ping_out = False
    c._last_rx = c._last_tx = c.clock.ticks_ms()


def connect(c, clean_session, refused):
    """``MQTTClient.connect`` for client ``c``; ``refused``: the ``MQTTRefused`` class."""
    c.close()
    _open(c)
    try:
        c._send(mp.encode_connect(c.client_id, c.keepalive_s, clean_session, c.user, c._password, c.will))
        p = _wait_for(c, mp.CONNACK, 0)
        if p.return_code:
            raise refused(p.return_code)
        c.counters["connects"] += 1
        present = p.session_present and not clean_session
        if present:
            for item in c._inflight:
                pkt = item[1]
                pkt[0] |= 0x08  # DUP (§3.3.1.1): the broker may have had it already
                c._send(pkt)
                c.counters["resent"] += 1
        else:
            for item in c._inflight:
                q = mp.decode(item[1], len(item[1]))
                c._requeued.append((q.topic, q.payload, q.retain))
            c._inflight = []
            for topic_filter, qos in list(c._subs):
                subscribe(c, topic_filter, qos)
        return present
    except BaseException:
        c.close()
        raise


def _wait_for(c, kind, packet_id):
    # Wait ≤ timeout_ms for a CONNACK/SUBACK, handling whatever else arrives meanwhile.
    clock = c.clock
    deadline, slices = c._waits()
    for _ in range(slices):
        left = clock.ticks_diff(deadline, clock.ticks_ms())
        if left <= 0:
            break
        p = c._receive(min(left, 100))
        n = 0
        while p is not None:
            if kind == mp.CONNACK:
                if p.kind == mp.CONNACK:
                    return p
                c._fail(mp.MQTTProtocolError("packet type %d before CONNACK (§3.2)" % p.kind))
            c._handle(p)
            if packet_id in c._acks:
                return c._acks.pop(packet_id)
            n += 1
            p = c._receive(0) if n < _MAX_PACKETS else None
    c._fail(OSError(errno.ETIMEDOUT, "MQTT: no %s within %d ms"
                    % ("CONNACK" if kind == mp.CONNACK else "SUBACK", c.timeout_ms)))


def subscribe(c, topic_filter, qos):
    """SUBSCRIBE one filter and wait for its SUBACK; returns the granted QoS, ``OSError(EACCES)``
    for a refusal."""
    mp.check_topic_filter(topic_filter)  # ValueError for a bad filter
    pid = c._next_pid()
    c._send(mp.encode_subscribe(pid, [(topic_filter, qos)]))
    granted = _wait_for(c, mp.SUBACK, pid)
    if granted == mp.SUBACK_FAILURE:
        raise OSError(errno.EACCES, "MQTT: subscription to %r refused" % topic_filter)
    return granted
