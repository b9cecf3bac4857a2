"""The MQTT link: node frames over WiFi to the site gateway's broker (MQTT 3.1.1, QoS 1).

Theory of operation
-------------------
The same frames and authenticated acks as the serial link (``FramedLink``); only the carrier
differs. Topics, per device (the broker's ACL pins each node to its own, docs/mqtt-link.md):

- node → gateway ``civicedge/node/{device_id}/up``: one data frame per message, QoS 1;
- gateway → node ``civicedge/node/{device_id}/ack``: the gateway's ack frame, QoS 1.

``open()`` brings WiFi up (``network.WLAN(STA_IF)``, SSID from the config, passphrase from
the secrets; the wait is bounded by ``link.wifi.connect_timeout_ms`` on the injected clock),
then connects a fresh ``app.mqtt.MQTTClient`` (client id and user name = the device id
unless configured, password from the secrets, TLS with the CA file on the flash whenever
``link.mqtt.tls`` — verification is never off and a TLS failure is never retried in
plaintext; plain MQTT only where config.py allows it, a loopback broker), with
``clean_session=False`` so the broker keeps the node's ack subscription and queues acks
that arrive while the node sleeps; then it subscribes to the ack topic (every time: a
subscription made again replaces the old one without losing queued messages, MQTT 3.1.1
§3.8.4, and a session whose subscription once failed is repaired).

When WiFi or the broker is not there, ``open()`` returns False, counts why (``wifi_fails``,
``mqtt_fails``, ``tls_fails``, ``mqtt_refused``) and backs off: 1, 2, 4 … 120 s
(RELIABILITY.md), each delay jittered to 50–100 %. A deep-sleeping node loses RAM, so the
backoff is two integers in ``counters`` (``backoff_s``, ``retry_at_s`` on the RTC's wall
clock, which keeps counting through deep sleep), carried by ``Node.persist``. An attempt
before ``retry_at_s`` is skipped (``backoff_skips``); a ``retry_at_s`` more than 120 s
ahead (the RTC was set backwards) is ignored. At most one attempt per wake cycle.

``exchange`` publishes the frame and polls until an ack that verifies with the device key,
names this boot epoch and covers this frame — or ``ack_timeout_ms``. Acks arrive through the
client's ``on_message`` into a small inbox: an ack queued by the broker while the node slept
(the gateway answered after the node gave up waiting) is found there and trims the log
without sending the frame again. PUBACK never trims anything: it only says the broker has
the message (docs/mqtt-link.md). A lost connection mid-exchange raises ``OSError``
(``FramedLink`` counts it; the records stay on flash).

Between cycles the power mode decides (``power.sleep``). A deep-sleeping node loses its RAM,
so after each cycle's delivery the link sends DISCONNECT and closes; the persistent session
keeps the subscription and queues the acks until the next wake, so nothing is lost by
leaving. A light-sleeping (mains) node keeps the session open instead: a TLS handshake every
cycle costs CPU, time, energy and broker load for nothing. At the next cycle the link brings
WiFi back if the sleep lost it, then ``poll(0)`` takes in what arrived meanwhile (acks go to
the inbox as before) and notices a connection the broker closed; a closed one is made again
by ``open()`` with the same backoff rules. The keep-alive it announces then covers the
sleep (``session_keepalive_s``): Mosquitto drops a client it hears nothing from for
1.5 x keepalive (MQTT 3.1.1 §3.1.2.10), and a sleeping node sends nothing, so a PINGREQ at
the start of each cycle would come too late whenever the interval is over 1.5 x the
configured keepalive (120 s against 60 s in the classroom profile). The node therefore
announces max(keepalive_s, 2 x interval_s) and sends at least one packet every cycle (its
frame, else a PINGREQ: a node logging 15-minute means publishes nothing for 14 cycles), so
the broker tolerates 3 intervals of silence against the 1 it sees: a late or missed cycle
does not cost the session. A frame the broker has not PUBACKed by the end of the ack wait
means a connection nobody answers on (half-open after WiFi trouble): the link closes it, and
the next cycle reconnects rather than waiting 1.5 x that long keep-alive for the verdict.
WiFi is left to the power mode (deep sleep turns the radio off).

Heap: the connection step (WiFi, backoff, the client and its connection, ``mqtt_open.py``) and
the client's connection half are loaded by ``open()`` and released after it; the frames'
protocol stack (``FramedLink`` and what it imports) by the first delivery. So a node never
holds both (docs/mqtt-link.md "Memory"). Runs on MicroPython;
imports on CPython (``network`` only when opening), where ``wlan=`` can supply a station.
"""

import errno
import struct
import sys

from protocol.mqtt_wire import MQTTProtocolError

from drivers import release

_APP = __name__[:__name__.rfind("links.")]  # "app." (or "firmware.app." on CPython)
# The modules only the connection step needs: the link's (WiFi, backoff, the client's
# connect and subscription), the client's connection half, TLS, and the packets only a
# connection sends: loaded by open() and released after it (heap: docs/mqtt-link.md "Memory").
_CONNECTION = (_APP + "links.mqtt_open", _APP + "mqtt_connect", _APP + "mqtt_tls", "protocol.mqtt_packets")
BACKOFF_MAX_S = 120  # RELIABILITY.md: jittered backoff 1 -> 120 s
_POLL_MS = 100  # one wait for an ack or for WiFi, on the injected clock
_FEED_MS = 1000  # feed the watchdog this often while waiting
_INBOX = 8  # acks kept until an exchange looks at them
_KEEPALIVE_MAX_S = 65535  # CONNECT's keep-alive is 16 bits (MQTT 3.1.1 §3.1.2.10)
# Heap: frames of up to FRAME_ROOM bytes are built in a buffer made by the first delivery
# (``_framer``, after the connection and its TLS handshake), and published from a second one
# made when the link is first up (the PUBLISH packet: the frame, the topic and 5-9 header bytes).
FRAME_ROOM = 1024
_PUBLISH_ROOM = FRAME_ROOM + 80


def up_topic(device_id):
    return "civicedge/node/%s/up" % device_id


def ack_topic(device_id):
    return "civicedge/node/%s/ack" % device_id


def next_backoff_s(previous_s):
    """The backoff after another failure: 1, 2, 4 … capped at ``BACKOFF_MAX_S`` seconds."""
    return 1 if previous_s <= 0 else min(BACKOFF_MAX_S, previous_s * 2)


def jittered_s(delay_s, r):
    """``delay_s`` scaled to 50–100 % by ``r`` (0..255, random): whole seconds."""
    half = delay_s // 2
    return half + (delay_s - half) * r // 255


def session_keepalive_s(keepalive_s, interval_s, light_sleep):
    """The keep-alive (s) a node announces: the configured one, or on a light-sleep node,
    which stays connected through its sleep, at least 2 x ``interval_s`` (capped at 65535),
    so Mosquitto's 1.5 x keepalive limit is 3 intervals (see the module docstring)."""
    if not light_sleep:
        return keepalive_s
    # Not a PINGREQ at the start of each cycle instead: Mosquitto counts the silence from the
    # node's last packet, which is a whole sleep earlier, so with keepalive 60 s and a 120 s
    # interval it would have dropped us (> 90 s) before that ping was sent.
    return max(keepalive_s, min(_KEEPALIVE_MAX_S, interval_s * 2))


def first_seq(data):
    """The first seq of a data frame's records (protocol/frame.py layout)."""
    return struct.unpack_from(">I", data, 3 + data[2] + 4)[0]


def _release_connection():
    for name in _CONNECTION:
        if name in sys.modules:  # (MicroPython: delattr of a missing name is a KeyError)
            release(name)


def _framer(link):
    # The FramedLink that builds the frames and sends them through ``link.exchange``, made by
    # the first delivery: the protocol stack it loads (frame, SenML, CBOR, HMAC) is not in
    # the heap while the link connects (heap: docs/mqtt-link.md "Memory").
    from .framed import FramedLink

    class Framer(FramedLink):
        def exchange(self, data, boot_epoch, last_seq):
            return link.exchange(data, boot_epoch, last_seq)

    f = Framer(link.clock, link.device_id, link._key, ack_timeout_ms=link.ack_timeout_ms, feed=link.feed)
    f.counters = link.counters  # one set of counters: the link's
    f._frame_buffer(FRAME_ROOM)
    return f


class MQTTLink:
    """``FramedLink``'s delivery (through ``_framer``) over MQTT; see the module docstring."""

    def __init__(self, cfg, secrets, clock, feed=None, wlan=None, root=None):
        link = cfg["link"]
        m = link["mqtt"]
        self.clock = clock
        self.device_id = cfg["device_id"]
        self._key = secrets.device_key
        self.ack_timeout_ms = m["ack_timeout_ms"]
        self.feed = feed or (lambda: None)
        self.counters = {"frames_sent": 0, "records_acked": 0, "ack_timeouts": 0, "bad_acks": 0,
                         "link_errors": 0}  # FramedLink's
        self._framed = None
        self.wifi = link["wifi"]
        self.mqtt = m
        self._wifi_password = secrets.wifi_password
        self._password = secrets.mqtt_password
        self.up_topic = up_topic(self.device_id)
        self.ack_topic = ack_topic(self.device_id)
        self._tls = None
        if m["tls"]:
            ca = m["ca_file"]
            if root and not ca.startswith("/"):
                ca = root.rstrip("/") + "/" + ca
            self._tls = {"cafile": ca, "server_hostname": m["host"]}
        self._wlan = wlan
        # a light-sleep (mains) node keeps its session between cycles; a deep-sleep one cannot
        self.stay_connected = cfg["power"]["sleep"] == "light"
        self.keepalive_s = session_keepalive_s(m["keepalive_s"], cfg["interval_s"], self.stay_connected)
        self._client = None
        self._publish_buf = None  # lent to each client it makes
        self._inbox = []
        self._failed_in_cycle = False
        self.counters.update(wifi_fails=0, mqtt_fails=0, tls_fails=0, mqtt_refused=0, backoff_skips=0,
                             stale_acks=0, connects=0, backoff_s=0, retry_at_s=0)

    def __repr__(self):  # never the passwords
        return "<MQTTLink %s %s:%d>" % (self.device_id, self.mqtt["host"], self.mqtt["port"])

    # ---- connection ----
    def is_connected(self):
        c = self._client
        return c is not None and c.is_connected()

    def _on_message(self, topic, payload):
        if topic == self.ack_topic:
            if len(self._inbox) >= _INBOX:
                self._inbox.pop(0)
                self.counters["stale_acks"] += 1
            self._inbox.append(payload)

    def open(self):
        """WiFi, then the broker and the ack subscription; True when connected. False (counted,
        backoff set) when WiFi or the broker is not there or refuses us; never raises for that.
        The connection step's code (``_CONNECTION``) is loaded for this and released after it."""
        try:
            from .mqtt_open import open_link

            return open_link(self)
        finally:
            _release_connection()

    def close(self):
        """DISCONNECT (best effort) and close; the broker keeps the session."""
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()

    # ---- delivery ----
    def _key_for(self, device_id):
        return self._key if device_id == self.device_id else None

    def _take_ack(self, boot_epoch, first, last_seq):
        # The seq an ack in the inbox lets us trim through, or None. Authentic acks for records
        # already trimmed (another epoch, or below this frame) are stale, not forged.
        from protocol import frame

        while self._inbox:
            buf = self._inbox.pop(0)
            try:
                ack = frame.decode_frame(buf, self._key_for, expect=frame.TYPE_ACK)
            except ValueError:
                self.counters["bad_acks"] += 1
                continue
            if ack.boot_epoch != boot_epoch or ack.seq_through < first:
                self.counters["stale_acks"] += 1
            elif ack.seq_through > last_seq:
                self.counters["bad_acks"] += 1  # acks what was never sent: never trim on it
            else:
                return ack.seq_through
        return None

    def exchange(self, data, boot_epoch, last_seq):
        client = self._client
        if client is None or not client.is_connected():
            raise OSError(errno.ENOTCONN, "MQTT link not connected")
        first = first_seq(data)
        acked = self._take_ack(boot_epoch, first, last_seq)  # queued while we slept
        if acked is not None:
            return acked
        clock = self.clock
        try:
            client.publish(self.up_topic, data, qos=1)
            deadline = clock.ticks_add(clock.ticks_ms(), self.ack_timeout_ms)
            fed = clock.ticks_ms()
            for _ in range(self.ack_timeout_ms // _POLL_MS + _INBOX):  # + polls cut short by packets
                left = clock.ticks_diff(deadline, clock.ticks_ms())
                if left <= 0:
                    break
                client.poll(min(left, _POLL_MS))
                acked = self._take_ack(boot_epoch, first, last_seq)
                if acked is not None:
                    return acked
                if clock.ticks_diff(clock.ticks_ms(), fed) >= _FEED_MS:
                    self.feed()
                    fed = clock.ticks_ms()
        except MQTTProtocolError as e:  # the client has closed the socket
            raise OSError(errno.EIO, "MQTT protocol error: %s" % e)
        return None

    def _resume(self):
        # A kept session at the start of a cycle: WiFi back if the light sleep lost it, then
        # what arrived meanwhile into the inbox; a connection the broker closed (restart,
        # keep-alive) or a dead one is closed here, and deliver() reconnects.
        from .mqtt_open import fail, wifi_up

        try:
            if not wifi_up(self):
                fail(self, "wifi_fails")
                return
        finally:
            _release_connection()
        try:
            self._client.poll(0)
        except (OSError, ValueError):  # ValueError: MQTTProtocolError; the client has closed
            self.close()

    def _end_cycle(self, published):
        # A kept session at the end of a cycle (see the module docstring).
        client = self._client
        if client is None or not client.is_connected():
            return
        try:
            if client.inflight_count():  # no PUBACK within the ack wait: nobody answers there
                self.close()
            elif client.counters["published"] == published:
                client.ping()  # nothing sent this cycle: the broker hears from us anyway
        except OSError:
            self.close()

    def deliver(self, log):
        """Send what is pending, reconnecting if needed (at most one attempt per cycle).
        Then a deep-sleep node DISCONNECTs until the next cycle and a light-sleep one keeps
        the session. Returns the records acked."""
        if self.stay_connected and self.is_connected():
            self._resume()
        if not self.is_connected():
            failed, self._failed_in_cycle = self._failed_in_cycle, False
            if failed or not self.open():
                self._failed_in_cycle = False
                return 0
        published = self._client.counters["published"]
        try:
            if self._framed is None:
                self._framed = _framer(self)
            return self._framed.deliver(log)
        finally:
            self._failed_in_cycle = False
            if self.stay_connected:
                self._end_cycle(published)
            else:
                self.close()
