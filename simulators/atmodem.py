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
  and receive windows are over is answered busy.
"""

import heapq
import logging
import os
import random
import select
import threading
import tty

from drivers.atmodem import redact
from protocol import airtime
from simulators.clock import VirtualClock

log = logging.getLogger(__name__)

RECEIVE_DELAY1_MS = 1000  # REFERENCE §6.2 (spec defaults)
RECEIVE_DELAY2_MS = 2000
JOIN_ACCEPT_DELAY1_MS = 5000
JOIN_ACCEPT_DELAY2_MS = 6000
RX2_DR = 0  # RX2 869.525 MHz at DR0, the spec default
JOIN_REQUEST_PHY = 23  # MHDR 1, JoinEUI 8, DevEUI 8, DevNonce 2, MIC 4
JOIN_ACCEPT_PHY = 17  # MHDR 1, JoinNonce 3, NetID 3, DevAddr 4, DLSettings 1, RxDelay 1, MIC 4
ACK_PHY = 12  # an empty downlink: MHDR, DevAddr, FCtrl, FCnt, MIC
CHANNELS_HZ = (868100000, 868300000, 868500000)  # EU868 default channels (band M)
BOOT_MS = 1000
DIALECTS = ("rak3172", "lora-e5")
FAULTS = ("garble", "partial", "silent", "busy", "reboot", "join_fail", "no_ack")
RAK_BANNER = ("RAKwireless RAK3172", "Current Work Mode: LoRaWAN.")
E5_REGIONS = ("EU868", "US915", "AU915", "AS923", "KR920", "IN865")


class Uplink:
    """One transmitted uplink, as the network stand-in sees it."""

    FIELDS = ("dev_eui", "dev_addr", "fcnt", "port", "payload", "dr", "confirmed", "airtime_ms",
              "freq_hz", "t_s")

    def __init__(self, **kw):
        for name in self.FIELDS:
            setattr(self, name, kw[name])

    def as_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}

    def __repr__(self):
        return "Uplink(%s)" % ", ".join("%s=%r" % kv for kv in self.as_dict().items())


def _hex(text, nbytes=None):
    t = text.strip().strip('"').replace(" ", "").replace(":", "")
    if len(t) % 2 or (nbytes is not None and len(t) != 2 * nbytes):
        return None
    try:
        return bytes.fromhex(t)
    except ValueError:
        return None


def _sf_bw(dr):
    return airtime.DR_EU868[dr][:2]


class ATModemEmulator:
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
        self._thread = threading.Thread(target=self._run, name="atmodem-" + self.dialect, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s=5.0):
        """Stop the thread (bounded wait) and close the pty."""
        if self._thread is None or self._stopping:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout_s)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self):
        buf = bytearray()
        skipping = False
        while not self._stopping:
            wait = 0.002 if (self._timeline and self.time_mode == "follow") else 0.05
            ready, _, _ = select.select([self._master, self._wake_r], [], [], wait)
            if self._stopping:
                return
            data = b""
            if self._master in ready:
                try:
                    data = os.read(self._master, 4096)
                except (BlockingIOError, OSError):
                    data = b""
            with self._lock:
                for b in data:
                    if b in (0x0D, 0x0A):
                        if buf and not skipping:
                            self._command(bytes(buf))
                        buf.clear()
                        skipping = False
                    elif not skipping:
                        buf.append(b)
                        if len(buf) > self.max_line:
                            buf.clear()
                            skipping = True
                            self._rak_status("AT_TEST_PARAM_OVERFLOW") if self.dialect == "rak3172" \
                                else self._emit("+AT: ERROR(-21)")
                self._run_timeline()

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

    # -- time ------------------------------------------------------------------------------
    def _now_ms(self):
        return self.clock.now_us // 1000

    def _at(self, delay_ms, fn):
        self._seq += 1
        due = self.clock.now_us + int(round(delay_ms * 1000))
        heapq.heappush(self._timeline, (due, self._seq, fn))
        self._busy_until_us = max(self._busy_until_us, due)

    def _run_timeline(self):
        while self._timeline:
            due = self._timeline[0][0]
            if due > self.clock.now_us:
                if self.time_mode != "advance":
                    return
                if self.clock_lock is not None:
                    with self.clock_lock:
                        self.clock.advance_us(max(0, due - self.clock.now_us))
                else:
                    self.clock.advance_us(max(0, due - self.clock.now_us))
            self._guarded(heapq.heappop(self._timeline)[2])

    def _busy(self):
        if self.clock.now_us < self._busy_until_us or self._take("busy"):
            self.counters["busy_replies"] += 1
            return True
        return False

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

    def _rak_status(self, status):
        self._raw(b"\r\n")
        self._emit(status)

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

    # -- shared LoRaWAN behaviour ------------------------------------------------------------
    def _channel(self):
        freq = self.rng.choice(CHANNELS_HZ)
        return freq, airtime.subband(freq)

    def _budget(self, toa):
        """(freq, band) if a frame of ``toa`` may start now, else the wait in ms."""
        freq, band = self._channel()
        wait = self.duty.wait_ms(band, toa, self._now_ms())
        if wait:
            self.counters["duty_cycle_refusals"] += 1
            return wait
        self.duty.record(band, toa, self._now_ms())
        return freq, band

    def _join_request(self):
        """Check and transmit one join request: ("busy"|("duty", ms)|(accepted, toa))."""
        if self._busy():
            return "busy"
        sf, bw = _sf_bw(self.dr)
        toa = airtime.time_on_air_ms(JOIN_REQUEST_PHY, sf, bw)
        got = self._budget(toa)
        if not isinstance(got, tuple):
            return ("duty", got)
        self.counters["join_requests"] += 1
        key_ok = self.app_key is not None and self.expected_app_key in (None, self.app_key)
        if self.join_failures > 0:
            self.join_failures -= 1
            accepted = False
        else:
            accepted = key_ok and not self._take("join_fail") and \
                self.rng.random() < self.join_accept_probability
        self.joined = False
        return accepted, toa

    def _accept_join(self):
        self.joined = True
        self.joins += 1
        self.counters["joins"] += 1
        self.dev_addr = (0x26 << 24) | self.rng.getrandbits(24)
        self.fcnt_up = 0

    def _uplink(self, port, payload, confirmed):
        """Check and transmit one uplink: a refusal string/tuple, or the plan dict."""
        if not self.joined:
            return "not_joined"
        if self._busy():
            return "busy"
        n_max = airtime.DR_EU868[self.dr][2]
        if len(payload) > n_max:
            return ("length", n_max)
        sf, bw = _sf_bw(self.dr)
        toa = airtime.time_on_air_ms(airtime.app_payload_to_phy(len(payload)), sf, bw)
        got = self._budget(toa)
        if not isinstance(got, tuple):
            return ("duty", got)
        up = Uplink(dev_eui=self.dev_eui, dev_addr=self.dev_addr, fcnt=self.fcnt_up, port=port,
                    payload=payload, dr=self.dr, confirmed=confirmed, airtime_ms=toa,
                    freq_hz=got[0], t_s=self.clock.monotonic_s())
        self.fcnt_up += 1
        self.uplinks.append(up)
        self.counters["uplinks"] += 1
        if self.network is not None:
            self.network(up)
        acked = confirmed and not self._take("no_ack") and self.rng.random() < self.ack_probability
        dl = self._downlinks.pop(0) if self._downlinks and (acked or not confirmed) else None
        window = dl["window"] if dl else self.rx_window
        plan = {"acked": acked, "dl": dl, "window": window, "pending": bool(self._downlinks),
                "rssi": dl["rssi"] if dl else self.rssi_dbm, "snr": dl["snr"] if dl else self.snr_db}
        if dl or acked:
            rx_sf, rx_bw = _sf_bw(self.dr if window == 1 else RX2_DR)
            phy = 13 + len(dl["payload"]) if dl else ACK_PHY
            dl_toa = airtime.time_on_air_ms(phy, rx_sf, rx_bw, crc=False)  # downlinks carry no CRC
            plan["delay_ms"] = toa + (RECEIVE_DELAY1_MS if window == 1 else RECEIVE_DELAY2_MS) + dl_toa
            self.counters["acks"] += 1 if acked else 0
            self.counters["downlinks"] += 1 if dl else 0
            if dl:
                self.last_downlink = dl
        else:
            plan["delay_ms"] = toa + RECEIVE_DELAY2_MS
        return plan

    # -- RAK3172 (RUI3) ------------------------------------------------------------------------
    def _rak(self, text):
        if self.echo:
            self._raw(text.encode() + b"\r\n")
        u = text.upper()
        if u == "AT":
            return self._rak_status("OK")
        if u == "ATE":
            self.echo = not self.echo
            return self._rak_status("OK")
        if u == "ATZ":
            return self._reboot()
        if not u.startswith("AT+"):
            return self._rak_status("AT_ERROR")
        eq = text.find("=")
        name = (u[3:eq] if eq > 0 else u[3:]).rstrip("?")
        arg = text[eq + 1:].strip() if eq > 0 else None
        handler = getattr(self, "_rak_" + name.lower(), None)
        if handler is None:
            return self._rak_status("AT_ERROR")
        if eq < 0 and u.endswith("?"):
            self._emit("AT+%s: help" % name)
            return self._rak_status("OK")
        handler(name, arg)

    def _rak_value(self, name, value):
        self._emit("AT+%s=%s" % (name, value) if self.read_prefix else str(value))
        self._rak_status("OK")

    def _rak_setting(self, name, arg, attr, parse, show=str):
        if arg == "?":
            return self._rak_value(name, show(getattr(self, attr)))
        value = parse(arg) if arg is not None else None
        if value is None:
            return self._rak_status("AT_PARAM_ERROR")
        setattr(self, attr, value)
        self._rak_status("OK")

    @staticmethod
    def _int_in(lo, hi):
        return lambda a: int(a) if a.isdigit() and lo <= int(a) <= hi else None

    def _rak_nwm(self, name, arg):
        old = self.nwm
        self._rak_setting(name, arg, "nwm", self._int_in(0, 2))
        if self.nwm != old:
            self._reboot()  # changing the work mode restarts the module

    def _rak_band(self, name, arg):
        self._rak_setting(name, arg, "band", self._int_in(0, 12))

    def _rak_njm(self, name, arg):
        self._rak_setting(name, arg, "njm", self._int_in(0, 1))

    def _rak_class(self, name, arg):
        self._rak_setting(name, arg, "device_class", lambda a: a.upper() if a.upper() in ("A", "B", "C") else None)

    def _rak_deveui(self, name, arg):
        self._rak_setting(name, arg, "dev_eui", lambda a: a.upper() if _hex(a, 8) else None)

    def _rak_appeui(self, name, arg):
        self._rak_setting(name, arg, "app_eui", lambda a: a.upper() if _hex(a, 8) else None)

    def _rak_appkey(self, name, arg):
        self._rak_setting(name, arg, "app_key", lambda a: a.upper() if _hex(a, 16) else None)

    def _rak_adr(self, name, arg):
        self._rak_setting(name, arg, "adr", lambda a: {"0": False, "1": True}.get(a), lambda v: int(v))

    def _rak_dr(self, name, arg):
        self._rak_setting(name, arg, "dr", self._int_in(0, 6))  # DR7 (FSK) is not modelled

    def _rak_cfm(self, name, arg):
        self._rak_setting(name, arg, "confirm", lambda a: {"0": False, "1": True}.get(a), lambda v: int(v))

    def _rak_lpm(self, name, arg):
        self._rak_setting(name, arg, "lpm", self._int_in(0, 1))

    def _rak_njs(self, name, arg):
        if arg != "?":
            return self._rak_status("AT_ERROR")
        self._rak_value(name, 1 if self.joined else 0)

    def _rak_recv(self, name, arg):
        if arg != "?":
            return self._rak_status("AT_ERROR")
        dl = self.last_downlink
        self._rak_value(name, "%d:%s" % (dl["port"], dl["payload"].hex().upper()) if dl else "0:")

    def _rak_join(self, name, arg):
        fields = [1, 0, 8, 0]
        if arg == "?":
            return self._rak_status("AT_PARAM_ERROR")
        if arg is not None:
            parts = arg.split(":")
            if len(parts) > 4 or not all(p.isdigit() for p in parts):
                return self._rak_status("AT_PARAM_ERROR")
            fields[:len(parts)] = [int(p) for p in parts]
        start, auto, interval_s, attempts = fields
        if start > 1 or auto > 1 or not 7 <= interval_s <= 255 or attempts > 255:
            return self._rak_status("AT_PARAM_ERROR")
        if start == 0:
            return self._rak_status("OK")
        if self.nwm != 1 or self.njm != 1 or self.band != 4:
            return self._rak_status("AT_ERROR")  # only LoRaWAN OTAA on EU868 is modelled
        self._rak_join_try(max(1, attempts), interval_s * 1000, first=True)

    def _rak_join_try(self, left, interval_ms, first=False):
        got = self._join_request()
        refused = got == "busy" or got[0] == "duty"
        if first:
            if refused:
                return self._rak_status("AT_BUSY_ERROR" if got == "busy" else "AT_DUTYCYCLE_RESTRICTED")
            self._rak_status("OK")
        accepted, toa = (False, 0) if refused else got
        if accepted:
            sf, bw = _sf_bw(self.dr)
            delay = toa + JOIN_ACCEPT_DELAY1_MS + airtime.time_on_air_ms(JOIN_ACCEPT_PHY, sf, bw, crc=False)
            self._at(delay, lambda: (self._accept_join(), self._emit("+EVT:JOINED")))
        elif left > 1:
            self._at(toa + JOIN_ACCEPT_DELAY2_MS + interval_ms,
                     lambda: self._rak_join_try(left - 1, interval_ms))
        else:
            self._at(toa + JOIN_ACCEPT_DELAY2_MS, lambda: self._emit("+EVT:JOIN_FAILED_RX_TIMEOUT"))

    def _rak_send(self, name, arg):
        colon = (arg or "").find(":")
        port = arg[:colon] if colon > 0 else ""
        payload = _hex(arg[colon + 1:]) if colon > 0 else None
        if not port.isdigit() or not 1 <= int(port) <= 223 or payload is None:
            return self._rak_status("AT_PARAM_ERROR")
        plan = self._uplink(int(port), payload, self.confirm)
        if not isinstance(plan, dict):
            kind = plan if isinstance(plan, str) else plan[0]
            return self._rak_status({"not_joined": "AT_NO_NETWORK_JOINED", "busy": "AT_BUSY_ERROR",
                                     "length": "AT_PARAM_ERROR", "duty": "AT_DUTYCYCLE_RESTRICTED"}[kind])
        self._rak_status("OK")

        def done():
            if not self.confirm:
                self._emit("+EVT:TX_DONE")
            elif plan["acked"]:
                self._emit("+EVT:SEND_CONFIRMED_OK")
            else:
                self._emit("+EVT:SEND_CONFIRMED_FAILED(4)")
            dl = plan["dl"]
            if dl:
                self._emit("+EVT:RX_%d:%d:%d:UNICAST:%d:%s" % (
                    plan["window"], plan["rssi"], round(plan["snr"]), dl["port"], dl["payload"].hex().upper()))
        self._at(plan["delay_ms"], done)

    # -- LoRa-E5 -------------------------------------------------------------------------------
    def _e5(self, text):
        u = text.upper()
        if u == "AT":
            return self._emit("+AT: OK")
        if not u.startswith("AT+"):
            return self._emit("+AT: ERROR(-10)")
        eq = text.find("=")
        name = u[3:eq] if eq > 0 else u[3:]
        arg = text[eq + 1:].strip() if eq > 0 else None
        handler = getattr(self, "_e5_" + name.lower(), None)
        if handler is None:
            return self._emit("+%s: ERROR(-10)" % name)
        handler(name, arg)

    def _e5_id(self, name, arg):
        def show(which):
            if which == "DEVADDR":
                v = "%08X" % (self.dev_addr or 0)
            else:
                v = self.dev_eui if which == "DEVEUI" else self.app_eui
            label = {"DEVADDR": "DevAddr", "DEVEUI": "DevEui", "APPEUI": "AppEui"}[which]
            self._emit("+ID: %s, %s" % (label, ":".join(v[i:i + 2] for i in range(0, len(v), 2))))
        if arg is None:
            for which in ("DEVADDR", "DEVEUI", "APPEUI"):
                show(which)
            return
        which, _, value = arg.partition(",")
        which = which.strip().upper()
        if which not in ("DEVADDR", "DEVEUI", "APPEUI") or (value and which == "DEVADDR"):
            return self._emit("+ID: ERROR(-1)")
        if value:
            if _hex(value, 8) is None:
                return self._emit("+ID: ERROR(-1)")
            setattr(self, "dev_eui" if which == "DEVEUI" else "app_eui", _hex(value, 8).hex().upper())
        show(which)

    def _e5_key(self, name, arg):
        which, _, value = (arg or "").partition(",")
        key = _hex(value, 16)
        if which.strip().upper() != "APPKEY" or key is None:
            return self._emit("+KEY: ERROR(-1)")
        self.app_key = key.hex().upper()
        self._emit("+KEY: APPKEY %s" % self.app_key)

    def _e5_dr(self, name, arg):
        def show():
            sf, bw = _sf_bw(self.dr)
            return "%s DR%d  SF%d BW%dK" % (self.region, self.dr, sf, bw // 1000)
        if arg is None:
            self._emit("+DR: DR%d" % self.dr)
            return self._emit("+DR: " + show())
        a = arg.upper()
        if a in E5_REGIONS:
            self.region = a
            return self._emit("+DR: " + a)
        a = a[2:] if a.startswith("DR") else a
        if not a.isdigit() or int(a) not in airtime.DR_EU868:
            return self._emit("+DR: ERROR(-1)")
        self.dr = int(a)
        self._emit("+DR: " + show())

    def _e5_ch(self, name, arg):
        a = (arg or "").replace(" ", "").upper()
        if a != "NUM,0-2":
            return self._emit("+CH: ERROR(-1)")  # only the three default channels are modelled
        self._emit("+CH: NUM, 0-2")

    def _e5_simple(self, name, arg, attr, allowed):
        a = (arg or "").upper()
        if arg is not None:
            if a not in allowed:
                return self._emit("+%s: ERROR(-1)" % name)
            setattr(self, attr, a)
        self._emit("+%s: %s" % (name, getattr(self, attr)))

    def _e5_mode(self, name, arg):
        self._e5_simple(name, arg, "mode", ("LWOTAA", "LWABP", "TEST"))

    def _e5_class(self, name, arg):
        self._e5_simple(name, arg, "device_class", ("A", "B", "C"))

    def _e5_adr(self, name, arg):
        if arg is not None and arg.upper() not in ("ON", "OFF"):
            return self._emit("+ADR: ERROR(-1)")
        if arg is not None:
            self.adr = arg.upper() == "ON"
        self._emit("+ADR: %s" % ("ON" if self.adr else "OFF"))

    def _e5_port(self, name, arg):
        if arg is not None:
            if not arg.isdigit() or not 1 <= int(arg) <= 223:
                return self._emit("+PORT: ERROR(-1)")
            self.port = int(arg)
        self._emit("+PORT: %d" % self.port)

    def _e5_njs(self, name, arg):
        if arg not in (None, "?"):
            return self._emit("+NJS: ERROR(-1)")
        self._emit("+NJS: %d" % (1 if self.joined else 0))

    def _e5_reset(self, name, arg):
        self._emit("+RESET: OK")
        self._reboot()

    def _e5_join(self, name, arg):
        force = (arg or "").upper() == "FORCE"
        if arg is not None and not force:
            return self._emit("+JOIN: ERROR(-1)")
        if self.mode != "LWOTAA":
            return self._emit("+JOIN: Not in OTAA mode")
        if self.region != "EU868":
            return self._emit("+JOIN: ERROR(-12)")  # only EU868 is modelled
        if self.joined and not force:
            return self._emit("+JOIN: Joined already")
        got = self._join_request()
        if got == "busy":
            return self._emit("+JOIN: LoRaWAN modem is busy")
        if got[0] == "duty":
            return self._emit("+JOIN: No band in %dms" % got[1])
        self._emit("+JOIN: Start")
        self._emit("+JOIN: FORCE" if force else "+JOIN: NORMAL")
        accepted, toa = got
        if accepted:
            sf, bw = _sf_bw(self.dr)

            def joined():
                self._accept_join()
                a = "%08X" % self.dev_addr
                self._emit("+JOIN: Network joined")
                self._emit("+JOIN: NetID %06X DevAddr %s" % (self.net_id, ":".join(a[i:i + 2] for i in (0, 2, 4, 6))))
                self._emit("+JOIN: Done")
            self._at(toa + JOIN_ACCEPT_DELAY1_MS + airtime.time_on_air_ms(JOIN_ACCEPT_PHY, sf, bw, crc=False), joined)
        else:
            self._at(toa + JOIN_ACCEPT_DELAY2_MS, lambda: (self._emit("+JOIN: Join failed"), self._emit("+JOIN: Done")))

    def _e5_msghex(self, name, arg, confirmed=False, text=False):
        if text:
            payload = (arg or "").strip().strip('"').encode()
        else:
            payload = _hex(arg or "")
            if payload is None:
                return self._emit("+%s: ERROR(-1)" % name)
        plan = self._uplink(self.port, payload, confirmed)
        if not isinstance(plan, dict):
            kind = plan if isinstance(plan, str) else plan[0]
            msg = {"not_joined": "Please join network first", "busy": "LoRaWAN modem is busy"}.get(kind)
            if kind == "length":
                msg = "Length error %d" % plan[1]
            elif kind == "duty":
                msg = "No band in %dms" % plan[1]
            return self._emit("+%s: %s" % (name, msg))
        self._emit("+%s: Start" % name)
        if confirmed:
            self._emit("+%s: Wait ACK" % name)

        def done():
            dl = plan["dl"]
            if plan["pending"]:
                self._emit("+%s: FPENDING" % name)
            if plan["acked"]:
                self._emit("+%s: ACK Received" % name)
            if dl:
                self._emit('+%s: PORT: %d; RX: "%s"' % (name, dl["port"], dl["payload"].hex().upper()))
            if dl or plan["acked"]:
                self._emit("+%s: RXWIN%d, RSSI %d, SNR %.1f" % (name, plan["window"], plan["rssi"], plan["snr"]))
            self._emit("+%s: Done" % name)
        self._at(plan["delay_ms"], done)

    def _e5_cmsghex(self, name, arg):
        self._e5_msghex(name, arg, confirmed=True)

    def _e5_msg(self, name, arg):
        self._e5_msghex(name, arg, text=True)

    def _e5_cmsg(self, name, arg):
        self._e5_msghex(name, arg, confirmed=True, text=True)
