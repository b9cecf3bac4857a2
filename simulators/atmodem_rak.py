"""The RAK3172 (RUI3) command handlers of ``simulators.atmodem``.

``RakCommands`` is a mixin of ``ATModemEmulator``: ``_rak(text)`` answers one command line
the way RUI3 does (a value line where one is read, then one status line; radio results
later as ``+EVT:`` lines), dispatching ``AT+<NAME>`` to ``_rak_<name>``. REFERENCE.md §6.4,
with the details listed in ``drivers/atmodem_rak.py``.
"""

from protocol import airtime
from simulators.atmodem_radio import (
    JOIN_ACCEPT_DELAY1_MS, JOIN_ACCEPT_DELAY2_MS, JOIN_ACCEPT_PHY, _hex, _sf_bw)

RAK_BANNER = ("RAKwireless RAK3172", "Current Work Mode: LoRaWAN.")


# The AT+ commands the emulator implements; anything else is AT_ERROR, as on the module
# (never one of the handlers' own helpers reached by name).
RAK_COMMANDS = frozenset(("NWM", "BAND", "NJM", "CLASS", "DEVEUI", "APPEUI", "APPKEY", "ADR", "DR", "CFM",
                          "LPM", "NJS", "RECV", "JOIN", "SEND"))


class RakCommands:
    """RUI3 command handlers (a mixin of ``ATModemEmulator``)."""

    def _rak_status(self, status):
        self._raw(b"\r\n")
        self._emit(status)

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
        handler = getattr(self, "_rak_" + name.lower(), None) if name in RAK_COMMANDS else None
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
