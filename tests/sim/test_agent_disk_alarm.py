"""The gateway's ``disk_full`` alarm in the agent (gateway/agent_disk.py): the composition root
(``gateway.app.build``) on a real configuration and a real outbox file whose disk-full fault
is on (``Outbox.cap_file_bytes``: SQLite answers ``SQLITE_FULL`` as a full disk does), real
node frames (tests/sim/test_agent.py's ``NodeSource``) and a forwarder that takes rows only
when pumped, connected or not. Virtual clock; ``step`` runs the loop by hand. What the
outbox FILE holds is read with a connection of the test's own."""

import json
import logging
import sqlite3

import pytest

from gateway import app, config, metrics, ops
from gateway.outbox import OutboxFull
from gateway.security import Secrets
from simulators.clock import VirtualClock
from tests.sim.test_agent import CONFIG, DEV, FAST, KEY, T0, NodeSource, Upstream, readings

GW = "gw1"
TUNING = dict(FAST, link_check_s=1.0, disk_clear_s=60.0)


class Link(Upstream):
    """``Upstream`` whose connection is up or down (``connected``)."""

    def __init__(self, connected):
        Upstream.__init__(self)
        self.connected = connected

    def status(self):
        return {"connected": self.connected, "detail": "test upstream"}


@pytest.fixture
def site(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)
    cfg = config.load(path)

    def make(connected=True, clock=None):
        clock = clock or VirtualClock()
        node, up = NodeSource(None), Link(connected)
        agent = app.build(cfg, Secrets({"upstream.mqtt": "x" * 20}, {DEV: KEY}, None), clock,
                          sources=[node], forwarder=up, **TUNING)
        agent.start()
        return agent, node, up, clock
    make.cfg = cfg
    return make


def gateway_rows(cfg):
    """The gateway's own rows in the outbox file: [(seq, lane, [(rule, kind)...])]."""
    db = sqlite3.connect(cfg.outbox.path)
    try:
        return [(s, lane, [(e["rule"], e["kind"]) for e in json.loads(p)["alarms"]])
                for s, lane, p in db.execute("SELECT seq, lane, payload FROM rows WHERE "
                                             "device_id = ? ORDER BY seq", (GW,))]
    finally:
        db.close()


def disk_events(rows):
    return [e for r in rows if r.device_id == GW for e in r.record["alarms"]
            if e["rule"] == "disk_full"]


def send(node, frames):
    for recs in frames:
        node.send(recs)


FRAMES = [readings(25 * i, 25) for i in range(4)]  # ~12 KB of rows: new pages needed


def refused(site, connected):
    """An agent whose disk is full (nothing unsent to drop), after one batch of ``FRAMES``
    refused."""
    agent, node, up, clock = site(connected=connected)
    agent.outbox.cap_file_bytes(0)
    send(node, FRAMES)
    agent.step()
    return agent, node, up, clock


def test_a_full_disk_raises_disk_full_at_once_and_room_again_clears_it(site, caplog):
    caplog.set_level(logging.WARNING, logger="civicedge.gateway")
    agent, node, up, clock = refused(site, connected=True)  # the raise waits in memory
    snap = agent.snapshot()
    assert node.acks == [] and snap["agent.store_failures.outbox_full"] == 1
    assert snap["agent.disk_full_alarm_active"] == 1
    assert snap["agent.disk_events_pending"] == 1 and gateway_rows(site.cfg) == []
    assert "civicedge_disk_full_alarm_active 1" in metrics.render(snap).splitlines()
    clock.advance_s(1)
    agent.step()  # the link check: the forwarder is connected, so the raise goes alone
    assert gateway_rows(site.cfg) == [(0, "alarm", [("disk_full", "raised")])]
    (raised,) = disk_events(up.pump())  # the platform hears of it while the disk is full
    send(node, FRAMES)  # the node resends: still refused, no second raise
    agent.step()
    assert node.acks == [] and agent.snapshot()["agent.store_failures.outbox_full"] == 2
    agent.outbox.cap_file_bytes(1 << 30)  # room again
    send(node, FRAMES)
    agent.step()
    assert len(node.acks) == 4 and agent.snapshot()["agent.disk_full_alarm_active"] == 1
    clock.advance_s(30)
    agent.step()  # not quiet for disk_clear_s yet
    assert agent.snapshot()["agent.disk_full_alarm_active"] == 1
    clock.advance_s(31)
    agent.step()
    snap = agent.snapshot()
    assert snap["agent.disk_full_alarm_active"] == 0 and snap["agent.disk_events_pending"] == 0
    assert snap["agent.disk_events"] == 2 and snap.get("agent.link_events", 0) == 0
    rows = up.pump()
    (cleared,) = disk_events(rows)
    assert sorted(r.seq for r in rows if r.device_id == DEV) == list(range(100))
    assert raised["kind"] == "raised" and cleared["kind"] == "cleared"
    assert raised["device_id"] == cleared["device_id"] == GW
    assert raised["severity"] == "critical" and raised["since"] == T0 + 0.0
    assert cleared["since"] == raised["since"] and cleared["at"] == T0 + 62
    assert cleared["value"] >= 2 and "OutboxFull" in raised["detail"]["detail"]
    assert raised["detail"]["outbox"] == site.cfg.outbox.path
    assert snap.get("outbox.dropped.routine", 0) == 0 and snap["outbox.gap_markers"] == 0
    lines = [r.getMessage() for r in caplog.records]
    assert sum(ln.startswith("ALARM disk_full raised: SQLite found the outbox's disk full "
                             "(OutboxFull)") for ln in lines) == 1
    assert lines.count("alarm disk_full cleared: stores go through again (%d full-disk "
                       "event(s) in the episode)" % cleared["value"]) == 1
    agent.stop()


def test_an_episode_while_the_link_is_down_reaches_the_platform_raised_then_cleared(site):
    agent, node, up, clock = refused(site, connected=False)
    clock.advance_s(1)
    agent.step()  # link down: the raise waits for a store with readings (nothing to spare)
    assert agent.snapshot()["agent.disk_events_pending"] == 1 and gateway_rows(site.cfg) == []
    agent.outbox.cap_file_bytes(1 << 30)
    send(node, FRAMES)
    agent.step()  # stored with the readings, in one transaction
    assert len(node.acks) == 4
    assert gateway_rows(site.cfg) == [(0, "alarm", [("disk_full", "raised")])]
    assert agent.outbox.load_state("disk")["active"]["outbox"]["since"] == T0
    clock.advance_s(61)
    agent.step()  # cleared; the alarm is over, so its clear is stored alone
    assert gateway_rows(site.cfg) == [(0, "alarm", [("disk_full", "raised")]),
                                      (1, "alarm", [("disk_full", "cleared")])]
    assert agent.outbox.load_state("disk") == {"active": {}}
    up.connected = True  # the link comes back: everything goes, in order
    rows = up.pump()
    assert [e["kind"] for e in disk_events(rows)] == ["raised", "cleared"]
    assert sorted(r.seq for r in rows if r.device_id == DEV) == list(range(100))
    agent.stop()


def test_room_made_by_the_policy_raises_from_the_outbox_counter(site):
    agent, node, up, clock = site(connected=False)
    send(node, [readings(25 * i, 25) for i in range(8)])  # 200 rows queued (link down)
    agent.step()
    agent.outbox.cap_file_bytes(0)  # the disk fills up under them
    send(node, [readings(200 + 25 * i, 25) for i in range(4)])
    agent.step()  # SQLITE_FULL: the oldest routine rows dropped to make room; stored, acked
    snap = agent.snapshot()
    assert len(node.acks) == 12 and snap["outbox.dropped_by_reason.full"] > 0
    assert snap["outbox.disk_full_events"] >= 1 and snap["agent.disk_full_alarm_active"] == 0
    clock.advance_s(1)
    agent.step()  # the link check sees the counter rise: raised (waits: link down)
    assert agent.snapshot()["agent.disk_full_alarm_active"] == 1
    send(node, [readings(300, 1)])
    agent.step()  # goes with the next readings
    rows = up.pump()
    (raised,) = disk_events(rows)
    assert "made room by its policy" in raised["detail"]["detail"]
    assert agent.snapshot()["outbox.gap_markers"] >= 1  # the drops are marked, not silent
    agent.stop()


def test_a_standing_alarm_survives_a_restart_shows_in_status_and_clears_after(site):
    agent, node, up, clock = refused(site, connected=False)
    agent.outbox.cap_file_bytes(1 << 30)
    send(node, FRAMES)
    agent.step()  # the raise stored with the readings; the agent stops while it stands
    agent.stop()
    st = ops.gather_status(site.cfg, T0 + 10, probe=False)
    assert any(n.startswith("ALARM disk_full: SQLite found the outbox's disk full since "
                            "2026-01-05T00:00:00Z") for n in st["notes"]), st["notes"]
    agent, node, up, clock = site(connected=True, clock=VirtualClock(start_wall_s=T0 + 100))
    assert agent.snapshot()["agent.disk_full_alarm_active"] == 1
    send(node, [readings(100, 1)])
    agent.step()  # a store goes through
    clock.advance_s(61)
    agent.step()
    assert agent.snapshot()["agent.disk_full_alarm_active"] == 0
    assert [(e["kind"], e["since"]) for e in disk_events(up.pump())] == [
        ("raised", T0), ("cleared", T0)]
    agent.stop()
    st = ops.gather_status(site.cfg, T0 + 200, probe=False)
    assert not any("disk_full" in n for n in st["notes"])


def fill_up(outbox):
    """Fill every byte the capped file has left with small rows taken at once (in flight:
    the policy never drops those), so that nothing more fits. Returns how many."""
    n = 0
    while True:
        try:
            outbox.put_many([("filler", 1, n, {"seq": n, "t": T0, "values": []}, "routine")])
        except OutboxFull:
            return n
        assert len(outbox.take(10)) == 1
        n += 1


def test_pending_events_are_stored_at_a_stop(site):
    agent, node, up, clock = refused(site, connected=False)  # the raise waits (link down)
    agent.stop()  # a small event still fits: stored at the stop
    assert gateway_rows(site.cfg) == [(0, "alarm", [("disk_full", "raised")])]


def test_pending_events_that_do_not_fit_at_a_stop_are_logged(site, caplog):
    agent, node, up, clock = site(connected=False)
    agent.outbox.cap_file_bytes(0)
    assert fill_up(agent.outbox) > 0
    send(node, FRAMES)
    agent.step()
    assert agent.snapshot()["agent.disk_events_pending"] == 1
    with caplog.at_level(logging.ERROR, logger="civicedge.gateway"):
        agent.stop()
    assert "1 disk_full alarm event(s) not stored at the stop (the disk is full)" in caplog.text
