"""The connection half of the node's MQTT client (``app.mqtt.MQTTClient``, whose constructor,
``connect`` and ``subscribe`` call these): the constructor's state and argument checks, TCP
and TLS (``mqtt_tls``), CONNECT and CONNACK with the persistent session's resend or requeue,
SUBSCRIBE and SUBACK, and the check of a topic to publish to (``check_topic``). The link
loads it for a connection and releases it, with ``mqtt_tls``, once connected, so a node
holds none of it while it samples, logs and sends (heap: docs/mqtt-link.md "Memory"). The
behaviour is the client's, documented in ``app/mqtt.py``. Runs on MicroPython and CPython.
"""

import errno

from protocol import mqtt_packets as mp

from . import mqtt_io as io
from .mqtt_tls import check_tls, tcp_socket, wrap_tls

_MAX_PACKETS = 64  # packets handled per wait slice, as MQTTClient.poll() (app/mqtt.py)


class MQTTRefused(OSError):
    """CONNACK refused the connection; ``return_code`` 1..5 (MQTT 3.1.1 §3.2.2.3). Defined
    here, with the connection (the client's module holds only what every wake needs)."""

    def __init__(self, return_code):
        super().__init__(errno.ECONNREFUSED, "MQTT connection refused: %s" % mp.CONNACK_CODES[return_code])
        self.return_code = return_code


def init(c, client_id, host, port, clock, user=None, password=None, keepalive_s=60, tls=None,
         socket_factory=None, max_inflight=8, will=None, timeout_ms=5000, max_packet_bytes=4096,
         on_message=None):
    """``MQTTClient.__init__`` (the arguments are documented there): ``ValueError`` naming the
    first bad one."""
    mp.encode_connect(client_id, keepalive_s, False, user, password, will)  # it names the bad one
    if not 1 <= max_inflight <= 1000:
        raise ValueError("max_inflight must be 1..1000")
    if not 2 <= max_packet_bytes <= mp.MAX_REMAINING_LENGTH:
        raise ValueError("max_packet_bytes must be 2..%d" % mp.MAX_REMAINING_LENGTH)
    check_tls(tls)
    c.client_id = client_id
    c.host = host
    c.port = port
    c.clock = clock
    c.user = user
    c._password = password
    c.keepalive_s = keepalive_s
    c.will = will
    c.tls = tls
    c.socket_factory = socket_factory  # None: mqtt_tls.tcp_socket
    c.max_inflight = max_inflight
    c.timeout_ms = timeout_ms
    c.max_packet_bytes = max_packet_bytes
    c.on_message = on_message
    c._sock = c._topic = None  # _topic: the last topic published to, checked
    c._rx = b""  # received bytes not yet handled (a packet, the start of one)
    c._inflight = []  # [packet_id, encoded PUBLISH (a view), its bytearray], oldest first
    c._spare = []  # PUBLISH buffers to reuse (``lend``)
    c._requeued = []  # (topic, payload, retain) lost with a session
    c._subs = []  # [topic_filter, qos] to renew when the session is lost
    c._pid = 0
    c._acks = {}  # SUBACK packet id -> granted code
    c._ping_out = False
    c._last_rx = c._last_tx = 0
    c.counters = {"connects": 0, "published": 0, "acked": 0, "resent": 0, "received": 0, "pings": 0,
                  "dead_links": 0}


def check_topic(c, topic):
    """``ValueError`` unless ``topic`` is a topic ``c`` may publish to; once checked, ``c``'s
    publishes there do not check it again (nor load ``mqtt_packets`` to)."""
    mp.encode_publish(topic, b"", 1, 1)
    c._topic = topic


def _open(c):
    sock = (c.socket_factory or tcp_socket)(c.host, c.port, c.timeout_ms / 1000)
    if c.tls is not None:
        sock = wrap_tls(sock, c.tls, c.host)
    c._sock = sock
    c._rx = b""
    c._acks = {}
    c._ping_out = False
    c._last_rx = c._last_tx = c.clock.ticks_ms()


def connect(c, clean_session):
    """``MQTTClient.connect`` for client ``c``."""
    c.close()
    _open(c)
    try:
        io.send(c, mp.encode_connect(c.client_id, c.keepalive_s, clean_session, c.user, c._password, c.will))
        p = _wait_for(c, mp.CONNACK, 0)
        if p.return_code:
            raise MQTTRefused(p.return_code)
        c.counters["connects"] += 1
        present = p.session_present and not clean_session
        if present:
            for item in c._inflight:
                pkt = item[1]
                pkt[0] |= 0x08  # DUP (§3.3.1.1): the broker may have had it already
                io.send(c, pkt)
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
    deadline = clock.ticks_add(clock.ticks_ms(), c.timeout_ms)
    for _ in range(c.timeout_ms // 100 + 1):  # waits of ≤ 100 ms: bounded on any clock
        left = clock.ticks_diff(deadline, clock.ticks_ms())
        if left <= 0:
            break
        p = io.receive(c, min(left, 100))
        n = 0
        while p is not None:
            if kind == mp.CONNACK:
                if p.kind == mp.CONNACK:
                    return p
                io.fail(c, mp.MQTTProtocolError("packet type %d before CONNACK (§3.2)" % p.kind))
            if p.kind == mp.SUBACK:
                c._acks[p.packet_id] = p.granted[0]
            else:
                io.handle(c, p)
            if packet_id in c._acks:
                return c._acks.pop(packet_id)
            n += 1
            p = io.receive(c, 0) if n < _MAX_PACKETS else None
    io.fail(c, OSError(errno.ETIMEDOUT, "MQTT: no %s within %d ms"
                    % ("CONNACK" if kind == mp.CONNACK else "SUBACK", c.timeout_ms)))


def subscribe_kept(c, topic_filter, qos):
    """``MQTTClient.subscribe``: ``subscribe``, and the filter kept to renew when a session is lost."""
    if qos not in (0, 1):
        raise ValueError("qos must be 0 or 1, got %r" % (qos,))
    granted = subscribe(c, topic_filter, qos)  # it checks the filter first
    for item in c._subs:
        if item[0] == topic_filter:
            item[1] = qos
            break
    else:
        c._subs.append([topic_filter, qos])
    return granted


def subscribe(c, topic_filter, qos):
    """SUBSCRIBE one filter and wait for its SUBACK; returns the granted QoS, ``OSError(EACCES)``
    for a refusal."""
    mp.check_topic_filter(topic_filter)  # ValueError for a bad filter
    pid = io.next_pid(c)
    io.send(c, mp.encode_subscribe(pid, [(topic_filter, qos)]))
    granted = _wait_for(c, mp.SUBACK, pid)
    if granted == mp.SUBACK_FAILURE:
        raise OSError(errno.EACCES, "MQTT: subscription to %r refused" % topic_filter)
    return granted
