"""``sources.chirpstack.max_held`` (the bound on LoRaWAN uplinks the ChirpStack source holds
in memory while the outbox's disk is full, gateway/sources/holding.py): validated by
``gateway.config`` (a ``ConfigError`` naming the key and the file), 4096 by default, and
taken by the source the composition root builds: with ``max_held = 2`` and a full disk, the
third uplink held drops the oldest, counted and covered by the gateway's gap marker, which
reaches the platform as a ``gateway_outbox`` gap (real ChirpStack events through a real
Mosquitto, as tests/sim/test_agent_lorawan_disk_full.py, and the real MQTT forwarder)."""

import json
import threading

import paho.mqtt.client as mqtt
import pytest

from gateway import app, config, metrics
from gateway.config_types import MAX_HELD
from gateway.security import Secrets
from gateway.sources.chirpstack import ChirpStackSource
from gateway.upstream import decode_readings
from simulators.clock import VirtualClock
from tests.gatewaykit import broker_fixture, device_toml, needs_mosquitto, site_toml, wait_until
from tests.sim.test_agent_lorawan_disk_full import (  # noqa: F401 (chirpstack: a fixture)
    BIN, EPOCH, EUI, FAST, PER_UPLINK, chirpstack, send)
from tests.sim.test_source_chirpstack import ACL, PW

# ChirpStack's and the gateway's users, plus the gateway's upstream user and the platform
USERS = dict(PW, gw1="up-7d41c0e9b28a5f", platform="pf-2b8e6a0d94c137")
broker = broker_fixture(USERS, ACL + ["user gw1", "topic write civicedge/v1/#",
                                      "user platform", "topic read civicedge/v1/#"])


def write(tmp_path, extra="", port=1883):
    path = tmp_path / "gateway.toml"
    path.write_text(site_toml(keys_file=None)
                    + device_toml(BIN, "bin-level", "lorawan", 'dev_eui = "%s"' % EUI)
                    + '[sources.chirpstack]\nhost = "127.0.0.1"\nport = %d\ntls = false\n'
                      'username = "gateway"\npassword_file = "cs.pw"\n%s' % (port, extra)
                    + '[upstream.mqtt]\nhost = "127.0.0.1"\nport = %d\ntls = false\n'
                      'username = "gw1"\npassword_file = "up.pw"\n' % port)
    return path


def test_max_held_defaults_to_4096_and_takes_a_value_in_range(tmp_path):
    assert config.load(write(tmp_path)).sources.chirpstack.max_held == MAX_HELD == 4096
    for v in (1, 100, 65536):
        assert config.load(write(tmp_path, "max_held = %d\n" % v)).sources.chirpstack.max_held == v


@pytest.mark.parametrize("value, says", [
    ("0", "0 is out of range; it must be 1..65536"),
    ("70000", "70000 is out of range; it must be 1..65536"),
    ('"many"', "'many' is str; it must be an integer"),
    ("2.5", "2.5 is float; it must be an integer"),
    ("true", "True is bool; it must be an integer"),
])
def test_a_bad_max_held_is_a_config_error_naming_the_key_and_the_file(tmp_path, value, says):
    path = write(tmp_path, "max_held = %s\n" % value)
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert e.value.key == "sources.chirpstack.max_held" and e.value.file == str(path)
    assert str(e.value) == "%s: sources.chirpstack.max_held: %s" % (path, says)


def test_the_composition_root_gives_the_source_its_bound(tmp_path):
    cfg = config.load(write(tmp_path, "max_held = 7\n"))
    (source,) = app.build_sources(cfg, Secrets({"sources.chirpstack": PW["gateway"]}, {}, None),
                                  VirtualClock(), {})
    assert isinstance(source, ChirpStackSource) and source.max_held == 7


class Platform:
    """The council's side: a paho subscriber to everything the gateway publishes upstream."""

    def __init__(self, broker):
        self.messages, subscribed = [], threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="platform",
                             protocol=mqtt.MQTTv311)
        self.c.username_pw_set("platform", USERS["platform"])
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.c.connect(broker.host, broker.port, keepalive=10)
        self.c.subscribe("civicedge/v1/#", qos=1)
        self.c.loop_start()
        assert subscribed.wait(10)

    def gaps(self):
        return [json.loads(p) for t, p in list(self.messages) if t.endswith("/gaps")]

    def readings(self):
        return [decode_readings(p) for t, p in list(self.messages) if t.endswith("/readings")]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def metric(text, name, **labels):
    """A sample's value in Prometheus text (None if absent)."""
    want = name + ("{%s}" % ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
                   if labels else "")
    for line in text.splitlines():
        if line.rpartition(" ")[0] == want:
            return float(line.rpartition(" ")[2])
    return None


@needs_mosquitto
def test_past_the_configured_bound_the_oldest_held_uplink_is_dropped_and_marked_by_the_gateway(
        tmp_path, broker, chirpstack):
    """Composition root, real ChirpStack events, the real MQTT forwarder to a council broker:
    the dropped uplink reaches the platform as the gateway's gap (``gateway_outbox``, its 40
    records and keys), never as a node's ``node_log`` gap, and is counted and in metrics."""
    cfg = config.load(write(tmp_path, "max_held = 2\n", broker.port))
    platform = Platform(broker)
    agent = app.build(cfg, Secrets({"sources.chirpstack": PW["gateway"],
                                    "upstream.mqtt": USERS["gw1"]}, {}, None),
                      VirtualClock(), link_check_s=0, **FAST)  # the configured parts
    (source,) = agent.sources
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: source.status()["connected"], 20)
        assert wait_until(lambda: agent.forwarder.status()["connected"], 20)
        agent.outbox.cap_file_bytes(0)  # the disk is full
        send(chirpstack, 3)
        assert wait_until(lambda: source.counters()["dropped.held_full"] == 1, 20), \
            source.counters()
        agent.outbox.cap_file_bytes(1 << 30)
        assert wait_until(lambda: source.counters()["holding"] == 0, 30), source.counters()
        assert wait_until(lambda: platform.gaps() and sum(
            len(r["records"]) for r in platform.readings()) >= 2 * PER_UPLINK, 30)
        assert wait_until(lambda: agent.outbox.gaps() == [], 20)  # PUBACKed: deleted
        snap = agent.snapshot()
        text = metrics.render(snap)
    finally:
        stop.set()
        thread.join(30)
        platform.close()
    assert not thread.is_alive()
    (gap,) = {g["marker"]: g for g in platform.gaps()}.values()  # dedupe on the marker
    assert gap["reason"] == "gateway_outbox" and gap["device_id"] == BIN
    # the oldest held uplink, seqs 0..39 (or the newest, if the two others were out for a
    # retry when it was refused: which one is not the point)
    assert (gap["dropped"], gap["first_epoch"], gap["last_epoch"]) == (PER_UPLINK, EPOCH, EPOCH)
    assert gap["first_seq"] % PER_UPLINK == 0 and gap["last_seq"] == gap["first_seq"] + 39
    delivered = {r["seq"] for p in platform.readings() if p["device_id"] == BIN
                 for r in p["records"]}  # at least once: a copy may come twice
    assert delivered == set(range(3 * PER_UPLINK)) - set(range(gap["first_seq"],
                                                                 gap["last_seq"] + 1))
    assert all(r.get("kind", "reading") == "reading" for p in platform.readings()
               for r in p["records"])
    c = source.counters()
    assert c["dropped.held_full"] == 1 and c["gap_markers"] == 1
    assert c["records_marked"] == snap["agent.source_drops_marked"] == PER_UPLINK
    assert snap["outbox.dropped_by_reason.full"] == PER_UPLINK
    assert snap["forwarder.gaps_forwarded"] >= 1
    assert metric(text, "civicedge_drops_by_reason_total", reason="full") == PER_UPLINK
    assert metric(text, "civicedge_source_drops_marked_total") == PER_UPLINK
    assert metric(text, "civicedge_source_dropped_total", reason="held_full",
                  source="chirpstack") == 1
