"""The flash log's RAM tail (firmware/app/store.py): ``pending`` and ``ack_through`` read the
last write's entries from RAM instead of opening segments. It is an optimisation only, so
every answer must equal what a log freshly opened on the same files (no tail: it scans the
segments, as at boot) gives, and what is on flash must never depend on it."""

import io
import os
import random

from firmware.app.segment import pack_entry, scan_bytes, scan_stream
from firmware.app.state import NodeState
from firmware.app.store import _TAIL_MAX, RecordLog


def reading(i, pad=0):
    return {"t": None, "values": [["co2_ppm", 400 + i, "ok"]], "note": "x" * pad}


def fresh(root):
    """A second view of the same files: no RAM tail, no state (read and ack only)."""
    return RecordLog(str(root), 8192, segment_bytes=1024)


def everything(log, after=None):
    return log.pending(100000, after=after, mark_sent=False)


def keys(pairs):
    return [(e, r["seq"]) for e, r in pairs]


def test_scan_stream_reads_entries_from_bytes_as_scan_does_from_a_file(tmp_path):
    blob = pack_entry(0, 3, 7, b'{"a":1}') + pack_entry(1, 3, 8, b'{"b":2}')
    got = []
    torn = scan_stream(io.BytesIO(blob), lambda c, e, s, p: got.append((c, e, s, p)) and False)
    assert not torn and got == [(0, 3, 7, b'{"a":1}'), (1, 3, 8, b'{"b":2}')]
    got = []
    assert scan_stream(io.BytesIO(blob[:-3]), lambda c, e, s, p: got.append(s) and False)
    assert got == [7]  # a torn last entry: the good one before it, and "torn"


def test_scan_bytes_parses_in_place_as_scan_stream_reads():
    blob = pack_entry(0, 3, 7, b'{"a":1}') + pack_entry(2, 3, 8, b'{"b":2}') + pack_entry(1, 4, 0, b"{}")
    flipped = bytearray(blob)
    flipped[30] ^= 1  # in the second entry: its CRC fails
    for data in (blob, blob[:-1], blob[:-20], blob[:5], b"", bytes(flipped), blob[:26] + b"\xff" * 11):
        seen, seen_stream = [], []
        torn = scan_bytes(data, lambda c, e, s, p: seen.append((c, e, s, p)) and False)
        assert (torn, seen) == (scan_stream(io.BytesIO(data), lambda *a: seen_stream.append(a) and False),
                                seen_stream), data
        assert all(isinstance(x[3], bytes) for x in seen)
    seen = []
    assert not scan_bytes(blob, lambda c, e, s, p: seen.append(s) or s == 8) and seen == [7, 8]


def test_pending_and_acks_through_the_tail_match_a_fresh_open(tmp_path):
    """A mains node's cycles, with partial acks, ``after`` floors, records above the tail's
    size limit and the bound dropping segments: after every step the log with its tail and a
    fresh open of the same files agree, record for record."""
    rng = random.Random(7)
    st = NodeState(str(tmp_path))
    log = RecordLog(str(tmp_path), 8192, state=st, segment_bytes=1024)
    st.boot("power_on", log.max_epoch())
    n = 0
    for cycle in range(300):
        k = rng.choice((1, 1, 2, 3))
        pad = rng.choice((0, 0, 0, 150))  # 3 padded records pass _TAIL_MAX: files are read
        log.append_all([reading(n + i, pad) for i in range(k)])
        n += k
        other = fresh(tmp_path)
        assert everything(log) == everything(other)
        assert log.pending_count() == other.pending_count()
        if rng.random() < 0.2 or 100 <= cycle < 200:
            continue  # link down this cycle (for 100 cycles: past the bound)
        batch = log.pending(rng.choice((1, 2, 16)))
        if rng.random() < 0.3 and len(batch) > 1:  # the next batch while one is in flight
            after = keys(batch)[0]
            assert everything(log, after) == everything(other, after)
        acked = keys(batch)[rng.randrange(len(batch))]
        held = len(everything(other))
        got = log.ack_through(*acked)
        assert got == held - len(everything(fresh(tmp_path)))
        assert everything(log) == everything(fresh(tmp_path))
    s = log.stats()
    assert s["dropped"] > 0 and s["gaps"] > 0  # the bound was passed: drops were exercised
    assert s["pending"] == fresh(tmp_path).stats()["pending"]


def test_reopen_after_an_ack_served_from_the_tail_finds_the_same_log(tmp_path):
    """A power cut right after an ack (objects gone, files kept): the next boot sees exactly
    what the old process held, and numbers its records above everything logged."""
    st = NodeState(str(tmp_path))
    log = RecordLog(str(tmp_path), 8192, state=st, segment_bytes=1024)
    st.boot("power_on", log.max_epoch())
    log.append_all([reading(0), reading(1), reading(2)])
    batch = log.pending(2)
    assert log.ack_through(*keys(batch)[-1]) == 2
    held = everything(log)
    assert keys(held) == [(1, 2)]
    st2 = NodeState(str(tmp_path))
    log2 = RecordLog(str(tmp_path), 8192, state=st2, segment_bytes=1024)
    st2.boot("power_on", log2.max_epoch())
    assert everything(log2) == held
    log2.append(reading(3))
    assert keys(everything(log2)) == [(1, 2), (2, 0)]
    log2.pending(10)
    assert log2.ack_through(2, 0) == 2
    assert log2.stats()["bytes"] == 0 and os.listdir(str(tmp_path / "log")) != []


def test_a_write_larger_than_the_tail_limit_is_read_from_flash(tmp_path):
    st = NodeState(str(tmp_path))
    log = RecordLog(str(tmp_path), 8192, state=st, segment_bytes=2048)
    st.boot("power_on", log.max_epoch())
    big = [reading(i, 200) for i in range(3)]
    log.append_all(big)
    assert 3 * 200 > _TAIL_MAX  # nothing kept in RAM: pending reads the segment file
    assert everything(log) == everything(fresh(tmp_path)) and len(everything(log)) == 3
