"""simulators.fleet.site.Platform, the council's platform stand-in, on a real Mosquitto: what it
keeps of the messages the gateways publish, the arrival stamps, and the errors it reports.

Readings messages are stamped as they arrive and decoded when ``arrived`` is read: these
tests check that the records, stamps and errors come out as a platform decoding at once
would give them."""

import json
import types

import paho.mqtt.client as mqtt

from gateway import upstream as U
from gateway.outbox_policy import OutboxRow
from simulators.broker import Mosquitto
from simulators.fleet.site import PLATFORM, Platform
from tests.gatewaykit import wait_until

SITE, GW = "oakfield", "sch1-gw"
PLATFORM_PW, GW_PW = "platform-test-pw", "gateway-test-pw"
G_WALL = 1772445600.0          # the fleet's global time G (Unix s) the platform sees
NODE_WALL = {"rm01": G_WALL + 12.5}  # rm01's own clock is 12.5 s ahead of G


def _reading(seq, co2):
    rec = {"seq": seq, "t": 1772445590, "values": [["co2_ppm", co2, "ok"], ["temperature_c", 21.5, "ok"]]}
    return OutboxRow(seq + 1, "rm01", 3, seq, "routine", 0, None, rec)


def _publish(broker, messages):
    """Publish ``(topic, payload)`` pairs at QoS 1 as the gateway, each acknowledged."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-gw", protocol=mqtt.MQTTv311)
    c.username_pw_set(GW, GW_PW)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        for topic, payload in messages:
            c.publish(topic, payload, qos=1).wait_for_publish(5.0)
    finally:
        c.loop_stop()
        c.disconnect()


def _platform(broker):
    brokers = types.SimpleNamespace(platform_pw=PLATFORM_PW, council=broker)
    p = Platform(brokers, lambda: G_WALL, NODE_WALL.get)
    assert p.subscribed.wait(5.0)
    return p


def test_readings_are_kept_with_their_arrival_stamp_and_decoded_when_read():
    with Mosquitto(users={PLATFORM: PLATFORM_PW, GW: GW_PW}) as broker:
        platform = _platform(broker)
        try:
            (msg,) = U.encode_rows([_reading(7, 612), _reading(8, 640)], SITE, GW)
            _publish(broker, [(msg.topic, msg.payload)])
            assert wait_until(lambda: platform.count() == 1, 5.0)
            got = [(a["device"], a["epoch"], a["seq"], a["kind"], a["values"]["co2_ppm"], a["arrived_wall_s"])
                   for a in platform.arrived]
        finally:
            platform.close()
    # stamped with rm01's own clock, the later of it and G (a forwarded reading never arrives before it left)
    assert got == [("rm01", 3, 7, "reading", [612, "ok"], G_WALL + 12.5),
                   ("rm01", 3, 8, "reading", [640, "ok"], G_WALL + 12.5)]
    assert platform.bad == []


def test_bad_payloads_and_a_pack_on_another_devices_topic_are_reported():
    with Mosquitto(users={PLATFORM: PLATFORM_PW, GW: GW_PW}) as broker:
        platform = _platform(broker)
        try:
            (msg,) = U.encode_rows([_reading(9, 700)], SITE, GW)
            wrong_topic = U.topic(SITE, "rm02", U.READINGS)
            _publish(broker, [(U.topic(SITE, "rm01", U.READINGS), b"[{not json"),
                              (wrong_topic, msg.payload),
                              (U.topic(SITE, "rm01", U.GAPS), b"{\"marker\": 5")])
            assert wait_until(lambda: platform.count() == 3, 5.0)
            arrived = list(platform.arrived)
        finally:
            platform.close()
    # the corrupt pack and the corrupt gap message are errors; the misfiled pack is kept under
    # the device it names (stamped at G: rm02's topic, and rm02's clock is unknown) and reported
    assert [(a["device"], a["seq"], a["arrived_wall_s"]) for a in arrived] == [("rm01", 9, G_WALL)]
    errors = {(b["topic"], "on the topic of" in b["error"]) for b in platform.bad}
    assert errors == {(U.topic(SITE, "rm01", U.READINGS), False), (wrong_topic, True),
                      (U.topic(SITE, "rm01", U.GAPS), False)}
    assert "'rm01'" in [b for b in platform.bad if b["topic"] == wrong_topic][0]["error"]
    assert json.dumps(platform.bad)  # JSON-able: it goes into the run record as it is
