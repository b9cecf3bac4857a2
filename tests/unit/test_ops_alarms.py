"""The gateway's own alarms standing as notes of ``civicedge gateway status``
(gateway/ops_alarms.py): read from the state a real outbox stores (``links``, ``disk``), and
from the live metrics for a disk_full alarm the full disk kept the agent from storing."""

from gateway import ops, ops_alarms
from gateway.outbox import Outbox
from simulators.clock import VirtualClock

T0 = 1767571200  # 2026-01-05T00:00:00Z


def notes_for(tmp_path, state):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = str(tmp_path / "outbox.sqlite3")
    with Outbox(path, 1 << 20, 86400, VirtualClock()) as ob:
        ob.put_many([], state=state)
    db = ops.open_readonly(path)
    try:
        return ops_alarms.stored_notes(db, "/var/lib/civicedge", ops.iso)
    finally:
        db.close()


def test_standing_alarms_are_notes_and_cleared_ones_are_not(tmp_path):
    notes = notes_for(tmp_path, {
        "links": {"active": {"forwarder": {"since": T0, "raised_at": T0},
                             "source.chirpstack": {"since": T0, "raised_at": T0},
                             "source.elsewhere": {"since": T0, "raised_at": T0}}},
        "disk": {"active": {"outbox": {"since": T0, "raised_at": T0, "events": 3}}}})
    assert notes == [
        "ALARM tls_failure: forwarder keeps refusing TLS: check ca_file in [upstream.mqtt], the "
        "broker's certificate and the Pi's clock",
        "ALARM tls_failure: source.chirpstack keeps refusing TLS: check ca_file in "
        "[sources.chirpstack], the broker's certificate and the Pi's clock",
        "ALARM tls_failure: source.elsewhere keeps refusing TLS: check ca_file, the broker's "
        "certificate and the Pi's clock",
        "ALARM disk_full: SQLite found the outbox's disk full since 2026-01-05T00:00:00Z: free "
        "space on /var/lib/civicedge (meanwhile the oldest unsent readings are dropped, "
        "counted, or not taken)"]
    assert notes_for(tmp_path / "b", {"links": {"active": {}}, "disk": {"active": {}}}) == []
    assert notes_for(tmp_path / "c", {}) == []  # never stored: nothing standing


def test_an_unreadable_state_says_so(tmp_path):
    assert notes_for(tmp_path, {"disk": {"active": {"outbox": 5}}, "links": [1]}) == [
        "the stored links state is not readable", "the stored disk state is not readable"]


def test_a_live_alarm_not_stored_yet_is_a_note_once():
    live = {ops_alarms.DISK_LIVE: 1.0, "civicedge_received_total": 5.0}
    (note,) = ops_alarms.live_notes(live, [], "/var/lib/civicedge")
    assert note.startswith("ALARM disk_full: SQLite found the outbox's disk full (not stored yet)")
    assert ops_alarms.live_notes(live, [note], "/var/lib/civicedge") == []
    assert ops_alarms.live_notes({ops_alarms.DISK_LIVE: 0.0}, [], "/x") == []
    assert ops_alarms.live_notes(None, [], "/x") == []
