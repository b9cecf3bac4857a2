"""The outbox's pure overflow policy (gateway/outbox_policy.py): which rows a size or age bound
drops (oldest routine first, alarms last, never in flight), exact gap markers and counts, the
SQLITE_FULL target, and record preparation (validation naming the field, compact JSON)."""

import json

import pytest

from gateway import outbox_policy as p
from gateway.outbox_policy import ALARM, ROUTINE, GapMarker, OutboxRecord, RowSummary


def row(row_id, lane=ROUTINE, device="a", epoch=1, seq=None, nbytes=100, rx_ms=0):
    return RowSummary(row_id, device, epoch, row_id if seq is None else seq, lane, nbytes, rx_ms)


def streams(rows):
    """A ``stream(lane)`` over ``rows`` (oldest first per lane) that records what was read."""
    read = []

    def stream(lane):
        for r in rows:
            if r.lane == lane:
                read.append(r.row_id)
                yield r
    return stream, read


# -- size ---------------------------------------------------------------------------------------
def test_size_drops_oldest_routine_first_and_exactly_enough():
    rows = [row(1, ALARM), row(2), row(3), row(4, ALARM), row(5)]
    stream, read = streams(rows)
    got, freed = p.plan_size_drops(150, stream)
    assert [r.row_id for r in got] == [2, 3]
    assert freed == 200
    assert read == [2, 3]  # lazily: nothing read past what was needed


def test_size_drops_alarms_only_after_every_routine_row():
    rows = [row(1, ALARM), row(2), row(3, ALARM), row(4)]
    got, freed = p.plan_size_drops(350, streams(rows)[0])
    assert [(r.row_id, r.lane) for r in got] == [(2, ROUTINE), (4, ROUTINE), (1, ALARM),
                                                  (3, ALARM)]
    assert freed == 400


def test_size_drops_skip_rows_in_flight():
    rows = [row(1), row(2), row(3, ALARM)]
    got, _ = p.plan_size_drops(150, streams(rows)[0], in_flight={1})
    assert [r.row_id for r in got] == [2, 3]


def test_size_drops_nothing_when_within_bound_or_nothing_droppable():
    rows = [row(1), row(2)]
    assert p.plan_size_drops(0, streams(rows)[0]) == ([], 0)
    assert p.plan_size_drops(50, streams(rows)[0], in_flight={1, 2}) == ([], 0)


def test_size_drops_stop_at_max_rows():
    rows = [row(i, nbytes=10) for i in range(1, 11)]
    got, freed = p.plan_size_drops(1000, streams(rows)[0], max_rows=4)
    assert [r.row_id for r in got] == [1, 2, 3, 4] and freed == 40


def test_excess_bytes():
    assert p.excess_bytes(1000, 1000) == 0
    assert p.excess_bytes(1001, 1000) == 1
    assert p.excess_bytes(10, 1000) == 0


# -- age ----------------------------------------------------------------------------------------
def test_age_drops_expired_rows_of_both_lanes_routine_first():
    rows = [row(1, ALARM, rx_ms=0), row(2, rx_ms=500), row(3, rx_ms=999), row(4, ALARM, rx_ms=1000),
            row(5, rx_ms=1000), row(6, rx_ms=2000)]
    stream, read = streams(rows)
    got = p.plan_age_drops(1000, stream)
    assert [r.row_id for r in got] == [2, 3, 1]
    # each lane is read only up to its first row inside the bound
    assert read == [2, 3, 5, 1, 4]


def test_age_drops_skip_in_flight_and_stop_at_max_rows():
    rows = [row(i, rx_ms=i) for i in range(1, 8)]
    assert [r.row_id for r in p.plan_age_drops(100, streams(rows)[0], in_flight={2, 3},
                                                  max_rows=3)] == [1, 4, 5]


def test_age_cutoff_is_running_time_minus_the_bound():
    assert p.age_cutoff_ms(10_000, 3) == 7_000
    assert p.age_cutoff_ms(10_000, 2.5) == 7_500


# -- disk full ----------------------------------------------------------------------------------
def test_full_targets_cover_the_batch_and_double_until_everything_is_covered():
    assert list(p.full_targets(1000, 4096, 30_000)) == [8192, 16384, 32768]  # two pages first
    assert list(p.full_targets(100_000, 4096, 1_000_000)) == [200_000, 400_000, 800_000,
                                                              1_600_000]
    assert list(p.full_targets(100_000, 4096, 0)) == [200_000]     # nothing stored: one try


def test_full_split_takes_history_first_and_drops_only_the_rest():
    assert p.full_split(8192, 0) == (p.FULL_HISTORY_MIN_BYTES, 8192)  # history trimmed generously
    assert p.full_split(8192, 26_000) == (p.FULL_HISTORY_MIN_BYTES, 0)  # history covered it
    assert p.full_split(200_000, 150_000) == (200_000, 50_000)      # unsent rows: the rest only


# -- accounting ---------------------------------------------------------------------------------
def test_counts_and_bytes_by_lane_name_every_lane():
    rows = [row(1, nbytes=10), row(2, ALARM, nbytes=7), row(3, nbytes=5)]
    assert p.count_by_lane(rows) == {ALARM: 1, ROUTINE: 2}
    assert p.bytes_by_lane(rows) == {ALARM: 7, ROUTINE: 15}
    assert p.count_by_lane([]) == {ALARM: 0, ROUTINE: 0}


def test_summarize_drops_gives_key_range_count_and_alarms_per_device():
    rows = [row(1, device="b", epoch=2, seq=7), row(2, device="a", epoch=1, seq=900),
            row(3, ALARM, device="a", epoch=2, seq=3), row(4, device="a", epoch=1, seq=901)]
    assert p.summarize_drops(rows) == {"a": ((1, 900), (2, 3), 3, 1), "b": ((2, 7), (2, 7), 1, 0)}


def test_mark_drops_opens_a_marker_per_device():
    rows = [row(1, device="a", seq=5), row(2, device="a", seq=6), row(3, ALARM, device="b", seq=1)]
    assert p.mark_drops({}, p.summarize_drops(rows)) == [
        GapMarker(None, "a", 1, 5, 1, 6, 2, 0), GapMarker(None, "b", 1, 1, 1, 1, 1, 1)]


def test_mark_drops_widens_the_open_marker_across_epochs():
    open_a = GapMarker(4, "a", 1, 5, 1, 6, 2, 0)
    rows = [row(9, device="a", epoch=2, seq=0), row(10, ALARM, device="a", epoch=1, seq=8)]
    assert p.mark_drops({"a": open_a}, p.summarize_drops(rows)) == [
        GapMarker(4, "a", 1, 5, 2, 0, 4, 1)]


def test_summarize_ranges_folds_ranges_per_device_as_summarize_drops_folds_rows():
    rows = [row(1, device="b", epoch=2, seq=7), row(2, device="a", epoch=1, seq=900),
            row(3, ALARM, device="a", epoch=2, seq=3), row(4, device="a", epoch=1, seq=901)]
    ranges = [GapMarker(None, r.device_id, r.boot_epoch, r.seq, r.boot_epoch, r.seq, 1,
                        int(r.lane == ALARM)) for r in rows]
    assert p.summarize_ranges(ranges) == p.summarize_drops(rows)
    assert p.summarize_ranges([GapMarker(None, "a", 1, 5, 1, 9, 3, 1),
                               GapMarker(None, "a", 1, 2, 1, 4, 2, 0)]) == {
        "a": ((1, 2), (1, 9), 5, 1)}


def test_widen_keeps_the_earliest_first_key():
    m = GapMarker(1, "a", 3, 10, 3, 20, 5, 0)
    assert p.widen(m, (2, 99), (3, 15), 1, 0) == GapMarker(1, "a", 2, 99, 3, 20, 6, 0)


# -- preparing records --------------------------------------------------------------------------
def test_prepare_encodes_compact_ascii_json_and_tracks_bytes():
    rec = {"seq": 3, "t": None, "values": [["co2_ppm", 612, "ok"], ["label", "Café", "ok"]]}
    prepared, total = p.prepare([OutboxRecord("room-1", 7, 3, rec, ALARM), ("room-2", 1, 4, rec)])
    (d, e, s, lane, payload, nbytes), second = prepared
    assert (d, e, s, lane) == ("room-1", 7, 3, ALARM)
    assert second[3] == ROUTINE  # the default lane
    assert payload == ('{"seq":3,"t":null,"values":[["co2_ppm",612,"ok"],'
                       '["label","Caf\\u00e9","ok"]]}')
    assert json.loads(payload) == rec
    assert nbytes == len(payload) + 2 * len("room-1") + p.ROW_OVERHEAD_BYTES
    assert total == nbytes + second[5]


@pytest.mark.parametrize("rec, words", [
    (("", 1, 1, {}), "records[0]: device_id ''"),
    ((5, 1, 1, {}), "records[0]: device_id 5"),
    (("a", -1, 1, {}), "records[0]: boot_epoch -1"),
    (("a", 1, 1 << 32, {}), "records[0]: seq 4294967296"),
    (("a", True, 1, {}), "records[0]: boot_epoch True"),
    (("a", 1, 1.0, {}), "records[0]: seq 1.0"),
    (("a", 1, 1, {}, "urgent"), "records[0]: lane 'urgent' must be one of alarm, routine"),
    (("a", 1, 1, {"v": float("nan")}), "records[0]: record is not JSON-able"),
    (("a", 1, 1, {"v": b"raw"}), "records[0]: record is not JSON-able"),
    (("a", 1), "records[0] must be (device_id, boot_epoch, seq, record[, lane])"),
    ({"device_id": "a", "boot_epoch": 1, "seq": 1, "record": {}, "lane": ROUTINE},
     "records[0] must be (device_id, boot_epoch, seq, record[, lane])"),
])
def test_prepare_names_the_bad_field(rec, words):
    with pytest.raises(ValueError) as e:
        p.prepare([rec])
    assert words in str(e.value)


def test_prepare_reports_the_index_of_the_bad_record():
    with pytest.raises(ValueError, match=r"records\[1\]: seq"):
        p.prepare([("a", 1, 1, {}), ("a", 1, -5, {})])
