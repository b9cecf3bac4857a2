"""The real infrastructure around a simulated site: the site's broker (nodes over TLS, the
gateways and the LoRaWAN network server on a loopback listener), the council's broker with
its platform subscriber (``Platform``), a ``TCPProxy`` per gateway on the way to the council
(a broker outage is that proxy refusing and dropping connections), each gateway's
configuration and 0600 secrets, written as provisioning writes them.

The brokers are Mosquitto when it can be started, otherwise the embedded ``amqtt`` broker
(``simulators.fleet.amqtt_broker``) with the same listeners, users and ACL;
``$CIVICEDGE_SIM_BROKER`` (``mosquitto`` or ``amqtt``) forces one (``SiteBrokers.kind`` says
which ran, ``why`` why amqtt did).

Every password and key is random (``secrets``), made for the run and kept in its work
directory; the agent refuses weak ones, and so would a reviewer.
"""

import json
import os
import secrets
import threading

import paho.mqtt.client as mqtt

from gateway.upstream import SENML_JSON, decode_readings
from simulators.broker import Mosquitto, MosquittoMissing, free_port, make_test_tls
from simulators.fleet.amqtt_broker import AmqttBroker, amqtt_available
from simulators.fleet.nodes import node_attributes
from simulators.tcpproxy import TCPProxy

BROKER_ENV = "CIVICEDGE_SIM_BROKER"
BROKERS = ("auto", "mosquitto", "amqtt")
PLATFORM = "platform"
NS_USER = "chirpstack"
SSID = "civicedge-sim"


def password():
    return "sim-" + secrets.token_urlsafe(18)


def _write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


class SiteBrokers:
    """Both brokers and the proxies (module docstring). ``mqtt_nodes``: MQTT node ids;
    ``gateways``: ``GatewaySpec``s; ``broker``: ``auto`` (Mosquitto, else amqtt),
    ``mosquitto`` or ``amqtt``; None reads ``$CIVICEDGE_SIM_BROKER`` (default ``auto``).
    ValueError names a bad choice."""

    def __init__(self, workdir, mqtt_nodes, gateways, broker=None):
        self.choice = broker or os.environ.get(BROKER_ENV) or "auto"
        if self.choice not in BROKERS:
            raise ValueError("%s: must be one of %s, got %r" % (
                "broker" if broker else "$" + BROKER_ENV, ", ".join(BROKERS), self.choice))
        self.dir = workdir
        os.makedirs(os.path.join(workdir, "tls"), exist_ok=True)
        self.tls = make_test_tls(os.path.join(workdir, "tls"))
        self.node_pw = {n: password() for n in mqtt_nodes}
        self.gw_pw = {g.id: password() for g in gateways}
        self.up_pw = {g.id: password() for g in gateways}
        self.ns_pw, self.platform_pw = password(), password()
        self.wifi_pw = password()
        self.site_acl = ["pattern write civicedge/node/%u/up", "pattern read civicedge/node/%u/ack",
                         "user %s" % NS_USER, "topic write application/#",
                         "topic read application/+/device/+/command/down"]
        for g in gateways:
            self.site_acl += ["user gw-%s" % g.id, "topic readwrite civicedge/node/#", "topic read application/#"]
        self.site_users = dict(self.node_pw, **{"gw-" + k: v for k, v in self.gw_pw.items()})
        self.site_users[NS_USER] = self.ns_pw
        self.council_acl = ["user %s" % PLATFORM, "topic read civicedge/v1/#"]
        for g in gateways:
            self.council_acl += ["user up-%s" % g.id, "topic write civicedge/v1/%s/#" % g.site]
        self.council_users = dict({"up-" + k: v for k, v in self.up_pw.items()}, **{PLATFORM: self.platform_pw})
        self.site = self.council = None
        self.kind = self.why = None
        self.plain_port = None
        self.proxies = {}

    def start(self):
        """Start the brokers (Mosquitto or amqtt: class docstring) and the proxies; RuntimeError
        if no broker could be started."""
        why = None
        if self.choice == "amqtt":
            why = "%s=amqtt" % BROKER_ENV
        else:
            try:
                self._start_mosquitto()
            except (MosquittoMissing, RuntimeError) as e:
                self._stop_brokers()
                if self.choice == "mosquitto":
                    raise RuntimeError("Mosquitto could not be started: %s" % e) from e
                why = "mosquitto could not be started: %s" % str(e).splitlines()[0]
        if why is not None:
            if not amqtt_available():
                raise RuntimeError("no broker: %s, and the amqtt package is not installed (scripts/setup)" % why)
            self._start_amqtt()
            self.why = why
        for gid in self.gw_pw:
            self.proxies[gid] = TCPProxy("127.0.0.1", self.council.port)
        return self

    def describe(self):
        """``mosquitto`` or ``amqtt (why)``: for the run's header."""
        return self.kind if self.why is None else "%s (%s)" % (self.kind, self.why)

    def _start_mosquitto(self):
        self.kind, self.plain_port = "mosquitto", free_port()
        self.site = Mosquitto(users=self.site_users, acl=self.site_acl,
                              tls={"certfile": self.tls["certfile"], "keyfile": self.tls["keyfile"]},
                              extra_config=["max_queued_messages 10000", "set_tcp_nodelay true",
                                            "listener %d 127.0.0.1" % self.plain_port])
        self.council = Mosquitto(users=self.council_users, acl=self.council_acl, persistence=False,
                                 extra_config=["max_queued_messages 100000", "max_inflight_messages 100",
                                               "set_tcp_nodelay true"])
        self.site.start()
        self.council.start()

    def _start_amqtt(self):
        self.kind, self.plain_port = "amqtt", free_port()
        self.site = AmqttBroker(users=self.site_users, acl=self.site_acl, plain_port=self.plain_port,
                                tls={"certfile": self.tls["certfile"], "keyfile": self.tls["keyfile"]})
        self.council = AmqttBroker(users=self.council_users, acl=self.council_acl)
        self.site.start()
        self.council.start()

    def _stop_brokers(self):
        for b in (self.site, self.council):
            if b is not None:
                b.close()
        self.site = self.council = None

    def outage(self, gateway_id, down):
        """The council's broker unreachable from ``gateway_id`` (``down``) or back."""
        proxy = self.proxies[gateway_id]
        proxy.refuse(down)
        if down:
            proxy.reset_all()

    def close(self):
        for p in self.proxies.values():
            p.close()
        self._stop_brokers()


def gateway_files(d, g, devices, keys, brokers, serial_ports, app_id):
    """Write gateway ``g``'s configuration (``gateway.toml``) and secrets into ``d``; returns
    the configuration's path. ``devices``: [(NodeSpec, dev_eui or None)]; ``keys``: device
    id -> key bytes (serial and MQTT nodes); ``serial_ports``: device id -> the gateway's pty."""
    sec = os.path.join(d, "secrets")
    os.makedirs(sec, mode=0o700, exist_ok=True)
    os.chmod(sec, 0o700)
    lines = ["config_version = 1", "[site]", 'id = "%s"' % g.site, 'gateway_id = "%s"' % g.id,
             'data_dir = "data"', "[secrets]", 'device_keys_file = "secrets/keys.toml"']
    for spec, eui in devices:
        lines += ["[[devices]]", 'id = "%s"' % spec.id, 'profile = "%s"' % spec.profile, 'link = "%s"' % spec.link]
        if eui:
            lines.append('dev_eui = "%s"' % eui)
        attrs = node_attributes(spec)
        if attrs:
            lines += ["[devices.attributes]"] + ['%s = "%s"' % kv for kv in sorted(attrs.items())]
    for dev_id, port in sorted(serial_ports.items()):
        lines += ["[[sources.serial]]", 'port = "%s"' % port]
    if any(s.link == "mqtt" for s, _ in devices):
        lines += ["[sources.site_broker]", 'host = "127.0.0.1"', "port = %d" % brokers.plain_port, "tls = false",
                  'username = "gw-%s"' % g.id, 'password_file = "secrets/site.password"', "keepalive_s = 10"]
    if any(s.link == "lorawan" for s, _ in devices):
        lines += ["[sources.chirpstack]", 'host = "127.0.0.1"', "port = %d" % brokers.plain_port, "tls = false",
                  'username = "gw-%s"' % g.id, 'password_file = "secrets/chirpstack.password"',
                  'application_id = "%s"' % app_id, "keepalive_s = 10"]
    lines += ["[outbox]", 'path = "data/outbox.sqlite3"',
              "[upstream.mqtt]", 'host = "127.0.0.1"', "port = %d" % brokers.proxies[g.id].port, "tls = false",
              'username = "up-%s"' % g.id, 'password_file = "secrets/up.password"',
              'client_id = "civicedge-%s-%s"' % (g.site, g.id), "keepalive_s = 10", "readings_per_publish = 100"]
    if brokers.kind == "amqtt":  # amqtt speaks MQTT 3.1.1 only (docs/simulation-fleet.md "Brokers")
        lines.append('protocol = "3.1.1"')
    path = os.path.join(d, "gateway.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    _write_private(os.path.join(sec, "keys.toml"),
                   "".join('"%s" = "%s"\n' % (k, v.hex()) for k, v in sorted(keys.items())))
    for name, pw in (("site", brokers.gw_pw[g.id]), ("chirpstack", brokers.gw_pw[g.id]),
                     ("up", brokers.up_pw[g.id])):
        _write_private(os.path.join(sec, name + ".password"), pw + "\n")
    return path


def _topic_device(topic):
    """The device of ``civicedge/v1/{site}/{device}/{kind}`` (None for another shape)."""
    parts = topic.split("/")
    return parts[3] if len(parts) == 5 else None


class Platform:
    """The council's platform: subscribes ``civicedge/v1/#`` (QoS 1, persistent session) and
    keeps every readings record copy (a status record with its ``counters``: boots, cycles,
    the flash log's ``dropped``...), gap message and alarm event with the time it arrived
    (``arrived_wall_s``, Unix s on the fleet's virtual clock; ``arrival_wall_s``).

    ``now_wall()``: the fleet's global time G as wall time. ``node_wall(device)``: that
    node's own clock as wall time (its virtual time since the start, without any clock-jump
    fault on its RTC), or None for an unknown device. A message is stamped with the later
    of the two for the device it concerns: G alone trails the nodes by up to the timeline's
    lookahead window (30 s), so a reading forwarded at once could seem to arrive before it
    was sent; a node's clock is never past G by more than the window, and the record left
    the node at or before its clock's present time, so the stamp is never before the send
    and at most the window late.

    A readings message is stamped as it arrives (its device from the topic,
    ``civicedge/v1/{site}/{device}/readings``) and kept as it came; its SenML is decoded when
    ``arrived`` is first read after it (the run record, after the run), not in the MQTT
    client's thread: decoding took ~0.1 ms a message there (measured: ~2.5 s of the runner's CPU in a
    smart-place day), all of it under the lock (the GIL) that the board hub serving every
    node's sensor requests needs too. A pack naming another device than its topic is kept
    under the pack's device and reported in ``bad``."""

    def __init__(self, brokers, now_wall, node_wall=None):
        self.now_wall = now_wall
        self.node_wall = node_wall
        self.lock = threading.Lock()
        self._arrived, self.gaps, self.alarm_events, self.bad = [], [], [], []
        self._undecoded = []  # (topic, device, payload, arrival stamp) of readings messages
        self._messages = 0    # every message taken, any topic (``count``)
        self.subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="council-platform", clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(PLATFORM, brokers.platform_pw)
        c.reconnect_delay_set(0.1, 1)
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("civicedge/v1/#", qos=1)
        c.on_subscribe = lambda cl, u, mid, rcs, p: self.subscribed.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", brokers.council.port, keepalive=30)
        c.loop_start()
        self.client = c

    def arrival_wall_s(self, device, now_s):
        """The arrival stamp (class docstring) for a message about ``device`` that arrives
        when the global time is ``now_s`` (Unix s)."""
        own = self.node_wall(device) if self.node_wall is not None and device else None
        return now_s if own is None else max(now_s, own)

    def _on_message(self, client, userdata, msg):
        now = self.now_wall()
        topic, payload = msg.topic, bytes(msg.payload)
        with self.lock:
            self._messages += 1
            try:
                if topic.endswith("/readings"):
                    device = _topic_device(topic)
                    self._undecoded.append((topic, device, payload, self.arrival_wall_s(device, now)))
                elif topic.endswith("/gaps"):
                    device = _topic_device(topic)
                    self.gaps.append(dict(json.loads(payload), device=device,
                                          arrived_wall_s=self.arrival_wall_s(device, now)))
                elif topic.endswith("/alarms"):
                    msg_ = json.loads(payload)
                    for ev in msg_.get("alarms", []):
                        self.alarm_events.append(dict(ev, arrived_wall_s=self.arrival_wall_s(ev.get("device_id"), now)))
            except Exception as e:  # noqa: BLE001 (kept and reported: a platform must not choke)
                self.bad.append({"topic": topic, "error": repr(e)})

    @property
    def arrived(self):
        """Every readings record copy that arrived, in arrival order (class docstring): each a
        dict of ``device, epoch, seq, kind, t, values, arrived_wall_s`` (and a status record's
        ``counters``). Decodes what came since the last look."""
        with self.lock:
            undecoded, self._undecoded = self._undecoded, []
            for topic, device, payload, at in undecoded:
                try:
                    self._decode(topic, device, payload, at)
                except Exception as e:  # noqa: BLE001 (kept and reported: a platform must not choke)
                    self.bad.append({"topic": topic, "error": repr(e)})
            return self._arrived

    def _decode(self, topic, device, payload, at):
        pack = decode_readings(payload, SENML_JSON)
        if pack["device_id"] != device:
            self.bad.append({"topic": topic, "error": "readings of %r on the topic of %r" % (pack["device_id"], device)})
        for rec in pack["records"]:
            entry = {
                "device": pack["device_id"], "epoch": pack["boot_epoch"], "seq": rec["seq"],
                "kind": rec.get("kind") or "reading", "t": rec.get("t"),
                "values": {q: [v, f] for q, v, f in rec.get("values", [])},
                "arrived_wall_s": at}
            if isinstance(rec.get("counters"), dict):  # a status record's counters
                entry["counters"] = dict(rec["counters"])
            self._arrived.append(entry)

    def count(self):
        """Messages taken so far (any topic): what a settle watches for movement, and the
        progress lines show."""
        with self.lock:
            return self._messages

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()
