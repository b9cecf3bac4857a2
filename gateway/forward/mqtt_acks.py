"""``Acker``: the outbox deletes of ``gateway.forward.mqtt.MQTTForwarder``, on a thread of their
own.

Rows whose every message was PUBACKed are deleted from the outbox (``Outbox.ack``: the
delete, the delivered copy of ``gateway.outbox_history``, one COMMIT with its fsync) here, not
in the forwarder's thread. SQLite runs without Python's GIL, so that work and the fsync
overlap with the forwarder taking, encoding and publishing the next rows, on the other core
of a Pi (docs/benchmarks.md, gateway-drain); ``Outbox.take`` reads new rows through a
connection of its own, so a delete transaction does not hold the forwarder up either. A
PUBACK frees its place in the in-flight window at once; only the delete waits.

* ``submit(rows, gaps)`` hands over the ids of rows and gap markers whose messages were all
  confirmed. They are deleted together (one transaction, one fsync) once ``delay_s`` passed
  since the oldest was handed over, or ``batch_rows`` wait, or ``flush`` asks; while a
  transaction runs, more gather for the next. ``backlog()`` says how many wait: the
  forwarder takes no more rows while it is over a bound (the deletes set the pace, and the
  rows held in memory stay bounded), and ``done()`` is called after each transaction;
  ``waiting()`` how many have not begun their delete (the forwarder's ``confirmed_rows``).
* ``flush(timeout_s)`` waits until every id handed over is deleted. The forwarder calls it
  before ``outbox.release_all()`` on a disconnect, and on a clean stop, so a PUBACKed row is
  never released and sent again just because its delete was still queued.
* A delete that fails (``OutboxError``) leaves its rows in flight in the outbox; the error is
  kept (``take_error``) and the forwarder drops the connection, whose ``release_all()`` puts
  them back to go again (at-least-once, RELIABILITY.md rule 1). ``forwarded`` /
  ``gaps_forwarded`` count only deletes that committed.
"""

import logging
import threading
import time

log = logging.getLogger("civicedge.gateway.forward.mqtt")


class Acker:
    """Deletes PUBACKed rows (``outbox.ack``) and gap markers (``outbox.ack_gaps``) of
    ``outbox`` on its own thread; ``count(name, n)`` records ``forwarded`` and
    ``gaps_forwarded``. ``delay_s``: how long a done row may wait for others to share its
    transaction; ``batch_rows``: how many make a transaction at once."""

    def __init__(self, outbox, count, delay_s=0.1, batch_rows=4096, name="civicedge-mqtt-acks",
                 done=None):
        self.outbox, self._count, self._done = outbox, count, done
        self.delay_s, self.batch_rows, self.name = delay_s, batch_rows, name
        self._cv = threading.Condition()
        self._rows, self._gaps = [], []
        self._since = None  # time.monotonic() when the oldest waiting id was handed over
        self._busy = 0  # rows in the transaction running
        self._flushing = 0  # callers waiting in flush(): delete at once
        self._stopping = False
        self._error = None
        self._thread = None

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def submit(self, rows, gaps=()):
        """Row ids and gap-marker ids whose messages were all confirmed."""
        if not rows and not gaps:
            return
        with self._cv:
            self._rows.extend(rows)
            self._gaps.extend(gaps)
            if self._since is None:  # the thread may wait for work: now it waits the delay
                self._since = time.monotonic()
                self._cv.notify_all()
            elif len(self._rows) >= self.batch_rows:
                self._cv.notify_all()

    def backlog(self):
        """Rows handed over and not deleted yet (waiting, or in the transaction running)."""
        with self._cv:
            return len(self._rows) + self._busy

    def waiting(self):
        """Rows handed over whose delete has not begun (not in the transaction running): each
        is still in the outbox, delivered."""
        with self._cv:
            return len(self._rows)

    def take_error(self):
        """The exception of a delete that failed since the last call, or None."""
        with self._cv:
            e, self._error = self._error, None
            return e

    def flush(self, timeout_s):
        """Delete everything handed over now; wait at most ``timeout_s``. Returns True when
        nothing is left (a failed delete counts as done: see ``take_error``)."""
        end = time.monotonic() + max(0.0, timeout_s)
        with self._cv:
            if self._thread is None or not self._thread.is_alive():
                return self._delete_here()
            self._flushing += 1
            self._cv.notify_all()
            try:
                while self._rows or self._gaps or self._busy:
                    left = end - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        return False
                    self._cv.wait(left)
                return True
            finally:
                self._flushing -= 1

    def stop(self, timeout_s=5.0):
        """Delete what is waiting, then end the thread (at most ``timeout_s``)."""
        end = time.monotonic() + max(0.0, timeout_s)
        self.flush(timeout_s)
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is None:
            return True
        self._thread.join(max(0.0, end - time.monotonic()))
        return not self._thread.is_alive()

    # -- the thread ---------------------------------------------------------------------------
    def _due(self):
        """Seconds until the waiting ids are due (0: now), or None when nothing waits."""
        if not self._rows and not self._gaps:
            return None
        if self._flushing or self._stopping or len(self._rows) >= self.batch_rows:
            return 0.0
        return max(0.0, self._since + self.delay_s - time.monotonic())

    def _take(self):
        rows, gaps = self._rows[:self.batch_rows], self._gaps  # a transaction's worth
        self._rows, self._gaps = self._rows[self.batch_rows:], []
        self._since = time.monotonic() if self._rows else None
        self._busy = max(1, len(rows))
        return rows, gaps

    def _run(self):
        while True:
            with self._cv:
                while True:
                    due = self._due()
                    if due == 0.0:
                        break
                    if due is None and self._stopping:
                        return
                    self._cv.wait(due)
                rows, gaps = self._take()
            self._delete(rows, gaps)

    def _delete_here(self):
        """``flush`` without the thread (not started, or ended): in the caller's thread,
        ``_cv`` held."""
        if self._rows or self._gaps:
            rows, gaps = self._take()
            self._cv.release()
            try:
                self._delete(rows, gaps)
            finally:
                self._cv.acquire()
        return True

    def _delete(self, rows, gaps):
        try:
            if rows:
                self.outbox.ack(rows)
                self._count("forwarded", len(rows))
            if gaps:
                self.outbox.ack_gaps(gaps)
                self._count("gaps_forwarded", len(gaps))
        except Exception as e:  # OutboxError (or a bug): the rows stay in flight, go again
            log.error("deleting %d delivered rows from the outbox failed (they will be sent "
                      "again): %s: %s", len(rows), type(e).__name__, e)
            with self._cv:
                self._error = self._error or e
        finally:
            with self._cv:
                self._busy = 0
                self._cv.notify_all()
            if self._done is not None:
                self._done()  # the forwarder may wait for the backlog to shrink
