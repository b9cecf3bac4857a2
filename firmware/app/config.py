"""Node configuration: ``config.json`` and ``secrets.json`` on the flash, validated once at boot.

Theory of operation
-------------------
The schema is data (ESPHome style, in ``config_schema.py``): a section is a tuple of
``(key, spec)`` pairs, a spec a tuple ``(kind, default, a, b, nullable)`` made by small
constructors (``_int(lo, hi, default)``, ``_choice(options, default)``, ...). Units are in
the key names (``interval_s``, ``freq_hz``, ``settle_ms``); a missing key takes its default,
and a key without one is required. ``validate(obj, source)`` walks the object once, in schema
order, rejects unknown keys (typos), fills the defaults, then applies the cross-field rules
(one address per part on a bus, each pin used once, sensors that name another sensor, the
link type's own settings, ...). The result is plain dicts, lists and numbers; nothing reads
the file again. The first problem raises ``ConfigError(field, source, message)``: ``field``
is a path such as ``sensors[1].address``, ``source`` the file, and the message says what is
wrong and what is allowed. ``docs/node-config.md`` documents every field.

Secrets (device key, WiFi and MQTT passwords, LoRaWAN AppKey) live in ``secrets.json`` and
go through the same machinery, but no secret value ever appears in a message or a repr.

Runs on MicroPython and CPython; imports only ``json``, ``binascii``, ``config_schema``
(``release()`` drops both modules after boot) and, from ``config_cache`` (loaded at boot anyway),
the ``Secrets`` class, which a cache hit builds without this module. Note that on MicroPython
``isinstance(True, int)`` is False and dicts do not keep insertion order, hence
``type(v) is int`` and ordered tuples here.
"""

import binascii
import json

from .config_cache import Secrets, secrets_from  # noqa: F401  (Secrets: this module's API before the cache)
from .config_schema import (  # noqa: F401  (CONFIG_VERSION re-exported for the schema's users)
    CHIPS, CONFIG_VERSION, PARTS, QUANTITIES, SCHEMA, SECRETS_SCHEMA, _I2CXL_REFUSED, _LINK,
    _LINK_SECTIONS, _REQ, _SAMPLE_PASSWORDS, _SENSOR)


class ConfigError(ValueError):
    """A configuration problem: ``field`` (path, "" for the whole file), ``source`` (file)."""

    def __init__(self, field, source, message):
        super().__init__("%s: %s: %s" % (source, field, message) if field else "%s: %s" % (source, message))
        self.field = field
        self.source = source
        self.file = source
        self.message = message


# -- the walker ----------------------------------------------------------------------------------
def _show(value):
    r = repr(value)
    return r if len(r) <= 40 else r[:37] + "..."


def _join(path, key):
    return path + "." + key if path else key


class _Ctx:
    def __init__(self, source, quiet, chip="esp32"):
        self.source = source
        self.quiet = quiet  # secrets: never show a value
        self.chip = chip

    def fail(self, path, message):
        raise ConfigError(path, self.source, message)

    def expect(self, path, what, value):
        if self.quiet:
            self.fail(path, "must be %s" % what)
        self.fail(path, "must be %s, got %s" % (what, _show(value)))


def _section(fields, obj, path, ctx):
    if type(obj) is not dict:
        ctx.expect(path, "a JSON object", obj)
    known = [f[0] for f in fields]
    for key in sorted(obj):
        if key not in known:
            ctx.fail(_join(path, str(key)), "unknown key (a typo?); known keys here: %s" % ", ".join(known))
    out = {}
    for f in fields:
        out[f[0]] = _field(f, obj[f[0]] if f[0] in obj else _REQ, _join(path, f[0]), ctx)
    return out


def _field(spec, value, path, ctx):
    _, kind, default, a, b, nullable = spec
    if value is _REQ:
        if default is _REQ:
            ctx.fail(path, "missing (required)")
        if default is None or kind not in ("obj", "rules"):
            return default
        value = {}  # a section with defaults: fill them (a fresh dict, never the schema's)
    if value is None:
        if nullable:
            return None
        ctx.fail(path, "must not be null")
    t = type(value)
    if kind == "int" or kind == "num":
        if t is not int and (kind == "int" or t is not float):
            ctx.expect(path, "an integer" if kind == "int" else "a number", value)
        if value != value or not a <= value <= b:
            ctx.fail(path, "%s is out of range %s..%s" % (_show(value), a, b))
        return value if kind == "int" else float(value)
    if kind == "bool":
        if t is not bool:
            ctx.expect(path, "true or false", value)
        return value
    if kind in ("str", "name", "device_id", "hex", "password", "key"):
        if t is not str:
            ctx.expect(path, "a string", value)
        return _string(kind, value, a, b, path, ctx)
    if kind == "choice":
        for option in a:  # 8 == 8.0 but True is not 1: compare types too
            if value == option and (t is type(option) or (t is int and type(option) is float)):
                return option
        ctx.fail(path, "%s is not one of %s" % (_show(value), ", ".join([str(o) for o in a])))
    if kind == "pin":
        return _gpio(value, a, path, ctx)
    if kind == "obj":
        return _section(a, value, path, ctx)
    if kind == "list":
        if t is not list:
            ctx.expect(path, "a list", value)
        if not b[0] <= len(value) <= b[1]:
            ctx.fail(path, "must have %d..%d entries, has %d" % (b[0], b[1], len(value)))
        return [_field(a, v, "%s[%d]" % (path, i), ctx) for i, v in enumerate(value)]
    if kind == "sensor":
        return _sensor(value, path, ctx)
    if kind == "rules":
        if t is not dict:
            ctx.expect(path, "a JSON object", value)
        out = {}
        for q in sorted(value):
            if q not in QUANTITIES:
                ctx.fail(_join(path, q), "unknown quantity; known: %s" % ", ".join(QUANTITIES))
            out[q] = _section(a, value[q], _join(path, q), ctx)
            lo, hi = out[q]["lo"], out[q]["hi"]
            if lo is not None and hi is not None and lo >= hi:
                ctx.fail(_join(path, q) + ".hi", "must be greater than lo (%s)" % lo)
        return out
    ctx.fail(path, "schema error: unknown kind %r" % kind)


def _string(kind, s, a, b, path, ctx):
    if kind == "device_id":
        ok = 1 <= len(s) <= 32 and s[0] in _LOWER_DIGITS and all(c in _LOWER_DIGITS or c == "-" for c in s)
        if not ok:
            ctx.fail(path, "%s must be 1-32 characters of a-z, 0-9 and '-', starting with a letter or "
                           "digit (the site inventory's id, e.g. 'sch1-rm12-co2')" % _show(s))
        return s
    if kind == "name":
        if not (1 <= len(s) <= a and "a" <= s[0] <= "z" and all(c in _LOWER_DIGITS or c == "_" for c in s)):
            ctx.fail(path, "%s must be 1-%d characters of a-z, 0-9 and '_', starting with a letter" % (_show(s), a))
        return s
    if kind == "hex" or kind == "key":
        if not all(c in _HEX for c in s):
            ctx.fail(path, "must be hex digits only (0-9, a-f)" if ctx.quiet else "%s must be hex digits only" % _show(s))
        if len(s) % 2 or len(s) // 2 not in a:
            ctx.fail(path, "must be %s hex digits, got %d" % (" or ".join(["%d" % (2 * n) for n in a]), len(s)))
        raw = binascii.unhexlify(s)
        if kind == "key":
            if len(set(raw)) <= 2:
                ctx.fail(path, "is a placeholder, not a random key; use the key provisioning generated")
            return raw
        return s.lower()
    if kind == "password":
        if not a <= len(s) <= b:
            ctx.fail(path, "must be %d..%d characters" % (a, b))
        if s.lower() in _SAMPLE_PASSWORDS:
            ctx.fail(path, "is a sample value; use the password provisioning generated")
        return s
    if not a <= len(s) <= b:
        ctx.fail(path, "must be %d..%d characters, got %d" % (a, b, len(s)))
    return s


_LOWER_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
_HEX = "0123456789abcdefABCDEF"


def _gpio(value, output, path, ctx):
    chip = CHIPS[ctx.chip]
    if type(value) is not int:
        ctx.expect(path, "a GPIO number", value)
    if value not in chip["gpio"]:
        ctx.fail(path, "GPIO%s does not exist on the %s or drives its SPI flash (6-11)" % (value, ctx.chip))
    if value in chip["console"]:
        ctx.fail(path, "GPIO%d is UART0, the USB console; pick another pin" % value)
    if output and value in chip["input_only"]:
        ctx.fail(path, "GPIO%d is input-only on the %s; this pin must drive a signal" % (value, ctx.chip))
    return value


def _sensor(obj, path, ctx):
    if type(obj) is not dict:
        ctx.expect(path, "a JSON object", obj)
    part = _field(_SENSOR[1], obj.get("part", _REQ), path + ".part", ctx)
    addresses, default, how, _, fields = PARTS[part]
    s = _section(_SENSOR + fields, obj, path, ctx)
    if s["address"] is None:
        s["address"] = default
    elif s["address"] not in addresses or (part == "i2cxl" and s["address"] in _I2CXL_REFUSED):
        ctx.fail(path + ".address", "0x%02x is not an address a %s can take (%s)" % (s["address"], part, how))
    return s


# -- cross-field rules ---------------------------------------------------------------------------
def _cross(cfg, ctx):
    fail = ctx.fail
    if cfg["log"]["segment_bytes"] and cfg["log"]["segment_bytes"] > cfg["log"]["max_bytes"] // 2:
        fail("log.segment_bytes", "must be at most half of log.max_bytes (%d)" % cfg["log"]["max_bytes"])
    if cfg["mean_period_s"] % cfg["interval_s"]:
        fail("mean_period_s", "must be a multiple of interval_s (%d)" % cfg["interval_s"])
    buses = {}
    for i, bus in enumerate(cfg["i2c"]):
        if bus["id"] in buses:
            fail("i2c[%d].id" % i, "I2C bus %d is defined twice" % bus["id"])
        buses[bus["id"]] = bus
    names, places, produced = {}, {}, ["battery_v"] if cfg["battery"] else []
    for i, s in enumerate(cfg["sensors"]):
        p = "sensors[%d]" % i
        if s["name"] in names:
            fail(p + ".name", "%r is already the name of sensors[%d]" % (s["name"], names[s["name"]]))
        names[s["name"]] = i
        if s["bus"] not in buses:
            fail(p + ".bus", "no I2C bus %d in i2c" % s["bus"])
        key = (s["bus"], s["address"])
        if key in places:
            j = places[key]
            fail(p + ".address", "0x%02x is already used by sensors[%d] (%r) on I2C bus %d; give each part on a "
                 "bus its own address (%s)" % (s["address"], j, cfg["sensors"][j]["name"], s["bus"], PARTS[s["part"]][2]))
        places[key] = i
        produced.extend(PARTS[s["part"]][3])
    for i, s in enumerate(cfg["sensors"]):
        _cross_sensor(cfg, s, "sensors[%d]" % i, names, buses, ctx)
    for q in cfg["quality"]:
        if q not in produced:
            fail("quality." + q, "no sensor on this node measures %s" % q)
    if cfg["rail"] and cfg["rail"]["settle_ms"] < 1000 and any(s["part"] == "scd4x" for s in cfg["sensors"]):
        fail("rail.settle_ms", "an SCD4x needs 1000 ms after power-up (REFERENCE §1); set >= 1000")
    if cfg["battery"] and cfg["battery"]["adc_pin"] not in CHIPS[cfg["chip"]]["adc1"]:
        fail("battery.adc_pin", "must be an ADC1 pin (%s): ADC2 cannot be read while WiFi is on"
             % ", ".join([str(g) for g in CHIPS[cfg["chip"]]["adc1"]]))
    _cross_link(cfg, ctx)
    _pins_once(cfg, ctx)


def _cross_sensor(cfg, s, p, names, buses, ctx):
    part = s["part"]
    if part == "scd4x":
        if s["mode"] == "single_shot" and s["variant"] != "scd41":
            ctx.fail(p + ".mode", "single_shot needs an SCD41 (the SCD40 has no single-shot command)")
        if s["mode"] == "low_power" and cfg["interval_s"] < 30:
            ctx.fail(p + ".mode", "low_power gives a sample every 30 s; interval_s must be >= 30")
        if s["mode"] != "single_shot" and cfg["rail"]:
            ctx.fail(p + ".mode", "%s measurement needs the sensor powered between wakes; use single_shot "
                     "or set rail to null (no power gating)" % s["mode"])
    ref = "temperature_sensor" if part == "ads1115" else "air_temperature_sensor" if part == "i2cxl" else None
    if ref and s[ref] is not None:
        j = names.get(s[ref])
        if j is None or cfg["sensors"][j]["part"] != "tmp117":
            ctx.fail(p + "." + ref, "%r is not the name of a tmp117 sensor on this node" % s[ref])
    if part == "ads1115":
        if s["we_mux"] == s["ae_mux"]:
            ctx.fail(p + ".ae_mux", "WE and AE must be on different inputs (both %s)" % s["we_mux"])
        cal = s["calibration"]
        if cal["we_sensitivity_mv_ppb"] == 0:
            ctx.fail(p + ".calibration.we_sensitivity_mv_ppb", "must not be 0 (copy it from the sensor's sheet)")
        if s["algorithm"] == 2 and cal["ae_sensor_zero_mv"] == 0:
            ctx.fail(p + ".algorithm", "algorithm 2 divides by ae_sensor_zero_mv, which is 0; use 1, 3 or 4")
        if cfg["rail"]:
            ctx.fail("rail", "the NO2-B43F board must stay powered (electrochemical bias); set rail to null")
    if part == "i2cxl":
        if s["full_cm"] >= s["empty_cm"]:
            ctx.fail(p + ".full_cm", "must be less than empty_cm (%s): the full level is nearer the sensor"
                     % s["empty_cm"])
        if buses[s["bus"]]["timeout_us"] < 150000:
            ctx.fail("i2c[%d].timeout_us" % cfg["i2c"].index(buses[s["bus"]]),
                     "the I2CXL stretches the clock up to ~150 ms; set >= 150000")


def _cross_link(cfg, ctx):
    link = cfg["link"]
    need, may = _LINK_SECTIONS[link["type"]]
    for spec in _LINK[1:]:
        key = spec[0]
        path = "link." + key
        if key in need and link[key] is None:
            ctx.fail(path, "missing: a %s link needs it" % link["type"])
        if key in may and link[key] is None:
            link[key] = _section(spec[3], {}, path, ctx)
        if key not in need and key not in may and link[key] is not None:
            ctx.fail(path, "not used by a %s link; remove it" % link["type"])
    mqtt = link["mqtt"]
    if mqtt:
        if not mqtt["tls"] and mqtt["host"] not in ("localhost", "127.0.0.1", "::1"):
            ctx.fail("link.mqtt.tls", "plain MQTT is only allowed to a loopback broker; %r needs TLS" % mqtt["host"])
        if mqtt["tls"] and not mqtt["ca_file"]:
            ctx.fail("link.mqtt.ca_file", "TLS needs the broker's CA certificate on the flash to verify it")


def _pins_once(cfg, ctx):
    used = []
    for i, bus in enumerate(cfg["i2c"]):
        used += [("i2c[%d].sda_pin" % i, bus["sda_pin"]), ("i2c[%d].scl_pin" % i, bus["scl_pin"])]
    for sec, key in (("rail", "pin"), ("battery", "adc_pin"), ("status_led", "pin")):
        if cfg[sec]:
            used.append((sec + "." + key, cfg[sec][key]))
    link = cfg["link"]
    if link["uart"]:
        used += [("link.uart.tx_pin", link["uart"]["tx_pin"]), ("link.uart.rx_pin", link["uart"]["rx_pin"])]
    if link["modem"] and link["modem"]["reset_pin"] is not None:
        used.append(("link.modem.reset_pin", link["modem"]["reset_pin"]))
    seen = {}
    for path, pin in used:
        if pin in seen:
            ctx.fail(path, "GPIO%d is already used by %s" % (pin, seen[pin]))
        seen[pin] = path


# -- public API ----------------------------------------------------------------------------------
def validate(obj, source="config.json"):
    """The validated node configuration (plain dicts, defaults filled) from the parsed JSON.

    Raises ``ConfigError(field, source, message)`` for the first problem found.
    """
    chip = obj.get("chip") if type(obj) is dict else None
    ctx = _Ctx(source, False, chip if type(chip) is str and chip in CHIPS else "esp32")
    cfg = _section(SCHEMA, obj, "", ctx)
    _cross(cfg, ctx)
    return cfg


def _read_json(path, quiet):
    try:
        with open(path, "rb") as f:  # bytes: invalid UTF-8 is a JSON error, not a UnicodeError on read
            data = f.read()
    except OSError as e:
        raise ConfigError("", path, "cannot read it (%s)" % e)
    try:
        return json.loads(data)
    except (ValueError, RuntimeError) as e:  # RuntimeError: nesting too deep to parse
        raise ConfigError("", path, "not valid JSON" if quiet else "not valid JSON (%s)" % e)


def load_config(path):
    """``validate`` the JSON file at ``path``; ``ConfigError`` names the field and the file."""
    return validate(_read_json(path, False), path)


def validate_secrets(obj, source="secrets.json", config=None):
    """``Secrets`` from the parsed ``secrets.json``; with ``config`` (validated), also checks
    that the link's secrets are there. ``ConfigError`` never includes a secret value."""
    ctx = _Ctx(source, True)
    s = _section(SECRETS_SCHEMA, obj, "", ctx)
    if config is not None:
        need = {"mqtt": ("wifi_password", "mqtt_password"), "lorawan": ("lorawan_app_key_hex",)}
        for key in need.get(config["link"]["type"], ()):
            if s[key] is None:
                ctx.fail(key, "missing: a %s link needs it" % config["link"]["type"])
    return secrets_from(obj)  # the validated object, read as a cache hit reads it (app.config_cache)


def load_secrets(path, config=None):
    """``validate_secrets`` the JSON file at ``path``."""
    return validate_secrets(_read_json(path, True), path, config)


def release():
    """Forget this module and ``config_schema`` once boot has validated, so the schema and the
    validator (tens of KB of heap) can be collected; the configuration and ``Secrets`` it
    returned stay. The caller drops its own name too: ``config.release(); del config;
    gc.collect()``."""
    import sys

    package, _, name = __name__.rpartition(".")
    for mod in (name, "config_schema"):  # the schema data is most of that heap
        sys.modules.pop(package + "." + mod if package else mod, None)
        if package in sys.modules:
            try:
                delattr(sys.modules[package], mod)
            except AttributeError:
                pass
