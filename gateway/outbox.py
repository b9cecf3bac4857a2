"""``Outbox``: the gateway's durable store between the pipeline and the forwarders (SQLite).

Theory of operation (the whole story, with numbers: docs/gateway-outbox.md)
-------------------------------------------------------------------------
``rows`` holds every record accepted and not yet acked upstream: UNIQUE ``(device_id,
boot_epoch, seq)``, lane, received time, and the record as compact ASCII JSON. Row ids grow
with arrival, so id order is age order. ``gaps`` holds gap markers; ``meta`` the counters
(rows and bytes per lane, drops per lane and reason, duplicates, disk-full events) and the
running-time line, all written in the transaction that changes the rows they describe.

``put_many`` stores a batch in ONE transaction (duplicates ignored and counted); the pipeline
acks the node only after it returns. ``take`` hands out rows alarms first, oldest first,
using ``LIMIT`` and a per-lane id cursor, so the backlog is never loaded. Handed-out rows are
*in flight* (memory only) until ``ack`` deletes them (after the PUBACK) or ``release`` puts
them back; after a crash every stored row is unsent again (at-least-once, rule 1). The
bounds and ``SQLITE_FULL`` go through the pure policy in ``gateway.outbox_policy``.

Received times are on a *running-time line* (``meta.store_ms`` advanced by the clock's
monotonic ticks, persisted with every write), never wall time: a wall clock stepped a day
must not expire a day of backlog (rule 6); power-off time does not age rows. Thread-safe: one
lock for every transaction; ``take`` reads new rows through a second, read-only connection
without it (so a forwarder's ``ack`` transaction or a ``put_many`` never holds up the next
take), and marks them in flight only if no transaction that drops rows overlapped the read
(``outbox_bounds``). One writing process per file.

Files: this module holds ``Outbox`` itself (opening, transactions and counters, ``put_many``,
``stats``); its mixins hold the rest: ``gateway.outbox_bounds`` (the bounds and
``SQLITE_FULL`` freeing carried out), ``gateway.outbox_forwarding``
(``take``/``ack``/``release``/``release_all``),
``gateway.outbox_gaps`` (gap markers upstream), ``gateway.outbox_history`` (delivered rows
kept for export), ``gateway.outbox_state`` (named state in the rows' transaction);
``gateway.outbox_sql`` has the schema, statements and errors.
"""

import os
import sqlite3
import threading
from collections import Counter

from gateway import outbox_policy as policy
from gateway.outbox_policy import (  # noqa: F401 (the types are part of this API)
    ALARM, LANES, ROUTINE, GapMarker, OutboxRecord, OutboxRow, OutboxStats, PutResult,
    RowSummary)
from gateway.outbox_bounds import Bounds
from gateway.outbox_forwarding import (  # noqa: F401 (importable from here as before)
    _ACK_SUMS, _ACK_WHERE, Forwarding, _new)
from gateway.outbox_gaps import GapMarkers
from gateway.outbox_history import HISTORY_MAX_AGE_S, HISTORY_MAX_BYTES, History
from gateway.outbox_state import StoredState, encode_state, write_state
from gateway.outbox_sql import (  # noqa: F401 (the errors are part of this API)
    OutboxCorrupt,
    OutboxError,
    OutboxFull,
    SCHEMA_VERSION,
    _BY_KEY,
    _COLS,
    _INSERT,
    _LANE_FROM,
    _META_KEYS,
    _SCHEMA,
    _TAKE,
    _chunks,
    _is_full,
    _marks,
)


WAL_CHECKPOINT_PAGES = 4096


class Outbox(Forwarding, Bounds, GapMarkers, StoredState, History):
    """The durable outbox at ``path`` (created if missing), bounded to ``max_bytes`` tracked
    bytes (``outbox_policy.row_nbytes``) and ``max_age_s`` seconds of running time;
    ``clock`` follows ``drivers.clock``. Runs ``PRAGMA integrity_check`` and the bounds on
    open. Raises ``ValueError`` for a bad argument, ``OutboxCorrupt`` for a damaged or
    foreign file, ``OutboxError`` if SQLite refuses WAL mode."""

    def __init__(self, path, max_bytes, max_age_s, clock, history_max_bytes=HISTORY_MAX_BYTES,
                 history_max_age_s=HISTORY_MAX_AGE_S):  # history: gateway.outbox_history
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError("max_bytes must be a positive int, got %r" % (max_bytes,))
        if not isinstance(max_age_s, (int, float)) or not max_age_s > 0:
            raise ValueError("max_age_s must be a positive number, got %r" % (max_age_s,))
        self.path = os.fspath(path)
        self.max_bytes, self.max_age_s, self._clock = max_bytes, max_age_s, clock
        self._history_init(history_max_bytes, history_max_age_s)
        self._lock = threading.RLock()
        self._in_flight = {}  # row id -> its note (outbox_forwarding._note): take, ack
        self._id_bytes = {}  # device id -> its UTF-8 bytes (take's cache)
        self._released = {lane: [] for lane in LANES}  # heaps of ids to hand out first
        self._cursor = dict.fromkeys(LANES, 0)  # highest id handed out, per lane
        self._gaps_in_flight = set()
        self._delta = Counter()  # meta changes of the open transaction
        self._rx_floor_ms = None  # at most every row's rx_ms, when known (outbox_bounds)
        # take() reads new rows without _lock (outbox_forwarding); what it shares with the
        # writers is guarded by _mem_lock: _in_flight, _released, _cursor, _gaps_in_flight,
        # and _drop_seq, odd while a transaction that drops rows is open (a take that
        # overlapped one is done again under _lock). Order: _take_lock, _lock, _mem_lock.
        self._mem_lock = threading.Lock()
        self._take_lock = threading.Lock()  # one take at a time
        self._drop_seq = 0
        self._reader = None
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._open()
            self._reader = self._open_reader()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise OutboxCorrupt("outbox %s cannot be opened (%s): move the file aside and "
                                "restart; nodes keep unacked readings until then"
                                % (self.path, e)) from e
        except BaseException:
            self._db.close()
            raise
        try:
            self.enforce()  # the bounds hold from the start (they may have been lowered)
        except OutboxError:
            pass  # e.g. a full disk: never stop the gateway here; put_many deals with it

    def _open(self):
        db = self._db
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise OutboxError("outbox %s: SQLite refused WAL mode (got %r); put the database "
                              "on a local filesystem" % (self.path, mode))
        # RELIABILITY.md rule 2: under WAL, synchronous=NORMAL syncs only at checkpoints, so
        # a power cut can roll back transactions that COMMITted and were acked to nodes.
        # FULL fsyncs the WAL at every COMMIT: once put_many returns, the rows survive.
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA busy_timeout = 5000")  # a status reader may hold a snapshot
        # A checkpoint every 4096 WAL pages (16 MiB; SQLite's default is 1000): a page that
        # many transactions rewrite (the key index's page of each device, the state, history's
        # and the freelist's pages) is copied into the database once per checkpoint, not once
        # per 4 MiB: 28 % fewer bytes written a row drained, 7 % a row stored
        # (docs/gateway-outbox.md, Size). The WAL file is cut back to 32 MiB after a checkpoint.
        db.execute("PRAGMA wal_autocheckpoint = %d" % WAL_CHECKPOINT_PAGES)
        db.execute("PRAGMA journal_size_limit = %d" % (32 << 20))
        db.execute("PRAGMA cache_size = -8192")  # 8 MiB of pages, whatever the backlog
        # Debian's SQLite (Raspberry Pi OS too) is built with SECURE_DELETE: every page a
        # delete frees is zeroed and written out again. FAST zeroes deleted content only where
        # the page is written anyway, so a page an ack or a drop frees whole costs no write
        # (3 % fewer bytes a row drained; a wipe removes the file; readings are no secret).
        db.execute("PRAGMA secure_delete = FAST")
        problems = [r[0] for r in db.execute("PRAGMA integrity_check(5)")]
        if problems != ["ok"]:
            raise OutboxCorrupt("outbox %s failed integrity_check: %s; move the file aside "
                                "(keep it for recovery) and restart"
                                % (self.path, "; ".join(problems)))
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";")[:-1]:
                db.execute(statement)
            self._history_schema()
            db.executemany("INSERT OR IGNORE INTO meta VALUES (?, 0)", [(k,) for k in _META_KEYS])
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema' AND value = 0",
                       (SCHEMA_VERSION,))
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._meta = dict(db.execute("SELECT key, value FROM meta"))
        if self._meta["schema"] != SCHEMA_VERSION:
            raise OutboxCorrupt("outbox %s has schema %r, this gateway reads %d: upgrade the "
                                "gateway or move the file aside"
                                % (self.path, self._meta["schema"], SCHEMA_VERSION))
        self._base_ms, self._anchor = self._meta["store_ms"], self._clock.ticks_ms()
        self._page_size = db.execute("PRAGMA page_size").fetchone()[0]
        # Ids are given here, not by SQLite (which reuses the highest id once it is deleted),
        # so they only grow while the outbox is open and the take cursors never skip a row.
        self._next_id = db.execute("SELECT coalesce(max(id), 0) + 1 FROM rows").fetchone()[0]

    def _open_reader(self):
        """A second, read-only connection: ``take`` reads new rows through it without the
        lock, so a delete transaction of ``ack`` (or a ``put_many``) does not hold it up."""
        reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            reader.execute("PRAGMA query_only = 1")
            reader.execute("PRAGMA busy_timeout = 5000")
            reader.execute("PRAGMA cache_size = -2048")  # 2 MiB: it reads the newest pages
        except sqlite3.Error:
            reader.close()
            raise
        return reader

    # -- transactions and counters -------------------------------------------------------
    def _now_ms(self):
        """Running time (ms): the persisted base plus monotonic ticks since, re-anchored at
        every call so a tick wrap never matters (calls come far more often than half one)."""
        t = self._clock.ticks_ms()
        self._base_ms += max(0, self._clock.ticks_diff(t, self._anchor))
        self._anchor = t
        return self._base_ms

    def _value(self, key):
        return self._meta[key] + self._delta[key]

    def _total_bytes(self):
        return sum(self._value("bytes_" + lane) for lane in LANES)

    def _begin(self):
        self._delta.clear()
        self._db.execute("BEGIN IMMEDIATE")

    def _dropped_end(self):
        """The transaction that dropped rows is over (committed or rolled back)."""
        if self._drop_seq & 1:
            with self._mem_lock:
                self._drop_seq += 1

    def _commit(self):
        self._delta["store_ms"] = max(self._now_ms() - self._meta["store_ms"], 0)
        self._db.executemany("UPDATE meta SET value = value + ? WHERE key = ?",
                             [(v, k) for k, v in self._delta.items() if v])
        self._db.execute("COMMIT")
        self._dropped_end()
        for k, v in self._delta.items():
            self._meta[k] += v
        self._delta.clear()

    def _rollback(self):
        self._delta.clear()
        self._rx_floor_ms = self._acked_floor_ms = None  # undone deletes: older rows again
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        finally:
            self._dropped_end()

    # -- storing -----------------------------------------------------------------------------
    def put_many(self, records, state=None):
        """Store ``records`` (``OutboxRecord`` or equal tuples) in one transaction, with
        ``state`` (name -> JSON-able value, ``gateway.outbox_state``) written in the same one.

        Returns ``PutResult``: ``new`` and ``duplicates`` are durable and may be acked. On
        ``SQLITE_FULL`` the size policy frees room and the batch is retried. Raises
        ``ValueError`` naming a bad record, ``OutboxFull`` if the disk stays full with nothing
        droppable left, ``OutboxError`` on other I/O errors; then nothing was stored."""
        prepared, batch_bytes, tallies = policy.prepare_tallied(records)
        encoded = encode_state(state)
        if not prepared and not encoded:
            return PutResult([], [], 0)
        with self._lock:
            try:
                return self._put(prepared, encoded, tallies)
            except sqlite3.Error as e:
                self._rollback()
                self._raise_unless_full(e, prepared)
            with self._mem_lock:  # dropping a row this batch resends would free nothing
                keep = set(self._in_flight)
            for r in prepared:
                keep.update(i for (i,) in self._db.execute(_BY_KEY, r[:3]))
            stored = self._total_bytes() + self._value("history_bytes")
            for target in policy.full_targets(batch_bytes, self._page_size, stored):
                try:  # free and store in one transaction: no drop without the batch stored
                    return self._put(prepared, encoded, tallies,
                                     lambda: self._free_for_full(target, set(keep)))
                except sqlite3.Error as e:
                    self._rollback()  # the try's trims and drops are undone with it
                    self._raise_unless_full(e, prepared)
            self._count_disk_full()
            raise OutboxFull("outbox %s: the disk is full even with every unsent row dropped; "
                             "%d records were not stored (do not ack) and nothing was "
                             "dropped; free disk space" % (self.path, len(prepared)))

    def _raise_unless_full(self, exc, prepared):
        if not _is_full(exc):
            raise OutboxError("outbox %s: storing %d records failed (%s); nothing was stored, "
                              "do not ack; check the disk" % (self.path, len(prepared), exc)
                              ) from exc

    def _count_disk_full(self):
        """Count a full disk that no try could get past, in a transaction of its own (the
        counter's page is rewritten in place; if even that fails the event goes uncounted)."""
        try:
            self._begin()
            self._delta["disk_full"] += 1
            self._commit()
        except sqlite3.Error:
            self._rollback()

    def _put(self, prepared, encoded=(), tallies=None, free=None):
        """Store ``prepared`` in one transaction; ``free()`` (after ``SQLITE_FULL``) first
        makes room in it and returns the rows it dropped."""
        now = self._now_ms()
        wall = self._clock.wall_s() if self._clock.wall_trusted() else None
        self._begin()
        freed = free() if free is not None else 0
        first = self._next_id
        cur = self._db.executemany(_INSERT, [(i, d, e, s, lane, now, wall, p) for i, (
            d, e, s, lane, p, _) in enumerate(prepared, first)])
        delta = self._delta
        if cur.rowcount == len(prepared) and tallies is not None:  # all new, the usual case
            new, dups = [r[:3] for r in prepared], []
            for lane, (n, nbytes) in tallies.items():
                delta["rows_" + lane] += n
                delta["bytes_" + lane] += nbytes
        else:  # some were stored before: which are new?
            fresh = set(self._db.execute("SELECT device_id, boot_epoch, seq FROM rows "
                                         "WHERE id >= ?", (first,)))
            new, dups = [], []
            for d, e, s, lane, _, nbytes in prepared:
                key = (d, e, s)
                if key in fresh:
                    fresh.discard(key)  # the same key twice in one batch: new once
                    new.append(key)
                    delta["rows_" + lane] += 1
                    delta["bytes_" + lane] += nbytes
                else:
                    dups.append(key)
        delta["duplicates"] += len(dups)
        write_state(self._db, encoded)
        dropped = freed + self._enforce()
        self._commit()
        self._next_id = first + len(prepared)
        return PutResult(new, dups, dropped)

    def enforce(self):
        """Apply the size and age bounds now (``put_many`` does too; call this on a timer so
        rows expire while nothing arrives). Returns the rows dropped; raises
        ``OutboxError`` if the database cannot be written."""
        with self._lock:
            try:
                self._begin()
                dropped = self._enforce()
                self._commit()
                return dropped
            except sqlite3.Error as e:
                self._rollback()
                raise OutboxError("outbox %s: applying bounds failed (%s); check the disk"
                                  % (self.path, e)) from e

    # -- looking -----------------------------------------------------------------------------
    def stats(self):
        """``OutboxStats``: depth, bytes, age and counters, for metrics and ``status``."""
        with self._lock:
            now, v = self._now_ms(), self._value
            first = self._db.execute("SELECT rx_ms FROM rows ORDER BY id LIMIT 1").fetchone()
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            return OutboxStats(
                rows={lane: v("rows_" + lane) for lane in LANES},
                bytes={lane: v("bytes_" + lane) for lane in LANES},
                total_bytes=self._total_bytes(), max_bytes=self.max_bytes,
                oldest_age_s=None if first is None else (now - first[0]) / 1000.0,
                in_flight=len(self._in_flight),
                dropped={lane: v("dropped_" + lane) for lane in LANES},
                dropped_by_reason={r: v("dropped_" + r) for r in policy.REASONS},
                duplicates=v("duplicates"), disk_full_events=v("disk_full"),
                gap_markers=self._db.execute("SELECT count(*) FROM gaps").fetchone()[0],
                file_bytes=pages * self._page_size)

    def disk_full_events(self):
        """``stats().disk_full_events`` without its queries (the agent's link check reads it
        every few seconds)."""
        with self._lock:
            return self._value("disk_full")

    def cap_file_bytes(self, nbytes):
        """Cap the database file at ``nbytes`` (``PRAGMA max_page_count``, this connection,
        never below the current size); past it SQLite reports ``SQLITE_FULL`` as a full disk
        does. For tests and as a hard cap. Returns the cap applied, in bytes."""
        pages = max(1, -(-int(nbytes) // self._page_size))
        with self._lock:
            return self._db.execute("PRAGMA max_page_count = %d" % pages).fetchone()[0] \
                * self._page_size

    def close(self):
        """Close the database; rows in flight are unsent again at the next open."""
        with self._take_lock, self._lock:
            if self._reader is not None:
                self._reader.close()
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
