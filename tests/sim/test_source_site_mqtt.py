"""The site-broker source against a real Mosquitto started here (per-user passwords, the
deployed ACL, TLS made in the test): node frames in with the topic's device id, acks out to
the node's ack topic, bad topics and strangers counted, a wrong CA refused (never plaintext),
and the broker killed and restarted under a running source: it reconnects, and with a
persistent broker the session resumes with the frames published while it was away."""

import dataclasses
import threading

import paho.mqtt.client as mqtt
import pytest

from gateway.config_types import MQTTConnection
from gateway.pipeline import Ingest
from gateway.sources import FRAME
from gateway.sources.site_mqtt import SiteMQTTSource, ack_topic, device_of_up_topic
from protocol import frame, senml
from simulators.broker import Mosquitto, make_test_tls
from tests.gatewaykit import broker_fixture, needs_mosquitto, wait_until

pytestmark = needs_mosquitto

DEV, OTHER = "sch1-rm12-co2", "sch1-rm14-co2"
KEY = bytes(range(7, 39))
PW = {"gateway": "gw-3c9e7a51d2f08b", DEV: "n1-e81f0c47a9d2", OTHER: "n2-50b7d31ce4a8",
      "Not_An_Id": "nx-9a8b7c6d5e4f"}
ACL = ["user gateway", "topic read civicedge/node/+/up", "topic write civicedge/node/+/ack",
       "pattern write civicedge/node/%u/up", "pattern read civicedge/node/%u/ack"]


class Clock:
    def wall_s(self):
        return 1767571200.5

    def wall_trusted(self):
        return True


class Collector:
    def __init__(self):
        self.arrivals = []
        self.accept = True

    def __call__(self, arrival):
        if not self.accept:
            return False
        self.arrivals.append(arrival)
        return True


def conn(broker, tls=False, ca_file=None, tls_verify=True, username="gateway"):
    return MQTTConnection(host="127.0.0.1", port=broker.port, tls=tls, tls_verify=tls_verify,
                          ca_file=ca_file, client_cert_file=None, client_key_file=None,
                          username=username, password_file=None, client_id="civicedge-gw1-site",
                          keepalive_s=10)


def source(c, password=PW["gateway"], devices=(DEV, OTHER)):
    return SiteMQTTSource(c, password, devices, Clock(), reconnect_min_s=0.05, reconnect_max_s=0.3)


def node_frame(epoch, first, device=DEV):
    rec = [{"seq": first, "t": 1767571200, "values": [["co2_ppm", 640, "ok"]]}]
    return frame.encode_data(KEY, device, epoch, first, 1, senml.encode_pack(device, epoch, rec))


class Node:
    """A node's MQTT side: publishes frames at QoS 1, collects what comes on its ack topic."""

    def __init__(self, broker, user=DEV, cafile=None):
        self.user = user
        self.acks = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="node-" + user,
                             protocol=mqtt.MQTTv311)
        self.c.username_pw_set(user, PW[user])
        if cafile:
            self.c.tls_set(ca_certs=cafile)
        sub = threading.Event()
        self.c.on_subscribe = lambda *a: sub.set()
        self.c.on_message = lambda c, u, m: self.acks.append(m.payload)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(ack_topic(user), 1)
        self.c.connect(broker.host, broker.port, keepalive=10)
        self.c.loop_start()
        assert sub.wait(10)

    def send(self, payload, topic=None):
        info = self.c.publish(topic or "civicedge/node/%s/up" % self.user, payload, qos=1)
        info.wait_for_publish(5)
        assert info.is_published()

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


broker = broker_fixture(PW, ACL)


def test_topic_names_the_device():
    assert device_of_up_topic("civicedge/node/sch1-rm12-co2/up") == "sch1-rm12-co2"
    for bad in ("civicedge/node/Not_An_Id/up", "civicedge/node//up", "civicedge/node/a/ack",
                "civicedge/node/a/up/x", "x/node/a/up"):
        assert device_of_up_topic(bad) is None


def test_frames_arrive_with_the_topic_device_and_the_ack_reaches_the_node(broker):
    src, sink = source(conn(broker)), Collector()
    src.start(sink)
    node = Node(broker)
    try:
        assert wait_until(lambda: src.status()["connected"])
        f = node_frame(2, 0)
        node.send(f)
        assert wait_until(lambda: len(sink.arrivals) == 1)
        a = sink.arrivals[0]
        assert (a.kind, a.data, a.source, a.device_id, a.received_s) == (
            FRAME, f, "site_mqtt", DEV, 1767571200.5)
        res = Ingest({DEV: KEY}).ingest_frame(a.data, a.source, device_id=a.device_id)
        assert res.accepted
        a.reply(res.ack)
        assert wait_until(lambda: node.acks == [res.ack])
        ack = frame.decode_frame(node.acks[0], {DEV: KEY}.get, expect=frame.TYPE_ACK)
        assert (ack.boot_epoch, ack.seq_through) == (2, 0)
        c = src.counters()
        assert c["frames"] == 1 and c["acks_sent"] == 1 and c["connects"] == 1
        assert c["reconnects"] == 0
        assert "subscribed" in src.status()["detail"]
    finally:
        node.close()
        src.stop()
    assert src.status()["connected"] is False


def test_strangers_bad_topics_and_oversize_are_counted_and_dropped(broker):
    src, sink = source(conn(broker), devices=(DEV,)), Collector()
    src.start(sink)
    stranger, bad, node = Node(broker, OTHER), Node(broker, "Not_An_Id"), Node(broker)
    try:
        assert wait_until(lambda: src.status()["connected"])
        stranger.send(node_frame(1, 0, OTHER))
        bad.send(b"\x01\x01")
        node.send(b"\x01" * 5000)
        node.send(b"")
        node.send(node_frame(1, 0))
        stranger.send(node_frame(1, 1, OTHER))  # refused again: only good topics are kept
        bad.send(b"\x01\x02")
        assert wait_until(lambda: src.counters()["messages"] == 7)
        c = src.counters()
        assert (c["unknown_device"], c["bad_topic"], c["oversize"], c["empty"]) == (2, 2, 1, 1)
        assert [a.device_id for a in sink.arrivals] == [DEV]
        sink.accept = False
        node.send(node_frame(1, 1))
        assert wait_until(lambda: src.counters()["overflow"] == 1)
        assert c["handler_errors"] == 0
    finally:
        for n in (stranger, bad, node):
            n.close()
        src.stop()


def test_wrong_password_is_refused_and_said(broker):
    src = source(conn(broker), password="not-the-password-4f1e")
    src.start(Collector())
    try:
        assert wait_until(lambda: src.counters()["connect_refused"] >= 1)
        st = src.status()
        assert st["connected"] is False and "'gateway'" in st["detail"]
    finally:
        src.stop()


def test_tls_verified_and_a_wrong_ca_never_connects(tmp_path):
    files = make_test_tls(str(tmp_path))
    (tmp_path / "other").mkdir()
    other = make_test_tls(str(tmp_path / "other"))
    with Mosquitto(users=PW, acl=ACL, tls=files) as b:
        bad = source(conn(b, tls=True, ca_file=other["cafile"]))
        bad.start(Collector())
        good_conn = dataclasses.replace(conn(b, tls=True, ca_file=files["cafile"]), client_id="gw-tls")
        good, sink = source(good_conn), Collector()
        good.start(sink)
        node = Node(b, cafile=files["cafile"])
        try:
            assert wait_until(lambda: good.status()["connected"])
            node.send(node_frame(1, 0))
            assert wait_until(lambda: len(sink.arrivals) == 1)
            assert wait_until(lambda: bad.counters()["connect_failures.tls"] >= 2)
            assert bad.counters()["connect_failures.network"] == 0
            assert bad.counters()["connects"] == 0 and bad.status()["connected"] is False
            assert "ca_file" in bad.status()["detail"]
            # the source itself refused the handshake (the broker logs the client's TLS alert)
            assert "unknown ca" in b.log_text()
        finally:
            node.close()
            good.stop()
            bad.stop()


def test_verification_off_is_refused(broker):
    with pytest.raises(ValueError, match="tls_verify"):
        source(conn(broker, tls=True, tls_verify=False))


def test_broker_killed_and_restarted_the_session_resumes(tmp_path):
    with Mosquitto(users=PW, acl=ACL, persistence=True) as b:
        src, sink = source(conn(b)), Collector()
        src.start(sink)
        node = Node(b)
        try:
            assert wait_until(lambda: src.status()["connected"])
            f1 = node_frame(4, 0)
            node.send(f1)
            assert wait_until(lambda: len(sink.arrivals) == 1)
            # the gateway goes away; a frame published meanwhile waits in its session
            src.stop()
            f2 = node_frame(4, 1)
            node.send(f2)
            assert b.wait_saved(f2)
            node.close()
            b.kill()  # an abrupt broker outage on top
            b.start()
            src = source(conn(b))
            src.start(sink)
            assert wait_until(lambda: f2 in [a.data for a in sink.arrivals])
            assert src.counters()["sessions_resumed"] == 1
            # killed and restarted while the source runs: it reconnects by itself
            b.kill()
            assert wait_until(lambda: src.counters()["disconnects"] == 1)
            assert src.status()["connected"] is False
            b.start()
            assert wait_until(lambda: src.counters()["reconnects"] == 1)
            assert wait_until(lambda: src.status()["connected"])
            node = Node(b)
            f3 = node_frame(4, 2)
            node.send(f3)
            # QoS 1 is at least once: a frame whose PUBACK the broker had not yet saved when
            # it was killed comes again (the pipeline de-duplicates it); f3 must arrive
            assert wait_until(lambda: f3 in [a.data for a in sink.arrivals]), src.counters()
            assert set(a.data for a in sink.arrivals) == {f1, f2, f3}
            assert src.counters()["sessions_resumed"] == 2
        finally:
            node.close()
            src.stop()
