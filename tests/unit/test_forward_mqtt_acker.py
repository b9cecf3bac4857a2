"""``Acker.waiting()``: rows the upstream confirmed whose outbox delete has not begun. The
forwarder reports them as ``confirmed_rows`` and the fleet's settle (simulators/fleet/drain.py)
takes the outbox's rows less these as not yet delivered; so each counted row must still be in
the outbox, and none may stay counted once its delete began. A real outbox (SQLite)."""

import collections

from gateway.forward.mqtt_acks import Acker
from gateway.outbox import Outbox, OutboxRecord
from simulators.clock import VirtualClock


def outbox_with(tmp_path, n):
    ob = Outbox(str(tmp_path / "o.db"), 1 << 24, 86400, VirtualClock())
    ob.put_many([OutboxRecord("dev-1", 1, seq, {"seq": seq, "t": 1767225600 + seq,
                                                "values": [["co2_ppm", 400 + seq, "ok"]]}) for seq in range(n)])
    return ob, [r.row_id for r in ob.take(n)]


def rows(ob):
    return sum(ob.stats().rows.values())


def test_waiting_rows_are_still_in_the_outbox_until_their_delete(tmp_path):
    ob, ids = outbox_with(tmp_path, 30)
    counts = collections.Counter()
    acker = Acker(ob, lambda name, n: counts.update({name: n}), delay_s=60.0)
    acker.start()
    try:
        acker.submit(ids[:20])
        assert acker.waiting() == 20 and acker.backlog() == 20
        assert rows(ob) == 30  # delivered, not deleted: 10 not delivered
        assert rows(ob) - acker.waiting() == 10
        assert acker.flush(10.0) is True
        assert acker.waiting() == 0 and acker.backlog() == 0
        assert rows(ob) == 10 and counts["forwarded"] == 20
    finally:
        assert acker.stop(5.0) is True
    ob.close()


def test_waiting_counts_no_row_whose_delete_began(tmp_path):
    """Rows taken into a transaction leave ``waiting()`` at once (they may be gone from the
    outbox any moment), while ``backlog()`` still counts them until it commits."""
    ob, ids = outbox_with(tmp_path, 8)
    seen = []

    class Watching:
        """The outbox, looked at from inside the delete (the transaction running)."""
        def ack(self, row_ids):
            seen.append((acker.waiting(), acker.backlog()))
            return ob.ack(row_ids)

    acker = Acker(Watching(), lambda name, n: None, delay_s=60.0)
    acker.submit(ids[:5])
    acker.start()
    assert acker.flush(10.0) is True
    assert acker.stop(5.0) is True
    assert seen == [(0, 5)]
    assert rows(ob) == 3
    ob.close()
