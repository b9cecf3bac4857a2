"""Crash loop (issue 4, "How it will be checked", item 3): ``civicedge gateway run`` is killed
with SIGKILL at random moments, more than a hundred times, while eight nodes keep producing
readings and sending real authenticated frames through the site's Mosquitto and the
council's Mosquitto (TLS) acks what the agent forwards.

RELIABILITY.md, "gateway kill -9 mid-write": every acked row present; ``integrity_check``
ok; a committed-unacked row may duplicate, never vanish. So, after every kill (the agent is
dead, its files frozen): a copy of the outbox file opens and passes ``integrity_check``, and
every reading a node has been acked for is either still in the outbox or already at the
council's platform. At the end the agent runs undisturbed: the nodes' backlogs drain, every
reading acked to a node has reached the platform at least once, each device's readings
there have no holes (0 up to the last one produced), the outbox is empty and the file passes
``integrity_check``; and rows did go upstream more than once (kills between a commit and
its ack, or between a publish and its PUBACK), which the platform deduplicates.

The kills are seeded (``SEED``): most land 0.2-1.5 s after the agent said READY=1 (ingest,
commits, acks, forwarding, PUBACK handling all under way), some during start-up (opening and
checking the outbox, resuming state, connecting). Run time on the 2-core machine: see the
``crash loop:`` line this test prints (``pytest -s``)."""

import random
import time

import pytest

from simulators.broker import mosquitto_available
from tests.e2e.gatewayharness import (
    NodePump,
    Site,
    as_user_prefix,
    copy_keys,
    drained,
    holes,
    wait_until,
)

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")

SEED = 20261122
KILLS = 100  # kills after READY=1
STARTUP_KILL_P = 0.15  # the share of extra kills during start-up
NODES = 8
RATE_HZ = 8.0  # readings a second per node while producing


def _missing_after_kill(site, copy_dir):
    """Acked readings that are neither in the (frozen) outbox nor at the platform, after a
    bounded wait for what the council broker is still delivering to the platform."""
    ok, stored = copy_keys(site.outbox_path, copy_dir)

    def missing():
        out = {}
        for n in site.nodes:
            if n.acked_through is None:
                continue
            here = {s for d, e, s in stored if d == n.device_id and e == n.boot_epoch}
            there = set(site.collector.seqs(n.device_id, n.boot_epoch))
            gone = holes(there | here, n.acked_through)
            if gone:
                out[n.device_id] = gone[:10]
        return out

    wait_until(lambda: not missing(), 10.0, 0.05)
    return ok, missing()


def test_sigkill_at_random_moments_loses_nothing_acked(tmp_path):
    prefix = as_user_prefix()
    if prefix is None:
        pytest.skip("running as root and no user namespace to run the agent as a user")
    rng = random.Random(SEED)
    t0 = time.monotonic()
    with Site(tmp_path, n_nodes=NODES, seed=SEED) as site:
        agent = site.agent_process(prefix)
        site.start_nodes(ack_timeout_s=1.0)
        pump = NodePump(site.nodes, rate_hz=RATE_HZ).start()
        kills = startup_kills = 0
        acked_in_loop = 0
        try:
            while kills < KILLS:
                agent.start()
                if rng.random() < STARTUP_KILL_P:
                    time.sleep(rng.uniform(0.0, 0.9))  # opening the outbox, resuming, connecting
                    startup_kills += 1
                else:
                    assert agent.wait_ready(), agent.log_text()[-3000:]
                    time.sleep(rng.uniform(0.2, 1.5))
                    kills += 1
                rc = agent.kill()
                # killed, not exited on its own (a damaged outbox would exit 1 at start)
                assert rc == -9, (rc, agent.log_text()[-3000:])
                ok, missing = _missing_after_kill(site, str(tmp_path / "copy"))
                assert ok == ["ok"], "after kill %d: integrity_check %r" % (kills, ok)
                assert not missing, "after kill %d: acked but neither stored nor delivered: %r" \
                    % (kills, missing)
                acked_in_loop = sum((n.acked_through or -1) + 1 for n in site.nodes)
            t_loop = time.monotonic() - t0
            delivered_in_loop = site.collector.count()[0]
            rows_left, ok = site.outbox_rows()  # after the last kill, before any restart
            assert ok == ["ok"]

            # Heal: no more kills or new readings; the agent drains everything.
            pump.producing = False
            agent.start()
            assert agent.wait_ready(), agent.log_text()[-3000:]
            assert wait_until(site.all_acked, 120.0, 0.1), \
                [(n.device_id, n.pending()) for n in site.nodes]
            produced = {n.device_id: n.next_seq - 1 for n in site.nodes}

            def delivered():
                return all(not holes(site.collector.seqs(d), last)
                           for d, last in produced.items())
            assert wait_until(delivered, 60.0, 0.1), {
                d: holes(site.collector.seqs(d), last)[:10] for d, last in produced.items()}

            m = site.wait_metrics(drained, 30.0)
            assert drained(m), m
        finally:
            pump.stop()
        assert agent.terminate() == 0, agent.log_text()[-3000:]
        t_total = time.monotonic() - t0

        # Every reading acked to a node reached the platform at least once, and each device's
        # readings there run from 0 to the last produced with no hole.
        assert site.undelivered() == {}
        for n in site.nodes:
            assert n.acked_through == n.next_seq - 1 == produced[n.device_id]
            assert site.collector.seqs(n.device_id) == list(range(n.next_seq))
            assert {e for d, e, s in site.collector.keys if d == n.device_id} == {n.boot_epoch}
        assert site.collector.bad == []
        rows, ok = site.outbox_rows()
        assert rows == 0 and ok == ["ok"]
        # The loop did real work: acks and deliveries while it was being killed.
        assert acked_in_loop > 10 * NODES and delivered_in_loop > 10 * NODES
        # Nothing was dropped by policy (no drops, no gap markers, no gap messages).
        assert m.total("civicedge_drops_total") == 0
        assert m.get("civicedge_outbox_gap_markers") == 0
        assert site.collector.topics("/gaps") == []
        # The kills interrupted deliveries: rows went upstream again (at least once, deduped).
        distinct, copies = site.collector.count()
        assert distinct == sum(produced.values()) + NODES and copies > distinct
        print("\ncrash loop: %d kills after READY + %d during start-up, %d readings from %d "
              "nodes, %d copies upstream for %d distinct (%.2f x), %d rows in the outbox at the "
              "last kill; loop %.1f s, whole test %.1f s"
              % (kills, startup_kills, sum(produced.values()) + NODES, NODES, copies,
                 distinct, copies / max(1, distinct), rows_left, t_loop, t_total))
