"""The sans-IO core of ``drivers.atmodem``: reply-line parsing, events, the uplink collector
and key redaction. No I/O at all: bytes in, events out.

- ``parse_line(dialect, line)`` turns one reply line (bytes or str, without CR LF) into an
  ``Event`` (its ``kind`` one of the ``EV_*`` names); the dialect rules live in
  ``atmodem_rak`` and ``atmodem_e5``, which build on ``parse_hex`` / ``parse_number``.
- ``send_collector(dialect, confirmed)`` gives the dialect's ``SendCollector``, which folds
  one uplink's events into a ``SendResult`` (with a ``Downlink`` if one arrived) — pure, so a
  recorded transcript can be replayed in a test.
- ``redact(text, secret)`` strips key material from anything logged or raised.
- ``ModemError`` is the one error the parser raises, for a line that announces a known event
  with garbled fields.

``drivers.atmodem`` (the ``ATModem`` class) re-exports all of these. Runs on MicroPython
and CPython.
"""

import binascii

from drivers.errors import DriverError

EV_OK = "ok"
EV_ERROR = "error"
EV_BUSY = "busy"
EV_DUTY_CYCLE = "duty_cycle"
EV_NOT_JOINED = "not_joined"
EV_JOINED = "joined"
EV_JOIN_FAILED = "join_failed"
EV_TX_DONE = "tx_done"
EV_CONFIRMED = "confirmed"
EV_NOT_CONFIRMED = "not_confirmed"
EV_DOWNLINK = "downlink"
EV_RX_INFO = "rx_info"
EV_VALUE = "value"
EV_INFO = "info"
EV_DONE = "done"
EV_ECHO = "echo"
EV_REBOOT = "reboot"
EV_EMPTY = "empty"
EV_UNKNOWN = "unknown"

DIALECTS = ("rak3172", "lora-e5")


class ModemError(DriverError):
    """The modem answered something the protocol does not allow: garbled, cut off, an error
    status where none fits, or a restart mid-command. ``command`` and ``reply`` are the
    (redacted) command and reply text."""

    def __init__(self, command, reply, message="unexpected reply"):
        self.command = command
        self.reply = reply
        self.message = message
        super().__init__("%s: %s (reply %r)" % (command, message, reply))


class Event:
    """One parsed reply line. ``kind`` is one of the ``EV_*`` names; unused fields are None."""

    def __init__(self, kind, line="", cmd=None, value=None, error=None, port=None, payload=None,
                 rssi=None, snr=None, window=None, wait_ms=None):
        self.kind = kind
        self.line = line
        self.cmd = cmd
        self.value = value
        self.error = error
        self.port = port
        self.payload = payload
        self.rssi = rssi
        self.snr = snr
        self.window = window
        self.wait_ms = wait_ms

    def __repr__(self):
        parts = [self.kind]
        for name in ("cmd", "value", "error", "port", "payload", "rssi", "snr", "window", "wait_ms"):
            v = getattr(self, name)
            if v is not None:
                parts.append("%s=%r" % (name, v))
        return "Event(%s)" % ", ".join(parts)


class Downlink:
    """An application downlink: ``port``, ``payload`` (bytes), ``rssi`` (dBm), ``snr`` (dB),
    ``window`` ("1", "2", "B", "C")."""

    def __init__(self, port, payload, rssi=None, snr=None, window=None):
        self.port = port
        self.payload = payload
        self.rssi = rssi
        self.snr = snr
        self.window = window

    def __repr__(self):
        return "Downlink(port=%r, payload=%r, rssi=%r, snr=%r, window=%r)" % (
            self.port, self.payload, self.rssi, self.snr, self.window)


class SendResult:
    """What became of one uplink. ``status``: ``SENT`` (unconfirmed, on air), ``CONFIRMED``,
    ``NOT_CONFIRMED`` (sent, no ACK), ``DUTY_CYCLE`` (refused, nothing sent; ``wait_ms`` if
    known), ``NOT_JOINED`` or ``BUSY`` (nothing sent). ``transmitted`` is True when the
    frame went on air. ``downlink`` is a ``Downlink`` or None; ``rssi``/``snr`` are the
    last received frame's, ``airtime_ms`` and ``dr`` what the driver budgeted."""

    SENT = "sent"
    CONFIRMED = "confirmed"
    NOT_CONFIRMED = "not_confirmed"
    DUTY_CYCLE = "duty_cycle"
    NOT_JOINED = "not_joined"
    BUSY = "busy"

    def __init__(self, status, downlink=None, wait_ms=None, rssi=None, snr=None, airtime_ms=None,
                 dr=None):
        self.status = status
        self.transmitted = status in ("sent", "confirmed", "not_confirmed")
        self.downlink = downlink
        self.wait_ms = wait_ms
        self.rssi = rssi
        self.snr = snr
        self.airtime_ms = airtime_ms
        self.dr = dr

    def __repr__(self):
        return "SendResult(%s, downlink=%r, wait_ms=%r)" % (self.status, self.downlink, self.wait_ms)


def _dialect(name):
    if name == "rak3172":
        from drivers import atmodem_rak as d
    elif name == "lora-e5":
        from drivers import atmodem_e5 as d
    else:
        raise ValueError("dialect must be one of %s, got %r" % (", ".join(DIALECTS), name))
    return d


def _printable(line):
    for b in line:
        if b < 0x20 or b > 0x7E:
            return False
    return True


def parse_line(dialect, line):
    """Parse one reply line of ``dialect`` ("rak3172" or "lora-e5") into an ``Event``.

    ``line`` is bytes or str without the line end. Raises ``ModemError`` for a line that
    announces a known event with garbled fields; ``ValueError`` for an unknown dialect."""
    d = _dialect(dialect)
    if isinstance(line, str):
        raw = line.encode()
    else:
        raw = bytes(line)
    if not _printable(raw):
        return Event(EV_UNKNOWN, repr(raw))
    text = raw.decode().strip()
    if not text:
        return Event(EV_EMPTY, "")
    return d.parse(text)


def parse_hex(text, what, line):
    """Bytes from hex digits (spaces allowed); ``ModemError`` naming ``what`` if garbled."""
    digits = text.replace(" ", "")
    if len(digits) % 2:
        raise ModemError(what, line, "odd number of hex digits")
    try:
        return binascii.unhexlify(digits)
    except ValueError:
        raise ModemError(what, line, "not hex")


def parse_number(text, what, line, as_float=False):
    """An int (or float) from ``text``; ``ModemError`` naming ``what`` if garbled."""
    text = text.strip()
    try:
        return float(text) if as_float else int(text)
    except ValueError:
        raise ModemError(what, line, "bad number %r" % (text,))


class SendCollector:
    """Folds the events that follow an accepted uplink into a ``SendResult`` (pure).

    ``feed(event)`` returns True once the uplink is complete; ``result()`` builds the
    result. The base handles what both dialects share (refusals, downlink and RX-info
    merging); each dialect module's subclass adds its completion rule."""

    linger = False  # True: the driver listens ``rx_linger_ms`` longer after completion

    def __init__(self, confirmed):
        self.confirmed = confirmed
        self.complete = False
        self.status = None
        self.acked = False
        self.downlink = None
        self.rssi = self.snr = self.window = self.wait_ms = None

    def feed(self, ev):
        k = ev.kind
        if k == EV_DOWNLINK:
            self.downlink = Downlink(ev.port, ev.payload, ev.rssi, ev.snr, ev.window)
        if k == EV_DOWNLINK or k == EV_RX_INFO:
            if ev.rssi is not None:
                self.rssi, self.snr = ev.rssi, ev.snr
            if ev.window is not None:
                self.window = ev.window
            dl = self.downlink
            if dl is not None and dl.rssi is None:
                dl.rssi, dl.snr = self.rssi, self.snr
            if dl is not None and dl.window is None:
                dl.window = self.window
        elif k == EV_NOT_JOINED:
            self.finish(SendResult.NOT_JOINED)
        elif k == EV_BUSY:
            self.finish(SendResult.BUSY)
        elif k == EV_DUTY_CYCLE:
            self.wait_ms = ev.wait_ms
            self.finish(SendResult.DUTY_CYCLE)
        return self.complete

    def finish(self, status):
        if not self.complete:
            self.complete = True
            self.status = status

    def result(self, airtime_ms=None, dr=None):
        return SendResult(self.status, self.downlink, self.wait_ms, self.rssi, self.snr, airtime_ms, dr)


def send_collector(dialect, confirmed):
    """A fresh ``SendCollector`` for one uplink of ``dialect``."""
    return _dialect(dialect).Collector(confirmed)


def redact(text, secret=None):
    """``text`` with any key material removed: any occurrence of ``secret`` (hex, any
    case), and whatever follows the last ``KEY`` token unless it is an ``ERROR(...)``
    (a garbled echo of a key must not leak the digits that survived)."""
    u = text.upper()
    if secret:
        s = secret.upper()
        i = u.find(s)
        while i >= 0:
            text = text[:i] + "<redacted>" + text[i + len(s):]
            u = text.upper()
            i = u.find(s)
    i = u.rfind("KEY")
    if i >= 0:
        rest = text[i + 3:]
        sep = rest[:1] if rest[:1] in ("=", ",", ":", " ") else ""
        tail = rest[len(sep):].strip(" ,:=\"")
        if tail and "<redacted>" not in rest and not tail.upper().startswith("ERROR"):
            text = text[:i + 3] + sep + "<redacted>"
    return text

