"""The forwarding side of the outbox: a mixin of ``gateway.outbox.Outbox``.

``take`` hands rows out (alarms first, oldest first, released rows before never-sent ones,
through a per-lane id cursor and ``LIMIT`` so the backlog is never loaded); they are *in
flight* (memory only) until ``ack`` deletes them in one transaction (after the PUBACK, with
the delivered copy of ``gateway.outbox_history``) or ``release``/``release_all`` puts them
back. ``Outbox`` supplies ``_lock``, ``_db``, ``path``, ``_begin``/``_commit``/``_rollback``,
``_delta``, ``_in_flight``, ``_released``, ``_cursor``, ``_gaps_in_flight`` and the history
methods (``history_on``, ``_history_copy``, ``_history_count``).
"""

import heapq
import json
import sqlite3

from gateway import outbox_policy as policy
from gateway.outbox_policy import ALARM, LANES, ROUTINE, OutboxRow
from gateway.outbox_sql import OutboxError, _COLS, _TAKE, _chunks, _is_full, _marks

_new = tuple.__new__  # OutboxRow from a tuple without the NamedTuple constructor's cost
# ack: per lane, the rows, payload bytes and device id bytes (``policy.row_nbytes`` summed)
_ACK_SUMS = ("SELECT lane, count(*), sum(length(payload)), sum(length(CAST(device_id AS "
             "BLOB))) %s GROUP BY lane")
_ACK_WHERE = "FROM rows WHERE id IN (SELECT value FROM json_each(?))"  # ids: a JSON array


class Forwarding:
    def take(self, limit, lane_order=(ALARM, ROUTINE), raw=False):
        """Up to ``limit`` unsent rows (``OutboxRow``), lane by lane in ``lane_order``, oldest
        first within a lane (released rows before never-sent ones), reading no more than
        that; in flight until ``ack`` or ``release``. With ``raw``, each row's ``record`` is
        its stored JSON text, not decoded (``gateway.upstream.encode_rows`` takes either).
        Raises ``ValueError`` for bad args."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError("limit must be an int >= 0, got %r" % (limit,))
        for lane in lane_order:
            if lane not in LANES:
                raise ValueError("lane_order: %r is not one of %s" % (lane, ", ".join(LANES)))
        out = []
        with self._lock:
            for lane in lane_order:
                heap = self._released[lane]
                while heap and len(out) < limit:  # a released row may since have been dropped
                    ids = [heapq.heappop(heap) for _ in range(min(len(heap), limit - len(out)))]
                    for chunk in _chunks(ids):
                        out += self._db.execute("SELECT %s FROM rows WHERE id IN (%s) ORDER BY "
                                                "id" % (_COLS, _marks(len(chunk))), chunk)
                if len(out) < limit:
                    got = self._db.execute(_TAKE[lane], (self._cursor[lane], limit - len(out)))
                    got = got.fetchall()
                    if got:
                        self._cursor[lane] = got[-1][0]
                    out += got
            if raw:  # the selected row is OutboxRow's fields, with the text as record
                rows = [_new(OutboxRow, r) for r in out]
            else:  # one json.loads for the batch: the per-call overhead was half the decode
                try:
                    records = json.loads("[%s]" % ",".join([r[7] for r in out])) if out else []
                except (TypeError, ValueError):
                    records = None
                if records is None or len(records) != len(out):  # a row that is not one
                    records = [json.loads(r[7]) for r in out]  # JSON text raises alone
                rows = [_new(OutboxRow, (*r[:7], rec)) for r, rec in zip(out, records)]
            for r in out:
                self._in_flight[r[0]] = r[4]
        return rows

    def ack(self, row_ids):
        """Delete rows the upstream acknowledged, in one transaction; returns how many were
        stored. Raises ``OutboxError`` if that fails (the rows stay, and go again)."""
        ids = sorted(set(row_ids))
        with self._lock:
            keep = self.history_on  # the delivered rows' copy for export (outbox_history)
            while True:
                try:
                    self._begin()
                    gone = dict.fromkeys(LANES, (0, 0, 0))  # lane -> rows, payload, id bytes
                    # the ids as one JSON parameter: three statements however many there are
                    params = (json.dumps(ids),)
                    for lane, n, payload, dev in self._db.execute(_ACK_SUMS % _ACK_WHERE,
                                                                  params):
                        gone[lane] = (n, payload, dev)
                    self._history_copy(_ACK_WHERE, params, keep)
                    self._db.execute("DELETE " + _ACK_WHERE, params)
                    n = sum(g[0] for g in gone.values())
                    self._history_count(n, sum(g[1] + g[2] for g in gone.values()), keep)
                    for lane, (count, payload, dev) in gone.items():  # as _count_gone does
                        self._delta["rows_" + lane] -= count
                        self._delta["bytes_" + lane] -= (payload + 2 * dev
                                                         + count * policy.ROW_OVERHEAD_BYTES)
                    self._commit()
                    break
                except sqlite3.Error as e:
                    self._rollback()
                    if keep and _is_full(e):  # a full disk must not stop delivery:
                        keep = False          # ack without the copy (counted)
                        continue
                    raise OutboxError("outbox %s: deleting %d acked rows failed (%s); they "
                                      "will be sent again" % (self.path, len(ids), e)) from e
            for i in ids:
                self._in_flight.pop(i, None)
            return n

    def release(self, row_ids):
        """Put in-flight rows back (the forward failed): ``take`` hands them out first.
        Ids not in flight are ignored; returns how many were released."""
        n = 0
        with self._lock:
            for i in row_ids:
                lane = self._in_flight.pop(i, None)
                if lane is not None:
                    heapq.heappush(self._released[lane], i)
                    n += 1
        return n

    def release_all(self):
        """Release every in-flight row and gap marker (a forwarder lost its connection)."""
        with self._lock:
            self._gaps_in_flight.clear()
            return self.release(list(self._in_flight))
