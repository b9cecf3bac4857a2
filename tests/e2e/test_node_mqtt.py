"""The node's WiFi/MQTT link end to end: the real firmware, built with ``civicedge firmware
build`` for the classroom-co2 profile with ``link="mqtt"``, boots from a littlefs image in
the MicroPython unix port (``simulators/mpy/board.py``), reads a simulated SCD41, associates
with the simulator's access point and publishes its frames over TLS (the test CA on its
flash) to a real Mosquitto started here with per-user passwords and topic ACLs; the gateway
side is ``MQTTGatewayStub`` (paho-mqtt), which verifies every frame with the device key,
decodes the SenML pack with cbor2 and answers with the authenticated ack.

Outages are phases: each ``board.py`` run is a power-on (a new boot epoch) followed by
deep-sleep wakes (backoff and counters carried in RTC memory); between runs the test kills
the broker, takes the access point down or gives the node the wrong CA. The node's status
records (one per wake here) carry its link counters, so what it counted during an outage is
read from the records it delivers afterwards. A TCP tap between node and broker checks that
nothing but TLS ever leaves the node.

The last tests are CPython only: the ACL as configured, and ``MQTTLink``'s backoff and WiFi
wait on a virtual clock. A mains (light-sleep) node, which keeps its session between cycles,
is tested in ``test_node_mqtt_mains.py``.
"""

import json
import shutil
import socket
import threading

import paho.mqtt.client as mqtt
import pytest

from civicedge import firmware_build as fb
from protocol import quality
from simulators.broker import Mosquitto, free_port, make_test_tls
from simulators.clock import VirtualClock
from simulators.i2c_server import SimServer
from simulators.mpyrun import run_micropython
from simulators.mqtt_gateway import MQTTGatewayStub
from simulators.mqtt_proxy import Relay
from tests.e2e.nodeharness import BOARD_PY, DEVICE, KEY, ROOM, Run, kind, values_of

SSID = "school-iot"
WIFI_PW = "wifi-5d2c9a7e41"
PW = {DEVICE: "node-7c1e94d2a5f0", "gateway": "gw-3b8f0e6a1d92"}
ACL = ["user gateway", "topic readwrite civicedge/node/#",
       "pattern write civicedge/node/%u/up", "pattern read civicedge/node/%u/ack"]
# The MQTT firmware needs 143-146 KB free at a wake on the 64-bit unix port (docs/mqtt-link.md,
# "The node link", Memory): nodeharness.ESP32_HEAP's 146 KB, without margin; these tests need room.
HEAP = "384K"


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    (d / "other").mkdir()
    return dict(make_test_tls(str(d)), other_cafile=make_test_tls(str(d / "other"))["cafile"])


@pytest.fixture(scope="module")
def node_port():
    return free_port()  # the broker port in the node's config (the broker or a tap listens there)


@pytest.fixture(scope="module")
def build(tmp_path_factory, certs, node_port):
    out = tmp_path_factory.mktemp("fw") / "flash"
    fb.build("esp32-devkitc", "classroom-co2", DEVICE, out, link="mqtt",
             sets=["power.sleep=deep", "status_every_n_cycles=2", "link.wifi.ssid=" + SSID,
                   "link.wifi.connect_timeout_ms=5000", "link.mqtt.host=127.0.0.1",
                   "link.mqtt.port=%d" % node_port, "link.mqtt.ack_timeout_ms=2000"])
    shutil.copyfile(certs["cafile"], out / "ca.pem")  # link.mqtt.ca_file (the profile's "ca.pem")
    (out / "secrets.json").write_text(json.dumps({"device_key_hex": KEY.hex(), "wifi_password": WIFI_PW,
                                                  "mqtt_password": PW[DEVICE]}))
    return out


def records_for(boots):
    """Records a power-on logs over ``boots`` boots: a reading each, a status every second
    (``status_every_n_cycles=2``: at the 1st, 3rd, ... cycle)."""
    return boots + (boots + 1) // 2


def broker_for(certs, port=None):
    return Mosquitto(users=PW, acl=ACL, tls={"certfile": certs["certfile"], "keyfile": certs["keyfile"]},
                     port=port)


def gateway(broker, certs, **kw):
    return MQTTGatewayStub("127.0.0.1", broker.port, "gateway", PW["gateway"], {DEVICE: KEY}, tls=certs, **kw)


def sim():
    srv = SimServer().start()
    srv.rig.setup([{"model": "scd4x", "truth": ROOM, "seed": 3}])
    with srv.lock:
        srv.wifi.update(ssid=SSID, key=WIFI_PW)
    return srv


def boot(image, srv, wakes, install=None):
    """One power-on of the board and ``wakes`` deep-sleep wakes; ``install``: a directory
    copied onto the flash first (the build, or a fix such as a new CA file)."""
    args = [str(BOARD_PY), "--flash", str(image), "--wakes", str(wakes)]
    if install is not None:
        args += ["--install", str(install)]
    rc, out, err = run_micropython(args, server=srv, timeout_s=90, heapsize=HEAP)
    run = Run(rc, out, err)
    assert run.summary is not None and run.summary["end"] == "wakes", run.text()
    assert run.summary["resets"]["wdt"] == 0, run.text()  # nothing hung or crashed
    for secret in (PW[DEVICE], WIFI_PW):
        assert secret not in out + err
    return run


class Tap(Relay):
    """A TCP relay from ``port`` to the broker that keeps every byte each connection of the
    node sent, to show what went on the wire."""

    def __init__(self, port, target_port):
        self.streams = []
        super().__init__(target_port, port)

    def _connected(self, client, upstream):
        sent = bytearray()
        self.streams.append(sent)
        threading.Thread(target=self._pump, args=(client, upstream, sent), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    @staticmethod
    def _pump(src, dst, keep):
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                if keep is not None:
                    keep += data
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def assert_tls_only(tap):
    """Every connection the node made began a TLS handshake, and no MQTT packet or secret
    ever crossed in the clear."""
    assert tap.streams
    for sent in tap.streams:
        assert sent[:1] == b"\x16", bytes(sent[:16])  # TLS record type 22: handshake
        assert b"\x00\x04MQTT" not in sent  # a plaintext CONNECT's protocol name
        for secret in (PW[DEVICE], WIFI_PW):
            assert secret.encode() not in sent


# -- what arrived ---------------------------------------------------------------------------------
def keys_in_order(gw):
    """Record keys (epoch, seq) in first-arrival order (duplicates dropped)."""
    return [(e, r["seq"]) for d, e, r in gw.unique_records()]


def assert_complete(gw, epochs):
    """Each of ``epochs`` (boot epochs, in order) arrived whole: seqs 0.. contiguous, every
    key once, oldest first, every frame authentic and every pack decodable."""
    assert gw.counters["bad_frames"] == 0 and gw.counters["bad_packs"] == 0
    assert all(d == DEVICE for d, e, r in gw.records)
    keys = keys_in_order(gw)
    assert keys == sorted(keys)  # delivered in order, the backlog before what followed
    assert sorted(set(e for e, s in keys)) == list(epochs)
    for epoch in epochs:
        seqs = [s for e, s in keys if e == epoch]
        assert seqs == list(range(len(seqs))), (epoch, seqs)


def readings(gw):
    return [(e, r) for d, e, r in gw.unique_records() if kind(r) == "reading"]


def statuses(gw, epoch):
    return [r for d, e, r in gw.unique_records() if kind(r) == "status" and e == epoch]


def assert_room(recs):
    for epoch, rec in recs:
        v = values_of(rec)
        for q, (value, flag) in v.items():
            assert flag in (quality.OK, quality.TIME_UNSYNCED), (q, flag)
        assert abs(v["co2_ppm"][0] - ROOM["co2_ppm"]) <= 50 + 0.05 * ROOM["co2_ppm"]  # SCD41 ±(50 ppm + 5 %)
        assert abs(v["temperature_c"][0] - ROOM["temperature_c"]) <= 0.8
        assert abs(v["rh_percent"][0] - ROOM["rh_percent"]) <= 6.0


# -- end to end -----------------------------------------------------------------------------------
def test_every_reading_arrives_once_authenticated_over_tls(build, certs, node_port, tmp_path):
    srv = sim()
    with broker_for(certs) as broker, gateway(broker, certs) as gw:
        tap = Tap(node_port, broker.port)
        try:
            run = boot(tmp_path / "flash.img", srv, 8, install=build)
            wakes = run.summary["boots"]
            assert gw.wait_for(lambda: len(gw.records) >= records_for(wakes), 5)
        finally:
            tap.close()
            srv.stop()
        log = broker.log_text()
    assert_complete(gw, [1])  # one power-on: one boot epoch, carried through deep sleep
    assert gw.counters["duplicates"] == 0 and len(gw.records) == records_for(wakes)
    assert len(readings(gw)) == wakes == 9
    assert_room(readings(gw))
    # logged in the last wake, before it connected (a deep-sleep node packs its frame first)
    last = statuses(gw, 1)[-1]["counters"]
    assert last["connects"] == wakes - 1 and last["records_acked"] == records_for(wakes) - 2
    for name in ("wifi_fails", "mqtt_fails", "tls_fails", "mqtt_refused", "link_errors", "ack_timeouts",
                 "bad_acks"):
        assert last[name] == 0, (name, last)
    # one TLS connection per wake, authenticated as the device, closed cleanly before sleep
    assert len(tap.streams) == wakes
    assert_tls_only(tap)
    assert log.count("as %s (p2, c0, k60, u'%s')" % (DEVICE, DEVICE)) == wakes  # clean_session=False
    assert log.count("Client %s disconnected." % DEVICE) == wakes  # DISCONNECT, not a timeout


def test_broker_and_wifi_outages_then_the_backlog_arrives_in_order(build, certs, node_port, tmp_path):
    image = tmp_path / "flash.img"
    srv = sim()
    broker = broker_for(certs, port=node_port).start()
    try:
        with gateway(broker, certs) as gw:
            boot(image, srv, 2, install=build)  # epoch 1: all delivered
            assert gw.wait_for(lambda: len(gw.records) >= records_for(3), 5)
            broker.kill()  # the broker dies (SIGKILL, no persistence: sessions gone)
            boot(image, srv, 3)  # epoch 2: four wakes, nothing gets through
            with srv.lock:
                srv.wifi.update(up=False)  # then the access point goes too
            boot(image, srv, 2)  # epoch 3: three wakes without WiFi
            assert len(gw.records) == records_for(3)
            broker.start()
            with srv.lock:
                srv.wifi.update(up=True)
            assert gw.wait_for(gw.subscribed, 10)
            boot(image, srv, 1)  # epoch 4: the backlog first, then its own
            total = records_for(3) + records_for(4) + records_for(3) + records_for(2)
            assert gw.wait_for(lambda: len(gw.records) >= total, 5)
    finally:
        broker.close()
        srv.stop()
    assert_complete(gw, [1, 2, 3, 4])
    assert gw.counters["duplicates"] == 0  # no ack was lost: nothing came twice
    assert len(readings(gw)) == 3 + 4 + 3 + 2
    assert_room(readings(gw))
    # what the node counted while it could not deliver, from its own status records, logged at
    # the 1st and 3rd wake before that wake tried to connect (the frame is packed first)
    down = [s["counters"] for s in statuses(gw, 2)]
    assert [c["mqtt_fails"] for c in down] == [0, 2]
    assert [c["backoff_s"] for c in down] == [0, 2]  # 1, 2, 4 ... 120 s, kept through deep sleep
    assert all(c["connects"] == 0 and c["tls_fails"] == 0 and c["wifi_fails"] == 0 for c in down)
    no_wifi = [s["counters"] for s in statuses(gw, 3)]
    assert [c["wifi_fails"] for c in no_wifi] == [0, 2] and all(c["mqtt_fails"] == 0 for c in no_wifi)
    back = [s["counters"] for s in statuses(gw, 4)]  # a power-on: counted afresh
    assert back[-1]["connects"] == 0 and back[-1]["backoff_s"] == 0 and back[-1]["wifi_fails"] == 0


def test_wrong_ca_never_talks_plaintext_and_keeps_the_readings(build, certs, node_port, tmp_path):
    wrong = tmp_path / "wrong"
    shutil.copytree(build, wrong)
    shutil.copyfile(certs["other_cafile"], wrong / "ca.pem")  # a CA that did not sign the broker
    fix = tmp_path / "fix"
    fix.mkdir()
    shutil.copyfile(certs["cafile"], fix / "ca.pem")
    image = tmp_path / "flash.img"
    srv = sim()
    try:
        with broker_for(certs) as broker, gateway(broker, certs) as gw:
            tap = Tap(node_port, broker.port)
            try:
                boot(image, srv, 2, install=wrong)  # epoch 1: three wakes, the handshake fails
                refused_log = broker.log_text()
                assert len(gw.records) == 0
                assert len(tap.streams) == 3
                assert_tls_only(tap)
                boot(image, srv, 1, install=fix)  # the right CA on the flash: epoch 2
                assert gw.wait_for(lambda: len(gw.records) >= records_for(3) + records_for(2), 5)
            finally:
                tap.close()
    finally:
        srv.stop()
    assert "as %s" % DEVICE not in refused_log  # the broker never saw the node log in
    assert_complete(gw, [1, 2])
    failing = [s["counters"] for s in statuses(gw, 1)]
    # counted as TLS failures (an alarm); each status logged before its wake's attempt
    assert [c["tls_fails"] for c in failing] == [0, 2]
    assert all(c["connects"] == 0 and c["mqtt_fails"] == 0 for c in failing)
    assert_room(readings(gw))
    assert_tls_only(tap)


def test_gateway_not_acking_keeps_records_until_it_does(build, certs, node_port, tmp_path):
    image = tmp_path / "flash.img"
    srv = sim()
    try:
        with broker_for(certs, port=node_port) as broker, gateway(broker, certs, ack=False) as gw:
            boot(image, srv, 2, install=build)  # epoch 1: frames arrive, no ack comes back
            assert gw.counters["acks"] == 0 and gw.counters["frames"] == 3
            gw.ack = True
            boot(image, srv, 0)  # epoch 2: epoch 1 is sent again, then acked
            assert gw.wait_for(lambda: gw.counters["acks"] == 2, 5)
    finally:
        srv.stop()
    assert_complete(gw, [1, 2])
    # each unacked frame is sent again with what was logged since: the gateway sees
    # seqs 0-1, 0-2, 0-4, then 0-4 again (acked): duplicates, deduplicated on the key
    assert gw.counters["duplicates"] == 2 + 3 + 5
    first = statuses(gw, 2)[0]["counters"]
    assert first["records_acked"] == 0 and first["connects"] == 0  # logged before it connected
    assert [c["ack_timeouts"] for c in (s["counters"] for s in statuses(gw, 1))] == [0, 2]


def test_an_ack_that_comes_back_late_waits_in_the_session_and_trims_without_a_resend(
        build, certs, node_port, tmp_path):
    image = tmp_path / "flash.img"
    srv = sim()
    try:
        with broker_for(certs, port=node_port) as broker, gateway(broker, certs) as gw:
            gw.hold_acks = True
            boot(image, srv, 0, install=build)  # epoch 1: sent, no ack while the node waits
            assert gw.counters["frames"] == 1 and len(gw.held) == 1
            assert gw.release_acks() == 1  # now, with the node asleep: the broker queues it
            boot(image, srv, 0)  # epoch 2: the queued ack trims epoch 1; only epoch 2 is sent
            assert gw.wait_for(lambda: gw.counters["acks"] == 2, 5)
    finally:
        srv.stop()
    assert_complete(gw, [1, 2])
    assert gw.counters["frames"] == 2 and gw.counters["duplicates"] == 0
    assert [f.boot_epoch for f in gw.frames] == [1, 2]


# -- CPython: the ACL, and the link's backoff on a virtual clock ---------------------------------
def test_acl_pins_each_node_to_its_own_topics(certs):
    """Mosquitto 2.0 grants any subscription and applies the ACL when delivering: the node
    user may subscribe to anything but receives only its own acks, and what it publishes
    anywhere but its own up topic never reaches the gateway."""
    other = "sch1-rm13-co2"
    with broker_for(certs) as broker, gateway(broker, certs) as gw:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=mqtt.MQTTv311)
        c.username_pw_set(DEVICE, PW[DEVICE])
        c.tls_set(ca_certs=certs["cafile"])
        got, subscribed = [], threading.Event()
        c.on_message = lambda client, userdata, m: got.append((m.topic, m.payload))
        c.on_subscribe = lambda client, userdata, mid, codes, props: subscribed.set()
        c.connect(broker.host, broker.port)
        c.loop_start()
        try:
            c.subscribe([("civicedge/node/%s/ack" % other, 1), ("civicedge/node/+/up", 1),
                         ("civicedge/node/%s/ack" % DEVICE, 1)])
            assert subscribed.wait(5)
            for topic, payload in (("civicedge/node/%s/ack" % other, b"theirs"),
                                   ("civicedge/node/%s/up" % other, b"their frame"),
                                   ("civicedge/node/%s/ack" % DEVICE, b"mine")):
                gw.client.publish(topic, payload, qos=1).wait_for_publish(5)
            c.publish("civicedge/node/%s/up" % other, b"posing as another", qos=1).wait_for_publish(5)
            c.publish("civicedge/node/%s/up" % DEVICE, b"not a frame", qos=1).wait_for_publish(5)
            assert gw.wait_for(lambda: gw.counters["bad_frames"] >= 2, 5)
            assert gw.wait_for(lambda: got, 5)
        finally:
            c.disconnect()
            c.loop_stop()
    assert got == [("civicedge/node/%s/ack" % DEVICE, b"mine")]  # its own acks, nobody else's
    # the gateway saw its own "their frame" and the node's "not a frame", both refused as
    # frames; "posing as another" never reached it
    assert gw.counters["bad_frames"] == 2


class Station:
    """A WiFi station for CPython: associates ``assoc_ms`` after ``connect`` on the clock, if
    the access point is up and the passphrase right."""

    def __init__(self, clock, password, up=True, assoc_ms=1500):
        self.clock, self.password, self.up, self.assoc_ms = clock, password, up, assoc_ms
        self._active, self._since = False, None

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = on

    def connect(self, ssid, key):
        self._since = (self.clock.now_us, ssid == SSID and key == self.password)

    def disconnect(self):
        self._since = None

    def isconnected(self):
        return bool(self.up and self._since and self._since[1]
                    and self.clock.now_us - self._since[0] >= self.assoc_ms * 1000)


def link_for(build, clock, station):
    from firmware.app import config
    from firmware.app.links.mqtt import MQTTLink

    cfg = config.load_config(str(build / "config.json"))
    secrets = config.load_secrets(str(build / "secrets.json"), cfg)
    return MQTTLink(cfg, secrets, clock, wlan=station, root=str(build))


def test_backoff_doubles_to_120_s_with_jitter_and_resets_on_connect(build, certs, node_port):
    from firmware.app.links.mqtt_open import BACKOFF_MAX_S, jittered_s, next_backoff_s

    assert [jittered_s(8, 0), jittered_s(8, 255), jittered_s(120, 0), jittered_s(120, 255)] == [4, 8, 60, 120]
    clock = VirtualClock()
    link = link_for(build, clock, Station(clock, WIFI_PW))
    delays, expect = [], 0
    for _ in range(9):  # nobody listens on the port: every attempt fails
        assert link.open() is False
        expect = next_backoff_s(expect)
        c = link.counters
        assert c["backoff_s"] == expect
        wait = c["retry_at_s"] - int(clock.wall_s())
        assert expect // 2 <= wait <= expect
        if wait:
            assert link.open() is False  # too early: skipped, not tried
        delays.append(c["backoff_s"])
        clock.advance_s(wait)
    assert delays == [1, 2, 4, 8, 16, 32, 64, 120, 120] and BACKOFF_MAX_S == 120
    assert link.counters["mqtt_fails"] == 9 and link.counters["backoff_skips"] >= 6
    with broker_for(certs, port=node_port):
        clock.advance_s(BACKOFF_MAX_S)
        assert link.open() is True
        assert link.counters["backoff_s"] == 0 and link.counters["connects"] == 1
        link.close()


def test_wifi_wait_is_bounded_on_the_clock_and_counted(build):
    clock = VirtualClock()
    station = Station(clock, "not-the-passphrase")
    link = link_for(build, clock, station)
    start = clock.now_us
    assert link.open() is False
    waited_ms = (clock.now_us - start) // 1000
    assert 5000 <= waited_ms <= 5200  # link.wifi.connect_timeout_ms, on the injected clock
    assert link.counters["wifi_fails"] == 1 and link.counters["mqtt_fails"] == 0
    assert station._since is None  # the radio told to stop retrying


def test_connection_lost_mid_exchange_keeps_the_records_for_the_next_cycle(build, certs, node_port, tmp_path):
    from firmware.app.state import NodeState
    from firmware.app.store import RecordLog

    clock = VirtualClock()
    root = tmp_path / "node"
    root.mkdir()
    state = NodeState(str(root))
    state.boot("power_on", 0)
    log = RecordLog(str(root), 65536, clock=clock, state=state)
    log.append_all([{"t": None, "values": [["co2_ppm", 800.0 + i, "ok"]]} for i in range(3)])
    link = link_for(build, clock, Station(clock, WIFI_PW))
    broker = broker_for(certs, port=node_port).start()
    try:
        with gateway(broker, certs) as gw:
            gw.hold_acks = True  # the gateway has the frame; its ack will not make it
            assert link.open() is True

            def outage():
                gw.wait_for(lambda: gw.counters["frames"] == 1, 5)
                broker.kill()

            killer = threading.Thread(target=outage)
            killer.start()
            assert link.deliver(log) == 0
            killer.join()
            assert link.counters["link_errors"] == 1 and link.counters["ack_timeouts"] == 0
            assert log.pending_count() == 3 and not link.is_connected()
            broker.start()
            gw.hold_acks = False
            assert gw.wait_for(gw.subscribed, 10)
            assert link.deliver(log) == 3  # reconnects by itself (a new session) and resends
    finally:
        broker.close()
    assert log.pending_count() == 0
    assert gw.counters["frames"] == 2 and gw.counters["duplicates"] == 3  # the lost ack's frame, again
    assert [r["seq"] for d, e, r in gw.unique_records()] == [0, 1, 2]
