"""The node's flash log (firmware/app/store.py) and persistent state (firmware/app/state.py) on
CPython, in a temporary directory: append/pending/ack/trim, the bound with its exact gap record,
torn tails, restarts, interrupted drops, and seq uniqueness across boots."""

import os

import pytest

from firmware.app import state as state_mod
from firmware.app import store as store_mod
from firmware.app.state import SEQ_BLOCK, LOST_EPOCH_JUMP, NodeState, SlotFile
from firmware.app.store import GAP_ENTRY_MAX, RecordLog


def reading(i):
    return {"t": None, "values": [["co2_ppm", 400 + i, "ok"], ["temperature_c", 21.5, "ok"]]}


def open_node(root, max_bytes=4096, segment_bytes=512, boot="power_on", clock=None):
    """What the composition root does at every boot."""
    st = NodeState(str(root))
    log = RecordLog(str(root), max_bytes, clock=clock, state=st, segment_bytes=segment_bytes)
    if boot:
        st.boot(boot, log.max_epoch())
    return st, log


def keys(pairs):
    return [(e, r["seq"]) for e, r in pairs]


def all_pending(log):
    return log.pending(100000, mark_sent=False)


def seg_files(root):
    return sorted(n for n in os.listdir(os.path.join(str(root), "log")) if n.endswith(".seg"))


class FakeClock:
    def __init__(self, wall_s, trusted):
        self._wall, self._trusted = wall_s, trusted

    def wall_s(self):
        return self._wall

    def wall_trusted(self):
        return self._trusted


# -- append / pending / ack / trim ------------------------------------------------------------
def test_append_pending_ack_and_trim(tmp_path):
    st, log = open_node(tmp_path)
    assert st.boot_epoch == 1
    seqs = [log.append(reading(i)) for i in range(20)]
    assert seqs == list(range(20))
    first = log.pending(4)
    assert keys(first) == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert first[2][1] == dict(reading(2), seq=2)
    assert log.stats()["pending"] == 20
    assert log.ack_through(1, 3) == 4
    assert keys(log.pending(2)) == [(1, 4), (1, 5)]
    assert log.stats()["pending"] == 16 and log.stats()["acked"] == [1, 3]
    files_before = seg_files(tmp_path)
    assert len(files_before) > 2
    log.pending(100)
    assert log.ack_through(1, 19) == 16
    # every segment trimmed but the active one, kept spent: out of the log's segments and size
    assert seg_files(tmp_path) == files_before[-1:]
    assert log.stats()["bytes"] == 0 and log.stats()["segments"] == 0
    assert log.pending(10) == []
    assert log.append(reading(99)) == 20  # replaces the spent segment's acked records
    assert seg_files(tmp_path) == files_before[-1:]
    path = os.path.join(str(tmp_path), "log", files_before[-1])
    assert os.path.getsize(path) == log.stats()["bytes"] and log.stats()["segments"] == 1
    assert keys(all_pending(log)) == [(1, 20)]


def test_spent_segment_is_replaced_by_the_next_write_and_survives_a_cut(tmp_path, monkeypatch):
    """A mains node's cycles: each ack leaves the active segment spent and the next write
    replaces it (the segment file is kept, its id too); a cut before the replacement leaves
    the acked records, which the reopened log does not send again."""
    st, log = open_node(tmp_path)
    for i in range(5):
        log.append_all([reading(i)])
        got = log.pending(16)
        assert keys(got) == [(1, i)] and log.ack_through(1, i) == 1
        assert log.stats()["bytes"] == 0 and log.stats()["pending"] == 0
    assert len(seg_files(tmp_path)) == 1
    st, log = open_node(tmp_path)  # a reboot: the spent segment is kept, not deleted
    assert seg_files(tmp_path) and log.stats()["segments"] == 0 and all_pending(log) == []
    assert log.stats()["acked"] == [1, 4]
    monkeypatch.setattr(store_mod, "write_bytes", _power_cut)
    with pytest.raises(OSError):
        log.append(reading(5))
    monkeypatch.undo()
    assert all_pending(log) == [] and log.append(reading(6)) == 1
    st, log = open_node(tmp_path)
    assert keys(all_pending(log)) == [(2, 1)] and log.stats()["torn"] == 0
    log.append_all([reading(i) for i in range(3)])  # partly acked, then filled past the segment
    log.pending(16)
    assert log.ack_through(3, 0) == 2
    for i in range(8):
        log.append(reading(i))
    assert len(seg_files(tmp_path)) == 2 and keys(all_pending(log))[0] == (3, 1)


def test_trim_deletes_only_whole_segments_of_acked_records(tmp_path):
    st, log = open_node(tmp_path)
    for i in range(30):
        log.append(reading(i))
    files = seg_files(tmp_path)
    entry = log.stats()["bytes"] // 30  # all 30 entries have the same size
    per_seg = 512 // entry
    log.pending(30)
    log.ack_through(1, per_seg - 2)  # all but the last record of the first segment
    assert seg_files(tmp_path) == files
    log.ack_through(1, per_seg - 1)  # the whole first segment: exactly that file goes
    assert seg_files(tmp_path) == files[1:]
    assert keys(all_pending(log))[0] == (1, per_seg)


def test_append_all_is_one_write_with_consecutive_seqs(tmp_path):
    st, log = open_node(tmp_path)
    status = {"t": 1700000000, "kind": "status", "values": [["battery_v", 3.71, "ok"]],
              "counters": {"boots": 1}}
    assert log.append_all([reading(0), reading(1), status]) == [0, 1, 2]
    got = all_pending(log)
    assert got[2] == (1, dict(status, seq=2))
    assert len(seg_files(tmp_path)) == 1


def test_caller_seqs_must_increase(tmp_path):
    st, log = open_node(tmp_path)
    s = st.take_seq()
    log.append(dict(reading(0), seq=s))
    with pytest.raises(ValueError, match="not above"):
        log.append(dict(reading(1), seq=s))
    with pytest.raises(ValueError, match="all carry a seq"):
        log.append_all([dict(reading(1), seq=s + 1), reading(2)])
    assert keys(all_pending(log)) == [(1, s)]


def test_bad_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="max_bytes"):
        RecordLog(str(tmp_path), 100)
    with pytest.raises(ValueError, match="segment_bytes"):
        RecordLog(str(tmp_path), 4096, segment_bytes=4096)
    with pytest.raises(ValueError, match="NodeState"):
        RecordLog(str(tmp_path), 4096).append(reading(0))
    st, log = open_node(tmp_path)
    with pytest.raises(ValueError, match="kind"):
        log.append({"kind": "nonsense"})
    with pytest.raises(ValueError, match="more than"):
        log.append({"t": None, "values": [["x", "y" * 2000, "ok"]]})
    with pytest.raises(ValueError, match="limit"):
        log.pending(0)
    with pytest.raises(ValueError, match="seq"):
        log.ack_through(1, -1)
    assert log.stats()["pending"] == 0


def test_pending_after_streams_the_next_batch_while_one_is_in_flight(tmp_path):
    st, log = open_node(tmp_path)
    for i in range(10):
        log.append(reading(i))
    first = log.pending(3)
    second = log.pending(3, after=keys(first)[-1])
    assert keys(second) == [(1, 3), (1, 4), (1, 5)]
    assert log.ack_through(1, 5) == 6  # both batches were sent
    assert keys(log.pending(2, after=(1, 1))) == [(1, 6), (1, 7)]  # never below the pointer


def test_caller_numbered_records_put_the_gap_after_them(tmp_path):
    st, log = open_node(tmp_path, max_bytes=2048, segment_bytes=512)
    while log.stats()["dropped"] == 0:
        s = st.take_seq()
        assert log.append(dict(reading(s), seq=s)) == s
    held = all_pending(log)
    assert held[-1][1]["kind"] == "gap" and held[-1][1]["seq"] == s + 1
    assert held[-2][1]["seq"] == s
    assert st.take_seq() == s + 2  # the gap's seq came from the same state


# -- the ack guard ------------------------------------------------------------------------------
def test_forged_stale_and_premature_acks_trim_nothing(tmp_path):
    st, log = open_node(tmp_path)
    for i in range(10):
        log.append(reading(i))
    assert log.ack_through(1, 3) == 0  # nothing sent yet
    log.pending(5)  # sent (1,0)..(1,4)
    assert log.ack_through(1, 5) == 0  # beyond what was sent
    assert log.ack_through(2, 0) == 0  # an epoch the node has not logged in
    assert log.acks_rejected == 3
    assert log.ack_through(1, 2) == 3
    assert log.ack_through(1, 2) == 0 and log.ack_through(0, 99) == 0  # stale
    s = log.stats()
    assert (s["acks_stale"], s["acks_rejected"], s["pending"]) == (2, 3, 7)
    assert keys(all_pending(log))[0] == (1, 3)


def test_ack_naming_an_epoch_without_records_is_rejected(tmp_path):
    st, log = open_node(tmp_path)
    log.append(reading(0))
    st, log = open_node(tmp_path)  # epoch 2
    st, log = open_node(tmp_path)  # epoch 3
    log.append(reading(1))
    assert keys(log.pending(10)) == [(1, 0), (3, 0)]
    assert log.ack_through(2, 0) == 0 and log.acks_rejected == 1  # nothing of epoch 2 held
    assert log.ack_through(3, 0) == 2


def test_restart_forgets_what_was_sent(tmp_path):
    st, log = open_node(tmp_path)
    for i in range(5):
        log.append(reading(i))
    log.pending(5)
    st, log = open_node(tmp_path)
    assert log.ack_through(1, 4) == 0  # sent by a previous boot: resent, then acked
    log.pending(5)
    assert log.ack_through(1, 4) == 5


# -- restart --------------------------------------------------------------------------------
def test_restart_reloads_pending_and_the_ack_pointer(tmp_path):
    st, log = open_node(tmp_path)
    for i in range(12):
        log.append(reading(i))
    log.pending(5)
    log.ack_through(1, 4)
    before = all_pending(log)
    del st, log
    st, log = open_node(tmp_path)
    assert all_pending(log) == before
    assert log.stats()["pending"] == 7 and log.stats()["acked"] == [1, 4]
    assert log.append(reading(50)) == 0 and st.boot_epoch == 2
    assert keys(all_pending(log))[-2:] == [(1, 11), (2, 0)]


# -- the bound ----------------------------------------------------------------------------------
def test_bound_drops_oldest_with_an_exact_gap_record(tmp_path):
    clock = FakeClock(1700000123.7, True)
    st, log = open_node(tmp_path, max_bytes=2048, segment_bytes=512, clock=clock)
    appended = []
    while log.stats()["dropped"] == 0:
        appended.append((1, log.append(reading(len(appended)))))
        assert log.stats()["bytes"] <= 2048
    held = all_pending(log)
    gaps = [(e, r) for e, r in held if r.get("kind") == "gap"]
    assert len(gaps) == 1
    e, gap = gaps[0]
    data = [k for k, (_, r) in zip(keys(held), held) if r.get("kind") is None]
    lost = [k for k in appended if k not in data]
    assert lost == appended[:len(lost)]  # the oldest, and only those
    assert gap["dropped"] == len(lost) == log.stats()["dropped"]
    assert (gap["first_epoch"], gap["first_seq"]) == lost[0]
    assert (gap["last_epoch"], gap["last_seq"]) == lost[-1]
    assert gap["t"] == 1700000123 and log.stats()["gaps"] == 1
    # the gap took its own seq, right before the record whose append caused the drop
    assert (e, gap["seq"]) == (1, appended[-1][1] - 1)
    assert sorted(set(keys(held))) == keys(held)


def test_gap_time_is_none_without_trusted_time(tmp_path):
    st, log = open_node(tmp_path, max_bytes=1024, clock=FakeClock(1700000000, False))
    while log.stats()["dropped"] == 0:
        log.append(reading(0))
    gap = [r for _, r in all_pending(log) if r.get("kind") == "gap"][0]
    assert gap["t"] is None


def test_acked_records_dropped_by_the_bound_are_not_counted(tmp_path):
    st, log = open_node(tmp_path, max_bytes=2048, segment_bytes=512)
    for i in range(8):
        log.append(reading(i))
    log.pending(3)
    log.ack_through(1, 2)  # 3 acked, still in the first (partly acked) segment
    n = 8
    while log.stats()["dropped"] == 0:
        log.append(reading(n))
        n += 1
    gap = [r for _, r in all_pending(log) if r.get("kind") == "gap"][0]
    assert (gap["first_epoch"], gap["first_seq"]) == (1, 3)
    data = [r["seq"] for _, r in all_pending(log) if r.get("kind") is None]
    assert gap["dropped"] == data[0] - 3 == log.stats()["dropped"]


def test_a_week_offline_keeps_the_bound_and_an_exact_count(tmp_path):
    """Gap records that are themselves dropped are merged into the next, their own keys
    counted too: the ``dropped`` of the gap records left is exactly every key that will never
    be delivered (readings and merged gap records alike), and the log's own count agrees."""
    st, log = open_node(tmp_path, max_bytes=3000, segment_bytes=600)
    data_keys = []
    for boot in range(20):  # a deep-sleep node: every wake is a new epoch
        for i in range(15):
            data_keys.append((st.boot_epoch, log.append(reading(i))))
            assert log.stats()["bytes"] <= 3000
        st, log = open_node(tmp_path, max_bytes=3000, segment_bytes=600)
    # every seq of an epoch up to its last reading was handed out (a gap takes its seq before
    # the records of its write): those not held are the keys upstream will never see
    last = {}
    for e, q in data_keys:
        last[e] = max(last.get(e, 0), q)
    produced = [(e, q) for e in sorted(last) for q in range(last[e] + 1)]
    held = all_pending(log)
    held_keys = set(keys(held))
    missing = [k for k in produced if k not in held_keys]
    gaps = [r for _, r in held if r.get("kind") == "gap"]
    merged = [k for k in missing if k not in set(data_keys)]  # gap records merged away
    assert gaps and len(merged) == log.stats()["gaps"] - len(gaps) > 0
    assert sum(g["dropped"] for g in gaps) == len(missing) == log.stats()["dropped"]
    assert len(missing) == len(data_keys) - (len(held) - len(gaps)) + len(merged)
    # the ranges cover exactly the missing keys, back to the first record (a merged gap's
    # range may overlap a newer gap's: the counts never double)
    ranges = [((g["first_epoch"], g["first_seq"]), (g["last_epoch"], g["last_seq"])) for g in gaps]
    assert [k for k in produced if any(lo <= k <= hi for lo, hi in ranges)] == missing
    assert min(lo for lo, _ in ranges) == (1, 0)
    assert keys(held) == sorted(held_keys)
    # everything still held is delivered in order when the link returns
    got = log.pending(1000)
    assert log.ack_through(*keys(got)[-1]) == len(held)
    assert log.stats()["bytes"] == 0


def test_segment_bytes_bounds_each_file(tmp_path):
    st, log = open_node(tmp_path, max_bytes=8192, segment_bytes=1024)
    for i in range(100):
        log.append(reading(i))
    sizes = [os.path.getsize(os.path.join(str(tmp_path), "log", n)) for n in seg_files(tmp_path)]
    assert max(sizes) <= 1024 and sum(sizes) == log.stats()["bytes"] <= 8192
    assert GAP_ENTRY_MAX < 200


# -- torn tails and corruption ---------------------------------------------------------------
def test_torn_tail_entry_is_skipped_counted_once_and_never_appended_after(tmp_path):
    st, log = open_node(tmp_path, max_bytes=8192, segment_bytes=2048)
    for i in range(5):
        log.append(reading(i))
    path = os.path.join(str(tmp_path), "log", seg_files(tmp_path)[-1])
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 7)  # a power cut in the middle of the last entry
    st, log = open_node(tmp_path, max_bytes=8192, segment_bytes=2048)
    assert keys(all_pending(log)) == [(1, i) for i in range(4)]
    assert log.stats()["torn"] == 1 and log.stats()["pending"] == 4
    st, log = open_node(tmp_path, max_bytes=8192, segment_bytes=2048)  # counted once only
    assert log.stats()["torn"] == 1
    log.append(reading(9))
    assert len(seg_files(tmp_path)) == 2  # a new segment: nothing written after garbage
    assert keys(all_pending(log)) == [(1, 0), (1, 1), (1, 2), (1, 3), (3, 0)]
    st, log = open_node(tmp_path, max_bytes=8192, segment_bytes=2048)
    assert log.stats()["torn"] == 1 and len(all_pending(log)) == 5


@pytest.mark.parametrize("where", ["crc", "length", "magic"])
def test_corrupt_last_entry_is_treated_as_torn(tmp_path, where):
    st, log = open_node(tmp_path, max_bytes=8192, segment_bytes=2048)
    for i in range(3):
        log.append(reading(i))
    path = os.path.join(str(tmp_path), "log", seg_files(tmp_path)[-1])
    data = bytearray(open(path, "rb").read())
    entry = len(data) // 3
    offset = {"crc": len(data) - 1, "length": 2 * entry + 2, "magic": 2 * entry}[where]
    data[offset] ^= 0x40
    open(path, "wb").write(bytes(data))
    st, log = open_node(tmp_path, max_bytes=8192, segment_bytes=2048)
    assert keys(all_pending(log)) == [(1, 0), (1, 1)] and log.stats()["torn"] == 1


def test_empty_segment_left_by_a_cut_is_harmless(tmp_path):
    st, log = open_node(tmp_path)
    log.append(reading(0))
    open(os.path.join(str(tmp_path), "log", "00000007.seg"), "wb").close()
    st, log = open_node(tmp_path)
    assert log.append(reading(1)) == 0
    assert keys(all_pending(log)) == [(1, 0), (2, 0)] and log.stats()["torn"] == 0


# -- interrupted drops (a cut between the steps of a drop) ----------------------------------------
def _power_cut(*args):
    raise OSError(5, "power cut")


def _fill_to_drop(log):
    n = 0
    while True:
        before = log.stats()["bytes"]
        if before + 60 + GAP_ENTRY_MAX > 2048:
            return n
        log.append(reading(n))
        n += 1


def test_cut_after_the_drop_intent_is_finished_at_the_next_open(tmp_path, monkeypatch):
    st, log = open_node(tmp_path, max_bytes=2048, segment_bytes=512)
    _fill_to_drop(log)
    appended = keys(all_pending(log))
    monkeypatch.setattr(store_mod.os, "remove", _power_cut)  # the cut lands after the intent
    with pytest.raises(OSError):
        for i in range(20):
            appended.append((1, log.append(reading(i))))
    monkeypatch.undo()
    st, log = open_node(tmp_path, max_bytes=2048, segment_bytes=512)
    held = all_pending(log)
    gaps = [r for _, r in held if r.get("kind") == "gap"]
    data = [k for k, (_, r) in zip(keys(held), held) if r.get("kind") is None]
    assert len(gaps) == 1 and gaps[0]["dropped"] == log.stats()["dropped"]
    assert data == appended[gaps[0]["dropped"]:]  # lost: exactly the oldest, counted
    assert (gaps[0]["first_epoch"], gaps[0]["first_seq"]) == appended[0]
    assert log.stats()["bytes"] <= 2048
    st, log = open_node(tmp_path, max_bytes=2048, segment_bytes=512)
    assert len([r for _, r in all_pending(log) if r.get("kind") == "gap"]) == 1  # not redone


def test_cut_in_a_drop_that_merges_a_gap_ends_as_the_uncut_drop(tmp_path, monkeypatch):
    """The drop intent carries the merged gap record's key in its count: a cut after the
    intent, finished at the next open, leaves what the same drop without a cut leaves."""
    for d in ("ref", "cut"):
        (tmp_path / d).mkdir()
    ref_st, ref = open_node(tmp_path / "ref", max_bytes=2048, segment_bytes=512)
    merging = None
    for i in range(400):
        gaps_before = ref.stats()["gaps"]
        held_gaps = sum(1 for _, r in all_pending(ref) if r.get("kind") == "gap")
        ref.append(reading(i))
        now_held = sum(1 for _, r in all_pending(ref) if r.get("kind") == "gap")
        if ref.stats()["gaps"] > gaps_before and now_held == held_gaps:  # one gap merged away
            merging = i
            break
    assert merging is not None
    held = set(keys(all_pending(ref)))
    missing = [(1, q) for q in range(max(held)[1]) if (1, q) not in held]  # one epoch
    assert sum(r["dropped"] for _, r in all_pending(ref) if r.get("kind") == "gap") == len(missing)
    st, log = open_node(tmp_path / "cut", max_bytes=2048, segment_bytes=512)
    for i in range(merging):
        log.append(reading(i))
    monkeypatch.setattr(store_mod.os, "remove", _power_cut)  # the cut lands after the intent
    with pytest.raises(OSError):
        log.append(reading(merging))
    monkeypatch.undo()
    st, log = open_node(tmp_path / "cut", max_bytes=2048, segment_bytes=512, boot=None)
    want, got = all_pending(ref), all_pending(log)
    gap = [r for _, r in got if r.get("kind") == "gap"][-1]
    assert gap == [r for _, r in want if r.get("kind") == "gap"][-1]
    assert log.stats()["dropped"] == ref.stats()["dropped"] == sum(
        r["dropped"] for _, r in got if r.get("kind") == "gap")
    # the cut append's reading was never logged; everything else is as in the uncut run
    assert got == [p for p in want if p[1]["seq"] != want[-1][1]["seq"]]


def test_cut_before_the_intent_is_cleared_writes_no_second_gap(tmp_path, monkeypatch):
    st, log = open_node(tmp_path, max_bytes=2048, segment_bytes=512)
    _fill_to_drop(log)
    real_save = SlotFile.save
    saves = []

    def save(self, doc):
        if self._paths[0].endswith("meta.0"):  # the log's metadata, not the node state
            saves.append(doc)
            if len(saves) == 2:  # the save that clears the intent, after the gap was written
                _power_cut()
        real_save(self, doc)

    monkeypatch.setattr(SlotFile, "save", save)
    with pytest.raises(OSError):
        for i in range(20):
            log.append(reading(i))
    monkeypatch.undo()
    assert "x" in saves[0] and "x" not in saves[1]
    st, log = open_node(tmp_path, max_bytes=2048, segment_bytes=512)
    held = all_pending(log)
    gaps = [r for _, r in held if r.get("kind") == "gap"]
    assert len(gaps) == 1 and gaps[0]["dropped"] == log.stats()["dropped"] > 0
    # the gap (its seq taken first) and the record whose append caused the drop, once each
    assert held[-2][1].get("kind") == "gap" and held[-1][1].get("kind") is None
    assert held[-1][1]["seq"] == held[-2][1]["seq"] + 1


def test_cut_between_ack_and_trim_is_trimmed_at_the_next_open(tmp_path, monkeypatch):
    st, log = open_node(tmp_path)
    for i in range(30):
        log.append(reading(i))
    log.pending(20)
    monkeypatch.setattr(store_mod.os, "remove", _power_cut)  # the pointer is saved, no file deleted
    with pytest.raises(OSError):
        log.ack_through(1, 19)
    monkeypatch.undo()
    n_files = len(seg_files(tmp_path))
    st, log = open_node(tmp_path)
    assert len(seg_files(tmp_path)) < n_files
    assert keys(all_pending(log))[0] == (1, 20) and log.stats()["pending"] == 10


# -- NodeState --------------------------------------------------------------------------------
def test_boot_increments_and_persists_the_epoch_and_boot_record(tmp_path):
    st = NodeState(str(tmp_path))
    assert (st.boot_epoch, st.boot_count) == (0, 0)
    with pytest.raises(RuntimeError, match="boot"):
        st.take_seq()
    assert st.boot("power_on") == 1
    assert st.boot("deepsleep") == 2
    again = NodeState(str(tmp_path))
    assert (again.boot_epoch, again.boot_count, again.boot_reason) == (2, 2, "deepsleep")
    assert again.boot("watchdog") == 3 and again.take_seq() == 0


def test_seqs_never_repeat_across_boots_cuts_and_resumes(tmp_path):
    seen = set()
    for boot in range(6):
        st = NodeState(str(tmp_path))
        if boot % 2 == 0:
            st.boot("power_on")
        elif st.boot_epoch == 0:
            continue
        # odd rounds "resume" without boot(): the persisted mark skips anything handed out
        for n in (1, 3, 70, 1, 5):
            first = st.take_seqs(n)
            for s in range(first, first + n):
                assert (st.boot_epoch, s) not in seen
                seen.add((st.boot_epoch, s))
        # a power cut here: nothing saved beyond what take_seqs already persisted
    assert len(seen) == 6 * 80


def test_seq_reservation_saves_once_per_block(tmp_path):
    st = NodeState(str(tmp_path))
    st.boot("power_on")
    gen = st._core.gen
    for _ in range(SEQ_BLOCK):
        st.take_seq()
    assert st._core.gen == gen  # the boot's save reserved the first block
    st.take_seq()
    assert st._core.gen == gen + 1
    resumed = NodeState(str(tmp_path))
    assert resumed.take_seq() == 2 * SEQ_BLOCK + 1  # the persisted mark: skipped, not reused


def test_counters_and_config_version_persist_on_demand(tmp_path):
    st = NodeState(str(tmp_path))
    st.boot("power_on")
    assert st.incr("i2c_errors") == 1 and st.incr("i2c_errors", 4) == 5
    st.set_config_version(7)
    st.incr("crc_errors")
    st.save()
    st.incr("crc_errors")  # not saved: lost by a cut
    again = NodeState(str(tmp_path))
    assert again.counters() == {"i2c_errors": 5, "crc_errors": 1}
    assert again.config_version == 7 and again.counter("nothing") == 0
    with pytest.raises(ValueError, match="config version"):
        again.set_config_version(-1)


def _corrupt(path):
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _newest_slot(root, name):
    best = None
    for i in (0, 1):
        p = os.path.join(str(root), "%s.%d" % (name, i))
        if os.path.exists(p):
            gen = int.from_bytes(open(p, "rb").read()[4:8], "little")
            if best is None or gen > best[0]:
                best = (gen, p)
    return best[1]


def test_torn_newest_state_slot_falls_back_and_never_reuses_an_epoch(tmp_path):
    st = NodeState(str(tmp_path))
    for _ in range(3):
        st.boot("power_on")
    _corrupt(_newest_slot(tmp_path, "state"))  # epoch 3's save damaged
    st = NodeState(str(tmp_path))
    assert st.boot_epoch == 2 and st.state_faults == 1
    assert st.boot("power_on") == 4  # not 3: that one may have been used
    st = NodeState(str(tmp_path))
    assert (st.boot_epoch, st.state_faults) == (4, 1)  # the bad slot was rewritten: counted once


def test_truncated_slot_is_bad_not_an_exception(tmp_path):
    st = NodeState(str(tmp_path))
    st.boot("power_on")
    st.boot("power_on")
    path = _newest_slot(tmp_path, "state")
    with open(path, "r+b") as f:
        f.truncate(5)
    st = NodeState(str(tmp_path))
    assert st.boot_epoch == 1 and st.state_faults == 1


def test_both_slots_lost_jump_past_every_epoch_the_log_knows(tmp_path):
    st, log = open_node(tmp_path)
    st.boot("power_on")
    log.append(reading(0))
    for i in (0, 1):
        _corrupt(os.path.join(str(tmp_path), "state.%d" % i))
    st, log = open_node(tmp_path)
    assert st.boot_epoch == log.max_epoch() + LOST_EPOCH_JUMP + 1 and st.state_faults == 3
    assert log.append(reading(1)) == 0


def test_epoch_floor_from_the_log_when_state_files_are_gone(tmp_path):
    st, log = open_node(tmp_path)
    log.append(reading(0))
    for i in (0, 1):
        if os.path.exists(os.path.join(str(tmp_path), "state.%d" % i)):
            os.remove(os.path.join(str(tmp_path), "state.%d" % i))
    st, log = open_node(tmp_path)
    assert st.boot_epoch == 2
    assert keys(all_pending(log)) == [(1, 0)]
    log.append(reading(1))
    assert keys(all_pending(log)) == [(1, 0), (2, 0)]


def test_corrupt_meta_slot_falls_back_and_is_counted(tmp_path):
    st, log = open_node(tmp_path)
    for i in range(6):
        log.append(reading(i))
    log.pending(6)
    log.ack_through(1, 1)
    log.pending(6)
    log.ack_through(1, 3)
    _corrupt(_newest_slot(os.path.join(str(tmp_path), "log"), "meta"))
    st, log = open_node(tmp_path)
    assert log.stats()["acked"] == [1, 1]  # older pointer: (1,2),(1,3) resent, never lost
    assert log.stats()["meta_faults"] == 1 and log.stats()["pending"] == 4


def test_slot_file_prefers_the_newest_valid_generation(tmp_path):
    slot = SlotFile(os.path.join(str(tmp_path), "doc"))
    assert slot.load() is None
    for v in range(5):
        slot.save({"v": v})
    again = SlotFile(os.path.join(str(tmp_path), "doc"))
    assert again.load() == {"v": 4} and (again.found, again.bad) == (2, 0)
    assert state_mod.join("/", "log") == "/log" and state_mod.join("/flash/", "x") == "/flash/x"


def test_a_failed_state_save_changes_nothing(tmp_path, monkeypatch):
    st = NodeState(str(tmp_path))
    st.boot("power_on")
    for _ in range(SEQ_BLOCK):
        st.take_seq()
    monkeypatch.setattr(SlotFile, "save", _power_cut)
    with pytest.raises(OSError):
        st.boot("watchdog")
    with pytest.raises(OSError):
        st.take_seq()  # the reservation is used up and cannot be extended
    assert (st.boot_epoch, st.boot_count, st.boot_reason) == (1, 1, "power_on")
    monkeypatch.undo()
    assert st.take_seq() == SEQ_BLOCK  # nothing was handed out by the failed calls
    assert st.boot("watchdog") == 2


def test_an_exhausted_epoch_advances_and_is_persisted(tmp_path):
    SlotFile(os.path.join(str(tmp_path), "state")).save({"e": 5, "s": state_mod.SEQ_LIMIT, "b": 5})
    st = NodeState(str(tmp_path))  # resuming at the very end of epoch 5's seq space
    assert st.take_seq() == 0 and st.boot_epoch == 6
    again = NodeState(str(tmp_path))
    assert again.boot_epoch == 6 and again.take_seq() >= 1


def test_resume_after_deep_sleep_keeps_the_epoch_and_never_repeats_a_seq(tmp_path):
    from firmware.app.state import NodeState

    s = NodeState(str(tmp_path))
    e = s.boot("power_on")
    taken = [s.take_seq() for _ in range(5)]
    pos = s.position()  # what RTC memory carries through the sleep
    s2 = NodeState(str(tmp_path))  # the wake: a fresh process, RAM gone
    assert s2.resume(pos[0], pos[1], "deepsleep") == e
    assert s2.take_seq() == taken[-1] + 1
    # stale or forged RTC memory (beyond the persisted reservation, or another epoch): a new epoch
    s3 = NodeState(str(tmp_path))
    assert s3.resume(e, 10 ** 6, "deepsleep") == e + 1
    s4 = NodeState(str(tmp_path))
    assert s4.resume(e, 3, "deepsleep") == e + 2  # e is no longer the persisted epoch
