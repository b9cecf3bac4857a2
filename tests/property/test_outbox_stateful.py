"""The real SQLite outbox (gateway/outbox.py) on a temporary file, driven by Hypothesis against a
plain model: puts with duplicates, forwards that fail (take, release), forwards that succeed
(take, ack), rows held in flight, crash and reopen (the connection abandoned, in-flight state
lost), a full disk (the file capped with max_page_count) and its end, time passing, and gap
markers forwarded.

Invariants, checked after every step against the rows in the file: every key the outbox
accepted (``put_many`` returned it, so the pipeline acked the node) is stored, delivered, or
dropped by the policy -- and every drop is counted (per lane) and inside a gap marker's range
for its device (markers' counts add up to the drops); drops take the oldest rows of a lane
first and never a row in flight, and alarms only once no routine row is left to
drop; a put refused with ``OutboxFull`` drops nothing (drops happen only with the batch stored); no row is both delivered and still stored, or handed out twice at once; the tracked size
stays within the bound (plus what was in flight when it was last enforced), and no row outlives
the age bound."""

import shutil
import sqlite3
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway import outbox_policy as policy
from gateway.outbox import Outbox, OutboxFull, OutboxRecord
from gateway.outbox_policy import ALARM, LANES, ROUTINE
from simulators.clock import VirtualClock

MAX_BYTES = 24_000   # a few dozen rows: big enough that a capped file fills before the bound
MAX_AGE_S = 600
DEVICES = ("aa", "bb", "cc")
FILE_LIMIT = 2 * MAX_BYTES + 64 * 1024  # the bound keeps the file small too


def record(seq, pad):
    return {"seq": seq, "t": None, "values": [["co2_ppm", 400 + seq, "ok"]], "pad": "x" * pad}


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="civicedge-outbox-")
        self.path = self.dir + "/outbox.db"
        self.clock = VirtualClock()
        self.abandoned = []
        self.ob = Outbox(self.path, MAX_BYTES, MAX_AGE_S, self.clock)
        self.epoch = dict.fromkeys(DEVICES, 1)
        self.next_seq = dict.fromkeys(DEVICES, 0)
        self.order = 0
        self.stored = {}       # key -> (lane, order, nbytes): accepted, not delivered, not dropped
        self.dropped = {}      # key -> lane
        self.delivered = set()
        self.held = {}         # row id -> key: in flight with the "forwarder"
        self.markers_sent = []  # gap markers acked upstream
        self.duplicates = 0
        self.slack = 0         # bytes in flight when the bounds were last enforced
        self.enforced = True   # the last step applied the bounds (put / enforce / open)
        self.capped = False

    def teardown(self):
        for ob in self.abandoned + [self.ob]:
            try:
                ob.close()
            except sqlite3.Error:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------
    def rows_in_file(self):
        with sqlite3.connect(self.path) as db:
            return {(d, e, s): (lane, rx) for d, e, s, lane, rx in db.execute(
                "SELECT device_id, boot_epoch, seq, lane, rx_ms FROM rows")}

    def held_bytes(self):
        return sum(self.stored[k][2] for k in self.held.values())

    def reconcile(self, may_drop, resent=()):
        """Move what the policy dropped in this step from ``stored`` to ``dropped``, checking
        the policy's choices. Rows in flight are never dropped; neither are rows the batch
        being put resends, when the disk is full (dropping them would free nothing)."""
        in_file = self.rows_in_file()
        gone = [k for k in self.stored if k not in in_file]
        assert may_drop or not gone, "rows vanished outside put/enforce: %r" % gone
        held = set(self.held.values())
        assert not held & set(gone), "a row in flight was dropped"
        held |= set(resent)
        for lane in LANES:
            lost = [self.stored[k][1] for k in gone if self.stored[k][0] == lane]
            kept = [o for k, (ln, o, _) in self.stored.items()
                    if ln == lane and k in in_file and k not in held]
            if lost and kept:
                assert max(lost) < min(kept), "a %s row was dropped before an older one" % lane
        for k in gone:
            self.dropped[k] = self.stored.pop(k)[0]
        assert set(in_file) == set(self.stored), "stored rows differ from the model"
        return gone

    def put_batch(self, batch):
        before = dict(self.stored)
        stats_before = self.ob.stats()
        try:
            result = self.ob.put_many(batch)
        except OutboxFull:
            result = None
        expected_new, expected_dup, seen = [], [], set()
        for r in batch:
            key = (r.device_id, r.boot_epoch, r.seq)
            (expected_dup if key in before or key in seen else expected_new).append(key)
            seen.add(key)
        if result is not None:
            assert result.new == expected_new and result.duplicates == expected_dup
            self.duplicates += len(expected_dup)
            for r in batch:
                key = (r.device_id, r.boot_epoch, r.seq)
                if key in result.new:
                    self.order += 1
                    self.stored[key] = (r.lane, self.order, policy.prepare([r])[1])
        full = self.ob.stats().disk_full_events > stats_before.disk_full_events
        resent = set(expected_dup) if full else ()
        gone = self.reconcile(may_drop=True, resent=resent)
        if result is None:
            assert not set(expected_new) & set(self.rows_in_file()), "OutboxFull stored rows"
            assert not gone, "OutboxFull dropped rows for a batch it did not store"
        else:
            assert result.dropped == len(gone)
        self.check_alarms_last(before, gone, stats_before, resent)
        self.enforced, self.slack = True, self.held_bytes()

    def check_alarms_last(self, before, gone, stats_before, resent=()):
        """Alarms go only when no routine row that was there (and not in flight) is left --
        for the size and disk-full bounds; the age bound expires both lanes."""
        if self.ob.stats().dropped_by_reason[policy.AGE] != stats_before.dropped_by_reason[
                policy.AGE]:
            return
        if any(self.dropped[k] == ALARM for k in gone):
            held = set(self.held.values()) | set(resent)
            left = [k for k, v in before.items()
                    if v[0] == ROUTINE and k in self.stored and k not in held]
            assert not left, "an alarm was dropped while routine rows %r were kept" % left

    # -- rules -------------------------------------------------------------------------------
    @rule(data=st.data(), n=st.integers(1, 8))
    def put(self, data, n):
        self.put_drawn(data, n)

    @rule(data=st.data(), n=st.integers(4, 12))
    def put_more(self, data, n):  # puts are most of what a gateway does: weigh them so
        self.put_drawn(data, n)

    def put_drawn(self, data, n):
        batch = []
        for _ in range(n):
            if self.stored and data.draw(st.integers(0, 4)) == 0:
                key = data.draw(st.sampled_from(sorted(self.stored)))   # a resent record
            else:
                dev = data.draw(st.sampled_from(DEVICES))
                if data.draw(st.integers(0, 9)) == 0:
                    self.epoch[dev] += 1                                # the node rebooted
                    self.next_seq[dev] = 0
                key = (dev, self.epoch[dev], self.next_seq[dev])
                self.next_seq[dev] += 1
            lane = data.draw(st.sampled_from((ALARM, ROUTINE, ROUTINE, ROUTINE)))
            batch.append(OutboxRecord(key[0], key[1], key[2],
                                      record(key[2], data.draw(st.integers(0, 1500))), lane))
        self.put_batch(batch)

    @rule(n=st.integers(1, 6))
    def forward_fails(self, n):
        rows = self.take(n)
        assert self.ob.release([r.row_id for r in rows]) == len(rows)
        self.reconcile(may_drop=False)
        self.enforced = False

    @rule(n=st.integers(1, 6))
    def forward_ok(self, n):
        rows = self.take(n)
        assert self.ob.ack([r.row_id for r in rows]) == len(rows)
        for r in rows:
            key = (r.device_id, r.boot_epoch, r.seq)
            del self.stored[key]
            self.delivered.add(key)
        self.reconcile(may_drop=False)
        self.enforced = False

    @rule(n=st.integers(1, 4))
    def hold(self, n):
        for r in self.take(n):
            self.held[r.row_id] = (r.device_id, r.boot_epoch, r.seq)
        self.reconcile(may_drop=False)
        self.enforced = False

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def ack_held(self, data):
        ids = data.draw(st.lists(st.sampled_from(sorted(self.held)), unique=True, min_size=1))
        assert self.ob.ack(ids) == len(ids)
        for i in ids:
            key = self.held.pop(i)
            del self.stored[key]
            self.delivered.add(key)
        self.reconcile(may_drop=False)
        self.enforced = False

    @precondition(lambda self: self.held)
    @rule()
    def release_held(self):
        assert self.ob.release(list(self.held)) == len(self.held)
        self.held.clear()
        self.reconcile(may_drop=False)
        self.enforced = False

    @rule()
    def crash_and_reopen(self):
        # The process dies: no close(), the in-flight state in memory is gone; a new process
        # opens the same file (integrity_check, bounds applied at once).
        self.abandoned.append(self.ob)
        stats_before = self.ob.stats()
        before = dict(self.stored)
        self.ob = Outbox(self.path, MAX_BYTES, MAX_AGE_S, self.clock)
        self.held.clear()
        self.capped = False
        gone = self.reconcile(may_drop=True)
        self.check_alarms_last(before, gone, stats_before)
        self.enforced, self.slack = True, 0

    @precondition(lambda self: not self.capped)
    @rule()
    def disk_full(self):
        self.ob.cap_file_bytes(0)  # the file may not grow: the next page needed is SQLITE_FULL
        self.capped = True

    @precondition(lambda self: self.capped)
    @rule()
    def disk_freed(self):
        self.ob.cap_file_bytes(1 << 40)
        self.capped = False

    @rule(seconds=st.sampled_from([1, 60, 200, 599, 601]),
          wall_jump_s=st.sampled_from([0, 0, 86400, -86400]))
    def time_passes(self, seconds, wall_jump_s):
        self.clock.advance_s(seconds)
        self.clock.jump_wall(wall_jump_s)   # wall time never expires anything
        before, stats_before = dict(self.stored), self.ob.stats()
        self.ob.enforce()
        gone = self.reconcile(may_drop=True)
        self.check_alarms_last(before, gone, stats_before)
        self.enforced, self.slack = True, self.held_bytes()

    @rule()
    def forward_gaps(self):
        markers = self.ob.take_gaps()
        assert self.ob.take_gaps() == []
        assert self.ob.ack_gaps([m.gap_id for m in markers]) == len(markers)
        self.markers_sent.extend(markers)

    @rule()
    def everything_unsent_can_be_taken(self):
        rows = self.take(10_000)
        assert {(r.device_id, r.boot_epoch, r.seq) for r in rows} == \
            set(self.stored) - set(self.held.values())
        assert self.ob.release([r.row_id for r in rows]) == len(rows)
        self.enforced = False

    def take(self, n):
        rows = self.ob.take(n)
        keys = [(r.device_id, r.boot_epoch, r.seq) for r in rows]
        held = set(self.held.values())
        assert len(set(keys)) == len(keys), "a row handed out twice"
        for k in keys:
            assert k in self.stored and k not in held and k not in self.delivered
        alarms_first = [r.lane for r in rows]
        assert alarms_first == sorted(alarms_first)  # "alarm" < "routine"
        return rows

    # -- invariants --------------------------------------------------------------------------
    @invariant()
    def every_drop_is_counted_and_marked(self):
        st_ = self.ob.stats()
        assert st_.dropped == {lane: sum(1 for v in self.dropped.values() if v == lane)
                               for lane in LANES}
        markers = self.ob.gaps() + self.markers_sent
        assert sum(m.dropped for m in markers) == len(self.dropped)
        assert sum(m.alarms for m in markers) == st_.dropped[ALARM]
        for (dev, epoch, seq) in self.dropped:
            assert any(m.device_id == dev and (m.first_epoch, m.first_seq) <= (epoch, seq)
                       <= (m.last_epoch, m.last_seq) for m in markers), \
                "drop of %r is in no gap marker" % ((dev, epoch, seq),)

    @invariant()
    def counters_match_the_rows(self):
        st_ = self.ob.stats()
        assert st_.rows == {lane: sum(1 for v in self.stored.values() if v[0] == lane)
                            for lane in LANES}
        assert st_.bytes == {lane: sum(v[2] for v in self.stored.values() if v[0] == lane)
                             for lane in LANES}
        assert st_.duplicates == self.duplicates
        assert st_.in_flight == len(self.held)

    @invariant()
    def delivered_rows_are_not_pending(self):
        assert not self.delivered & set(self.stored)
        assert not self.delivered & set(self.rows_in_file())

    @invariant()
    def size_and_age_stay_bounded(self):
        st_ = self.ob.stats()
        assert st_.total_bytes <= MAX_BYTES + self.slack
        assert st_.file_bytes <= FILE_LIMIT + 2 * self.slack
        if self.enforced and st_.oldest_age_s is not None:
            rows = self.rows_in_file()
            held = set(self.held.values())
            oldest_rx = min(rx for _, rx in rows.values())
            for key, (_, rx) in rows.items():
                if key not in held:
                    assert st_.oldest_age_s * 1000 - (rx - oldest_rx) <= MAX_AGE_S * 1000


OutboxMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestOutboxStateful = OutboxMachine.TestCase
