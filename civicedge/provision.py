"""``civicedge provision plan|apply``: from a site inventory, make what is missing.

The site directory (``--out``, default ``<inventory dir>/<site id>``) after ``apply``::

    secrets/                        0700; every file in it 0600
      devices/<device>.json         the node's secrets.json (device key, link passwords, AppKey)
      lorawan/<device>.appkey       a LoRaWAN node's AppKey, 32 hex digits
      gateway-<gw>/                 what goes into the gateway's secrets_dir (/etc/civicedge/secrets):
        device-keys.toml            "<device>" = "<key hex>" for its serial and WiFi nodes
        upstream.password, site-broker.password[, chirpstack-mqtt.password]
        mosquitto-passwd.txt        user:password lines for `mosquitto_passwd -U` (the site broker)
    bundles/<device>/               the node's flash tree (civicedge.firmware_build): .mpy, config.json, manifest.json
    gateways/<gw>/gateway.toml      the gateway's configuration, listing its devices
    state.json                      what apply did (bundle digests, ChirpStack ids); a cache, never the truth

Theory of operation. ``plan`` compares what the inventory wants with what is there — files on
disk, and (``chirpstack``) what ChirpStack returns — and lists each object as create, update or
unchanged; it writes nothing. ``apply`` plans again, then works through the steps in order:
secrets first (a key is on disk, fsynced, before ChirpStack or a bundle may use it), ChirpStack,
bundles, gateway files. Each file is written atomically (temporary file, fsync, rename) and
``state.json`` after each step, so an interrupted apply leaves only whole files and a rerun
finishes the job; a second apply finds nothing to do. Keys come from ``secrets.token_bytes``
(device keys 32 bytes, AppKeys 16) and are never derived from a MAC or serial number, never
printed, and never replaced once written (delete a node's secrets file to rotate its keys,
then reflash it).
"""

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import tempfile
from dataclasses import dataclass

from civicedge import firmware_build as fb
from civicedge import inventory as inventory_mod
from civicedge import provision_chirpstack as pcs
from civicedge.provision_files import (
    PRIVATE_DIR, PRIVATE_FILE, device_keys_toml, dir_mode_problem, ensure_private_dir, file_mode_problem,
    gateway_passwords, gateway_toml, mosquitto_passwd, read_secret_text, sync_dir, write_atomic)
from civicedge.provision_node import (  # noqa: F401 (State, new_key: re-exported, the provisioning API)
    EXIT_INVALID, ProvisionError, Site, State, Template, bundle_change, config_key, new_key, new_password,
    node_config, source_digest)
from gateway.security import password_problem

DEFAULT_CODEC = fb.REPO / "protocol" / "js" / "civicedge_codec.js"
BATCH = 25  # bundles between state.json writes


@dataclass
class Change:
    area: str  # "secrets", "bundle", "gateway", "chirpstack"
    kind: str
    name: str
    action: str  # "create", "update", "unchanged", or a note ("not in inventory", "skipped")
    detail: str = ""


def load_inventory(path):
    """``inventory.load`` (TOML) or ``inventory.import_csv`` (a ``.csv`` file)."""
    if str(path).lower().endswith(".csv"):
        return inventory_mod.import_csv(path)
    return inventory_mod.load(path)


# -- plan ------------------------------------------------------------------------------------------
@dataclass
class Step:
    change: Change
    run: object = None  # a callable doing it; None for unchanged objects and notes
    node: object = None  # bundles: (DeviceEntry, configuration, config key, source digest)


class ChirpStackTarget:
    """Where and as whom: ``--chirpstack URL --token-file F --tenant-id ID``."""

    def __init__(self, url, token, tenant_id, codec_path=DEFAULT_CODEC, timeout_s=30.0):
        self.url, self.token, self.tenant_id = url, token, tenant_id
        self.codec_path, self.timeout_s = codec_path, timeout_s


class Plan:
    """The steps of an apply, in order: secrets, ChirpStack (one batch), bundles, gateway files."""

    def __init__(self, site):
        self.site, self.secrets, self.bundles, self.gateways, self.chirp = site, [], [], [], None
        self.chirp_changes = []

    @property
    def changes(self):
        return [s.change for s in self.secrets + self.chirp_changes + self.bundles + self.gateways]

    def counts(self):
        out = {"create": 0, "update": 0, "unchanged": 0}
        for c in self.changes:
            if c.action in out:
                out[c.action] += 1
        return out


def _file_step(area, kind, name, path, content, mode=PRIVATE_FILE):
    """A file whose text ``content()`` gives (None: not known until earlier steps have run)."""
    path = pathlib.Path(path)
    try:
        have = read_secret_text(path) if path.exists() or path.is_symlink() else None
    except (OSError, UnicodeDecodeError):
        have = ""
    want = content()
    problem = file_mode_problem(path, mode)
    if have is None:
        action, detail = "create", ""
    elif want is not None and want == have and not problem:
        return Step(Change(area, kind, name, "unchanged"))
    else:
        action, detail = "update", problem if want == have else ""

    def run():
        text = content()
        if text is None:
            raise ProvisionError("%s: its contents are not known yet (an earlier step failed?)" % path)
        if mode == PRIVATE_FILE:
            ensure_private_dir(path.parent)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text.encode(), mode)
        sync_dir(path.parent)

    return Step(Change(area, kind, name, action, detail), run)


def _secrets_steps(site):
    steps = []
    for d in site.inv.devices:
        existing = site.read_device_secrets(d)
        wanted, new = site.wanted_secrets(d, existing)
        text = json.dumps(wanted, indent=1, sort_keys=True) + "\n"
        path = site.device_secrets_path(d.id)
        problem = file_mode_problem(path) if existing is not None else None
        appkey = wanted.get("lorawan_app_key_hex")
        appkey_path = site.appkey_path(d.id)
        try:
            appkey_ok = appkey is None or (read_secret_text(appkey_path) == appkey + "\n"
                                           and not file_mode_problem(appkey_path))
        except (OSError, UnicodeDecodeError):
            appkey_ok = False
        if existing is not None and not new and not problem and appkey_ok:
            steps.append(Step(Change("secrets", "node", d.id, "unchanged")))
            continue
        detail = ("new " + ", ".join(new)) if new else problem or "rewrites %s" % appkey_path.name

        def run(path=path, text=text, appkey=appkey, appkey_path=appkey_path):
            ensure_private_dir(site.secrets)
            ensure_private_dir(path.parent)
            write_atomic(path, text.encode())
            if appkey:
                ensure_private_dir(appkey_path.parent)
                write_atomic(appkey_path, (appkey + "\n").encode())

        action = "create" if existing is None else "update"
        steps.append(Step(Change("secrets", "node", d.id, action, detail), run))
    return steps


def _gateway_steps(site):
    inv, steps = site.inv, []
    for gw in inv.gateways:
        gdir = site.secrets / ("gateway-" + gw.id)
        for name in gateway_passwords(inv, gw):
            path = gdir / name
            try:
                have = read_secret_text(path)
            except (OSError, UnicodeDecodeError) as e:
                raise ProvisionError("%s: cannot read it (%s): delete it to make a new password" % (path, e))
            if have is not None and password_problem(have.rstrip("\n")):
                raise ProvisionError("%s %s: delete it to make a new one (then give it to the broker's "
                                     "operator again)" % (path, password_problem(have.rstrip("\n"))))
            text = have or new_password() + "\n"  # made once, at plan time, written by apply
            steps.append(_file_step("gateway", "password", "%s %s" % (gw.id, name), path, lambda t=text: t))
        if any(d.link in ("serial", "mqtt") for d in inv.devices_of(gw.id)):
            steps.append(_file_step("gateway", "device keys", "%s device-keys.toml" % gw.id,
                                    gdir / "device-keys.toml", lambda gw=gw: device_keys_toml(
                                        inv, gw, site.secret_values(gw, "device_key_hex"))))
        if "site-broker.password" in gateway_passwords(inv, gw):
            steps.append(_file_step("gateway", "broker users", "%s mosquitto-passwd.txt" % gw.id,
                                    gdir / "mosquitto-passwd.txt", lambda gw=gw, g=gdir: mosquitto_passwd(
                                        inv, gw, _strip(read_secret_text(g / "site-broker.password")),
                                        site.secret_values(gw, "mqtt_password"))))
        if not inv.devices_of(gw.id):
            steps.append(Step(Change("gateway", "config", "%s gateway.toml" % gw.id, "skipped",
                                     "it serves no device in the inventory")))
            continue

        def config_text(gw=gw):
            if site.app_pending and any(d.link == "lorawan" for d in inv.devices_of(gw.id)):
                return None  # it names the ChirpStack application, which apply is about to make
            return gateway_toml(inv, gw, site.state.section("chirpstack").get("application_id") or "+")

        steps.append(_file_step("gateway", "config", "%s gateway.toml" % gw.id,
                                site.dir / "gateways" / gw.id / "gateway.toml", config_text, 0o644))
    return steps


def _strip(text):
    return None if text is None else text[:-1] if text.endswith("\n") else text


def plan(inv, site_dir, target=None, hardware=fb.HARDWARE, progress=None):
    """What ``apply`` would change, without writing anything. ``target``: a
    ``ChirpStackTarget``, or None to leave ChirpStack out. Raises ``ProvisionError``
    (``ChirpStackError`` for ChirpStack)."""
    say = progress or (lambda msg: None)
    site = Site(inv, site_dir, hardware)
    if site.state.data.get("site") not in (None, inv.site_id):
        raise ProvisionError("%s holds site %s, not %s: give this site its own --out directory"
                             % (site.dir, site.state.data["site"], inv.site_id), EXIT_INVALID)
    p = Plan(site)
    for path in [site.secrets] + [site.secrets / sub for sub in ("devices", "lorawan")] + [
            site.secrets / ("gateway-" + g.id) for g in inv.gateways]:
        if dir_mode_problem(path):
            p.secrets.append(Step(Change("secrets", "directory", str(path.relative_to(site.dir)), "update",
                                         dir_mode_problem(path)), lambda path=path: ensure_private_dir(path)))
    p.secrets += _secrets_steps(site)
    if target is not None and (any(d.link == "lorawan" for d in inv.devices)
                               or any(g.lorawan_gateway_eui for g in inv.gateways)):
        p.chirp = _chirp_plan(site, target, say)
        p.chirp_changes = [Step(Change("chirpstack", *c)) for c in pcs.changes(p.chirp[1], p.chirp[2],
                                                                                 site.app_key_of)]
    elif target is not None:
        p.chirp_changes = [Step(Change("chirpstack", "site", inv.site_id, "skipped",
                                       "no LoRaWAN device or gateway EUI in the inventory"))]
    say("checking %d bundles" % len(inv.devices))
    digest = source_digest()
    for d in inv.devices:
        raw, valid = node_config(site, d)
        action, detail = bundle_change(site, d, digest, config_key(valid))
        p.bundles.append(Step(Change("bundle", "node", d.id, action, detail),
                              node=None if action == "unchanged" else (d, raw, config_key(valid), digest)))
    p.gateways = _gateway_steps(site)
    return p


def read_codec(path):
    """The JavaScript payload codec ChirpStack runs (``decodeUplink``), as text."""
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ProvisionError("the payload codec %s is missing or unreadable (%s): ChirpStack's device profiles "
                             "need it; it is part of the source tree (protocol/js/), or give one with --codec"
                             % (path, getattr(e, "strerror", None) or e))
    if "decodeUplink" not in text:
        raise ProvisionError("%s has no decodeUplink function: not a ChirpStack v4 codec" % path)
    return text


def _chirp_plan(site, target, say):
    inv = site.inv
    codec = read_codec(target.codec_path) if any(d.link == "lorawan" for d in inv.devices) else ""
    client = pcs.Client(target.url, target.token, target.timeout_s)
    try:
        want = pcs.wanted(inv, target.tenant_id, site.profiles, codec)
        say("reading ChirpStack at %s" % client.target)
        s = pcs.survey(client, target.tenant_id, want)
    except BaseException:
        client.close()
        raise
    if s.app is not None:
        site.state.section("chirpstack")["application_id"] = s.app.id
    site.app_pending = s.app is None
    return client, want, s


@contextlib.contextmanager
def _locked(site_dir):
    fd = os.open(pathlib.Path(site_dir) / ".provision.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProvisionError("another `civicedge provision apply` is working on %s; wait for it" % site_dir)
        yield
    finally:
        os.close(fd)


def apply(p, progress=None):
    """Make the changes of plan ``p`` (from ``plan``); returns ``p.counts()``. Raises
    ``ProvisionError``/``ChirpStackError``; whatever was done is kept, and a rerun finishes."""
    site, say = p.site, progress or (lambda msg: None)
    if not site.dir.exists():
        site.dir.mkdir(parents=True, mode=PRIVATE_DIR)
    with _locked(site.dir):
        try:
            _apply_locked(p, site, say)
        finally:
            site.state.save()  # whatever was done, recorded (an unrecorded bundle is only rebuilt)
    return p.counts()


def _apply_locked(p, site, say):
    for stale in site.dir.glob(".template-*"):  # left by an apply that was killed
        shutil.rmtree(stale, ignore_errors=True)
    todo = [s for s in p.secrets if s.run]
    for n, step in enumerate(todo, 1):
        step.run()
        if n % 50 == 0 or n == len(todo):
            say("secrets: %d/%d" % (n, len(todo)))
    for sub in ("devices", "lorawan"):  # the renames are durable before any key leaves this machine
        if todo and (site.secrets / sub).exists():
            sync_dir(site.secrets / sub)
    site.state.data["site"] = site.inv.site_id
    site.state.save()
    if p.chirp:
        client, want, s = p.chirp
        cs = site.state.section("chirpstack")
        cs.update(url=client.target, tenant_id=want[0].tenant_id)

        def checkpoint(section, value):
            if isinstance(value, dict):
                cs.setdefault(section, {}).update(value)
            else:
                cs[section] = value
            site.state.save()

        pcs.apply(client, want, s, site.app_key_of, checkpoint, say)
        site.app_pending = False
    todo = [s for s in p.bundles if s.node]
    if todo:
        (site.dir / "bundles").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".template-", dir=site.dir) as work:
            say("building the firmware once for %d bundles" % len(todo))
            template = Template(site, todo[0].node[0], work)
            for n, step in enumerate(todo, 1):
                d, raw, key, digest = step.node
                manifest = template.write(d, raw, site.dir / "bundles" / d.id)
                site.state.section("bundles")[d.id] = {"source": digest, "config": key,
                                                      "firmware_version": manifest["firmware_version"]}
                if n % BATCH == 0 or n == len(todo):
                    site.state.save()
                    say("bundles: %d/%d" % (n, len(todo)))
    for step in p.gateways:
        if step.run:
            step.run()
            site.state.save()
