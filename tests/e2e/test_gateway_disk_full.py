"""The gateway's ``disk_full`` alarm end to end (RELIABILITY.md's fault catalogue: "disk full:
catch SQLITE_FULL, apply the overflow policy, alarm, keep forwarding, no crash loop"), in the
test's process with the composition root (``gateway.app.build``) on the files of a ``Site``
(tests/e2e/gatewayharness.py): the site's Mosquitto with nodes sending real authenticated
frames, the council's Mosquitto with TLS and a platform subscribed to it, the real MQTT
forwarder. The disk fills through the outbox's fault (``Outbox.cap_file_bytes``: SQLite
answers ``SQLITE_FULL`` as a full disk does) right after the start, so the outbox has no
unsent row to drop and refuses the nodes' batches: nothing is acked, the nodes keep their
readings and resend. What the platform receives is the assertion: the alarm raised, then
cleared, and every reading, with no gap and nothing dropped.

The nodes are pumped by the test (``pump``): a node sends or resends only when pumped, so
the test decides when the agent sees arrivals. Waits are bounded loops."""

import random

import pytest

from gateway.backoff import Backoff
from gateway.forward.mqtt import MQTTForwarder
from simulators.broker import mosquitto_available
from tests.e2e.gatewayharness import GATEWAY_ID, SITE_ID, UP_PW, JumpingClock, Site, wait_until
from tests.e2e.test_gateway_tls_alarm import gateway_alarms

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")

# A full disk refused every second (the nodes' resend) keeps one episode going; quiet for
# 2 s after room is back, it clears. The link checked every 0.1 s.
TUNING = {"link_check_s": 0.1, "disk_clear_s": 2.0, "backoff_s": 0.2, "poll_s": 0.05}
PER_NODE = 120  # readings per node: 3 frames of 40 (a frame's rows need pages of their own)


def disk_alarms(site):
    """The gateway's disk_full events the platform received, in order."""
    return gateway_alarms(site, "disk_full")


def start(site, tmp_path):
    """The agent on ``site``'s files with a forwarder that reconnects fast; started, with
    the disk full at once; the nodes connected and holding ``PER_NODE`` readings each."""
    clock = JumpingClock()
    forwarder = MQTTForwarder(site.load_config().upstream_mqtt, UP_PW, SITE_ID, GATEWAY_ID,
                              clock, backoff=Backoff(0.05, 0.3, rng=random.Random(5)))
    runner = site.in_process_agent(clock, forwarder=forwarder, **TUNING)
    assert runner.start()
    runner.agent.outbox.cap_file_bytes(0)  # the disk is full: no page more
    for node in site.start_nodes(batch=40):
        node.produce(PER_NODE)
    return runner


def pump(site, then=lambda: True):
    """Pump every node (send, or resend after its 1 s), then ``then()`` (for ``wait_until``)."""
    for node in site.nodes:
        node.pump()
    return then()


def snap_of(runner):
    return runner.agent.snapshot()


def check_nothing_lost(site, runner):
    assert wait_until(lambda: pump(site, site.everything_delivered), 60, 0.05), (
        [(n.device_id, n.pending(), n.next_seq) for n in site.nodes], site.collector.count())
    assert site.undelivered() == {} and site.collector.bad == []
    assert all(n.next_seq == PER_NODE and n.counters["bad_acks"] == 0 for n in site.nodes)
    snap = snap_of(runner)
    assert sum(v for k, v in snap.items() if k.startswith("outbox.dropped.")) == 0
    assert snap["outbox.gap_markers"] == 0 and site.collector.topics("/gaps") == []


def test_the_platform_hears_of_a_full_disk_at_once_and_of_its_end(tmp_path):
    with Site(tmp_path, n_nodes=2) as site:
        runner = start(site, tmp_path)
        assert wait_until(lambda: snap_of(runner)["forwarder.connected"] == 1, 30)
        assert wait_until(lambda: pump(site, lambda: snap_of(runner).get(
            "agent.store_failures.outbox_full", 0) >= 1), 30)
        # the nodes wait (not pumped): the raise goes alone, and out while the disk is full
        assert wait_until(lambda: [e["kind"] for e in disk_alarms(site)] == ["raised"], 30), \
            site.collector.topics("/alarms")
        snap = snap_of(runner)
        assert snap["agent.disk_full_alarm_active"] == 1 and snap.get("agent.acks", 0) == 0
        assert site.collector.count() == (0, 0)  # not one reading could be stored
        # the nodes resend: refused again, one episode, no second raise
        n = snap["agent.store_failures.outbox_full"]
        assert wait_until(lambda: pump(site, lambda: snap_of(runner)[
            "agent.store_failures.outbox_full"] >= n + 2), 30)
        assert all(n.pending() == PER_NODE for n in site.nodes)
        runner.agent.outbox.cap_file_bytes(1 << 30)  # room again
        check_nothing_lost(site, runner)
        assert wait_until(lambda: [e["kind"] for e in disk_alarms(site)] ==
                          ["raised", "cleared"], 30), site.collector.topics("/alarms")
        snap = snap_of(runner)
        assert snap["agent.disk_full_alarm_active"] == 0 and snap["agent.disk_events"] == 2
        assert snap["agent.disk_events_pending"] == 0
        assert runner.stop()
    raised, cleared = disk_alarms(site)
    assert raised["device_id"] == cleared["device_id"] == GATEWAY_ID
    assert raised["severity"] == "critical" and "OutboxFull" in raised["detail"]["detail"]
    assert cleared["since"] == raised["since"] and cleared["at"] > raised["at"]
    assert cleared["value"] >= 3 and cleared["detail"]["detail"] == "stores go through again"


def test_an_episode_while_the_upstream_link_is_down_still_reaches_the_platform(tmp_path):
    with Site(tmp_path, n_nodes=2, proxy=True) as site:
        site.proxy.refuse(True)  # the council's broker cannot be reached
        runner = start(site, tmp_path)
        assert wait_until(lambda: pump(site, lambda: snap_of(runner).get(
            "agent.store_failures.outbox_full", 0) >= 3), 30)
        snap = snap_of(runner)
        assert snap["agent.disk_full_alarm_active"] == 1 and snap.get("agent.acks", 0) == 0
        assert snap["agent.disk_events_pending"] == 1  # held in memory: nothing can be spared
        runner.agent.outbox.cap_file_bytes(1 << 30)  # room again, the link still down
        assert wait_until(lambda: pump(site, site.all_acked), 60)
        assert wait_until(lambda: snap_of(runner)["agent.disk_full_alarm_active"] == 0, 30)
        assert wait_until(lambda: snap_of(runner)["agent.disk_events"] == 2, 30)
        snap = snap_of(runner)
        assert snap["agent.disk_events_pending"] == 0 and snap["forwarder.connected"] == 0
        assert site.collector.messages == []  # the whole episode passed with the link down
        site.proxy.heal()
        check_nothing_lost(site, runner)
        assert wait_until(lambda: [e["kind"] for e in disk_alarms(site)] ==
                          ["raised", "cleared"], 30), site.collector.topics("/alarms")
        assert runner.stop()
    raised, cleared = disk_alarms(site)
    assert cleared["since"] == raised["since"] and cleared["at"] > raised["at"]
