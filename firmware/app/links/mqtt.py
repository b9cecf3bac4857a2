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

Heap: this module keeps only ``deliver`` and what the client calls back. The constructor's
work, the connection step (WiFi, backoff, the client and its connection) and a kept
session's start and end of cycle are ``mqtt_open.py``, loaded for them and released after,
with the client's connection half; ``exchange`` is ``mqtt_exchange.py``, loaded for each
frame and released after it with the client's every-wake half (``app.mqtt_io``,
``protocol.mqtt_wire``); the frames' protocol stack (``FramedLink`` and what it imports) is
loaded by the first delivery. So a node holds little MQTT code while it logs and packs
(docs/mqtt-link.md "Memory"). A deep-sleep node goes further: ``main.py`` leaves its
connecting to ``deliver()`` (``late_open``), which builds the frame first
(``FramedLink.next_frame``), releases the protocol stack, and only then connects, publishes
and waits for the ack (``mqtt_exchange.send``): it holds the stack or the connection, never
both. Its TLS context and its one frame buffer are made with the link, while the heap still
has room in one piece: the SenML pack is encoded in that buffer after room for the frame's
header and the PUBLISH's, the frame sealed around it (``frame_core.seal_data_into``) and the
PUBLISH built around the frame (``MQTTClient.lend(buf, at)``), no copy. The client's code
(``app.mqtt``) is loaded to connect and released with the rest. Its status records are
therefore logged before that wake's connection (``connects`` and the failure counters
count the earlier wakes). A protocol error raised by a reloaded ``mqtt_wire`` is a new
class each load, so it is caught as the ``ValueError`` it is. Runs on MicroPython;
imports on CPython (``network`` only when opening), where ``wlan=`` can supply a station.
"""

import sys

from drivers import release

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_APP = __name__[:__name__.rfind("links.")]  # "app." (or "firmware.app." on CPython)
# The modules loaded on demand (heap: docs/mqtt-link.md "Memory"): the connection step's (the
# link's WiFi, backoff, the client's connect and subscription, the client's connection half,
# TLS, the packets only a connection sends), released after open(), and the client's
# every-wake half with the packets it decodes, the link's exchange and the ack's half of the
# frame code (``protocol.frame_ack_core``), released after each exchange too, so the node does
# not hold them while it logs and packs its frames.
_CONNECTION = ("links.mqtt_open", "mqtt", "mqtt_connect", "mqtt_tls", "links.mqtt_exchange", "mqtt_io")
_PROTOCOL = ("protocol.mqtt_packets", "protocol.mqtt_wire", "protocol.frame_ack_core")
# Their full names, made once: made again at each release, every name of the connection's was a
# string concatenation and a search of the interned strings (18 a mains cycle)
_ON_DEMAND = tuple(_APP + name for name in _CONNECTION) + _PROTOCOL
_OPEN = _ON_DEMAND[0]  # links.mqtt_open
_EXCHANGE = _ON_DEMAND[4]  # links.mqtt_exchange
POLL_MS = const(100)  # one wait for an ack or for WiFi, on the injected clock
FEED_MS = const(1000)  # feed the watchdog this often while waiting
INBOX = const(8)  # acks kept until an exchange looks at them
# Heap: frames of up to FRAME_ROOM bytes are built in one buffer, the pack encoded in place in
# it (``FramedLink._frame_buffer(in_place=True)``), made by the first delivery (``_framer``, after
# the connection; a deep-sleep node's: with the link, ``mqtt_open.init``, with room before the
# frame for the PUBLISH's header). A light-sleep node's PUBLISH is the client's own (none lent:
# 3 KB less heap needed); a deep-sleep node's is built around its frame (``mqtt_exchange.send``),
# docs/mqtt-link.md "Memory".
FRAME_ROOM = const(1280)


def _release_connection():
    for name in _ON_DEMAND:
        if name in sys.modules:  # (MicroPython: delattr of a missing name is a KeyError)
            release(name)


# The pack's modules (``FramedLink`` and the protocol stack it loads), which a deep-sleep node
# releases once its frame is built, before it connects (``_build``)
_PACK = ("links.framed", "protocol.senml_core", "protocol.quantities_core", "protocol.cbor",
         "protocol.frame_core", "protocol.frame_wire", "protocol.auth_core")
MAX_BATCHES = const(8)  # frames a wake sends at the most (FramedLink's max_batches)


def _built(link, log):
    try:
        return _framer(link).next_frame(log)
    finally:
        for name in _PACK:
            release(_APP + name if name[0] == "l" else name)


def _build(link, log):
    # A deep-sleep node's next frame (``FramedLink.next_frame``'s tuple, or None), built before
    # it connects: the framer and the pack's modules are released after it, so the node holds
    # the protocol stack or the connection, never both (heap: docs/mqtt-link.md "Memory").
    # Only the frame's buffer stays, held by the frame's memoryview. Collected from fresh
    # frames (``collect_deep``): without it a stale pointer on the C stack kept them through
    # the connection (measured: the node failed at 160 KB here, where it had run at 149).
    from ..startup import collect_deep

    built = _built(link, log)
    collect_deep()
    return built


def _framer(link):
    # The FramedLink that builds the frames and sends them through ``link.exchange``, made by
    # the first delivery: the protocol stack it loads (frame, SenML, CBOR, HMAC) is not in
    # the heap while the link connects (heap: docs/mqtt-link.md "Memory").
    from .framed import FramedLink

    f = FramedLink(link.clock, link.device_id, link._key, ack_timeout_ms=link.ack_timeout_ms, feed=link.feed)
    f.exchange = link.exchange  # its deliver() calls self.exchange: the link's (no subclass: heap)
    f.counters = link.counters  # one set of counters: the link's
    if link._buf is None:
        f._frame_buffer(FRAME_ROOM, in_place=True)
    else:  # a deep-sleep node's, made with the link (``mqtt_open.init``): in place, after the PUBLISH's header
        f._buf = f._pack = link._buf
        f._at = link._at
    return f


class MQTTLink:
    """``FramedLink``'s delivery (through ``_framer``) over MQTT; see the module docstring.
    ``MQTTLink(cfg, secrets, clock, feed=None, wlan=None, root=None)`` (``mqtt_open.init``)."""

    def __init__(self, *args, **kwargs):
        self._step("init", *args, **kwargs)

    def __repr__(self):  # never the passwords
        return "<MQTTLink %s %s:%d>" % (self.device_id, self.mqtt["host"], self.mqtt["port"])

    def is_connected(self):
        c = self._client
        return c is not None and c.is_connected()

    def _on_message(self, topic, payload):
        if topic == self.ack_topic:
            if len(self._inbox) >= INBOX:
                self._inbox.pop(0)
                self.counters["stale_acks"] += 1
            self._inbox.append(payload)

    def _step(self, name, *args, **kwargs):
        # mqtt_open's ``name`` (the connection step, a kept session's cycle), loaded for the
        # call and released after it with the rest of the connection's code
        try:
            mqtt_open = sys.modules.get(_OPEN)  # (an import statement interns its names again)
            if mqtt_open is None:
                from . import mqtt_open
            return getattr(mqtt_open, name)(self, *args, **kwargs)
        finally:
            _release_connection()

    def open(self):
        """WiFi, then the broker and the ack subscription; True when connected. False (counted,
        backoff set) when WiFi or the broker is not there or refuses us; never raises for that.
        The connection step's code (``_CONNECTION``) is loaded for this and released after it."""
        return self._step("open_link")

    def close(self):
        """DISCONNECT (best effort) and close; the broker keeps the session."""
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()

    # ---- delivery ----
    def exchange(self, data, boot_epoch, last_seq):
        """Publish the frame ``data`` and wait for the gateway's ack (``mqtt_exchange``, loaded
        for it and released after with the client's every-wake half); the seq acked, or None."""
        try:
            mqtt_exchange = sys.modules.get(_EXCHANGE)
            if mqtt_exchange is None:
                from . import mqtt_exchange
            return mqtt_exchange.exchange(self, data, boot_epoch, last_seq)
        finally:
            _release_connection()

    def deliver(self, log):
        """Send what is pending, reconnecting if needed (at most one attempt per cycle).
        A deep-sleep node builds its frame first and then connects, sends it and DISCONNECTs
        until the next cycle; a light-sleep one keeps the session. Returns the records acked."""
        if self.stay_connected and self.is_connected():
            self._step("resume")
        built = None if self.stay_connected else _build(self, log)
        if not self.is_connected():
            failed, self._failed_in_cycle = self._failed_in_cycle, False
            if failed or not self.open():
                self._failed_in_cycle = False
                return 0  # the frame is not sent: its records stay on flash
        published = self._client.counters["published"]
        try:
            if self.stay_connected:
                if self._framed is None:
                    self._framed = _framer(self)
                return self._framed.deliver(log)
            delivered = 0
            for _ in range(MAX_BATCHES):
                if built is None:
                    break
                try:
                    from . import mqtt_exchange

                    n, more = mqtt_exchange.send(self, log, built)
                finally:
                    _release_connection()
                built = None
                delivered += n
                if more:  # a backlog: the next frame, built with the connection up
                    built = _build(self, log)
            return delivered
        finally:
            self._failed_in_cycle = False
            if self.stay_connected:
                self._step("end_cycle", published)
            else:
                self.close()
