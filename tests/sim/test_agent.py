"""The gateway agent end to end in one process: ``gateway.app.build`` on a real configuration
(parsed from TOML) and a real outbox file, with a byte-level node source (real frames made
with ``protocol.frame``/``protocol.senml``; the acks it gets back are verified with the device
key) and a forwarder that takes rows from the outbox and acks them. Virtual clock."""

import json
import logging
import sqlite3

import pytest

from gateway import app, config
from gateway.security import Secrets
from gateway.sources import FRAME, LORAWAN, Arrival
from protocol import frame, lorapack, senml
from simulators.clock import VirtualClock
from tests.gatewaykit import device_toml, mqtt_toml, site_toml

KEY = bytes(range(16, 48))
DEV, BIN, EUI = "sch1-rm12-co2", "sch1-yard-bin1", "70b3d57ed0061a2d"
T0 = 1767571200  # 2026-01-05 00:00 UTC (00:00 in London), the VirtualClock's start
FAST = {"backoff_s": 0, "put_timeout_s": 0.05, "poll_s": 0.02}

CONFIG = (site_toml(keys_file="keys.toml") + device_toml(DEV)
          + device_toml(BIN, "bin-level", "lorawan", 'dev_eui = "%s"' % EUI)
          + '[[sources.serial]]\nport = "loop://"\n'
          + mqtt_toml("sources.chirpstack", "gw1", "pw", tls=False)
          + mqtt_toml("upstream.mqtt", "gw1", "pw", tls=False))


def readings(first, n, co2=800, t0=T0, step=120):
    return [{"seq": first + i, "t": t0 + i * step,
             "values": [["co2_ppm", co2, "ok"], ["temperature_c", 21.5, "ok"]]}
            for i in range(n)]


class NodeSource:
    """A node on a link: sends real frames into the agent's sink and verifies each ack with
    the device key. At each ack it also looks at the outbox FILE through a connection of its
    own, to see which seqs were durable when the ack came."""

    def __init__(self, db_path, name="serial:loop://"):
        self.name, self.db_path = name, db_path
        self.acks, self.bad_acks, self.durable_at_ack, self.sent = [], 0, [], 0
        self.sink, self.stopped = None, False

    def start(self, sink):
        self.sink = sink

    def stop(self, timeout_s=5.0):
        self.stopped = True

    def counters(self):
        return {"frames": self.sent, "bad_acks": self.bad_acks}

    def status(self):
        return {"connected": True, "detail": "test node"}

    def send(self, records, epoch=7, key=KEY, raw=None, kind=FRAME, **arrival):
        if raw is None:
            raw = frame.encode_data(key, DEV, epoch, records[0]["seq"], len(records),
                                    senml.encode_pack(DEV, epoch, records))
        self.sent += 1
        return self.sink(Arrival(kind, raw, self.name, reply=self._reply, **arrival))

    def _reply(self, ack):
        try:
            got = frame.decode_frame(ack, {DEV: KEY}.get, expect=frame.TYPE_ACK)
        except frame.FrameError:
            self.bad_acks += 1
            return
        if self.db_path is not None:
            db = sqlite3.connect(self.db_path)
            try:
                self.durable_at_ack.append({s for (s,) in db.execute(
                    "SELECT seq FROM rows WHERE device_id = ? AND boot_epoch = ?",
                    (got.device_id, got.boot_epoch))})
            finally:
                db.close()
        self.acks.append(got)


class Upstream:
    """A forwarder: takes rows (alarms first) from the real outbox and acks them."""

    def __init__(self):
        self.rows, self.wakes, self.outbox, self.stopped = [], 0, None, False

    def start(self, outbox):
        self.outbox = outbox

    def stop(self, timeout_s=5.0):
        self.stopped = True

    def wake(self):
        self.wakes += 1

    def pump(self):
        rows = self.outbox.take(10000)
        self.outbox.ack([r.row_id for r in rows])
        self.rows.extend(rows)
        return rows

    def counters(self):
        return {"forwarded": len(self.rows), "wakes": self.wakes}

    def status(self):
        return {"connected": True, "detail": "test upstream"}


@pytest.fixture
def site(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)
    cfg = config.load(path)
    secrets = Secrets({"upstream.mqtt": "x" * 20}, {DEV: KEY}, None)

    def make(clock=None, **tuning):
        clock = clock or VirtualClock()
        node, up = NodeSource(cfg.outbox.path), Upstream()
        agent = app.build(cfg, secrets, clock, sources=[node], forwarder=up,
                          **dict(FAST, **tuning))
        agent.start()
        return agent, node, up, clock
    return make


def test_a_frame_is_committed_then_acked_then_forwarded(site):
    agent, node, up, _ = site()
    assert node.send(readings(0, 3)) is True
    assert agent.step() == 1
    assert node.acks == [frame.Ack(DEV, 7, 2)] and node.bad_acks == 0
    assert node.durable_at_ack == [{0, 1, 2}]  # durable in the file before the ack was sent
    assert up.wakes == 1
    rows = up.pump()
    assert [(r.device_id, r.boot_epoch, r.seq, r.lane) for r in rows] == [
        (DEV, 7, 0, "routine"), (DEV, 7, 1, "routine"), (DEV, 7, 2, "routine")]
    assert rows[0].record["values"] == [["co2_ppm", 800, "ok"], ["temperature_c", 21.5, "ok"]]
    assert "alarms" not in rows[0].record and "rx_t" not in rows[0].record
    snap = agent.snapshot()
    assert snap["agent.acks"] == 1 and snap["agent.records_stored"] == 3
    assert snap["pipeline.received"] == 1 and snap["pipeline.records"] == 3
    assert snap["last_seen_s." + DEV] == T0
    assert snap["source.serial:loop://.frames"] == 1 and snap["source.serial:loop://.connected"] == 1
    assert snap["forwarder.forwarded"] == 3 and snap["forwarder.connected"] == 1
    assert snap["outbox.rows.routine"] == 0 and snap["outbox.rows.alarm"] == 0
    assert snap["gateway.boot_epoch"] == agent.boot_epoch and snap["agent.queue_len"] == 0
    agent.stop()
    assert node.stopped and up.stopped


def test_an_untimed_record_gets_the_receive_time(site):
    agent, node, up, clock = site()
    clock.advance_s(30)
    node.send([{"seq": 0, "t": None, "values": [["co2_ppm", 900, "ok"]]}], received_s=T0 + 5)
    agent.step()
    (row,) = up.pump()
    assert row.record["t"] is None and row.record["rx_t"] == T0 + 5
    agent.stop()


def test_no_ack_while_the_disk_is_full_and_the_resend_is_stored_afresh(site, caplog):
    agent, node, up, _ = site()
    agent.outbox.cap_file_bytes(0)  # any new page is a full disk; nothing unsent to drop
    frames = [readings(25 * i, 25) for i in range(4)]  # ~12 KB of rows: new pages needed
    for recs in frames:
        node.send(recs)
    with caplog.at_level(logging.ERROR, logger="civicedge.gateway"):
        agent.step()
    assert node.acks == [] and agent.snapshot()["agent.store_failures.outbox_full"] == 1
    assert "batch of 4 input(s) not stored, not acked (nodes will resend)" in caplog.text
    assert agent.outbox.load_state("replay") is None  # no state stored without the rows
    assert agent.ingest.replay_state()["devices"] == {}  # and the pipeline's rolled back
    agent.outbox.cap_file_bytes(1 << 30)  # room again
    for recs in frames:  # the node resends: not duplicates, since nothing was committed
        node.send(recs)
    agent.step()
    assert node.acks == [frame.Ack(DEV, 7, 25 * i + 24) for i in range(4)]
    assert node.durable_at_ack[0] == set(range(100))  # the whole batch, one transaction
    snap = agent.snapshot()  # the readings, and the disk_full alarm raised by the refusal
    assert snap.get("pipeline.duplicates", 0) == 0 and snap["agent.records_stored"] == 101
    rows = up.pump()
    assert [r.seq for r in rows if r.device_id == DEV] == list(range(100))
    assert [(r.lane, [e["rule"] for e in r.record["alarms"]]) for r in rows
            if r.device_id == "gw1"] == [("alarm", ["disk_full"])]
    agent.stop()


def test_a_replayed_frame_is_counted_not_acked_and_logged_without_key(site, caplog):
    agent, node, up, _ = site()
    node.send(readings(0, 2), epoch=7)
    agent.step()
    with caplog.at_level(logging.INFO, logger="civicedge.gateway"):
        node.send(readings(0, 2), epoch=6)  # an older boot epoch: a replay
        agent.step()
    assert node.acks == [frame.Ack(DEV, 7, 1)]
    snap = agent.snapshot()
    assert snap["pipeline.replays"] == 1 and snap["agent.rejected"] == 1
    assert "rejected (replays)" in caplog.text and KEY.hex() not in caplog.text
    agent.stop()


def test_bad_input_is_counted_logged_once_per_interval_and_the_loop_survives(site, caplog):
    agent, node, up, clock = site()
    wrong = bytes(range(100, 132))
    with caplog.at_level(logging.INFO, logger="civicedge.gateway"):
        for _ in range(5):
            node.send(readings(0, 1), key=wrong)  # forged: bad tag
        node.send([], raw=b"\x00garbage that is not a frame")
        node.send([], raw="not bytes")
        node.send([], raw=b"\x01", kind="carrier-pigeon")  # a source bug: unknown kind
        agent.step()
        bad_tag_lines = [r for r in caplog.records if "auth_failures.bad_tag" in r.message]
        assert len(bad_tag_lines) == 1  # 5 forged frames, one line
        clock.advance_s(61)
        node.send(readings(0, 1), key=wrong)
        agent.step()
    bad_tag_lines = [r for r in caplog.records if "auth_failures.bad_tag" in r.message]
    assert len(bad_tag_lines) == 2 and "(and 4 more like it in the last 61 s)" in \
        bad_tag_lines[1].message
    assert all(KEY.hex() not in r.message and wrong.hex() not in r.message
               for r in caplog.records)
    snap = agent.snapshot()
    assert snap["pipeline.auth_failures.bad_tag"] == 6 and snap["agent.ingest_errors"] == 1
    assert snap["pipeline.auth_failures.version"] == 1
    assert snap["pipeline.decode_errors.not_bytes"] == 1 and snap["agent.rejected"] == 8
    node.send(readings(0, 2))  # and a good frame still goes through
    agent.step()
    assert node.acks == [frame.Ack(DEV, 7, 1)] and node.bad_acks == 0
    agent.stop()


def test_an_alarm_record_goes_to_the_alarm_lane_with_its_events(site):
    agent, node, up, _ = site()
    # co2_high_20min: above 1500 ppm for 1200 s (classroom-co2 profile)
    node.send(readings(0, 13, co2=1800))  # 0..1440 s
    agent.step()
    rows = up.pump()
    alarm_rows = [r for r in rows if r.lane == "alarm"]
    assert len(alarm_rows) == 1 and alarm_rows[0] is rows[0]  # alarms are taken first
    (event,) = alarm_rows[0].record["alarms"]
    assert event["kind"] == "raised" and event["rule"] == "co2_high_20min"
    assert event["device_id"] == DEV and alarm_rows[0].record["t"] >= T0 + 1200
    assert all("alarms" not in r.record for r in rows if r.lane == "routine")
    assert agent.snapshot()["alarms.active"] == 1
    agent.stop()


def test_tick_closes_a_quiet_device_window_into_the_gateway_stream(site):
    agent, node, up, clock = site()
    node.send(readings(0, 3, co2=2000))  # 4 minutes above the daily mean threshold
    agent.step()
    up.pump()
    clock.advance_s(86400 + 60)  # past local midnight: the day's window is due
    agent.step()
    rows = up.pump()
    assert len(rows) == 1
    row = rows[0]
    assert (row.device_id, row.boot_epoch, row.seq) == ("gw1", agent.boot_epoch, 0)
    assert row.lane == "alarm" and row.record["kind"] == "event"
    assert row.record["t"] == T0 + 86400 + 60
    (event,) = row.record["alarms"]
    assert event["rule"] == "co2_daily_mean_high" and event["kind"] == "raised"
    assert event["device_id"] == DEV and event["value"] == 2000
    snap = agent.snapshot()
    assert snap["agent.ticks"] >= 1 and snap["agent.tick_events"] == 1
    assert snap["gateway.next_seq"] == 1
    assert agent.outbox.load_state("gateway") == {"boot_epoch": agent.boot_epoch, "next_seq": 1}
    agent.stop()


def test_a_tick_that_closes_no_window_stores_nothing_and_one_that_does_stores_the_state(site):
    agent, node, up, clock = site()
    node.send(readings(0, 3))  # 800 ppm: below every threshold, no alarm ever
    agent.step()
    assert len(up.pump()) == 3
    stored = agent.outbox.load_state("alarms")
    batches = agent.snapshot()["agent.batches"]
    clock.advance_s(60)  # the tick is due; no window ends
    agent.step()
    snap = agent.snapshot()
    assert snap["agent.ticks"] == 1 and snap["agent.batches"] == batches  # no transaction
    assert agent.outbox.load_state("alarms") == stored
    clock.advance_s(86400)  # past local midnight: the day's window closes, with no event
    agent.step()
    snap = agent.snapshot()
    assert snap["agent.ticks"] == 2 and snap["agent.batches"] == batches + 1
    assert snap.get("agent.tick_events", 0) == 0 and up.pump() == []
    now = agent.outbox.load_state("alarms")
    assert now != stored and now == json.loads(agent.alarms.state_json())
    agent.stop()


def test_no_tick_while_wall_time_is_untrusted(site):
    clock = VirtualClock(wall_trusted=False)
    agent, node, up, _ = site(clock)
    node.send(readings(0, 3, co2=2000))
    agent.step()
    clock.advance_s(86400 + 60)
    agent.step()
    assert [r.device_id for r in up.pump()] == [DEV] * 3
    assert "agent.ticks" not in agent.snapshot()
    assert agent.snapshot()["agent.wall_trusted"] == 0
    agent.stop()


def test_a_lorawan_uplink_is_stored_and_not_acked(site):
    agent, node, up, _ = site()
    recs = [{"seq": 20 + i, "t": T0 + i * 1800, "values": [["fill_ratio", 0.42, "ok"]]}
            for i in range(3)]
    payload, n = lorapack.pack(recs, 222, 3)
    assert n == 3
    node.sink(Arrival(LORAWAN, payload, "chirpstack", dev_eui=EUI.upper(), dedup_id="d-1"))
    node.sink(Arrival(LORAWAN, payload, "chirpstack", dev_eui=EUI, dedup_id="d-1"))  # again
    agent.step()
    assert [(r.device_id, r.boot_epoch, r.seq) for r in up.pump()] == [(BIN, 3, 20), (BIN, 3, 21),
                                                                      (BIN, 3, 22)]
    assert agent.snapshot()["pipeline.duplicate_uplinks"] == 1 and node.acks == []
    agent.stop()


def test_restart_resumes_replay_and_alarm_state_and_takes_the_next_gateway_epoch(site):
    clock = VirtualClock()
    agent, node, up, _ = site(clock)
    first_epoch = agent.boot_epoch
    assert first_epoch == T0  # the first ever: the trusted wall time
    node.send(readings(0, 3, co2=1800))
    agent.step()
    agent.stop()
    agent, node, up, _ = site(clock)
    assert agent.boot_epoch == first_epoch + 1
    node.send(readings(0, 3), epoch=6)  # older epoch: the replay state came back
    node.send(readings(0, 3, co2=1800), epoch=7)  # the same frame again: known duplicates
    node.send(readings(3, 10, co2=1800, t0=T0 + 360), epoch=7)  # 360..1440 s above 1500
    agent.step()
    snap = agent.snapshot()
    assert snap["pipeline.replays"] == 1 and snap["pipeline.duplicates"] == 3
    assert node.acks == [frame.Ack(DEV, 7, 2), frame.Ack(DEV, 7, 12)]  # duplicate re-acked
    rows = up.pump()
    assert sorted(r.seq for r in rows) == list(range(13))  # 0..2 from before, once each
    raised = [r for r in rows if r.lane == "alarm"]
    # the alarm timer started with the first run's records: it survived the restart
    assert len(raised) == 1 and raised[0].record["alarms"][0]["since"] == T0
    agent.stop()
    agent, node, up, _ = site(clock)
    assert agent.boot_epoch == first_epoch + 2
    agent.stop()


def test_overflow_when_the_queue_stays_full(site):
    agent, node, up, _ = site(queue_size=1, put_timeout_s=0)
    assert node.send(readings(0, 1)) is True
    assert node.send(readings(1, 1)) is False
    assert agent.snapshot()["agent.overflow"] == 1
    agent.step()
    assert node.acks == [frame.Ack(DEV, 7, 0)]  # the node resends the other one later
    agent.stop()


def test_settled_says_what_became_of_an_uplink_and_gap_arrivals_are_stored(site):
    agent, node, up, _ = site()
    recs = [{"seq": i, "t": T0 + i * 60, "values": [["fill_ratio", 0.4, "ok"],
                                                    ["temperature_c", 12.5, "ok"]]}
            for i in range(40)]  # ~5 KB of rows: more than the empty outbox's pages hold
    payload, _ = lorapack.pack(recs, 222, 3)
    told = []
    uplink = Arrival(LORAWAN, payload, "chirpstack", dev_eui=EUI, dedup_id="d-1",
                     settled=told.append)
    agent.outbox.cap_file_bytes(0)  # a full disk: the batch is refused
    node.sink(uplink)
    agent.step()
    assert told == [False] and up.pump() == []
    agent.outbox.cap_file_bytes(1 << 30)
    gap = {"seq": 40, "t": None, "kind": "gap", "dropped": 5, "first_epoch": 3,
           "first_seq": 40, "last_epoch": 3, "last_seq": 44}
    node.sink(uplink)  # handed over again, with a gap record for five dropped readings
    node.sink(Arrival("gap", b"", "chirpstack", device_id=BIN, record=gap, settled=told.append))
    node.sink(Arrival("gap", b"", "chirpstack", device_id=BIN, record={"kind": "gap"},
                      settled=told.append))  # a source's bug: counted, dropped
    agent.step()
    assert told == [False, True, True, True]
    rows = {r.seq: r for r in up.pump()}
    assert sorted(rows) == list(range(41)) and rows[40].record["kind"] == "gap"
    assert rows[40].record["rx_t"] == T0 and rows[40].lane == "routine"
    snap = agent.snapshot()
    assert snap["agent.gap_records"] == 1 and snap["agent.ingest_errors"] == 1
    agent.stop()
