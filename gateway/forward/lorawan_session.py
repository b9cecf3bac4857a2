"""The LoRaWAN upstream's modem session and thread: the base of ``LoRaWANForwarder``.

``ModemSession`` holds what does not depend on the outbox: the Forwarder contract's thread
(``start``/``stop``/``wake``), the monotonic ms count the budget runs on, the serial port
(pyserial ``serial_for_url(up.port)``, or an injected port object) with an ``ATModem`` on it
(``drivers/atmodem.py``, dialect ``up.dialect``), OTAA joining, and recovery from errors.

Theory of operation
-------------------
``run_once()`` does one step and returns how long to wait (ms; None: until ``wake()``):

* **open**: the port and the driver. Opening fails (unplugged, renamed, in use) → counted
  (``port_errors``), tried again after a jittered backoff (2 s .. 2 min).
* **join**: a modem that still holds a session (``AT+NJS``; it keeps one across a gateway
  restart or a port reopen) is used as it is. Otherwise it is configured (DevEUI
  ``up.dev_eui`` or the modem's own, JoinEUI ``up.join_eui``, the AppKey — never logged —,
  EU868, class A, ADR on) and sends ONE OTAA join request when the airtime budget allows
  (joins are uplinks too); a failure waits a jittered doubling backoff, 15 s .. 30 min.
* **send**: the subclass's ``_send_step(now_ms)``.

The airtime budget survives a restart: ``attach`` restores it from the outbox's state
(``STATE_AIRTIME``, ``gateway.airtime_budget``: time the gateway was off counts as none),
each step that changed it stores it again, and a join request or an uplink goes on air only
after the budget *with that frame counted* was stored (a power cut mid-frame cannot forget
it). A store that fails (``budget_save_errors``) holds the frame back ``SAVE_RETRY_MS``.

An error of the modem or the port (a garbled or cut reply, silence, a restart mid-command, the
port gone) in any step is counted (``modem_errors``), everything in flight is released, the
port is dropped and opened again after the error backoff, and the session is checked again.
The thread's waits: a step with nothing to send ends its wait on ``wake()``; a backoff or a
budget wait does not (the Forwarder contract: wake never hurries a reconnect).
"""

import logging
import random
import sqlite3
import threading

import serial

from drivers.atmodem import ATModem
from drivers.errors import DriverError
from gateway import airtime_budget
from gateway.backoff import Backoff
from gateway.forward import Forwarder
from gateway.outbox_sql import OutboxError
from protocol import airtime

log = logging.getLogger("gateway.forward.lorawan")

READ_TIMEOUT_S = 0.01  # the port's read timeout: the driver's deadlines are on the clock
JOIN_TIMEOUT_MS = 20000  # one join attempt (the driver waits its JOIN_WAIT_MS at most)
JOIN_BACKOFF_MS = (15000, 1800000)  # first wait after a failed join, cap (doubling, jittered)
ERROR_BACKOFF_MS = (2000, 120000)  # after a modem or port error
IDLE_MS = 60000  # with nothing to send, look again at least this often (or on wake())
STATE_AIRTIME = "airtime_budget"  # the budget's name in the outbox's state table
SAVE_RETRY_MS = 5000  # the budget could not be stored: no frame goes out before this


def backoff(rng, limits_ms):
    """The project's jittered doubling backoff (``gateway.backoff``) for ``(first, cap)`` ms."""
    return Backoff(limits_ms[0] / 1000.0, limits_ms[1] / 1000.0, rng)


def wait_ms(b):
    """Count a failure on ``Backoff`` ``b``; the ms to wait before the next attempt."""
    return int(b.next_s() * 1000)


class ModemSession(Forwarder):
    """See the module docstring. ``counters``: the names of every counter (all start at 0)."""

    def __init__(self, up, app_key, clock, serial_port, rng, command_timeout_ms, counters):
        if not isinstance(app_key, (bytes, bytearray)) or len(app_key) != 16:
            raise ValueError("app_key must be 16 bytes (the AppKey file's 32 hex digits)")
        self.up, self.clock = up, clock
        self._app_key = bytes(app_key)
        self._injected = serial_port
        self._rng = rng if rng is not None else random.Random()
        self.command_timeout_ms = command_timeout_ms
        self.budget = airtime_budget.AirtimeBudget(up.ttn_fair_use)
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(counters, 0)
        self._port = self._modem = self._outbox = self._thread = None
        self._opened = self._joined = self._configured = False
        self._mono_ms, self._last_ticks = 0, clock.ticks_ms()
        self._next_open = self._next_join = 0
        self._join_backoff = backoff(self._rng, JOIN_BACKOFF_MS)
        self._error_backoff = backoff(self._rng, ERROR_BACKOFF_MS)
        self._dr = None
        self._saved_changes = None  # budget.changes when it was last stored
        self._usage = {}
        self._detail = "not started"
        self._stop, self._wake = threading.Event(), threading.Event()
        self._wakeable = False  # the last step waits for rows: wake() may end its wait

    # -- the Forwarder contract ------------------------------------------------------------
    def start(self, outbox):
        """Forward ``outbox`` from a thread of its own until ``stop``."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the LoRaWAN forwarder is already running")
        self.attach(outbox)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="forward-lorawan", daemon=True)
        self._thread.start()

    def stop(self, timeout_s=5.0):
        """Stop the thread (an uplink under way finishes first: on a real modem up to its
        send timeout) and close the port. Returns True if it stopped within ``timeout_s``."""
        self._stop.set()
        self._wake.set()
        t = self._thread
        if t is not None:
            t.join(timeout_s)
            return not t.is_alive()
        self._close()
        return True

    def wake(self):
        """New rows were committed: end an idle wait now (never a backoff or a budget wait)."""
        self._wake.set()

    def counters(self):
        with self._lock:
            return dict(self._counters)

    def status(self):
        """``{"connected", "detail", "dr", "duty_used_ms", "duty_budget_ms", ...}`` (with fair
        use also ``fair_used_ms``, ``fair_budget_ms``, ``downlinks_used``)."""
        with self._lock:
            out = {"connected": self._joined, "detail": self._detail, "dr": self._dr}
            out.update(self._usage)
            return out

    # -- stepping ------------------------------------------------------------------------------
    def attach(self, outbox):
        """Use ``outbox`` for ``run_once`` without a thread (tests, simulations); the airtime
        budget is restored from it."""
        self._outbox = outbox
        try:
            state = outbox.load_state(STATE_AIRTIME, None)
            if state is not None:
                self.budget.restore(state, self.now_ms())
                log.info("LoRaWAN airtime budget resumed: %s", self.budget.usage(self.now_ms()))
        except (OutboxError, ValueError) as e:  # unreadable or hand-edited: start afresh
            self._count("budget_state_errors")
            log.error("LoRaWAN airtime budget not resumed (%s): starting empty", e)
        self._saved_changes = self.budget.changes

    def _save_budget(self, reserve=None):
        """Store the budget (with ``reserve``: ``(toa_ms, start_ms, end_ms)`` of a frame about
        to go counted in). True if stored; a failure is counted and logged."""
        changes = self.budget.changes
        try:
            self._outbox.put_many([], state={STATE_AIRTIME: self.budget.state(self.now_ms(),
                                                                              reserve)})
        except (OutboxError, ValueError, sqlite3.Error) as e:  # sqlite3: closed at a stop
            self._count("budget_save_errors")
            log.warning("LoRaWAN airtime budget not stored (%s): no frame goes out until it "
                        "is", e)
            return False
        if reserve is None:
            self._saved_changes = changes
        return True

    def _reserve(self, toa, t0, timeout_ms):
        """Store the budget with a frame of ``toa`` ms starting at ``t0`` counted in, ending
        at the latest ``timeout_ms`` later; False if that could not be stored."""
        return self._save_budget((toa, t0, t0 + airtime.ceil_ms(toa) + timeout_ms))

    def now_ms(self):
        """Monotonic ms since this object was made, from the clock's ticks (wrap-safe while
        called at least every few days)."""
        t = self.clock.ticks_ms()
        d = self.clock.ticks_diff(t, self._last_ticks)
        if d > 0:
            self._mono_ms += d
            self._last_ticks = t
        return self._mono_ms

    def run_once(self):
        """One step. Returns the ms to wait before the next step is useful (0: at once), or
        None when there is nothing to do until ``wake()``. Never raises for modem, port or
        outbox trouble (counted)."""
        if self._outbox is None:
            raise RuntimeError("attach(outbox) or start(outbox) first")
        self._wakeable = False
        try:
            if self._modem is None and self.now_ms() < self._next_open:
                return self._next_open - self.now_ms()
            if not self._ensure_port():
                return self._after_error(None)
            if not self._joined:
                return self._join_step(self.now_ms())
            return self._send_step(self.now_ms())
        except (OSError, DriverError, ValueError) as e:  # serial.SerialException is an OSError
            return self._after_error(e)
        finally:
            self._release()
            if self.budget.changes != self._saved_changes:
                self._save_budget()
            with self._lock:
                self._usage = self.budget.usage(self.now_ms())

    def _run(self):
        try:
            while not self._stop.is_set():
                try:
                    wait = self.run_once()
                except Exception:  # noqa: BLE001 - a bug must not end forwarding for good
                    log.exception("LoRaWAN forwarder step failed")
                    self._count("internal_errors")
                    wait = ERROR_BACKOFF_MS[1]
                if self._stop.is_set():
                    break
                timeout = (IDLE_MS if wait is None else wait) / 1000.0
                if self._wakeable:
                    self._wake.wait(timeout)
                    self._wake.clear()
                else:
                    self._stop.wait(timeout)  # a backoff or the budget: wake() does not hurry it
        finally:
            self._release()
            self._close()

    # -- hooks for the subclass ------------------------------------------------------------------
    def _send_step(self, now):
        """One uplink (or a wait); same return as ``run_once``."""
        raise NotImplementedError

    def _release(self):
        """Give back whatever the step took from the outbox and did not deliver."""

    # -- port, session -----------------------------------------------------------------------
    def _count(self, name, n=1):
        with self._lock:
            self._counters[name] += n

    def _set_detail(self, text):
        with self._lock:
            self._detail = text

    def _ensure_port(self):
        if self._modem is not None:
            return True
        port = self._injected
        if port is None:
            try:
                port = serial.serial_for_url(self.up.port, baudrate=self.up.baudrate, timeout=READ_TIMEOUT_S)
            except (OSError, ValueError) as e:
                self._count("port_errors")
                self._set_detail("cannot open the modem port %s (%s): check the cable, the "
                                 "port name and that nothing else uses it" % (self.up.port, e))
                return False
        self._port = port
        self._modem = ATModem(port, self.clock, self.up.dialect, log=_modem_log,
                              command_timeout_ms=self.command_timeout_ms)
        if self._opened:
            self._count("reconnects")
        self._opened, self._joined, self._configured = True, False, False
        return True

    def _close(self):
        port, self._port, self._modem = self._port, None, None
        with self._lock:
            self._joined = False
        if port is not None and port is not self._injected:
            try:
                port.close()
            except (OSError, ValueError):
                pass

    def _after_error(self, e):
        """Count ``e`` (None: the port did not open), drop the port, back off."""
        if e is not None:
            self._count("modem_errors")
            log.warning("LoRaWAN modem on %s: %s", self.up.port, e)
            self._set_detail("modem error: %s; reopening the port. If this repeats, check the "
                             "wiring, the baud rate (%d) and the modem's power" % (e, self.up.baudrate))
        self._release()
        self._close()
        wait = wait_ms(self._error_backoff)
        self._next_open = self.now_ms() + wait
        return wait

    def _join_step(self, now):
        if now < self._next_join:
            return self._next_join - now
        m, up = self._modem, self.up
        if m.is_joined():  # the modem kept its session (our restart, a port reopen)
            return self._joined_now("the modem kept its session")
        if not self._configured:
            m.configure(up.dev_eui or m.get_dev_eui(), up.join_eui, self._app_key, region="EU868", adr=True)
            self._configured = True
        toa = airtime_budget.join_airtime_ms(m.get_dr())
        wait, reason = self.budget.wait_ms(toa, now)
        if wait:
            self._set_detail("joining: waiting %d s for the %s budget" % (wait // 1000, reason))
            return wait
        t0 = self.now_ms()
        if not self._reserve(toa, t0, JOIN_TIMEOUT_MS):
            return SAVE_RETRY_MS
        self._count("join_attempts")
        ok = m.join(timeout_ms=JOIN_TIMEOUT_MS, attempts=1)
        t1 = self.now_ms()
        # Recorded as ending when the modem answered: later than the real end, never earlier.
        self.budget.record_uplink(toa, max(t0, t1 - airtime.ceil_ms(toa)))
        if ok:
            self._count("joins")
            return self._joined_now("joined")
        self._count("join_failures")
        wait = wait_ms(self._join_backoff)
        self._next_join = t1 + wait
        self._set_detail("join failed %d time(s); next try in %d s. Check the DevEUI/JoinEUI/"
                         "AppKey registered in the network server, the antenna and the coverage"
                         % (self._join_backoff.failures, wait // 1000))
        return wait

    def _joined_now(self, how):
        with self._lock:
            self._joined = True
        self._join_backoff.reset()
        self._error_backoff.reset()
        self._set_detail(how)
        return 0


def _modem_log(line):
    log.debug("modem %s", line)  # the driver redacts the AppKey from every line
