"""``MQTTForwarder``: the outbox to the council's MQTT broker, rows deleted only on PUBACK.

Theory of operation (the whole story: docs/gateway-upstream.md; payloads: gateway.upstream)
---------------------------------------------------------------------------------------
One thread of our own does everything but the outbox deletes: connect, drive paho-mqtt 2.x
through its external-loop calls (``loop_read``/``loop_write``/``loop_misc`` after a
``select`` on the socket and on a wake-up socket pair), take rows, publish, read the
PUBACKs. paho's callbacks run in this thread and paho runs no thread of its own, so nothing
races and a stop never waits on paho. A second thread, the ``Acker``, deletes delivered rows.

* Each connection is a fresh paho client (it holds no message of an earlier connection):
  stable ``client_id``, persistent session, TLS with verification (never plaintext instead),
  a retained last will ``{"state": "offline"}``, then a retained ``{"state": "online"}``.
  Failures are counted by reason and retried after a jittered backoff 1→120 s
  (``gateway.backoff``), reset by a connection that stays up ``STABLE_S``; meanwhile the
  thread sleeps in ``select``.
* At most ``max_inflight`` publishes (fewer if an MQTT 5 broker's Receive Maximum says so)
  await a PUBACK; rows are taken from the outbox only when the window has room, one window's
  worth at a time, and not while more than ``ACK_BACKLOG_ROWS`` PUBACKed rows wait for the
  acker (the deletes set the pace), so memory is bounded whatever the backlog.
* A PUBACK (``on_publish``) frees its slot; rows whose every message was PUBACKed are handed
  to the ``Acker`` (``gateway.forward.mqtt_acks``), whose own thread deletes them with one
  ``outbox.ack`` per ``ACK_DELAY_S`` (one fsync for many PUBACKs) while this thread takes,
  encodes and sends the next rows. A PUBACK with a failure reason (MQTT 5, e.g. 0x87 when
  the ACL refuses a topic) deletes nothing, counts a ``publish_error`` and drops the
  connection. On any disconnect: the acker finishes its deletes, then
  ``outbox.release_all()``.
* paho finds a dead link 2 × its keepalive after the last packet, so it gets ¾ of
  ``keepalive_s``: a half-open link is dropped within 1.5 × ``keepalive_s``.
* A link that answers PINGREQs but PUBACKs nothing (a stalled broker, a half-open path) is
  found by ``up.puback_timeout_s``: when the oldest publish awaiting its PUBACK has waited that
  long since it was sent or since the last PUBACK (a deep window on a slow link still moves),
  ``puback_timeouts`` is counted and the connection dropped; its rows are released and sent
  again on the next connection (a fresh paho client: paho itself resends nothing).

Files: this module holds the forwarding (the contract, the thread's loop, the window, take,
publish, PUBACK → ack, clean stop, teardown); ``gateway.forward.mqtt_link`` holds the
connection it runs on (``MQTTLink``, a mixin of ``MQTTForwarder``: TLS context, paho client
factory, connect and its failure reasons, the ``select`` network step, the backoff sleep,
paho's callbacks); ``gateway.forward.mqtt_acks`` the deletes of delivered rows (``Acker``).
"""

import logging
import socket
import threading
import time
from collections import Counter, deque

import paho.mqtt.client as mqtt

from gateway import security, upstream
from gateway.backoff import Backoff
from gateway.forward import Forwarder, InFlight
from gateway.forward.mqtt_acks import Acker
from gateway.forward.mqtt_link import (  # noqa: F401 (importable from here as before)
    _AUTH_CODES, MQTT311, MQTT5, SESSION_EXPIRY_S, MQTTLink)
from gateway.outbox_sql import OutboxError

log = logging.getLogger("civicedge.gateway.forward.mqtt")

GAP_POLL_S = 30.0
TAKE_MAX_ROWS = 10000  # rows read from the outbox at once (memory bound per take)
ACK_DELAY_S = 0.2  # PUBACKed rows are deleted together within this (one fsync for many;
# each transaction rewrites the key index's page of each device and the history's: one of
# 4096 rows wrote 1.29x the bytes a row of one of 16384, 8192 rows 1.08x; at the drain's rate
# 0.2 s is ~12000 rows)
ACK_BATCH_ROWS = 16384  # at most this many in one (a bigger one costs less a row, more memory)
ACK_FLUSH_S = 10.0  # at a disconnect, wait this long at most for the deletes to finish
ACK_BACKLOG_ROWS = 2 * ACK_BATCH_ROWS  # no take while more PUBACKed rows wait for a delete
IDLE_WAIT_S = 1.0  # select timeout with nothing to send: paho's keepalive needs the calls
STABLE_S = 10.0  # a connection up this long resets the backoff (a broker that accepts and
# drops at once, e.g. another client with our client_id, is retried ever more slowly)
_FAILURE_KINDS = ("auth", "tls", "network", "refused")
COUNTERS = ("forwarded", "publishes", "pubacks", "connects", "reconnects", "publish_errors",
            "gaps_forwarded", "unencodable", "nothing_to_send", "backoff_waits",
            "internal_errors", "puback_timeouts") + tuple(
                "connect_failures." + k for k in _FAILURE_KINDS)


class MQTTForwarder(MQTTLink, Forwarder):
    """Forwards an ``Outbox`` to the broker of ``up`` (``config_types.MQTTUpstream``) as site
    ``site_id`` and gateway ``gateway_id``; ``password`` for ``up.mqtt.username`` (None with a
    client certificate); ``clock`` (drivers.clock contract) stamps the status document.

    Keywords: ``rng`` (backoff jitter), ``protocol`` (``"5"`` or ``"3.1.1"``),
    ``max_publish_bytes`` (payload bound per publish), ``connect_timeout_s`` (TCP + TLS
    handshake, and again for the CONNACK), ``backoff`` (a ``Backoff``), ``pen`` (IANA PEN
    for the SenML base names). Raises ``ValueError`` naming the setting for an insecure or
    unusable configuration (plaintext to a non-loopback host, verification off, a TLS file
    that does not load, a ``puback_timeout_s`` that is not seconds > 0): it fails closed."""

    name = "mqtt"

    def __init__(self, up, password, site_id, gateway_id, clock, *, rng=None, protocol=MQTT5,
                 max_publish_bytes=upstream.DEFAULT_MAX_PUBLISH_BYTES, connect_timeout_s=5.0,
                 backoff=None, pen=upstream.DEFAULT_PEN):
        problems = security.check_connection("upstream.mqtt", up.mqtt)
        if problems:
            raise ValueError("; ".join(str(p) for p in problems))
        if protocol not in (MQTT5, MQTT311):
            raise ValueError("protocol must be %r or %r, got %r" % (MQTT5, MQTT311, protocol))
        if password is not None and (not isinstance(password, str) or not password):
            raise ValueError("password for upstream.mqtt.username must be a non-empty string")
        upstream.encode_rows([], site_id, gateway_id, up.encoding, up.readings_per_publish,
                             max_publish_bytes, pen)  # checks those arguments
        self.up, self._password = up, password
        self.site_id, self.gateway_id, self.clock = site_id, gateway_id, clock
        self.protocol, self.max_publish_bytes, self.pen = protocol, max_publish_bytes, pen
        self.connect_timeout_s = float(connect_timeout_s)
        t = up.puback_timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
            raise ValueError("upstream.mqtt.puback_timeout_s must be seconds > 0, got %r" % (t,))
        self.puback_timeout_s = float(t)
        self.status_topic = upstream.status_topic(site_id, gateway_id)
        if up.mqtt.tls:
            self._tls_context()  # a CA or key file that does not load fails here, at start
        self._backoff = backoff if backoff is not None else Backoff(rng=rng)
        self._lock = threading.Lock()
        self._counts = Counter()
        self._status = {"connected": False, "detail": "not started", "last_error": None}
        self._stopping = threading.Event()
        self._woken = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = None
        self._acks = None  # the Acker, from start()
        self._stop_by = None  # (when stop() was called, seconds the thread may take)
        self.outbox = None
        self._reset_link()

    # -- the contract ------------------------------------------------------------------------
    def start(self, outbox):
        if self._thread is not None:
            raise RuntimeError("MQTTForwarder.start: already started")
        self.outbox = outbox
        self._acks = Acker(outbox, self._count, ACK_DELAY_S, ACK_BATCH_ROWS, done=self._poke)
        self._acks.start()
        self._thread = threading.Thread(target=self._run, name="civicedge-mqtt-forwarder",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s=5.0):
        self._stop_by = (time.monotonic(), max(0.0, timeout_s) * 0.8)
        self._stopping.set()
        self.wake()
        if self._thread is None:
            for s in (self._wake_r, self._wake_w):
                s.close()
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def wake(self):
        self._woken.set()
        self._poke()

    def _poke(self):
        """End this thread's wait in ``select`` (new rows; the acker caught up)."""
        try:
            self._wake_w.send(b"\0")
        except OSError:  # the pair is full (a wake is pending anyway) or closed
            pass

    def counters(self):
        with self._lock:
            out = dict.fromkeys(COUNTERS, 0)
            out.update(self._counts)
            out["in_flight"] = len(self._flight)  # publishes awaiting their PUBACK
            out["in_flight_rows"] = len(self._flight.refs)  # rows they (and the queue) carry
            # rows every message of which was PUBACKed, their outbox delete not begun: still
            # in the outbox, delivered (the outbox's rows less these: not delivered yet)
            out["confirmed_rows"] = len(self._flight.done_rows) + (self._acks.waiting() if self._acks else 0)
            return out

    def status(self):
        with self._lock:
            return dict(self._status, broker="%s:%d" % (self.up.mqtt.host, self.up.mqtt.port))

    # -- bookkeeping -------------------------------------------------------------------------
    def _count(self, name, n=1):
        with self._lock:
            self._counts[name] += n

    def _set_status(self, connected, detail, error=None):
        with self._lock:
            self._status["connected"], self._status["detail"] = connected, detail
            if error is not None:
                self._status["last_error"] = error

    def _reset_link(self):
        self._flight = InFlight()  # by paho message id
        self._ready = deque()  # encoded messages waiting for room in the window
        self._pubacks = []  # (mid, reason code) from on_publish, settled after each step
        self._status_mids = set()
        self._sent_at = {}  # mid -> time.monotonic() it was published, oldest first
        self._last_puback = 0.0  # time.monotonic() of this connection's last PUBACK
        self._window = self.up.max_inflight
        self._connack = None  # None: waiting; else the CONNACK's ReasonCode
        self._broken = None  # why this connection must be dropped
        self._more = True  # the last take was full: there may be more rows
        self._next_gap_poll = 0.0

    # -- the thread ----------------------------------------------------------------------------
    def _run(self):
        first = True
        while not self._stopping.is_set():
            client = None
            try:
                client = self._connect()
                if client is not None:
                    if not first:
                        self._count("reconnects")
                    first = False
                    self._serve(client)
            except Exception as e:  # a bug or an outbox error must not end forwarding
                self._count("internal_errors")
                self._set_status(False, "error", "%s: %s" % (type(e).__name__, e))
                log.exception("MQTT forwarder step failed; reconnecting after a backoff")
            finally:
                if client is not None:
                    self._teardown(client)
            if not self._stopping.is_set():
                self._sleep(self._backoff.next_s())
        self._set_status(False, "stopped")
        self._acks.stop(self._flush_s())
        for s in (self._wake_r, self._wake_w):
            s.close()

    # -- connected ----------------------------------------------------------------------------
    def _serve(self, client):
        m = self.up.mqtt
        stable_at = time.monotonic() + STABLE_S  # then the backoff starts again at 1 s
        self._count("connects")
        where = "%s:%d" % (m.host, m.port)
        self._set_status(True, "connected to %s as %s (MQTT %s, %s)"
                         % (where, m.client_id, self.protocol, self.up.encoding))
        log.info("connected to %s as %s", where, m.client_id)
        wall = self.clock.wall_s() if self.clock.wall_trusted() else None
        self._publish_status(client, upstream.status_payload(
            upstream.ONLINE, self.site_id, self.gateway_id, since=wall, client_id=m.client_id,
            encoding=self.up.encoding, protocol="mqtt" + self.protocol))
        while self._broken is None and client.socket() is not None:
            if self._stopping.is_set():
                self._finish(client)
                return
            if stable_at is not None and time.monotonic() >= stable_at:
                self._backoff.reset()
                stable_at = None
            self._settle()
            if self._puback_overdue():  # checked right after a step read the socket
                break
            self._fill(client)
            self._settle()
            busy = (self._ready or self._more and self._can_take()) and self._room() > 0
            wait = 0.0 if busy or self._pubacks else IDLE_WAIT_S
            self._step(client, min(wait, max(0.0, self._puback_left_s())))
        self._settle(force=True)
        self._set_status(False, "disconnected", "%s: %s" % (where, self._broken or "closed"))
        log.warning("MQTT link to %s ended: %s", where, self._broken or "closed")

    def _publish_status(self, client, payload):
        info = client.publish(self.status_topic, payload, qos=1, retain=True)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._status_mids.add(info.mid)
            self._await_puback(info.mid)

    def _room(self):
        """Publishes the window has room for (status messages count: the broker's Receive
        Maximum does)."""
        return self._window - len(self._flight) - len(self._status_mids)

    def _fill(self, client):
        """Take rows and gap markers while the window has room; publish what fits."""
        room = self._room()
        now = time.monotonic()
        if not self._ready and room > 0 and not self._stopping.is_set():
            rows, markers = [], []
            if (self._more or self._woken.is_set()) and self._can_take():
                self._woken.clear()
                n = min(self._window * self.up.readings_per_publish, TAKE_MAX_ROWS)
                # SenML JSON packs are written from the stored text (gateway.upstream_fast)
                rows = self.outbox.take(n, raw=self.up.encoding == upstream.SENML_JSON)
                self._more = len(rows) == n
            if rows or now >= self._next_gap_poll:
                self._next_gap_poll = now + GAP_POLL_S
                markers = self.outbox.take_gaps(room)
            if rows or markers:  # a wake with nothing new (the acker caught up) encodes nothing
                self._queue(rows, markers)
        while self._ready and self._room() > 0 and self._broken is None:
            msg = self._ready.popleft()
            info = client.publish(msg.topic, msg.payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self._count("publish_errors")
                self._broken = "publish to %s failed: %s" % (msg.topic, mqtt.error_string(info.rc))
                return
            self._flight.sent(info.mid, msg)
            self._await_puback(info.mid)
            self._count("publishes")

    def _can_take(self):
        """False while the acker is behind: PUBACKed rows wait for their delete."""
        return self._acks.backlog() <= ACK_BACKLOG_ROWS

    def _queue(self, rows, markers):
        msgs = upstream.encode_rows(rows, self.site_id, self.gateway_id, self.up.encoding,
                                    self.up.readings_per_publish, self.max_publish_bytes, self.pen)
        msgs += upstream.encode_gap_markers(markers, self.site_id, self.gateway_id)
        self._count("unencodable", sum(m.reason == upstream.UNENCODABLE for m in msgs))
        # gateway event records without alarms need no message: done at once
        self._count("nothing_to_send", self._flight.carry(msgs, [r.row_id for r in rows]))
        self._ready.extend(msgs)

    def _settle(self, force=False):
        """Read the PUBACKs (each frees its slot in the window) and hand the rows they
        complete to the acker (one outbox transaction per ``ACK_DELAY_S`` or
        ``ACK_BATCH_ROWS``); with ``force``, wait until it deleted them. Raises the
        ``OutboxError`` of a delete that failed (the connection is then dropped and the
        rows released)."""
        acks, self._pubacks = self._pubacks, []
        refused, confirmed = [], 0
        for mid, rc in acks:
            self._got_puback(mid)
            if mid in self._status_mids:
                self._status_mids.discard(mid)
                if rc.is_failure:
                    self._count("publish_errors")
                    self._set_status(True, self._status["detail"], "the broker refused the "
                                     "status message: %s (check its ACL)" % (rc,))
            elif rc.is_failure:
                msg = self._flight.refuse(mid)
                refused += [] if msg is None else ["%s: %s" % (msg.topic, rc)]
            else:
                confirmed += self._flight.confirm(mid) is not None
        if confirmed:
            self._count("pubacks", confirmed)
        if refused:
            self._count("publish_errors", len(refused))
            self._broken = "the broker refused %d publish(es), e.g. %s (check its ACL for " \
                           "civicedge/v1/%s/#)" % (len(refused), refused[0], self.site_id)
        f = self._flight
        if f.done_rows or f.done_gaps:
            self._acks.submit(*f.take_done())
        if force and not self._acks.flush(self._flush_s()):
            raise OutboxError("deleting delivered rows from the outbox took over %.1f s"
                              % self._flush_s())
        error = self._acks.take_error()
        if error is not None:
            raise error

    def _flush_s(self):
        """How long the acker may take to finish: ``ACK_FLUSH_S``, or what ``stop()`` left."""
        if self._stop_by is None:
            return ACK_FLUSH_S
        t0, span = self._stop_by
        return max(0.1, t0 + span - time.monotonic())

    def _finish(self, client):
        """A clean stop within ``stop()``'s time: let the window drain for half of it, say
        offline (retained), DISCONNECT (so the broker does not publish the will)."""
        t0, span = self._stop_by or (time.monotonic(), 4.0)

        def pump_while(cond, until):
            while cond() and client.socket() is not None and time.monotonic() < until:
                self._step(client, min(0.1, max(0.0, until - time.monotonic())))
                self._settle()
        pump_while(lambda: len(self._flight), t0 + span * 0.5)
        if client.socket() is None:
            return
        self._publish_status(client, upstream.status_payload(
            upstream.OFFLINE, self.site_id, self.gateway_id, reason="stopped"))
        pump_while(lambda: self._status_mids, t0 + span * 0.8)
        self._settle(force=True)
        client.disconnect()
        pump_while(lambda: True, t0 + span)

    def _teardown(self, client):
        """After any connection: ack what was PUBACKed, release the rest, close the socket."""
        try:
            self._settle(force=True)
        except Exception as e:  # the acks failed: those rows are released and go again
            self._count("internal_errors")
            self._set_status(False, "disconnected", "acking rows failed: %s" % (e,))
        finally:
            self._close(client)
            if self.outbox is not None:
                self.outbox.release_all()
            self._flight.clear()
            self._ready.clear()
