"""The gateway's disk_full alarm (gateway/agent_disk.py), the pure part: a full disk raises
``disk_full`` once per episode, the clear waits for a quiet period and a store that went
through (or room on the filesystem), events wait in ``pending`` until stored, a clear never
stored is taken back when the disk fills again, the standing alarm survives a restart."""

import sqlite3

import pytest

from gateway.agent_disk import QUANTITY, RULE_DISK, SEVERITY, DiskAlarm, is_disk_full
from gateway.outbox import OutboxError, OutboxFull

PATH = "/var/lib/civicedge/outbox.sqlite3"


def kinds(alarm):
    return [e.kind for e in alarm.pending]


def test_the_first_full_disk_raises_once_and_the_event_waits_until_stored():
    d = DiskAlarm("gw1", PATH, clear_after_s=60)
    raised = d.full(1000, 100.0, "OutboxFull: the disk is full")
    assert (raised.kind, raised.rule_id, raised.device_id, raised.quantity, raised.value,
            raised.since, raised.at, raised.severity) == (
        "raised", RULE_DISK, "gw1", QUANTITY, 1, 100.0, 100.0, SEVERITY)
    assert raised.detail == {"part": "outbox", "outbox": PATH,
                             "detail": "OutboxFull: the disk is full"}
    assert d.full(2000, 101.0, "again") is None and d.full(3000, 102.0, "again") is None
    assert kinds(d) == ["raised"]  # one raise for the episode, still waiting
    assert d.state() == {"active": {"outbox": {"since": 100.0, "raised_at": 100.0,
                                               "events": 3}}}
    d.flushed(1)
    assert d.pending == [] and d.active


def test_the_clear_waits_for_the_quiet_period_and_a_store_that_went_through():
    d = DiskAlarm("gw1", PATH, clear_after_s=60)
    d.full(1000, 100.0, "x")
    d.flushed(1)
    d.full(5000, 104.0, "x")  # the disk stays full a while
    d.wrote()
    assert d.check(64_999, 164.0) is None  # 60 s after the last full disk: not yet
    d.full(65_000, 165.0, "x")  # full again after that write
    assert d.check(125_000, 225.0) is None  # quiet long enough, but no store went through
    d.wrote()
    cleared = d.check(125_000, 225.0)
    assert (cleared.kind, cleared.value, cleared.since, cleared.at) == ("cleared", 3, 100.0, 225.0)
    assert cleared.detail["detail"] == "stores go through again"
    assert d.active == {} and kinds(d) == ["cleared"] and d.check(200_000, 300.0) is None


def test_room_on_the_filesystem_also_ends_the_episode_after_the_quiet_period():
    d = DiskAlarm("gw1", PATH, clear_after_s=10)
    d.full(0, None, "x")  # wall time not trusted: times are None
    assert d.check(5000, None, room=True) is None
    cleared = d.check(10_000, None, room=True)
    assert cleared.kind == "cleared" and cleared.since is None and cleared.at is None
    assert cleared.detail["detail"] == "the disk has room again"


def test_a_clear_never_stored_is_taken_back_when_the_disk_fills_again():
    d = DiskAlarm("gw1", PATH, clear_after_s=10)
    d.full(0, 100.0, "x")
    d.flushed(1)  # the raise reached the outbox
    d.wrote()
    d.check(10_000, 110.0)
    assert kinds(d) == ["cleared"]
    assert d.full(11_000, 111.0, "x") is None  # the platform never saw the clear
    assert d.pending == [] and d.active["outbox"]["since"] == 100.0
    assert d.active["outbox"]["events"] == 2
    # once stored, a clear stands: the next full disk is a new episode
    d.wrote()
    d.check(30_000, 130.0)
    d.flushed(1)
    again = d.full(31_000, 131.0, "x")
    assert again.kind == "raised" and again.since == 131.0 and kinds(d) == ["raised"]


def test_never_more_than_two_events_wait_while_nothing_can_be_stored():
    d = DiskAlarm("gw1", PATH, clear_after_s=1)
    for i in range(50):  # raise, clear by room, full again ... and nothing is ever stored
        d.full(i * 2000, 100.0 + i, "x")
        d.check(i * 2000 + 1500, 101.0 + i, room=True)
        assert len(d.pending) <= 2
    assert kinds(d) == ["raised", "cleared"]


def test_a_standing_alarm_survives_a_restart_and_bad_state_is_ignored():
    d = DiskAlarm("gw1", PATH, clear_after_s=30)
    d.full(0, 100.0, "x")
    again = DiskAlarm("gw1", PATH, clear_after_s=30, state=d.state())  # a new process
    assert again.check(29_999, 200.0, room=True) is None  # running time starts afresh
    again.wrote()
    cleared = again.check(30_000, 200.0)
    assert cleared.kind == "cleared" and cleared.since == 100.0 and cleared.value == 1
    for junk in (None, "x", {"active": 3}, {"active": {"outbox": 1}}, {"active": []}):
        assert DiskAlarm("gw1", PATH, state=junk).active == {}
    for bad in (-1, True, "60", None):
        with pytest.raises(ValueError, match="clear_after_s"):
            DiskAlarm("gw1", PATH, clear_after_s=bad)


def test_which_outbox_errors_are_a_full_disk():
    assert is_disk_full(OutboxFull("the disk is full and no unsent row is left to drop"))
    full = OutboxError("applying bounds failed")
    full.__cause__ = sqlite3.OperationalError("database or disk is full")
    assert is_disk_full(full)
    other = OutboxError("storing failed")
    other.__cause__ = sqlite3.OperationalError("disk I/O error")
    assert not is_disk_full(other) and not is_disk_full(OutboxError("closed"))
