"""The RAK3172 (RUI3 AT commands) dialect of ``drivers.atmodem``: reply parsing and the
command sequences. REFERENCE.md §6.4 unless a comment cites another source.

UART 115200 8N1, lines end CR LF. ``AT+X=?`` reads (a value line, then the status),
``AT+X=v`` writes, ``AT+X`` runs; every command ends with one status line (``OK`` or an
``AT_*`` error). Radio results arrive later as ``+EVT:`` lines.

Join: ``AT+JOIN=1:0:10:1`` (start, no auto-join at boot, 10 s retry interval, **one**
attempt: the driver does its own bounded retries and backoff), ``OK``, then
``+EVT:JOINED`` or ``+EVT:JOIN_FAILED_RX_TIMEOUT``.
Uplink: ``AT+CFM=0|1`` when it changes, ``AT+SEND=<port>:<hex>``, ``OK``, then
``+EVT:TX_DONE`` (unconfirmed) or ``+EVT:SEND_CONFIRMED_OK`` / ``_FAILED(n)``; a downlink
prints ``+EVT:RX_1:<rssi>:<snr>:UNICAST:<port>:<hex>`` right after (RUI3 ≥ 3.2 format;
RUI3 runs the MAC's confirm callback before its indication, so the RX event follows the
TX result — the driver lingers briefly for it).

Runs on MicroPython and CPython.
"""

import binascii

from drivers.atmodem_core import (
    EV_BUSY, EV_CONFIRMED, EV_DOWNLINK, EV_DUTY_CYCLE, EV_ECHO, EV_ERROR, EV_INFO, EV_JOIN_FAILED,
    EV_JOINED, EV_NOT_CONFIRMED, EV_NOT_JOINED, EV_OK, EV_REBOOT, EV_TX_DONE, EV_VALUE, Event,
    ModemError, SendCollector, SendResult, parse_hex, parse_number)

NAME = "rak3172"
BAUDRATE = 115200

# The join-time sequences (configure, join_once, get_dev_eui, set_dr) and their constants
# (AT+BAND values, join and restart waits) are in ``atmodem_rak_join``, loaded only for them.
JOIN = "atmodem_rak_join"

# Status lines -> (event kind, error kind). AT_DUTYCYLE_RESTRICTED is the spelling in
# RAK's own status table of older firmware; AT_NO_CLASS_B_ENABLE, AT_CRYPTO_ERROR and
# AT_COMMAND_NOT_FOUND are RUI3 codes seen in host libraries (beegee-tokyo/RUI3-Arduino-Library).
_STATUS = {
    "OK": (EV_OK, None),
    "AT_ERROR": (EV_ERROR, "generic"),
    "AT_PARAM_ERROR": (EV_ERROR, "param"),
    "AT_BUSY_ERROR": (EV_BUSY, None),
    "AT_TEST_PARAM_OVERFLOW": (EV_ERROR, "overflow"),
    "AT_NO_NETWORK_JOINED": (EV_NOT_JOINED, None),
    "AT_RX_ERROR": (EV_ERROR, "rx"),
    "AT_DUTYCYCLE_RESTRICTED": (EV_DUTY_CYCLE, None),
    "AT_DUTYCYLE_RESTRICTED": (EV_DUTY_CYCLE, None),
    "AT_NO_CLASS_B_ENABLE": (EV_ERROR, "class_b"),
    "AT_CRYPTO_ERROR": (EV_ERROR, "crypto"),
    "AT_COMMAND_NOT_FOUND": (EV_ERROR, "unknown_command"),
}
_STATUS_KINDS = (EV_OK, EV_ERROR, EV_BUSY, EV_NOT_JOINED, EV_DUTY_CYCLE)


def parse(text):
    """One RUI3 reply line (printable, stripped, non-empty) -> ``Event``."""
    st = _STATUS.get(text)
    if st is not None:
        return Event(st[0], text, error=st[1], value=text if st[1] else None)
    if text.startswith("+EVT:"):
        return _parse_evt(text)
    if text.startswith("AT"):
        # An echo (ATE on), or RUI3 4.x's read reply form "AT+NJS=1".
        eq = text.find("=")
        if text.startswith("AT+") and eq > 3 and not text.endswith("?"):
            return Event(EV_VALUE, text, cmd=text[3:eq].upper(), value=text[eq + 1:])
        return Event(EV_ECHO, text)
    if text.startswith("Current Work Mode"):
        return Event(EV_REBOOT, text)  # the last line of the boot banner
    return Event(EV_VALUE, text, value=text)


def _parse_evt(text):
    body = text[5:].strip()
    name = body.replace(" ", "_").upper()
    if name == "JOINED":
        return Event(EV_JOINED, text)
    if name.startswith("JOIN_FAILED") or name.startswith("JOIN_FAIL"):
        return Event(EV_JOIN_FAILED, text, value=body)
    if name == "TX_DONE":
        return Event(EV_TX_DONE, text)
    if name == "SEND_CONFIRMED_OK":
        return Event(EV_CONFIRMED, text)
    if name.startswith("SEND_CONFIRMED_FAILED"):
        code = None
        i = name.find("(")
        if i > 0 and name.endswith(")"):
            code = parse_number(name[i + 1:-1], "+EVT:SEND_CONFIRMED_FAILED", text)
        return Event(EV_NOT_CONFIRMED, text, value=code)
    if name.startswith("RX_"):
        # window:RSSI:SNR:type:port:hex, e.g. RX_1:-70:8:UNICAST:1:1234
        f = body.split(":")
        if len(f) != 6 or len(f[0]) != 4:
            raise_bad(text)
        port = parse_number(f[4], "+EVT:RX downlink port", text)
        if not 0 <= port <= 255:
            raise_bad(text)
        return Event(EV_DOWNLINK, text, window=f[0][3:], value=f[3],
                     rssi=parse_number(f[1], "+EVT:RX rssi", text),
                     snr=parse_number(f[2], "+EVT:RX snr", text, as_float="." in f[2]),
                     port=port, payload=parse_hex(f[5], "+EVT:RX payload", text))
    return Event(EV_INFO, text, value=body)


def raise_bad(text):
    raise ModemError("+EVT:RX", text, "malformed downlink event")


class Collector(SendCollector):
    """RUI3: TX_DONE ends an unconfirmed uplink, SEND_CONFIRMED_OK/FAILED a confirmed one;
    the RX event may follow, so the driver lingers for it while none has come."""

    def feed(self, ev):
        k = ev.kind
        if k == EV_TX_DONE and not self.confirmed:
            self.finish(SendResult.SENT)
        elif k == EV_CONFIRMED:
            self.acked = True
            self.finish(SendResult.CONFIRMED)
        elif k == EV_NOT_CONFIRMED:
            self.finish(SendResult.NOT_CONFIRMED)
        else:
            SendCollector.feed(self, ev)
        self.linger = self.complete and self.downlink is None and self.status in ("sent", "confirmed")
        return self.complete


# -- command sequences (m is the ATModem) -----------------------------------------------------
def _is_status(ev):
    return ev.kind in _STATUS_KINDS


def _ok(m, cmd, timeout_ms=None):
    ev, seen = m.exchange(cmd, _is_status, timeout_ms)
    m.check(cmd, seen)
    if ev.kind != EV_OK:
        raise m.error(cmd, ev.line, "command refused")


def _read(m, cmd):
    ev, seen = m.exchange(cmd, _is_status)
    if ev.kind != EV_OK:
        raise m.error(cmd, ev.line, "read refused")
    values = []
    others = []
    for e in seen:
        (values if e.kind == EV_VALUE else others).append(e)
    m.check(cmd, others)
    if len(values) != 1:
        raise m.error(cmd, " | ".join([e.line for e in values]), "expected one value line")
    return values[0].value.strip()


def is_joined(m):
    v = _read(m, "AT+NJS=?")
    if v not in ("0", "1"):
        raise m.error("AT+NJS=?", v, "join status is not 0 or 1")
    return v == "1"


def get_dr(m):
    v = _read(m, "AT+DR=?")
    if not v.isdigit():
        raise m.error("AT+DR=?", v, "data rate is not a number")
    return int(v)


def send(m, port, payload, confirmed, timeout_ms):
    """``AT+SEND`` and its events; returns the completed ``Collector``."""
    if m.state.get("cfm") != confirmed:
        _ok(m, "AT+CFM=%d" % (1 if confirmed else 0))
        m.state["cfm"] = confirmed
    cmd = "AT+SEND=%d:%s" % (port, binascii.hexlify(payload).decode().upper())
    col = Collector(confirmed)
    ev, seen = m.exchange(cmd, _is_status)
    m.check(cmd, seen)
    if ev.kind != EV_OK:
        if ev.kind == EV_ERROR:
            raise m.error(cmd, ev.line, "uplink refused")
        col.feed(ev)  # busy, not joined, duty cycle: results
        return col
    ev, seen = m.wait_for(cmd, col.feed, timeout_ms, "uplink result")
    m.check(cmd, seen, (EV_DOWNLINK,))
    if col.linger:
        ev, seen = m.wait_for(cmd, col.feed, m.rx_linger_ms, none_ok=True)
        m.check(cmd, seen)
    return col
