"""The outbox's gap markers on their way upstream: a mixin of ``gateway.outbox.Outbox`` (which
supplies ``_lock``, ``_mem_lock``, ``_db``, ``_reader``, ``_drop_seq``, ``_delta``,
``_begin``/``_commit``/``_rollback``, ``path`` and ``_gaps_in_flight``).

Gateway-made markers. The outbox's own drops (size, age, a full disk) are marked where they
are made (``gateway.outbox_bounds``). Records the gateway dropped *before* they reached the
outbox are marked with ``mark_dropped``: LoRaWAN uplinks the ChirpStack source held in memory
while the disk was full and dropped past its bound (``gateway.sources.holding``; no node
sends them again). Each ``Dropped`` is counted as the outbox counts its own drops
(``dropped_<lane>`` and ``dropped_<reason>``, ``full`` by default) and widens the device's
open marker or opens one, in one transaction; upstream it is a ``gateway_outbox`` gap
message with the exact count and key range (``gateway.upstream.encode_gap_markers``), never
a node's ``node_log`` gap. The pure part is ``outbox_policy.summarize_ranges`` and
``outbox_policy.mark_drops``.

``_open_markers`` and ``_write_markers`` are the one place a drop's marker is read and written:
``mark_dropped`` here and the bounds' ``_drop`` (``gateway.outbox_bounds``) use them.
"""

import sqlite3
from typing import NamedTuple

from gateway import outbox_policy as policy
from gateway.outbox_policy import ALARM, ROUTINE, GapMarker
from gateway.outbox_sql import OutboxError, OutboxFull, _chunks, _is_full, _marks


_ALL = "SELECT * FROM gaps ORDER BY id"
_U32 = 0xFFFFFFFF
_FIELDS = "first_epoch, first_seq, last_epoch, last_seq, dropped, alarms"
_NEW_MARKER = "INSERT INTO gaps (device_id, %s) VALUES (?, ?, ?, ?, ?, ?, ?)" % _FIELDS
_WIDEN_MARKER = "UPDATE gaps SET (%s) = (?, ?, ?, ?, ?, ?) WHERE id = ?" % _FIELDS


class Dropped(NamedTuple):
    """``dropped`` records of ``device_id`` (``alarms`` of them alarm records) that the gateway
    dropped before storing them, with keys in ``(first_epoch, first_seq)`` ..
    ``(last_epoch, last_seq)``."""
    device_id: str
    first_epoch: int
    first_seq: int
    last_epoch: int
    last_seq: int
    dropped: int
    alarms: int = 0


def check_dropped(d):
    """``d`` as a ``Dropped``; raises ``ValueError`` naming what is wrong with it."""
    try:
        d = Dropped(*d)
    except TypeError:
        raise ValueError("a drop needs (device_id, first_epoch, first_seq, last_epoch, "
                         "last_seq, dropped[, alarms]), got %r" % (d,)) from None
    if not isinstance(d.device_id, str) or not d.device_id:
        raise ValueError("drop %r: device_id must be non-empty text" % (d,))
    for name in Dropped._fields[1:5]:
        v = getattr(d, name)
        if type(v) is not int or not 0 <= v <= _U32:
            raise ValueError("drop %r: %s must be an int in 0..%d" % (d, name, _U32))
    if (d.first_epoch, d.first_seq) > (d.last_epoch, d.last_seq):
        raise ValueError("drop %r: the first key is after the last" % (d,))
    if type(d.dropped) is not int or d.dropped < 1 or type(d.alarms) is not int \
            or not 0 <= d.alarms <= d.dropped:
        raise ValueError("drop %r: dropped must be an int >= 1 and alarms 0..dropped" % (d,))
    return d


class GapMarkers:
    def gaps(self):
        """Every stored gap marker (``GapMarker``), oldest first."""
        with self._lock:
            return [GapMarker(*g) for g in self._db.execute(_ALL)]

    def take_gaps(self, limit=100):
        """Up to ``limit`` markers not in flight, to forward; in flight until ``ack_gaps`` or
        ``release_gaps``, and meanwhile later drops open a new marker for the device. Read
        as ``take`` reads new rows: without the lock, unless a drop overlapped the read."""
        with self._mem_lock:
            seq = self._drop_seq
        if not seq & 1 and self._reader is not None:
            found = [GapMarker(*g) for g in self._reader.execute(_ALL)]
            with self._mem_lock:
                if seq == self._drop_seq:
                    return self._mark_gaps(found, limit)
        with self._lock:
            found = self.gaps()
            with self._mem_lock:
                return self._mark_gaps(found, limit)

    def _mark_gaps(self, found, limit):
        out = [m for m in found if m.gap_id not in self._gaps_in_flight][:limit]
        self._gaps_in_flight.update(m.gap_id for m in out)
        return out

    def _open_markers(self, in_flight):
        """``{device_id: GapMarker}``: each device's newest stored marker whose id is not in
        ``in_flight`` (read in the open transaction)."""
        return {g[1]: GapMarker(*g) for g in self._db.execute(_ALL) if g[0] not in in_flight}

    def _write_markers(self, in_flight, summary):
        """In the open transaction: widen each device's open marker (not in ``in_flight``) by
        its drops in ``summary`` (``outbox_policy.summarize_drops``' form), or open one."""
        marks = policy.mark_drops(self._open_markers(in_flight), summary)
        self._db.executemany(_NEW_MARKER, [m[1:] for m in marks if m.gap_id is None])
        self._db.executemany(_WIDEN_MARKER, [m[2:] + (m.gap_id,) for m in marks
                                             if m.gap_id is not None])

    def _begin_marker_change(self):
        """Open the transaction of a change to the stored markers, marked as a drop (a
        ``take_gaps`` reading meanwhile reads again, under the lock); returns the ids of
        the markers in flight."""
        self._begin()
        with self._mem_lock:
            if not self._drop_seq & 1:
                self._drop_seq += 1
            return set(self._gaps_in_flight)

    def ack_gaps(self, gap_ids):
        """Delete forwarded markers (one transaction); returns how many were stored. The drop
        counters keep the totals. Raises ``OutboxError`` if that fails."""
        ids = sorted(set(gap_ids))
        with self._lock:
            try:
                self._begin_marker_change()
                n = sum(self._db.execute("DELETE FROM gaps WHERE id IN (%s)" % _marks(len(c)),
                                         c).rowcount for c in _chunks(ids))
                self._commit()
            except sqlite3.Error as e:
                self._rollback()
                raise OutboxError("outbox %s: deleting gap markers failed (%s); they will be "
                                  "sent again" % (self.path, e)) from e
            with self._mem_lock:
                self._gaps_in_flight.difference_update(ids)
            return n

    def release_gaps(self, gap_ids):
        """Markers whose forward failed are open again (later drops widen them)."""
        with self._lock, self._mem_lock:
            self._gaps_in_flight.difference_update(gap_ids)

    def mark_dropped(self, drops, reason=policy.FULL):
        """Mark records the gateway dropped before storing them (``Dropped``s, or equal
        tuples): counted as drops for ``reason`` (one of ``outbox_policy.REASONS``; ``full``:
        dropped because the disk was full) and per lane, and covered by the devices' gap
        markers, in one transaction (module docstring). Returns the records marked. Raises
        ``ValueError`` naming a bad drop or reason, ``OutboxFull`` if the disk is full
        (nothing was stored: keep the drops and try again later), ``OutboxError`` on other
        I/O errors."""
        drops = [check_dropped(d) for d in drops]
        if reason not in policy.REASONS:
            raise ValueError("reason %r is not one of %s" % (reason, ", ".join(policy.REASONS)))
        if not drops:
            return 0
        with self._lock:
            try:
                in_flight = self._begin_marker_change()
                self._write_markers(in_flight, policy.summarize_ranges(drops))
                n, alarms = sum(d.dropped for d in drops), sum(d.alarms for d in drops)
                self._delta["dropped_" + ALARM] += alarms
                self._delta["dropped_" + ROUTINE] += n - alarms
                self._delta["dropped_" + reason] += n
                self._commit()
            except sqlite3.Error as e:
                self._rollback()
                if _is_full(e):
                    raise OutboxFull("outbox %s: the disk is full; %d dropped record(s) are not "
                                     "marked yet (kept for another try): free disk space"
                                     % (self.path, sum(d.dropped for d in drops))) from e
                raise OutboxError("outbox %s: marking %d drop(s) failed (%s); check the disk"
                                  % (self.path, len(drops), e)) from e
            return n
