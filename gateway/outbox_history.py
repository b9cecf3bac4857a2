"""The outbox's history: delivered rows kept, bounded, for the council's open-data copy.

A mixin of ``gateway.outbox.Outbox`` (which supplies ``_db``, ``_lock``, ``_delta``,
``_value``, ``_now_ms``, ``_begin``/``_commit``/``_rollback`` and ``path``), plus the SQL
that ``gateway.ops`` uses to read history and unsent rows from a read-only connection.

Theory of operation
-------------------
The outbox deletes a row once the upstream acknowledged it. ``civicedge gateway export``
needs readings after that, so ``Outbox.ack`` first copies the acked rows into ``history``
with ONE ``INSERT ... SELECT`` in the same transaction as the delete (a crash leaves a row
either unsent or in history, never neither). A row keeps its key, lane, gateway receive time
(``rx_wall_s``), the reading's time ``t`` as the upstream got it (the record's own, else the
receive time ``rx_t`` the agent adds to an untimed record; NULL if neither was trusted),
its payload (the record as JSON) and when it was acked (``acked_ms``, the outbox's running
time). History has no unique key index: it would cost a third of the ack's speed, and a key
delivered twice (a node resent a record whose replay-state entry was forgotten) is rare and
deduplicated by the export, which meets both copies side by side in time order.

History is bounded by ``history_max_bytes`` tracked bytes (``history_nbytes``) and by
``history_max_age_s`` of running time since the ack (never wall time, as the outbox's own
bounds). Either set to 0 turns history off: nothing is copied, and what is stored goes at
the next ``enforce``. Over the size bound, the oldest rows go until the history is at 7/8
of the bound, so steady acking trims in occasional chunks rather than at every ack. A
history trim is **not a drop**: those rows were delivered. It is counted apart
(``history_trimmed_size``/``_age``/``_full``), never in the outbox's drop counters, and
leaves no gap marker. On ``SQLITE_FULL`` history is trimmed before any unsent row is
dropped; if the copy itself fails on a full disk, the ack goes ahead without it (delivery
must never stall on the open-data copy) and the rows are counted in ``history_skipped``.

Counters ``history_rows``/``history_bytes``/``history_trimmed_*``/``history_skipped`` live in
``meta`` and change in the transaction that changes the rows, like the outbox's own.
"""

import heapq
from dataclasses import dataclass

HISTORY_MAX_BYTES = 64 << 20  # delivered readings kept for export
HISTORY_MAX_AGE_S = 35 * 86400  # a month and a few days: a monthly open-data export fits
# Tracked bytes per history row on top of its payload and its device id: the other columns,
# record and cell headers, the time index entry. Measured as 61 bytes a row on SQLite 3.40
# with 4 KiB pages (docs/gateway-operations.md).
HISTORY_ROW_OVERHEAD_BYTES = 64
TRIM_BATCH = 1024  # rows read per step when trimming by size (bounded memory)

HISTORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY, device_id TEXT NOT NULL,
    boot_epoch INTEGER NOT NULL, seq INTEGER NOT NULL, lane TEXT NOT NULL,
    rx_wall_s REAL, t REAL, acked_ms INTEGER NOT NULL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_time ON history (coalesce(t, rx_wall_s));
"""
HISTORY_META_KEYS = ("history_rows", "history_bytes", "history_trimmed_size",
                     "history_trimmed_age", "history_trimmed_full", "history_skipped")
# The time a row is placed at: the reading's, else when the gateway stored it.
TIME_EXPR = "coalesce(t, rx_wall_s)"
# A ``rows`` row's reading time as the upstream gets it (gateway.upstream.senml_record): its
# own ``t``, else the gateway's receive time ``rx_t`` the agent added (JSON1 is built in).
_ROW_T = "coalesce(json_extract(payload, '$.t'), json_extract(payload, '$.rx_t'))"
_COPY = ("INSERT INTO history (device_id, boot_epoch, seq, lane, rx_wall_s, t, "
         "acked_ms, payload) SELECT device_id, boot_epoch, seq, lane, rx_wall_s, " + _ROW_T
         + ", ?, payload %s ORDER BY id")
_SIZE = "length(payload) + length(CAST(device_id AS BLOB))"
_SUM_UNTIL = "SELECT count(*), coalesce(sum(%s), 0) FROM history WHERE id <= ?" % _SIZE
# trimming by size: the next TRIM_BATCH rows after an id, summed, or one by one
_BATCH_ROWS = "SELECT id, %s FROM history WHERE id > ? ORDER BY id LIMIT ?" % _SIZE
_BATCH_SUMS = ("SELECT count(*), coalesce(sum(s), 0), max(id) FROM (SELECT id, %s AS s FROM "
               "history WHERE id > ? ORDER BY id LIMIT ?)" % _SIZE)


def history_nbytes(payload_len, device_id):
    """Tracked bytes of a history row of ``device_id`` whose payload is ``payload_len``."""
    return payload_len + len(device_id.encode("utf-8")) + HISTORY_ROW_OVERHEAD_BYTES


@dataclass(frozen=True)
class HistoryStats:
    rows: int
    bytes: int               # tracked bytes
    max_bytes: int           # 0: history off
    max_age_s: float         # 0: history off
    trimmed_size: int        # rows trimmed by the size bound, ever (delivered: not drops)
    trimmed_age: int         # rows trimmed by the age bound, ever
    trimmed_full: int        # rows trimmed to make room on a full disk (SQLITE_FULL), ever
    skipped: int             # delivered rows not kept: the disk was full at their ack
    oldest_s: float | None   # time (record t, else receive time) of the oldest row kept
    newest_s: float | None


class History:
    """Mixin: the ``history`` table of ``gateway.outbox.Outbox``."""

    def _history_init(self, max_bytes, max_age_s):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError("history_max_bytes must be an int >= 0 (0: off), got %r"
                             % (max_bytes,))
        if isinstance(max_age_s, bool) or not isinstance(max_age_s, (int, float)) \
                or not max_age_s >= 0:
            raise ValueError("history_max_age_s must be a number >= 0 (0: off), got %r"
                             % (max_age_s,))
        self.history_max_bytes, self.history_max_age_s = max_bytes, max_age_s
        self._acked_floor_ms = None  # at most every history row's acked_ms, when known

    @property
    def history_on(self):
        return self.history_max_bytes > 0 and self.history_max_age_s > 0

    def _history_schema(self):
        """Create the table, index and counters (in ``_open``'s schema transaction)."""
        for statement in HISTORY_SCHEMA.split(";")[:-1]:
            self._db.execute(statement)
        self._db.executemany("INSERT OR IGNORE INTO meta VALUES (?, 0)",
                             [(k,) for k in HISTORY_META_KEYS])

    def _history_copy(self, where, params_seq, keep=True):
        """In ``ack``'s transaction, before the delete: copy the rows that ``where`` (SQL from
        FROM on, e.g. ``FROM rows WHERE id >= ? AND id <= ?``) selects with each parameter
        tuple of ``params_seq`` into history (one ``INSERT ... SELECT`` each, executemany'd).
        ``keep`` False: the copy failed on a full disk; skip it."""
        if keep and self.history_on:
            now = self._now_ms()
            self._db.executemany(_COPY % where, [(now, *p) for p in params_seq])

    def _history_count(self, n, nbytes, keep=True):
        """After the copies of ``n`` acked rows whose payloads and device ids (UTF-8) add up
        to ``nbytes``: count them (or, not ``keep``, count them skipped) and trim if history
        went over its size bound."""
        if not self.history_on or not n:
            return
        if not keep:
            self._delta["history_skipped"] += n
            return
        self._delta["history_rows"] += n
        self._delta["history_bytes"] += nbytes + n * HISTORY_ROW_OVERHEAD_BYTES  # history_nbytes
        if self._value("history_bytes") > self.history_max_bytes:
            self._history_trim(age=False)

    def _history_cut(self, last_id, reason, counted=None):
        """Delete history rows with id <= ``last_id`` and count them under ``reason``
        (``counted``: their number and ``_SIZE`` sum, when the caller already knows)."""
        n, size = counted or self._db.execute(_SUM_UNTIL, (last_id,)).fetchone()
        self._db.execute("DELETE FROM history WHERE id <= ?", (last_id,))
        self._delta["history_rows"] -= n
        self._delta["history_bytes"] -= size + n * HISTORY_ROW_OVERHEAD_BYTES
        self._delta["history_trimmed_" + reason] += n
        return n

    def _history_trim(self, age=True, free_bytes=0):
        """Apply history's bounds in the open transaction (``age``: the age bound too; with
        history off, everything goes); with ``free_bytes``, also trim oldest rows until that
        many bytes are freed (a full disk). Returns the rows trimmed."""
        db, trimmed = self._db, 0
        if not self.history_on:
            last = db.execute("SELECT max(id) FROM history").fetchone()[0]
            return self._history_cut(last, "size") if last is not None else 0
        if age:
            trimmed += self._history_trim_aged()
        total, excess = self._value("history_bytes"), free_bytes
        if total > self.history_max_bytes:  # down to 7/8 of the bound: trims come in chunks
            excess = max(excess, total - (self.history_max_bytes - self.history_max_bytes // 8))
        last, n, size = None, 0, 0  # the oldest rows up to ``last``: ``n`` rows, ``size``
        while size + n * HISTORY_ROW_OVERHEAD_BYTES < excess:
            # a batch's sums in SQL; the rows one by one only in the batch where the cut falls
            count, got, top = db.execute(_BATCH_SUMS, (-1 if last is None else last,
                                                       TRIM_BATCH)).fetchone()
            if not count:
                break
            if size + got + (n + count) * HISTORY_ROW_OVERHEAD_BYTES < excess:
                last, n, size = top, n + count, size + got
                continue
            for row_id, row_size in db.execute(_BATCH_ROWS, (-1 if last is None else last,
                                                             TRIM_BATCH)).fetchall():
                last, n, size = row_id, n + 1, size + row_size
                if size + n * HISTORY_ROW_OVERHEAD_BYTES >= excess:
                    break
        if last is not None:
            trimmed += self._history_cut(last, "full" if free_bytes else "size", (n, size))
        return trimmed

    def _history_trim_aged(self):
        """History's age bound, in the open transaction; returns the rows trimmed.
        ``_acked_floor_ms`` is at most every history row's ``acked_ms``: the first row kept
        by the last trim (``acked_ms`` never decreases along id, and later acks come later
        still), or the time of a trim that left none. While the cutoff is at or below it,
        nothing is read (``_rollback`` forgets it: an undone trim brings older rows back)."""
        db, now = self._db, self._now_ms()
        cutoff = now - int(self.history_max_age_s * 1000)
        if self._acked_floor_ms is not None and cutoff <= self._acked_floor_ms:
            return 0
        # scan from the oldest to the first kept row
        kept = db.execute("SELECT id, acked_ms FROM history WHERE acked_ms >= ? ORDER BY id "
                          "LIMIT 1", (cutoff,)).fetchone()
        if kept is None:
            last = db.execute("SELECT max(id) FROM history").fetchone()[0]
        else:
            last = db.execute("SELECT max(id) FROM history WHERE id < ?",
                              (kept[0],)).fetchone()[0]
        self._acked_floor_ms = now if kept is None else kept[1]
        return self._history_cut(last, "age") if last is not None else 0

    def _history_free(self, target):
        """After ``SQLITE_FULL``, in the open transaction: trim up to ``target`` tracked bytes
        of the oldest history (before any unsent row is dropped). Returns the bytes freed."""
        before = self._value("history_bytes")
        self._history_trim(free_bytes=target)
        return before - self._value("history_bytes")

    def history_stats(self):
        """``HistoryStats``: rows and bytes kept, the bounds, trims, the time range."""
        with self._lock:
            v = self._value
            lo = self._db.execute("SELECT min(%s) FROM history" % TIME_EXPR).fetchone()[0]
            hi = self._db.execute("SELECT max(%s) FROM history" % TIME_EXPR).fetchone()[0]
            return HistoryStats(rows=v("history_rows"), bytes=v("history_bytes"),
                                max_bytes=self.history_max_bytes,
                                max_age_s=self.history_max_age_s,
                                trimmed_size=v("history_trimmed_size"),
                                trimmed_age=v("history_trimmed_age"),
                                trimmed_full=v("history_trimmed_full"),
                                skipped=v("history_skipped"), oldest_s=lo, newest_s=hi)


# -- reading, for gateway.ops (a read-only connection; no Outbox object) ------------------------
_FIELDS = "device_id, boot_epoch, seq, lane, %s, rx_wall_s, payload"
_ORDER = " ORDER BY 1, device_id, boot_epoch, seq"


def has_table(db, name):
    """True if the database behind connection ``db`` has table ``name``."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                      (name,)).fetchone() is not None


def _select(table, start_s, end_s, device):
    time = TIME_EXPR if table == "history" else "coalesce(%s, rx_wall_s)" % _ROW_T
    where, params = [time + " >= ?", time + " < ?"], [start_s, end_s]
    if device is not None:
        where.append("device_id = ?")
        params.append(device)
    fields = _FIELDS % ("t" if table == "history" else _ROW_T)
    delivered = int(table == "history")
    return ("SELECT %s, %s, %d FROM %s WHERE %s%s" % (time, fields, delivered, table,
                                                      " AND ".join(where), _ORDER), params)


def iter_rows(db, start_s, end_s, device=None):
    """Delivered (history) and unsent (``rows``) rows whose time -- the record's ``t``, else
    the gateway's receive time -- is in [``start_s``, ``end_s``), in time order (then key),
    as ``(time_s, device_id, boot_epoch, seq, lane, t, rx_wall_s, payload, delivered)``
    (``delivered`` 1 for history, 0 for unsent); ``device``
    selects one device. Streams: two SQLite cursors merged, nothing accumulated. Call inside
    one read transaction (``BEGIN``) so both tables come from the same snapshot. A key met
    twice at the same time (delivered, then resent and not yet delivered again) comes once."""
    streams = []
    for table in ("history", "rows"):
        if has_table(db, table):
            sql, params = _select(table, start_s, end_s, device)
            streams.append(db.execute(sql, params))
    last = None
    for row in heapq.merge(*streams, key=lambda r: r[:4]):
        if row[:4] != last:
            last = row[:4]
            yield row


def untimed_count(db, device=None):
    """Rows (delivered and unsent) with no time at all -- neither the node's nor the gateway's
    clock was trusted -- which a time-range export cannot place."""
    dev, params = ("", []) if device is None else (" AND device_id = ?", [device])
    n = 0
    for table, t in (("history", "t"), ("rows", _ROW_T)):
        if has_table(db, table):
            n += db.execute("SELECT count(*) FROM %s WHERE rx_wall_s IS NULL AND %s IS NULL%s"
                            % (table, t, dev), params).fetchone()[0]
    return n
