"""``MQTTLink``: the connection half of ``gateway.forward.mqtt.MQTTForwarder`` (a mixin).

``gateway/forward/mqtt.py`` holds the forwarding (the thread's loop, the in-flight window,
taking rows, publishing, PUBACK -> ``outbox.ack``, a clean stop); this module holds the link
under it: the TLS context, the paho client factory (persistent session, last will, window
limits), ``_connect`` (TCP + TLS + CONNACK, each failure counted by reason), the network
step (``select`` on the socket and the wake-up pair, then paho's ``loop_read``/
``loop_write``/``loop_misc``), the PUBACK timeout (``_puback_overdue``), the backoff sleep,
and paho's callbacks (which run in the forwarder's thread, inside ``_step``).

The mixin uses the forwarder's attributes (``up``, ``protocol``, ``connect_timeout_s``,
``status_topic``, ``site_id``, ``gateway_id``, ``_password``, ``_stopping``, ``_wake_r``,
``puback_timeout_s``, ``_lock``, ``_counts``, the per-connection state of ``_reset_link``) and
its ``_count``, ``_set_status`` and ``_reset_link``.
"""

import logging
import select
import socket
import ssl
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway import upstream


def set_no_delay(client):
    """Turn Nagle's algorithm off on a connected paho client's socket: a PUBACK or a small
    QoS 1 publish goes out at once instead of waiting up to ~40 ms for the peer's delayed
    ACK (a node waiting for its ack stays awake, on battery, that much longer)."""
    sock = client.socket()
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (a unix socket): nothing to turn off
            pass


def connect_failure(exc):
    """``(kind, detail)`` of an ``OSError`` raised while connecting to a broker (TCP, then
    the TLS handshake): ``tls`` if the handshake was refused (``ssl.SSLError``: the broker's
    certificate not trusted by ``ca_file``, expired, or not yet valid by the Pi's clock; a
    protocol or cipher mismatch), ``network`` otherwise, including a peer that hung up
    mid-handshake (a load balancer, a dying broker, a reset: no certificate problem). The
    one place that tells them apart: the forwarder and the MQTT sources count
    ``connect_failures.<kind>`` with it, and ``gateway.agent_links`` alarms on ``tls``."""
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
        return "network", "connection closed during the TLS handshake (%s)" % exc
    if isinstance(exc, ssl.SSLError):
        return "tls", "%s (check ca_file and the broker's certificate)" % exc
    return "network", "%s" % (getattr(exc, "strerror", None) or exc)


log = logging.getLogger("civicedge.gateway.forward.mqtt")  # one logger for the forwarder

MQTT5, MQTT311 = "5", "3.1.1"
SESSION_EXPIRY_S = 7 * 86400  # the broker keeps our session through a week's outage
_AUTH_CODES = (134, 135, 140)  # Bad user name or password, Not authorized, Bad auth method


class MQTTLink:
    """The connection methods of ``MQTTForwarder`` (see the module docstring)."""

    # -- waiting -------------------------------------------------------------------------------
    def _sleep(self, seconds):
        with self._lock:
            self._counts["backoff_waits"] += 1
        self._set_status(False, "waiting %.1f s before reconnecting to %s:%d"
                         % (seconds, self.up.mqtt.host, self.up.mqtt.port))
        end = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            if select.select([self._wake_r], [], [], left)[0]:
                self._drain_wake()

    def _drain_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _tls_context(self):
        m = self.up.mqtt
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=m.ca_file)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.check_hostname, ctx.verify_mode = True, ssl.CERT_REQUIRED
            if m.client_cert_file:
                ctx.load_cert_chain(m.client_cert_file, m.client_key_file)
        except (OSError, ssl.SSLError) as e:
            raise ValueError("upstream.mqtt: the TLS files do not load (ca_file %r, "
                             "client_cert_file %r): %s" % (m.ca_file, m.client_cert_file, e))
        return ctx

    def _new_client(self):
        m = self.up.mqtt
        v2 = mqtt.CallbackAPIVersion.VERSION2
        if self.protocol == MQTT5:
            c = mqtt.Client(v2, client_id=m.client_id, protocol=mqtt.MQTTv5,
                            reconnect_on_failure=False)
        else:
            c = mqtt.Client(v2, client_id=m.client_id, clean_session=False,
                            protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        c.username_pw_set(m.username, self._password)
        if m.tls:
            c.tls_set_context(self._tls_context())
        c.will_set(self.status_topic, upstream.status_payload(
            upstream.OFFLINE, self.site_id, self.gateway_id), qos=1, retain=True)
        c.max_inflight_messages_set(self.up.max_inflight + 2)  # + the status messages
        c.max_queued_messages_set(self.up.max_inflight + 4)
        c.connect_timeout = self.connect_timeout_s
        c.on_connect, c.on_disconnect = self._on_connect, self._on_disconnect
        c.on_publish = self._on_publish
        return c

    def _fail(self, kind, detail):
        self._count("connect_failures." + kind)
        where = "%s:%d" % (self.up.mqtt.host, self.up.mqtt.port)
        msg = "connecting to %s failed (%s): %s" % (where, kind, detail)
        self._set_status(False, "disconnected", msg)
        log.warning("%s", msg)

    def _connect(self):
        m = self.up.mqtt
        self._reset_link()
        self._set_status(False, "connecting to %s:%d" % (m.host, m.port))
        try:
            client = self._new_client()
        except ValueError as e:  # TLS files gone or broken since start
            self._fail("tls", e)
            return None
        keepalive = max(5, m.keepalive_s * 3 // 4)
        try:
            if self.protocol == MQTT5:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = SESSION_EXPIRY_S
                client.connect(m.host, m.port, keepalive, clean_start=False, properties=props)
            else:
                client.connect(m.host, m.port, keepalive)
        except OSError as e:  # ssl.SSLError is one
            self._fail(*connect_failure(e))
            return None
        deadline = time.monotonic() + self.connect_timeout_s
        while self._connack is None and client.socket() is not None \
                and not self._stopping.is_set() and time.monotonic() < deadline:
            self._step(client, deadline - time.monotonic())
        rc = self._connack
        if rc is None:
            self._fail("network", "no CONNACK within %.0f s" % self.connect_timeout_s
                       if client.socket() is not None else "the broker closed the connection")
        elif rc.is_failure:
            kind = "auth" if rc.value in _AUTH_CODES else "refused"
            hint = " (check upstream.mqtt.username and its password file)" if kind == "auth" \
                else " (an MQTT 3.1.1-only broker needs protocol 3.1.1)" if rc.value in (1, 132) \
                else ""
            self._fail(kind, "the broker refused: %s%s" % (rc, hint))
        elif self._stopping.is_set():
            pass
        else:
            return client
        self._close(client)
        return None

    def _close(self, client):
        sock = client.socket()
        if sock is not None:
            try:
                sock.close()  # abrupt: the broker publishes our will
            except OSError:
                pass

    def _step(self, client, timeout):
        """One network step: wait for the socket or a wake-up at most ``timeout`` s, then let
        paho read, write and keep the link alive. Callbacks run here."""
        sock = client.socket()
        if sock is None:
            return
        if getattr(sock, "pending", None) and sock.pending():
            timeout = 0.0  # TLS holds decrypted bytes select cannot see
        want = [sock] if client.want_write() else []
        try:
            rd, wr, _ = select.select([sock, self._wake_r], want, [], max(0.0, timeout))
        except (OSError, ValueError):  # the socket was closed under us
            self._broken = self._broken or "socket closed"
            return
        if self._wake_r in rd:
            self._drain_wake()
        if sock in rd or (getattr(sock, "pending", None) and sock.pending()):
            client.loop_read()
        if client.socket() is not None and (sock in wr or client.want_write()):
            client.loop_write()
        if client.socket() is not None:
            client.loop_misc()

    # -- the PUBACK timeout ---------------------------------------------------------------------
    def _await_puback(self, mid):
        """Publish ``mid`` (data or status) was handed to paho: it awaits its PUBACK."""
        self._sent_at[mid] = time.monotonic()

    def _got_puback(self, mid):
        """``mid``'s PUBACK came (whatever its reason code): the link moves."""
        if self._sent_at.pop(mid, None) is not None:
            self._last_puback = time.monotonic()

    def _puback_left_s(self):
        """Seconds (<= 0: overdue; infinite: none awaited) until the oldest publish awaiting
        its PUBACK has waited ``puback_timeout_s`` since it was sent or since the last PUBACK,
        whichever came later. A broker PUBACKs in order (MQTT §4.6), so on a slow link with a
        deep window each PUBACK restarts the wait of the next: only a stall times out."""
        if not self._sent_at:
            return float("inf")
        sent = next(iter(self._sent_at.values()))
        return max(sent, self._last_puback) + self.puback_timeout_s - time.monotonic()

    def _puback_overdue(self):
        """True (counted as ``puback_timeouts``; the connection is then dropped and its rows
        released, to go again on the next) when the oldest PUBACK is overdue."""
        if self._puback_left_s() > 0:
            return False
        mid = next(iter(self._sent_at))
        self._count("puback_timeouts")
        self._broken = self._broken or (
            "no PUBACK for message %d within %g s (a stalled broker or a half-open link); "
            "its rows go again on the next connection" % (mid, self.puback_timeout_s))
        return True

    # -- paho callbacks (in this thread) --------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self._connack = reason_code
        set_no_delay(client)
        recv_max = getattr(properties, "ReceiveMaximum", None) if properties else None
        if recv_max:  # the broker's limit (Mosquitto: max_inflight_messages, 20 by default)
            self._window = max(1, min(self.up.max_inflight, int(recv_max)))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._broken = self._broken or "connection lost (%s)" % (reason_code,)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._pubacks.append((mid, reason_code))

