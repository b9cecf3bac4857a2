"""The real flash log and node state (firmware/app/store.py, state.py) on a temporary directory,
driven by Hypothesis against a plain in-memory model: appends, sends with partial acks, forged /
stale / premature acks, crashes with and without a new boot, torn appends, and filling past the
bound. Invariants: nothing unacked is lost except by the bound's policy, and then exactly
counted by gap records whose ranges cover the lost keys; keys strictly increase and never
repeat; the ack pointer is what was acked; the size stays within the bound."""

import os
import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from firmware.app.state import NodeState
from firmware.app.store import RecordLog

MAX_BYTES = 3000
SEGMENT_BYTES = 600


def reading(value):
    return {"t": None, "values": [["co2_ppm", value, "ok"]]}


def key_of(pair):
    return (pair[0], pair[1]["seq"])


class RecordLogMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="civicedge-log-")
        self.unacked = []  # data keys appended and not acked, oldest first (the model)
        self.payloads = {}  # data key -> record as appended (with seq)
        self.gaps_seen = {}  # gap key -> gap record (held or delivered)
        self.delivered_gaps = []  # gap records acked
        self.acked = None  # model ack pointer
        self.lost = []  # data keys the bound dropped
        self.all_keys = set()
        self.last_key = None
        self.sent = None
        self.epoch = 0
        self.torn = 0
        self.rejected = self.stale = 0
        self._open(boot=True)

    def teardown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------------
    def _open(self, boot):
        self.state = NodeState(self.root)
        self.log = RecordLog(self.root, MAX_BYTES, state=self.state, segment_bytes=SEGMENT_BYTES)
        self.rejected = self.stale = 0  # in-memory counters restart with the object
        self.sent = None
        if boot:
            before = self.epoch
            self.epoch = self.state.boot("power_on", self.log.max_epoch())
            assert self.epoch > before
        assert self.state.boot_epoch >= self.epoch  # never older than before

    def _new_key(self, key):
        assert key not in self.all_keys, key
        assert self.last_key is None or key > self.last_key, (key, self.last_key)
        self.all_keys.add(key)
        self.last_key = key

    def _appended(self, records, seqs):
        for rec, seq in zip(records, seqs):
            key = (self.state.boot_epoch, seq)
            self._new_key(key)
            self.unacked.append(key)
            self.payloads[key] = dict(rec, seq=seq)

    def _held(self):
        return self.log.pending(10 ** 6, mark_sent=False)

    # -- rules -----------------------------------------------------------------------------------
    @rule(n=st.integers(1, 3), value=st.integers(0, 5000))
    def append(self, n, value):
        records = [reading(value + i) for i in range(n)]
        seqs = [self.log.append(records[0])] if n == 1 else self.log.append_all(records)
        self._appended(records, seqs)

    @rule()
    def fill_past_bound(self):
        before = self.log.stats()["dropped"]
        for i in range(200):
            rec = reading(i)
            self._appended([rec], [self.log.append(rec)])
            if self.log.stats()["dropped"] > before:
                return
        raise AssertionError("200 appends never reached the bound")

    @rule(limit=st.integers(1, 40))
    def send_only(self, limit):
        got = self.log.pending(limit)
        if got and (self.sent is None or key_of(got[-1]) > self.sent):
            self.sent = key_of(got[-1])

    @rule(limit=st.integers(1, 40), pick=st.integers(0, 10 ** 6))
    def send_and_ack_some(self, limit, pick):
        got = self.log.pending(limit)
        if not got:
            return
        if self.sent is None or key_of(got[-1]) > self.sent:
            self.sent = key_of(got[-1])
        i = pick % len(got)
        assert self.log.ack_through(*key_of(got[i])) == i + 1
        for epoch, rec in got[:i + 1]:
            k = (epoch, rec["seq"])
            if rec.get("kind") == "gap":
                self.delivered_gaps.append(dict(rec, epoch=epoch))
            else:
                assert self.unacked[0] == k  # acks take the oldest unacked, in order
                self.unacked.pop(0)
        self.acked = key_of(got[i])

    @rule(kind=st.sampled_from(["beyond_sent", "foreign_epoch", "stale"]), back=st.integers(0, 5))
    def ack_forged_or_stale(self, kind, back):
        held = self._held()
        stats = self.log.stats()
        key = None
        if kind == "stale" and self.acked is not None:
            key = (self.acked[0], max(0, self.acked[1] - back))
        elif kind == "foreign_epoch" and self.sent is not None:
            lo = self.acked[0] + 1 if self.acked is not None else 0
            held_epochs = set(e for e, _ in held)
            free = [e for e in range(lo, self.sent[0]) if e not in held_epochs]
            if free:
                key = (free[back % len(free)], back)
        if key is None:  # beyond what was sent (or nothing sent at all)
            base = self.sent or self.last_key or (self.epoch, 0)
            key = (base[0], base[1] + 1 + back)
            if self.acked is not None and key <= self.acked:
                key = (self.acked[0] + 1, 0)
        assert self.log.ack_through(*key) == 0
        after = self.log.stats()
        if self.acked is not None and key <= self.acked:
            self.stale += 1
        else:
            self.rejected += 1
        assert (after["acks_stale"], after["acks_rejected"]) == (self.stale, self.rejected)
        assert self._held() == held and after["acked"] == stats["acked"]

    @rule(boot=st.booleans())
    def crash_and_reopen(self, boot):
        held = self._held()
        del self.log, self.state  # a cut between operations: only the flash is left
        self._open(boot)
        assert self._held() == held

    @rule(cut=st.integers(1, 10 ** 6))
    def torn_append_then_boot(self, cut):
        """A cut in the middle of an append on a filesystem without atomic close: part of the
        entry reaches the file; the append never returned, so the record was never logged."""
        dropped = self.log.stats()["dropped"]
        bytes_before = self.log.stats()["bytes"]
        rec = reading(cut % 5000)
        seq = self.log.append(rec)
        key = (self.state.boot_epoch, seq)
        self._new_key(key)
        size = self.log.stats()["bytes"] - bytes_before
        segs = sorted(n for n in os.listdir(os.path.join(self.root, "log")) if n.endswith(".seg"))
        path = os.path.join(self.root, "log", segs[-1])
        if self.log.stats()["dropped"] != dropped or os.path.getsize(path) < size:
            self.unacked.append(key)  # the append took a drop or a new segment: keep it whole
            self.payloads[key] = dict(rec, seq=seq)
            return
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 1 - cut % (size - 1))
        del self.log, self.state
        self._open(boot=True)
        self.torn += 1

    # -- invariants -----------------------------------------------------------------------------
    @invariant()
    def nothing_lost_but_by_the_bound_and_exactly_counted(self):
        held = self._held()
        keys = [key_of(p) for p in held]
        assert keys == sorted(set(keys))  # strictly increasing
        data = []
        for (epoch, rec), k in zip(held, keys):
            if rec.get("kind") == "gap":
                if k not in self.gaps_seen:  # a new gap record: its own, never-used key
                    assert k not in self.all_keys, k
                    self.all_keys.add(k)
                    self.gaps_seen[k] = rec
            else:
                assert rec == self.payloads[k]
                data.append(k)
        # what the log holds is the model's unacked records minus a lost oldest prefix
        n_lost = len(self.unacked) - len(data)
        assert n_lost >= 0 and self.unacked[n_lost:] == data, (self.unacked, data)
        self.lost.extend(self.unacked[:n_lost])
        del self.unacked[:n_lost]
        # a gap record neither held nor acked was merged into a later one: its key is lost too
        acked_gaps = set((r["epoch"], r["seq"]) for r in self.delivered_gaps)
        lost_gaps = [k for k in self.gaps_seen if k not in set(keys) and k not in acked_gaps]
        stats = self.log.stats()
        assert stats["dropped"] == len(self.lost) + len(lost_gaps)
        gaps = [r for _, r in held if r.get("kind") == "gap"] + self.delivered_gaps
        assert sum(g["dropped"] for g in gaps) == len(self.lost) + len(lost_gaps)
        for k in self.lost + lost_gaps:
            assert any((g["first_epoch"], g["first_seq"]) <= k <= (g["last_epoch"], g["last_seq"])
                       for g in gaps), k
        assert stats["bytes"] <= MAX_BYTES
        assert stats["pending"] == len(held)
        assert stats["acked"] == (None if self.acked is None else list(self.acked))
        assert stats["torn"] == self.torn


RecordLogMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestRecordLogStateful = RecordLogMachine.TestCase
