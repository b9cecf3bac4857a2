"""The outbox's gap markers on their way upstream: a mixin of ``gateway.outbox.Outbox`` (which
supplies ``_lock``, ``_mem_lock``, ``_db``, ``_reader``, ``_drop_seq``,
``_begin``/``_commit``/``_rollback``, ``path`` and ``_gaps_in_flight``)."""

import sqlite3

from gateway.outbox_policy import GapMarker
from gateway.outbox_sql import OutboxError, _chunks, _marks


_ALL = "SELECT * FROM gaps ORDER BY id"


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

    def ack_gaps(self, gap_ids):
        """Delete forwarded markers (one transaction); returns how many were stored. The drop
        counters keep the totals. Raises ``OutboxError`` if that fails."""
        ids = sorted(set(gap_ids))
        with self._lock:
            try:
                self._begin()
                with self._mem_lock:  # as a drop: a take_gaps reading meanwhile reads again
                    if not self._drop_seq & 1:
                        self._drop_seq += 1
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
