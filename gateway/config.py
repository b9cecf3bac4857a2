"""The gateway's configuration: one TOML file, validated once into plain typed values.

``load(path)`` reads the file with ``tomllib`` and returns a frozen ``GatewayConfig`` tree,
or raises ``ConfigError(key, file, message)`` for the first problem: a wrong type, a value
out of range, a missing required key, an unknown key (almost always a typo) or settings that
contradict each other. ``key`` is the dotted path (``upstream.mqtt.port``,
``devices[2].profile``; empty for the whole file), ``file`` the file. The layout, every key,
its default and range: docs/gateway-setup.md and deploy/gateway.example.toml.

Secrets are never in this file: it names the files that hold them (``password_file``,
``device_keys_file``, ``app_key_file``, ``client_key_file``); ``gateway.security`` reads,
parses and checks those. No error message shows a secret: values of keys whose names say
password/key/secret/token, of unknown keys and of tables are never echoed.
Relative paths are taken relative to the configuration file's directory.
``[sources.i2c]`` (the sensors wired to the Pi, with their calibration sheets and bin depths)
is validated by ``gateway.config_i2c``.
"""

import pathlib
import re
import tomllib
import uuid
import zoneinfo

from civicedge.hardware_render import HARDWARE, BuildError, load_profile
from drivers.atmodem_core import DIALECTS
from gateway.config_i2c import PARTS, SENSOR_KEYS, i2c_source  # noqa: F401 (PARTS, SENSOR_KEYS re-exported)
from gateway.config_types import (  # noqa: F401 (re-exported: users import them from here)
    MAX_DELAY_S,
    MAX_HELD,
    MAX_HELD_LIMIT,
    PUBACK_TIMEOUT_LIMIT_S,
    PUBACK_TIMEOUT_S,
    MQTTConnection,
    SerialSource,
    ChirpStackSource,
    LocalSensor,
    I2CSource,
    Sources,
    MQTTUpstream,
    LoRaWANUpstream,
    Outbox,
    Metrics,
    Device,
    AlarmOverride,
    GatewayConfig,
)

CONFIG_VERSION = 1
DEFAULT_PATH = "/etc/civicedge/gateway.toml"
LINKS = ("serial", "mqtt", "lorawan", "local")  # how a device reaches this gateway
KEYED_LINKS = ("serial", "mqtt")  # links whose frames carry an HMAC tag: the device needs a key
ENCODINGS = ("senml-json", "senml-cbor")
DEFAULT_TIMEZONE = "Europe/London"  # a UK council's sites: alarm windows in UK local time
# The FPort civicedge packs travel on: the node's link.lorawan.port default
# (firmware/app/config_schema.py) and every profile's [link.lorawan] port
# (hardware/profiles/*.toml). LoRaWAN application ports are 1..223 (the node's range too).
LORAWAN_FPORT = 2
_ZONE = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*\Z")
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")  # as a node's device_id: it goes into MQTT topics
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}\Z")
_SECRETISH = ("password", "key", "secret", "token")


class ConfigError(ValueError):
    """A configuration problem: ``key`` (dotted path, "" for the whole file), ``file``, ``message``."""

    def __init__(self, key, file, message):
        ValueError.__init__(self, key, file, message)
        self.key, self.file, self.message = key, str(file), message

    def __str__(self):
        return "%s: %s: %s" % (self.file, self.key, self.message) if self.key else "%s: %s" % (self.file, self.message)


# -- the values --------------------------------------------------------------------------------
_REQUIRED = object()


def _kind_name(kind):
    return {"int": "an integer", "number": "a number", "bool": "true or false", "str": "text",
            "path": "a file path (text)", "table": "a table", "list": "a list of tables"}[kind]


class _Table:
    """One TOML table being read: typed getters that name the key and the file, and an
    unknown-key check (``done``) once every known key was read."""

    def __init__(self, data, path, ctx):
        self.data, self.path, self.ctx, self.used = data, path, ctx, set()

    def key(self, name):
        return "%s.%s" % (self.path, name) if self.path else name

    def fail(self, name, message):
        raise ConfigError(self.key(name) if name is not None else self.path, self.ctx["file"], message)

    def has(self, name):
        return name in self.data

    def get(self, name, kind, default=_REQUIRED, lo=None, hi=None, choices=None, pattern=None, hint=""):
        self.used.add(name)
        if name not in self.data:
            if default is _REQUIRED:
                self.fail(name, "missing: this key is required%s" % (hint and "; " + hint))
            return default
        v = self.data[name]
        shown = "" if any(w in name for w in _SECRETISH) or isinstance(v, (dict, list)) else "%r " % (v,)
        shown = shown if len(shown) <= 64 else shown[:60] + "...' "
        ok = {"int": isinstance(v, int) and not isinstance(v, bool),
              "number": isinstance(v, (int, float)) and not isinstance(v, bool),
              "bool": isinstance(v, bool), "str": isinstance(v, str), "path": isinstance(v, str),
              "table": isinstance(v, dict),
              "list": isinstance(v, list) and all(isinstance(x, dict) for x in v)}[kind]
        if not ok:
            self.fail(name, "%sis %s; it must be %s" % (shown, type(v).__name__, _kind_name(kind)))
        if kind in ("int", "number") and ((lo is not None and v < lo) or (hi is not None and v > hi)):
            bound = "at least %s" % lo if hi is None else "at most %s" % hi if lo is None else "%s..%s" % (lo, hi)
            self.fail(name, "%sis out of range; it must be %s" % (shown, bound))
        if kind in ("str", "path") and not v.strip():
            self.fail(name, "is empty; %s" % (hint or "give a value or remove the key for its default"))
        if choices is not None and v not in choices:
            self.fail(name, "%sis not one of %s" % (shown, ", ".join(map(str, choices))))
        if pattern is not None and not pattern[0].match(v):
            self.fail(name, "%smust be %s" % (shown, pattern[1]))
        if kind == "path":
            return str(self.ctx["dir"] / pathlib.Path(v).expanduser())
        return v

    def table(self, name, required=False, hint=""):
        v = self.get(name, "table", _REQUIRED if required else None, hint=hint)
        return None if v is None else _Table(v, self.key(name), self.ctx)

    def tables(self, name):
        return [_Table(d, "%s[%d]" % (self.key(name), i), self.ctx) for i, d in enumerate(self.get(name, "list", []))]

    def done(self):
        for name in sorted(set(self.data) - self.used):
            extra = "; passwords live in a file: set password_file to its path" if "password" in name else ""
            self.fail(name, "unknown key (a typo?); known keys here: %s%s"
                      % (", ".join(sorted(self.used)) or "none", extra))


def _host(t, name, default=_REQUIRED):
    h = t.get(name, "str", default)
    if h is not None and (len(h) > 253 or re.search(r"[\s/\[\]]|://", h) or h.count(":") == 1):
        t.fail(name, "%r must be a host name or IP address alone: no scheme, port, path or brackets" % h)
    return h


def _mqtt(t, client_id):
    tls = t.get("tls", "bool", True)
    c = MQTTConnection(
        host=_host(t, "host"), port=t.get("port", "int", 8883 if tls else 1883, 1, 65535), tls=tls,
        tls_verify=t.get("tls_verify", "bool", True), ca_file=t.get("ca_file", "path", None),
        client_cert_file=t.get("client_cert_file", "path", None),
        client_key_file=t.get("client_key_file", "path", None),
        username=t.get("username", "str", hint="the user this gateway logs in as on the broker"),
        password_file=t.get("password_file", "path", None),
        client_id=t.get("client_id", "str", client_id, pattern=(_CLIENT_ID, "1-128 of A-Z a-z 0-9 . _ -")),
        keepalive_s=t.get("keepalive_s", "int", 60, 10, 3600))
    if (c.client_cert_file is None) != (c.client_key_file is None):
        t.fail("client_key_file" if c.client_key_file is None else "client_cert_file",
               "missing: a client certificate needs both client_cert_file and client_key_file")
    if not c.tls and (c.ca_file or c.client_cert_file):
        t.fail("tls", "is false but TLS files are given; set tls = true (plaintext is for a loopback broker only)")
    if c.password_file is None and c.client_cert_file is None:
        t.fail("password_file", "missing: name the file that holds this user's password (mode 0600)")
    return c


def _devices(root, ctx):
    out, seen, euis = [], {}, {}
    for t in root.tables("devices"):
        dev_id = t.get("id", "str", pattern=(_ID, "1-32 of a-z 0-9 -, not starting with '-'"))
        if dev_id in seen:
            t.fail("id", "%r is already devices[%d]; each device once" % (dev_id, seen[dev_id]))
        if dev_id == ctx["gateway"]:
            t.fail("id", "%r is this gateway's own id (site.gateway_id): the gateway's events are "
                         "stored under it, so a device with that id would collide with them; "
                         "rename the device or the gateway" % dev_id)
        seen[dev_id] = len(out)
        profile = t.get("profile", "str")
        _profile(t, "profile", profile, ctx)
        link = t.get("link", "str", choices=LINKS)
        eui = t.get("dev_eui", "str", None, pattern=(re.compile(r"[0-9a-fA-F]{16}\Z"), "16 hex digits"))
        if (eui is None) == (link == "lorawan"):
            t.fail("dev_eui", "missing: a lorawan device needs its DevEUI" if eui is None
                   else "only a lorawan device has a DevEUI; remove it or set link = \"lorawan\"")
        if eui is not None:
            eui = eui.lower()
            if eui in euis:
                t.fail("dev_eui", "%s is already devices[%d]'s" % (eui, euis[eui]))
            euis[eui] = len(out)
        attrs = t.get("attributes", "table", {})
        for k, v in attrs.items():
            if not isinstance(v, str):
                t.fail("attributes." + k, "%r must be text (e.g. outlet = \"hot\")" % (v,))
        t.done()
        out.append(Device(dev_id, profile, link, eui, dict(attrs)))
    return tuple(out)


def _profile(t, name, profile, ctx):
    if profile not in ctx["profiles"]:
        try:
            ctx["profiles"][profile] = load_profile(profile, ctx["hardware"])
        except BuildError as e:
            t.fail(name, "%s (hardware_dir %s)" % (e, ctx["hardware"]))
    return ctx["profiles"][profile]


def _sources(root, devices, ctx):
    t = root.table("sources", required=True, hint="a gateway needs at least one source of readings")
    serial, ports = [], set()
    for s in t.tables("serial"):
        port = s.get("port", "str", hint="e.g. /dev/serial/by-id/usb-FTDI_...")
        if port in ports:
            s.fail("port", "%r is already a serial source" % port)
        ports.add(port)
        serial.append(SerialSource(port, s.get("baudrate", "int", 115200, 1200, 921600)))
        s.done()
    b = t.table("site_broker")
    site = _mqtt(b, "civicedge-%s-site" % ctx["gateway"]) if b else None
    c = t.table("chirpstack")
    chirp = None
    if c:
        app = c.get("application_id", "str", "+")
        if app != "+":
            try:
                app = str(uuid.UUID(app))
            except ValueError:
                c.fail("application_id", "%r must be the application's UUID (ChirpStack: Applications) or \"+\"" % app)
        chirp = ChirpStackSource(_mqtt(c, "civicedge-%s-chirpstack" % ctx["gateway"]), app,
                                 c.get("f_port", "int", LORAWAN_FPORT, 1, 223),
                                 c.get("max_held", "int", MAX_HELD, 1, MAX_HELD_LIMIT))
        c.done()
    i = t.table("i2c")
    i2c = i2c_source(i, devices) if i else None
    for tab in (b, i):
        if tab:
            tab.done()
    t.done()
    if not (serial or site or chirp or i2c):
        t.fail(None, "no source configured: add [[sources.serial]], [sources.site_broker], "
                     "[sources.chirpstack] or [sources.i2c]")
    needs = {"serial": (serial, "[[sources.serial]]"), "mqtt": (site, "[sources.site_broker]"),
             "lorawan": (chirp, "[sources.chirpstack]")}
    for n, d in enumerate(devices):
        have, what = needs.get(d.link, (True, ""))
        if not have:
            raise ConfigError("devices[%d].link" % n, ctx["file"], "%r reaches the gateway by %s, but there is no %s"
                              % (d.id, d.link, what))
        if d.link == "local" and (i2c is None or i2c.device_id != d.id):
            raise ConfigError("devices[%d].link" % n, ctx["file"], "%r is local, but sources.i2c.device_id does not "
                              "name it; the Pi's own sensors are one device" % d.id)
    return Sources(tuple(serial), site, chirp, i2c)


def _upstream(root, ctx):
    t = root.table("upstream", required=True, hint="add [upstream.mqtt] (or [upstream.lorawan])")
    m, lw = t.table("mqtt"), t.table("lorawan")
    if (m is None) == (lw is None):
        t.fail(None, "give exactly one of [upstream.mqtt] and [upstream.lorawan]")
    up_m = up_l = None
    if m:
        up_m = MQTTUpstream(_mqtt(m, "civicedge-%s-%s" % (ctx["site"], ctx["gateway"])),
                            m.get("encoding", "str", "senml-json", choices=ENCODINGS),
                            m.get("max_inflight", "int", 100, 1, 65535),
                            m.get("readings_per_publish", "int", 100, 1, 10000),
                            m.get("protocol", "str", "5", choices=("5", "3.1.1"),
                                  hint="MQTT 5 lets the broker refuse a publish (an ACL) with a "
                                       "reason code; under 3.1.1 Mosquitto acks it and the rows "
                                       "would be deleted unsent"),
                            m.get("puback_timeout_s", "int", PUBACK_TIMEOUT_S, 1, PUBACK_TIMEOUT_LIMIT_S))
        m.done()
    if lw:
        eui = (re.compile(r"[0-9a-fA-F]{16}\Z"), "16 hex digits")
        dev_eui = lw.get("dev_eui", "str", None, pattern=eui)
        up_l = LoRaWANUpstream(lw.get("port", "str"), lw.get("baudrate", "int", 115200, 1200, 921600),
                               lw.get("dialect", "str", choices=DIALECTS), dev_eui and dev_eui.upper(),
                               lw.get("join_eui", "str", pattern=eui).upper(), lw.get("app_key_file", "path"),
                               lw.get("ttn_fair_use", "bool", False), lw.get("confirmed_alarms", "bool", True),
                               lw.get("max_delay_s", "int", MAX_DELAY_S, 0, 86400,
                                      hint="seconds a routine uplink that is not yet full may wait"))
        lw.done()
    t.done()
    return up_m, up_l


def _alarms(root, ctx):
    """[alarms.<profile>.<alarm id>]: checked by merging onto the profile's rule and building it
    with the alarm engine's own validation (``gateway.alarms.build_rule``)."""
    from gateway.alarms import build_rule  # here: only a file with overrides needs the engine

    t = root.table("alarms")
    out = []
    for profile in sorted(t.data) if t else ():
        pt = t.table(profile)
        alarms = {a.get("id"): a for a in _profile(t, profile, profile, ctx).get("alarms", [])}
        for alarm_id in sorted(pt.data):
            a = pt.table(alarm_id)
            if alarm_id not in alarms:
                pt.fail(alarm_id, "profile %s has no alarm %r; its alarms: %s"
                        % (profile, alarm_id, ", ".join(map(str, alarms))))
            enabled = a.get("enabled", "bool", True)
            values = {k: v for k, v in a.data.items() if k != "enabled"}
            for k in sorted(set(values) & {"id", "quantity", "rule", "basis", "applies_to"}):
                a.fail(k, "cannot be overridden; only the rule's settings (threshold, window, ...), severity "
                          "and enabled can")
            try:
                build_rule(dict(alarms[alarm_id], **values))
            except (ValueError, TypeError) as e:
                pt.fail(alarm_id, "%s (the rule's keys: hardware/README.md)" % e)
            out.append(AlarmOverride(profile, alarm_id, enabled, values))
        pt.done()
    if t:
        t.done()
    return tuple(out)


def _metrics(root):
    t = root.table("metrics")
    t = t or _Table({}, "metrics", root.ctx)
    listen = t.get("listen", "str", "127.0.0.1:9108")
    m = re.fullmatch(r"\[?([^\[\]\s]+?)\]?:(\d{1,5})", listen)
    if not m or not 1 <= int(m.group(2)) <= 65535:
        t.fail("listen", "%r must be HOST:PORT, e.g. 127.0.0.1:9108 or [::1]:9108" % listen)
    enabled = t.get("enabled", "bool", True)
    t.done()
    return Metrics(enabled, m.group(1), int(m.group(2)))


def _timezone(site):
    """``site.timezone``: an IANA zone this system's time-zone database has."""
    name = site.get("timezone", "str", DEFAULT_TIMEZONE)
    try:
        if not _ZONE.match(name):
            raise ValueError(name)
        zoneinfo.ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        site.fail("timezone", "%r is not a time zone this system knows; give an IANA name such as "
                              "\"Europe/London\" (timedatectl list-timezones)" % name)
    return name


def parse(text, file="<config>"):
    """Validate TOML ``text`` (as read from ``file``) into a ``GatewayConfig``; raises ``ConfigError``."""
    file = str(file)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", file, "not valid TOML: %s" % e)
    ctx = {"file": file, "dir": pathlib.Path(file).resolve().parent, "profiles": {}}
    root = _Table(data, "", ctx)
    root.get("config_version", "int", choices=(CONFIG_VERSION,), hint="add config_version = %d" % CONFIG_VERSION)
    ctx["hardware"] = root.get("hardware_dir", "path", str(HARDWARE))
    site = root.table("site", required=True)
    idpat = (_ID, "1-32 of a-z 0-9 -, not starting with '-' (it is part of MQTT topics)")
    ctx["site"] = site.get("id", "str", pattern=idpat)
    ctx["gateway"] = site.get("gateway_id", "str", pattern=idpat)
    data_dir = site.get("data_dir", "path", "/var/lib/civicedge")
    timezone = _timezone(site)
    site.done()
    sec = root.table("secrets")
    keys_file = sec.get("device_keys_file", "path", None) if sec else None
    if sec:
        sec.done()
    devices = _devices(root, ctx)
    keyed = [d.id for d in devices if d.link in KEYED_LINKS]
    if keyed and keys_file is None:
        raise ConfigError("secrets.device_keys_file", file, "missing: devices %s need keys; name the file that "
                          "holds them (mode 0600)" % ", ".join(keyed))
    sources = _sources(root, devices, ctx)
    o = root.table("outbox") or _Table({}, "outbox", ctx)
    outbox = Outbox(o.get("path", "path", str(pathlib.Path(data_dir) / "outbox.sqlite3")),
                    o.get("max_bytes", "int", 256 * 2**20, 2**20, 2**40),
                    o.get("max_age_s", "int", 90 * 86400, 3600, 3650 * 86400),
                    o.get("history_max_bytes", "int", 64 * 2**20, 0, 2**40),
                    o.get("history_max_age_s", "int", 35 * 86400, 0, 3650 * 86400))
    o.done()
    up_m, up_l = _upstream(root, ctx)
    cfg = GatewayConfig(file, ctx["site"], ctx["gateway"], data_dir, ctx["hardware"], keys_file, devices, sources,
                        outbox, up_m, up_l, _metrics(root), _alarms(root, ctx), timezone)
    root.done()
    return cfg


def load(path=DEFAULT_PATH):
    """Read and validate the configuration file ``path``; raises ``ConfigError`` (also when unreadable)."""
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or e
        raise ConfigError("", path, "cannot read it (%s); give the path with --config" % why)
    return parse(text, path)
