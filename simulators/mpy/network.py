"""The ``network`` module for the MicroPython unix port under simulation: a WiFi station that
"associates" with the simulator's access point and then uses loopback.

The access point is server state (``control wifi [settings]``, see
``simulators/i2c_server.py``): up or down, an SSID and key (None: any), and how long
association + DHCP takes (``assoc_ms``) or one failed attempt lasts (``scan_ms``). The board
keeps a copy and reads it again only when its generation (carried by every reply,
``simlink.gen``) changes; the link is computed here from it and the board's clock. As on the
ESP32 port, ``connect()`` returns at once and the link comes up in the background, on the
virtual clock: ``isconnected()`` turns True ``assoc_ms`` after ``connect()`` (or after the AP
comes back up). While it cannot associate, ``status()`` stays ``STAT_CONNECTING`` — the port
retries for ever — unless ``config(reconnects=n)`` limits the attempts; then it reports the
ESP-IDF reason (``STAT_NO_AP_FOUND``, ``STAT_WRONG_PASSWORD``). Each poll of ``status()``
or ``isconnected()`` that finds no link costs 1 ms of virtual time so a busy-wait ends.

Sockets are the host's: once "connected", the firmware reaches servers on 127.0.0.1.
``board.py`` calls ``_reset()`` at every boot (the radio is off after any reset).
"""

import machine
import simclock
import simlink

STA_IF = 0
AP_IF = 1
# ports/esp32 network constants: MicroPython's own states, then ESP-IDF wifi_err_reason_t.
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
_REASON_ASSOC_LEAVE = 8  # what status() reports after disconnect() (WIFI_REASON_ASSOC_LEAVE)
_POLL_US = 1000
_LOOPBACK = ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
_NO_ADDRESS = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

_interfaces = {}
_hostname = "esp32"
_ap = [None, None]  # [generation, settings]: the access point as last read (``_access_point``)


def _access_point():
    """The access point's settings, read again only when its generation (which every reply
    from the simulator carries) has changed."""
    simlink.now_us()  # a reply since the last change of anything (usually none needed)
    if _ap[0] != simlink.gen or _ap[1] is None:
        _ap[1] = simlink.control("wifi")
        _ap[0] = simlink.gen
    return _ap[1]


def _reset():
    """A reset: every interface off and forgotten."""
    _interfaces.clear()


def _radio_off(wake_us):
    """After a light sleep: the station lost its AP and reassociates from ``wake_us``."""
    sta = _interfaces.get(STA_IF)
    if sta is not None and sta._requested:
        sta._since_us = wake_us


def hostname(name=None):
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


def country(code=None):
    return "GB" if code is None else None


class WLAN:
    """``network.WLAN(STA_IF)``: one object per interface, as on the ESP32 port."""

    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2

    def __new__(cls, interface_id=STA_IF):
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        wlan = _interfaces.get(interface_id)
        if wlan is None:
            wlan = object.__new__(cls)
            wlan._setup(interface_id)
            _interfaces[interface_id] = wlan
        return wlan

    def __init__(self, interface_id=STA_IF):
        pass

    def _setup(self, interface_id):
        self._if = interface_id
        self._active = False
        self._requested = False
        self._since_us = 0  # when association (re)started, virtual µs
        self._reason = 0
        self._ssid = None
        self._key = None
        self._static = None
        self._config = {"reconnects": 0, "pm": self.PM_PERFORMANCE, "txpower": 20, "channel": 1,
                        "dhcp_hostname": _hostname}

    # -- the link, computed from the access point and the virtual clock ---------------------
    def _link(self, poll):
        """``(connected, status)`` now; a poll that finds no link costs ``_POLL_US``."""
        if self._if != STA_IF or not self._active or not self._requested:
            return False, STAT_IDLE if self._reason == 0 else self._reason
        ap = _access_point()
        now = simclock.now_us()
        start = max(self._since_us, ap["changed_us"])
        if ap["up"] and ap["ssid"] in (None, self._ssid):
            if ap["key"] in (None, self._key):
                if now >= start + ap["assoc_ms"] * 1000:
                    self._reason = 0
                    return True, STAT_GOT_IP
                failure = None
            else:
                failure, attempt_ms = STAT_WRONG_PASSWORD, ap["assoc_ms"]
        else:
            failure, attempt_ms = STAT_NO_AP_FOUND, ap["scan_ms"]
        status = STAT_CONNECTING
        if failure is not None:
            attempts = (now - start) // (attempt_ms * 1000)
            if attempts >= 1:
                self._reason = failure
            limit = self._config["reconnects"]
            if limit and attempts >= limit:
                status = failure
        if poll:
            simclock.advance_us(_POLL_US)
        return False, status

    # -- the API ------------------------------------------------------------------------------
    def active(self, is_active=None):
        if is_active is None:
            return self._active
        if not is_active:
            if self._link(False)[0]:
                self._reason = _REASON_ASSOC_LEAVE
            self._requested = False
        self._active = bool(is_active)

    def connect(self, ssid=None, key=None, *, bssid=None):
        """Start associating (returns at once); ``OSError`` if the interface is not active."""
        if self._if != STA_IF:
            raise OSError("STA required")
        if not self._active:
            raise OSError("Wifi Not Started")
        if ssid is not None:
            self._ssid = ssid
        if key is not None:
            self._key = key
        self._requested = True
        self._since_us = simclock.now_us()
        self._reason = 0

    def disconnect(self):
        if self._link(False)[0]:
            self._reason = _REASON_ASSOC_LEAVE
        self._requested = False

    def isconnected(self):
        return self._link(True)[0]

    def status(self, param=None):
        if param is None:
            return self._link(True)[1] if self._if == STA_IF else None
        if param == "rssi":
            if not self._link(False)[0]:
                raise OSError("Wifi Not Connected")
            return _access_point()["rssi"]
        raise ValueError("unknown status param")

    def scan(self):
        """The access point if it is up, after ``scan_ms`` of virtual time."""
        if not self._active:
            raise OSError("STA must be active")
        ap = _access_point()
        simclock.advance_us(ap["scan_ms"] * 1000)
        if not ap["up"]:
            return []
        ssid = (ap["ssid"] or self._ssid or "civicedge-sim").encode()
        return [(ssid, b"\x02\x00\x00\x00\x00\x01", self._config["channel"], ap["rssi"], 3, False)]

    def ifconfig(self, config=None):
        if config is not None:
            self._static = tuple(config)
            return None
        if not self._link(False)[0]:
            return self._static or _NO_ADDRESS
        return self._static or _LOOPBACK

    def ipconfig(self, *args, **kw):
        if kw:
            return None
        if args and args[0] == "addr4":
            addr = self.ifconfig()
            return (addr[0], addr[1])
        if args and args[0] == "dhcp4":
            return self._static is None
        raise ValueError("unexpected key")

    def config(self, *args, **kw):
        if kw:
            for name, value in kw.items():
                if name in ("ssid", "essid"):
                    self._ssid = value
                elif name in ("key", "password"):
                    self._key = value
                elif name in self._config or name in ("hostname", "security", "hidden", "max_clients"):
                    self._config[name] = value
                else:
                    raise ValueError("unknown config param")
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        name = args[0]
        if name == "mac":
            mac = bytearray(machine.unique_id())
            if self._if == AP_IF:
                mac[5] = (mac[5] + 1) & 0xFF  # the ESP32's soft-AP MAC is the base MAC + 1
            return bytes(mac)
        if name in ("ssid", "essid"):
            return self._ssid or ""
        if name == "hostname":
            return _hostname
        if name in self._config:
            return self._config[name]
        raise ValueError("unknown config param")
