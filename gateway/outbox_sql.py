"""The outbox's SQL: schema, statements, errors and small helpers (used by ``gateway.outbox``)."""

import sqlite3

from gateway import outbox_policy as policy
from gateway.outbox_policy import ALARM, LANES, ROUTINE

SCHEMA_VERSION = 1
_MAX_VARS = 500  # ids per IN (...) statement

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    id INTEGER PRIMARY KEY, device_id TEXT NOT NULL,
    boot_epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
    lane TEXT NOT NULL CHECK (lane IN ('alarm', 'routine')),
    rx_ms INTEGER NOT NULL, rx_wall_s REAL, payload TEXT NOT NULL,
    UNIQUE (device_id, boot_epoch, seq));
CREATE INDEX IF NOT EXISTS rows_alarm ON rows (id) WHERE lane = 'alarm';
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL,
    first_epoch INTEGER NOT NULL, first_seq INTEGER NOT NULL,
    last_epoch INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    dropped INTEGER NOT NULL, alarms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, json TEXT NOT NULL);  -- outbox_state.py
"""
_META_KEYS = (["schema", "store_ms", "duplicates", "disk_full"]
              + ["%s_%s" % (k, lane) for k in ("rows", "bytes", "dropped") for lane in LANES]
              + ["dropped_" + reason for reason in policy.REASONS])
_INSERT = ("INSERT INTO rows (id, device_id, boot_epoch, seq, lane, rx_ms, rx_wall_s, payload) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, boot_epoch, seq) DO NOTHING")
_COLS = "id, device_id, boot_epoch, seq, lane, rx_ms, rx_wall_s, payload"
# Literal lanes, so the alarm query can use the partial index (a bound parameter cannot).
_LANE_FROM = {ALARM: "FROM rows INDEXED BY rows_alarm WHERE lane = 'alarm' AND id > ?",
              ROUTINE: "FROM rows WHERE lane = 'routine' AND id > ?"}
_TAKE = {lane: "SELECT %s %s ORDER BY id LIMIT ?" % (_COLS, frm)
         for lane, frm in _LANE_FROM.items()}
_BY_KEY = "SELECT id FROM rows WHERE device_id = ? AND boot_epoch = ? AND seq = ?"


class OutboxError(Exception):
    """The outbox could not do what was asked; the message says what and what to do."""


class OutboxFull(OutboxError):
    """Nothing was stored: the disk is full and nothing droppable is left. Do not ack."""


class OutboxCorrupt(OutboxError):
    """The database file failed its integrity check or is not an outbox."""


def _is_full(exc):
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)


def _chunks(seq, n=_MAX_VARS):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _marks(n):
    return ",".join("?" * n)
