"""MQTTForwarder against a real Mosquitto (TLS, passwords, ACLs) and a real SQLite outbox.

Each test starts its own broker on a free loopback port and a "platform" subscriber (paho)
that records what arrives; the forwarder drains a real ``gateway.outbox.Outbox``. Waits are
bounded; nothing asserts on timing. Freezing the broker (SIGSTOP) is how the tests hold
PUBACKs back deterministically.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import cbor2
import paho.mqtt.client as mqtt
import pytest

from gateway.backoff import Backoff
from gateway.clock import SystemClock
from gateway.config_types import MQTTConnection, MQTTUpstream
from gateway.forward.mqtt import MQTTForwarder
from gateway.outbox import Outbox, OutboxRecord
from protocol.senml_decode import decode_pack
from simulators.broker import Mosquitto, make_test_tls, mosquitto_available

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")

SITE, GW = "site-a", "gw-1"
PW = {"gw-1": "gw1-7c1d9e4f2a8b", "platform": "pl-3b8e6a0d51f7"}
ACL = ["user gw-1", "topic write civicedge/v1/site-a/#",
       "user platform", "topic read civicedge/v1/#"]
T0 = 1714557600
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wait_until(pred, timeout_s=10.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def upstream_cfg(broker, cafile=None, *, user="gw-1", encoding="senml-json", max_inflight=4,
                 per_publish=25, keepalive_s=30):
    conn = MQTTConnection(broker.host, broker.port, cafile is not None, True, cafile, None, None,
                          user, "/unused", "civicedge-%s-%s" % (SITE, GW), keepalive_s)
    return MQTTUpstream(conn, encoding, max_inflight, per_publish)


def forwarder(up, password=PW["gw-1"], **kw):
    kw.setdefault("backoff", Backoff(0.05, 0.3, rng=random.Random(4)))
    return MQTTForwarder(up, password, SITE, GW, SystemClock(), **kw)


def fill(outbox, n, start=0, devices=("class-1", "class-2", "bin-3"), epoch=1):
    recs = {}
    for i in range(start, start + n):
        dev = devices[i % len(devices)]
        rec = {"seq": i, "t": T0 + i, "values": [["co2_ppm", 400 + i, "ok"],
                                                 ["temperature_c", 20.5, "ok"]]}
        recs[(dev, epoch, i)] = rec
    outbox.put_many([OutboxRecord(k[0], k[1], k[2], r) for k, r in recs.items()])
    return recs


class Platform:
    """The council's side: a paho subscriber to civicedge/v1/# that keeps what arrives."""

    def __init__(self, broker, cafile=None, client_id="platform", persistent=False):
        kw = {"clean_session": False} if persistent else {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv311, **kw)
        self.c.username_pw_set("platform", PW["platform"])
        if cafile:
            self.c.tls_set(ca_certs=cafile)
        self.c.reconnect_delay_set(1, 1)
        self.lock = threading.Lock()
        self.messages = []
        self.subscribed = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("civicedge/v1/#", qos=1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port, keepalive=10)
        self.c.loop_start()
        assert self.subscribed.wait(10), "the platform could not subscribe"

    def _on_message(self, client, userdata, m):
        with self.lock:
            self.messages.append((m.topic, bytes(m.payload), m.retain))

    def of(self, suffix):
        with self.lock:
            return [(t, p, r) for t, p, r in self.messages if t.endswith(suffix)]

    def readings(self, encoding="senml-json"):
        """{key: decoded record} and how many copies of each key arrived."""
        got, copies = {}, {}
        for _, payload, _ in self.of("/readings"):
            obj = cbor2.loads(payload) if encoding == "senml-cbor" else json.loads(payload)
            pack = decode_pack(obj)
            for rec in pack["records"]:
                key = (pack["device_id"], pack["boot_epoch"], rec["seq"])
                got[key] = rec
                copies[key] = copies.get(key, 0) + 1
        return got, copies

    def status(self):
        s = self.of("/gateway/%s/status" % GW)
        return json.loads(s[-1][1]) if s else None

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_test_tls(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def outbox(tmp_path):
    with Outbox(str(tmp_path / "outbox.db"), 64 << 20, 86400, SystemClock()) as ob:
        yield ob


def rows_stored(outbox):
    return sum(outbox.stats().rows.values())


@pytest.mark.parametrize("encoding, protocol", [("senml-json", "5"), ("senml-cbor", "3.1.1")])
def test_every_row_arrives_over_tls_and_leaves_the_outbox_only_after_its_puback(
        tls, outbox, encoding, protocol):
    with Mosquitto(users=PW, acl=ACL, tls=tls) as broker:
        platform = Platform(broker, tls["cafile"])
        fw = forwarder(upstream_cfg(broker, tls["cafile"], encoding=encoding), protocol=protocol)
        fw.start(outbox)
        try:
            assert wait_until(lambda: fw.status()["connected"])
            assert wait_until(lambda: (platform.status() or {}).get("state") == "online")
            broker.proc.send_signal(signal.SIGSTOP)  # no PUBACK can come now
            try:
                sent = fill(outbox, 600)
                fw.wake()
                assert wait_until(lambda: fw.counters()["publishes"] >= 3)
                c = fw.counters()
                assert c["forwarded"] == 0 and c["pubacks"] == 0
                assert rows_stored(outbox) == 600  # published, not acked: still stored
                assert 1 <= c["in_flight"] <= 4  # the window, whatever the backlog
                # taken from the outbox: one window's worth published and one encoded, at most
                assert 25 <= outbox.stats().in_flight <= 2 * 4 * 25
            finally:
                broker.proc.send_signal(signal.SIGCONT)
            assert wait_until(lambda: rows_stored(outbox) == 0)
            assert wait_until(lambda: len(platform.readings(encoding)[0]) == 600)
            got, _ = platform.readings(encoding)
            assert got == sent
            c = fw.counters()
            assert c["forwarded"] == 600 and c["publishes"] == c["pubacks"] >= 600 // 25
            assert c["publish_errors"] == 0 and c["connect_failures.tls"] == 0
            assert outbox.stats().in_flight == 0
        finally:
            assert fw.stop()
            platform.close()


def stored_keys(outbox):
    """The keys in the outbox file, read through a connection of the test's own."""
    with sqlite3.connect("file:%s?mode=ro" % outbox.path, uri=True) as db:
        return set(db.execute("SELECT device_id, boot_epoch, seq FROM rows"))


def quiet(fw, checks=3, gap_s=0.1):
    """Wait until the forwarder's PUBACK and ack counters stop moving (bounded)."""
    seen, same = None, 0
    for _ in range(100):
        c = fw.counters()
        now = (c["pubacks"], c["forwarded"])
        same = same + 1 if now == seen else 0
        if same >= checks:
            return
        seen = now
        time.sleep(gap_s)


def freeze_mid_drain(broker, platform, fw, outbox, sent):
    """With the broker frozen (SIGSTOP) and the forwarder's window published, let the broker
    run in short bursts (SIGCONT, a few ms, SIGSTOP) until it is frozen at a moment when some
    rows were forwarded, every row the forwarder deleted after its PUBACK has also reached the
    platform, and some rows are left. (Mosquitto may PUBACK before it writes to a subscriber;
    what it holds when killed is the broker's loss, RELIABILITY rule 3, not the gateway's.)
    The drain is gated by the bursts, so however fast it runs it cannot finish unseen.
    Returns the keys left in the outbox."""
    tries = []
    for i in range(60):
        broker.proc.send_signal(signal.SIGCONT)
        time.sleep(0.001 * (1 + i % 4))
        broker.proc.send_signal(signal.SIGSTOP)
        quiet(fw)
        left = stored_keys(outbox)
        behind = len(set(sent) - left - set(platform.readings()[0]))
        if left and len(left) < len(sent) and not behind:
            return left
        tries.append((len(left), behind))
    raise AssertionError("could not freeze the broker mid-drain: (rows left, deleted rows not "
                         "yet at the platform) per try: %r" % tries)


def test_broker_killed_mid_drain_and_restarted_everything_arrives(outbox):
    with Mosquitto(users=PW, acl=ACL, persistence=True) as broker:
        platform = Platform(broker, persistent=True)
        assert broker.wait_saved(b"civicedge/v1/#")  # the platform's session survives a kill
        fw = forwarder(upstream_cfg(broker, max_inflight=2, per_publish=20))
        fw.start(outbox)
        try:
            assert wait_until(lambda: fw.status()["connected"])
            broker.proc.send_signal(signal.SIGSTOP)  # the drain moves only in freeze_mid_drain
            sent = fill(outbox, 3000)
            fw.wake()
            assert wait_until(lambda: fw.counters()["publishes"] >= 1)
            left = freeze_mid_drain(broker, platform, fw, outbox, sent)
            broker.kill()
            assert wait_until(lambda: not fw.status()["connected"])
            assert wait_until(lambda: fw.counters()["connect_failures.network"] >= 1)
            # while the broker is down the rows stay, released for the next connection
            assert stored_keys(outbox) == left
            assert outbox.stats().in_flight == 0
            assert fw.status()["last_error"]
            broker.start()
            assert wait_until(lambda: rows_stored(outbox) == 0, 20)
            assert wait_until(lambda: len(platform.readings()[0]) == 3000, 20)
            got, copies = platform.readings()
            assert got == sent  # every row at least once, nothing lost
            c = fw.counters()
            assert c["reconnects"] >= 1 and c["forwarded"] >= 3000
        finally:
            fw.stop()
            platform.close()


def test_a_wrong_ca_never_connects_is_counted_as_tls_and_keeps_the_rows(tls, tmp_path, outbox):
    other = make_test_tls(str(tmp_path))  # a CA that did not sign the broker's certificate
    with Mosquitto(users=PW, acl=ACL, tls=tls) as broker:
        fill(outbox, 50)
        fw = forwarder(upstream_cfg(broker, other["cafile"]))
        fw.start(outbox)
        try:
            assert wait_until(lambda: fw.counters()["connect_failures.tls"] >= 2)
            c, s = fw.counters(), fw.status()
            assert not s["connected"] and "CERTIFICATE_VERIFY_FAILED" in s["last_error"]
            assert c["publishes"] == c["forwarded"] == c["connects"] == 0
            assert rows_stored(outbox) == 50 and outbox.stats().in_flight == 0
        finally:
            assert fw.stop()
        assert "as civicedge-site-a-gw-1" not in broker.log_text()  # no MQTT session at all


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_bad_password_is_counted_as_auth_and_keeps_the_rows(outbox, protocol):
    with Mosquitto(users=PW, acl=ACL) as broker:
        fill(outbox, 20)
        fw = forwarder(upstream_cfg(broker), password="not-the-password-9f8e7d", protocol=protocol)
        fw.start(outbox)
        try:
            assert wait_until(lambda: fw.counters()["connect_failures.auth"] >= 2)
            c = fw.counters()
            assert c["forwarded"] == c["publishes"] == 0 and c["connect_failures.network"] == 0
            assert "password" in fw.status()["last_error"]
            assert rows_stored(outbox) == 20
        finally:
            assert fw.stop()


def test_retained_status_online_then_offline_on_a_clean_stop(outbox):
    with Mosquitto(users=PW, acl=ACL) as broker:
        early = Platform(broker, client_id="early")
        fw = forwarder(upstream_cfg(broker))
        fw.start(outbox)
        try:
            assert wait_until(lambda: (early.status() or {}).get("state") == "online")
            assert not early.of("/status")[0][2]  # live, not retained: it was not there before
            early.close()
            late = Platform(broker, client_id="late")  # subscribes after: sees the retained one
            assert wait_until(lambda: late.of("/status"))
            topic, payload, retained = late.of("/status")[0]
            assert topic == "civicedge/v1/site-a/gateway/gw-1/status" and retained
            assert json.loads(payload)["state"] == "online"
        finally:
            assert fw.stop()
        assert wait_until(lambda: late.status()["state"] == "offline")
        late.close()
        again = Platform(broker, client_id="again")
        assert wait_until(lambda: again.of("/status"))
        assert json.loads(again.of("/status")[0][1]) == {
            "state": "offline", "site": SITE, "gateway": GW, "reason": "stopped"}
        again.close()


_CHILD = r"""
import json, sys, time
from gateway.clock import SystemClock
from gateway.config_types import MQTTConnection, MQTTUpstream
from gateway.forward.mqtt import MQTTForwarder
from gateway.outbox import Outbox
a = json.loads(sys.argv[1])
up = MQTTUpstream(MQTTConnection(a["host"], a["port"], False, True, None, None, None, "gw-1",
                  "/unused", "civicedge-site-a-gw-1", 30), "senml-json", 4, 25)
fw = MQTTForwarder(up, a["password"], "site-a", "gw-1", SystemClock())
fw.start(Outbox(a["db"], 1 << 20, 3600, SystemClock()))
while not fw.status()["connected"]:
    time.sleep(0.01)
print("connected", flush=True)
time.sleep(60)
"""


def test_last_will_says_offline_when_the_gateway_process_dies(tmp_path):
    with Mosquitto(users=PW, acl=ACL) as broker:
        platform = Platform(broker)
        args = {"host": broker.host, "port": broker.port, "password": PW["gw-1"],
                "db": str(tmp_path / "child.db")}
        child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(args)], cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = child.stdout.readline()  # bounded: the child exits on its own after 60 s
            assert line.strip() == "connected", child.stderr.read()
            assert wait_until(lambda: (platform.status() or {}).get("state") == "online")
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            assert wait_until(lambda: platform.status()["state"] == "offline")
            assert platform.status() == {"state": "offline", "site": SITE, "gateway": GW}
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
            child.stdout.close()
            child.stderr.close()
            platform.close()
        late = Platform(broker, client_id="late")
        assert wait_until(lambda: late.of("/status"))
        assert late.of("/status")[0][2] and late.status()["state"] == "offline"  # retained
        late.close()


def test_alarms_node_gaps_and_outbox_gap_markers_reach_their_topics(tmp_path):
    ev = {"kind": "raised", "rule": "co2-high", "device_id": "class-1", "quantity": "co2_ppm",
          "value": 1650, "since": T0 - 1200, "at": T0, "severity": "warning", "detail": {}}
    with Outbox(str(tmp_path / "small.db"), 6000, 86400, SystemClock()) as ob, \
            Mosquitto(users=PW, acl=ACL) as broker:
        alarm = {"seq": 0, "t": T0, "values": [["co2_ppm", 1650, "ok"]], "alarms": [ev]}
        node_gap = {"seq": 1, "t": T0, "kind": "gap", "dropped": 3, "first_seq": 90,
                    "last_seq": 92}
        ob.put_many([OutboxRecord("class-1", 2, 0, alarm, "alarm"),
                     OutboxRecord("class-1", 2, 1, node_gap, "alarm")])
        fill(ob, 120, devices=("bin-3",))  # over the size bound: the oldest routine rows go
        dropped = ob.stats().dropped["routine"]
        assert dropped > 0 and ob.stats().gap_markers == 1
        platform = Platform(broker)
        fw = forwarder(upstream_cfg(broker))
        fw.start(ob)
        try:
            assert wait_until(lambda: rows_stored(ob) == 0 and ob.stats().gap_markers == 0)
            (a,) = platform.of("/alarms")
            assert a[0] == "civicedge/v1/site-a/class-1/alarms"
            assert json.loads(a[1]) == {"gateway": GW, "key": ["class-1", 2, 0], "t": T0,
                                        "alarms": [ev]}
            gaps = {json.loads(p)["reason"]: (t, json.loads(p)) for t, p, _ in platform.of("/gaps")}
            t, marker = gaps["gateway_outbox"]
            assert t == "civicedge/v1/site-a/bin-3/gaps"
            assert (marker["dropped"], marker["alarms"], marker["first_seq"]) == (dropped, 0, 0)
            assert marker["last_seq"] == dropped - 1  # exactly the oldest rows
            t, node = gaps["node_log"]
            assert t == "civicedge/v1/site-a/class-1/gaps" and node["key"] == ["class-1", 2, 1]
            got, _ = platform.readings()
            assert set(got) == {("class-1", 2, 0), ("class-1", 2, 1)} | {
                ("bin-3", 1, i) for i in range(dropped, 120)}
            assert fw.counters()["gaps_forwarded"] == 1
        finally:
            assert fw.stop()
            platform.close()


def test_mqtt5_a_publish_the_acl_refuses_is_not_acked_and_is_counted(outbox):
    acl = ["user gw-1", "topic write civicedge/v1/site-a/+/readings",
           "topic write civicedge/v1/site-a/gateway/#",
           "user platform", "topic read civicedge/v1/#"]  # no .../alarms for the gateway
    ev = {"kind": "raised", "rule": "r", "device_id": "class-1", "value": 1, "at": T0}
    with Mosquitto(users=PW, acl=acl) as broker:
        outbox.put_many([OutboxRecord("class-1", 1, 0, {"seq": 0, "t": T0, "alarms": [ev],
                                                        "values": [["co2_ppm", 1, "ok"]]},
                                      "alarm")])
        fill(outbox, 30, start=1)
        fw = forwarder(upstream_cfg(broker))
        fw.start(outbox)
        try:
            assert wait_until(lambda: fw.counters()["publish_errors"] >= 2)
            assert wait_until(lambda: outbox.stats().rows["routine"] == 0)
            assert outbox.stats().rows["alarm"] == 1  # its alarms message never got through
            assert "Not authorized" in fw.status()["last_error"]
        finally:
            assert fw.stop()
        assert rows_stored(outbox) == 1


def test_wake_sends_new_rows_and_does_not_hurry_a_reconnect(outbox):
    with Mosquitto(users=PW, acl=ACL) as broker:
        platform = Platform(broker)
        fw = forwarder(upstream_cfg(broker))
        fw.start(outbox)
        try:
            assert wait_until(lambda: fw.status()["connected"])
            sent = fill(outbox, 40)
            fw.wake()
            assert wait_until(lambda: len(platform.readings()[0]) == 40)
            assert platform.readings()[0] == sent
        finally:
            assert fw.stop()
            platform.close()
        port = broker.port
    # nobody listens on the port now: one failure, then a long backoff that wake() must not cut
    down = upstream_cfg(type("B", (), {"host": "127.0.0.1", "port": port})())
    fw = forwarder(down, backoff=Backoff(30, 60, rng=random.Random(1)))
    fw.start(outbox)
    try:
        assert wait_until(lambda: fw.counters()["connect_failures.network"] == 1
                          and fw.status()["detail"].startswith("waiting"))
        fill(outbox, 5, start=100)
        for _ in range(100):
            fw.wake()
        time.sleep(0.3)
        assert fw.counters()["connect_failures.network"] == 1  # asleep until the backoff ends
    finally:
        assert fw.stop(timeout_s=2.0)  # a stop cuts the backoff short
