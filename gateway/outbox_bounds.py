"""The outbox's bounds carried out: a mixin of ``gateway.outbox.Outbox``.

The pure policy (``gateway.outbox_policy``) decides which rows to drop; these methods feed it
the stored rows, oldest first (``_stream``), and carry out what it decides in the open
transaction: the delete, the counters, the gap markers (``_drop``), for the size and age
bounds (``_enforce``) and after ``SQLITE_FULL`` (``_free_for_full``, inside the transaction
that then stores the batch, so its drops roll back with a batch that still does not fit). ``Outbox`` supplies
``_db``, ``_delta``, ``_value``, ``_now_ms``, ``_begin``/``_commit``/``_rollback``, the
history methods, ``_write_markers`` (``gateway.outbox_gaps``: the markers' one writer),
``_in_flight``, ``_gaps_in_flight``, ``_mem_lock`` and ``_drop_seq`` (odd
from a drop until its transaction ends: a ``take`` that read without the lock meanwhile
reads again with it, so a row is never both handed out and dropped).
"""

from gateway import outbox_policy as policy
from gateway.outbox_policy import LANES, RowSummary
from gateway.outbox_sql import _LANE_FROM


class Bounds:
    def _count_gone(self, rows, reason=None):
        counts, nbytes = policy.count_by_lane(rows), policy.bytes_by_lane(rows)
        for lane in LANES:
            self._delta["rows_" + lane] -= counts[lane]
            self._delta["bytes_" + lane] -= nbytes[lane]
            if reason:
                self._delta["dropped_" + lane] += counts[lane]
        if reason:
            self._delta["dropped_" + reason] += len(rows)

    def _summaries(self, where, params):
        """``RowSummary`` of the rows selected by ``where`` (SQL from FROM on)."""
        return [RowSummary(r[0], r[1], r[2], r[3], r[4], policy.row_nbytes(r[5], r[1]), r[6])
                for r in self._db.execute("SELECT id, device_id, boot_epoch, seq, lane, "
                                          "length(payload), rx_ms " + where, params)]

    def _stream(self, lane, size=1):
        """``RowSummary`` of ``lane``, oldest first, in batches of ``size`` rows growing to
        1024 (the age check usually needs only the oldest row)."""
        after = 0
        while True:
            batch = self._summaries(_LANE_FROM[lane] + " ORDER BY id LIMIT ?", (after, size))
            yield from batch
            if len(batch) < size:
                return
            after, size = batch[-1].row_id, min(size * 16, 1024)

    def _drop(self, rows, reason):
        """Delete ``rows`` in the open transaction, count them, and mark the gaps; returns
        the rows dropped: those of ``rows`` a ``take`` did not hand out since the plan."""
        with self._mem_lock:  # from now until the transaction ends, take() uses the lock
            if not self._drop_seq & 1:
                self._drop_seq += 1
            rows = [r for r in rows if r.row_id not in self._in_flight]
            in_flight_gaps = set(self._gaps_in_flight)
        if not rows:
            return rows
        self._db.executemany("DELETE FROM rows WHERE id = ?", [(r.row_id,) for r in rows])
        self._count_gone(rows, reason)
        self._write_markers(in_flight_gaps, policy.summarize_drops(rows))
        return rows

    def _enforce(self):
        """Apply both bounds in the open transaction; returns the rows dropped."""
        self._history_trim()  # delivered rows: a trim, not a drop (not counted as one)
        dropped = self._drop_aged()
        while True:
            total = self._total_bytes()
            excess = policy.excess_bytes(total, self.max_bytes)
            guess = min(excess * sum(self._value("rows_" + ln) for ln in LANES)
                        // max(total, 1) + 1, 1024)  # rows to read first
            rows, _ = policy.plan_size_drops(excess, lambda ln: self._stream(ln, guess),
                                             self._in_flight)
            if not rows:
                return dropped
            dropped += len(self._drop(rows, policy.SIZE))

    def _drop_aged(self):
        """The age bound, in the open transaction; returns the rows dropped. ``_rx_floor_ms``
        is at most every stored row's ``rx_ms`` (the running time it was stored at): the
        oldest row of each lane as last read, or the time of that read for an empty lane.
        Rows stored since have later times and deletes only raise the minimum, so while
        the cutoff is at or below the floor no row can be past the bound and no lane is
        read (``_rollback`` forgets the floor: an undone drop brings older rows back)."""
        now = self._now_ms()
        cutoff, dropped = policy.age_cutoff_ms(now, self.max_age_s), 0
        if self._rx_floor_ms is not None and cutoff <= self._rx_floor_ms:
            return 0
        oldest = []  # now, and each lane's first row as the plan reads it

        def stream(lane):
            return _noting_first(self._stream(lane), oldest)
        while True:
            oldest[:] = [now]
            rows = policy.plan_age_drops(cutoff, stream, self._in_flight)
            if rows:
                dropped += len(self._drop(rows, policy.AGE))
            if len(rows) < policy.CHUNK_ROWS:  # the plan read the first row of every lane
                self._rx_floor_ms = min(oldest)
                return dropped

    def _free_for_full(self, target, keep):
        """After SQLITE_FULL, in the open transaction (the one that then stores the batch):
        trim delivered history first, then drop unsent rows per policy, sparing ``keep``,
        only for what the history did not free of ``target`` bytes. Counts the disk-full
        event; returns the rows dropped."""
        self._delta["disk_full"] += 1
        history_target = policy.full_split(target, 0)[0]
        need = policy.full_split(target, self._history_free(history_target))[1]
        dropped = 0
        while need > 0:
            rows, _ = policy.plan_size_drops(need, self._stream, keep)
            if not rows:
                break
            gone = self._drop(rows, policy.FULL)
            keep.update(r.row_id for r in rows)  # dropped, or handed out since the plan
            need, dropped = need - sum(r.nbytes for r in gone), dropped + len(gone)
        return dropped


def _noting_first(rows, firsts):
    """``rows`` (``RowSummary``s, an iterator), the first one's ``rx_ms`` appended to
    ``firsts`` when it is read."""
    for row in rows:
        firsts.append(row.rx_ms)
        yield row
        break
    yield from rows
