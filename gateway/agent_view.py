"""What the agent shows: ``Agent.snapshot()``, every counter and gauge as one flat dict for
the metrics endpoint (``gateway.metrics``) and ``status``. A mixin of ``gateway.agent.Agent``
(it uses the agent's ``_lock``, ``counters``, ``last_seen``, ``_queue``, ``_mono``, ``clock``,
``boot_epoch``, ``next_seq``, ``ingest``, ``alarms``, ``_active_alarms``, ``links``,
``disk``, ``outbox``, ``sources`` and ``forwarder``)."""

import dataclasses


class View:
    """``snapshot`` of ``Agent`` (module docstring)."""

    def snapshot(self):
        """Every counter and gauge as one flat dict ``name -> number`` (thread-safe):
        ``agent.*`` (this loop; ``agent.link_alarms_active``: TLS alarms standing,
        ``agent.disk_full_alarm_active`` 0/1 and ``agent.disk_events_pending``: its events
        not stored yet),
        ``pipeline.*`` and ``alarms.*`` (the core's counters), ``outbox.*``
        (``Outbox.stats``; ``outbox.oldest_age_s`` is 0 when empty), ``source.<name>.*`` and
        ``forwarder.*`` (their ``counters()``, plus ``connected`` 0/1 from ``status()``),
        ``last_seen_s.<device_id>`` (wall s) and ``gateway.*``."""
        with self._lock:
            out = {"agent." + k: v for k, v in self.counters.items()}
            out.update(("last_seen_s." + k, v) for k, v in self.last_seen.items())
        out.update({"agent.queue_len": self._queue.qsize(), "agent.queue_max":
                    self._queue.maxsize, "agent.uptime_s": self._mono / 1000.0,
                    "agent.wall_trusted": int(bool(self.clock.wall_trusted())),
                    "agent.link_alarms_active": len(self.links.active),
                    "agent.disk_full_alarm_active": len(self.disk.active),
                    "agent.disk_events_pending": len(self.disk.pending),
                    "gateway.boot_epoch": self.boot_epoch or 0,
                    "gateway.next_seq": self.next_seq})
        out.update(("pipeline." + k, v) for k, v in dict(self.ingest.counters).items())
        if self.alarms is not None:
            out.update(("alarms." + k, v) for k, v in dict(self.alarms.counters).items())
            out["alarms.active"] = self._active_alarms
        try:
            out.update(outbox_stats(self.outbox.stats()))
            h = self.outbox.history_stats()
            out.update({"outbox.history.rows": h.rows, "outbox.history.bytes": h.bytes,
                        "outbox.history.trimmed_size": h.trimmed_size,
                        "outbox.history.trimmed_age": h.trimmed_age,
                        "outbox.history.trimmed_full": h.trimmed_full})
        except Exception:  # noqa: BLE001 (closed by stop, or its disk failing: stats later)
            out["agent.stats_errors"] = 1
        parts = [("source." + s.name + ".", s) for s in self.sources]
        parts += [("forwarder.", self.forwarder)] if self.forwarder is not None else []
        for prefix, part in parts:
            try:  # a part's numbers, and connected 0/1 from its status()
                got = {k: v for k, v in dict(part.counters()).items()
                       if isinstance(v, (int, float))}
                got["connected"] = int(bool(dict(part.status()).get("connected")))
            except Exception:  # noqa: BLE001 (a broken part must not break the metrics)
                got = {"snapshot_errors": 1}
            out.update((prefix + k, v) for k, v in got.items())
        return out


def outbox_stats(st):
    """``Outbox.stats()`` (``OutboxStats``) as flat ``outbox.*`` keys; per-lane and
    per-reason dicts as ``outbox.<field>.<lane>``."""
    out = {}
    for k, v in dataclasses.asdict(st).items():
        if isinstance(v, dict):
            out.update(("outbox.%s.%s" % (k, lane), n) for lane, n in v.items())
        else:
            out["outbox." + k] = 0.0 if v is None else v  # oldest_age_s of an empty outbox
    return out
