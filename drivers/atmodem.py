"""LoRaWAN AT-command modems (RAK3172 RUI3, Seeed LoRa-E5) over a serial port.

Theory of operation
-------------------
Two layers, as h11 does it:

- **Sans-IO parsing.** ``parse_line(dialect, line)`` turns one reply line (bytes or str,
  without CR LF) into an ``Event``: ``ok``, ``error`` (``.error`` says which kind), ``busy``,
  ``duty_cycle``, ``not_joined``, ``joined``, ``join_failed``, ``tx_done``, ``confirmed``,
  ``not_confirmed``, ``downlink`` (``.port``, ``.payload``, ``.rssi``, ``.snr``,
  ``.window``), ``rx_info`` (the E5's ``RXWINn, RSSI r, SNR s`` line), ``value`` (a read
  reply), ``info``, ``done``, ``echo``, ``reboot``, ``empty`` and ``unknown`` (anything not
  printable ASCII, or text no rule knows). It never raises anything but ``ModemError``,
  and only for a line that announces a known event but whose fields are garbled (a
  downlink that cannot be decoded must not pass silently). ``SendCollector`` folds one
  uplink's events into a ``SendResult`` — pure too, so a recorded transcript can be
  replayed in a test. The dialect rules live in ``atmodem_rak`` and ``atmodem_e5``; the
  parsing core in ``atmodem_core`` (re-exported here).
- **A thin class.** ``ATModem(port, clock, dialect)`` writes commands (``drivers.port``),
  reads lines with deadlines on the injected clock, and hands them to the parser. What only
  joining needs (``configure``, ``join``, ``get_dev_eui``, ``set_dr``) is in ``atmodem_join``
  (the RAK's sequences in ``atmodem_rak_join``), loaded for the call and released after it
  (``release``): a node whose modem kept its session never holds it (docs/benchmarks.md, heap).

Errors: a silent port raises ``OSError(errno.ETIMEDOUT)``; a garbled, partial or unexpected
reply raises ``ModemError`` naming the command and the reply (counted in
``counters["protocol_errors"]``); bad arguments raise ``ValueError`` naming the argument.
A duty-cycle refusal, a busy modem or "not joined" are **results**, not errors: the caller
keeps its readings queued and tries later (``SendResult.wait_ms`` when the modem or the
budget says how long).

The budget: the modem enforces the duty cycle itself (``AT_DUTYCYCLE_RESTRICTED``, the E5's
``No band in N ms``); an optional ``protocol.airtime.DutyCycle`` passed as ``duty_cycle``
makes the driver refuse first, without waking the radio, on a monotonic ms count built
from the clock's ticks (call the driver at least every few days so no wrap is missed).
EU868's three default channels all lie in sub-band M, so that is the band charged.

Keys never reach a log line or an error message: every text logged or put in an error
passes ``redact``. Runs on MicroPython and CPython.
"""

import errno

from drivers import release
from drivers.atmodem_core import (  # noqa: F401  (re-exported: the driver's public names)
    DIALECTS, EV_BUSY, EV_CONFIRMED, EV_DONE, EV_DOWNLINK, EV_DUTY_CYCLE, EV_ECHO, EV_EMPTY,
    EV_ERROR, EV_INFO, EV_JOIN_FAILED, EV_JOINED, EV_NOT_CONFIRMED, EV_NOT_JOINED, EV_OK,
    EV_REBOOT, EV_RX_INFO, EV_TX_DONE, EV_UNKNOWN, EV_VALUE, Downlink, Event, ModemError,
    SendCollector, SendResult, _dialect, parse_hex, parse_line, parse_number, redact,
    send_collector)
from drivers.port import DEFAULT_POLL_MS, LineError, discard_input, read_line, write_line

SUBBAND = "M"  # 868.1/868.3/868.5 MHz, EU868's default channels (REFERENCE §6.2)


_ASYNC = (EV_JOINED, EV_JOIN_FAILED, EV_TX_DONE, EV_CONFIRMED, EV_NOT_CONFIRMED, EV_DOWNLINK,
          EV_RX_INFO, EV_DONE)
_SKIP = (EV_EMPTY, EV_ECHO, EV_INFO)


def _airtime():
    from protocol import airtime  # owns the DR table and time on air; imported when needed
    return airtime


def _joining(name, m, *args):
    # ATModem.configure / join / get_dev_eui / set_dr: the join-time code (drivers.atmodem_join and the dialect's
    # sequences) is loaded for the call and released after it: a node whose modem kept its
    # session never loads it, and one that joined does not hold it while it packs and sends.
    from drivers import atmodem_join

    try:
        return getattr(atmodem_join, name)(m, *args)
    finally:
        release("drivers.atmodem_join")
        if m._d.JOIN is not None:
            release("drivers." + m._d.JOIN)


def check_dr(dr):
    """``dr`` if it is an EU868 LoRa data rate (0..6), else ``ValueError`` naming it."""
    if not isinstance(dr, int) or isinstance(dr, bool) or dr not in _airtime().DR_EU868:
        raise ValueError("dr must be an EU868 LoRa data rate 0..6, got %r" % (dr,))
    return dr


class ATModem:
    """A LoRaWAN modem on ``port`` (see ``drivers.port``), timed on ``clock``.

    ``dialect``: "rak3172" (RUI3, 115200 8N1) or "lora-e5" (9600 8N1). ``duty_cycle``: an
    optional ``protocol.airtime.DutyCycle`` the driver checks before it transmits.
    ``log``: an optional callable taking one (redacted) text line per command and reply.
    ``command_timeout_ms`` bounds each command's reply; ``rx_linger_ms`` is how long a RAK
    send keeps listening after ``+EVT:TX_DONE`` for the downlink event that follows it.
    ``counters`` counts commands, errors, timeouts, joins, uplinks, refusals, downlinks.
    """

    def __init__(self, port, clock, dialect="rak3172", duty_cycle=None, log=None,
                 command_timeout_ms=2000, poll_ms=DEFAULT_POLL_MS, rx_linger_ms=100):
        self._d = _dialect(dialect)
        self.dialect = dialect
        self._port = port
        self.clock = clock
        self._clock = clock
        self.expect_reboot = False  # a dialect sets it while it waits for a restart
        self._duty = duty_cycle
        self._log = log
        self.command_timeout_ms = command_timeout_ms
        self.poll_ms = poll_ms
        self.rx_linger_ms = rx_linger_ms
        self.counters = {}
        for name in ("commands", "protocol_errors", "timeouts", "stale_bytes", "unsolicited",
                     "join_attempts", "joins", "uplinks", "confirmed", "not_confirmed",
                     "downlinks", "duty_cycle", "busy", "not_joined"):
            self.counters[name] = 0
        self.joined = False  # as last seen; is_joined() asks the modem
        self.dr = None  # as last set or read
        self.adr = None
        self.region = None
        self.state = {}  # the dialect's cache of modem settings (confirm mode, port)
        self.unsolicited_downlinks = []  # downlinks that arrived outside send(), oldest first
        self._secret = None
        self._mono_ms = 0
        self._last_ticks = clock.ticks_ms()

    # -- plumbing shared with the dialect modules ----------------------------------------
    def now_ms(self):
        """Monotonic ms since this object was made (the budget's time base)."""
        t = self._clock.ticks_ms()
        d = self._clock.ticks_diff(t, self._last_ticks)
        if d > 0:
            self._mono_ms += d
            self._last_ticks = t
        return self._mono_ms

    def note(self, direction, text):
        if self._log is not None:
            self._log("%s %s" % (direction, redact(text, self._secret)))

    def error(self, command, reply, message="unexpected reply"):
        """A counted, redacted ``ModemError`` (to raise)."""
        self.counters["protocol_errors"] += 1
        self.note("!", "%s: %s %s" % (command, message, reply))
        return ModemError(redact(command, self._secret), redact(reply, self._secret), message)

    def timeout(self, command, what="reply"):
        """A counted ``OSError(ETIMEDOUT)`` (to raise)."""
        self.counters["timeouts"] += 1
        self.note("!", "%s: no %s" % (command, what))
        return OSError(errno.ETIMEDOUT, "%s: no %s from the modem" % (redact(command, self._secret), what))

    def write(self, command):
        self.counters["stale_bytes"] += discard_input(self._port)
        self.counters["commands"] += 1
        self.note(">", command)
        write_line(self._port, command)

    def next_event(self, command, deadline):
        """The next reply line's ``Event`` before ``deadline`` (ticks), or None."""
        clock = self._clock
        left = clock.ticks_diff(deadline, clock.ticks_ms())
        try:
            raw = read_line(self._port, clock, left if left > 0 else 0, poll_ms=self.poll_ms)
        except LineError as e:
            raise self.error(command, repr(e.data), "reply line " + e.reason)
        if raw is None:
            return None
        try:
            ev = parse_line(self.dialect, raw)
        except ModemError as e:
            raise self.error(command, e.reply, e.message)
        if ev.kind != EV_EMPTY:
            self.note("<", ev.line)
        if ev.line == command:
            ev.kind = EV_ECHO  # ATE on: the modem repeats each command
        if ev.kind == EV_UNKNOWN:
            raise self.error(command, ev.line, "garbled reply")
        if ev.kind == EV_REBOOT and not self.expect_reboot:
            self.joined = False
            self.state = {}
            raise self.error(command, ev.line, "modem restarted mid-command")
        return ev

    def wait_for(self, command, final, timeout_ms, what="reply", none_ok=False):
        """Events until ``final(event)`` is true: ``(final_event, others)``. On timeout,
        ``(None, others)`` if ``none_ok`` else ``OSError(ETIMEDOUT)``."""
        clock = self._clock
        deadline = clock.ticks_add(clock.ticks_ms(), timeout_ms)
        seen = []
        while True:
            ev = self.next_event(command, deadline)
            if ev is None:
                if none_ok:
                    return None, seen
                raise self.timeout(command, what)
            if final(ev):
                return ev, seen
            if ev.kind not in _SKIP:
                seen.append(ev)

    def exchange(self, command, final, timeout_ms=None):
        """Write ``command``, then ``wait_for(final)`` (default: the command timeout)."""
        self.write(command)
        return self.wait_for(command, final, timeout_ms or self.command_timeout_ms)

    def check(self, command, seen, allowed=()):
        """Accept late asynchronous events (counted; a stray downlink is kept in
        ``unsolicited_downlinks``); anything else in ``seen`` is a ``ModemError``."""
        for ev in seen:
            if ev.kind in allowed:
                continue
            if ev.kind not in _ASYNC:
                raise self.error(command, ev.line)
            self.counters["unsolicited"] += 1
            if ev.kind == EV_DOWNLINK and len(self.unsolicited_downlinks) < 8:
                self.unsolicited_downlinks.append(Downlink(ev.port, ev.payload, ev.rssi, ev.snr, ev.window))

    # -- the API ---------------------------------------------------------------------------
    def configure(self, dev_eui, join_eui, app_key, region="EU868", adr=True, dr=None):
        """Set OTAA credentials (EUIs as 8 bytes or 16 hex digits, ``app_key`` 16 bytes or
        32 hex digits, MSB first), class A, ``region``, ADR and optionally the data rate.
        The key is never logged. Raises ``ValueError`` for a bad argument, ``ModemError``
        if the modem refuses a setting, ``OSError(ETIMEDOUT)`` if it is silent.
        (``drivers.atmodem_join``, loaded for the call and released after it.)"""
        return _joining("configure", self, dev_eui, join_eui, app_key, region, adr, dr)

    def join(self, timeout_ms=120000, attempts=4, backoff_ms=8000, max_backoff_ms=60000):
        """OTAA join: up to ``attempts`` tries within ``timeout_ms``, sleeping ``backoff_ms``
        (doubling, at most ``max_backoff_ms``, at least what a duty-cycle refusal asks)
        between them on the injected clock. Returns True once joined, False if every try
        failed. ``ModemError`` / ``OSError(ETIMEDOUT)`` as ``configure``."""
        return _joining("join", self, timeout_ms, attempts, backoff_ms, max_backoff_ms)

    def is_joined(self):
        """Ask the modem whether it has joined (True/False)."""
        self.joined = self._d.is_joined(self)
        return self.joined

    def set_dr(self, dr):
        """Set the uplink data rate (EU868 DR 0..6; with ADR on, the network may change it)."""
        _joining("set_dr", self, check_dr(dr))
        self.dr = dr

    def get_dr(self):
        """The modem's current uplink data rate (int); ``ModemError`` if it is not one."""
        dr = self._d.get_dr(self)
        if (self.region or "EU868") == "EU868" and dr not in _airtime().DR_EU868:
            raise self.error("get_dr", str(dr), "not an EU868 LoRa data rate")
        self.dr = dr
        return dr

    def get_dev_eui(self):
        """The modem's DevEUI as 16 upper-case hex digits."""
        return _joining("get_dev_eui", self)

    def send(self, port, payload, confirmed=False, timeout_ms=30000):
        """Send ``payload`` (bytes) on application ``port`` (1..223); returns a
        ``SendResult``. Refusals (duty cycle, busy, not joined) are results: nothing was
        sent, keep the data queued. ``ValueError`` for a bad argument or a payload the
        known data rate cannot carry; ``ModemError`` / ``OSError(ETIMEDOUT)`` otherwise."""
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 223:
            raise ValueError("port must be an application port 1..223, got %r" % (port,))
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ValueError("payload must be bytes, got %r" % (type(payload),))
        payload = bytes(payload)
        if len(payload) > 242:
            raise ValueError("payload must be at most 242 bytes, got %d" % len(payload))
        dr = self.dr if self.adr is False else None
        if self._duty is not None:
            dr = self.get_dr()
        toa = None
        if dr is not None:
            a = _airtime()
            sf, bw, n_max = a.DR_EU868[check_dr(dr)]
            if len(payload) > n_max:
                raise ValueError("payload: %d bytes is more than DR%d carries (%d)" % (len(payload), dr, n_max))
            toa = a.time_on_air_ms(a.app_payload_to_phy(len(payload)), sf, bw)
        if self._duty is not None:
            wait = self._duty.wait_ms(SUBBAND, toa, self.now_ms())
            if wait:
                self.counters["duty_cycle"] += 1
                return SendResult(SendResult.DUTY_CYCLE, wait_ms=wait, airtime_ms=toa, dr=dr)
        t0 = self.now_ms()
        res = self._d.send(self, port, payload, bool(confirmed), timeout_ms).result(toa, dr)
        if res.transmitted:
            self.counters["uplinks"] += 1
            if toa is not None and self._duty is not None:
                self._duty.record(SUBBAND, toa, t0)
        if res.status in self.counters:
            self.counters[res.status] += 1
        if res.status == SendResult.NOT_JOINED:
            self.joined = False
        if res.downlink is not None:
            self.counters["downlinks"] += 1
        return res
