"""The ChirpStack source against a real Mosquitto: ChirpStack's user publishes v4 ``up``
events (built from ``chirpstack_api`` messages, a real LoRaWAN pack inside); the source hands
the pack, devEUI and deduplicationId to the agent, the pipeline unpacks it, and foreign or
malformed events are counted by reason, never raised."""

import base64
import json
import time

import paho.mqtt.client as mqtt
import pytest
from chirpstack_api import integration
from google.protobuf import json_format

from gateway.config_types import ChirpStackSource as ChirpCfg
from gateway.config_types import MQTTConnection
from gateway.pipeline import Ingest
from gateway.sources import LORAWAN
from gateway.sources.chirpstack import ChirpStackSource
from protocol import lorapack
from tests.gatewaykit import broker_fixture, needs_mosquitto, wait_until

pytestmark = needs_mosquitto

APP = "6f1c0f7e-2d8a-4a43-9a4e-0c3b1f6d2a11"
OTHER_APP = "0b7e9a52-4f1d-4c5e-8a3b-6d2e1f0c9b88"
EUI = "70b3d57ed0000a01"
PW = {"gateway": "gw-3c9e7a51d2f08b", "chirpstack": "cs-d1e2f3a4b5c6d7"}
ACL = ["user gateway", "topic read application/+/device/+/event/up",
       "user chirpstack", "topic write application/#"]


class Clock:
    def wall_s(self):
        return 1767571200.0

    def wall_trusted(self):
        return False


def pack_payload(epoch=3, first=0, n=3):
    recs = [{"seq": first + i, "t": 1767571200 + 300 * i,
             "values": [["temperature_c", 55.0 - i, "ok"]]} for i in range(n)]
    payload, taken = lorapack.pack(recs, 51, epoch)
    assert taken == n
    return payload


def up_event(data, dedup="dd-1", eui=EUI, f_port=2, time_s=1767600000):
    ev = integration.UplinkEvent(deduplication_id=dedup, f_port=f_port, f_cnt=7, data=data)
    ev.device_info.dev_eui = eui
    ev.device_info.application_id = APP
    if time_s is not None:
        ev.time.seconds = time_s
    return json_format.MessageToJson(ev).encode()


class ChirpStackPublisher:
    def __init__(self, broker):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="chirpstack",
                             protocol=mqtt.MQTTv311)
        self.c.username_pw_set("chirpstack", PW["chirpstack"])
        self.c.connect(broker.host, broker.port, keepalive=10)
        self.c.loop_start()

    def publish(self, payload, eui=EUI, app=APP, qos=1):
        info = self.c.publish("application/%s/device/%s/event/up" % (app, eui), payload, qos=qos)
        info.wait_for_publish(5)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def cfg(broker, app=APP):
    c = MQTTConnection(host="127.0.0.1", port=broker.port, tls=False, tls_verify=True,
                       ca_file=None, client_cert_file=None, client_key_file=None,
                       username="gateway", password_file=None, client_id="civicedge-gw1-cs",
                       keepalive_s=10)
    return ChirpCfg(c, app)


broker = broker_fixture(PW, ACL)


def test_uplinks_reach_the_pipeline_and_bad_events_are_counted(broker):
    arrivals = []
    src = ChirpStackSource(cfg(broker), PW["gateway"], Clock(), reconnect_min_s=0.05,
                           reconnect_max_s=0.3)
    src.start(lambda a: arrivals.append(a) or True)
    cs = ChirpStackPublisher(broker)
    try:
        assert wait_until(lambda: src.status()["connected"])
        payload = pack_payload()
        cs.publish(up_event(payload, dedup="dd-1"))
        cs.publish(up_event(payload, dedup="dd-1"))               # delivered twice (QoS 1)
        cs.publish(up_event(pack_payload(first=3, n=1), dedup="dd-2", time_s=None))
        cs.publish(up_event(b"\x00", dedup="dd-3", f_port=0))     # MAC commands: not ours
        cs.publish(b'{"deviceInfo": ')                            # truncated JSON
        cs.publish(up_event(payload, dedup="dd-4", eui="70b3d57ed0000a02"))  # topic says a01
        cs.publish(up_event(payload, dedup="dd-5"), app=OTHER_APP)  # another application
        assert wait_until(lambda: src.counters()["messages"] == 6)
        c = src.counters()
        assert c["uplinks"] == 3 and sum(v for k, v in c.items() if k.startswith("dropped.")) == 3
        assert (c["dropped.other_port"], c["dropped.json"], c["dropped.topic_mismatch"]) == (1, 1, 1)
        a = arrivals[0]
        assert (a.kind, a.data, a.source, a.dev_eui, a.dedup_id, a.received_s, a.reply) == (
            LORAWAN, payload, "chirpstack", EUI, "dd-1", 1767600000.0, None)
        assert arrivals[2].received_s is None  # no event time, and the Pi's clock untrusted
        ing = Ingest({}, dev_euis={EUI: "outlet-1"})
        results = [ing.ingest_lorawan(x.dev_eui, x.data, x.dedup_id, received_s=x.received_s,
                                      source=x.source) for x in arrivals]
        assert [r.accepted for r in results] == [True, False, True]
        assert results[1].reason == "duplicate_uplinks"
        assert [r.record["seq"] for r in results[0].records + results[2].records] == [0, 1, 2, 3]
    finally:
        cs.close()
        src.stop()


def test_application_filter_and_arbitrary_payloads_never_stop_it(broker):
    arrivals = []
    src = ChirpStackSource(cfg(broker, OTHER_APP), PW["gateway"], Clock())
    src.start(lambda a: arrivals.append(a) or True)
    cs = ChirpStackPublisher(broker)
    try:
        assert wait_until(lambda: src.status()["connected"])
        cs.publish(up_event(pack_payload()))                     # APP: not subscribed
        for junk in (b"", b"\xff" * 10, json.dumps({"data": base64.b64encode(b"x").decode()}).encode(),
                     b"null", b'{"fPort": 99999999999}'):
            cs.publish(junk, app=OTHER_APP)
        cs.publish(up_event(pack_payload()), app=OTHER_APP)
        assert wait_until(lambda: src.counters()["uplinks"] == 1)
        c = src.counters()
        dropped = sum(v for k, v in c.items() if k.startswith("dropped."))
        assert c["messages"] == 6 and dropped == 5 and c["handler_errors"] == 0
        assert len(arrivals) == 1
    finally:
        cs.close()
        src.stop()


def test_the_puback_waits_until_the_agent_settled_the_uplink(broker):
    """A gateway killed between taking an uplink and storing it must get it again: the
    source PUBACKs only once the agent settled it, so the broker (persistent session)
    delivers an unsettled uplink again to the next connection; a settled one never."""
    cs = ChirpStackPublisher(broker)
    got = []
    first = ChirpStackSource(cfg(broker), PW["gateway"], Clock(), reconnect_min_s=0.05)
    first.start(got.append)  # takes every uplink (None: not a refusal), never settles
    try:
        assert wait_until(lambda: first.status()["connected"])
        cs.publish(up_event(pack_payload(), dedup="dd-1"))
        assert wait_until(lambda: len(got) == 1)
    finally:
        first.stop()  # as if killed before the commit: no PUBACK went out
    again = []
    second = ChirpStackSource(cfg(broker), PW["gateway"], Clock(), reconnect_min_s=0.05)
    second.start(lambda a: again.append(a) or True)
    try:
        assert wait_until(lambda: [a.dedup_id for a in again] == ["dd-1"])
        again[0].settled(True)  # stored: the PUBACK goes now
        assert wait_until(lambda: second.counters()["held"] == 0)
    finally:
        second.stop()
    last = []
    third = ChirpStackSource(cfg(broker), PW["gateway"], Clock(), reconnect_min_s=0.05)
    third.start(lambda a: last.append(a) or True)
    try:
        assert wait_until(lambda: third.status()["connected"])
        cs.publish(up_event(pack_payload(first=3, n=1), dedup="dd-2"))
        assert wait_until(lambda: len(last) >= 1)
        assert [a.dedup_id for a in last] == ["dd-2"]  # the settled one did not come back
    finally:
        third.stop()
        cs.close()


def test_an_uplink_not_stored_is_held_and_handed_over_again(broker):
    cs = ChirpStackPublisher(broker)
    got = []
    src = ChirpStackSource(cfg(broker), PW["gateway"], Clock(), devices={EUI: "outlet-1"},
                           retry_min_s=0.02, retry_max_s=0.05)
    src.start(lambda a: got.append(a) or True)
    try:
        assert wait_until(lambda: src.status()["connected"])
        cs.publish(up_event(pack_payload(), dedup="dd-1"))
        assert wait_until(lambda: len(got) == 1)
        got[0].settled(False)  # the outbox refused the batch (a full disk)
        assert wait_until(lambda: len(got) == 2)  # handed over again
        assert got[1].dedup_id == "dd-1" and got[1].data == got[0].data
        got[1].settled(False)
        assert wait_until(lambda: len(got) == 3)
        got[2].settled(True)
        assert wait_until(lambda: src.counters()["holding"] == 0)
        c = src.counters()
        assert (c["uplinks"], c["held"], c["retried"], c["dropped.held_full"]) == (1, 1, 2, 0)
    finally:
        src.stop()
        cs.close()
    assert src.counters()["lost_at_stop"] == 0
