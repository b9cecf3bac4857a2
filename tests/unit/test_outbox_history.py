"""The outbox's history of delivered rows (gateway/outbox_history.py) on a temporary file and a
virtual clock: acked rows are copied before their delete, bounded by size and age of running
time, trimmed without counting a drop, off at 0, kept out of the way of a full disk; and read
back in time order, merged with unsent rows, for the export."""

import json
import sqlite3

import pytest

from gateway import outbox_history as hist
from gateway.outbox import Outbox, OutboxError, OutboxRecord
from gateway.outbox_policy import ALARM, ROUTINE
from simulators.clock import VirtualClock

DAY_S = 86400
T0 = 1767571200  # the virtual clock's wall start


def rec(seq, device="room-1", epoch=1, t=T0, lane=ROUTINE, pad=0):
    r = {"seq": seq, "t": t, "values": [["co2_ppm", 400 + seq, "ok"]]}
    if pad:
        r["pad"] = "x" * pad
    return OutboxRecord(device, epoch, seq, r, lane)


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "outbox.db")


def open_outbox(path, clock, **kw):
    kw.setdefault("max_bytes", 1 << 24)
    kw.setdefault("max_age_s", 30 * DAY_S)
    return Outbox(path, kw.pop("max_bytes"), kw.pop("max_age_s"), clock, **kw)


def deliver(ob, n=None):
    rows = ob.take(n if n is not None else 10 ** 6)
    assert ob.ack([r.row_id for r in rows]) == len(rows)
    return rows


def history_rows(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT device_id, boot_epoch, seq, lane, rx_wall_s, t, payload "
                          "FROM history ORDER BY id").fetchall()


def recount(path):
    """Rows and tracked bytes of history, recounted from the table."""
    with sqlite3.connect(path) as db:
        got = db.execute("SELECT device_id, length(payload) FROM history").fetchall()
    return len(got), sum(hist.history_nbytes(n, d) for d, n in got)


# -- copying on ack -----------------------------------------------------------------------------
def test_ack_copies_each_row_into_history_before_deleting_it(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(0, t=None), rec(1, lane=ALARM), rec(2, device="bin-1", t=T0 + 60)])
    sent = deliver(ob)
    assert ob.stats().rows == {ALARM: 0, ROUTINE: 0}
    got = history_rows(path)
    assert [(d, e, s, lane) for d, e, s, lane, *_ in got] == [
        (r.device_id, r.boot_epoch, r.seq, r.lane) for r in sorted(sent)]  # in row-id order
    by_seq = {g[2]: g for g in got}
    assert by_seq[0][4] == T0 and by_seq[0][5] is None  # untimed record: receive time kept
    assert by_seq[2][5] == T0 + 60
    assert json.loads(by_seq[1][6]) == rec(1).record
    st = ob.history_stats()
    assert (st.rows, st.bytes) == recount(path)
    assert (st.oldest_s, st.newest_s) == (T0, T0 + 60)


def test_a_repeated_ack_copies_nothing_more(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(0), rec(1)])
    sent = deliver(ob)
    assert ob.ack([r.row_id for r in sent]) == 0
    assert len(history_rows(path)) == 2 and ob.history_stats().rows == 2


def test_unacked_and_released_rows_stay_out_of_history(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(i) for i in range(4)])
    rows = ob.take(4)
    ob.ack([rows[0].row_id])
    ob.release([r.row_id for r in rows[1:]])
    assert [g[2] for g in history_rows(path)] == [0]


def test_history_counters_survive_a_reopen(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(i) for i in range(5)])
    deliver(ob)
    before = ob.history_stats()
    ob.close()
    ob = open_outbox(path, clock)
    assert ob.history_stats() == before and before.rows == 5


# -- bounds ---------------------------------------------------------------------------------------
def test_size_bound_trims_oldest_to_seven_eighths_and_is_not_a_drop(path, clock):
    one = hist.history_nbytes(len(json.dumps(rec(0, pad=500).record, separators=(",", ":"))),
                              "room-1")
    ob = open_outbox(path, clock, history_max_bytes=10 * one)
    for i in range(0, 30, 3):
        ob.put_many([rec(s, pad=500) for s in range(i, i + 3)])
        deliver(ob)
        st = ob.history_stats()
        assert st.bytes <= 10 * one and (st.rows, st.bytes) == recount(path)
    kept = [g[2] for g in history_rows(path)]
    assert kept == list(range(30 - len(kept), 30))  # the newest, contiguous
    assert st.trimmed_size == 30 - len(kept) and st.trimmed_age == 0
    out = ob.stats()
    assert out.dropped == {ALARM: 0, ROUTINE: 0} and out.gap_markers == 0  # delivered: no drop
    assert sum(out.dropped_by_reason.values()) == 0


def test_age_bound_trims_on_running_time_not_wall_time(path, clock):
    ob = open_outbox(path, clock, history_max_age_s=10 * DAY_S)
    ob.put_many([rec(0), rec(1)])
    deliver(ob)
    clock.advance_s(6 * DAY_S)
    ob.put_many([rec(2)])
    deliver(ob)
    clock.jump_wall(30 * DAY_S)  # an NTP step: must not expire anything
    ob.enforce()
    assert ob.history_stats().rows == 3
    clock.advance_s(5 * DAY_S)  # rows 0 and 1 are now 11 days past their ack, row 2 five
    ob.enforce()
    st = ob.history_stats()
    assert [g[2] for g in history_rows(path)] == [2]
    assert (st.trimmed_age, st.rows, st.bytes) == (2, 1, recount(path)[1])
    assert ob.stats().dropped_by_reason["age"] == 0


def test_age_trims_read_nothing_until_the_first_row_kept_is_due(path, clock, monkeypatch):
    ob = open_outbox(path, clock, history_max_age_s=10 * DAY_S)
    ob.put_many([rec(0)])
    deliver(ob)
    clock.advance_s(5 * DAY_S)  # steps under half the ticks' period, as the agent's calls are
    ob.put_many([rec(1)])
    deliver(ob)
    ob.enforce()                                            # the first look
    read = []
    ob._db.set_trace_callback(read.append)
    clock.advance_s(4 * DAY_S)
    ob.enforce()
    assert not [q for q in read if q.startswith("SELECT") and "FROM history" in q]
    clock.advance_s(DAY_S + 1)                              # row 0 is due, row 1 is not
    ob.enforce()
    assert [g[2] for g in history_rows(path)] == [1]

    def fail():
        raise sqlite3.OperationalError("disk I/O error")
    clock.advance_s(5 * DAY_S)                              # row 1 is due: a trim undone
    monkeypatch.setattr(ob, "_commit", fail)
    with pytest.raises(OutboxError):
        ob.enforce()
    monkeypatch.undo()
    assert [g[2] for g in history_rows(path)] == [1]
    ob.enforce()
    assert history_rows(path) == [] and ob.history_stats().trimmed_age == 2


def test_zero_turns_history_off_and_clears_what_was_kept(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(0), rec(1)])
    deliver(ob)
    ob.close()
    ob = open_outbox(path, clock, history_max_bytes=0)  # bounds apply at open
    assert history_rows(path) == [] and ob.history_stats().rows == 0
    ob.put_many([rec(2)])
    deliver(ob)
    assert history_rows(path) == [] and ob.history_stats().bytes == 0
    ob.close()
    ob = open_outbox(path, clock, history_max_age_s=0)
    ob.put_many([rec(3)])
    deliver(ob)
    assert history_rows(path) == []


def test_bad_history_bounds_are_named(path, clock):
    with pytest.raises(ValueError, match="history_max_bytes"):
        open_outbox(path, clock, history_max_bytes=-1)
    with pytest.raises(ValueError, match="history_max_age_s"):
        open_outbox(path, clock, history_max_age_s="35d")


# -- a full disk ---------------------------------------------------------------------------------
def test_a_full_disk_does_not_stop_acks_the_copy_is_skipped_and_counted(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(i, pad=2000) for i in range(40)])
    ob.cap_file_bytes(0)  # no page more: the copy cannot be written, the delete can
    assert len(deliver(ob)) == 40
    st = ob.history_stats()
    assert (st.rows, st.skipped) == (0, 40)
    assert ob.stats().rows == {ALARM: 0, ROUTINE: 0}


def test_sqlite_full_trims_history_before_dropping_unsent_rows(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(i, pad=2000) for i in range(60)])
    deliver(ob)  # 60 rows of history; their pages in ``rows`` are free again
    ob.put_many([rec(i, pad=2000) for i in range(60, 120)])  # 60 unsent reuse them
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    ob.cap_file_bytes(0)
    res = ob.put_many([rec(i, pad=2000) for i in range(120, 130)])
    assert len(res.new) == 10 and res.dropped == 0
    st, out = ob.history_stats(), ob.stats()
    assert st.trimmed_full > 0 and st.rows == 60 - st.trimmed_full and st.trimmed_size == 0
    assert out.rows[ROUTINE] == 70 and out.dropped[ROUTINE] == 0
    assert out.disk_full_events == 1


# -- reading back for the export ------------------------------------------------------------------
def test_iter_rows_merges_delivered_and_unsent_in_time_order(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(0, t=T0 + 30), rec(1, t=T0 + 90), rec(0, device="bin-1", t=T0 + 60)])
    deliver(ob)
    ob.put_many([rec(2, t=T0 + 45), rec(3, t=None), rec(1, device="bin-1", t=T0 + 200)])
    ob.close()
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, isolation_level=None)
    db.execute("BEGIN")
    got = [(r[0], r[1], r[3]) for r in hist.iter_rows(db, T0, T0 + 3600)]
    # seq 3 has no t: placed at its receive time (T0, the wall clock when it was stored)
    assert got == [(T0, "room-1", 3), (T0 + 30, "room-1", 0), (T0 + 45, "room-1", 2),
                   (T0 + 60, "bin-1", 0), (T0 + 90, "room-1", 1), (T0 + 200, "bin-1", 1)]
    assert [r[3] for r in hist.iter_rows(db, T0 + 30, T0 + 90)] == [0, 2, 0]  # [from, to)
    assert [r[3] for r in hist.iter_rows(db, T0, T0 + 3600, device="bin-1")] == [0, 1]
    db.close()


def test_iter_rows_gives_a_key_delivered_and_resent_once(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(0), rec(1)])
    deliver(ob)
    ob.put_many([rec(1)])  # resent after its delivery: stored again, unsent
    with sqlite3.connect(path) as db:
        assert [r[3] for r in hist.iter_rows(db, T0, T0 + 1)] == [0, 1]


def test_rows_without_any_time_are_counted_not_placed(path):
    clock = VirtualClock(wall_trusted=False)
    ob = open_outbox(path, clock)
    ob.put_many([rec(0, t=None), rec(1, t=None), rec(2)])
    deliver(ob, 1)
    with sqlite3.connect(path) as db:
        assert [r[3] for r in hist.iter_rows(db, 0, 1e12)] == [2]
        assert hist.untimed_count(db) == 2
        assert hist.untimed_count(db, device="other") == 0
