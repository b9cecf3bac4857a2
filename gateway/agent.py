"""``Agent``: the gateway's ingest loop, between the sources, the outbox and the forwarder.

Theory of operation (the whole story, with the log lines: docs/gateway-agent.md)
---------------------------------------------------------------------------------
Sources run their own threads and call ``sink`` (a bounded queue: when full it blocks up to
``put_timeout_s``, then says False and the unacked arrival is dropped; the node resends).
ONE loop thread (``run``) owns the pipeline and the alarm engine. ``step`` takes what is
queued (up to ``batch_max``), runs it through ``Ingest`` and stores the batch with ONE
``outbox.put_many(records, state=...)``: rows, replay state, alarm state and the gateway
stream's counter commit together. Only then ``ingest.commit()``, the acks (``arrival.reply``)
and ``forwarder.wake()``. If the outbox refuses, ``ingest.rollback()``, no acks, the failure
is counted and the loop backs off ``backoff_s``. Stored records are the pipeline's, plus
``"alarms"`` (events they raised or cleared) and ``"rx_t"`` (receive time) when untimed;
records marked ``duplicate`` are not stored again (the replay state that marks them was
committed with their rows). While a batch is processed the cycle collector waits (its objects
live until the commit and form no cycles; scanning them was ~3 % of ingest), then runs as
before. Timers run on the clock's monotonic ticks: alarm ``tick`` (its
events become records ``(gateway_id, boot_epoch, seq)`` of kind ``event``; only while wall
time is trusted; a tick alone that closed no window changed nothing and stores nothing),
``outbox.enforce()`` (a period after the last stored batch, whose ``put_many`` applied the
bounds too), an optional ``wall_check()`` (NTP), and the link
check: a TLS handshake refused ``tls_alarm_after`` times in a row raises the gateway's
``tls_failure`` alarm, cleared once connected (``gateway.agent_links``), and a full disk
(``SQLITE_FULL``) raises ``disk_full``, cleared after ``disk_clear_s`` without one
(``gateway.agent_disk``: its events wait in memory until a store goes through). Their events
are records of the gateway's stream, stored with the alarms' state. The gateway
boot epoch is the stored one + 1 at each start (the first: the trusted wall time in Unix s,
else 1, so a new outbox file does not reuse an old epoch). Rejected input is counted by the
pipeline and logged at most once per reason per ``log_interval_s`` (detail and at most 8
bytes of hex: never keys or payloads). ``stop``: sources, drain and commit the queue,
forwarder, outbox.

Arrivals with ``settled`` (LoRaWAN uplinks, which no node resends) hear what became of them
once the batch is done: ``settled(True)`` after the commit (or when the pipeline rejected
them), ``settled(False)`` when the outbox refused the batch; the source holds those for
another try. A ``GAP`` arrival is a gap record of a device's own stream that a source made
(no built-in source makes one): stored as it is, under ``(device_id, first_epoch, seq)``. Uplinks a
source had to drop are not gap records of the node's: the link check hands them to the
outbox as the gateway's own drops (``store_gaps`` → ``Outbox.mark_dropped``, reason
``gateway_outbox`` upstream).

Files: this module is the loop; ``gateway.agent_timers`` has time, timers and throttled
logging, ``gateway.agent_view`` the snapshot, ``gateway.agent_records`` the records stored
for results and gap arrivals, ``gateway.agent_links`` the TLS alarm, ``gateway.agent_disk``
the disk alarm.
"""

import gc
import logging
import queue
import threading

from gateway.agent_disk import DEFAULT_CLEAR_S, DiskAlarm, DiskCheck
from gateway.agent_links import DEFAULT_AFTER, LinkAlarms
from gateway.agent_timers import EVENTS_PER_RECORD, WALL_STEP_S, Timers  # noqa: F401 (API)
from gateway.agent_records import GAP, gap_record, settle as _settle
from gateway.agent_records import stored_records as _stored  # the bench imports it from here
from gateway.agent_view import View
from gateway.outbox import OutboxError
from gateway.outbox_state import JSONText

FRAME, LORAWAN = "frame", "lorawan"  # Arrival.kind, as gateway.sources defines (and GAP)
STATE_REPLAY, STATE_ALARMS, STATE_GATEWAY = "replay", "alarms", "gateway"
STATE_LINKS, STATE_DISK = "links", "disk"  # the TLS and disk alarms standing
_HEX_BYTES = 8
_WARN = ("auth_failures", "replays", "decode_errors")
_STORE_FAILURES = {"OutboxFull": "outbox_full", "OutboxError": "outbox_error",
                   "OutboxCorrupt": "outbox_error", "ValueError": "invalid"}
# Tuning (keyword arguments of Agent; docs/gateway-agent.md says why each value).
TUNING = {"queue_size": 4096, "batch_max": 2000, "tick_s": 60.0, "enforce_s": 60.0,
          "log_interval_s": 60.0, "put_timeout_s": 1.0, "backoff_s": 1.0, "poll_s": 0.5,
          "wall_check_s": 60.0, "link_check_s": 5.0, "tls_alarm_after": DEFAULT_AFTER,
          "disk_clear_s": DEFAULT_CLEAR_S}
_TIMERS = ("tick", "enforce", "wall_check", "link_check")

log = logging.getLogger("civicedge.gateway")


class Agent(Timers, View, DiskCheck):
    """The loop. ``ingest``: a ``gateway.pipeline.Ingest`` (with its ``alarms`` engine or
    None); ``outbox``: a ``gateway.outbox.Outbox``; ``clock``: the ``drivers.clock``
    contract; ``gateway_id``: the gateway's own stream id; ``sources``: objects following
    ``gateway.sources.Source``; ``forwarder``: one following ``gateway.forward.Forwarder``
    (or None). Raises ``ValueError`` naming a bad argument."""

    def __init__(self, ingest, outbox, clock, *, gateway_id, sources=(), forwarder=None,
                 wall_check=None, **tuning):
        t = dict(TUNING, **tuning)
        for name, v in t.items():
            int_ = isinstance(TUNING.get(name), int)
            if name not in TUNING or isinstance(v, bool) or not isinstance(
                    v, int if int_ else (int, float)) or v < int_:
                raise ValueError("tuning %s=%r: known are %s; counts are ints >= 1, times "
                                 "numbers >= 0 (s)" % (name, v, ", ".join(TUNING)))
        if not isinstance(gateway_id, str) or not gateway_id:
            raise ValueError("gateway_id must be non-empty text, got %r" % (gateway_id,))
        names = [getattr(s, "name", None) for s in sources]
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError("sources need distinct non-empty names, got %r" % (names,))
        self.ingest, self.alarms, self.outbox, self.clock = ingest, ingest.alarms, outbox, clock
        self.gateway_id, self.sources, self.forwarder = gateway_id, list(sources), forwarder
        self.tuning, self.wall_check = t, wall_check
        self._period_ms = {k: int(t[k + "_s"] * 1000) for k in _TIMERS}
        self.links = LinkAlarms(gateway_id, t["tls_alarm_after"])
        self.disk, self._disk_seen = DiskAlarm(gateway_id, outbox.path, t["disk_clear_s"]), None
        self._log_ms = int(t["log_interval_s"] * 1000)
        self._queue = queue.Queue(t["queue_size"])
        self._lock = threading.Lock()  # counters and last_seen: sinks and snapshot() read too
        self.counters = {}
        self.last_seen = {}  # device_id -> wall s of its last accepted input
        self._logged = {}  # reason -> [ms when logged, suppressed since]
        self._anchor = clock.ticks_ms()
        self._mono = 0  # ms since construction, from ticks (re-anchored: wraps never matter)
        self._due, self._active_alarms = {}, 0
        self._tick_anchor = None  # (wall s, running ms): alarm windows close on running time
        self.boot_epoch, self.next_seq = None, 0
        self._started = self._stopped = False
        self._halt = threading.Event()  # run()'s stop event: backoff waits end on it

    # -- small tools ---------------------------------------------------------------------
    def count(self, name, n=1):
        """Add ``n`` to the agent's counter ``name`` (thread-safe)."""
        if n:
            with self._lock:
                self.counters[name] = self.counters.get(name, 0) + n

    # -- the sources' side -----------------------------------------------------------------
    def sink(self, arrival):
        """Queue ``arrival`` (a ``gateway.sources.Arrival``); blocks up to ``put_timeout_s``
        while the queue is full, then returns False (counted ``agent.overflow``). Never
        raises."""
        try:
            self._queue.put(arrival, timeout=self.tuning["put_timeout_s"])
            return True
        except Exception:  # noqa: BLE001 (queue.Full; and a sink never raises into a source)
            self.count("overflow")
            return False

    def queued(self):
        """Arrivals the sources have queued that the agent's loop has not taken yet."""
        return self._queue.qsize()

    # -- life cycle ------------------------------------------------------------------------
    def start(self):
        """Take the next gateway boot epoch (stored at once), start the forwarder, then the
        sources. Raises ``OutboxError`` only if the outbox cannot be read."""
        if self._started:
            raise RuntimeError("Agent.start: already started")
        self._started = True
        now = self._now_ms()
        self._due = {k: now + p for k, p in self._period_ms.items()}
        self._tick_now()  # anchor the alarm windows' time now, if the wall clock is trusted
        try:
            st = self.outbox.load_state(STATE_GATEWAY, None)
        except ValueError:  # hand-edited: a fresh epoch from the wall clock below
            st = None
        epoch, wall = st.get("boot_epoch") if isinstance(st, dict) else None, self._wall()
        self.boot_epoch = epoch + 1 if type(epoch) is int and 0 <= epoch < 0xFFFFFFFF else (
            int(wall) if wall and 1 < wall < 0xFFFFFFFF else 1)
        self.next_seq = 0
        for alarm, name in ((self.links, STATE_LINKS), (self.disk, STATE_DISK)):
            try:
                alarm.load(self.outbox.load_state(name, None))
            except ValueError:  # hand-edited: no alarm standing
                pass
        try:
            self._disk_seen = self._disk_events()
            self.outbox.put_many([], state={STATE_GATEWAY: self._gateway_state()})
        except OutboxError as e:  # stored with the first batch instead
            log.error("could not store the gateway's boot epoch now (%s); continuing", e)
            self._disk_refused(e)
        log.info("gateway %s starting: boot epoch %d, %d source(s), forwarder %s",
                 self.gateway_id, self.boot_epoch, len(self.sources),
                 type(self.forwarder).__name__ if self.forwarder else "none")
        if self.forwarder is not None:
            self._call("forwarder", self.forwarder.start, self.outbox)
        for s in self.sources:
            self._call("source", s.start, self.sink, name=s.name)

    def _call(self, what, fn, *args, name=None):
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 (one part failing must not stop the others)
            self.count("%s_errors" % what)
            log.error("%s: %s failed: %s: %s", what if name is None else what + " " + name,
                      fn.__name__, type(e).__name__, e)

    def run(self, stop_event, ready=None):
        """``start``, then loop until ``stop_event`` is set, then ``stop``. ``ready()`` is
        called once everything started (systemd's READY=1)."""
        self._halt = stop_event
        try:
            self.start()
            if ready is not None:
                ready()
            while not stop_event.is_set():
                try:
                    self.step(self.tuning["poll_s"])
                except Exception:  # noqa: BLE001 (a bug must not stop the gateway)
                    self.count("loop_errors")
                    self._throttled("loop_error", logging.ERROR, "ingest loop error, "
                                    "continuing", exc_info=True)
                    stop_event.wait(self.tuning["backoff_s"])
        finally:
            self.stop()

    def stop(self, timeout_s=5.0):
        """Stop the sources, store what they queued, stop the forwarder, close the outbox."""
        if self._stopped:
            return
        self._stopped = True
        for s in self.sources:
            self._call("source", s.stop, timeout_s, name=s.name)
        if self._started:
            while not self._queue.empty():
                if not self._batch(self._drain(0), tick=False):
                    break  # the outbox refuses: the rest stays unacked, the nodes resend
            if self.disk.pending and not self._batch([], False, alone=True):
                log.error("%d disk_full alarm event(s) not stored at the stop (the disk is "
                          "full); a full disk at the next start raises it again",
                          len(self.disk.pending))
        if self.forwarder is not None:
            self._call("forwarder", self.forwarder.stop, timeout_s)
        self.outbox.close()
        log.info("gateway %s stopped", self.gateway_id)

    # -- the loop -------------------------------------------------------------------------
    def _drain(self, timeout_s):
        out = []
        try:
            out.append(self._queue.get(timeout=timeout_s) if timeout_s > 0
                       else self._queue.get_nowait())
            while len(out) < self.tuning["batch_max"]:
                out.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return out

    def step(self, timeout_s=0.0):
        """One turn: wait up to ``timeout_s`` (real time) for arrivals, store and ack a batch,
        run the timers that are due. Returns how many arrivals it processed."""
        arrivals = self._drain(timeout_s)
        now = self._now_ms()
        tick = self.alarms is not None and now >= self._due.get("tick", 0)
        if tick:
            self._due["tick"] = now + self._period_ms["tick"]
            tick = self._tick_now() is not None  # window verdicts need a trusted wall clock
        if arrivals or tick:
            collecting = gc.isenabled()  # a batch's objects live until its commit and form no
            if collecting:               # cycles: the cycle collector waits for it to end
                gc.disable()
            try:
                stored = self._batch(arrivals, tick)
            finally:
                if collecting:
                    gc.enable()
            if not stored and self.tuning["backoff_s"]:
                self._halt.wait(self.tuning["backoff_s"])  # the disk needs a moment, not a spin
        for name, fn in (("enforce", self._enforce), ("wall_check", self._check_wall),
                         ("link_check", self._check_links)):
            if now >= self._due.get(name, 0):
                self._due[name] = now + self._period_ms[name]
                fn()
        return len(arrivals)

    def _check_links(self):
        """The TLS and disk alarms (``gateway.agent_links``, ``gateway.agent_disk``): their
        events stored as records of the gateway's stream with the alarms' state; if the
        outbox refuses, the links' state goes back and the next check raises (or clears)
        again, and the disk's events stay pending."""
        before = self.links.state()
        events = self._link_events()
        alone = self._check_disk()
        if (events or alone) and not self._batch([], False, events, alone):
            self.links.load(before)

    def _ingest(self, a, rx):
        if a.kind == FRAME:
            return self.ingest.ingest_frame(a.data, a.source, device_id=a.device_id,
                                            received_s=rx)
        if a.kind == LORAWAN:
            return self.ingest.ingest_lorawan(a.dev_eui, a.data, a.dedup_id, received_s=rx,
                                              source=a.source)
        raise ValueError("arrival kind %r is neither %r nor %r" % (a.kind, FRAME, LORAWAN))

    def _batch(self, arrivals, tick, events=(), alone=False):
        """Ingest, store with state in one transaction, then commit and ack (and settle).
        ``events``: the gateway's own alarm events to store too; the disk alarm's pending
        ones go with anything stored (``alone``: even with nothing else). False if the
        outbox refused (rolled back, nothing acked, settled False)."""
        done, records, seen, settle, gaps = [], [], {}, [], 0
        self.count("arrivals", len(arrivals))
        for a in arrivals:
            if a.settled is not None:
                settle.append(a.settled)
            try:
                rx = a.received_s  # receive time: the alarms' for untimed records, and rx_t
                if rx is None:
                    rx = self._wall()
                if a.kind == GAP:
                    records.append(gap_record(a, rx))
                    gaps += 1
                    continue
                res = self._ingest(a, rx)
            except Exception as e:  # noqa: BLE001 (a pipeline bug: drop this input only)
                self.count("ingest_errors")
                self._throttled("ingest_error", logging.ERROR, "input from %s dropped: "
                                "%s: %s", str(getattr(a, "source", "?"))[:80],
                                type(e).__name__, str(e)[:200])
                continue
            done.append((a, res))
            if not res.accepted:
                self._rejected(a, res)
                continue
            records.extend(_stored(res, rx))
            seen[res.device_id] = self.clock.wall_s()
        if not (seen or tick or events or gaps or (alone and self.disk.pending)):
            _settle(settle, True)  # nothing accepted: no state changed, nothing to store
            return True
        seq0, ticked, disk = self.next_seq, [], list(self.disk.pending)
        try:
            ticked = self._tick_records() if tick else []
            if tick and not (seen or ticked or events or gaps or disk or self.alarms.changed()):
                # a tick that closed no window: no state changed, nothing to store (no
                # transaction, no fsync); the next batch stores the states as they are
                self.count("ticks")
                _settle(settle, True)
                return True
            records.extend(ticked)
            if events or disk:
                records.extend(self._event_records(list(events) + disk, self._wall()))
            state = {STATE_REPLAY: JSONText(self.ingest.replay_state_json()),
                     STATE_GATEWAY: self._gateway_state()}
            if self.alarms is not None:  # encoded by the engine: only what changed is new
                state[STATE_ALARMS] = JSONText(self.alarms.state_json())
            if events:
                state[STATE_LINKS] = self.links.state()
            if disk:
                state[STATE_DISK] = self.disk.state()
            put = self.outbox.put_many(records, state=state)
        except Exception as e:  # noqa: BLE001 (OutboxError, OutboxFull, ValueError, a bug)
            self.ingest.rollback()  # the alarm engine's too
            self.next_seq = seq0
            reason = _STORE_FAILURES.get(type(e).__name__, "error")
            self.count("store_failures." + reason)
            self._throttled("store:" + reason, logging.ERROR, "batch of %d input(s) not "
                            "stored, not acked (nodes will resend); LoRaWAN uplinks wait in "
                            "their source: %s: %s", len(arrivals), type(e).__name__, e)
            _settle(settle, False)
            self._disk_refused(e)
            return False
        self.ingest.commit()
        # put_many applied the outbox's bounds in that transaction: the timer's own
        # enforce() (a transaction and an fsync of its own) waits a period from now
        self._due["enforce"] = self._now_ms() + self._period_ms["enforce"]
        self.disk.wrote()
        self.disk.flushed(len(disk))
        if self.alarms is not None:
            self._active_alarms = self.alarms.active_count()
        acks = 0
        for a, res in done:
            if res.ack is not None and a.reply is not None:
                try:
                    a.reply(res.ack)
                    acks += 1
                except Exception:  # noqa: BLE001 (reply never raises, by contract; still)
                    self.count("reply_errors")
        _settle(settle, True)
        with self._lock:
            self.last_seen.update(seen)
        for name, n in (("batches", 1), ("acks", acks), ("records_stored", len(put.new)),
                        ("bounds_dropped", put.dropped), ("ticks", int(tick)),
                        ("tick_events", sum(len(r.record["alarms"]) for r in ticked)),
                        ("gap_records", gaps), ("link_events", len(events)),
                        ("disk_events", len(disk))):
            self.count(name, n)
        if self.forwarder is not None and put.new:
            self._call("forwarder", self.forwarder.wake)
        return True

    def _rejected(self, a, res):
        self.count("rejected")
        family = res.reason.split(".", 1)[0] if res.reason else "unknown"
        level = logging.WARNING if family in _WARN else logging.INFO
        data = a.data if isinstance(a.data, (bytes, bytearray)) else b""
        self._throttled("rejected:%s" % res.reason, level, "rejected (%s): %s [%d bytes: %s%s]",
                        res.reason, res.detail, len(data), bytes(data[:_HEX_BYTES]).hex(),
                        "..." if len(data) > _HEX_BYTES else "")

    def _gateway_state(self):
        return {"boot_epoch": self.boot_epoch, "next_seq": self.next_seq}

