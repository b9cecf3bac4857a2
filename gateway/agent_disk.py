"""``DiskAlarm``: the gateway's own alarm while its outbox's disk is full (pure, no I/O), and
``DiskCheck``, the agent's side of it (a mixin of ``gateway.agent.Agent``).

Theory of operation (docs/gateway-faults.md, "Disk full")
---------------------------------------------------------
RELIABILITY.md's fault catalogue: on a full disk the gateway catches ``SQLITE_FULL``, applies
the overflow policy, **raises an alarm**, keeps forwarding and does not crash-loop. The
outbox does the first two (``gateway.outbox``: it drops the oldest routine rows, alarms
last, to make room, and counts each time in ``disk_full_events``; with nothing left to drop
it refuses the batch, ``OutboxFull``). The agent tells a ``DiskAlarm`` what it sees:

* ``full``: SQLite said the disk is full: a store or the bounds were refused (``OutboxFull``,
  or an ``OutboxError`` caused by ``SQLITE_FULL``), or the outbox's ``disk_full_events`` rose
  since the last look (it made room by its policy and stored). The first of an episode
  **raises** ``disk_full`` for the gateway: an ``AlarmEvent`` (``device_id`` the gateway,
  ``quantity`` ``disk_full_events``, ``value`` the full-disk events of the episode so far,
  ``since`` the wall time of the first, ``detail`` the outbox file and what SQLite said);
* ``wrote``: a store went through;
* ``check`` (on the agent's link timer): the episode is over, and the alarm **clears**, once
  ``clear_after_s`` of running time passed since the last full-disk event and since then a
  store went through or the outbox's filesystem has ``FREE_BYTES`` free again. A disk that
  stays full hits ``SQLITE_FULL`` again every time the policy's room is used up: the quiet
  period keeps that one episode, not a raise and a clear per batch.

The events cannot be written while the disk is full, so they wait in ``pending`` (memory, in
order) and the agent adds them, with ``state()``, to the next store that has other records
(a batch of readings), or stores them alone on its timer while the forwarder is connected
(it takes them at once) or once the disk alarm is no longer active. They leave ``pending``
only once stored (``flushed``): a raise and its clear both reach the platform, in order,
even when the whole episode passed while the upstream link was down. A clear never stored
is taken back if the disk fills again (the platform never saw the alarm end), so at most
two events wait. The alarm standing is state (``state()``/``load``) stored with the events,
so a restart still clears an alarm raised before it.

What sources dropped themselves. A LoRaWAN uplink that cannot be stored is held in memory by
the ChirpStack source, and past its bound the oldest is dropped (``gateway.sources.holding``).
Those records were dropped by the gateway, so on every check the agent has each source with
``store_gaps`` mark them in the outbox as its own gap markers (``Outbox.mark_dropped``,
counted in ``dropped_by_reason.full``, published as ``gateway_outbox`` gaps):
``agent.source_drops_marked`` counts the records marked; a refusal (the disk still full)
counts ``agent.source_gap_failures``, is a full-disk event for the alarm, and leaves them
waiting in the source for the next check.
"""

import logging
import os
import shutil

from gateway.alarms import CLEARED, RAISED, AlarmEvent
from gateway.outbox import OutboxError, OutboxFull, _is_full

RULE_DISK = "disk_full"
QUANTITY = "disk_full_events"
SEVERITY = "critical"  # readings are being dropped by policy or not taken at all
PART = "outbox"
DEFAULT_CLEAR_S = 300.0
FREE_BYTES = 1 << 20  # free space on the outbox's filesystem that ends an episode
_DETAIL_MAX = 300

log = logging.getLogger("civicedge.gateway")


class DiskAlarm:
    """The ``disk_full`` alarm of ``gateway_id`` for the outbox at ``path``; ``clear_after_s``:
    running seconds without a full disk before it clears. ``state``: a ``state()`` to resume
    from (malformed: none standing). Raises ``ValueError`` for a bad ``clear_after_s``."""

    def __init__(self, gateway_id, path, clear_after_s=DEFAULT_CLEAR_S, state=None):
        if isinstance(clear_after_s, bool) or not isinstance(clear_after_s, (int, float)) \
                or not clear_after_s >= 0:
            raise ValueError("clear_after_s must be a number >= 0 (s), got %r" % (clear_after_s,))
        self.gateway_id, self.path = gateway_id, str(path)
        self.clear_ms = int(clear_after_s * 1000)
        self.pending = []  # AlarmEvents not stored yet, oldest first
        self.active = {}   # PART -> {"since", "raised_at", "events"} while the alarm stands
        self._last_full_ms = 0  # running ms of the last full-disk event (0: at start)
        self._full_op = self._write_op = self._ops = 0  # which came last: a full or a write
        self._taken_back = None  # the standing entry a pending clear ended
        self.load(state)

    def state(self):
        """The alarm standing, JSON-able (store it with the events)."""
        return {"active": {p: dict(v) for p, v in self.active.items()}}

    def load(self, state):
        """Resume the alarm standing from ``state()`` (None or malformed: none)."""
        active = state.get("active") if isinstance(state, dict) else None
        entry = active.get(PART) if isinstance(active, dict) else None
        self.active = {PART: dict(entry)} if isinstance(entry, dict) else {}

    def full(self, now_ms, now_s, detail):
        """The disk was full at running ``now_ms`` (wall ``now_s``, None if untrusted);
        ``detail``: what said so. Returns the raise it makes (into ``pending``) or None."""
        self._ops += 1
        self._full_op, self._last_full_ms = self._ops, now_ms
        if PART in self.active:
            self.active[PART]["events"] = self.active[PART].get("events", 0) + 1
            return None
        if self.pending and self.pending[-1].kind == CLEARED and self._taken_back is not None:
            self.pending.pop()  # never stored: for the platform the episode goes on
            self.active[PART] = dict(self._taken_back,
                                     events=self._taken_back.get("events", 1) + 1)
            self._taken_back = None
            return None
        self.active[PART] = {"since": now_s, "raised_at": now_s, "events": 1}
        ev = self._event(RAISED, 1, now_s, now_s, detail)
        self.pending.append(ev)
        return ev

    def wrote(self):
        """A store went through."""
        self._ops += 1
        self._write_op = self._ops

    def check(self, now_ms, now_s, room=False):
        """The clear, if due at running ``now_ms`` (``room``: the filesystem has
        ``FREE_BYTES`` free). Returns it (into ``pending``) or None."""
        entry = self.active.get(PART)
        if entry is None or now_ms - self._last_full_ms < self.clear_ms:
            return None
        wrote = self._write_op > self._full_op
        if not (room or wrote):
            return None
        del self.active[PART]
        self._taken_back = entry
        ev = self._event(CLEARED, entry.get("events", 1), entry.get("since"), now_s,
                         "stores go through again" if wrote else "the disk has room again")
        self.pending.append(ev)
        return ev

    def flushed(self, n):
        """The first ``n`` pending events were stored."""
        del self.pending[:n]
        if not any(e.kind == CLEARED for e in self.pending):
            self._taken_back = None

    def _event(self, kind, value, since, now_s, detail):
        return AlarmEvent(kind, RULE_DISK, self.gateway_id, QUANTITY, value, since, now_s,
                          SEVERITY, {"part": PART, "outbox": self.path,
                                     "detail": str(detail)[:_DETAIL_MAX]})


def is_disk_full(exc):
    """True if ``exc`` (from the outbox) says the disk is full."""
    return isinstance(exc, OutboxFull) or (exc.__cause__ is not None and _is_full(exc.__cause__))


def free_bytes(path):
    """Bytes free for an unprivileged writer on the filesystem of ``path``'s directory, or
    None if it cannot be told."""
    try:
        return shutil.disk_usage(os.path.dirname(os.path.abspath(path)) or ".").free
    except OSError:
        return None


class DiskCheck:
    """The agent's side of the ``disk_full`` alarm and of what sources dropped (module
    docstring). Uses the agent's ``disk`` (a ``DiskAlarm``), ``outbox``, ``sources``,
    ``forwarder``, ``_now_ms``, ``_wall``, ``count``, ``_call`` and ``_throttled``;
    ``_disk_seen`` is the outbox's ``disk_full_events`` at the last look."""

    def _disk_refused(self, exc):
        """The outbox refused a store or the bounds with ``exc``: a full disk? (Its
        ``disk_full_events`` counted this one too: the next look starts from here.)"""
        if is_disk_full(exc):
            self._disk_full("%s: %s" % (type(exc).__name__, exc), type(exc).__name__)
            self._disk_seen = self._disk_events()

    def _disk_events(self):
        try:
            return self.outbox.disk_full_events()
        except Exception:  # noqa: BLE001 (closed, or its disk failing: look again later)
            return None

    def _disk_full(self, detail, short):
        ev = self.disk.full(self._now_ms(), self._wall(), detail)
        if ev is not None:
            log.error("ALARM %s raised: SQLite found the outbox's disk full (%s): the oldest "
                      "unsent routine rows are dropped to make room (counted, gap markers), "
                      "what still does not fit is not acked (nodes resend, LoRaWAN uplinks "
                      "are held); free space on %s", ev.rule_id, short,
                      os.path.dirname(os.path.abspath(self.disk.path)))

    def _store_source_gaps(self):
        """Have every source with ``store_gaps`` mark what it dropped (module docstring)."""
        marked = 0
        for s in self.sources:
            store = getattr(s, "store_gaps", None)
            if store is None:
                continue
            try:
                marked += store(self.outbox.mark_dropped)
            except Exception as e:  # noqa: BLE001 (OutboxFull, OutboxError, a bug: next check)
                self.count("source_gap_failures")
                self._throttled("source_gaps", logging.ERROR, "records %s dropped are not "
                                "marked yet (kept for the next check): %s: %s", s.name,
                                type(e).__name__, e)
                if isinstance(e, OutboxError):
                    self._disk_refused(e)
        if marked:
            self.count("source_drops_marked", marked)
            self.disk.wrote()
            log.warning("%d record(s) of LoRaWAN uplinks dropped while the disk was full are "
                        "marked as gateway gaps (reported upstream)", marked)
            if self.forwarder is not None:
                self._call("forwarder", self.forwarder.wake)

    def _check_disk(self):
        """Mark what sources dropped, look at the outbox's ``disk_full_events``, clear the
        alarm when due; True if the pending events may be stored alone now."""
        self._store_source_gaps()
        seen = self._disk_events()
        if seen is not None:
            if self._disk_seen is not None and seen > self._disk_seen:
                self._disk_full("SQLite reported the disk full %d time(s) while storing; the "
                                "outbox made room by its policy" % (seen - self._disk_seen),
                                "disk_full_events +%d" % (seen - self._disk_seen))
            self._disk_seen = seen
        if self.disk.active:
            free = free_bytes(self.disk.path)
            ev = self.disk.check(self._now_ms(), self._wall(),
                                 room=free is not None and free >= FREE_BYTES)
            if ev is not None:
                log.warning("alarm %s cleared: %s (%d full-disk event(s) in the episode)",
                            ev.rule_id, ev.detail["detail"], ev.value)
        if not self.disk.pending:
            return False
        if not self.disk.active:
            return True
        try:
            return bool(self.forwarder is not None and self.forwarder.status().get("connected"))
        except Exception:  # noqa: BLE001 (a broken part must not stop the loop)
            return False
