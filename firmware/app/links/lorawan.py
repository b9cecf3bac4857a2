"""``LoRaWANLink``: the node's records over LoRaWAN, through an AT-command modem.

Theory of operation
-------------------
``open()`` (once per boot from ``app/main.py``) asks the modem whether it still holds a session
(``AT+NJS=?``). The modem stays powered through the ESP32's deep sleep and keeps its
session, so a waking node does not configure or join again: only a modem without a session
is configured (DevEUI/JoinEUI from ``config.json``, the AppKey from ``secrets.json``; the
driver never logs it) and joined by OTAA (``app/links/lorawan_join.py``, loaded only then),
``JOIN_ATTEMPTS`` tries ``JOIN_PAUSE_MS`` apart
(the watchdog fed throughout). A boot whose join failed backs off across wakes: the next
``2**(k-1)`` wakes after the k-th failed one skip the join, at most
``link.lorawan.join_backoff_max_s`` worth of wakes, and ``open()`` returns False — the
records stay on flash. The backoff state is in ``counters``, which the node keeps in RTC
memory through deep sleep.

``deliver(log)`` sends up to ``max_uplinks`` uplinks per wake. Each carries pending records
of ONE boot epoch, oldest first, packed by ``protocol.lorapack.pack`` into the application
payload the modem's current data rate allows (``airtime.max_app_payload``; read before each
uplink, since ADR may change it); the flash log is streamed, ``_CHUNK`` records at a time.
A status record too large for the payload keeps its values and as many counters as fit, most
useful first (``_STATUS_FIRST``). A record that cannot be packed at all (a value beyond the
pack's range) is skipped and counted (``records_unpackable``): the receiver sees the seq gap.

Batching (``link.lorawan.max_delay_s``): a wake samples and logs as always, but sends only
when a batch is due, every ``max_delay_s // interval_s + 1`` wakes, so no reading waits on the
flash longer than ``max_delay_s`` while the network works (legionella: a reading every 5 min,
an uplink every 65 min carrying 13). ``wake["held"]`` counts the wakes held since the last
sending one; the node keeps it in RTC memory through deep sleep (``Node.persist``), so a
power-on or watchdog reset (no RTC memory) sends at once, as a freshly installed node
should. A held wake does not touch the modem (``open()`` and ``deliver()`` return at once):
it neither loads the modem's driver nor opens the UART (``LoRaWANLink.modem``).
A due wake stays due until an uplink went out and nothing is left that the wake's
``max_uplinks`` could not take: a refusal (duty cycle, busy, no session) or a backlog is
retried at the next wake, while an unconfirmed or unacknowledged uplink waits a batch period
(the network may be out of reach: do not spend an uplink every wake on it). The node holds no
alarm thresholds (the gateway evaluates ``[[alarms]]``), so nothing jumps the queue.

Waiting for the result in light sleep (``nap``, ``machine.lightsleep`` from ``app/main.py``): a
class A modem reports a confirmed uplink only after RX1 (RECEIVE_DELAY1, 1 s, after the
transmission ends), and prints nothing between accepting the command and that report. So
once the modem has accepted an uplink and the port has been quiet for one read timeout, the
ESP32 light-sleeps until ``NAP_MARGIN_MS`` before RX1 can open (time on air + 1 s from the
command), then waits awake for the report. It never sleeps while the modem may speak: the
ESP32 cannot wake on UART2 and loses the bytes that arrive during light sleep (ESP-IDF
``esp_sleep_enable_uart_wakeup``: "ESP32 does not support wakeup from UART2"), while the
UART keeps its state through it (ESP-IDF Sleep Modes: "peripherals ... their internal state
is preserved"). The link does this beneath the unmodified driver, standing between it and
the UART as its port (``write``, ``read``): it watches the uplink's own command go out (it
carries the payload in hex, in both dialects) and a reply line come back that is not an echo
of it; ``counters["rx_sleep_ms"]`` adds up the naps. A network that sets a longer
RECEIVE_DELAY1 (TTN: 5 s) only leaves the ESP32 awake for the rest.

Trimming: a **confirmed** uplink (``link.lorawan.confirmed``) trims the log only on the
network's ack (``SendResult.CONFIRMED``); without one the records stay and go again next
time (the receiver de-duplicates by record key). An **unconfirmed** uplink trims as soon as
the modem reports it sent: LoRaWAN's MIC protects the frame on air, and a lost frame shows
end to end as a gap in the (epoch, seq) keys — no downlink airtime is spent on acks
(docs/protocol-lorawan.md, "Confirmed or unconfirmed").

Refusals are results, not errors: a duty-cycle refusal, a busy modem or a lost session end
this wake's sending with the records queued. The regulatory duty cycle is enforced by the
modem (both RUI3 and the LoRa-E5 firmware apply the EU868 sub-band limits); the node keeps no
``DutyCycle`` of its own because a deep-sleep wake would start it empty, which would only
pretend to check. It bounds airtime per wake by ``max_uplinks`` and counts the airtime it
used (``airtime_ms``) for the status record.

Downlinks, in the uplink's reply or unsolicited, go to ``app.downlink.receive``: configuration
changes are kept on flash and checked and applied by the next boot, whose outcome ``open()``
adds to ``counters`` (``downlinks_applied``, ``downlinks_rejected``); nothing about a
downlink ever stops delivery. Runs on MicroPython (and CPython for tests).
"""

import os
import sys
from binascii import hexlify

from drivers import release
from drivers.errors import DriverError

# protocol.airtime and protocol.lorapack (with protocol.quantities) are imported by deliver(),
# not here: the node samples and logs before it sends, without their ~11 KB (32-bit port)
# loaded yet (docs/benchmarks.md, heap). The modem's driver (drivers.atmodem, its parsing core
# and dialect, drivers.port) is loaded by the first use of ``LoRaWANLink.modem``: a wake that
# holds its readings never talks to the modem, and so never loads it.

SEND_TIMEOUT_MS = 30000  # one uplink, to its result
MAX_UPLINKS = 4  # per wake
_CHUNK = 16  # records read from the flash log at a time
RX1_DELAY_MS = 1000  # RECEIVE_DELAY1, the spec default (REFERENCE §6.2)
NAP_MARGIN_MS = 50  # awake this long before RX1 can open
NAP_MIN_MS = 100  # a shorter wait is not worth a light sleep
# Counters a status record keeps first when it must be cut to fit an uplink.
_STATUS_FIRST = ("boots", "cycles", "dropped", "gaps", "pending", "sensor_failures", "joins", "uplinks",
                 "duty_cycle", "not_confirmed", "link_errors", "downlinks", "downlinks_applied",
                 "downlinks_rejected", "airtime_ms", "rx_sleep_ms", "rail_cycles", "records_unpackable", "nacks",
                 "crc_errors", "timeouts", "bus_recoveries", "torn", "meta_faults")
_COUNTERS = ("join_attempts", "joins", "join_backoff", "join_skip", "uplinks", "airtime_ms",
             "records_sent", "not_confirmed", "duty_cycle", "busy", "not_joined", "link_errors",
             "records_unpackable", "downlinks", "downlinks_applied", "downlinks_rejected", "rx_sleep_ms")


class LoRaWANLink:
    """The lorawan link (see the module docstring). ``uart``: the serial-port contract
    (``drivers.port``), or a callable that opens it, called at the modem's first use (a wake
    that holds its readings then never opens the UART); ``cfg``: the validated configuration
    (``link.modem``, ``link.lorawan``, ``interval_s``); ``secrets``: ``lorawan_app_key`` (bytes);
    ``clock``: the clock contract; ``feed``: the watchdog's feed; ``root``: the flash root
    for ``overrides.json`` (default the current directory); ``modem``: an ``ATModem`` to
    use instead of one made on ``uart``; ``nap(ms)``: light-sleep the ESP32 (None: wait
    awake; with it the driver reads and writes the UART through ``write`` and ``read``)."""

    def __init__(self, uart, cfg, secrets, clock, feed=None, root=None, max_uplinks=MAX_UPLINKS,
                 modem=None, nap=None):
        self.cfg = cfg
        self.lw = cfg["link"]["lorawan"]
        self.clock = clock
        self.feed = feed or (lambda: None)
        self.root = root if root is not None else (os.getcwd() or "/")
        self.max_uplinks = max_uplinks
        self.batch_wakes = self.lw["max_delay_s"] // max(1, cfg["interval_s"]) + 1
        # the time step the pack predicts: the node's record step (a fixed header, see _stream)
        self.step = cfg.get("mean_period_s") or cfg["interval_s"]
        self.wake = {"held": None}  # wakes held since the last sending one (None: send now)
        self._uart = uart
        self._nap = nap
        self._hex = self._until = None  # the uplink being sent (hex payload); when its nap ends
        self._modem = modem
        self._app_key = secrets.lorawan_app_key
        self.port = self.lw["port"]
        self.confirmed = bool(self.lw["confirmed"])
        self.joined = False
        self._fresh = False  # open() ran since the last deliver()
        self.counters = {}
        for name in _COUNTERS:
            self.counters[name] = 0

    @property
    def modem(self):
        """The modem's driver: the ``modem`` given, else an ``ATModem`` on the UART (with a nap,
        reading and writing through this link), made at the first use (no modem I/O)."""
        if self._modem is None:
            from drivers.atmodem import ATModem

            if callable(self._uart):
                self._uart = self._uart()
            self._modem = ATModem(self._uart if self._nap is None else self, self.clock,
                                  dialect=self.cfg["link"]["modem"]["dialect"])
        return self._modem

    # -- joining ---------------------------------------------------------------------------
    def due(self):
        """True if this wake sends (a batch is due); False if it only holds its readings."""
        held = self.wake["held"]
        return held is None or held + 1 >= self.batch_wakes

    def open(self):
        """True if the modem has a session (kept from before, or joined now); False (records
        stay on flash) if not, or while the join backs off. Never raises for modem trouble.
        On a wake that holds its readings the modem is not asked: True."""
        self._fresh = True
        self._boot_counts()
        if not self.due():
            return True
        c = self.counters
        try:
            self.feed()
            if self.modem.is_joined():
                self.joined = True
                c["join_backoff"] = c["join_skip"] = 0
                return True
            failed = False
        except (OSError, DriverError):
            failed = True
        # No session: the join and its backoff (app/links/lorawan_join.py) are loaded for this
        # and released, so a node whose modem kept its session never holds them.
        name = __name__.rsplit(".", 1)[0] + ".lorawan_join"
        try:
            return __import__(name, None, None, ("join",)).join(self, failed)
        finally:
            release(name)

    # -- sending ---------------------------------------------------------------------------
    def deliver(self, log):
        """Send pending records (see the module docstring); returns how many were trimmed
        as delivered. Never raises for modem trouble (counted in ``link_errors``)."""
        if not self.due():
            self.wake["held"] += 1
            self._fresh = False
            return 0
        if not self.joined and not self._fresh:
            self.open()  # a session lost since (light sleep: app/main.py opens only once)
        self._fresh = False
        delivered = 0
        if not self.joined:
            return 0
        from drivers.atmodem import SendResult
        from protocol import airtime
        from protocol.lorapack import pack

        c = self.counters
        sent = False  # an uplink went out this wake
        for _ in range(self.max_uplinks):
            first = log.pending(1, mark_sent=False)
            if not first:
                break
            epoch = first[0][0]
            first = None  # not held while the same records stream in (heap)
            self.feed()
            try:
                dr = self.modem.get_dr()
            except (OSError, DriverError):
                self._failed()
                break
            room = airtime.max_app_payload(dr)
            seqs = []
            try:
                payload, n = pack(_stream(log, epoch, room, seqs, self.step), room, epoch, self.step)
            except ValueError:
                if not seqs:
                    break
                c["records_unpackable"] += 1  # the first record alone cannot be packed
                log.ack_through(epoch, seqs[0])
                continue
            self.feed()
            toa = airtime.dr_airtime_ms(dr, len(payload))
            if self._nap is not None:  # arm the nap (``write``, ``read``)
                self._hex = hexlify(payload).upper()
                self._nap_ms = int(toa) + RX1_DELAY_MS - NAP_MARGIN_MS
            try:
                res = self.modem.send(self.port, payload, confirmed=self.confirmed, timeout_ms=SEND_TIMEOUT_MS)
            except (OSError, DriverError):
                self._failed()
                self._downlinks(None)
                break
            finally:
                self._hex = self._until = None
            if res.transmitted:
                sent = True
                c["uplinks"] += 1
                c["airtime_ms"] += airtime.ceil_ms(toa)
            self._downlinks(res.downlink)
            status = res.status
            if status == SendResult.CONFIRMED or (status == SendResult.SENT and not self.confirmed):
                acked = log.ack_through(epoch, seqs[n - 1])
                c["records_sent"] += acked
                delivered += acked
                continue
            if status in c:
                c[status] += 1
            if status == SendResult.NOT_JOINED:
                self.joined = False
            break  # not confirmed, duty cycle, busy, no session: try again next wake
        else:  # every uplink this wake may send went: a backlog goes on at the next wake
            sent = sent and not log.pending(1, mark_sent=False)
        if sent:
            self.wake["held"] = 0
        return delivered

    # -- the driver's port (with a nap): the serial-port contract over the UART -------------
    def write(self, buf):
        n = self._uart.write(buf)
        # the uplink's own command: its payload hex is the last field (RAK AT+SEND=p:HEX,
        # E5 AT+CMSGHEX="HEX"); a command split over writes is not recognised (no nap)
        if self._hex is not None and bytes(buf).rstrip(b'\r\n"').endswith(self._hex):
            c = self.clock
            self._until = c.ticks_add(c.ticks_ms(), self._nap_ms)
            self._first = self._replied = None
        return n

    def read(self, n):
        got = self._uart.read(n)
        if self._until is None:
            return got
        for b in got or ():
            if b == 10:  # a line ended: a reply unless blank or the echo of the command ("AT...")
                if self._first not in (None, 13, 65):
                    self._replied = True
                self._first = None
            elif self._first is None:
                self._first = b
        if not got and self._replied and self._first is None:  # accepted, then silence
            c = self.clock
            ms = c.ticks_diff(self._until, c.ticks_ms())
            self._until = None  # once per uplink
            if ms >= NAP_MIN_MS:
                self._nap(ms)
                self.counters["rx_sleep_ms"] += ms
        return got

    def _failed(self):
        self.counters["link_errors"] += 1
        if not self.modem.joined:  # the driver saw the modem restart: the session is gone
            self.joined = False

    def _downlinks(self, dl):
        found = self.modem.unsolicited_downlinks
        if dl is not None:
            found.append(dl)
        while found:
            d = found.pop(0)
            self.counters["downlinks"] += 1
            try:
                from .. import downlink

                downlink.receive(d.port, d.payload, self.root, self.counters)
            except Exception:  # noqa: BLE001 - a downlink must never stop delivery
                self.counters["downlinks_rejected"] += 1

    def _boot_counts(self):
        # What the boot made of the downlinks kept for it (app.downlink.apply_overrides).
        mod = sys.modules.get(__name__.rsplit(".", 2)[0] + ".downlink")
        if mod is not None:
            mod.take_counts(self.counters)


def _stream(log, epoch, room, seqs, step=None):
    """The pending records of ``epoch``, oldest first, read ``_CHUNK`` at a time; status
    records cut to fit ``room`` in a pack whose time step is ``step`` (pass the same to
    ``pack``); each seq handed out is appended to ``seqs``."""
    after = None
    while True:
        chunk = log.pending(_CHUNK, after=after)
        if not chunk:
            return
        for e, rec in chunk:
            if e != epoch:
                return
            if rec.get("kind") == "status":
                # cut to fit alone; first in a batch it needs no more as long as the pack's
                # header is the same: the time step is given (``step``), not taken from the
                # look-ahead, or a status cut to the byte would not fit and be skipped
                rec = fit_status(rec, room, epoch, step)
            seqs.append(rec["seq"])
            yield rec
        after = (chunk[-1][0], chunk[-1][1]["seq"])


def _packed_len(rec, room, epoch, step):
    """The length of ``rec`` packed alone into ``room`` bytes, None if it does not pack."""
    from protocol.lorapack import pack

    try:
        return len(pack((rec,), room, epoch, step)[0])
    except ValueError:
        return None


def fit_status(rec, room, epoch, step=None):
    """``rec`` (a status record) if it packs alone into ``room`` bytes (pack time step
    ``step``); else a copy with its values and as many counters as fit, ``_STATUS_FIRST``
    first, then by name: each counter in turn is kept if the copy with it still packs.
    Packed once without counters, the copy's size is that plus each kept counter's own
    bytes (``lorapack.counter_len``), so one pack decides them all (a pack per counter
    allocated ~150 KB a status record)."""
    if _packed_len(rec, room, epoch, step) is not None:
        return rec
    from protocol.lorapack import COUNTERS_MAX, counter_len

    counters = rec.get("counters") or {}
    out = dict(rec)
    kept = out["counters"] = {}
    names = [k for k in _STATUS_FIRST if k in counters]
    names += sorted([k for k in counters if k not in _STATUS_FIRST])
    size = _packed_len(out, room, epoch, step)
    if size is None:  # not even without counters
        return out
    left = room - size
    for name in names:
        if len(kept) == COUNTERS_MAX:
            break
        try:
            n = counter_len(name, counters[name])
        except ValueError:  # a counter pack refuses never fits
            continue
        if n <= left:
            kept[name] = counters[name]
            left -= n
    return out
