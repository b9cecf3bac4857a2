"""``sources.chirpstack.max_held`` (the bound on LoRaWAN uplinks the ChirpStack source holds
in memory while the outbox's disk is full, gateway/sources/holding.py): validated by
``gateway.config`` (a ``ConfigError`` naming the key and the file), 4096 by default, and
taken by the source the composition root builds: with ``max_held = 2`` and a full disk, the
third uplink held drops the oldest, counted and covered by a gap record (real ChirpStack
events through a real Mosquitto, as tests/sim/test_agent_lorawan_disk_full.py)."""

import json
import sqlite3
import threading

import pytest

from gateway import app, config
from gateway.config_types import MAX_HELD
from gateway.security import Secrets
from gateway.sources.chirpstack import ChirpStackSource
from simulators.clock import VirtualClock
from tests.gatewaykit import broker_fixture, device_toml, needs_mosquitto, site_toml, wait_until
from tests.sim.test_agent import Upstream
from tests.sim.test_agent_lorawan_disk_full import (  # noqa: F401 (chirpstack: a fixture)
    BIN, EPOCH, EUI, FAST, PER_UPLINK, chirpstack, send)
from tests.sim.test_source_chirpstack import ACL, PW

broker = broker_fixture(PW, ACL)


def write(tmp_path, extra="", port=1883):
    path = tmp_path / "gateway.toml"
    path.write_text(site_toml(keys_file=None)
                    + device_toml(BIN, "bin-level", "lorawan", 'dev_eui = "%s"' % EUI)
                    + '[sources.chirpstack]\nhost = "127.0.0.1"\nport = %d\ntls = false\n'
                      'username = "gateway"\npassword_file = "cs.pw"\n%s' % (port, extra)
                    + '[upstream.mqtt]\nhost = "127.0.0.1"\ntls = false\n'
                      'username = "gw1"\npassword_file = "up.pw"\n')
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


@needs_mosquitto
def test_past_the_configured_bound_the_oldest_held_uplink_is_dropped_and_marked(
        tmp_path, broker, chirpstack):
    cfg = config.load(write(tmp_path, "max_held = 2\n", broker.port))
    agent = app.build(cfg, Secrets({"sources.chirpstack": PW["gateway"]}, {}, None),
                      VirtualClock(), forwarder=Upstream(), **FAST)  # the configured source
    (source,) = agent.sources
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: source.status()["connected"], 20)
        agent.outbox.cap_file_bytes(0)  # the disk is full
        send(chirpstack, 3)
        assert wait_until(lambda: source.counters()["dropped.held_full"] == 1, 20), \
            source.counters()
        assert source.counters()["holding"] == 3  # two uplinks and the gap record
        agent.outbox.cap_file_bytes(1 << 30)
        assert wait_until(lambda: source.counters()["holding"] == 0, 30), source.counters()
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    db = sqlite3.connect(cfg.outbox.path)
    try:
        rows = [json.loads(p) for (p,) in db.execute(
            "SELECT payload FROM rows WHERE device_id = ?", (BIN,))]
    finally:
        db.close()
    (gap,) = [r for r in rows if r.get("kind") == "gap"]
    assert (gap["dropped"], gap["first_epoch"], gap["first_seq"], gap["last_seq"]) == (
        PER_UPLINK, EPOCH, 0, PER_UPLINK - 1)  # the oldest uplink: seqs 0..39
    assert sorted(r["seq"] for r in rows if r.get("kind", "reading") == "reading") == list(
        range(PER_UPLINK, 3 * PER_UPLINK))
