"""The fleet's fallback broker, amqtt (``simulators/fleet/amqtt_broker.py``): chosen when
Mosquitto does not start, it serves the site's listeners as Mosquitto does — TLS with the
site's certificate and a password per node, a plain loopback listener for the gateways and
the network server — with the same per-user ACL, failing closed; and a small site (serial,
MQTT and LoRaWAN nodes) runs end to end on it (``CIVICEDGE_SIM_BROKER=amqtt``) with every record
accounted for."""

import json
import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from civicedge import cli
from simulators.fleet import amqtt_broker
from simulators.fleet.amqtt_broker import Acl, check_password, filter_covers, hash_password
from simulators.fleet.scenario_spec import GatewaySpec
from simulators.fleet.site import BROKER_ENV, SiteBrokers
from tests.e2e.test_fleet_determinism import DEVICES, scenario_toml

pytestmark = pytest.mark.skipif(not amqtt_broker.amqtt_available(), reason="amqtt not installed: scripts/setup")

SITE_ACL = ["pattern write civicedge/node/%u/up", "pattern read civicedge/node/%u/ack",
            "user gw-gw1", "topic readwrite civicedge/node/#"]


def test_acl_lines_mean_what_they_mean_to_mosquitto_and_unknown_ones_are_refused():
    acl = Acl(SITE_ACL)
    assert acl.allows("rm01", "c1", "civicedge/node/rm01/up", "write")
    assert not acl.allows("rm01", "c1", "civicedge/node/rm02/up", "write")  # another node's topic
    assert not acl.allows("rm01", "c1", "civicedge/node/rm01/up", "read")
    assert acl.allows("rm01", "c1", "civicedge/node/rm01/ack", "read", subscribe=True)
    assert not acl.allows("rm01", "c1", "civicedge/node/+/ack", "read", subscribe=True)
    assert acl.allows("gw-gw1", "g", "civicedge/node/+/up", "read", subscribe=True)
    assert not acl.allows("gw-gw1", "g", "#", "read", subscribe=True)
    assert not acl.allows(None, "c1", "civicedge/node/rm01/up", "write")  # anonymous: never
    assert not acl.allows("a+b", "c1", "civicedge/node/a+b/up", "write")  # wildcards in a name
    assert filter_covers("a/#", "a/b/+") and filter_covers("a/+/c", "a/+/c") and not filter_covers("a/+", "a/#")
    with pytest.raises(ValueError, match="line 2"):
        Acl(["user x", "deny civicedge/#"])
    with pytest.raises(ValueError, match="access"):
        Acl(["user x", "topic readonly civicedge/#"])


def test_passwords_are_stored_hashed_and_only_the_right_one_matches():
    stored = hash_password("sim-secret")
    assert "sim-secret" not in stored and stored != hash_password("sim-secret")  # salted
    assert check_password("sim-secret", stored)
    assert not check_password("sim-secreT", stored) and not check_password("", stored)
    assert not check_password("sim-secret", "plain:sim-secret")
    with pytest.raises(ValueError, match="password"):
        hash_password("")


class Client:
    """A paho client that records what it receives and how CONNECT went."""

    def __init__(self, port, user, pw, client_id, cafile=None):
        self.got, self.rc, self.ready = [], None, threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                        protocol=mqtt.MQTTv311)
        if user:
            c.username_pw_set(user, pw)
        if cafile:
            c.tls_set(ca_certs=cafile)
        c.on_connect = self._on_connect
        c.on_message = lambda cl, u, m: self.got.append((m.topic, bytes(m.payload)))
        c.connect("127.0.0.1", port, keepalive=10)
        c.loop_start()
        self.client = c
        assert self.ready.wait(10), "no CONNACK"

    def _on_connect(self, client, userdata, flags, rc, props):
        self.rc = rc
        self.ready.set()

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(pred, timeout_s=10.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and not pred():
        time.sleep(0.05)
    return pred()


def test_the_site_falls_back_to_amqtt_when_mosquitto_will_not_start(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mosquitto").write_text("#!/bin/sh\necho 'mosquitto: cannot start' >&2\nexit 1\n")
    os.chmod(fake / "mosquitto", 0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (fake, os.environ["PATH"]))
    monkeypatch.delenv(BROKER_ENV, raising=False)
    brokers = SiteBrokers(str(tmp_path / "brokers"), ["rm01", "rm02"], [GatewaySpec("gw1", "sch1", False)]).start()
    clients = []
    try:
        assert brokers.kind == "amqtt" and "mosquitto" in brokers.why
        assert brokers.describe().startswith("amqtt (mosquitto could not be started")
        ca = brokers.tls["cafile"]
        gw = Client(brokers.plain_port, "gw-gw1", brokers.gw_pw["gw1"], "gw1-site")
        clients.append(gw)
        gw.client.subscribe("civicedge/node/+/up", qos=1)
        node = Client(brokers.site.port, "rm01", brokers.node_pw["rm01"], "rm01", cafile=ca)  # TLS + password
        clients.append(node)
        node.client.subscribe("civicedge/node/rm01/ack", qos=1)
        time.sleep(0.3)
        node.publish("civicedge/node/rm02/up", b"spoofed")  # another node's topic: dropped
        node.publish("civicedge/node/rm01/up", b"reading")
        gw.publish("civicedge/node/rm01/ack", b"ack")
        assert wait_for(lambda: gw.got and node.got)
        time.sleep(0.3)
        assert gw.got == [("civicedge/node/rm01/up", b"reading")] and node.got == [("civicedge/node/rm01/ack", b"ack")]
        assert gw.rc == 0 and node.rc == 0
        wrong = Client(brokers.site.port, "rm02", "not-the-password", "rm02", cafile=ca)
        clients.append(wrong)
        anonymous = Client(brokers.plain_port, None, None, "anon")
        clients.append(anonymous)
        assert wrong.rc != 0 and anonymous.rc != 0  # refused (CONNACK "not authorised")
        # the council's broker, through the gateway's proxy, to the platform's user
        platform = Client(brokers.council.port, "platform", brokers.platform_pw, "council-platform")
        clients.append(platform)
        platform.client.subscribe("civicedge/v1/#", qos=1)
        up = Client(brokers.proxies["gw1"].port, "up-gw1", brokers.up_pw["gw1"], "civicedge-sch1-gw1")
        clients.append(up)
        time.sleep(0.3)
        up.publish("civicedge/v1/other/rm01/readings", b"not its site")  # the ACL drops it
        up.publish("civicedge/v1/sch1/rm01/readings", b"pack")
        assert wait_for(lambda: platform.got)
        time.sleep(0.3)
        assert platform.got == [("civicedge/v1/sch1/rm01/readings", b"pack")]
    finally:
        for c in clients:
            c.close()
        brokers.close()


def test_a_small_site_runs_end_to_end_on_amqtt(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(BROKER_ENV, "amqtt")
    outage = [{"kind": "broker_outage", "at": "09:08", "duration": "6m", "target": "gw1"}]
    (tmp_path / "site.toml").write_text(scenario_toml(4, name="amqtt-site", duration="30m", faults=outage))
    rc = cli.main(["sim", "run", str(tmp_path / "site.toml"), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    run, acct = report["run"], report["account"]
    assert rc == 0, out + err
    assert "brokers: amqtt (%s=amqtt)" % BROKER_ENV in err
    assert run["broker"] == {"kind": "amqtt", "why": "%s=amqtt" % BROKER_ENV}
    total = acct["total"]["records"]
    forwarders = {gw: {k: v for k, v in c.items() if k.startswith("forwarder.")}
                  for gw, c in run["counters"].items()}  # why rows stayed, if they did
    assert total["lost"] == 0 and total["produced"] > 0 and run["held_gateway"] == {"gw1": []}, \
        (total, run["held_gateway"], forwarders, run["gateway_stats"])
    # 30 min at interval_s 120: about 15 readings a node, over serial, MQTT (TLS to amqtt) and
    # LoRaWAN (the network server publishing to amqtt), all delivered or still on a node
    per_device = {}
    for rec in run["arrived"]:
        per_device.setdefault(rec["device"], set()).add((rec["epoch"], rec["seq"]))
    assert set(per_device) == DEVICES
    assert all(len(keys) >= 8 for keys in per_device.values())
    assert not run["platform_errors"]
    assert acct["total"]["latency"]["p50_s"] >= 0
