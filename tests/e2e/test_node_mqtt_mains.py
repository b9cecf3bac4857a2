"""A mains node on the MQTT link keeps one session: the classroom-co2 profile as shipped
(``power.sleep = "light"``, a cycle every 120 s), built with ``link="mqtt"``, runs in the
MicroPython unix port (``board.py --until-s``: one boot, light sleep between cycles, on the
simulator's virtual clock) against a real Mosquitto over TLS and ``MQTTGatewayStub``, as in
``test_node_mqtt.py`` whose helpers these tests share. The node must connect once, announce a
keep-alive that outlasts its sleep, take its acks on the open session, and after a broker
restart mid-run reconnect by itself and lose nothing.

The broker runs on real time and the node on virtual time (an hour takes seconds), so the
broker's own keep-alive verdict cannot be seen here; what it is told (``k240`` in its log) and
what the node sends in a cycle with nothing to publish (a PINGREQ, on a plain loopback
connection through a tap, CPython) are checked instead.
"""

import json
import shutil
import struct

import pytest

from civicedge import firmware_build as fb
from firmware.app.links.mqtt_open import session_keepalive_s
from simulators.broker import Mosquitto, free_port, make_test_tls
from simulators.clock import VirtualClock
from simulators.mpyrun import run_micropython
from tests.e2e.nodeharness import BOARD_PY, DEVICE, KEY, Run, wait_for
from tests.e2e.test_node_mqtt import (ACL, HEAP, PW, SSID, WIFI_PW, Station, Tap, assert_room, broker_for,
                                      gateway, keys_in_order, readings, sim, statuses)

INTERVAL_S = 120  # the classroom-co2 profile's
KEEPALIVE_S = 2 * INTERVAL_S  # what a light-sleep node announces (the profile configures 60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_test_tls(str(tmp_path_factory.mktemp("tls")))


def build_mains(out, port, certs=None, sets=()):
    """classroom-co2 on MQTT with the profile's power settings (light sleep), a status record
    every 5 cycles, the broker on ``port``; TLS with the test CA unless ``certs`` is None."""
    fb.build("esp32-devkitc", "classroom-co2", DEVICE, out, link="mqtt",
             sets=["status_every_n_cycles=5", "link.wifi.ssid=" + SSID, "link.mqtt.host=127.0.0.1",
                   "link.mqtt.port=%d" % port] + list(sets))
    if certs is not None:
        shutil.copyfile(certs["cafile"], out / "ca.pem")
    (out / "secrets.json").write_text(json.dumps({"device_key_hex": KEY.hex(), "wifi_password": WIFI_PW,
                                                  "mqtt_password": PW[DEVICE]}))
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["power"]["sleep"], cfg["interval_s"], cfg["link"]["mqtt"]["keepalive_s"]) == ("light", INTERVAL_S, 60)
    return out


def run_for(build, image, srv, seconds):
    rc, out, err = run_micropython([str(BOARD_PY), "--flash", str(image), "--install", str(build),
                                    "--until-s", str(seconds)], server=srv, timeout_s=240, heapsize=HEAP)
    run = Run(rc, out, err)
    assert run.summary is not None and run.summary["end"] == "time", run.text()
    assert run.summary["boots"] == 1 and sum(run.summary["resets"].values()) == 0, run.text()  # never reset
    assert "Traceback" not in out + err, run.text()
    for secret in (PW[DEVICE], WIFI_PW):
        assert secret not in out + err
    return run


def logins(log):
    """The node's logins in the broker's log, with the keep-alive it announced."""
    return log.count("as %s (p2, c0, k%d, u'%s')" % (DEVICE, KEEPALIVE_S, DEVICE))


def assert_all_delivered_once(gw, cycles):
    assert gw.counters["bad_frames"] == gw.counters["bad_packs"] == 0
    assert gw.counters["duplicates"] == 0  # no ack lost, no frame sent twice
    assert gw.counters["acks"] == gw.counters["frames"]  # every frame acked
    keys = keys_in_order(gw)
    assert keys == [(1, s) for s in range(len(keys))]  # one boot: one epoch, seqs contiguous
    assert len(readings(gw)) == cycles  # a reading per cycle, every one delivered
    assert_room(readings(gw))


def test_keepalive_covers_the_light_sleep():
    assert session_keepalive_s(60, 120, True) == 240  # Mosquitto's limit 360 s against 120 s of sleep
    assert session_keepalive_s(600, 120, True) == 600  # a longer configured keep-alive stands
    assert session_keepalive_s(60, 86400, True) == 65535  # CONNECT's field is 16 bits
    assert session_keepalive_s(60, 120, False) == 60  # deep sleep: the node disconnects anyway


def test_a_mains_node_connects_once_and_keeps_its_session_for_half_an_hour(certs, tmp_path):
    port = free_port()
    build = build_mains(tmp_path / "fw", port, certs)
    srv = sim()
    try:
        with broker_for(certs, port=port) as broker, gateway(broker, certs) as gw:
            run_for(build, tmp_path / "flash.img", srv, 30 * 60)
            gw.wait_for(lambda: gw.counters["acks"] >= 15, 5)
            log = broker.log_text()
    finally:
        srv.stop()
    # cycles at 0.3 s (boot) + k * 120 s: 15 in half an hour
    assert_all_delivered_once(gw, 15)
    assert logins(log) == 1  # one TLS session, with a keep-alive that outlasts the sleep
    assert log.count("as %s" % DEVICE) == 1
    assert "Client %s disconnected" % DEVICE not in log  # no DISCONNECT between cycles
    for c in (s["counters"] for s in statuses(gw, 1)):  # logged at cycles 1, 6, 11
        assert c["connects"] == 1, c
        for name in ("link_errors", "ack_timeouts", "mqtt_fails", "wifi_fails", "tls_fails", "backoff_skips"):
            assert c[name] == 0, (name, c)
    assert [s["counters"]["cycles"] for s in statuses(gw, 1)] == [1, 6, 11]


def test_after_a_broker_restart_mid_run_the_node_reconnects_and_nothing_is_lost(certs, tmp_path):
    port = free_port()
    build = build_mains(tmp_path / "fw", port, certs)
    srv = sim()
    restart_at_us = 31 * 60 * 1000000  # mid-sleep between the cycles at ~30:00 and ~32:00
    restarted = []
    try:
        with broker_for(certs, port=port) as broker, gateway(broker, certs) as gw:
            def gate(target_us):
                # the simulator asks before each sleep moves the board's clock: the first one
                # that would cross restart_at_us waits for the restart (without persistence:
                # the node's session and subscription are gone too)
                if not restarted and target_us >= restart_at_us:
                    restarted.append(len(gw.records))
                    broker.stop()
                    assert gw.wait_for(lambda: not gw.subscribed(), 5)
                    broker.start()
                    assert gw.wait_for(gw.subscribed, 10)

            srv.gate = gate
            run_for(build, tmp_path / "flash.img", srv, 60 * 60)
            gw.wait_for(lambda: len(readings(gw)) >= 30, 5)
            log = broker.log_text()  # both broker runs
    finally:
        srv.stop()
    assert restarted == [16 + 4]  # 16 readings and the status records of cycles 1, 6, 11, 16 had arrived
    assert_all_delivered_once(gw, 30)
    assert logins(log) == 2  # once at boot, once after the restart
    assert "Client %s disconnected" % DEVICE not in log
    status = [s["counters"] for s in statuses(gw, 1)]
    assert [c["cycles"] for c in status] == [1, 6, 11, 16, 21, 26]
    assert [c["connects"] for c in status] == [1, 1, 1, 1, 2, 2]
    for c in status:  # the closed connection was seen before publishing: nothing lost or failed
        for name in ("link_errors", "ack_timeouts", "mqtt_fails", "wifi_fails", "tls_fails", "backoff_skips"):
            assert c[name] == 0, (name, c)


def test_a_cycle_with_nothing_to_send_pings_and_the_session_stays(tmp_path):
    """CPython, virtual clock, plain MQTT on loopback through a tap: a light-sleep link with
    nothing pending sends a PINGREQ each cycle, so the broker hears from it every interval
    (a node logging 15-minute means publishes once in 15 cycles), and keeps its connection."""
    from firmware.app import config
    from firmware.app.links.mqtt import MQTTLink
    from firmware.app.state import NodeState
    from firmware.app.store import RecordLog

    port = free_port()
    out = build_mains(tmp_path / "fw", port, sets=["link.mqtt.tls=false"])
    cfg = config.load_config(str(out / "config.json"))
    clock = VirtualClock()
    link = MQTTLink(cfg, config.load_secrets(str(out / "secrets.json"), cfg), clock,
                    wlan=Station(clock, WIFI_PW), root=str(out))
    assert link.stay_connected and link.keepalive_s == KEEPALIVE_S
    root = tmp_path / "node"
    root.mkdir()
    state = NodeState(str(root))
    state.boot("power_on", 0)
    log = RecordLog(str(root), 65536, clock=clock, state=state)
    with Mosquitto(users=PW, acl=ACL) as broker:
        tap = Tap(port, broker.port)
        try:
            assert link.open() is True
            for _ in range(3):
                assert link.deliver(log) == 0
                clock.advance_s(INTERVAL_S)  # the light sleep
            assert link.is_connected()
            pings = wait_for(lambda: after_subscribe(tap.streams[0]) == b"\xc0\x00" * 3, 5)
            sent = bytes(tap.streams[0])
        finally:
            link.close()
            tap.close()
    assert len(tap.streams) == 1 and link.counters["connects"] == 1
    # CONNECT (keep-alive 240 s), SUBSCRIBE, then a PINGREQ (0xC0 0x00) a cycle and nothing else
    assert sent[:1] == b"\x10" and sent[10:12] == struct.pack(">H", KEEPALIVE_S), sent
    assert pings, sent


def after_subscribe(sent):
    """What the node sent after its SUBSCRIBE to the ack topic (the stream's second packet)."""
    sent = bytes(sent)
    end = sent.find(b"/ack\x01")
    return sent[end + 5:] if sent[:1] == b"\x10" and end > 0 else None
