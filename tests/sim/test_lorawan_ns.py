"""The network-server stand-in: ChirpStack v4 up events from the radio's copies (one event
and one deduplicationId per frame, rxInfo per gateway), frame-counter replay rejection as
ChirpStack does it, sessions and joins, downlinks; and the whole simulated LoRaWAN chain —
emulated modems driven by the real AT driver → radio → network server → a real Mosquitto →
the real gateway's ChirpStackSource, whose packs unpack to what the nodes sent."""

import base64
import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
import serial

from drivers.atmodem import ATModem, SendResult
from gateway.config_types import ChirpStackSource as ChirpCfg
from gateway.config_types import MQTTConnection
from gateway.sources.chirpstack import ChirpStackSource, parse_up_event
from protocol import airtime, lorapack
from protocol.lorapack_decode import unpack
from simulators.atmodem import ATModemEmulator
from simulators.atmodem_radio import CHANNELS_HZ, Uplink
from simulators.broker import Mosquitto, make_test_tls, mosquitto_available
from simulators.clock import VirtualClock
from simulators.lorawan_link import JoinRequest
from simulators.lorawan_ns import NetworkServer, Verdict
from simulators.lorawan_radio import Radio

APP = "6f1c0f7e-2d8a-4a43-9a4e-0c3b1f6d2a11"
GW_A, GW_B = "0016c001f153a14c", "0016c001f153a14d"
EUI_A, EUI_B, EUI_C = "70B3D57ED0000A01", "70B3D57ED0000A02", "70B3D57ED0000A03"
UNKNOWN = "00000000000000FF"
DEVICES = {EUI_A: "outlet-1", EUI_B: "outlet-2", EUI_C: "outlet-3"}
JOIN_EUI = "70B3D57ED0000001"
APP_KEY = "2B7E151628AED2A6ABF7158809CF4F3C"
PW = {"gateway": "gw-3c9e7a51d2f08b", "chirpstack": "cs-d1e2f3a4b5c6d7"}
ACL = ["user gateway", "topic read application/+/device/+/event/up",
       "user chirpstack", "topic write application/#", "topic read application/+/device/+/command/down"]


def uplink(eui=EUI_A, fcnt=0, payload=b"\x01\x02", dev_addr=0x26011234, confirmed=False, t_s=0.0,
           freq=CHANNELS_HZ[0], dr=5):
    return Uplink(dev_eui=eui, dev_addr=dev_addr, fcnt=fcnt, port=2, payload=payload, dr=dr,
                  confirmed=confirmed, airtime_ms=airtime.dr_airtime_ms(dr, len(payload)),
                  freq_hz=freq, t_s=t_s)


class Chain:
    """Radio with two gateways and an offline network server on one clock."""

    def __init__(self, seed=0, **ns_kw):
        self.clock = VirtualClock()
        self.radio = Radio(seed=seed, sites={EUI_A: {GW_A: 10, GW_B: 12}, EUI_B: {GW_A: 15, GW_B: 9000},
                                             UNKNOWN: {GW_A: 10}})
        self.ns = NetworkServer(None, None, None, None, APP, DEVICES, clock=self.clock, seed=seed,
                                **ns_kw)
        self.link = self.radio.link(self.ns)

    def send(self, up):
        self.clock.advance_s(10)
        up.t_s = self.clock.monotonic_s()
        self.link(up)
        return self.link.last[1]

    def events(self, kind="up"):
        return [json.loads(text) for topic, text in self.ns.events if topic.endswith("/event/" + kind)]


def test_copies_from_two_gateways_make_one_chirpstack_up_event():
    c = Chain()
    v = c.send(uplink(EUI_A, fcnt=0, payload=b"\xaa\xbb"))
    assert isinstance(v, Verdict) and v.accepted and not v.ack and v.downlink is None
    ((topic, text),) = c.ns.events
    assert topic == "application/%s/device/%s/event/up" % (APP, EUI_A.lower())
    ev = json.loads(text)
    assert ev["deduplicationId"] == v.dedup_id and len(v.dedup_id) == 36
    assert ev["deviceInfo"]["devEui"] == EUI_A.lower() and ev["deviceInfo"]["deviceName"] == "outlet-1"
    assert ev["deviceInfo"]["applicationId"] == APP
    assert (ev["fPort"], ev["dr"], ev["devAddr"], ev.get("fCnt", 0)) == (2, 5, "26011234", 0)
    assert [rx["gatewayId"] for rx in ev["rxInfo"]] == [GW_A, GW_B]
    tx, _ = c.link.last
    for rx, copy in zip(ev["rxInfo"], tx.receptions):
        assert rx["rssi"] == round(copy.rssi_dbm) and rx["snr"] == pytest.approx(copy.snr_db, abs=0.051)
        assert rx["crcStatus"] == "CRC_OK" and rx["context"]
    assert ev["txInfo"] == {"frequency": CHANNELS_HZ[0], "modulation": {"lora": {
        "bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}}}
    # The frame ends 10 s + its airtime (46.3 ms) after the clock's start (2026-01-05 00:00).
    assert tx.end_us == 10046336 and ev["time"] == "2026-01-05T00:00:10.046336Z"
    # The real gateway's parser reads it back.
    up = parse_up_event(text.encode(), topic_dev_eui=EUI_A.lower())
    assert (up.dev_eui, up.data, up.dedup_id, up.f_port) == (EUI_A.lower(), b"\xaa\xbb", v.dedup_id, 2)
    assert c.ns.counters["uplink_sets"] == 1 and c.ns.counters["copies"] == 2
    assert c.ns.counters["duplicates_merged"] == 1 and c.ns.counters["accepted"] == 1


def test_replayed_and_old_frame_counters_are_dropped_and_logged_as_chirpstack_does():
    c = Chain()
    for n in range(3):
        assert c.send(uplink(EUI_B, fcnt=n)).accepted
    again = c.send(uplink(EUI_B, fcnt=2))
    older = c.send(uplink(EUI_B, fcnt=0))
    assert (again.accepted, again.reason, older.accepted, older.reason) == (
        False, "fcnt_retransmission", False, "fcnt_reset")
    assert c.send(uplink(EUI_B, fcnt=7)).accepted  # a gap is fine: greater than the last
    assert not c.send(uplink(EUI_B, fcnt=5)).accepted
    n = c.ns.counters
    assert (n["accepted"], n["dropped_fcnt_retransmission"], n["dropped_fcnt_reset"]) == (4, 1, 2)
    assert len(c.events("up")) == 4
    logs = c.events("log")
    assert [e["code"] for e in logs] == ["UPLINK_F_CNT_RETRANSMISSION", "UPLINK_F_CNT_RESET",
                                         "UPLINK_F_CNT_RESET"]
    assert all(e["level"] == "WARNING" and e["context"]["deduplication_id"] for e in logs)


def test_unknown_devices_are_dropped_and_joins_accepted_for_known_dev_euis_only():
    c = Chain()
    v = c.send(uplink(UNKNOWN))
    assert not v.accepted and v.reason == "unknown_device"
    assert c.ns.join(EUI_A) is True and c.ns.join("0102030405060708") is False
    assert (c.ns.counters["joins"], c.ns.counters["joins_rejected"]) == (1, 1)
    assert c.ns.events == []


def test_sessions_a_new_dev_addr_resets_the_counter_and_an_old_one_is_refused():
    c = Chain()
    assert c.send(uplink(EUI_A, fcnt=5, dev_addr=0x26000001)).accepted
    # The modem joined again (the emulator did not tell us): new DevAddr, counter from 0.
    assert c.send(uplink(EUI_A, fcnt=0, dev_addr=0x26000002)).accepted
    assert c.send(uplink(EUI_A, fcnt=6, dev_addr=0x26000001)).reason == "unknown_session"
    assert c.ns.counters["sessions_implicit"] == 2
    # A join the network is told about binds the next DevAddr without an implicit session.
    assert c.ns.join(EUI_A)
    assert c.send(uplink(EUI_A, fcnt=0, dev_addr=0x26000003)).accepted
    assert c.send(uplink(EUI_A, fcnt=1, dev_addr=0x26000002)).reason == "unknown_session"
    assert c.ns.counters["sessions_implicit"] == 2


def test_require_join_refuses_sessions_it_did_not_accept():
    c = Chain(require_join=True)
    assert c.send(uplink(EUI_A)).reason == "unknown_session"
    assert c.ns.join(EUI_A) and c.send(uplink(EUI_A)).accepted
    assert c.send(uplink(EUI_A, fcnt=1, dev_addr=0x26999999)).reason == "unknown_session"


def test_confirmed_uplinks_are_acked_and_downlinks_wait_for_the_next_uplink():
    c = Chain()
    c.ns.queue_downlink(EUI_A.lower(), 10, b"\x01")
    c.ns.queue_downlink(EUI_A, 11, b"\x02")
    v1 = c.send(uplink(EUI_A, fcnt=0, confirmed=True))
    v2 = c.send(uplink(EUI_A, fcnt=1))
    v3 = c.send(uplink(EUI_A, fcnt=2))
    assert (v1.ack, v1.downlink, v2.ack, v2.downlink, v3.downlink) == (
        True, (10, b"\x01"), False, (11, b"\x02"), None)
    assert not c.send(uplink(EUI_A, fcnt=2, confirmed=True)).ack  # a replay is not acked
    assert json.loads(c.ns.events[0][1])["confirmed"] is True
    with pytest.raises(ValueError, match="port"):
        c.ns.queue_downlink(EUI_A, 0, b"")
    with pytest.raises(ValueError, match="dev_eui"):
        c.ns.queue_downlink("xyz", 1, b"")


def test_a_join_request_goes_over_the_radio_and_needs_a_known_dev_eui():
    c = Chain()

    def req(eui, t_s):
        return JoinRequest(dev_eui=eui, join_eui=JOIN_EUI, dr=0, freq_hz=CHANNELS_HZ[1], t_s=t_s)
    assert c.link.join(req(EUI_A, 5.0)) is True
    assert c.link.join(req(UNKNOWN, 10.0)) is False  # heard, refused
    assert c.link.join(req("70B3D57ED00000FF", 15.0)) is False  # placed nowhere: never heard
    assert (c.ns.counters["joins"], c.ns.counters["joins_rejected"]) == (1, 1)
    assert c.radio.counters["transmissions"] == 3 and c.radio.counters["heard"] == 2
    assert c.send(uplink(EUI_A)).accepted and c.ns.counters["sessions_implicit"] == 0


def test_identifiers_repeat_with_the_seed():
    def ids(seed):
        c = Chain(seed=seed)
        for n in range(3):
            c.send(uplink(EUI_A, fcnt=n))
        return [(e["deduplicationId"], [rx["uplinkId"] for rx in e["rxInfo"]]) for e in c.events()]
    assert ids(1) == ids(1) != ids(2)


# -- on a real broker ---------------------------------------------------------------------------

class Subscriber:
    def __init__(self, broker, tls):
        self.got, self.event = [], threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="app", protocol=mqtt.MQTTv311)
        self.c.username_pw_set("gateway", PW["gateway"])
        self.c.tls_set(ca_certs=tls["cafile"])
        self.c.on_message = lambda c, u, m: (self.got.append((m.topic, m.payload)), self.event.set())
        self.c.connect(broker.host, broker.port, keepalive=10)
        self.c.subscribe("application/%s/device/+/event/up" % APP, qos=1)
        self.c.loop_start()

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed: scripts/setup")
def test_tls_events_out_and_chirpstack_downlink_commands_in(tmp_path):
    tls = make_test_tls(str(tmp_path))
    c = Chain()
    with Mosquitto(users=PW, tls=tls) as broker:
        ns = NetworkServer(broker.host, broker.port, "chirpstack", PW["chirpstack"], APP, DEVICES,
                           tls=tls, clock=c.clock).start()
        c.link.ns = c.ns = ns
        app = Subscriber(broker, tls)
        try:
            assert wait_until(lambda: ns.connected and ns.subscribed)
            down = "application/%s/device/%s/command/down" % (APP, EUI_A.lower())
            cmd = {"devEui": EUI_A.lower(), "confirmed": False, "fPort": 10,
                   "data": base64.b64encode(b"\x05\x06").decode()}
            app.c.publish(down, json.dumps(cmd), qos=1).wait_for_publish(5)
            app.c.publish(down, b'{"fPort": 10, "data": "!!"}', qos=1).wait_for_publish(5)
            assert wait_until(lambda: ns.counters["downlinks_from_mqtt"] + ns.counters["downlinks_bad"] > 1)
            assert (ns.counters["downlinks_from_mqtt"], ns.counters["downlinks_bad"]) == (1, 1)
            v = c.send(uplink(EUI_A, payload=b"\x07"))
            assert v.accepted and v.downlink == (10, b"\x05\x06")
            assert ns.wait_published() and app.event.wait(5)
            (topic, payload), = app.got
            assert parse_up_event(payload, topic_dev_eui=EUI_A).data == b"\x07"
        finally:
            app.close()
            ns.stop()


# -- the whole chain, on a real broker ---------------------------------------------------------

class WallClock:
    def wall_s(self):
        return 1767571200.0

    def wall_trusted(self):
        return False


def wait_until(pred, timeout_s=10.0):
    end = time.monotonic() + timeout_s
    while not pred() and time.monotonic() < end:
        time.sleep(0.01)
    return pred()


def pack(epoch, first, n, value=50.0):
    recs = [{"seq": first + i, "t": 1767571200 + 300 * (first + i),
             "values": [["temperature_c", value - i, "ok"]]} for i in range(n)]
    payload, taken = lorapack.pack(recs, 51, epoch)
    assert taken == n
    return payload, recs


class Node:
    def __init__(self, dialect, eui, clock, link):
        self.eui = eui
        self.emu = ATModemEmulator(dialect, clock, seed=int(eui[-2:], 16)).start()
        link.attach(self.emu)
        self.port = serial.Serial(self.emu.port_path, self.emu.baudrate, timeout=0.005)
        self.modem = ATModem(self.port, clock, dialect)
        self.modem.configure(eui, JOIN_EUI, APP_KEY, adr=False, dr=5)
        assert self.modem.join()

    def close(self):
        self.port.close()
        self.emu.stop()
        assert self.emu.errors == []


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed: scripts/setup")
def test_modems_radio_network_server_broker_gateway_source():
    clock = VirtualClock()
    radio = Radio(seed=5, sites={EUI_A: {GW_A: 10, GW_B: 12},       # both gateways hear it
                                 EUI_B: {GW_A: 15, GW_B: 9000},      # only gateway A
                                 EUI_C: {GW_A: 9000, GW_B: 9000},    # out of range
                                 "replayer": {GW_B: 20}})
    arrivals, nodes = [], []
    with Mosquitto(users=PW, acl=ACL) as broker:
        conn = MQTTConnection(host="127.0.0.1", port=broker.port, tls=False, tls_verify=True,
                              ca_file=None, client_cert_file=None, client_key_file=None,
                              username="gateway", password_file=None, client_id="civicedge-gw1-cs",
                              keepalive_s=10)
        src = ChirpStackSource(ChirpCfg(conn, APP), PW["gateway"], WallClock())
        src.start(lambda a: arrivals.append(a) or True)
        ns = NetworkServer("127.0.0.1", broker.port, "chirpstack", PW["chirpstack"], APP, DEVICES,
                           clock=clock, seed=5).start()
        try:
            assert wait_until(lambda: src.status()["connected"] and ns.connected)
            a = Node("rak3172", EUI_A, clock, radio.link(ns))
            b = Node("lora-e5", EUI_B, clock, radio.link(ns))
            c = Node("rak3172", EUI_C, clock, radio.link(ns))
            nodes += [a, b, c]
            sent = {EUI_A: [], EUI_B: []}
            ns.queue_downlink(EUI_A, 10, b"\x42")
            for i in range(2):
                payload, recs = pack(1, 3 * i, 3)
                r = a.modem.send(2, payload, confirmed=True)
                assert r.status == SendResult.CONFIRMED
                if i == 0:
                    assert (r.downlink.port, r.downlink.payload) == (10, b"\x42")
                else:
                    assert r.downlink is None
                sent[EUI_A].append(recs)
                payload, recs = pack(7, 10 * i, 2, value=60.0)
                assert b.modem.send(2, payload).status == SendResult.SENT
                sent[EUI_B].append(recs)
            # Out of range: transmitted, never heard, so never acknowledged.
            r = c.modem.send(2, pack(1, 0, 1)[0], confirmed=True)
            assert r.status == SendResult.NOT_CONFIRMED and r.transmitted
            # Someone near gateway B replays node B's frames as they were captured on air.
            replayer = radio.link(ns, node="replayer")
            for captured in (b.emu.uplinks[0], b.emu.uplinks[-1]):
                clock.advance_s(30)
                replayer(Uplink(**dict(captured.as_dict(), t_s=clock.monotonic_s())))
            assert ns.wait_published()
            assert wait_until(lambda: src.counters()["uplinks"] >= 4)
            time.sleep(0.2)  # nothing more may arrive
        finally:
            for n in nodes:
                n.close()
            ns.stop()
            src.stop()
    got = {}
    for x in arrivals:
        epoch, recs = unpack(x.data)
        got.setdefault(x.dev_eui.upper(), []).append((epoch, recs))
    assert got == {EUI_A: [(1, recs) for recs in sent[EUI_A]], EUI_B: [(7, recs) for recs in sent[EUI_B]]}
    assert len({x.dedup_id for x in arrivals}) == 4
    ups = [json.loads(t) for topic, t in ns.events if topic.endswith("/up")]
    assert [len(e["rxInfo"]) for e in ups if e["deviceInfo"]["devEui"] == EUI_A.lower()] == [2, 2]
    assert [len(e["rxInfo"]) for e in ups if e["deviceInfo"]["devEui"] == EUI_B.lower()] == [1, 1]
    n = ns.counters
    assert (n["accepted"], n["duplicates_merged"], n["acks"], n["downlinks_sent"]) == (4, 2, 2, 1)
    assert (n["dropped_fcnt_reset"], n["dropped_fcnt_retransmission"]) == (1, 1)
    assert radio.counters["lost"] == 1 and radio.counters["lost_at_gateway.sensitivity"] >= 3
    assert radio.counters["duty_cycle_violations"] == 0
    assert c.emu.counters["acks"] == 0 and a.emu.counters["acks"] == 2
    assert c.emu.network.counters["acks_withheld"] == 1 and a.emu.network.counters["downlinks"] == 1
    assert b.emu.network.counters == {"uplinks": 2, "heard": 2, "accepted": 2, "acks_withheld": 0,
                                      "downlinks": 0, "join_requests": 0, "joins_accepted": 0}
