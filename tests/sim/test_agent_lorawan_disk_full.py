"""No LoRaWAN uplink lost while the disk is full (issue 4: the gateway must lose nothing).

ChirpStack's user publishes real v4 ``up`` events (real LoRaWAN packs of 40 readings inside)
to a real Mosquitto; the gateway's composition root (``gateway.app.build``) runs the agent
with the ChirpStack source on it and a real outbox file whose disk-full fault is on
(``Outbox.cap_file_bytes``: SQLite answers ``SQLITE_FULL`` as a full disk does, and an
empty outbox has no unsent row to drop). A node frame is simply not acked then (the node
resends); an uplink has no second chance, so the source must hold it and hand it over again
once the disk has room, and past its bound drop the oldest with a count and a gap record.
What the outbox file holds is read with a connection of the test's own."""

import json
import sqlite3
import threading

import pytest

from gateway import app, config
from gateway.security import Secrets
from gateway.sources.chirpstack import ChirpStackSource
from protocol import lorapack
from simulators.clock import VirtualClock
from tests.gatewaykit import broker_fixture, device_toml, needs_mosquitto, site_toml, wait_until
from tests.sim.test_agent import Upstream  # holds the outbox, forwards nothing unless pumped
from tests.sim.test_source_chirpstack import ACL, PW, ChirpStackPublisher, up_event

pytestmark = needs_mosquitto

EUI, BIN, T0 = "70b3d57ed0061a2d", "sch1-yard-bin1", 1767571200
EPOCH, PER_UPLINK = 3, 40
FAST = {"backoff_s": 0.05, "put_timeout_s": 0.05, "poll_s": 0.02}

broker = broker_fixture(PW, ACL)


def pack(first):
    recs = [{"seq": first + i, "t": T0 + 60 * i,
             "values": [["fill_ratio", 0.4, "ok"], ["temperature_c", 12.5, "ok"]]}
            for i in range(PER_UPLINK)]
    payload, taken = lorapack.pack(recs, 222, EPOCH)
    assert taken == PER_UPLINK
    return payload


class Gateway:
    """The agent (``app.build``) on its own thread, with a ChirpStack source that retries
    fast; ``rows()`` reads the outbox file."""

    def __init__(self, tmp_path, broker, **source_kw):
        path = tmp_path / "gateway.toml"
        path.write_text(site_toml(keys_file=None)
                        + device_toml(BIN, "bin-level", "lorawan", 'dev_eui = "%s"' % EUI)
                        + '[sources.chirpstack]\nhost = "127.0.0.1"\nport = %d\ntls = false\n'
                          'username = "gateway"\npassword_file = "cs.pw"\n' % broker.port
                        + '[upstream.mqtt]\nhost = "127.0.0.1"\ntls = false\n'
                          'username = "gw1"\npassword_file = "up.pw"\n')
        cfg = config.load(path)
        self.db = cfg.outbox.path
        clock = VirtualClock()
        self.source = ChirpStackSource(cfg.sources.chirpstack, PW["gateway"], clock,
                                       devices={EUI: BIN}, retry_min_s=0.05, retry_max_s=0.2,
                                       reconnect_min_s=0.05, reconnect_max_s=0.3, **source_kw)
        self.agent = app.build(cfg, Secrets({}, {}, None), clock, sources=[self.source],
                               forwarder=Upstream(), **FAST)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.agent.run, args=(self.stop_event,),
                                       daemon=True)
        self.thread.start()
        assert wait_until(lambda: self.source.status()["connected"], 20)

    def rows(self):
        db = sqlite3.connect(self.db)
        try:
            return {(d, e, s): rec for d, e, s, rec in db.execute(
                "SELECT device_id, boot_epoch, seq, payload FROM rows")}
        finally:
            db.close()

    def counters(self):
        return self.source.counters()

    def close(self):
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def send(chirpstack, n):
    """``n`` uplinks of the bin, seqs ``0 .. n * PER_UPLINK - 1``."""
    for i in range(n):
        chirpstack.publish(up_event(pack(PER_UPLINK * i), dedup="up-%d" % i, eui=EUI), eui=EUI)


@pytest.fixture
def chirpstack(broker):
    cs = ChirpStackPublisher(broker)
    yield cs
    cs.close()


def test_uplinks_refused_by_a_full_disk_are_held_and_stored_once_it_has_room(
        tmp_path, broker, chirpstack):
    gw = Gateway(tmp_path, broker)
    try:
        gw.agent.outbox.cap_file_bytes(0)  # the disk is full
        send(chirpstack, 5)
        assert wait_until(lambda: gw.counters()["held"] == 5, 20), gw.counters()
        # tried again (and refused) while the disk stays full; nothing is stored meanwhile
        assert wait_until(lambda: gw.counters()["retried"] >= 10, 20), gw.counters()
        snap = gw.agent.snapshot()
        assert snap["agent.store_failures.outbox_full"] >= 2 and gw.rows() == {}
        assert snap["source.chirpstack.holding"] == 5
        assert snap["agent.disk_full_alarm_active"] == 1  # raised (gateway.agent_disk)
        gw.agent.outbox.cap_file_bytes(1 << 30)  # room again
        want = {(BIN, EPOCH, s) for s in range(5 * PER_UPLINK)}
        assert wait_until(lambda: {k for k in gw.rows() if k[0] == BIN} == want, 20), \
            len(gw.rows())
        assert wait_until(lambda: gw.counters()["holding"] == 0, 10)
        c = gw.counters()
        assert c["uplinks"] == 5 and c["dropped.held_full"] == 0 and c["held_unmarked"] == 0
    finally:
        gw.close()
    assert gw.counters()["lost_at_stop"] == 0


def test_past_the_bound_the_oldest_are_dropped_counted_and_marked_by_a_gap_record(
        tmp_path, broker, chirpstack):
    gw = Gateway(tmp_path, broker, max_held=2)
    try:
        gw.agent.outbox.cap_file_bytes(0)
        send(chirpstack, 5)
        assert wait_until(lambda: gw.counters()["dropped.held_full"] == 3, 20), gw.counters()
        assert gw.rows() == {}
        gw.agent.outbox.cap_file_bytes(1 << 30)
        assert wait_until(lambda: gw.counters()["holding"] == 0, 20), gw.counters()
        rows = {k: json.loads(v) for k, v in gw.rows().items()}
    finally:
        gw.close()
    readings = {k[2] for k, r in rows.items() if r.get("kind", "reading") == "reading"}
    gaps = [r for r in rows.values() if r.get("kind") == "gap"]
    # two uplinks stored whole; the three dropped are covered by gap records, their count
    # exactly the records dropped, each record under the key of the first seq it replaces
    assert len(readings) == 2 * PER_UPLINK and gaps
    assert sum(g["dropped"] for g in gaps) == 3 * PER_UPLINK
    for s in set(range(5 * PER_UPLINK)) - readings:
        assert any(g["first_seq"] <= s <= g["last_seq"] for g in gaps), s
    for g in gaps:
        assert (BIN, EPOCH, g["first_seq"]) in rows and g["first_epoch"] == EPOCH
        assert g["t"] is None and g["rx_t"] == T0  # untimed: the gateway's receive time
    c = gw.counters()
    assert c["held"] >= 5 and c["gap_records"] == len(gaps) and c["held_unmarked"] == 0
    assert gw.agent.snapshot()["agent.gap_records"] == len(gaps)
