"""The forwarder contract: how the agent hands the outbox to whatever carries data upstream.

A forwarder runs its own thread(s). It takes rows (and gap markers) from the outbox, sends
them upstream, and deletes them with ``outbox.ack(ids)`` / ``outbox.ack_gaps(ids)`` only once
the upstream confirmed them (MQTT: the PUBACK; LoRaWAN: the modem's confirmed send). When its
connection is lost it calls ``outbox.release_all()`` so every row it held goes out again:
every hop is at-least-once and the platform deduplicates on ``(device_id, boot_epoch, seq)``
(RELIABILITY.md rule 1). It never buffers the backlog itself: it takes from the outbox only
what its in-flight window has room for, so memory is bounded whatever the backlog.

Implementations: ``gateway.forward.mqtt.MQTTForwarder``, ``gateway.forward.lorawan``.
"""


class Forwarder:
    """Base class: every method here must be overridden (see the module docstring)."""

    name = "forwarder"

    def start(self, outbox):
        """Start the forwarder's thread(s) on ``outbox`` (a ``gateway.outbox.Outbox``): take
        rows and gap markers, send them upstream, ``outbox.ack(ids)`` only on PUBACK /
        confirmed send, ``outbox.release_all()`` on disconnect. Returns at once."""
        raise NotImplementedError

    def stop(self, timeout_s=5.0):
        """Stop sending, close the connection cleanly, release what is in flight and join the
        thread(s), waiting at most ``timeout_s``. Returns True if they ended."""
        raise NotImplementedError

    def wake(self):
        """New rows were committed: stop waiting for them (no busy polling). Never blocks and
        never raises; calling it while disconnected does not hurry a reconnect."""
        raise NotImplementedError

    def counters(self):
        """A flat ``{"name": int}``: ``forwarded`` (rows confirmed upstream), ``reconnects``,
        ``publish_errors`` and the implementation's own (gauges such as ``in_flight`` too)."""
        raise NotImplementedError

    def status(self):
        """``{"connected": bool, "detail": str, ...}`` for ``civicedge gateway status``."""
        raise NotImplementedError


class InFlight:
    """Bookkeeping (pure) of messages sent and not yet confirmed, and of the outbox rows and
    gap markers they carry: a row may travel in several messages (its readings pack, its
    alarms, its gap message) and is done only when every one of them is confirmed.

    Messages are anything with ``row_ids`` and ``gap_ids`` (``gateway.upstream.Message``);
    keys are the transport's (an MQTT message id)."""

    def __init__(self):
        self.pending = {}  # key -> message awaiting confirmation
        self.refs = {}  # row id -> messages carrying it that are not confirmed yet
        self.done_rows, self.done_gaps = [], []  # confirmed, not yet acked in the outbox

    def __len__(self):
        return len(self.pending)

    def carry(self, messages, row_ids=()):
        """``messages`` will be sent for ``row_ids`` (the rows just taken): count them; rows no
        message carries (nothing to send) are done at once. Returns how many those were."""
        for msg in messages:
            for rid in msg.row_ids:
                self.refs[rid] = self.refs.get(rid, 0) + 1
        idle = [rid for rid in row_ids if rid not in self.refs]
        self.done_rows.extend(idle)
        return len(idle)

    def sent(self, key, msg):
        self.pending[key] = msg

    def confirm(self, key):
        """The message ``key`` was confirmed: returns it (None if unknown) and moves the rows
        and markers it completes to ``done_rows`` / ``done_gaps``."""
        msg = self.pending.pop(key, None)
        if msg is not None:
            for rid in msg.row_ids:
                left = self.refs.get(rid, 1) - 1
                if left <= 0:
                    self.refs.pop(rid, None)
                    self.done_rows.append(rid)
                else:
                    self.refs[rid] = left
            self.done_gaps.extend(msg.gap_ids)
        return msg

    def refuse(self, key):
        """The message ``key`` was refused: returns it (None if unknown); its rows stay
        unfinished until ``clear`` (their outbox rows are then released and sent again)."""
        return self.pending.pop(key, None)

    def take_done(self):
        """``(row_ids, gap_ids)`` done since the last call, to ack in the outbox."""
        rows, gaps = self.done_rows, self.done_gaps
        self.done_rows, self.done_gaps = [], []
        return rows, gaps

    def clear(self):
        """Forget everything (the connection is gone; the caller releases the outbox rows)."""
        self.pending, self.refs, self.done_rows, self.done_gaps = {}, {}, [], []
