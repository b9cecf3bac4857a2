"""Named JSON state stored in the outbox file, written in the same transaction as rows.

Why here: the agent acks a node only after the records are durable, and the replay state
(which frames were accepted), the alarm state (which alarms stand, open windows) and the
gateway's own stream counter must never disagree with the rows on disk. A crash between two
separate writes would leave, say, rows of a frame stored but the replay state not knowing the
frame (harmless) or the replay state claiming a frame whose rows are gone (a lost reading).
Storing both in one SQLite transaction makes them move together: after any crash the file
holds either the batch *and* its state, or neither.

The table is ``state(name TEXT PRIMARY KEY, json TEXT NOT NULL)``, created by
``gateway.outbox_sql._SCHEMA`` with ``IF NOT EXISTS``, so an outbox file made before this
table existed simply gains it on the next open (no schema version change: an older gateway
never reads it). Values are compact JSON; each is rewritten whole at every write (a few KB for
a site's replay and alarm states, next to a batch of rows).

A value may also be given as ``JSONText`` (a ``str`` of JSON its producer already encoded,
e.g. ``AlarmEngine.state_json()``, which keeps each device's part until it changes): it is
stored as it is, not checked or encoded again.

``StoredState`` is a mixin of ``gateway.outbox.Outbox`` (which supplies ``_lock`` and
``_db``); ``Outbox.put_many(records, state=...)`` calls ``encode_state`` before its
transaction and ``write_state`` inside it.
"""

import json
import math

MAX_NAME_CHARS = 64


class JSONText(str):
    """JSON text already encoded by its producer (compact, finite numbers, string keys):
    ``encode_state`` stores it as it is."""

    __slots__ = ()


def _check(value, where):
    """Refuse what JSON would not round-trip (NaN, infinities, non-str keys, odd types)."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("state %s: %r is not a finite number" % (where, value))
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError("state %s: key %r is not a string" % (where, k))
            _check(v, where)
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check(v, where)
        return
    raise ValueError("state %s: a %s is not JSON" % (where, type(value).__name__))


def encode_state(state):
    """``[(name, json text)]`` for ``state`` (a dict name -> JSON-able value or
    ``JSONText``, or None).

    Raises ``ValueError`` naming the entry for a name that is not a short non-empty string or
    a value JSON cannot hold exactly (NaN, a set, bytes, a non-string key)."""
    if state is None:
        return []
    if not isinstance(state, dict):
        raise ValueError("state must be a dict of name -> JSON-able value, got %s"
                         % type(state).__name__)
    out = []
    for name, value in state.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
            raise ValueError("state name %r must be a string of 1..%d characters"
                             % (name, MAX_NAME_CHARS))
        if type(value) is JSONText:
            out.append((name, str(value)))
            continue
        _check(value, repr(name))
        out.append((name, json.dumps(value, separators=(",", ":"), allow_nan=False)))
    return out


def write_state(db, encoded):
    """Upsert ``encode_state`` output in the caller's open transaction (sqlite3 errors pass
    through: the caller rolls the whole transaction back)."""
    if encoded:
        db.executemany("INSERT INTO state (name, json) VALUES (?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET json = excluded.json", encoded)


class StoredState:
    def load_state(self, name, default=None):
        """The value last stored under ``name`` with ``put_many(..., state=...)``, or
        ``default`` if there is none. Raises ``ValueError`` if the stored text is not JSON
        (a hand-edited file): the caller decides whether to start afresh."""
        with self._lock:
            row = self._db.execute("SELECT json FROM state WHERE name = ?", (name,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except ValueError as e:
            raise ValueError("outbox %s: state %r is not JSON (%s)" % (self.path, name, e)) from e

    def state_names(self):
        """Every stored state name, sorted."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT name FROM state ORDER BY name")]
