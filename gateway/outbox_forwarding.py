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
# ack's copy and delete: one id range (lo, hi) a statement, executemany'd; the ids of an ack
# are nearly always one or a few runs of consecutive ids, and a range is walked in id order
# instead of looked up id by id
_ACK_RANGE = "FROM rows WHERE id >= ? AND id <= ?"


_ID_BITS = 16  # an in-flight row's note: payload length, device id bytes, lane (1 bit)


def _note(row, id_bytes):
    """What ``ack`` deducts for a row read by ``take`` (``_COLS``), as one int: its payload
    length, its device id's UTF-8 bytes (cached in ``id_bytes``) and whether it is an alarm."""
    dev = row[1]
    n = id_bytes.get(dev)
    if n is None:
        if len(id_bytes) > 4096:  # a site has tens of devices
            id_bytes.clear()
        n = id_bytes[dev] = min(len(dev.encode("utf-8")), (1 << _ID_BITS) - 1)
    return (len(row[7]) << (_ID_BITS + 1)) | (n << 1) | (row[4] == ALARM)


def _in_flight_sums(flight, ids):
    """``{lane: (rows, payload chars, device id bytes)}`` of the in-flight rows ``ids`` (from
    their notes: what ``_ACK_SUMS`` would read), or None if one is not in flight or has a
    device id too long for its note."""
    gone = [[0, 0, 0], [0, 0, 0]]  # routine, alarm
    get, top, mask = flight.get, (1 << _ID_BITS) - 1, (1 << _ID_BITS) - 1
    try:
        for i in ids:
            note = get(i)
            g = gone[note & 1]
            dev = (note >> 1) & mask
            if dev == top:
                return None
            g[0] += 1
            g[1] += note >> (_ID_BITS + 1)
            g[2] += dev
    except TypeError:  # get() gave None
        return None
    return {ROUTINE: tuple(gone[0]), ALARM: tuple(gone[1])}


def id_ranges(ids):
    """``[(lo, hi), ...]``: the runs of consecutive ints in ``ids`` (sorted, no repeats), so
    that ``lo <= id <= hi`` over the runs selects exactly ``ids``."""
    out = []
    it = iter(ids)
    for lo in it:
        hi = lo
        for i in it:
            if i != hi + 1:
                out.append((lo, hi))
                lo = i
            hi = i
        out.append((lo, hi))
    return out


def _read_new(db, cursor, limit, lane_order):
    """Up to ``limit`` rows past each lane's ``cursor``, lane by lane, and each lane's new
    cursor (its last id read)."""
    out, last = [], {}
    for lane in lane_order:
        if len(out) < limit:
            got = db.execute(_TAKE[lane], (cursor[lane], limit - len(out))).fetchall()
            if got:
                last[lane] = got[-1][0]
            out += got
    return out, last


class Forwarding:
    def take(self, limit, lane_order=(ALARM, ROUTINE), raw=False):
        """Up to ``limit`` unsent rows (``OutboxRow``), lane by lane in ``lane_order``, oldest
        first within a lane (released rows before never-sent ones), reading no more than
        that; in flight until ``ack`` or ``release``. With ``raw``, each row's ``record`` is
        its stored JSON text, not decoded (``gateway.upstream.encode_rows`` takes either).
        Raises ``ValueError`` for bad args.

        New rows are read through the second connection without the lock (the lock's
        holder, an ``ack`` transaction or a ``put_many``, goes on meanwhile); they are marked
        in flight only if no transaction that drops rows overlapped the read (else the take
        is done again under the lock), so a row is never both handed out and dropped.
        Released rows are read under the lock."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError("limit must be an int >= 0, got %r" % (limit,))
        for lane in lane_order:
            if lane not in LANES:
                raise ValueError("lane_order: %r is not one of %s" % (lane, ", ".join(LANES)))
        with self._take_lock:
            out = None
            with self._mem_lock:
                seq, cursor = self._drop_seq, dict(self._cursor)
                quick = not (seq & 1 or self._reader is None or self._released_any(lane_order))
            if quick:  # without _lock: SQLite reads a committed snapshot
                out, last = _read_new(self._reader, cursor, limit, lane_order)
                with self._mem_lock:
                    if seq == self._drop_seq and not self._released_any(lane_order):
                        self._cursor.update(last)
                        self._mark(out)
                    else:
                        out = None
            if out is None:  # released rows, or a drop came in between: with the lock
                with self._lock:
                    out = self._take_locked(self._db, limit, lane_order)
        if raw:  # the selected row is OutboxRow's fields, with the text as record
            return [_new(OutboxRow, r) for r in out]
        try:  # one json.loads for the batch: the per-call overhead was half the decode
            records = json.loads("[%s]" % ",".join([r[7] for r in out])) if out else []
        except (TypeError, ValueError):
            records = None
        if records is None or len(records) != len(out):  # a row that is not one
            records = [json.loads(r[7]) for r in out]  # JSON text raises alone
        return [_new(OutboxRow, (*r[:7], rec)) for r, rec in zip(out, records)]

    def _released_any(self, lane_order):
        return any(self._released[lane] for lane in lane_order)

    def _take_locked(self, db, limit, lane_order):
        """``take``'s rows (tuples of ``_COLS``) read and marked in flight, ``_lock`` held."""
        out = []
        for lane in lane_order:
            heap = self._released[lane]
            while heap and len(out) < limit:  # a released row may since have been dropped
                with self._mem_lock:
                    ids = [heapq.heappop(heap) for _ in range(min(len(heap), limit - len(out)))]
                for chunk in _chunks(ids):
                    out += db.execute("SELECT %s FROM rows WHERE id IN (%s) ORDER BY id"
                                      % (_COLS, _marks(len(chunk))), chunk)
            if len(out) < limit:
                got = db.execute(_TAKE[lane], (self._cursor[lane], limit - len(out))).fetchall()
                if got:
                    self._cursor[lane] = got[-1][0]
                out += got
        with self._mem_lock:
            self._mark(out)
        return out

    def _mark(self, out):
        """Rows ``out`` (the tuples read) are in flight (``_mem_lock`` held), each with its
        note (``_note``: what ``ack`` deducts, in one small int)."""
        # ``_note`` inlined for a device already cached (a call a row was a third of take's
        # own time)
        ids, alarm, shift = self._id_bytes, ALARM, _ID_BITS + 1
        get = ids.get
        self._in_flight.update([
            (r[0], _note(r, ids) if (n := get(r[1])) is None
             else (len(r[7]) << shift) | (n << 1) | (r[4] == alarm)) for r in out])

    def ack(self, row_ids):
        """Delete rows the upstream acknowledged, in one transaction; returns how many were
        stored. Raises ``OutboxError`` if that fails (the rows stay, and go again)."""
        ids = sorted(set(row_ids))
        with self._lock:
            keep = self.history_on  # the delivered rows' copy for export (outbox_history)
            with self._mem_lock:  # None: some ids are not in flight
                gone = _in_flight_sums(self._in_flight, ids)
            ranges = id_ranges(ids)
            while True:
                try:
                    self._begin()
                    if gone is None:  # lane -> rows, payload, id bytes, as the rows say
                        gone = dict.fromkeys(LANES, (0, 0, 0))
                        for lane, n, payload, dev in self._db.execute(_ACK_SUMS % _ACK_WHERE,
                                                                      (json.dumps(ids),)):
                            gone[lane] = (n, payload, dev)
                    self._history_copy(_ACK_RANGE, ranges, keep)
                    deleted = self._db.executemany("DELETE " + _ACK_RANGE, ranges).rowcount \
                        if ranges else 0
                    n = sum(g[0] for g in gone.values())
                    if deleted != n:  # a row in flight is gone (cannot happen): count anew
                        self._rollback()
                        gone = None
                        continue
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
            with self._mem_lock:
                for i in ids:
                    self._in_flight.pop(i, None)
            return n

    def release(self, row_ids):
        """Put in-flight rows back (the forward failed): ``take`` hands them out first.
        Ids not in flight are ignored; returns how many were released."""
        n = 0
        with self._lock, self._mem_lock:
            for i in row_ids:
                held = self._in_flight.pop(i, None)
                if held is not None:
                    heapq.heappush(self._released[ALARM if held & 1 else ROUTINE], i)
                    n += 1
        return n

    def release_all(self):
        """Release every in-flight row and gap marker (a forwarder lost its connection)."""
        with self._lock:
            with self._mem_lock:
                self._gaps_in_flight.clear()
                held = list(self._in_flight)
            return self.release(held)
