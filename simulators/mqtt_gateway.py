"""``MQTTGatewayStub``: the gateway's side of the nodes' MQTT link, for tests and simulations
until the gateway agent exists. A paho-mqtt client (VERSION2 callbacks, MQTT 3.1.1, QoS 1,
``clean_session=False`` so frames published while it is stopped wait at the broker) that
subscribes ``civicedge/node/+/up``, hands every message to ``GatewayCore``
(``simulators/gateway_stub.py``: the frame's tag with the device key, the SenML-CBOR pack
with ``cbor2``, records kept, bad input counted) with the device id the topic names, and
publishes the authenticated ack at QoS 1 on ``civicedge/node/{device_id}/ack``.

Outages of the gateway's side: ``stub.ack = False`` (or a callable(frame) -> bool) keeps it
receiving without acking; ``stub.hold_acks = True`` keeps the acks it would send until
``release_acks()`` publishes them (an ack that comes back after the node stopped waiting);
``stop()`` / ``start()`` take it off the broker and back (paho also reconnects by itself
when the broker restarts). CPython only::

    with MQTTGatewayStub("127.0.0.1", broker.port, "gateway", pw, {device: key},
                         tls={"cafile": ca}) as gw:
        gw.wait_for(lambda: len(gw.records) >= 5)
"""

import threading
import time

import paho.mqtt.client as mqtt

from simulators.gateway_stub import GatewayCore

UP_FILTER = "civicedge/node/+/up"


def ack_topic(device_id):
    return "civicedge/node/%s/ack" % device_id


class MQTTGatewayStub(GatewayCore):
    """``keys``: {device_id: key bytes}; ``tls``: None (plain, loopback only) or a dict with
    ``cafile`` (the broker's CA, PEM; ``make_test_tls``'s dict will do: only ``cafile`` is
    used) — the broker's certificate and host name are verified."""

    def __init__(self, host, port, user, password, keys, tls=None, ack=True,
                 client_id="civicedge-gateway-stub", keepalive_s=10):
        GatewayCore.__init__(self, keys, ack)
        self.host, self.port = host, port
        self.counters.update(connects=0, publish_errors=0)
        self._subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(user, password)
        if tls:
            c.tls_set(ca_certs=tls["cafile"])
        c.reconnect_delay_set(min_delay=0.05, max_delay=0.5)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda client, userdata, mid, codes, props: self._subscribed.set()
        c.on_disconnect = lambda client, userdata, flags, rc, props: self._subscribed.clear()
        c.on_message = self._on_message
        self.client = c
        self.keepalive_s = keepalive_s
        self.hold_acks = False
        self.held = []  # (topic, ack bytes) kept while hold_acks
        self._running = False

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            return
        self.counters["connects"] += 1
        client.subscribe(UP_FILTER, qos=1)  # again after every connect: the session may be gone

    def _on_message(self, client, userdata, msg):
        parts = msg.topic.split("/")
        device_id = parts[2] if len(parts) == 4 else None
        ack = self.handle_frame(msg.payload, device_id if device_id is not None else "")
        if ack is not None:
            if self.hold_acks:
                self.held.append((ack_topic(device_id), ack))
            else:
                self._publish(ack_topic(device_id), ack)

    def _publish(self, topic, payload):
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.counters["publish_errors"] += 1
        return info

    def release_acks(self, timeout_s=5.0):
        """Publish the held acks, oldest first, and wait until the broker has each (PUBACK);
        returns how many. Acking resumes as normal (``hold_acks`` False)."""
        self.hold_acks = False
        held, self.held = self.held, []
        for topic, ack in held:
            self._publish(topic, ack).wait_for_publish(timeout_s)
        return len(held)

    def start(self, timeout_s=10.0):
        """Connect, subscribe, and return once the subscription is granted (``RuntimeError``
        if not within ``timeout_s``)."""
        if not self._running:
            self.client.connect(self.host, self.port, keepalive=self.keepalive_s)
            self.client.loop_start()
            self._running = True
        if not self._subscribed.wait(timeout_s):
            raise RuntimeError("gateway stub: no subscription to %s within %.0f s" % (UP_FILTER, timeout_s))
        return self

    def stop(self):
        """Leave the broker (DISCONNECT); the broker keeps the session and queues frames."""
        if self._running:
            self.client.disconnect()
            self.client.loop_stop()
            self._running = False
            self._subscribed.clear()

    def subscribed(self):
        return self._subscribed.is_set()

    def wait_for(self, predicate, timeout_s=10.0):
        """Poll ``predicate()`` until true or ``timeout_s`` (real time); returns its last value."""
        end = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value or time.monotonic() >= end:
                return value
            time.sleep(0.02)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
