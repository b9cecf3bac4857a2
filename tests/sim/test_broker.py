"""The Mosquitto test-broker runner, checked with a real paho-mqtt client (REFERENCE §9).

Every test starts its own broker on a free loopback port; none uses a system broker.
"""

import socket
import ssl
import threading

import paho.mqtt.client as mqtt
import pytest

from simulators import broker as broker_mod
from simulators.broker import Mosquitto, make_test_tls
from tests.gatewaykit import broker_fixture

PW = {"node-1": "n1-9f2c81e07a", "node-2": "n2-4be1d0c6f3"}
ACL = ["pattern readwrite civicedge/v1/site/%u/#"]


class Paho:
    """A paho client with VERSION2 callbacks that records what happened, for assertions."""

    def __init__(self, client_id, user=None, password=None, cafile=None, clean_session=True):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean_session, protocol=mqtt.MQTTv311)
        if user:
            self.c.username_pw_set(user, password)
        if cafile:
            self.c.tls_set(ca_certs=cafile)
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.published = threading.Event()
        self.reason = None
        self.messages = []
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda c, u, mid, rcs, p: (setattr(self, "granted", rcs), self.subscribed.set())
        self.c.on_publish = lambda c, u, mid, rc, p: self.published.set()
        self.got_message = threading.Event()
        self.c.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.reason = reason_code
        self.connected.set()

    def _on_message(self, client, userdata, m):
        self.messages.append((m.topic, m.payload))
        self.got_message.set()

    def connect(self, broker):
        self.c.connect(broker.host, broker.port, keepalive=10)
        self.c.loop_start()
        assert self.connected.wait(5), "no CONNACK"
        return self.reason

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


broker = broker_fixture(PW, ACL)


def test_right_password_connects(broker):
    p = Paho("node-1", "node-1", PW["node-1"])
    try:
        assert not p.connect(broker).is_failure
    finally:
        p.close()
    assert broker.host == "127.0.0.1" and broker.port != 1883


@pytest.mark.parametrize("user, password", [("node-1", "wrong"), ("nobody", "x"), (None, None)])
def test_wrong_password_or_anonymous_refused(broker, user, password):
    p = Paho("node-1", user, password)
    try:
        rc = p.connect(broker)
    finally:
        p.close()
    assert rc.is_failure and rc.value in (4, 5, 134, 135)  # bad user name or password / not authorised


def test_acl_denies_another_devices_topic(broker):
    n1 = Paho("n1", "node-1", PW["node-1"])
    n2 = Paho("n2", "node-2", PW["node-2"])
    try:
        n1.connect(broker)
        n2.connect(broker)
        n1.c.subscribe("civicedge/v1/site/#", qos=1)
        assert n1.subscribed.wait(5)
        # node-2 writes its own topic and node-1's; only its own reaches node-1's wildcard
        n2.c.publish("civicedge/v1/site/node-1/readings", b"forged", qos=1).wait_for_publish(5)
        n2.c.publish("civicedge/v1/site/node-2/readings", b"own", qos=1).wait_for_publish(5)
        n1.c.publish("civicedge/v1/site/node-1/readings", b"mine", qos=1).wait_for_publish(5)
        for _ in range(50):
            if len(n1.messages) >= 1:
                break
            n1.got_message.wait(0.1)
        n1.got_message.clear()
        n1.got_message.wait(0.5)
    finally:
        n1.close()
        n2.close()
    # the ACL pattern lets node-1 read only its own subtree: "mine" arrives, "own" (node-2's
    # topic) is not readable by node-1, and node-2's forgery of node-1's topic is dropped
    assert n1.messages == [("civicedge/v1/site/node-1/readings", b"mine")]


def test_kill_and_restart_on_the_same_port(broker):
    port = broker.port
    broker.kill()
    assert not broker.running()
    with pytest.raises(OSError):
        socket.create_connection((broker.host, port), timeout=1).close()
    broker.restart()
    assert broker.port == port and broker.running() and broker.starts == 2
    p = Paho("node-1", "node-1", PW["node-1"])
    try:
        assert not p.connect(broker).is_failure
    finally:
        p.close()


def test_a_broker_port_is_below_the_ephemeral_range_so_retries_cannot_land_on_it(monkeypatch):
    """A stopped broker's port must not be one the kernel can give a client's retry as its
    local port: such a socket connects to itself (a CI failure: a TLS client read its own
    ClientHello back, "unexpected message", counted as a certificate problem)."""
    low, _ = broker_mod._ephemeral_ports()
    ports = {broker_mod.free_port() for _ in range(20)}
    assert len(ports) > 1
    if low > 11024:  # room below the range (Linux's default starts it at 32768)
        assert all(10000 <= p < low for p in ports), (low, sorted(ports))
    for p in ports:  # free: nobody listens, and it binds
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", p), timeout=1).close()
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
    # no room below the range: the kernel's choice, still a free port
    monkeypatch.setattr(broker_mod, "_ephemeral_ports", lambda: (1024, 65535))
    with socket.socket() as s:
        s.bind(("127.0.0.1", broker_mod.free_port()))


def test_persistent_session_survives_sigkill(tmp_path):
    with Mosquitto(users=PW, persistence=True) as b:
        sub = Paho("sub", "node-1", PW["node-1"], clean_session=False)
        sub.connect(b)
        sub.c.subscribe("q/#", qos=1)
        assert sub.subscribed.wait(5)
        sub.close()  # offline: the broker queues its QoS 1 messages
        pub = Paho("pub", "node-2", PW["node-2"])
        pub.connect(b)
        pub.c.publish("q/1", b"queued", qos=1).wait_for_publish(5)
        pub.close()
        # PUBACK comes before the save: a kill now could lose the message
        assert b.wait_saved(b"queued")
        b.restart(kill=True)
        sub.connected.clear()
        sub.connect(b)
        assert sub.got_message.wait(5)
        sub.close()
    assert sub.messages == [("q/1", b"queued")]


def test_tls_listener_verified_by_paho(tmp_path):
    files = make_test_tls(str(tmp_path))
    with Mosquitto(users=PW, tls=files) as b:
        p = Paho("node-1", "node-1", PW["node-1"], cafile=files["cafile"])
        try:
            assert not p.connect(b).is_failure
        finally:
            p.close()
        (tmp_path / "other").mkdir()
        other = make_test_tls(str(tmp_path / "other"))
        bad = Paho("node-1", "node-1", PW["node-1"], cafile=other["cafile"])
        with pytest.raises(ssl.SSLCertVerificationError):
            bad.c.connect(b.host, b.port)


def test_missing_binary_is_a_clear_error(monkeypatch):
    import simulators.broker as sb
    monkeypatch.setattr(sb, "_SEARCH", ())
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(sb.MosquittoMissing, match="scripts/setup"):
        Mosquitto(users=PW).start()


def test_password_not_in_config_or_log(broker):
    p = Paho("x", "node-1", "wrong-guess-123")
    try:
        p.connect(broker)
    finally:
        p.close()
    text = open(broker.conf).read() + broker.log_text()
    assert "allow_anonymous false" in text
    for secret in list(PW.values()) + ["wrong-guess-123"]:
        assert secret not in text
