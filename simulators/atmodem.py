"""An AT-command LoRaWAN modem on a pty: RAK3172 (RUI3) or Seeed LoRa-E5, byte for byte.

``ATModemEmulator(dialect, clock)`` opens a pseudo-terminal; ``.port_path`` is the slave a
driver opens (pyserial ``serial.Serial(path)``, the board shim's ``machine.UART``, a plain
``open(path, "r+b")``). A thread answers on the master, in the dialect's exact reply
lines (REFERENCE.md §6.4, with the details listed in ``drivers/atmodem_rak.py`` and
``drivers/atmodem_e5.py``), and it is bounded and stoppable (``with`` or ``stop()``).

What it models: persistent settings (EUIs, AppKey, DR, ADR, class, confirm mode, port,
region, OTAA mode); OTAA join (needs an AppKey, and ``expected_app_key`` if given;
``join_failures`` first tries fail, then ``join_accept_probability``); uplinks with airtime
from ``protocol.airtime`` charged to ``protocol.airtime.DutyCycle`` per sub-band (1 % on
band M, refused with the dialect's reply when over budget); frame counters; confirmed
uplinks ACKed with ``ack_probability``; downlinks queued with ``queue_downlink`` and
delivered after the next uplink in RX1 or RX2, printed as the dialect prints them; and
scripted faults (``fault(kind, count, after)``: ``count`` times, None for ever, from the
command after the next ``after`` on): ``garble`` (non-ASCII bytes in the next reply
line), ``partial`` (the next reply line cut short, the rest of that reply lost),
``silent`` (the next commands are not heard: no reply, no effect), ``busy`` (the next
join/uplink answered busy), ``reboot`` (the next command restarts the module before it
replies: session lost, settings kept; the RAK prints its banner), ``join_fail``, ``no_ack``.
An exception inside the model or the network callback is logged and kept in ``errors``
(nothing is answered for it): tests assert it stays empty.

``network(uplink)``, if given, receives every transmitted ``Uplink`` (dev_eui, dev_addr,
fcnt, port, payload, dr, confirmed, airtime_ms, freq_hz, t_s) before its receive windows
open, so it may ``queue_downlink`` an answer for this very uplink. ``list.append`` works.

How virtual time is charged
---------------------------
Airtime, receive windows (RECEIVE_DELAY1/2 1 s/2 s, JOIN_ACCEPT_DELAY1/2 5 s/6 s,
REFERENCE §6.2), retry intervals and the restart are all measured on ``clock`` (a
``VirtualClock``); the duty-cycle window uses ``clock.now_us // 1000``. Replies are
written in wall time at once. Output that the real modem prints *later* is scheduled on
the virtual clock, and ``time_mode`` says who moves the clock there:

- ``"advance"`` (default): the emulator itself advances the clock to the event, as if the
  host had waited, then writes it; the host sees ``OK`` and ``+EVT:TX_DONE`` within
  milliseconds of wall time and the clock shows the airtime and RX windows spent. The
  host should be blocked reading the port meanwhile (a driver waiting for the event is);
  pass ``clock_lock`` to serialise with another thread that moves the same clock (e.g.
  ``SimServer.lock`` when a MicroPython process sleeps on the server's clock).
- ``"follow"``: nothing moves the clock here; scheduled output is written once someone
  else (the host's sleeps, a simulation's scheduler) has moved it past the due time, so
  many modems can share one clock. A command that arrives before the modem's transmission
  and receive windows are over is answered busy. A host on that clock can *settle* the
  emulator instead of waiting for it in real time (``uart_counts``, ``uart_settle``: what
  ``SimServer``'s ``uart_peer``/``uart_settle`` serve to the board's ``machine.UART``): it
  takes the host's bytes up to a count, prints everything due by now and says when its next
  output is due.

Modules: this one holds the pty thread, fault scripting and the public
``ATModemEmulator``; ``atmodem_radio`` the LoRaWAN model (timeline, duty cycle, join,
uplinks and downlinks, ``Uplink``); ``atmodem_rak`` and ``atmodem_e5`` the dialects'
command handlers.
"""

import array
import fcntl
import logging
import os
import random
import select
import termios
import threading
import time
import tty

from drivers.atmodem_core import redact
from protocol import airtime
from simulators.atmodem_e5 import E5_REGIONS, E5Commands  # noqa: F401  (re-exported)
from simulators.atmodem_radio import (  # noqa: F401  (re-exported)
    ACK_PHY, CHANNELS_HZ, JOIN_ACCEPT_DELAY1_MS, JOIN_ACCEPT_DELAY2_MS, JOIN_ACCEPT_PHY,
    JOIN_REQUEST_PHY, RECEIVE_DELAY1_MS, RECEIVE_DELAY2_MS, RX2_DR, RadioModel, Uplink)
from simulators.atmodem_rak import RAK_BANNER, RakCommands
from simulators.clock import VirtualClock

log = logging.getLogger(__name__)

BOOT_MS = 1000
DIALECTS = ("rak3172", "lora-e5")
FAULTS = ("garble", "partial", "silent", "busy", "reboot", "join_fail", "no_ack")


class ATModemEmulator(RakCommands, E5Commands, RadioModel):
    """See the module docstring. All constructor arguments are JSON-able keywords."""

    def __init__(self, dialect="rak3172", clock=None, network=None, dev_eui=None, seed=0,
                 join_failures=0, join_accept_probability=1.0, ack_probability=1.0,
                 expected_app_key=None, rx_window=1, rssi_dbm=-70, snr_db=8.0,
                 time_mode="advance", clock_lock=None, read_prefix=False, net_id=0x000013,
                 max_line=528):
        if dialect not in DIALECTS:
            raise ValueError("dialect must be one of %s, got %r" % (DIALECTS, dialect))
        if time_mode not in ("advance", "follow"):
            raise ValueError("time_mode must be 'advance' or 'follow', got %r" % (time_mode,))
        if rx_window not in (1, 2):
            raise ValueError("rx_window must be 1 or 2, got %r" % (rx_window,))
        self.dialect = dialect
        self.clock = clock if clock is not None else VirtualClock()
        self.network = network
        self.rng = random.Random(seed)
        self.join_failures = join_failures
        self.join_accept_probability = join_accept_probability
        self.ack_probability = ack_probability
        self.expected_app_key = expected_app_key.upper() if expected_app_key else None
        self.rx_window = rx_window
        self.rssi_dbm = rssi_dbm
        self.snr_db = snr_db
        self.time_mode = time_mode
        self.clock_lock = clock_lock
        self.read_prefix = read_prefix
        self.net_id = net_id
        self.max_line = max_line
        self.baudrate = 115200 if dialect == "rak3172" else 9600
        # Settings kept across restarts (both modules store them in flash).
        rak = dialect == "rak3172"
        self.dev_eui = (dev_eui or ("AC1F09FFFE000001" if rak else "2CF7F12024900363")).upper()
        self.app_eui = "0000000000000000" if rak else "8000000000000006"
        self.app_key = None
        self.dr, self.adr, self.device_class, self.confirm = 0, True, "A", False
        self.nwm, self.njm, self.band, self.lpm = 1, 1, 4, 0
        self.mode = "LWABP"  # E5 (its factory default)
        self.region = "EU868"
        self.port = 8  # E5's default application port
        self.echo = False
        self.duty = airtime.DutyCycle()
        self.uplinks = []
        self.joins = 0
        self.counters = {name: 0 for name in (
            "commands", "uplinks", "join_requests", "joins", "duty_cycle_refusals", "busy_replies",
            "downlinks", "acks", "faults", "reboots", "dropped_output_bytes")}
        self.last_downlink = None
        self.errors = []  # exceptions raised inside the model or the network callback (bugs)
        self._downlinks = []
        self._faults = []
        self._lock = threading.RLock()
        self._timeline = []
        self._seq = 0
        self._suppress = False
        self._line = bytearray()  # the command line being received
        self._skipping = False  # a line over max_line: skipped up to its end
        self._consumed = self._emitted = 0  # bytes taken from the host, written for it
        self._host_settles = False  # a host on the clock settles us (uart_counts was called)
        self._master = self._slave = None
        self._thread = None
        self._stopping = False
        self._power_on()

    # -- lifecycle ---------------------------------------------------------------------------
    def _power_on(self):
        self.joined = False
        self.dev_addr = None
        self.fcnt_up = 0
        self._busy_until_us = 0
        self._timeline = []

    def start(self):
        """Open the pty and start answering; returns self."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation, whoever opens it
        os.set_blocking(self._master, False)
        self.port_path = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="atmodem-" + self.dialect, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s=5.0):
        """Stop the thread (bounded wait) and close the pty."""
        if self._thread is None or self._stopping:
            return
        self._stopping = True
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # full of pokes: it wakes anyway
            pass
        self._thread.join(timeout_s)
        with self._lock:  # no _poke writes to a closed pipe
            for fd in (self._master, self._slave, self._wake_r, self._wake_w):
                os.close(fd)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self):
        while not self._stopping:
            # follow mode: output falls due as the host's clock moves, so a scheduled output
            # is polled for; a host that settles (uart_counts) makes it print at its reads,
            # so then nothing needs polling here. Otherwise (nothing scheduled, or "advance"
            # mode, which prints everything scheduled at once) only the host's bytes or
            # ``_poke`` can bring work: the thread sleeps until one does (no idle wakeups).
            polling = self._timeline and self.time_mode == "follow" and not self._host_settles
            ready, _, _ = select.select([self._master, self._wake_r], [], [], 0.002 if polling else None)
            if self._stopping:
                return
            if self._wake_r in ready:
                os.read(self._wake_r, 512)
            with self._lock:
                self._pump(self._master in ready)

    def _poke(self):
        """Wake the thread to look again (another thread scheduled output it must poll for)."""
        if self._thread is None or self._stopping:
            return  # not started, or stopped (its pipe closed)
        try:
            os.write(self._wake_w, b"p")
        except BlockingIOError:  # the pipe is full of pokes already
            pass

    def _pump(self, readable=True):
        """Take the host's bytes (lock held): complete lines are commands; then the output due."""
        data = b""
        if readable:
            try:
                data = os.read(self._master, 4096)
            except (BlockingIOError, OSError):
                data = b""
        self._consumed += len(data)
        buf = self._line
        for b in data:
            if b in (0x0D, 0x0A):
                if buf and not self._skipping:
                    self._command(bytes(buf))
                buf.clear()
                self._skipping = False
            elif not self._skipping:
                buf.append(b)
                if len(buf) > self.max_line:
                    buf.clear()
                    self._skipping = True
                    self._rak_status("AT_TEST_PARAM_OVERFLOW") if self.dialect == "rak3172" \
                        else self._emit("+AT: ERROR(-21)")
        self._run_timeline()

    # -- settling, for a host on the same virtual clock (SimServer's uart_peer, uart_settle) ----
    def uart_counts(self):
        """``(consumed, emitted)``: bytes taken from the host, and bytes written for it less
        those still waiting in the pty for the host to read (a host that opens the port now
        counts from there; output that fell due before it asks is printed first). From then on
        the host settles the emulator (``uart_settle`` at its reads), so in "follow" mode the
        thread no longer polls the clock for due output."""
        with self._lock:
            self._host_settles = self.time_mode == "follow"
            waiting = array.array("i", [0])
            try:
                fcntl.ioctl(self._slave, termios.FIONREAD, waiting)
            except OSError:
                waiting[0] = 0
            emitted = self._emitted - waiting[0]
            if self._host_settles:
                # what fell due while no host settled (a node's power back: its clock moved
                # on) goes into the pty before the host reads, as the thread's own look put
                # it there when it woke on a timer; all of it waits for the host, so the
                # count is taken first (the pty may not show it to FIONREAD at once)
                self._run_timeline()
            return self._consumed, emitted

    def uart_settle(self, sent, timeout_s=2.0):
        """Take the host's bytes up to its count ``sent`` (waiting, bounded, for them to cross
        the pty) and write everything due by now on the clock: ``(emitted, due_us)``, the
        byte count written for the host and when the next scheduled output is due (None:
        nothing scheduled). Only in "follow" mode (the host's clock is the one that moves)."""
        if self.time_mode != "follow":
            raise ValueError("uart_settle needs time_mode 'follow', not %r" % (self.time_mode,))
        return self.settle(sent, timeout_s)

    def settle(self, sent, timeout_s=5.0):
        """``uart_settle`` in either time mode, for a host in the same process (a test's
        port): once it returns, every command among the host's first ``sent`` bytes has been
        answered and everything due by now (in "advance" mode, everything scheduled) is in
        the pty, however late this thread was scheduled. Waits at most ``timeout_s`` real
        seconds for the bytes to cross the pty. Returns ``(emitted, due_us)``."""
        end = time.monotonic() + timeout_s
        while True:
            with self._lock:
                self._pump()
                if self._consumed >= sent or time.monotonic() > end:
                    if self._timeline and self.time_mode == "follow" and not self._host_settles:
                        self._poke()  # the thread polls for what this scheduled
                    return self._emitted, (self._timeline[0][0] if self._timeline else None)
            select.select([self._master], [], [], 0.001)

    # -- controls for tests and the network stand-in ---------------------------------------
    def queue_downlink(self, port, payload, window=None, rssi_dbm=None, snr_db=None):
        """Queue an application downlink for the next uplink's receive window (1 or 2)."""
        if not 1 <= port <= 223:
            raise ValueError("port must be 1..223, got %r" % (port,))
        with self._lock:
            self._downlinks.append({"port": port, "payload": bytes(payload),
                                    "window": window or self.rx_window,
                                    "rssi": self.rssi_dbm if rssi_dbm is None else rssi_dbm,
                                    "snr": self.snr_db if snr_db is None else snr_db})

    def fault(self, kind, count=1, after=0):
        """Script ``count`` occurrences (None: until ``clear_faults``) of fault ``kind``,
        from the command after the next ``after`` commands on."""
        if kind not in FAULTS:
            raise ValueError("kind must be one of %s, got %r" % (", ".join(FAULTS), kind))
        with self._lock:
            self._faults.append([kind, count, self.counters["commands"] + after + 1])

    def clear_faults(self):
        with self._lock:
            self._faults = []

    def airtime_used_ms(self, band="M"):
        """Airtime counted on ``band`` in the hour ending now (virtual)."""
        with self._lock:
            return self.duty.used_ms(band, self._now_ms())

    # -- output ----------------------------------------------------------------------------
    def _take(self, kind):
        for f in self._faults:
            if f[0] == kind and self.counters["commands"] >= f[2]:
                if f[1] is not None:
                    f[1] -= 1
                    if f[1] <= 0:
                        self._faults.remove(f)
                self.counters["faults"] += 1
                return True
        return False

    def _raw(self, data):
        if self._suppress:
            return
        try:
            n = os.write(self._master, data)
        except BlockingIOError:
            n = 0
        self._emitted += n
        self.counters["dropped_output_bytes"] += len(data) - n

    def _emit(self, line):
        data = line.encode() + b"\r\n"
        if line and self._take("garble"):
            data = bytearray(data)
            for _ in range(1 + self.rng.randrange(3)):
                data[self.rng.randrange(len(line))] = self.rng.randrange(0x80, 0x100)
            data = bytes(data)
        elif line and self._take("partial"):
            self._raw(data[:max(1, len(line) // 2)])
            self._suppress = True
            return
        self._raw(data)
        log.debug("%s tx %s", self.dialect, redact(line, self.app_key))
    # -- commands ----------------------------------------------------------------------------
    def _command(self, raw):
        self.counters["commands"] += 1
        self._suppress = False
        text = raw.decode("ascii", "replace").strip()
        log.debug("%s rx %s", self.dialect, redact(text, self.app_key))
        if self._take("silent"):
            return
        if self._take("reboot"):
            self._reboot()
            return
        self._guarded(self._rak if self.dialect == "rak3172" else self._e5, text)

    def _guarded(self, fn, *args):
        # A bug in the model or the network stand-in is recorded, never mistaken for a
        # modem reply: nothing is answered, and ``errors`` shows what happened.
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - reported through self.errors
            log.exception("%s: emulator error", self.dialect)
            self.errors.append(e)

    def _reboot(self):
        self.counters["reboots"] += 1
        self._power_on()
        if self.dialect == "rak3172":
            self._at(BOOT_MS, lambda: [self._emit(line) for line in RAK_BANNER])
