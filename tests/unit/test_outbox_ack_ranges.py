"""``Outbox.ack`` deletes by runs of consecutive ids (gateway/outbox_forwarding.py ``id_ranges``):
the runs select exactly the ids given, and an ack of scattered ids (some not in flight, some
already deleted) deletes exactly the rows asked for, with their history copies and counters, on
a real SQLite file. Also: the writer connection's ``secure_delete = FAST`` and checkpoint
every 4096 WAL pages, with ``synchronous = FULL`` kept."""

from hypothesis import given
from hypothesis import strategies as st

from gateway.outbox import Outbox, OutboxRecord
from gateway.outbox_forwarding import id_ranges
from simulators.clock import VirtualClock


def test_id_ranges_vectors():
    assert id_ranges([]) == []
    assert id_ranges([5]) == [(5, 5)]
    assert id_ranges([1, 2, 3]) == [(1, 3)]
    assert id_ranges([1, 2, 4, 5, 9]) == [(1, 2), (4, 5), (9, 9)]
    assert id_ranges([1, 3, 5]) == [(1, 1), (3, 3), (5, 5)]


@given(st.sets(st.integers(min_value=1, max_value=300), max_size=120))
def test_id_ranges_select_exactly_the_ids(ids):
    ranges = id_ranges(sorted(ids))
    covered = [i for lo, hi in ranges for i in range(lo, hi + 1)]
    assert covered == sorted(ids)
    assert all(lo <= hi for lo, hi in ranges)
    assert all(b[0] > a[1] + 1 for a, b in zip(ranges, ranges[1:]))  # runs are maximal


def open_outbox(tmp_path):
    return Outbox(str(tmp_path / "outbox.db"), 1 << 20, 7 * 86400, VirtualClock())


def rec(seq):
    return OutboxRecord("room-1", 1, seq, {"seq": seq, "t": 1767225600 + seq,
                                           "values": [["co2_ppm", 400 + seq, "ok"]]})


def test_ack_of_scattered_ids_deletes_exactly_those(tmp_path):
    with open_outbox(tmp_path) as outbox:
        scattered_ack(outbox)


def scattered_ack(outbox):
    outbox.put_many([rec(s) for s in range(20)])
    rows = outbox.take(20)
    ids = [r.row_id for r in rows]
    chosen = ids[0:3] + ids[5:6] + ids[9:14] + ids[19:20]  # four runs
    assert outbox.ack(chosen + chosen[:2]) == len(chosen)  # repeats count once
    assert outbox.ack(chosen) == 0  # already deleted: nothing
    left = {i for (i,) in outbox._db.execute("SELECT id FROM rows")}
    assert left == set(ids) - set(chosen)
    hist = [r[0] for r in outbox._db.execute("SELECT seq FROM history ORDER BY id")]
    assert hist == [r.seq for r in rows if r.row_id in set(chosen)]  # copied once, in order
    t = [r[0] for r in outbox._db.execute("SELECT t FROM history ORDER BY id")]
    assert t == [1767225600 + s for s in hist]
    st_ = outbox.stats()
    assert st_.rows["routine"] == 20 - len(chosen)
    assert outbox.history_stats().rows == len(chosen)
    outbox.release_all()
    assert sorted(r.row_id for r in outbox.take(20)) == sorted(left)


def test_writer_uses_secure_delete_fast_and_larger_checkpoints(tmp_path):
    with open_outbox(tmp_path) as outbox:
        assert outbox._db.execute("PRAGMA secure_delete").fetchone()[0] == 2  # FAST
        assert outbox._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 4096
        assert outbox._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL, as ever
