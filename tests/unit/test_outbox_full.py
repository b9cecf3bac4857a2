"""SQLITE_FULL frees only what the failed batch needs, and never drops without storing (issue 4).

The disk is made full by capping the file (``Outbox.cap_file_bytes``: ``PRAGMA
max_page_count``), so SQLite itself reports ``SQLITE_FULL`` exactly as on a full disk."""

import sqlite3

import pytest

from gateway.outbox import Outbox, OutboxFull, OutboxRecord
from gateway.outbox_policy import ALARM, ROUTINE
from simulators.clock import VirtualClock

T0 = 1772409600  # 2026-03-02T00:00:00Z


def reading(seq, lane=ROUTINE, pad=0):
    """A fleet-like reading of device "school-1" (about 180 tracked bytes without pad)."""
    return OutboxRecord("school-1", 1, seq, {
        "seq": seq, "t": T0 + 24 * seq, "pad": "p" * pad,
        "values": [["co2_ppm", 420 + seq % 7, "ok"], ["temperature_c", 13.6, "ok"],
                   ["rh_percent", 48.9, "ok"]]}, lane)


def file_keys(path):
    with sqlite3.connect(path) as db:
        return {s for (s,) in db.execute("SELECT seq FROM rows")}


@pytest.fixture
def ob(tmp_path):
    out = Outbox(str(tmp_path / "full.db"), 256 << 20, 30 * 86400, VirtualClock())
    yield out
    out.close()


def test_history_that_frees_enough_means_no_unsent_row_is_dropped(ob):
    # /tmp/h2/repro_full.py: 150 delivered rows (~26 KB of history), then the disk fills and
    # the upstream is down. Trimming history makes room for all 40; before the fix 28 unsent
    # rows were dropped to make up a 64 KiB minimum.
    for seq in range(150):
        ob.put_many([reading(seq)])
        ob.ack([r.row_id for r in ob.take(10)])
    assert ob.history_stats().rows == 150
    ob.cap_file_bytes(ob.stats().file_bytes)
    for seq in range(150, 190):
        assert len(ob.put_many([reading(seq)]).new) == 1
    st = ob.stats()
    assert st.disk_full_events >= 1                     # the disk did fill
    assert ob.history_stats().trimmed_full > 0           # and history paid for it
    assert st.dropped_by_reason == {"size": 0, "age": 0, "full": 0}
    assert st.rows == {ALARM: 0, ROUTINE: 40} and st.gap_markers == 0
    assert file_keys(ob.path) == set(range(150, 190))


def test_unsent_rows_dropped_only_for_what_the_batch_needs(ob):
    # No history at all: every byte freed is a drop. The first try frees about two pages
    # (twice a small batch is less), not 64 KiB: far fewer than the 300+ rows of 64 KiB.
    for start in range(0, 600, 100):
        ob.put_many([reading(s, lane=ALARM if s % 50 == 0 else ROUTINE)
                     for s in range(start, start + 100)])
    ob.cap_file_bytes(0)
    seq = 600
    while not ob.stats().disk_full_events:  # the last page's spare room fills first
        res = ob.put_many([reading(seq)])
        assert res.new == [("school-1", 1, seq)]
        seq += 1
    st = ob.stats()
    assert st.disk_full_events == 1 and seq < 700
    assert ob.disk_full_events() == 1
    assert 0 < res.dropped == st.dropped_by_reason["full"] == st.dropped[ROUTINE] <= 60
    assert st.dropped[ALARM] == 0
    gone = set(range(seq)) - file_keys(ob.path)
    assert len(gone) == res.dropped and max(gone) < min(set(range(600)) - gone - set(
        range(0, 600, 50)))                              # the oldest routine rows went
    (marker,) = ob.gaps()
    assert (marker.first_seq, marker.last_seq, marker.dropped) == (min(gone), max(gone),
                                                                   len(gone))


def test_a_batch_that_cannot_fit_drops_nothing(ob):
    # Before the fix every routine and alarm row went, and the batch was refused anyway.
    ob.put_many([reading(s, lane=ALARM if s % 4 == 0 else ROUTINE, pad=100)
                 for s in range(40)])
    cap = ob.cap_file_bytes(0)
    huge = [reading(s, pad=3000) for s in range(100, 100 + cap // 3000 + 40)]
    with pytest.raises(OutboxFull, match="nothing was dropped"):
        ob.put_many(huge)
    st = ob.stats()
    assert file_keys(ob.path) == set(range(40))          # every row kept, alarms included
    assert st.dropped_by_reason == {"size": 0, "age": 0, "full": 0} and st.gap_markers == 0
    assert st.rows == {ALARM: 10, ROUTINE: 30} and st.disk_full_events == 1
    assert ob.disk_full_events() == 1  # the agent's cheap look at the same counter
    assert len(ob.put_many([reading(40, pad=100)]).new) == 1  # a batch that fits still stores
    assert 40 in file_keys(ob.path)
