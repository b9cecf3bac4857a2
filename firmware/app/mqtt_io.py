"""The every-wake half of the node's MQTT client (``app.mqtt.MQTTClient``, whose ``poll``,
``publish`` and ``ping`` call these): the socket's reads and writes, the packets a connected
client handles (PUBACK, PUBLISH, PINGRESP), the keep-alive, and QoS 1 PUBLISH built in
place. The behaviour is the client's, documented in ``app/mqtt.py``.

Heap: the client object holds only state (its class is small), so the node's link can release
this module and ``protocol.mqtt_wire`` after each exchange; they are loaded again by the next
call that needs them, and a node does not hold them while it samples, logs and packs
(docs/mqtt-link.md "Memory"). Runs on MicroPython and CPython.
"""

import errno
import select

from protocol.mqtt_wire import MQTTProtocolError, decode_packet, encode_remaining_length, header, take

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_READ_CHUNK = const(512)  # bytes per socket read: small for the ESP32's heap
_MAX_READS = const(16)  # socket reads to complete one packet before giving up for now
_MAX_PACKETS = const(64)  # packets handled per poll() before returning to the caller
_PUBLISH = const(3)  # packet types, MQTT 3.1.1 §2.2.1
_PUBACK = const(4)
_PINGRESP = const(13)


def fail(c, exc):
    """Close ``c``'s connection and raise ``exc``."""
    c.close()
    raise exc


def send(c, data):
    """``sendall`` (plain and TLS sockets have it on both runtimes; it blocks ≤ the timeout);
    ``OSError`` (ENOTCONN when not connected), the socket then closed."""
    if c._sock is None:
        raise OSError(errno.ENOTCONN, "MQTT not connected")
    try:
        c._sock.sendall(data)
    except OSError:
        c.close()
        raise
    c._last_tx = c.clock.ticks_ms()


def _readable(sock, timeout_ms):
    pending = getattr(sock, "pending", None)  # CPython's SSLSocket buffers records
    if pending is not None and pending():
        return True
    p = select.poll()
    p.register(sock, select.POLLIN)
    return bool(p.poll(max(0, int(timeout_ms))))


def _next(c):
    got = take(c._rx, c.max_packet_bytes)
    if got is None:
        return None
    c._rx = got[3]
    return decode_packet(got[0], got[1], got[2])


def receive(c, timeout_ms):
    """The next complete packet: from what ``c`` holds, else from the socket within
    ``timeout_ms``; None when none. Packets behind it stay held for the next call, so a
    CONNACK refusal is returned before the broker's close is read. ``OSError`` or
    ``MQTTProtocolError``, the socket then closed."""
    try:
        p = _next(c)
        for i in range(_MAX_READS):
            if p is not None or not _readable(c._sock, timeout_ms if i == 0 else 0):
                break
            data = c._sock.recv(_READ_CHUNK)
            if data is None:  # a TLS record not complete yet
                continue
            if not data:
                raise OSError(errno.ECONNRESET, "MQTT connection closed by the broker")
            c._last_rx = c.clock.ticks_ms()
            c._rx += data
            header(c._rx, c.max_packet_bytes)  # the length limit, before the body arrives
            p = _next(c)
    except (OSError, MQTTProtocolError):
        c.close()
        raise
    return p


def handle(c, p):
    """A connected client's packets: PUBACK, PUBLISH (QoS 0 or 1), PINGRESP. CONNACK and
    SUBACK are the connection's (``mqtt_connect``); anything else is refused."""
    kind = p.kind
    if kind == _PUBACK:
        for i, item in enumerate(c._inflight):
            if item[0] == p.packet_id:
                del c._inflight[i]
                c.counters["acked"] += 1
                if not c._spare:
                    c._spare.append(item[2])
                break
    elif kind == _PUBLISH and p.qos < 2:
        c.counters["received"] += 1
        if c.on_message is not None:
            try:
                c.on_message(p.topic, p.payload)
            except BaseException:
                c.close()  # unacked: the broker delivers it again after reconnect
                raise
        if p.qos:  # PUBACK, §3.4
            send(c, bytes((0x40, 2, p.packet_id >> 8, p.packet_id & 0xFF)))
    elif kind == _PINGRESP:
        c._ping_out = False
    else:  # QoS 2 flows, UNSUBACK, a stray CONNACK or SUBACK: nothing we asked for
        fail(c, MQTTProtocolError("unexpected packet type %d" % kind))


def _keepalive(c, check_dead):
    # Returns the ms until the keep-alive next needs attention (a ping or the verdict).
    if not c.keepalive_s or c._sock is None:
        return 0x3FFFFFFF  # largest small int on a 32-bit port
    clock = c.clock
    now = clock.ticks_ms()
    k = c.keepalive_s * 1000
    quiet_rx = clock.ticks_diff(now, c._last_rx)
    if check_dead and quiet_rx >= k * 3 // 2:
        c.counters["dead_links"] += 1
        fail(c, OSError(errno.ETIMEDOUT, "MQTT: nothing from the broker for 1.5 x keepalive"))
    if not c._ping_out:
        quiet = max(quiet_rx, clock.ticks_diff(now, c._last_tx))
        if quiet < k:
            return k - quiet
        ping(c)
    return max(0, k * 3 // 2 - quiet_rx)


def poll(c, timeout_ms):
    """``MQTTClient.poll``."""
    if c._sock is None:
        raise OSError(errno.ENOTCONN, "MQTT not connected")
    p = receive(c, min(timeout_ms, _keepalive(c, False)))
    n = 0
    while p is not None and n < _MAX_PACKETS:
        handle(c, p)
        n += 1
        p = receive(c, 0) if n < _MAX_PACKETS else None
    _keepalive(c, True)
    return n


def ping(c):
    """``MQTTClient.ping``."""
    send(c, b"\xc0\x00")  # §3.12
    c._ping_out = True
    c.counters["pings"] += 1


def next_pid(c):
    """A packet id not in flight nor awaiting a SUBACK; ``OSError(ENOBUFS)`` if none."""
    used = [item[0] for item in c._inflight] + list(c._acks)
    for _ in range(len(used) + 1):
        c._pid = c._pid % 65535 + 1
        if c._pid not in used:
            return c._pid
    raise OSError(errno.ENOBUFS, "MQTT: no free packet id")


def publish(c, topic, payload, qos, retain):
    """``MQTTClient.publish``."""
    if qos != 1 or topic != c._topic:
        from protocol.mqtt_packets import encode_publish

        pkt = encode_publish(topic, b"" if qos else payload, qos, 1, False, retain)  # it checks them
        if not qos:
            send(c, pkt)
            return 0
        c._topic = topic
    if len(c._inflight) >= c.max_inflight:
        clock = c.clock
        deadline = clock.ticks_add(clock.ticks_ms(), c.timeout_ms)
        for _ in range(c.timeout_ms // 100 + 1):  # bounded even on a clock nobody advances
            left = clock.ticks_diff(deadline, clock.ticks_ms())
            if len(c._inflight) < c.max_inflight or left <= 0:
                break
            poll(c, min(left, 100))
        if len(c._inflight) >= c.max_inflight:
            raise OSError(errno.ENOBUFS, "MQTT: %d publishes unacknowledged" % len(c._inflight))
    pid = next_pid(c)
    item = _packet(c, topic, payload, pid, retain)
    send(c, item[1])
    c._inflight.append(item)
    c.counters["published"] += 1
    return pid


def _packet(c, topic, payload, pid, retain):
    # [pid, the QoS 1 PUBLISH (a view), its buffer]: encode_publish's bytes (§3.3), built in
    # the lent buffer when it fits (around the payload when ``lend`` said it is there), else in
    # a new one
    t = topic.encode()
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(t) + 4 + len(payload)  # topic (2 + its bytes), packet id, payload
    rl = encode_remaining_length(n)
    j = 1 + len(rl)
    n += j
    at, c._lent_at = c._lent_at, 0  # lend(buf, at): the payload is already in buf from ``at``
    s = at - (n - len(payload))  # where the packet starts then
    if c._spare and (s >= 0 and len(c._spare[-1]) >= at + len(payload) if at else len(c._spare[-1]) >= n):
        buf = c._spare.pop()
    else:
        buf, at = bytearray(n), 0
    if not at:  # copied in after the header
        s = 0
        buf[n - len(payload):n] = payload
    buf[s] = 0x33 if retain else 0x32  # PUBLISH, QoS 1
    j += s
    buf[s + 1:j] = rl
    buf[j:j + 2] = bytes((len(t) >> 8, len(t) & 0xFF))
    j += 2 + len(t)
    buf[j - len(t):j] = t
    buf[j:j + 2] = bytes((pid >> 8, pid & 0xFF))
    return [pid, memoryview(buf)[s:s + n], buf]
