"""The Seeed LoRa-E5 / Wio-E5 command handlers of ``simulators.atmodem``.

``E5Commands`` is a mixin of ``ATModemEmulator``: ``_e5(text)`` answers one command line
the way the E5 does (every reply ``+<CMD>: <text>``, no ``OK`` line; radio results later
under the same prefix), dispatching ``AT+<NAME>`` to ``_e5_<name>``. REFERENCE.md §6.4,
with the details listed in ``drivers/atmodem_e5.py``.
"""

from protocol import airtime
from simulators.atmodem_radio import (
    JOIN_ACCEPT_DELAY1_MS, JOIN_ACCEPT_DELAY2_MS, JOIN_ACCEPT_PHY, _hex, _sf_bw)

E5_REGIONS = ("EU868", "US915", "AU915", "AS923", "KR920", "IN865")


# The AT+ commands the emulator implements; anything else is ERROR(-10), as on the module.
E5_COMMANDS = frozenset(("ID", "KEY", "DR", "CH", "MODE", "CLASS", "ADR", "PORT", "NJS", "RESET", "JOIN",
                         "MSGHEX", "CMSGHEX", "MSG", "CMSG"))


class E5Commands:
    """LoRa-E5 command handlers (a mixin of ``ATModemEmulator``)."""

    def _e5(self, text):
        u = text.upper()
        if u == "AT":
            return self._emit("+AT: OK")
        if not u.startswith("AT+"):
            return self._emit("+AT: ERROR(-10)")
        eq = text.find("=")
        name = u[3:eq] if eq > 0 else u[3:]
        arg = text[eq + 1:].strip() if eq > 0 else None
        handler = getattr(self, "_e5_" + name.lower(), None) if name in E5_COMMANDS else None
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
