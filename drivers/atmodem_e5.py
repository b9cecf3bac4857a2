"""The Seeed LoRa-E5 / Wio-E5 dialect of ``drivers.atmodem``: reply parsing and the
command sequences. REFERENCE.md §6.4 unless a comment cites another source.

UART 9600 8N1. Every reply line is ``+<CMD>: <text>``; there is no ``OK`` line: a setting
is confirmed by its echo (``AT+MODE=LWOTAA`` -> ``+MODE: LWOTAA``), which the driver
checks. Errors are ``+<CMD>: ERROR(<code>)``.

Join: ``AT+JOIN`` -> ``+JOIN: Start``, ``+JOIN: NORMAL``, later ``+JOIN: Network joined``,
``+JOIN: NetID … DevAddr …``, ``+JOIN: Done`` (or ``+JOIN: Join failed``, ``+JOIN: Done``;
``+JOIN: Joined already`` alone when joined).
Uplink: ``AT+PORT=<p>`` when it changes, ``AT+MSGHEX="<hex>"`` (``AT+CMSGHEX`` confirmed)
-> ``Start``, [``Wait ACK``], [``FPENDING``], [``ACK Received``],
[``PORT: <p>; RX: "<hex>"``], [``RXWIN<n>, RSSI <r>, SNR <s>``], ``Done``; refused at once
with ``Please join network first``, ``No band in <ms>ms`` / ``No free channel`` (duty
cycle), ``LoRaWAN modem is busy`` or ``Length error <max>``.

Status strings beyond REFERENCE §6.4 and the order of the lines follow the RisingHF/Seeed
AT specification (RHF76-052 manual §8, LoRa-E5 AT Command Specification V1.0 §2.4 error
codes) as host parsers use them (e.g. disk91's LoRaE5 library, STM32 ``atctl`` sources).
Runs on MicroPython and CPython.
"""

import binascii

from drivers.atmodem_core import (
    EV_BUSY, EV_CONFIRMED, EV_DONE, EV_DOWNLINK, EV_DUTY_CYCLE, EV_ERROR, EV_INFO, EV_JOIN_FAILED,
    EV_JOINED, EV_NOT_JOINED, EV_OK, EV_RX_INFO, EV_UNKNOWN, EV_VALUE, Event, ModemError,
    SendCollector, SendResult, parse_hex, parse_number)

NAME = "lora-e5"
BAUDRATE = 9600
REGIONS = ("EU868", "US915", "AU915", "AS923", "KR920", "IN865")
JOIN = None  # configure, join_once, get_dev_eui, set_dr are here, not in a module of their own
JOIN_WAIT_MS = 15000  # Start .. Done: request + JOIN_ACCEPT_DELAY2 (6 s) + RX2, with margin

# ERROR(<code>) meanings (LoRa-E5 AT Command Specification V1.0 §2.4).
_ERRORS = {-1: "param", -10: "unknown_command", -11: "format", -12: "mode", -20: "param",
           -21: "too_long", -22: "rx", -23: "rx", -24: "rx"}
_TX_FAMILY = ("MSG", "MSGHEX", "CMSG", "CMSGHEX", "JOIN")


def parse(text):
    """One E5 reply line (printable, stripped, non-empty) -> ``Event``."""
    colon = text.find(":")
    if text.lower() == "please join network first":
        return Event(EV_NOT_JOINED, text)  # as REFERENCE §6.4 quotes it, without a prefix
    if not text.startswith("+") or colon < 2:
        return Event(EV_UNKNOWN, text)
    cmd = text[1:colon].upper()
    for ch in cmd:
        if not (ch.isalpha() or ch.isdigit() or ch == "_"):
            return Event(EV_UNKNOWN, text)
    rest = text[colon + 1:].strip()
    if rest.startswith("ERROR(") and rest.endswith(")"):
        code = parse_number(rest[6:-1], "+%s: ERROR" % cmd, text)
        return Event(EV_ERROR, text, cmd=cmd, value=code, error=_ERRORS.get(code, "generic"))
    if cmd == "AT" and rest == "OK":
        return Event(EV_OK, text, cmd=cmd)
    if cmd == "INFO":
        return Event(EV_INFO, text, cmd=cmd, value=rest)
    if cmd in _TX_FAMILY:
        return _parse_tx(cmd, rest, text)
    return Event(EV_VALUE, text, cmd=cmd, value=rest)


def _parse_tx(cmd, rest, text):
    low = rest.lower()
    if low == "done":
        return Event(EV_DONE, text, cmd=cmd)
    if low.startswith("start") or low in ("wait ack", "fpending", "normal", "force") \
            or low.startswith("netid") or low.startswith("tx ") or low.startswith("maccmd") \
            or low.startswith("link"):
        return Event(EV_INFO, text, cmd=cmd, value=rest)
    if low == "ack received":
        return Event(EV_CONFIRMED, text, cmd=cmd)
    if low == "network joined":
        return Event(EV_JOINED, text, cmd=cmd)
    if low == "joined already":
        return Event(EV_JOINED, text, cmd=cmd, value="already")
    if low == "join failed":
        return Event(EV_JOIN_FAILED, text, cmd=cmd)
    if low == "please join network first":
        return Event(EV_NOT_JOINED, text, cmd=cmd)
    if low == "lorawan modem is busy":
        return Event(EV_BUSY, text, cmd=cmd)
    if low == "no free channel":
        return Event(EV_DUTY_CYCLE, text, cmd=cmd)
    if low.startswith("no band in"):
        n = rest[10:].strip()
        if n.lower().endswith("ms"):
            n = n[:-2]
        return Event(EV_DUTY_CYCLE, text, cmd=cmd, wait_ms=parse_number(n, "No band in", text))
    if low.startswith("length error"):
        return Event(EV_ERROR, text, cmd=cmd, error="length",
                     value=parse_number(rest[12:], "Length error", text))
    if low == "dr error":
        return Event(EV_ERROR, text, cmd=cmd, error="dr")
    if low == "not in otaa mode":
        return Event(EV_ERROR, text, cmd=cmd, error="mode")
    if low.startswith("port:"):
        # PORT: 2; RX: "3E9999010101" (older firmware spaces the hex: "14 54 54")
        semi = rest.find(";")
        q1 = rest.find('"')
        q2 = rest.rfind('"')
        if semi < 0 or q1 < semi or q2 <= q1 or rest[semi + 1:q1].strip().upper() != "RX:":
            raise ModemError("+%s downlink" % cmd, text, "malformed downlink line")
        port = parse_number(rest[5:semi], "+%s downlink port" % cmd, text)
        if not 0 <= port <= 255:
            raise ModemError("+%s downlink" % cmd, text, "downlink port out of range")
        return Event(EV_DOWNLINK, text, cmd=cmd, port=port,
                     payload=parse_hex(rest[q1 + 1:q2], "+%s downlink payload" % cmd, text))
    if low.startswith("rxwin"):
        # RXWIN2, RSSI -112, SNR -1.0
        f = rest.split(",")
        if len(f) != 3 or not f[1].strip().upper().startswith("RSSI") \
                or not f[2].strip().upper().startswith("SNR"):
            raise ModemError("+%s RX window" % cmd, text, "malformed RXWIN line")
        return Event(EV_RX_INFO, text, cmd=cmd, window=f[0].strip()[5:],
                     rssi=parse_number(f[1].strip()[4:], "RSSI", text),
                     snr=parse_number(f[2].strip()[3:], "SNR", text, as_float=True))
    return Event(EV_UNKNOWN, text, cmd=cmd)


class Collector(SendCollector):
    """E5: ``Done`` ends the uplink; ``ACK Received`` marks the ACK of a confirmed one."""

    def feed(self, ev):
        if ev.kind == EV_CONFIRMED:
            self.acked = True
        elif ev.kind == EV_DONE:
            if not self.confirmed:
                self.finish(SendResult.SENT)
            else:
                self.finish(SendResult.CONFIRMED if self.acked else SendResult.NOT_CONFIRMED)
        else:
            SendCollector.feed(self, ev)
        return self.complete


# -- command sequences (m is the ATModem) -----------------------------------------------------
def _norm(text):
    out = text.upper()
    for ch in (" ", ":", '"'):
        out = out.replace(ch, "")
    return out


def _reply(m, cmd, name, timeout_ms=None):
    """Send ``cmd``; return the first ``+<name>:`` reply's event (errors raise)."""
    def final(ev):
        return ev.cmd == name and ev.kind in (EV_VALUE, EV_OK, EV_ERROR, EV_BUSY)

    ev, seen = m.exchange(cmd, final, timeout_ms)
    _check(m, cmd, name, seen)
    if ev.kind in (EV_ERROR, EV_BUSY):
        raise m.error(cmd, ev.line, "command refused (%s)" % (ev.error or "busy"))
    return ev


def _check(m, cmd, name, seen, allowed=()):
    mine = []
    for e in seen:
        if e.cmd == name or e.kind not in (EV_VALUE, EV_OK):
            mine.append(e)
        else:
            m.counters["unsolicited"] += 1  # a late reply to an earlier command
    m.check(cmd, mine, allowed)


def _expect(m, cmd, name, expected):
    ev = _reply(m, cmd, name)
    if _norm(ev.value or "") != _norm(expected):
        raise m.error(cmd, ev.line, "reply does not confirm the setting")


def configure(m, dev_eui, join_eui, app_key, region, adr, dr):
    if _reply(m, "AT", "AT").kind != EV_OK:
        raise m.error("AT", "", "no +AT: OK")
    _expect(m, "AT+MODE=LWOTAA", "MODE", "LWOTAA")
    _expect(m, "AT+DR=%s" % region, "DR", region)  # the band plan first: it resets channels
    if region == "EU868":
        _expect(m, "AT+CH=NUM,0-2", "CH", "NUM,0-2")  # the three default channels, band M
    _expect(m, 'AT+ID=DevEui,"%s"' % dev_eui, "ID", "DevEui," + dev_eui)
    _expect(m, 'AT+ID=AppEui,"%s"' % join_eui, "ID", "AppEui," + join_eui)
    _expect(m, 'AT+KEY=APPKEY,"%s"' % app_key, "KEY", "APPKEY" + app_key)
    _expect(m, "AT+CLASS=A", "CLASS", "A")
    _expect(m, "AT+ADR=%s" % ("ON" if adr else "OFF"), "ADR", "ON" if adr else "OFF")
    if dr is not None:
        set_dr(m, dr)


def join_once(m, timeout_ms):
    """One join attempt: ``(joined, wait_ms_hint, transmitted)``."""
    def final(ev):
        return ev.cmd == "JOIN" and (ev.kind in (EV_DONE, EV_ERROR, EV_BUSY, EV_DUTY_CYCLE)
                                     or (ev.kind == EV_JOINED and ev.value == "already"))

    cmd = "AT+JOIN"
    ev, seen = m.exchange(cmd, final, min(timeout_ms, JOIN_WAIT_MS))
    _check(m, cmd, "JOIN", seen, (EV_JOINED, EV_JOIN_FAILED))
    if ev.kind == EV_ERROR:
        raise m.error(cmd, ev.line, "join refused (%s)" % ev.error)
    if ev.kind == EV_BUSY:
        m.counters["busy"] += 1
        return False, None, False
    if ev.kind == EV_DUTY_CYCLE:
        m.counters["duty_cycle"] += 1
        return False, ev.wait_ms, False
    if ev.kind == EV_JOINED:
        return True, None, False
    joined = False
    for e in seen:
        if e.kind == EV_JOINED:
            joined = True
    return joined, None, True


def is_joined(m):
    v = (_reply(m, "AT+NJS=?", "NJS").value or "").strip()
    if v not in ("0", "1"):
        raise m.error("AT+NJS=?", v, "join status is not 0 or 1")
    return v == "1"


def _dr_of(m, cmd, ev):
    for tok in (ev.value or "").split():
        if tok.upper().startswith("DR") and tok[2:].isdigit():
            return int(tok[2:])
    raise m.error(cmd, ev.line, "no data rate in the reply")


def set_dr(m, dr):
    cmd = "AT+DR=DR%d" % dr
    if _dr_of(m, cmd, _reply(m, cmd, "DR")) != dr:
        raise m.error(cmd, "", "reply does not confirm the data rate")


def get_dr(m):
    return _dr_of(m, "AT+DR", _reply(m, "AT+DR", "DR"))


def get_dev_eui(m):
    ev = _reply(m, "AT+ID=DevEui", "ID")
    v = _norm(ev.value or "")
    if not v.startswith("DEVEUI,") or len(v) != 23:
        raise m.error("AT+ID=DevEui", ev.line, "no DevEui in the reply")
    try:
        binascii.unhexlify(v[7:])
    except ValueError:
        raise m.error("AT+ID=DevEui", ev.line, "DevEui is not hex")
    return v[7:]


def send(m, port, payload, confirmed, timeout_ms):
    """``AT+MSGHEX`` / ``AT+CMSGHEX`` and its lines; returns the completed ``Collector``."""
    if m.state.get("port") != port:
        _expect(m, "AT+PORT=%d" % port, "PORT", str(port))
        m.state["port"] = port
    name = "CMSGHEX" if confirmed else "MSGHEX"
    cmd = 'AT+%s="%s"' % (name, binascii.hexlify(payload).decode().upper())
    col = Collector(confirmed)

    def final(ev):
        if ev.cmd is None and ev.kind == EV_NOT_JOINED:
            return col.feed(ev)
        if ev.cmd != name:
            return False
        return ev.kind == EV_ERROR or col.feed(ev)

    ev, seen = m.exchange(cmd, final, timeout_ms)
    _check(m, cmd, name, seen, (EV_DOWNLINK, EV_RX_INFO, EV_CONFIRMED))
    if ev.kind == EV_ERROR:
        raise m.error(cmd, ev.line, "uplink refused (%s)" % ev.error)
    return col
