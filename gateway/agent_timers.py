"""The agent's time and timers: a mixin of ``gateway.agent.Agent``.

Running time (``_now_ms``: the clock's monotonic ticks, re-anchored so a wrap never matters),
the time alarm windows close on (``_tick_now``: the trusted wall time at the first tick,
advanced by running time; only a confirmed NTP synchronisation re-anchors it), the alarm
tick's records in the gateway's own stream, the outbox bounds, the NTP check, the link
check (``gateway.agent_links``: the TLS alarm) and log throttling (one line per reason per
``log_interval_s``). docs/gateway-agent.md, "Timers".

The mixin uses the agent's ``clock``, ``alarms``, ``outbox``, ``links``, ``sources``,
``forwarder``, ``gateway_id``, ``boot_epoch``, ``next_seq``, ``wall_check``, its ``count``
and ``_disk_refused`` (``gateway.agent_disk``: a full disk raises ``disk_full``).
"""

import logging

from gateway.alarms import CLEARED, RAISED
from gateway.outbox import OutboxError, OutboxRecord
from gateway.pipeline import ALARM, ROUTINE

EVENTS_PER_RECORD = 50
WALL_STEP_S = 2.0  # a wall clock this far from running time has been stepped

log = logging.getLogger("civicedge.gateway")


class Timers:
    """Time, timers and throttled logging of ``Agent`` (module docstring)."""

    def _now_ms(self):
        t = self.clock.ticks_ms()
        self._mono += max(0, self.clock.ticks_diff(t, self._anchor))
        self._anchor = t
        return self._mono

    def _wall(self):  # Unix s, or None while wall time is not trusted
        return self.clock.wall_s() if self.clock.wall_trusted() else None

    def _tick_now(self):
        """The time alarm windows are closed on (Unix s), or None while the wall clock is not
        trusted: the trusted wall time at the first tick, advanced by running time since. A
        wall-clock step does not move it (a jump of a day must not close today's windows
        early, RELIABILITY.md); only a confirmed NTP synchronisation re-anchors it
        (``_check_wall``)."""
        if not self.clock.wall_trusted():
            return None
        mono = self._now_ms()
        if self._tick_anchor is None:
            self._tick_anchor = (self.clock.wall_s(), mono)
        wall0, mono0 = self._tick_anchor
        return wall0 + (mono - mono0) / 1000.0

    def _throttled(self, key, level, fmt, *args, exc_info=False):
        """Log once per ``key`` per interval; the next line says how many were held back."""
        now = self._now_ms()
        seen = self._logged.get(key)
        if seen is not None and now - seen[0] < self._log_ms:
            seen[1] += 1
            return
        self._logged[key] = [now, 0]
        if seen and seen[1]:
            fmt += " (and %d more like it in the last %d s)"
            args += (seen[1], (now - seen[0]) // 1000)
        log.log(level, fmt, *args, exc_info=exc_info)

    # -- the gateway's own stream -------------------------------------------------------------
    def _event_records(self, events, now_s):
        """``events`` (``AlarmEvent``s) as records of the gateway's stream, at most
        ``EVENTS_PER_RECORD`` a record; lane ``alarm`` if any raised or cleared. Takes seqs."""
        out = []
        for i in range(0, len(events), EVENTS_PER_RECORD):
            chunk = events[i:i + EVENTS_PER_RECORD]
            lane = ALARM if any(e.kind in (RAISED, CLEARED) for e in chunk) else ROUTINE
            rec = {"seq": self.next_seq, "t": now_s, "kind": "event",
                   "alarms": [e.to_dict() for e in chunk]}
            out.append(OutboxRecord(self.gateway_id, self.boot_epoch, self.next_seq, rec, lane))
            self.next_seq += 1
        return out

    def _tick_records(self):
        now_s = self._tick_now()
        return self._event_records(self.alarms.tick(now_s), now_s)

    # -- timers ----------------------------------------------------------------------------------
    def _enforce(self):
        try:
            self.count("bounds_dropped", self.outbox.enforce())
        except OutboxError as e:
            self.count("enforce_errors")
            self._throttled("enforce", logging.ERROR, "outbox bounds not applied: %s", e)
            self._disk_refused(e)

    def _check_wall(self):
        try:
            if self.wall_check is None:
                return
            self.wall_check()
            if self.clock.wall_trusted() and self._tick_anchor is not None:
                wall, ticked = self.clock.wall_s(), self._tick_now()
                if abs(wall - ticked) > WALL_STEP_S:  # NTP confirms the new time: follow it
                    self.count("wall_steps")
                    self._throttled("wall_step", logging.WARNING, "wall clock stepped %+.0f s "
                                    "(NTP synchronised): alarm windows follow it", wall - ticked)
                    self._tick_anchor = (wall, self._now_ms())
        except Exception as e:  # noqa: BLE001 (a failing check must not stop the loop)
            self._throttled("wall_check", logging.WARNING, "wall clock check failed: %s", e)

    def _link_events(self):
        """Look at every part's links (``gateway.agent_links``); the events to store, logged."""
        parts = [("source." + s.name, s) for s in self.sources]
        parts += [("forwarder", self.forwarder)] if self.forwarder is not None else []
        now_s, events = self._wall(), []
        for label, part in parts:
            try:
                got = self.links.observe(label, dict(part.counters()), dict(part.status()),
                                         now_s)
            except Exception:  # noqa: BLE001 (a broken part must not stop the loop)
                self.count("link_check_errors")
                continue
            for ev in got:
                if ev.kind == RAISED:
                    log.error("ALARM %s raised: %s refused %d TLS handshake(s) in a row (%s); "
                              "readings are kept in the outbox and nothing is sent in "
                              "plaintext: check ca_file, the broker's certificate and the "
                              "Pi's clock", ev.rule_id, label, ev.value,
                              ev.detail.get("last_error") or ev.detail.get("detail", "?"))
                else:
                    log.warning("alarm %s cleared: %s is connected again", ev.rule_id, label)
            events += got
        return events
