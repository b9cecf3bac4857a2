"""The SQLite outbox (gateway/outbox.py) on a temporary file and a virtual clock: idempotent
batched puts, lanes, take/ack/release, the size and age bounds with their exact gap markers and
counts, alarms kept while routine rows go, SQLITE_FULL from a capped file, reopening after an
unclean close, and refusing a damaged file."""

import sqlite3

import pytest

from gateway import outbox_policy as policy
from gateway.outbox import Outbox, OutboxCorrupt, OutboxError, OutboxFull, OutboxRecord
from gateway.outbox_policy import ALARM, ROUTINE, GapMarker
from simulators.clock import VirtualClock

DAY_S = 86400


def rec(seq, device="room-1", epoch=1, lane=ROUTINE, pad=0):
    return OutboxRecord(device, epoch, seq,
                        {"seq": seq, "t": None, "values": [["co2_ppm", 400 + seq, "ok"]],
                         "pad": "x" * pad}, lane)


def nbytes(r):
    """Tracked bytes of record ``r`` as the policy defines them."""
    return policy.prepare([r])[1]


def keys(rows):
    return [(r.device_id, r.boot_epoch, r.seq) for r in rows]


def stored_keys(path):
    with sqlite3.connect(path) as db:
        return set(db.execute("SELECT device_id, boot_epoch, seq FROM rows"))


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "outbox.db")


def open_outbox(path, clock, max_bytes=1 << 20, max_age_s=7 * DAY_S):
    return Outbox(path, max_bytes, max_age_s, clock)


# -- opening ------------------------------------------------------------------------------------
def test_opens_in_wal_with_synchronous_full(path, clock):
    ob = open_outbox(path, clock)
    assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    ob.close()


# -- putting ------------------------------------------------------------------------------------
def test_put_is_idempotent_and_counts_duplicates(path, clock):
    ob = open_outbox(path, clock)
    first = ob.put_many([rec(0), rec(1), rec(2)])
    assert first.new == [("room-1", 1, 0), ("room-1", 1, 1), ("room-1", 1, 2)]
    assert first.duplicates == [] and first.dropped == 0
    again = ob.put_many([rec(1), rec(3), rec(3), rec(0)])  # resent frame + a repeat in-batch
    assert again.new == [("room-1", 1, 3)]
    assert again.duplicates == [("room-1", 1, 1), ("room-1", 1, 3), ("room-1", 1, 0)]
    st = ob.stats()
    assert st.duplicates == 3
    assert st.rows == {ALARM: 0, ROUTINE: 4}
    assert stored_keys(path) == {("room-1", 1, s) for s in range(4)}


def test_duplicate_keeps_the_first_lane_and_payload(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(0, lane=ALARM)])
    assert ob.put_many([rec(0, lane=ROUTINE, pad=5)]).duplicates == [("room-1", 1, 0)]
    (row,) = ob.take(10)
    assert row.lane == ALARM and "pad" in row.record and row.record["pad"] == ""


def test_put_rejects_a_bad_record_and_stores_nothing(path, clock):
    ob = open_outbox(path, clock)
    with pytest.raises(ValueError, match=r"records\[1\]: lane 'urgent'"):
        ob.put_many([rec(0), rec(1, lane="urgent")])
    assert ob.stats().rows == {ALARM: 0, ROUTINE: 0}
    assert stored_keys(path) == set()


def test_tracked_bytes_match_a_recount_of_the_rows(path, clock):
    ob = open_outbox(path, clock)
    batch = [rec(i, device="d%d" % (i % 3), pad=i, lane=ALARM if i % 4 == 0 else ROUTINE)
             for i in range(40)]
    ob.put_many(batch)
    ob.ack([r.row_id for r in ob.take(7)])
    st = ob.stats()
    with sqlite3.connect(path) as db:
        recount = dict(db.execute(
            "SELECT lane, sum(length(payload) + 2 * length(device_id) + ?) FROM rows GROUP BY lane",
            (policy.ROW_OVERHEAD_BYTES,)))
    assert st.bytes == recount
    assert st.total_bytes == sum(nbytes(r) for r in batch) - sum(
        nbytes(r) for r in sorted(batch, key=lambda r: (r.lane != ALARM, r.seq))[:7])


# -- taking, acking, releasing ------------------------------------------------------------------
def test_take_hands_out_alarms_first_then_routine_oldest_first(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(0), rec(1, lane=ALARM), rec(2), rec(3, lane=ALARM), rec(4)])
    assert [r.seq for r in ob.take(3)] == [1, 3, 0]
    assert [r.seq for r in ob.take(10)] == [2, 4]
    assert ob.take(10) == []
    assert ob.stats().in_flight == 5


def test_take_follows_lane_order(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(0), rec(1, lane=ALARM), rec(2)])
    assert [r.seq for r in ob.take(10, lane_order=(ROUTINE,))] == [0, 2]
    assert [r.seq for r in ob.take(10, lane_order=(ROUTINE, ALARM))] == [1]
    with pytest.raises(ValueError, match="lane_order"):
        ob.take(1, lane_order=("bulk",))
    with pytest.raises(ValueError, match="limit"):
        ob.take(-1)


def test_rows_come_back_as_stored(path, clock):
    ob = open_outbox(path, clock)
    clock.advance_s(2.5)
    ob.put_many([rec(7, device="bin-9", epoch=4, lane=ALARM)])
    (row,) = ob.take(1)
    assert (row.device_id, row.boot_epoch, row.seq, row.lane) == ("bin-9", 4, 7, ALARM)
    assert row.record == rec(7).record
    assert row.rx_ms == 2500
    assert row.rx_wall_s == pytest.approx(clock.wall_s())


def test_wall_time_is_not_stored_while_untrusted(path):
    clock = VirtualClock(wall_trusted=False)
    ob = open_outbox(path, clock)
    ob.put_many([rec(0)])
    assert ob.take(1)[0].rx_wall_s is None


def test_ack_deletes_and_release_hands_rows_out_again_first(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(i) for i in range(6)])
    a = ob.take(2)
    b = ob.take(2)
    assert ob.ack([r.row_id for r in a]) == 2
    assert ob.release([r.row_id for r in b]) == 2
    assert ob.release([r.row_id for r in b]) == 0  # no longer in flight
    assert [r.seq for r in ob.take(3)] == [2, 3, 4]  # released first, then never-sent
    assert stored_keys(path) == {("room-1", 1, s) for s in range(2, 6)}
    assert ob.ack([r.row_id for r in a]) == 0  # a repeated PUBACK deletes nothing more
    assert ob.stats().rows[ROUTINE] == 4


def test_release_all_after_a_lost_connection(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(i) for i in range(3)])
    ob.take(3)
    assert ob.release_all() == 3
    assert [r.seq for r in ob.take(5)] == [0, 1, 2]


def test_take_continues_where_it_left_off(path, clock):
    ob = open_outbox(path, clock)
    for start in range(0, 2000, 500):
        ob.put_many([rec(i) for i in range(start, start + 500)])
    assert [r.seq for r in ob.take(3)] == [0, 1, 2]
    assert [r.seq for r in ob.take(2)] == [3, 4]
    assert ob.stats().in_flight == 5


# -- the size bound -----------------------------------------------------------------------------
def test_size_bound_drops_oldest_routine_with_an_exact_marker(path, clock):
    batch = [rec(i) for i in range(10)]
    one = nbytes(batch[0])
    ob = open_outbox(path, clock, max_bytes=one * 6)
    result = ob.put_many(batch)
    assert len(result.new) == 10 and result.dropped == 4
    assert stored_keys(path) == {("room-1", 1, s) for s in range(4, 10)}
    assert ob.gaps() == [GapMarker(1, "room-1", 1, 0, 1, 3, 4, 0)]
    st = ob.stats()
    assert st.dropped == {ALARM: 0, ROUTINE: 4}
    assert st.dropped_by_reason == {"size": 4, "age": 0, "full": 0}
    assert st.total_bytes == 6 * one <= st.max_bytes


def test_later_drops_widen_the_open_marker(path, clock):
    one = nbytes(rec(0))
    ob = open_outbox(path, clock, max_bytes=one * 3)
    ob.put_many([rec(i) for i in range(5)])       # drops 0, 1
    ob.put_many([rec(i) for i in range(5, 7)])    # drops 2, 3
    ob.put_many([rec(0, epoch=2)])                # a new boot: drops 4
    assert ob.gaps() == [GapMarker(1, "room-1", 1, 0, 1, 4, 5, 0)]
    ob.put_many([rec(1, epoch=2), rec(2, epoch=2)])  # drops 5, 6
    assert ob.gaps() == [GapMarker(1, "room-1", 1, 0, 1, 6, 7, 0)]
    ob.put_many([rec(3, epoch=2)])                   # drops (2, 0): the range spans two boots
    assert ob.gaps() == [GapMarker(1, "room-1", 1, 0, 2, 0, 8, 0)]


def test_alarms_survive_routine_drops_and_go_last(path, clock):
    one = nbytes(rec(0))
    ob = open_outbox(path, clock, max_bytes=one * 4)
    ob.put_many([rec(0, lane=ALARM), rec(1), rec(2, lane=ALARM), rec(3), rec(4), rec(5)])
    assert stored_keys(path) == {("room-1", 1, s) for s in (0, 2, 4, 5)}
    assert ob.gaps() == [GapMarker(1, "room-1", 1, 1, 1, 3, 2, 0)]  # 2 kept inside the range
    ob.put_many([rec(6, lane=ALARM), rec(7, lane=ALARM), rec(8, lane=ALARM)])
    # routine 4, 5 go first, then the oldest alarm 0
    assert stored_keys(path) == {("room-1", 1, s) for s in (2, 6, 7, 8)}
    st = ob.stats()
    assert st.dropped == {ALARM: 1, ROUTINE: 4}
    assert ob.gaps() == [GapMarker(1, "room-1", 1, 0, 1, 5, 5, 1)]


def test_markers_are_per_device(path, clock):
    one = nbytes(rec(0, device="aa"))
    ob = open_outbox(path, clock, max_bytes=one * 2)
    ob.put_many([rec(5, device="aa"), rec(9, device="bb", epoch=3), rec(6, device="aa"),
                 rec(7, device="aa")])
    assert ob.gaps() == [GapMarker(1, "aa", 1, 5, 1, 5, 1, 0),
                         GapMarker(2, "bb", 3, 9, 3, 9, 1, 0)]


def test_rows_in_flight_are_never_dropped(path, clock):
    one = nbytes(rec(0))
    ob = open_outbox(path, clock, max_bytes=one * 3)
    ob.put_many([rec(0), rec(1), rec(2)])
    held = ob.take(2)
    ob.put_many([rec(3), rec(4)])
    assert stored_keys(path) == {("room-1", 1, s) for s in (0, 1, 4)}  # 2, 3 went instead
    assert ob.ack([r.row_id for r in held]) == 2
    assert ob.gaps() == [GapMarker(1, "room-1", 1, 2, 1, 3, 2, 0)]


def test_a_new_marker_opens_while_the_old_one_is_in_flight(path, clock):
    one = nbytes(rec(0))
    ob = open_outbox(path, clock, max_bytes=one * 2)
    ob.put_many([rec(i) for i in range(3)])                # drops 0
    (sent,) = ob.take_gaps()
    assert sent == GapMarker(1, "room-1", 1, 0, 1, 0, 1, 0)
    assert ob.take_gaps() == []                            # in flight
    ob.put_many([rec(3)])                                  # drops 1: a new marker
    assert ob.gaps()[1] == GapMarker(2, "room-1", 1, 1, 1, 1, 1, 0)
    assert ob.ack_gaps([sent.gap_id]) == 1
    ob.release_gaps([])
    assert ob.take_gaps() == [GapMarker(2, "room-1", 1, 1, 1, 1, 1, 0)]
    ob.release_gaps([2])
    ob.put_many([rec(4)])                                  # drops 2: widens the open one again
    assert ob.gaps() == [GapMarker(2, "room-1", 1, 1, 1, 2, 2, 0)]
    assert ob.stats().dropped[ROUTINE] == 3                # counters outlive markers


def test_a_record_larger_than_the_bound_is_dropped_and_counted(path, clock):
    ob = open_outbox(path, clock, max_bytes=100)
    result = ob.put_many([rec(0, pad=500)])
    assert result.new == [("room-1", 1, 0)] and result.dropped == 1
    assert stored_keys(path) == set()
    assert ob.gaps() == [GapMarker(1, "room-1", 1, 0, 1, 0, 1, 0)]


# -- the age bound ------------------------------------------------------------------------------
def test_age_bound_drops_rows_of_both_lanes_on_running_time(path, clock):
    ob = open_outbox(path, clock, max_age_s=3600)
    ob.put_many([rec(0, lane=ALARM), rec(1)])
    clock.advance_s(1800)
    ob.put_many([rec(2), rec(3, lane=ALARM)])
    clock.advance_s(1800)
    assert ob.enforce() == 0                                # exactly 3600 s: still inside
    clock.advance_s(1)
    assert ob.enforce() == 2
    assert stored_keys(path) == {("room-1", 1, 2), ("room-1", 1, 3)}
    assert ob.gaps() == [GapMarker(1, "room-1", 1, 0, 1, 1, 2, 1)]
    st = ob.stats()
    assert st.dropped_by_reason == {"size": 0, "age": 2, "full": 0}
    assert st.dropped == {ALARM: 1, ROUTINE: 1}
    assert st.oldest_age_s == pytest.approx(1801)


def test_a_wall_clock_jump_expires_nothing(path, clock):
    ob = open_outbox(path, clock, max_age_s=3600)
    ob.put_many([rec(0)])
    clock.jump_wall(DAY_S)
    assert ob.enforce() == 0 and ob.put_many([rec(1)]).dropped == 0
    assert ob.stats().oldest_age_s == 0


def test_put_applies_the_age_bound_too(path, clock):
    ob = open_outbox(path, clock, max_age_s=60)
    ob.put_many([rec(0), rec(1)])
    clock.advance_s(61)
    assert ob.put_many([rec(2)]).dropped == 2
    assert stored_keys(path) == {("room-1", 1, 2)}


def test_the_age_bound_reads_no_row_while_none_can_be_past_it(path, clock):
    ob = open_outbox(path, clock, max_age_s=60)
    ob.put_many([rec(0)])                                   # the first look: lanes read
    read = []
    ob._db.set_trace_callback(read.append)
    clock.advance_s(30)
    ob.put_many([rec(1, lane=ALARM)])                       # the alarm lane was empty then
    assert ob.enforce() == 0
    assert not [q for q in read if q.startswith("SELECT") and "FROM rows" in q]
    clock.advance_s(31)                                     # row 0 is past the bound
    assert ob.enforce() == 1
    clock.advance_s(30)                                     # and row 1, stored after the look
    assert ob.enforce() == 1
    assert stored_keys(path) == set()


def test_a_rolled_back_age_drop_is_made_again(path, clock, monkeypatch):
    ob = open_outbox(path, clock, max_age_s=60)
    ob.put_many([rec(0)])
    clock.advance_s(61)

    def fail():
        raise sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(ob, "_commit", fail)                # after the put's drop of row 0
    with pytest.raises(OutboxError):
        ob.put_many([rec(1)])
    monkeypatch.undo()
    assert stored_keys(path) == {("room-1", 1, 0)}          # rolled back: row 0 is back
    assert ob.enforce() == 1 and stored_keys(path) == set()


# -- reopening ----------------------------------------------------------------------------------
def test_reopen_after_an_unclean_close_finds_every_committed_row(path, clock):
    ob = open_outbox(path, clock, max_bytes=nbytes(rec(0)) * 5)
    ob.put_many([rec(i) for i in range(7)])                 # 0, 1 dropped
    held = ob.take(2)                                       # in flight at the "crash"
    ob.put_many([rec(7, lane=ALARM)])                       # drops 4 (2, 3 in flight)
    clock.advance_s(100)
    ob.put_many([rec(8)])                                   # drops 5
    before = ob.stats()
    # a crash: the process dies without close(); the connection is abandoned as it is
    ob2 = open_outbox(path, clock, max_bytes=nbytes(rec(0)) * 5)
    assert stored_keys(path) == {("room-1", 1, s) for s in (2, 3, 6, 7, 8)}
    after = ob2.stats()
    assert after.in_flight == 0
    for field in ("rows", "bytes", "dropped", "dropped_by_reason", "duplicates", "gap_markers"):
        assert getattr(after, field) == getattr(before, field)
    assert ob2.gaps() == [GapMarker(1, "room-1", 1, 0, 1, 5, 4, 0)]
    # what was in flight is unsent again, alarms first
    assert [r.seq for r in ob2.take(10)] == [7, 2, 3, 6, 8]
    assert keys(held) == [("room-1", 1, 2), ("room-1", 1, 3)]
    ob.close()
    ob2.close()


def test_running_time_continues_across_a_reopen(path, clock):
    ob = open_outbox(path, clock, max_age_s=100)
    ob.put_many([rec(0)])
    clock.advance_s(60)
    ob.put_many([rec(1)])
    ob.close()
    clock.advance_s(10_000)                                 # powered off: does not count
    ob = open_outbox(path, VirtualClock(ticks_start_ms=123_456), max_age_s=100)
    assert ob.stats().oldest_age_s == 60
    ob.close()


def test_a_lowered_bound_applies_at_open(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(i, lane=ALARM if i == 0 else ROUTINE) for i in range(10)])
    ob.close()
    ob = open_outbox(path, clock, max_bytes=nbytes(rec(0)) * 3)
    assert stored_keys(path) == {("room-1", 1, s) for s in (0, 8, 9)}
    assert ob.gaps() == [GapMarker(1, "room-1", 1, 1, 1, 7, 7, 0)]
    ob.close()


def test_ids_keep_growing_after_the_newest_row_is_acked(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(0), rec(1)])
    ob.ack([r.row_id for r in ob.take(2)])
    ob.put_many([rec(2)])                                   # SQLite alone would reuse id 1
    assert [r.seq for r in ob.take(5)] == [2]


# -- disk full ----------------------------------------------------------------------------------
def test_sqlite_full_drops_oldest_routine_then_stores_the_batch(path, clock):
    ob = open_outbox(path, clock)
    for start in range(0, 600, 100):
        ob.put_many([rec(i, lane=ALARM if i % 50 == 0 else ROUTINE, pad=200)
                     for i in range(start, start + 100)])
    cap = ob.cap_file_bytes(0)                              # the disk is full now
    assert cap == ob.stats().file_bytes
    result = ob.put_many([rec(i, pad=200) for i in range(600, 700)])
    assert len(result.new) == 100
    st = ob.stats()
    assert st.disk_full_events >= 1                         # counted only on SQLITE_FULL
    assert st.file_bytes <= cap
    assert st.dropped_by_reason["full"] == st.dropped[ROUTINE] > 0
    assert st.dropped[ALARM] == 0                           # alarms kept
    stored = stored_keys(path)
    assert {("room-1", 1, s) for s in range(600, 700)} <= stored
    assert {("room-1", 1, s) for s in range(0, 600, 50)} <= stored
    dropped = {("room-1", 1, s) for s in range(600)} - stored
    assert len(dropped) == st.dropped[ROUTINE]
    assert max(s for _, _, s in dropped) < min(s for _, _, s in stored - {
        ("room-1", 1, s) for s in range(0, 600, 50)})      # the oldest routine rows went
    (marker,) = ob.gaps()
    assert marker.dropped == len(dropped) and (marker.first_seq, marker.alarms) == (1, 0)


def test_sqlite_full_with_nothing_droppable_raises_outbox_full(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(i, pad=300) for i in range(100)])
    held = ob.take(100)
    ob.cap_file_bytes(0)
    with pytest.raises(OutboxFull, match="do not ack"):
        ob.put_many([rec(i, pad=3000) for i in range(100, 200)])
    assert len(stored_keys(path)) == 100                    # nothing in flight was touched
    assert ob.ack([r.row_id for r in held]) == 100          # and forwarding goes on
    assert len(ob.put_many([rec(200)]).new) == 1            # room again


# -- damaged files ------------------------------------------------------------------------------
def test_a_file_that_is_not_a_database_is_refused(path, clock):
    with open(path, "wb") as f:
        f.write(b"this is not an SQLite database" * 200)
    with pytest.raises(OutboxCorrupt, match="move the file aside"):
        open_outbox(path, clock)


def test_a_damaged_page_fails_the_integrity_check(path, clock):
    ob = open_outbox(path, clock)
    ob.put_many([rec(i, pad=100) for i in range(300)])
    ob.close()
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = "
                          "'sqlite_autoindex_rows_1'").fetchone()[0]
    with open(path, "r+b") as f:                            # garble the key index's root page
        f.seek((root - 1) * page_size + 8)
        f.write(b"\xff" * 64)
    with pytest.raises(OutboxCorrupt, match="integrity_check|cannot be opened"):
        open_outbox(path, clock)


def test_bad_arguments_are_named(path, clock):
    with pytest.raises(ValueError, match="max_bytes"):
        Outbox(path, 0, 60, clock)
    with pytest.raises(ValueError, match="max_age_s"):
        Outbox(path, 100, -1, clock)
