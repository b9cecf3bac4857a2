"""The small parts of gateway/ops.py and gateway/ops_export.py: times, durations, the agent
lock, reading /proc/locks, overwriting a secret, and the export writers on a stream."""

import csv
import io
import json
import os

import pytest

from gateway import ops, ops_export
from gateway.outbox import Outbox, OutboxRecord
from simulators.clock import VirtualClock

T0 = 1767571200


@pytest.mark.parametrize("text,expect", [
    ("2026-01-05", T0), ("2026-01-05T00:00:00Z", T0), ("2026-01-05T01:00:00+01:00", T0),
    ("2026-01-05 00:00:30", T0 + 30), ("2026-01-05T00:00:00.5z", T0 + 0.5)])
def test_parse_time_takes_iso_8601_naive_as_utc(text, expect):
    assert ops.parse_time(text, "--from") == expect


def test_parse_time_names_the_argument():
    with pytest.raises(ValueError, match="--to 'soon' is not an ISO-8601"):
        ops.parse_time("soon", "--to")


def test_iso_and_duration():
    assert ops.iso(T0 + 61.9) == "2026-01-05T00:01:01Z" and ops.iso(None) is None
    assert [ops.duration(s) for s in (12, 250, 7500, 3 * 86400 + 4 * 3600)] == [
        "12 s", "4 min 10 s", "2 h 5 min", "3 d 4 h"]


def test_the_agent_lock_is_exclusive_and_says_who_holds_it(tmp_path):
    f = ops.hold_agent_lock(str(tmp_path))
    try:
        assert (tmp_path / ops.AGENT_LOCK).read_text() == "%d\n" % os.getpid()
        assert ops.lock_is_held(str(tmp_path / ops.AGENT_LOCK)) is True
        with pytest.raises(ops.AgentRunning, match="pid %d" % os.getpid()):
            ops.hold_agent_lock(str(tmp_path))
    finally:
        f.close()
    assert ops.lock_is_held(str(tmp_path / ops.AGENT_LOCK)) is False  # released with the file
    assert ops.lock_is_held(str(tmp_path / "absent")) is None


def test_posix_lock_holders_reads_proc_locks(tmp_path):
    target = tmp_path / "outbox.sqlite3"
    target.write_text("x")
    st = os.stat(target)
    dev = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    locks = tmp_path / "locks"
    locks.write_text("1: POSIX  ADVISORY  READ 4242 %s 128 128\n"
                     "2: POSIX  ADVISORY  READ %d %s 0 EOF\n"          # our own: not counted
                     "3: FLOCK  ADVISORY  WRITE 99 00:00:1 0 EOF\n"     # another file
                     "3: -> POSIX  ADVISORY  WRITE 4343 %s 0 EOF\n"     # a waiter
                     % (dev, os.getpid(), dev, dev))
    assert ops.posix_lock_holders(str(target), str(locks)) == {4242, 4343}
    assert ops.posix_lock_holders(str(target), str(tmp_path / "none")) is None


def test_shred_overwrites_then_unlinks_and_leaves_a_symlink_target(tmp_path):
    secret = tmp_path / "up.password"
    secret.write_text("n8Vq-3LzK-w7Rt-Y2pX\n")
    os.link(secret, tmp_path / "other-name")
    assert "overwritten (20 bytes)" in ops_export.shred(str(secret))
    assert not secret.exists() and (tmp_path / "other-name").read_bytes() == bytes(20)
    target = tmp_path / "target"
    target.write_text("kept")
    os.symlink(target, tmp_path / "link")
    assert "symlink" in ops_export.shred(str(tmp_path / "link"))
    assert target.read_text() == "kept" and not os.path.lexists(tmp_path / "link")


def _outbox(path, records):
    ob = Outbox(path, 1 << 24, 86400, VirtualClock())
    ob.put_many(records)
    ob.close()
    db = ops.open_readonly(path)
    return db


def test_export_writers_skip_events_and_keep_gaps_in_senml(tmp_path):
    path = str(tmp_path / "o.db")
    db = _outbox(path, [
        OutboxRecord("room-1", 3, 0, {"seq": 0, "t": T0, "values": [["co2_ppm", 500, "ok"]]}),
        OutboxRecord("room-1", 3, 1, {"seq": 1, "t": T0 + 1, "kind": "gap", "dropped": 4,
                                      "first_epoch": 2, "first_seq": 7, "last_epoch": 3,
                                      "last_seq": 0}),
        OutboxRecord("room-1", 3, 2, {"seq": 2, "t": T0 + 2, "kind": "status",
                                      "values": [["battery_v", 3.7, "ok"]],
                                      "counters": {"i2c_errors": 1}}),
        OutboxRecord("gw1", 1, 0, {"seq": 0, "t": T0 + 3, "kind": "event", "alarms": []}),
        OutboxRecord("room-1", 3, 3, {"seq": 3, "t": T0 + 4, "values": [["bogus", 1, "ok"]]}),
    ])
    out = io.StringIO()
    res = ops_export.export(db, out, "csv", 0, 2e9)
    rows = list(csv.reader(io.StringIO(out.getvalue())))[1:]
    assert [(r[2], r[4], r[6]) for r in rows] == [("0", "co2_ppm", "ppm"), ("2", "battery_v", "V"),
                                                  ("3", "bogus", "")]
    assert (res.records, res.values, res.skipped, res.unsent) == (3, 3, 2, 3)
    out = io.StringIO()
    res = ops_export.export(db, out, "senml", 0, 2e9)
    doc = json.loads(out.getvalue())
    assert [r["n"] for r in doc] == ["co2", "dropped", "batt", "count.i2c_errors"]
    assert doc[1]["bkind"] == "gap" and doc[1]["first_seq"] == 7 and doc[2]["bkind"] == "status"
    assert res.skipped == 2  # the gateway's event, and the record the profile cannot encode
    db.close()


def test_senml_base_fields_are_rewritten_when_they_change(tmp_path):
    db = _outbox(str(tmp_path / "o.db"), [
        OutboxRecord("a", 1, 0, {"seq": 0, "t": T0, "values": [["co2_ppm", 1, "ok"]]}),
        OutboxRecord("a", 2, 0, {"seq": 0, "t": T0, "values": [["co2_ppm", 2, "ok"]]}),
        OutboxRecord("b", 2, 5, {"seq": 5, "t": T0 + 9, "values": [["co2_ppm", 3, "ok"]]}),
    ])
    out = io.StringIO()
    ops_export.export(db, out, "senml", 0, 2e9)
    doc = json.loads(out.getvalue())
    assert doc[0]["bn"].endswith("-a:") and doc[0]["bepoch"] == 1 and doc[0]["bt"] == T0
    assert "bn" not in doc[1] and doc[1]["bepoch"] == 2 and "bt" not in doc[1]
    assert doc[2]["bn"].endswith("-b:") and doc[2]["bepoch"] == 2 and doc[2]["bt"] == T0 + 9
    assert [r["bseq"] for r in doc] == [0, 0, 5]
    db.close()


def test_export_refuses_a_bad_format_or_an_empty_range(tmp_path):
    db = _outbox(str(tmp_path / "o.db"), [])
    with pytest.raises(ValueError, match="format 'xml'"):
        ops_export.export(db, io.StringIO(), "xml", 0, 1)
    with pytest.raises(ValueError, match="empty"):
        ops_export.export(db, io.StringIO(), "csv", 5, 5)
    db.close()


def test_open_readonly_cannot_write(tmp_path):
    db = _outbox(str(tmp_path / "o.db"), [OutboxRecord("a", 1, 0, {"seq": 0, "t": T0})])
    with pytest.raises(Exception, match="readonly"):
        db.execute("DELETE FROM rows")
    db.close()
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    with pytest.raises(ops.OpsError, match="cannot read the outbox"):
        ops.open_readonly(str(tmp_path / "junk.db"))
