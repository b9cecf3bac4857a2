"""The RAK3172 (RUI3) join-time command sequences of ``drivers.atmodem_rak``: ``configure``
(OTAA credentials, band, class, ADR), ``join_once``, ``get_dev_eui`` and ``set_dr``.
REFERENCE.md §6.4.

Split out of ``atmodem_rak`` because a node needs them only on a boot whose modem has no
session: ``drivers.atmodem_join`` loads this module for ``ATModem.configure``, ``join``,
``get_dev_eui`` and ``set_dr`` and releases it afterwards, so it takes no heap while the node
packs and sends (docs/benchmarks.md, heap). Runs on MicroPython and CPython.
"""

import binascii

from drivers.atmodem_core import EV_BUSY, EV_DUTY_CYCLE, EV_JOIN_FAILED, EV_JOINED, EV_OK, EV_REBOOT
from drivers.atmodem_rak import _is_status, _ok, _read

# AT+BAND values (REFERENCE §6.4).
BANDS = {"EU433": 0, "CN470": 1, "RU864": 2, "IN865": 3, "EU868": 4, "US915": 5, "AU915": 6,
         "KR920": 7, "AS923-1": 8}
REGIONS = tuple(BANDS)

JOIN_INTERVAL_S = 10  # AT+JOIN retry interval field (7..255 s); unused with one attempt
JOIN_WAIT_MS = 15000  # join request + JOIN_ACCEPT_DELAY2 (6 s) + RX2, with margin
RESTART_MS = 3000  # AT+NWM change restarts the module


def configure(m, dev_eui, join_eui, app_key, region, adr, dr):
    _ok(m, "AT")
    if _read(m, "AT+NWM=?") != "1":
        _ok(m, "AT+NWM=1")  # LoRaWAN mode; the module restarts and prints its banner
        m.expect_reboot = True
        try:
            m.wait_for("AT+NWM=1", lambda e: e.kind == EV_REBOOT, RESTART_MS, "restart", none_ok=True)
        finally:
            m.expect_reboot = False
        _ok(m, "AT")
    _ok(m, "AT+NJM=1")  # OTAA
    _ok(m, "AT+BAND=%d" % BANDS[region])
    _ok(m, "AT+CLASS=A")
    _ok(m, "AT+DEVEUI=" + dev_eui)
    _ok(m, "AT+APPEUI=" + join_eui)
    _ok(m, "AT+APPKEY=" + app_key)
    _ok(m, "AT+ADR=%d" % (1 if adr else 0))
    if dr is not None:
        _ok(m, "AT+DR=%d" % dr)
    _ok(m, "AT+CFM=0")
    m.state["cfm"] = False


def join_once(m, timeout_ms):
    """One join attempt: ``(joined, wait_ms_hint, transmitted)``."""
    cmd = "AT+JOIN=1:0:%d:1" % JOIN_INTERVAL_S
    ev, seen = m.exchange(cmd, _is_status)
    m.check(cmd, seen)
    if ev.kind == EV_BUSY:
        m.counters["busy"] += 1
        return False, None, False
    if ev.kind == EV_DUTY_CYCLE:
        m.counters["duty_cycle"] += 1
        return False, None, False
    if ev.kind != EV_OK:
        raise m.error(cmd, ev.line, "join refused")
    ev, seen = m.wait_for(cmd, lambda e: e.kind in (EV_JOINED, EV_JOIN_FAILED),
                          min(timeout_ms, JOIN_WAIT_MS), "join result", none_ok=True)
    m.check(cmd, seen)
    return ev is not None and ev.kind == EV_JOINED, None, True


def set_dr(m, dr):
    _ok(m, "AT+DR=%d" % dr)


def get_dev_eui(m):
    v = _read(m, "AT+DEVEUI=?").upper()
    if len(v) != 16:
        raise m.error("AT+DEVEUI=?", v, "DevEUI is not 16 hex digits")
    try:
        binascii.unhexlify(v)
    except ValueError:
        raise m.error("AT+DEVEUI=?", v, "DevEUI is not hex")
    return v
