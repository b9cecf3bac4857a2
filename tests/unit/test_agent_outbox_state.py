"""The outbox's named state (``gateway.outbox_state``): written by ``put_many(records,
state=...)`` in the rows' own transaction, read back by ``load_state``, refused when not JSON,
absent from neither or both when the disk is full, and added to outbox files made before it."""

import sqlite3

import pytest

from gateway.outbox import Outbox, OutboxFull, OutboxRecord
from gateway.outbox_state import encode_state
from simulators.clock import VirtualClock


def rec(seq, dev="node-a", epoch=1):
    return OutboxRecord(dev, epoch, seq, {"seq": seq, "t": None,
                                          "values": [["co2_ppm", 400 + seq, "ok"]]})


def open_box(path, clock=None):
    return Outbox(path, 1 << 24, 86400, clock or VirtualClock())


def stored_seqs(path):
    db = sqlite3.connect(path)
    try:
        return sorted(s for (s,) in db.execute("SELECT seq FROM rows"))
    finally:
        db.close()


def test_state_is_stored_with_the_rows_and_survives_reopen(tmp_path):
    path = str(tmp_path / "o.sqlite3")
    box = open_box(path)
    state = {"replay": {"v": 1, "devices": {"node-a": {"e": 1, "r": [[0, 2]]}}},
             "gateway": {"boot_epoch": 4, "next_seq": 0}, "note": [1, 2.5, None, True, "x"]}
    result = box.put_many([rec(0), rec(1), rec(2)], state=state)
    assert len(result.new) == 3
    box.close()
    box = open_box(path)
    assert box.load_state("replay") == state["replay"]
    assert box.load_state("gateway") == {"boot_epoch": 4, "next_seq": 0}
    assert box.load_state("note") == [1, 2.5, None, True, "x"]
    assert box.load_state("missing") is None and box.load_state("missing", {}) == {}
    assert box.state_names() == ["gateway", "note", "replay"]
    box.close()


def test_state_alone_is_written_and_a_later_write_replaces_it(tmp_path):
    box = open_box(tmp_path / "o.sqlite3")
    assert box.put_many([], state={"gateway": {"boot_epoch": 1}}).new == []
    box.put_many([], state={"gateway": {"boot_epoch": 2}})
    assert box.load_state("gateway") == {"boot_epoch": 2}
    assert stored_seqs(box.path) == []
    assert box.put_many([]) == (([], [], 0))  # nothing at all: no transaction
    box.close()


@pytest.mark.parametrize("state,named", [
    ({"x": float("nan")}, "'x'"), ({"x": {1: 2}}, "key 1"), ({"x": b"raw"}, "bytes"),
    ({"": 1}, "state name ''"), ({"x": {"a": {3, 4}}}, "set"), ([("x", 1)], "must be a dict")])
def test_a_state_json_cannot_hold_is_refused_and_nothing_is_stored(tmp_path, state, named):
    box = open_box(tmp_path / "o.sqlite3")
    box.put_many([rec(0)], state={"x": 0})
    with pytest.raises(ValueError) as e:
        box.put_many([rec(1)], state=state)
    assert named in str(e.value)
    assert stored_seqs(box.path) == [0] and box.load_state("x") == 0
    box.close()


def test_encode_state_is_compact_json():
    assert encode_state({"a": {"b": [1, 2]}}) == [("a", '{"b":[1,2]}')]
    assert encode_state(None) == []


def test_a_full_disk_stores_neither_the_rows_nor_the_state(tmp_path):
    box = open_box(tmp_path / "o.sqlite3")
    box.put_many([rec(0)], state={"through": 0})
    taken = box.take(10)  # in flight: the full-disk policy may not drop it
    box.cap_file_bytes(0)  # at the current size: any new page is a full disk
    big = [OutboxRecord("node-a", 1, s, {"seq": s, "pad": "x" * 3000}) for s in range(1, 40)]
    with pytest.raises(OutboxFull):
        box.put_many(big, state={"through": 39})
    assert box.load_state("through") == 0
    box.release([r.row_id for r in taken])
    box.close()
    box = open_box(tmp_path / "o.sqlite3")
    assert box.load_state("through") == 0 and stored_seqs(box.path) == [0]
    box.close()


def test_an_outbox_file_made_before_the_state_table_gains_it(tmp_path):
    path = str(tmp_path / "o.sqlite3")
    box = open_box(path)
    box.put_many([rec(0), rec(1)])
    box.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE state")  # as an outbox written by the previous gateway version
    db.commit()
    db.close()
    box = open_box(path)
    assert box.load_state("replay", "none") == "none"
    box.put_many([rec(2)], state={"replay": {"v": 1}})
    box.close()
    box = open_box(path)
    assert box.load_state("replay") == {"v": 1} and stored_seqs(path) == [0, 1, 2]
    box.close()


def test_a_hand_edited_state_that_is_not_json_is_a_value_error_naming_it(tmp_path):
    path = str(tmp_path / "o.sqlite3")
    box = open_box(path)
    box.put_many([], state={"alarms": {"v": 1}})
    box.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE state SET json = '{oops' WHERE name = 'alarms'")
    db.commit()
    db.close()
    box = open_box(path)
    with pytest.raises(ValueError, match="state 'alarms' is not JSON"):
        box.load_state("alarms")
    box.close()
