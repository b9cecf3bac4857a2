"""The site inventory: the gateways and devices of one site, read from TOML (or a CSV) and
validated before anything is provisioned.

``load(path)`` reads a TOML inventory (layout: docs/provisioning.md and
hardware/inventory.example.toml; ``[site] devices_csv`` adds device rows from a CSV),
``import_csv(path)`` a whole inventory as CSV (a header row, then one row per site, gateway or
device). Both return an ``Inventory``
or raise ``InventoryError`` naming the file, the line and the field
(``devices[3].dev_eui``); ``.problems`` holds every problem found, not only the first.

What is checked: ids unique and of the node's ``device_id`` form (``protocol.frame``); the
profile and board exist in ``hardware/`` and the board and profile allow the link (a LoRa
board for ``lorawan``); DevEUIs 16 hex digits, unique, not a placeholder; latitude and
longitude in range; every device's gateway exists; free text without control characters or a
leading spreadsheet-formula character; no unknown keys (a typo). Hostile files (huge, binary,
not UTF-8, NUL bytes) are refused with a message, never a traceback.

tomllib gives no positions, so ``inventory_text.toml_lines`` finds the line each table and
key starts on; a missing key is reported at its table's header.
"""

import math
import pathlib
import re
import tomllib
import unicodedata
import zoneinfo
from dataclasses import dataclass, field

from civicedge.hardware_render import HARDWARE, BuildError, load_board, load_profile, names
from civicedge.inventory_text import (  # noqa: F401 (InventoryError, MAX_BYTES: this module's API)
    DEVICE_KEYS, GATEWAY_KEYS, MAX_BYTES, InventoryError, csv_column, csv_rows, line_of, read_text,
    toml_error_line, toml_lines)
from protocol.frame import check_device_id

MAX_DEVICES, MAX_GATEWAYS, MAX_PROBLEMS = 5000, 64, 50
LINKS = ("serial", "mqtt", "lorawan")
DEFAULT_TIMEZONE = "Europe/London"
DEFAULT_SECRETS_DIR = "/etc/civicedge/secrets"  # where the gateway's secrets go on the Pi
_HEX16 = re.compile(r"[0-9a-fA-F]{16}\Z")
_HOST = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\Z"  # a name or IPv4
                   r"|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*\Z")  # IPv6
_ATTR = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_USER = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_ZONE = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*\Z")
_FORMULA = "=+-@"  # a cell starting with one runs as a formula when the asset register is opened


@dataclass(frozen=True)
class Location:
    room: str = None
    street: str = None
    lat: float = None
    lon: float = None

    def describe(self):
        """"Room 12" / "High Street" / "Room 12, High Street"."""
        return ", ".join(p for p in (self.room, self.street) if p)


@dataclass(frozen=True)
class GatewayEntry:
    id: str
    location: Location
    lorawan_gateway_eui: str = None  # 16 lowercase hex: the concentrator, registered in ChirpStack
    host: str = None  # the name WiFi nodes reach this gateway's site broker by
    wifi_ssid: str = None
    wifi_password_file: str = None  # absolute path on this machine (the site WiFi's password)
    serial_ports: tuple = ()
    upstream_host: str = None
    upstream_port: int = 8883
    upstream_ca_file: str = None
    upstream_username: str = None
    chirpstack_mqtt_host: str = "127.0.0.1"
    chirpstack_mqtt_ca_file: str = None
    secrets_dir: str = DEFAULT_SECRETS_DIR
    line: int = None


@dataclass(frozen=True)
class DeviceEntry:
    id: str
    profile: str
    board: str
    link: str
    gateway: str
    location: Location
    dev_eui: str = None  # 16 lowercase hex, lorawan only
    attributes: dict = field(default_factory=dict)
    settings: tuple = ()  # (("sensors.sonar.empty_cm", 118.0), ...): config fields for this node
    calibration: str = None  # absolute path of a NO2-B43F calibration sheet
    line: int = None
    index: int = 0


@dataclass(frozen=True)
class Inventory:
    site_id: str
    gateways: tuple
    devices: tuple
    file: str
    site_name: str = None
    timezone: str = DEFAULT_TIMEZONE
    join_eui: str = "0000000000000000"

    def device(self, device_id):
        """The ``DeviceEntry`` with id ``device_id``; ``KeyError`` if there is none."""
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(device_id)

    def gateway(self, gateway_id):
        for g in self.gateways:
            if g.id == gateway_id:
                return g
        raise KeyError(gateway_id)

    def devices_of(self, gateway_id):
        return tuple(d for d in self.devices if d.gateway == gateway_id)


_HARDWARE_CACHE = {}


def _hardware(kind, name, hardware):
    """``load_profile``/``load_board``, kept while the file (and its parent boards) are unchanged."""
    folder = pathlib.Path(hardware) / ("profiles" if kind == "profile" else "boards")
    stamp = tuple(p.stat().st_mtime_ns for p in sorted(folder.glob("*.toml")))
    key = (kind, str(hardware), name)
    if key not in _HARDWARE_CACHE or _HARDWARE_CACHE[key][0] != stamp:
        _HARDWARE_CACHE[key] = (stamp, (load_profile if kind == "profile" else load_board)(name, hardware))
    return _HARDWARE_CACHE[key][1]


# -- validation (one pass over plain data from either format) ----------------------------------
class _Checker:
    def __init__(self, file, lines, column_of=None, hardware=HARDWARE):
        self.file, self.lines, self.column_of, self.hardware = str(file), lines, column_of, hardware
        self.problems, self.profiles, self.boards = [], {}, {}
        self.base = pathlib.Path(file).resolve().parent

    def fail(self, path, message):
        if len(self.problems) < MAX_PROBLEMS:
            name = "".join("[%d]" % p if isinstance(p, int) else (".%s" % p if i else p) for i, p in enumerate(path))
            self.problems.append(InventoryError(self.file, line_of(self.lines, path), name or None, message,
                                                self.column_of(path) if self.column_of else None))
        return None

    def table(self, data, path, known, required=True):
        if not isinstance(data, dict):
            return self.fail(path, "must be a table") if (required or data is not None) else {}
        for k in data:
            if k not in known:
                self.fail(path + (k,), "unknown key (a typo?); known keys here: %s" % ", ".join(known))
        return data

    def text(self, t, path, key, max_len=80, required=False, default=None):
        v = t.get(key)
        if v is None:
            return self.fail(path + (key,), "missing: this key is required") if required else default
        if not isinstance(v, str):
            return self.fail(path + (key,), "must be text, got %s" % type(v).__name__)
        bad = [c for c in v if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co")]
        if not v.strip():
            return self.fail(path + (key,), "is empty")
        if len(v) > max_len:
            return self.fail(path + (key,), "is %d characters long; at most %d" % (len(v), max_len))
        if bad:
            return self.fail(path + (key,), "holds a control or invisible character (%r)" % bad[0])
        if v[0] in _FORMULA:
            return self.fail(path + (key,), "starts with %r, which a spreadsheet runs as a formula" % v[0])
        return v

    def pattern(self, t, path, key, regex, what, required=False, default=None):
        v = self.text(t, path, key, 253, required, default)
        if key in t and v is not None and not regex.match(v):
            return self.fail(path + (key,), "%r must be %s" % (v, what))
        return v

    def ident(self, t, path, key):
        v = self.text(t, path, key, 32, True)
        try:
            return v and check_device_id(v) and v
        except ValueError:
            return self.fail(path + (key,), "%r must be 1-32 of a-z 0-9 -, not starting with '-' (as a node's "
                                            "device_id, protocol/frame.py)" % v)

    def eui(self, t, path, key, what):
        v = self.pattern(t, path, key, _HEX16, "16 hex digits (%s)" % what)
        if v and v.lower() in ("0000000000000000", "ffffffffffffffff"):
            return self.fail(path + (key,), "%s is a placeholder, not %s" % (v, what))
        return v and v.lower()

    def number(self, t, path, key, lo, hi, integer=False):
        v = t.get(key)
        if v is None:
            return None
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok or (isinstance(v, float) and not math.isfinite(v)) or not lo <= v <= hi:
            kind = "an integer" if integer else "a number"
            return self.fail(path + (key,), "%r must be %s %s..%s" % (v, kind, lo, hi))
        return v if integer else float(v)

    def path_value(self, t, path, key, absolute=False):
        v = self.text(t, path, key, 1024)
        if v is not None and absolute and not v.startswith("/"):
            return self.fail(path + (key,), "%r must be an absolute path on the gateway" % v)
        return v if v is None or absolute else str(self.base / v)

    def location(self, t, path):
        loc = self.table(t.get("location"), path + ("location",), ("room", "street", "lat", "lon"))
        if loc is None:
            return None
        p = path + ("location",)
        room, street = self.text(loc, p, "room"), self.text(loc, p, "street")
        lat, lon = self.number(loc, p, "lat", -90, 90), self.number(loc, p, "lon", -180, 180)
        if "room" not in loc and "street" not in loc:
            self.fail(p, "give a room or a street: where to find it")
        if ("lat" in loc) != ("lon" in loc):
            self.fail(p + ("lon" if "lat" in loc else "lat",), "missing: give both lat and lon, or neither")
        return Location(room, street, lat, lon)

    def hw(self, kind, name, path):
        cache = self.profiles if kind == "profile" else self.boards
        if name not in cache:
            try:
                cache[name] = _hardware(kind, name, self.hardware)
            except BuildError as e:
                cache[name] = None
                self.fail(path, str(e))
        return cache[name]

    # -- the sections --------------------------------------------------------------------------
    def site(self, data):
        s = self.table(data.get("site"), ("site",), ("id", "name", "timezone", "lorawan_join_eui", "devices_csv"))
        if s is None:
            return None
        zone = self.pattern(s, ("site",), "timezone", _ZONE, "an IANA time zone such as Europe/London",
                            default=DEFAULT_TIMEZONE)
        if zone and zone != DEFAULT_TIMEZONE:
            try:
                zoneinfo.ZoneInfo(zone)
            except (KeyError, ValueError, OSError):
                self.fail(("site", "timezone"), "%r is not a time zone this system knows" % zone)
        join = self.pattern(s, ("site",), "lorawan_join_eui", _HEX16, "16 hex digits (the JoinEUI/AppEUI)",
                            default="0000000000000000")
        return dict(site_id=self.ident(s, ("site",), "id"), site_name=self.text(s, ("site",), "name"),
                    timezone=zone, join_eui=join and join.lower(),
                    devices_csv=self.path_value(s, ("site",), "devices_csv"))

    def gateway(self, t, path, site_id):
        t = self.table(t, path, GATEWAY_KEYS)
        if t is None:
            return None
        gw_id = self.ident(t, path, "id")
        ports = t.get("serial_ports", [])
        if not isinstance(ports, list) or not all(isinstance(p, str) for p in ports):
            self.fail(path + ("serial_ports",), "must be a list of serial port paths")
            ports = []
        for i, p in enumerate(ports):
            if not p.startswith("/dev/") or len(p) > 256 or any(c.isspace() or not c.isprintable() for c in p):
                self.fail(path + ("serial_ports", i), "%r must be a device path such as /dev/serial/by-id/..." % p)
        if len(set(ports)) != len(ports):
            self.fail(path + ("serial_ports",), "lists a port twice")
        host = "a host name or IP address alone (no scheme, port or path)"
        return GatewayEntry(
            id=gw_id, location=self.location(t, path),
            lorawan_gateway_eui=self.eui(t, path, "lorawan_gateway_eui", "the gateway's EUI (ChirpStack gateway id)"),
            host=self.pattern(t, path, "host", _HOST, host),
            wifi_ssid=self.text(t, path, "wifi_ssid", 32),
            wifi_password_file=self.path_value(t, path, "wifi_password_file"),
            serial_ports=tuple(ports), upstream_host=self.pattern(t, path, "upstream_host", _HOST, host, True),
            upstream_port=self.number(t, path, "upstream_port", 1, 65535, True) or 8883,
            upstream_ca_file=self.path_value(t, path, "upstream_ca_file", True),
            upstream_username=self.pattern(t, path, "upstream_username", _USER, "1-64 of A-Z a-z 0-9 . _ -",
                                           default="%s-%s" % (site_id, gw_id)),
            chirpstack_mqtt_host=self.pattern(t, path, "chirpstack_mqtt_host", _HOST, host, default="127.0.0.1"),
            chirpstack_mqtt_ca_file=self.path_value(t, path, "chirpstack_mqtt_ca_file", True),
            secrets_dir=self.path_value(t, path, "secrets_dir", True) or DEFAULT_SECRETS_DIR,
            line=line_of(self.lines, path))

    def device(self, t, path, gateways):
        t = self.table(t, path, DEVICE_KEYS)
        if t is None:
            return None
        dev_id, loc = self.ident(t, path, "id"), self.location(t, path)
        name = self.text(t, path, "profile", 64, True)
        profile = name and self.hw("profile", name, path + ("profile",))
        prof = profile["profile"] if profile else {}
        board_name = self.text(t, path, "board", 64, default=prof.get("board"))
        board = board_name and self.hw("board", board_name, path + ("board",))
        link = self.text(t, path, "link", 16, default=prof.get("link"))
        if link is not None and link not in LINKS:
            link = self.fail(path + ("link",), "%r is not one of %s" % (link, ", ".join(LINKS)))
        if link and profile and link not in prof["links"]:
            self.fail(path + ("link",), "profile %s supports links %s, not %s" % (name, ", ".join(prof["links"]), link))
        if link and board and link not in board["board"]["links"]:
            lora = [b for b in names("boards", self.hardware)
                    if "lorawan" in _hardware("board", b, self.hardware)["board"]["links"]]
            self.fail(path + ("board" if "board" in t else "link",), "board %s supports links %s, not %s%s" % (
                board_name, ", ".join(board["board"]["links"]), link,
                "; a lorawan device needs a LoRa board: " + ", ".join(lora) if link == "lorawan" else ""))
        gw = self.text(t, path, "gateway", 32)
        if gw is None and len(gateways) == 1:
            gw = gateways[0]
        elif gw is None:
            self.fail(path + ("gateway",), "missing: the site has %d gateways; say which one serves this device"
                      % len(gateways))
        elif gw not in gateways:
            self.fail(path + ("gateway",), "%r is not a gateway of this inventory (gateways: %s)"
                      % (gw, ", ".join(gateways) or "none"))
        eui = self.eui(t, path, "dev_eui", "the modem's DevEUI")
        if "dev_eui" not in t and link == "lorawan":
            self.fail(path + ("dev_eui",), "missing: a lorawan device needs its modem's DevEUI (16 hex digits)")
        elif "dev_eui" in t and link and link != "lorawan":
            self.fail(path + ("dev_eui",), "only a lorawan device has a DevEUI; remove it or set link = \"lorawan\"")
        return DeviceEntry(id=dev_id, profile=name, board=board_name, link=link, gateway=gw, location=loc,
                           dev_eui=eui, attributes=self.attributes(t, path), settings=self.settings(t, path),
                           calibration=self.path_value(t, path, "calibration"), line=line_of(self.lines, path),
                           index=path[-1])

    def attributes(self, t, path):
        a = t.get("attributes", {})
        if not isinstance(a, dict):
            return self.fail(path + ("attributes",), "must be a table of text, e.g. { outlet = \"hot\" }") or {}
        out = {}
        for k in a:
            if not _ATTR.match(k) or k.startswith("civicedge_"):
                self.fail(path + ("attributes", k), "the name must be 1-32 of a-z 0-9 _, starting with a letter "
                                                    "(and not civicedge_, which provisioning's own tags use)")
            else:
                out[k] = self.text(a, path + ("attributes",), k, 64, True)
        return out

    def settings(self, t, path):
        flat, todo = [], [((), t.get("settings", {}))]
        if not isinstance(todo[0][1], dict):
            return self.fail(path + ("settings",), "must be a table of config fields, e.g. "
                                                   "{ \"sensors.sonar.empty_cm\" = 118.0 }") or ()
        while todo:
            prefix, d = todo.pop()
            for k, v in sorted(d.items()):
                key = prefix + (k,)
                if isinstance(v, dict):
                    todo.append((key, v))
                elif isinstance(v, (bool, int, float, str)) and not (isinstance(v, float) and not math.isfinite(v)):
                    dotted = ".".join(key)
                    if not re.fullmatch(r"[A-Za-z0-9_\[\].-]{1,128}", dotted):
                        self.fail(path + ("settings",), "%r is not a config field path" % dotted)
                    elif isinstance(v, str) and self.text({k: v}, path + ("settings",), k, 256) is None:
                        pass
                    else:
                        flat.append((dotted, v))
                else:
                    self.fail(path + ("settings",) + key, "must be a number, text or true/false")
        return tuple(sorted(flat))

    def inventory(self, data, extra_devices=None):
        """Check the whole file; raises the first ``InventoryError`` (``.problems``: all)."""
        root = self.table(data, (), ("inventory_version", "site", "gateways", "devices"))
        if root is None:
            self.raise_problems()
        if root.get("inventory_version", 1) != 1 or isinstance(root.get("inventory_version"), bool):
            self.fail(("inventory_version",), "must be 1 (this tool's inventory format)")
        site = self.site(root) or {}
        gws, devs = root.get("gateways"), root.get("devices", [])
        if not isinstance(gws, list) or not gws:
            self.fail(("gateways",), "missing: list the site's gateways ([[gateways]] tables)")
            gws = gws if isinstance(gws, list) else []
        if not isinstance(devs, list):
            self.fail(("devices",), "must be a list of [[devices]] tables")
            devs = []
        if len(gws) > MAX_GATEWAYS or len(devs) > MAX_DEVICES:
            self.fail(("devices",) if len(devs) > MAX_DEVICES else ("gateways",),
                      "too many: at most %d gateways and %d devices per inventory" % (MAX_GATEWAYS, MAX_DEVICES))
            self.raise_problems()
        gateways = [self.gateway(g, ("gateways", i), site.get("site_id")) for i, g in enumerate(gws)]
        gw_ids = [g.id for g in gateways if g and g.id]
        devices = [self.device(d, ("devices", i), gw_ids) for i, d in enumerate(devs)]
        if extra_devices and site.get("devices_csv"):
            devices += extra_devices(self, site["devices_csv"], gw_ids, len(devices))
        self.cross_checks([g for g in gateways if g], [d for d in devices if d])
        self.raise_problems()
        return Inventory(site["site_id"], tuple(gateways), tuple(devices), self.file, site["site_name"],
                         site["timezone"], site["join_eui"])

    def cross_checks(self, gateways, devices):
        seen, euis = {}, {}
        for kind, items in (("gateways", gateways), ("devices", devices)):
            for n, item in enumerate(items):
                where = (kind, getattr(item, "index", n))
                if item.id in seen:
                    self.fail(where + ("id",), "%r is already %s" % (item.id, seen[item.id]))
                seen.setdefault(item.id, "%s[%d]" % where)
                eui = item.dev_eui if kind == "devices" else item.lorawan_gateway_eui
                if eui and eui in euis.get(kind, {}):
                    self.fail(where + ("dev_eui" if kind == "devices" else "lorawan_gateway_eui",),
                              "%s is already %s's" % (eui, euis[kind][eui]))
                euis.setdefault(kind, {}).setdefault(eui, "%s[%d]" % where)
        for g in gateways:
            mine = [d for d in devices if d.gateway == g.id]
            where = ("gateways", gateways.index(g))
            if any(d.link == "serial" for d in mine) and not g.serial_ports:
                self.fail(where + ("serial_ports",), "missing: gateway %s serves serial devices; list its ports" % g.id)
            for key in ("host", "wifi_ssid", "wifi_password_file"):
                if any(d.link == "mqtt" for d in mine) and getattr(g, key) is None:
                    self.fail(where + (key,), "missing: gateway %s serves WiFi (mqtt) devices, which need it" % g.id)

    def raise_problems(self):
        if self.problems:
            ordered = sorted(self.problems, key=lambda e: (e.file != self.file, e.file, e.line is None, e.line or 0))
            ordered[0].problems = ordered
            raise ordered[0]


def load(path, hardware=HARDWARE):
    """The TOML inventory at ``path`` (``[site] devices_csv`` adds device rows from a CSV);
    raises ``InventoryError``."""
    text = read_text(path, bom_ok=False)
    try:
        data = tomllib.loads(text)
    except ValueError as e:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise InventoryError(path, toml_error_line(e), None, "not valid TOML: %s" % e)

    def from_csv(chk, csv_path, gw_ids, first):
        try:
            rows = csv_rows(csv_path, devices_only=True)
        except InventoryError as e:
            chk.problems.append(e)
            return []
        sub = _Checker(csv_path, {("devices", first + n): r[1] for n, r in enumerate(rows)}, csv_column, hardware)
        sub.profiles, sub.boards = chk.profiles, chk.boards
        out = [sub.device(r[2], ("devices", first + n), gw_ids) for n, r in enumerate(rows)]
        chk.problems += sub.problems
        return out

    return _Checker(path, toml_lines(text), hardware=hardware).inventory(data, from_csv)


def import_csv(path, hardware=HARDWARE):
    """A whole inventory from a CSV: a header row, then one row per object with a ``kind``
    column (``site`` once, then ``gateway`` and ``device`` rows); ``room``/``street``/``lat``/
    ``lon`` make the location, ``attr:NAME`` columns the attributes, ``set:CONFIG.PATH``
    columns the settings (a JSON value, else text), ``serial_ports`` is ``;``-separated.
    Raises ``InventoryError`` naming the line (and column)."""
    rows = csv_rows(path)
    data, lines = {"gateways": [], "devices": []}, {}
    for _, line, kind, table in rows:
        if kind == "site":
            if "site" in data:
                raise InventoryError(path, line, "site", "a second site row; an inventory is one site")
            data["site"], lines[("site",)] = table, line
        else:
            key = kind + "s"
            lines[(key, len(data[key]))] = line
            data[key].append(table)
    if "site" not in data:
        raise InventoryError(path, None, "site", "missing: add a row with kind = site and the site's id")
    return _Checker(path, lines, csv_column, hardware).inventory(data)
