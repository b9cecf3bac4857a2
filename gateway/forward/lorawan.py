"""``LoRaWANForwarder``: the outbox upstream through a serial LoRaWAN modem, for a site with
no internet (issue 4, Deliver 5). The whole story, with figures: docs/gateway-lorawan-upstream.md.

Theory of operation
-------------------
The modem session (port, OTAA join, errors, the thread) is ``lorawan_session.ModemSession``;
this module turns the outbox into uplinks. Each send step fills ONE uplink:

* **what**: alarm-lane rows first (``outbox.take(lane_order=("alarm",))``), topped up with
  routine rows; with no alarm due, a status/directory section if the network asked, the
  outbox's gap markers and routine rows (none while routine forwarding is paused). The rows
  are packed into the envelope (``lorawan_envelope``: alarms first, one section per device and
  boot epoch) up to the payload limit of the data rate the modem reports now (51/115/222 B,
  read before every uplink: ADR may change it), at most ``cap`` records. What does not fit
  is released at once: rows are in flight only while their uplink is on its way. A routine
  uplink less than 3/4 full waits for more rows, at most ``max_delay_s`` (15 min) after it
  was first ready: at SF12 a one-reading uplink costs 2/3 of the airtime of a full one.
* **when**: the airtime budget (``gateway.airtime_budget``: 1 % of sub-band M in any hour, and
  TTN's 30 s a day with ``up.ttn_fair_use``; stored in the outbox's state with each frame
  counted before it goes, so a restart or a power cut remembers it) is checked before the
  radio is asked. Over
  budget, the rows go back and the step waits exactly until the frame fits (``budget_waits``,
  once per wait). Rows wait in the outbox, whose own bounds drop the oldest routine rows
  when a backlog can never be carried.
* **how**: with alarm rows and ``up.confirmed_alarms``, confirmed (under fair use only while
  one more ack downlink fits TTN's 10 a day; else unconfirmed, ``confirm_skipped``): its rows
  are acked in the outbox on the network's ack only; without one they are released and the
  alarms retried after a jittered backoff (30 s .. 15 min). Unconfirmed uplinks ack their
  rows (and gap markers) once the modem reports them sent.

Refusals are results: the modem's own duty-cycle refusal, busy, or a lost session release
the rows and wait (or rejoin). An uplink whose outcome is unknown (an error mid-send) has its
airtime counted anyway: the budget may over-count, never under-count.

Downlinks (in any uplink's reply, or unsolicited) are commands on FPort 21
(``lorawan_decode.parse_downlink``: cap, pause/resume routine forwarding, send status, send
the device directory), kept in ``settings`` (memory only). A malformed one changes nothing
and counts ``bad_downlinks``.
"""

import logging
import math
from collections import OrderedDict

from drivers.atmodem import ModemError, SendResult
from drivers.errors import DriverError
from gateway import airtime_budget
from gateway.config_types import MAX_DELAY_S  # a routine uplink not yet full waits at most this
from gateway.forward import lorawan_envelope as env
from gateway.forward.lorawan_decode import Settings, parse_downlink
from gateway.forward.lorawan_session import SAVE_RETRY_MS, ModemSession, backoff, wait_ms
from gateway.outbox_policy import ALARM, ROUTINE
from gateway.outbox_sql import OutboxError
from protocol import airtime

log = logging.getLogger(__name__)

TAKE_LIMIT = 256  # rows read per uplink (a 222-byte uplink carries at most ~120 readings)
GAP_LIMIT = 16  # gap markers read per uplink
SEND_TIMEOUT_MS = 30000  # one uplink to its result (SF12 + RX windows + confirmed ack)
ALARM_RETRY_MS = (30000, 900000)  # after a confirmed uplink without ack (doubling, jittered)
BUSY_WAIT_MS = 5000
MODEM_DUTY_WAIT_MS = 60000  # a modem duty-cycle refusal that does not say how long
MAX_DEVICES = 256  # device ids remembered for the directory
FULL = 0.75  # a routine uplink this full goes at once; a smaller one waits up to max_delay_s
MARGIN_UPLINKS = 32  # after a refused uplink, this many uplinks leave room for FOpts
COUNTERS = ("forwarded", "gaps_forwarded", "alarms_forwarded", "uplinks", "confirmed", "acked",
            "no_ack", "confirm_skipped", "airtime_ms", "budget_waits", "budget_waits.duty_cycle",
            "budget_waits.fair_use", "join_attempts", "joins", "join_failures", "downlinks",
            "downlinks_applied", "bad_downlinks", "modem_errors", "publish_errors", "reconnects",
            "port_errors", "modem_refusals.duty_cycle", "modem_refusals.busy", "not_joined",
            "uplink_refused", "records_unpackable", "records_trimmed", "status_uplinks",
            "outbox_errors", "internal_errors", "budget_save_errors", "budget_state_errors")


class LoRaWANForwarder(ModemSession):
    """Forwards the outbox through the LoRaWAN modem of ``up`` (``gateway.config_types.
    LoRaWANUpstream``) with OTAA key ``app_key`` (16 bytes), timed on ``clock``
    (``drivers.clock``). ``serial_port``: a port object to use instead of opening
    ``up.port``; ``rng``: a ``random.Random`` for the jitter; ``take_limit``: rows read per
    uplink; ``max_delay_s``: how long a routine uplink that is not yet full may wait for
    more rows; ``command_timeout_ms``: the driver's per-command reply timeout. Raises
    ``ValueError`` for a bad ``app_key`` or ``max_delay_s``."""

    name = "lorawan"

    def __init__(self, up, app_key, clock, *, serial_port=None, rng=None, take_limit=TAKE_LIMIT,
                 max_delay_s=MAX_DELAY_S, command_timeout_ms=2000):
        if isinstance(max_delay_s, bool) or not isinstance(max_delay_s, (int, float)) \
                or not 0 <= max_delay_s <= 86400:
            raise ValueError("max_delay_s must be 0..86400 s, got %r" % (max_delay_s,))
        ModemSession.__init__(self, up, app_key, clock, serial_port, rng, command_timeout_ms, COUNTERS)
        self.take_limit = take_limit
        self.max_delay_ms = int(max_delay_s * 1000)
        self._hold_since = None  # when a routine uplink too small to go at once was first ready
        self.settings = Settings()  # what downlinks changed
        self._devices = OrderedDict()  # device ids forwarded, newest last (for DIRECTORY)
        self._next_send = self._next_alarm = self._budget_until = 0
        self._alarm_backoff = backoff(self._rng, ALARM_RETRY_MS)
        self._fopts_margin = self._margin_left = 0
        self._taken, self._taken_gaps = [], []  # row and gap ids in flight in this step

    def counters(self):
        out = ModemSession.counters(self)
        out["in_flight"] = len(self._taken)
        return out

    def status(self):
        """``ModemSession.status()`` plus ``paused`` and ``cap``."""
        out = ModemSession.status(self)
        out.update(paused=self.settings.paused_until is not None, cap=self.settings.cap)
        return out

    def _joined_now(self, how):
        self._fopts_margin = 0  # a new session: MAC commands start afresh
        return ModemSession._joined_now(self, how)

    # -- sending -------------------------------------------------------------------------------
    def _release(self):
        if self._taken:
            self._outbox.release(self._taken)
        if self._taken_gaps:
            self._outbox.release_gaps(self._taken_gaps)
        self._taken, self._taken_gaps = [], []

    def _send_step(self, now):
        self._downlinks(None, now)
        wait = max(self._next_send, self._budget_until) - now
        if wait > 0:
            return wait
        m, ob = self._modem, self._outbox
        self._dr = m.get_dr()
        room = max(env.MIN_ROOM, airtime.max_app_payload(self._dr) - self._fopts_margin)
        b = env.UplinkBuilder(room)
        rows, lane, extras = [], ROUTINE, []
        if now >= self._next_alarm:
            rows = ob.take(self.take_limit, lane_order=(ALARM,))
            lane = ALARM if rows else ROUTINE
        sets = self.settings
        paused = sets.paused(now)
        if lane == ROUTINE:
            if sets.want_status and b.add_status(self._status_values(now)):
                extras.append("status")
            if sets.directory:
                extras.append(("directory", b.add_directory(sets.directory)))
            if not paused:
                gaps = ob.take_gaps(GAP_LIMIT)
                self._taken_gaps = [g.gap_id for g in gaps]
                for g in gaps:
                    if not b.add_gap(g):
                        break
        self._taken = [r.row_id for r in rows]
        if not paused and len(rows) < self.take_limit:
            more = ob.take(self.take_limit - len(rows), lane_order=(ROUTINE,))
            self._taken += [r.row_id for r in more]
            rows += more
        b.add_rows([env.prepare(r) for r in rows], sets.cap)
        used = set(b.rows)
        b.alarm_rows = sum(1 for r in rows if r.lane == ALARM and r.row_id in used)
        self._outbox.release([i for i in self._taken if i not in used])
        self._taken = list(b.rows)
        unsent_gaps = [g for g in self._taken_gaps if g not in b.gaps]
        if unsent_gaps:
            self._outbox.release_gaps(unsent_gaps)
        self._taken_gaps = list(b.gaps)
        if b.empty():
            return self._idle_wait(now)
        if lane == ROUTINE and not extras and len(used) == len(rows) \
                and len(b.payload()) < FULL * room and not (sets.cap and b.records >= sets.cap):
            # Not full: wait for more rows (an SF12 uplink of one reading spends 2/3 of the
            # airtime of a full one), at most max_delay_s after it was first ready.
            self._hold_since = now if self._hold_since is None else self._hold_since
            left = self._hold_since + self.max_delay_ms - now
            if left > 0:
                self._wakeable = True
                self._set_detail("joined, DR%d; holding %d records (%d of %d bytes) up to %d s "
                                 "more to fill the uplink" % (self._dr, b.records, len(b.payload()),
                                                              room, left // 1000))
                return left
        for r in rows:
            if r.row_id in used:
                self._devices[r.device_id] = None
                self._devices.move_to_end(r.device_id)
        while len(self._devices) > MAX_DEVICES:
            self._devices.popitem(last=False)
        return self._transmit(b, lane, extras, now)

    def _idle_wait(self, now):
        self._hold_since = None
        until = self.settings.paused_until
        waits = [x - now for x in (self._next_alarm, until) if x is not None and now < x < math.inf]
        self._wakeable = True
        self._set_detail("joined, DR%s; nothing to send%s" % (
            self._dr, " (routine forwarding paused)" if until is not None else ""))
        return min(waits) if waits else None

    def _transmit(self, b, lane, extras, now):
        payload = b.payload()
        toa = airtime_budget.uplink_airtime_ms(self._dr, len(payload))
        wait, reason = self.budget.wait_ms(toa, now)
        if wait is None or wait:
            wait = MODEM_DUTY_WAIT_MS if wait is None else wait
            self._budget_until = now + wait
            self._count("budget_waits")
            self._count("budget_waits." + (reason if reason != airtime_budget.NEVER else "duty_cycle"))
            self._set_detail("waiting %.1f s for the %s budget (%d-byte uplink at DR%d, %.0f ms on "
                             "air)" % (wait / 1000.0, reason, len(payload), self._dr, toa))
            return wait
        confirmed = lane == ALARM and self.up.confirmed_alarms
        if confirmed and not self.budget.can_downlink(now):
            confirmed = False  # TTN's 10 downlinks a day include acks: send it unconfirmed
            self._count("confirm_skipped")
        t0 = self.now_ms()
        if not self._reserve(toa, t0, SEND_TIMEOUT_MS):  # a power cut mid-uplink must not
            self._next_send = t0 + SAVE_RETRY_MS         # forget its airtime
            return SAVE_RETRY_MS
        try:
            res = self._modem.send(env.UPLINK_PORT, payload, confirmed=confirmed, timeout_ms=SEND_TIMEOUT_MS)
        except (OSError, DriverError) as e:
            # Whether it went on air is unknown: count its airtime (never under-count).
            self.budget.record_uplink(toa, max(t0, self.now_ms() - airtime.ceil_ms(toa)))
            self._count("publish_errors")
            if isinstance(e, ModemError) and e.message.startswith("uplink refused"):
                # The modem refused the length (the DR changed, or MAC commands took room):
                # leave room for FOpts for a while; the next step reads the DR again.
                self._fopts_margin, self._margin_left = airtime.MAX_FOPTS, MARGIN_UPLINKS
                self._count("uplink_refused")
                self._next_send = self.now_ms() + BUSY_WAIT_MS
                return BUSY_WAIT_MS
            raise
        return self._outcome(res, b, lane, extras, toa, t0, confirmed)

    def _outcome(self, res, b, lane, extras, toa, t0, confirmed):
        t1 = self.now_ms()
        self._error_backoff.reset()
        if res.transmitted:
            if self._fopts_margin:
                self._margin_left -= 1
                self._fopts_margin = self._fopts_margin if self._margin_left > 0 else 0
            self.budget.record_uplink(toa, max(t0, t1 - airtime.ceil_ms(toa)))
            self._count("uplinks")
            self._count("airtime_ms", airtime.ceil_ms(toa))
            if confirmed:
                self._count("confirmed")
        st = res.status
        if st == SendResult.CONFIRMED or (st == SendResult.SENT and not confirmed):
            self._delivered(b, lane, extras)
            self._hold_since = None
            if st == SendResult.CONFIRMED:
                self._count("acked")
                self._alarm_backoff.reset()
                if res.downlink is None:
                    self.budget.record_downlink(t1)  # the ack is a downlink (fair use)
        elif st == SendResult.NOT_CONFIRMED:
            self._count("no_ack")
            self._next_alarm = t1 + wait_ms(self._alarm_backoff)
        elif st == SendResult.DUTY_CYCLE:
            self._count("modem_refusals.duty_cycle")
            self._next_send = t1 + (res.wait_ms or MODEM_DUTY_WAIT_MS)
        elif st == SendResult.BUSY:
            self._count("modem_refusals.busy")
            self._next_send = t1 + BUSY_WAIT_MS
        elif st == SendResult.NOT_JOINED:
            self._count("not_joined")
            with self._lock:
                self._joined = False
            self._next_join = t1
        self._downlinks(res.downlink, t1)
        if st in (SendResult.SENT, SendResult.CONFIRMED, SendResult.NOT_CONFIRMED):
            self._set_detail("joined, DR%d; last uplink %s (%d records)" % (self._dr, st, b.records))
        return 0

    def _delivered(self, b, lane, extras):
        try:
            n = self._outbox.ack(self._taken)
            if self._taken_gaps:
                self._outbox.ack_gaps(self._taken_gaps)
        except OutboxError as e:
            self._count("outbox_errors")
            log.warning("LoRaWAN forwarder: %s", e)
            return  # the rows are released and go again: upstream de-duplicates by key
        self._count("forwarded", n)
        self._count("gaps_forwarded", len(self._taken_gaps))
        self._count("alarms_forwarded", b.alarm_rows)
        self._count("records_unpackable", b.unpackable)
        self._count("records_trimmed", b.trimmed)
        self._taken, self._taken_gaps = [], []
        for x in extras:
            if x == "status":
                self.settings.want_status = False
                self._count("status_uplinks")
            else:
                self.settings.directory = [d for d in self.settings.directory if d not in x[1]]

    # -- downlinks and status ------------------------------------------------------------------
    def _downlinks(self, dl, now):
        """Apply the downlink of the last uplink (``dl``) and any unsolicited ones."""
        found = self._modem.unsolicited_downlinks
        if dl is not None:
            found.append(dl)
        while found:
            d = found.pop(0)
            self._count("downlinks")
            self.budget.record_downlink(now)  # an ack with a payload is one downlink too
            try:
                commands = parse_downlink(d.port, d.payload)
            except env.EnvelopeError as e:
                self._count("bad_downlinks")
                log.warning("LoRaWAN downlink rejected: %s", e)
                continue
            self.settings.apply(commands, now, self._devices)
            self._count("downlinks_applied")
            self._set_detail("downlink applied: %s" % ", ".join("%d:%s" % c for c in commands))

    def _status_values(self, now):
        st, usage = self._outbox.stats(), self.budget.usage(now)
        values = self.counters()
        values.update(rows_routine=st.rows[ROUTINE], rows_alarm=st.rows[ALARM],
                      oldest_age_s=int(st.oldest_age_s or 0), dropped_routine=st.dropped[ROUTINE],
                      dropped_alarm=st.dropped[ALARM], gap_markers=st.gap_markers,
                      paused=int(self.settings.paused_until is not None), cap=self.settings.cap or 0,
                      duty_used_ms=usage["duty_used_ms"], fair_used_ms=usage.get("fair_used_ms", 0),
                      uptime_s=now // 1000)
        return values
