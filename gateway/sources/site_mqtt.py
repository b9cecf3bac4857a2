"""``SiteMQTTSource``: node frames from the site's MQTT broker (nodes on WiFi), and
``MQTTSubscription``, the MQTT plumbing it shares with the ChirpStack source.

Theory of operation
-------------------
The nodes' side of the topics (``firmware/app/links/mqtt.py``): a node publishes each frame
at QoS 1 to ``civicedge/node/{device_id}/up`` and subscribes ``civicedge/node/{device_id}/ack``
for the gateway's authenticated ack. The site broker's ACL lets each node write only its own
``up`` topic (``deploy/mosquitto-acl.example``), so the topic names who sent the frame: the
source passes that id as ``Arrival.device_id`` and the pipeline rejects a frame that names
another device (``auth_failures.source_mismatch``). A topic that is not
``civicedge/node/<id>/up``, or an id not in the inventory, is counted (``bad_topic``,
``unknown_device``) and dropped; so is a payload longer than any frame (``oversize``).
``reply`` publishes the ack at QoS 1 on ``civicedge/node/<id>/ack``.

``MQTTSubscription`` is one paho-mqtt 2.x client (``CallbackAPIVersion.VERSION2``, MQTT
3.1.1) with:

* a **persistent session**: ``clean_session=False`` and the configured, stable client id, so
  frames published while the gateway is away (restart, network blip) wait at the broker
  (with broker persistence, even across a broker restart) and arrive on reconnect;
  ``sessions_resumed`` counts CONNACKs with "session present". The subscription (QoS 1) is
  made again after every connect, in case the session was lost.
* **TLS** when the connection says so, always verifying the broker's certificate and host
  name against ``ca_file`` (or the system's trust store), with an optional client
  certificate. Verification off is refused here too (fail closed), whatever the caller
  checked; there is no fall-back to plaintext.
* **reconnects** by paho's own loop with a doubling delay (``reconnect_min_s`` →
  ``reconnect_max_s``); the first connection is retried the same way if the broker is not
  up yet. ``connect_failures.tls`` counts refused TLS handshakes (the broker's certificate
  not trusted by ``ca_file``, expired, or not yet valid by the Pi's clock),
  ``connect_failures.network`` every other failed attempt (broker down, unreachable, a reset),
  ``connect_refused`` a CONNACK refusal (credentials), ``reconnects`` every connection after
  the first. paho does not say why a connection failed, but it calls ``on_connect_fail``
  while handling the exception, so the source reads it there and classifies it as the
  upstream forwarder does (``gateway.forward.mqtt_link.connect_failure``: one place).
  ``status()`` gives ``broker`` and, after a failure, ``last_error``; the agent watches
  ``connect_failures.tls`` and ``connects`` and raises the gateway's ``tls_failure`` alarm
  after repeated refusals, cleared once connected (``gateway.agent_links``).

paho calls ``on_message`` on its network thread, and the sink may block there for up to
about a second when the agent's queue is full (back-pressure: paho reads nothing else
meanwhile and the broker holds the rest); the PUBACK goes after the handler returns, so a
frame dropped on ``overflow`` is one the node still has and resends. With ``manual_ack``
(the ChirpStack source) the PUBACK waits instead until the handler's subclass says the
message is safe (``_puback``): stored, or held for another try; a message the handler
drops is PUBACKed at once. A PUBACK owed on a connection that has since been lost is not
sent: the broker delivers the message again on the new one (persistent session).

A node's acks (``reply``) published while disconnected are queued by paho in memory (at most
``max_queued_acks``) and sent on reconnect; an ack lost on the way only makes the node
resend, and the pipeline re-acks.
"""

import ssl
import sys
import threading

import paho.mqtt.client as mqtt

from gateway.forward.mqtt_link import connect_failure, set_no_delay
from gateway.sources import FRAME, Arrival, Source, wall_or_none
from protocol.frame import MAX_FRAME_BYTES, check_device_id

UP_FILTER = "civicedge/node/+/up"
FAILURE_KINDS = ("tls", "network")  # connect_failures.<kind>: mqtt_link.connect_failure


def ack_topic(device_id):
    """The topic a node's acks go to (``firmware/app/links/mqtt.py``)."""
    return "civicedge/node/%s/ack" % device_id


def device_of_up_topic(topic):
    """The device id of a ``civicedge/node/<id>/up`` topic, or None if it is not one."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "civicedge" or parts[1] != "node" or parts[3] != "up":
        return None
    try:
        check_device_id(parts[2])
    except ValueError:
        return None
    return parts[2]


def tls_context(conn):
    """The ``ssl.SSLContext`` for ``conn`` (a ``gateway.config_types.MQTTConnection`` with
    ``tls``): certificate and host name verified, TLS 1.2 at least. Raises ``ValueError`` if
    verification is off, ``OSError``/``ssl.SSLError`` if a certificate file cannot be read."""
    if not conn.tls_verify:
        raise ValueError("MQTT %s:%d: tls_verify is false; civicedge never connects without "
                         "verifying the broker's certificate: set tls_verify = true and give "
                         "ca_file" % (conn.host, conn.port))
    ctx = ssl.create_default_context(cafile=conn.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if conn.client_cert_file:
        ctx.load_cert_chain(conn.client_cert_file, conn.client_key_file)
    return ctx


class MQTTSubscription(Source):
    """A persistent-session subscriber to ``topic_filter`` at QoS 1 (module docstring).
    Subclasses implement ``_on_payload(topic, payload)``; it runs on paho's thread and must
    not raise (anything it raises is counted as ``handler_errors``)."""

    def __init__(self, name, conn, password, topic_filter, clock, counter_names=(), *,
                 reconnect_min_s=0.5, reconnect_max_s=30.0, max_queued_acks=1000,
                 manual_ack=False):
        Source.__init__(self, name, "messages", "connects", "reconnects", "disconnects",
                        "connect_refused", "sessions_resumed", "subscribe_refused",
                        "handler_errors", *(tuple("connect_failures." + k for k in FAILURE_KINDS)
                                            + tuple(counter_names)))
        self.conn = conn
        self.topic_filter = topic_filter
        self._clock = clock
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=conn.client_id,
                        clean_session=False, protocol=mqtt.MQTTv311, manual_ack=manual_ack)
        c.username_pw_set(conn.username, password)
        if conn.tls:
            c.tls_set_context(tls_context(conn))
        c.reconnect_delay_set(min_delay=reconnect_min_s, max_delay=reconnect_max_s)
        c.max_queued_messages_set(max_queued_acks)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c
        self._where = "%s:%d" % (conn.host, conn.port)
        self._connected = False
        self._subscribed = False
        self._started = False
        self._stopping = False
        self._detail = "not started"
        self._last_error = None  # why the last connection attempt failed (text), or None
        self._manual_ack = manual_ack
        self._link = 0  # +1 at every CONNACK: a PUBACK belongs to the connection it is owed on

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, sink):
        if self._started:
            raise RuntimeError("%s is already started" % self.name)
        self._sink = sink
        self._started, self._stopping = True, False
        self._detail = "connecting to %s" % self._where
        self.client.connect_async(self.conn.host, self.conn.port, keepalive=self.conn.keepalive_s)
        self.client.loop_start()  # paho's thread (daemon): retries the first connect too

    def stop(self, timeout_s=5.0):
        if not self._started:
            return
        self._stopping = True
        try:
            self.client.disconnect()
        except Exception:  # not connected: the loop ends all the same
            pass
        # paho's loop_stop joins without a bound; a sink still blocked ~1 s must not hang us
        t = threading.Thread(target=self.client.loop_stop, daemon=True)
        t.start()
        t.join(timeout_s)
        self._started = False
        self._connected = self._subscribed = False
        self._detail = "stopped"

    def status(self):
        out = {"connected": self._connected and self._subscribed, "detail": self._detail,
               "broker": self._where}
        if self._last_error is not None:
            out["last_error"] = self._last_error
        return out

    # -- paho callbacks (paho's network thread) ------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self._counters.inc("connect_refused")
            self._detail = ("%s refused the connection as %r (%s): check username, password "
                            "file and the broker's ACL" % (self._where, self.conn.username,
                                                           reason_code))
            return
        self._link += 1
        self._last_error = None
        if self._counters.get("connects"):
            self._counters.inc("reconnects")
        self._counters.inc("connects")
        if getattr(flags, "session_present", False):
            self._counters.inc("sessions_resumed")
        self._connected = True
        set_no_delay(client)
        self._detail = "connected to %s, subscribing %s" % (self._where, self.topic_filter)
        client.subscribe(self.topic_filter, qos=1)  # every time: the session may be gone

    def _on_connect_fail(self, client, userdata):
        # paho calls this inside its ``except OSError`` around the attempt, without the
        # exception: the one being handled is it (None if a paho version stops doing so)
        exc = sys.exc_info()[1]
        kind, why = connect_failure(exc) if isinstance(exc, OSError) else (
            "network", "no reason given by paho")
        self._counters.inc("connect_failures." + kind)
        self._last_error = why[:300]
        if kind == "tls":
            self._detail = ("TLS to %s refused (%s); retrying, nothing is sent in plaintext: "
                            "check ca_file, the broker's certificate and the Pi's clock"
                            % (self._where, self._last_error))
        else:
            self._detail = ("cannot connect to %s (%s); retrying: check the broker runs, the "
                            "host and port" % (self._where, self._last_error))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        was_connected = self._connected
        self._connected = self._subscribed = False
        if self._stopping or not was_connected:  # a refused CONNACK ends here too: keep its detail
            return
        self._counters.inc("disconnects")
        self._detail = "lost %s (%s); reconnecting" % (self._where, reason_code)

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        if any(rc.is_failure for rc in reason_code_list):
            self._counters.inc("subscribe_refused")
            self._detail = ("%s refused the subscription to %s: give user %r read access to "
                            "it in the broker's ACL" % (self._where, self.topic_filter,
                                                        self.conn.username))
            return
        self._subscribed = True
        self._detail = "subscribed to %s on %s" % (self.topic_filter, self._where)

    def _on_message(self, client, userdata, msg):
        self._counters.inc("messages")
        owed = (msg.mid, self._link) if self._manual_ack and msg.qos == 1 else None
        kept = False
        try:
            kept = self._on_payload(msg.topic, msg.payload, owed)
        except Exception:  # paho would end its loop on an exception: count, never raise
            self._counters.inc("handler_errors")
        if owed is not None and not kept:
            self._puback(owed)  # dropped or counted: nothing to wait for

    def _on_payload(self, topic, payload, owed):
        """Handle one message. ``owed``: ``(mid, link)`` of a PUBACK this handler may keep
        (``manual_ack``), else None. Returns True if it kept it (it calls ``_puback``
        later), anything else if the PUBACK may go now."""
        raise NotImplementedError

    def _puback(self, owed):
        """Send the PUBACK ``owed`` (``(mid, link)``) if its connection is still the one up;
        never raises (any thread)."""
        if owed is None or owed[1] != self._link or not self._connected:
            return
        try:
            self.client.ack(owed[0], 1)
        except Exception:  # noqa: BLE001 (a socket closing under us: the broker resends)
            pass

    # -- publishing (any thread) ---------------------------------------------------------------
    def _publish(self, topic, payload):
        """Publish at QoS 1 without waiting for the PUBACK; True if paho took it."""
        try:
            info = self.client.publish(topic, payload, qos=1)
        except Exception:  # ValueError for a bad topic or payload: counted by the caller
            return False
        return info.rc == mqtt.MQTT_ERR_SUCCESS


class SiteMQTTSource(MQTTSubscription):
    """Node frames from the site broker (module docstring). ``conn``: the
    ``gateway.config_types.MQTTConnection`` of ``[sources.site_broker]``; ``password``: its
    password (None with a client certificate); ``device_ids``: the devices allowed on this
    source (link ``mqtt``); ``clock`` gives ``received_s``. Keyword arguments as
    ``MQTTSubscription``. Raises ``ValueError`` if TLS verification is off."""

    def __init__(self, conn, password, device_ids, clock, **kw):
        MQTTSubscription.__init__(self, "site_mqtt", conn, password, UP_FILTER, clock,
                                  ("frames", "bad_topic", "unknown_device", "oversize",
                                   "empty", "acks_sent", "ack_errors"), **kw)
        self.device_ids = frozenset(device_ids)

    def _on_payload(self, topic, payload, owed=None):
        device_id = device_of_up_topic(topic)
        if device_id is None:
            self._counters.inc("bad_topic")
            return
        if device_id not in self.device_ids:
            self._counters.inc("unknown_device")
            return
        if not payload:
            self._counters.inc("empty")
            return
        if len(payload) > MAX_FRAME_BYTES:
            self._counters.inc("oversize")
            return
        self._counters.inc("frames")
        self._emit(Arrival(FRAME, bytes(payload), self.name, device_id=device_id,
                           received_s=wall_or_none(self._clock),
                           reply=lambda ack, d=device_id: self._reply(d, ack)))

    def _reply(self, device_id, ack):
        """Publish ``ack`` to the node's ack topic; never raises, never blocks on the network."""
        if isinstance(ack, (bytes, bytearray)) and ack and self._publish(ack_topic(device_id),
                                                                         bytes(ack)):
            self._counters.inc("acks_sent")
        else:
            self._counters.inc("ack_errors")
