"""No LoRaWAN uplink lost while the disk is full (issue 4: the gateway must lose nothing).

ChirpStack's user publishes real v4 ``up`` events (real LoRaWAN packs of 40 readings inside)
to a real Mosquitto; the gateway's composition root (``gateway.app.build``) runs the agent
with the ChirpStack source on it and a real outbox file whose disk-full fault is on
(``Outbox.cap_file_bytes``: SQLite answers ``SQLITE_FULL`` as a full disk does, and an
empty outbox has no unsent row to drop). A node frame is simply not acked then (the node
resends); an uplink has no second chance, so the source must hold it and hand it over again
once the disk has room, and past its bound drop the oldest with a count and a gateway gap
marker (the agent's link check has the outbox mark it: ``Outbox.mark_dropped``).
What the outbox file holds is read with a connection of the test's own."""

import json
import sqlite3
import threading

import pytest

from gateway import app, config
from gateway.outbox import OutboxFull
from gateway.outbox_gaps import Dropped
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

    def __init__(self, tmp_path, broker, link_check_s=None, **source_kw):
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
        tuning = dict(FAST) if link_check_s is None else dict(FAST, link_check_s=link_check_s)
        self.agent = app.build(cfg, Secrets({}, {}, None), clock, sources=[self.source],
                               forwarder=Upstream(), **tuning)
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


def test_past_the_bound_the_oldest_are_dropped_counted_and_marked_by_the_gateway(
        tmp_path, broker, chirpstack):
    gw = Gateway(tmp_path, broker, link_check_s=0, max_held=2)  # the link check: every step
    try:
        gw.agent.outbox.cap_file_bytes(0)
        send(chirpstack, 5)
        assert wait_until(lambda: gw.counters()["dropped.held_full"] == 3, 20), gw.counters()
        assert not [k for k in gw.rows() if k[0] == BIN]  # (the disk_full alarm may fit)
        gw.agent.outbox.cap_file_bytes(1 << 30)
        assert wait_until(lambda: gw.counters()["holding"] == 0, 20), gw.counters()
        rows = {k: json.loads(v) for k, v in gw.rows().items()}
        markers = gw.agent.outbox.gaps()
        snap = gw.agent.snapshot()
    finally:
        gw.close()
    readings = {k[2] for k, r in rows.items() if k[0] == BIN and r.get("kind", "reading") == "reading"}
    # two uplinks stored whole; the three dropped are no records of the node's stream but
    # the gateway's gap markers, their count exactly the records dropped
    assert len(readings) == 2 * PER_UPLINK
    assert len([k for k in rows if k[0] == BIN]) == len(readings)
    assert markers and all(m.device_id == BIN and m.first_epoch == m.last_epoch == EPOCH
                           for m in markers)
    assert sum(m.dropped for m in markers) == 3 * PER_UPLINK
    for s in set(range(5 * PER_UPLINK)) - readings:
        assert any(m.first_seq <= s <= m.last_seq for m in markers), s
    c = gw.counters()
    assert c["held"] >= 5 and c["gap_markers"] >= 1 and c["held_unmarked"] == 0
    assert c["records_marked"] == snap["agent.source_drops_marked"] == 3 * PER_UPLINK
    assert snap["outbox.dropped_by_reason.full"] == snap["outbox.dropped.routine"] == 3 * PER_UPLINK
    assert snap.get("agent.gap_records", 0) == 0  # no node-style gap record was stored


def test_a_marker_the_full_disk_refuses_waits_in_the_source_and_is_stored_once_it_has_room(
        tmp_path, broker, chirpstack):
    gw = Gateway(tmp_path, broker, link_check_s=0, max_held=1)
    ob = gw.agent.outbox
    try:
        ob.cap_file_bytes(0)  # the disk is full, and so is the markers' last page:
        for pad in (40, 8, 0):  # other devices' drops fill it until not even a marker with
            for i in range(2000):  # a shorter device id than the bin's fits
                try:
                    ob.mark_dropped([Dropped("f%d-%05d%s" % (pad, i, "x" * pad), 1, 0, 1, 0, 1)])
                except OutboxFull:
                    break
        fillers = len(ob.gaps())
        send(chirpstack, 2)  # the first is dropped past the bound: its marker is refused
        assert wait_until(lambda: gw.agent.snapshot().get("agent.source_gap_failures", 0) >= 2,
                          20), gw.agent.snapshot()
        assert gw.counters()["dropped.held_full"] == 1 and gw.counters()["gap_markers"] == 0
        assert len(ob.gaps()) == fillers  # nothing of the bin marked, nothing half-done
        snap = gw.agent.snapshot()
        assert snap["agent.disk_full_alarm_active"] == 1
        assert snap["source.chirpstack.holding"] == 2  # the held uplink and the drop
        ob.cap_file_bytes(1 << 30)
        assert wait_until(lambda: gw.counters()["holding"] == 0, 20), gw.counters()
        (marker,) = [m for m in ob.gaps() if m.device_id == BIN]
        snap = gw.agent.snapshot()
    finally:
        gw.close()
    stored = {k[2] for k in gw.rows() if k[0] == BIN}
    # which of the two was dropped depends on whether the other was out for a retry then
    assert (marker.first_epoch, marker.last_epoch, marker.dropped) == (EPOCH, EPOCH, PER_UPLINK)
    dropped = set(range(marker.first_seq, marker.last_seq + 1))
    assert len(dropped) == PER_UPLINK and dropped | stored == set(range(2 * PER_UPLINK))
    assert not dropped & stored
    assert snap["agent.source_drops_marked"] == PER_UPLINK
    assert gw.counters()["records_marked"] == PER_UPLINK
