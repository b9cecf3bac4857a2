"""A site's LoRaWAN objects in ChirpStack v4, through its gRPC API (``chirpstack-api``).

What a site needs there: one application (``civicedge-<site>``); one device profile per
deployment profile its LoRaWAN devices use (``civicedge-<profile>``: EU868, LoRaWAN 1.0.3,
regional parameters 1.0.3revA, OTAA, the project's JavaScript codec); each LoRaWAN device
with its OTAA keys (LoRaWAN 1.0.x: the AppKey goes in ``nwk_key``); each gateway that has a
LoRa concentrator EUI. ``skip_fcnt_check`` is always false (a replay risk, REFERENCE.md §6.3).

Theory of operation. ``survey`` reads what ChirpStack holds — it never trusts a local record
of what was done — and ``changes`` compares it with what the inventory wants, object by object
(create / update / unchanged). Objects are found by List (applications and device profiles by
name, devices by the application's device list, gateways by the tenant's gateway list), not by
Get: with a tenant API key ChirpStack answers a Get of a missing object UNAUTHENTICATED, not
NOT_FOUND (``api/auth/validator.rs``). An update starts from the object ChirpStack returned and
sets only our fields, so tags, variables and settings an operator added stay. Nothing is ever
deleted: a device in the application that the inventory does not list is reported and left.
``apply`` makes the changes in dependency order (application, profiles, gateways, devices,
keys), the many small ones pipelined as gRPC futures at most ``WINDOW`` at a time, and calls
``checkpoint`` after each batch; a failure stops it after the calls in flight, and a rerun
surveys again and finishes what is left. Keys are read from the local secrets (written
before any key is sent) and never appear in a message.
"""

import copy
import os
import stat
import urllib.parse

import grpc
from chirpstack_api import api, common

# LoRaWAN 1.0.3 with Regional Parameters 1.0.3revA (REFERENCE.md §6.2's EU868 source). The
# modems' AT firmware is 1.0.3 or, RAK3172 RUI3 since v4.2.0, 1.0.4 (RAK release notes). The
# join difference (1.0.4's DevNonce counter) does not matter to ChirpStack v4, which refuses a
# DevNonce already used whatever the version (chirpstack/src/storage/device_keys.rs,
# validate_incr_join_and_store_dev_nonce), so 1.0.3 serves either firmware.
MAC_VERSION = common.MacVersion.LORAWAN_1_0_3
REG_PARAMS = common.RegParamsRevision.A
ZERO_KEY = "0" * 32  # app_key / gen_app_key of a 1.0.x device: unused, but ChirpStack parses them
WINDOW, PAGE, STATS_INTERVAL_S, DOWNLINK_PRIORITY = 16, 100, 30, 10
EXIT_FAILED, EXIT_AUTH, EXIT_UNREACHABLE = 1, 3, 4


class ChirpStackError(Exception):
    """ChirpStack refused or could not be reached; ``exit_code`` for the command."""

    def __init__(self, message, exit_code=EXIT_FAILED):
        Exception.__init__(self, message)
        self.exit_code = exit_code


def parse_url(url):
    """("host:port", tls) from ``http://host:8080``, ``https://host`` or ``host:8080``."""
    parsed = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/"):
        raise ChirpStackError("--chirpstack %r: give the API's address, e.g. http://chirpstack.example:8080 "
                              "(https:// for TLS)" % url, 2)
    tls = parsed.scheme == "https"
    try:
        port = parsed.port or (443 if tls else 8080)
    except ValueError:
        raise ChirpStackError("--chirpstack %r: the port is not a number 1-65535" % url, 2)
    host = "[%s]" % parsed.hostname if ":" in parsed.hostname else parsed.hostname
    return "%s:%d" % (host, port), tls


def read_token(path):
    """The API token in file ``path``: one line, the file 0600 (a token is a password)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 8192:
            raise ChirpStackError("--token-file %s: not a small regular file" % path, 2)
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ChirpStackError("--token-file %s is mode %04o: group or others can read the API token; "
                                  "chmod 600 %s" % (path, stat.S_IMODE(st.st_mode), path), 2)
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ChirpStackError("--token-file %s: cannot read it (%s)" % (path, getattr(e, "strerror", None) or e), 2)
    if not token or not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ChirpStackError("--token-file %s must hold the API token alone, on one line" % path, 2)
    return token


def is_duplicate(e):
    """ChirpStack v4 reports a duplicate as INTERNAL (a unique violation); v3 as ALREADY_EXISTS."""
    return e.code() == grpc.StatusCode.ALREADY_EXISTS or (
        e.code() == grpc.StatusCode.INTERNAL and "duplicate key" in (e.details() or ""))


class Client:
    """A channel to ChirpStack's API with the token as per-call metadata."""

    def __init__(self, url, token, timeout_s=30.0):
        self.target, tls = parse_url(url)
        creds = grpc.ssl_channel_credentials() if tls else None
        self.channel = grpc.secure_channel(self.target, creds) if tls else grpc.insecure_channel(self.target)
        self.metadata = (("authorization", "Bearer " + token),)
        self.timeout_s, self.done = timeout_s, 0
        self.apps = api.ApplicationServiceStub(self.channel)
        self.profiles = api.DeviceProfileServiceStub(self.channel)
        self.devices = api.DeviceServiceStub(self.channel)
        self.gateways = api.GatewayServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def error(self, e, what):
        code, details = e.code(), (e.details() or "").strip()
        said = "%s%s" % (code.name, ": " + details if details else "")
        progress = ("; %d change(s) were made before it: run apply again to finish (it resumes)" % self.done
                    if self.done else "; nothing was changed in ChirpStack")
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return ChirpStackError(
                "ChirpStack at %s refused the API token while %s (%s): the --token-file must hold an API key of "
                "the tenant (ChirpStack: Tenant > API keys, not read-only) or an admin API key%s"
                % (self.target, what, said, progress), EXIT_AUTH)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return ChirpStackError("cannot reach ChirpStack at %s while %s (%s): is it running, and is the "
                                   "address right?%s" % (self.target, what, said, progress), EXIT_UNREACHABLE)
        return ChirpStackError("ChirpStack at %s answered %s while %s%s" % (self.target, said, what, progress))

    def call(self, method, request, what):
        try:
            return method(request, metadata=self.metadata, timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise self.error(e, what)

    def many(self, jobs, done=None, missing_ok=False):
        """Run ``jobs`` [(method, request, what, key)] as futures, ``WINDOW`` in flight; returns
        {key: reply} (None for NOT_FOUND when ``missing_ok``). ``done(keys)`` after each batch.
        The first failure stops new calls, lets those in flight finish, and is raised."""
        out, jobs, failure = {}, list(jobs), None
        for start in range(0, len(jobs), WINDOW):
            batch = [(job, job[0].future(job[1], metadata=self.metadata, timeout=self.timeout_s))
                     for job in jobs[start:start + WINDOW]]
            finished = []
            for (method, request, what, key), fut in batch:
                try:
                    out[key] = fut.result()
                    finished.append(key)
                except grpc.RpcError as e:
                    if missing_ok and e.code() == grpc.StatusCode.NOT_FOUND:
                        out[key] = None
                    elif failure is None:
                        failure = (e, what, key)
            if done and finished:
                done(finished)
            if failure:
                raise self.error(failure[0], failure[1])
        return out

    def list_all(self, method, request, what):
        items = []
        while True:
            request.limit, request.offset = PAGE, len(items)
            reply = self.call(method, request, what)
            items += list(reply.result)
            if not reply.result or len(items) >= reply.total_count:
                return items


# -- what the site wants ---------------------------------------------------------------------
def app_name(inv):
    return "civicedge-" + inv.site_id


def profile_name(profile):
    return "civicedge-" + profile


def uplink_interval_s(profile):
    """Seconds between a node's uplinks: every wake, or every (max_delay_s // interval_s + 1)-th
    with batching (docs/node-config.md, link.lorawan.max_delay_s)."""
    interval = profile["profile"]["interval_s"]
    max_delay = profile.get("link", {}).get("lorawan", {}).get("max_delay_s", 0)
    return interval * (max_delay // interval + 1)


def wanted(inv, tenant_id, profiles, codec):
    """The site's objects as ChirpStack messages (ids of objects ChirpStack names left empty).
    ``profiles``: {deployment profile name: profile data}; ``codec``: the JavaScript text."""
    lora = [d for d in inv.devices if d.link == "lorawan"]
    about = "civicedge site %s%s" % (inv.site_id, ": " + inv.site_name if inv.site_name else "")
    app = api.Application(name=app_name(inv), tenant_id=tenant_id, tags={"civicedge_site": inv.site_id},
                          description=about)
    dps = {}
    for name in sorted({d.profile for d in lora}):
        prof = profiles[name]
        dps[name] = api.DeviceProfile(
            name=profile_name(name), tenant_id=tenant_id, description=prof["profile"]["title"],
            region=common.Region.EU868, mac_version=MAC_VERSION, reg_params_revision=REG_PARAMS,
            adr_algorithm_id="default", payload_codec_runtime=api.CodecRuntime.JS, payload_codec_script=codec,
            flush_queue_on_activate=True, uplink_interval=uplink_interval_s(prof), device_status_req_interval=1,
            supports_otaa=True, tags={"civicedge_profile": name})
    gws = {}
    for g in inv.gateways:
        if g.lorawan_gateway_eui:
            msg = api.Gateway(gateway_id=g.lorawan_gateway_eui, name="%s-%s" % (inv.site_id, g.id),
                              description=g.location.describe() if g.location else "", tenant_id=tenant_id,
                              stats_interval=STATS_INTERVAL_S, downlink_priority=DOWNLINK_PRIORITY,
                              tags={"civicedge_site": inv.site_id, "civicedge_gateway": g.id})
            if g.location and g.location.lat is not None:
                msg.location.latitude, msg.location.longitude = g.location.lat, g.location.lon
            gws[g.lorawan_gateway_eui] = msg
    devs = {}
    for d in lora:
        tags = dict(d.attributes, civicedge_site=inv.site_id, civicedge_device=d.id, civicedge_profile=d.profile,
                    civicedge_board=d.board, civicedge_gateway=d.gateway)
        devs[d.dev_eui] = (d, api.Device(dev_eui=d.dev_eui, name=d.id, description=d.location.describe(),
                                         skip_fcnt_check=False, join_eui=inv.join_eui, tags=tags))
    return app, dps, gws, devs


# -- merging ours onto what ChirpStack has -------------------------------------------------------
_FIELDS = {
    "application": ("name", "description"),
    "profile": ("name", "description", "region", "mac_version", "reg_params_revision", "adr_algorithm_id",
                "payload_codec_runtime", "payload_codec_script", "flush_queue_on_activate", "uplink_interval",
                "device_status_req_interval", "supports_otaa"),
    "gateway": ("name", "description", "stats_interval"),
    "device": ("name", "description", "skip_fcnt_check", "join_eui", "application_id", "device_profile_id"),
}


def merged(kind, actual, ours):
    """(message to send, [fields that differ]): ``actual`` with our fields and tags set on it."""
    out = copy.deepcopy(actual) if actual is not None else copy.deepcopy(ours)
    differ = []
    for name in _FIELDS[kind]:
        value = getattr(ours, name)
        if kind == "device" and name.endswith("_id") and not value:
            continue  # the application or profile is still to be made: its id comes later
        if getattr(out, name) != value:
            setattr(out, name, value)
            differ.append(name)
    if any(out.tags.get(k) != v for k, v in ours.tags.items()):
        out.tags.update(ours.tags)  # ours set, an operator's own tags kept
        differ.append("tags")
    if kind == "gateway":
        if ours.HasField("location") and (out.location.latitude, out.location.longitude) != (
                ours.location.latitude, ours.location.longitude):
            out.location.latitude, out.location.longitude = ours.location.latitude, ours.location.longitude
            differ.append("location")
        if out.downlink_priority <= 0:
            out.downlink_priority = DOWNLINK_PRIORITY
    return out, differ


# -- survey, compare, apply ------------------------------------------------------------------------
class Survey:
    """What ChirpStack holds for the site: actual messages, None where missing."""

    def __init__(self):
        self.app, self.profiles, self.gateways, self.devices, self.keys, self.extra = None, {}, {}, {}, {}, []


def _by_name(items, name, what):
    found = [i for i in items if i.name == name]
    if len(found) > 1:
        raise ChirpStackError("the tenant has %d %ss named %s (ids %s): keep one, rename or delete the others, "
                              "then run again" % (len(found), what, name, ", ".join(i.id for i in found)))
    return found[0].id if found else None


def survey(client, tenant_id, want):
    """Read what ChirpStack holds for ``want`` (from ``wanted``); raises ``ChirpStackError``."""
    app, dps, gws, devs = want
    s = Survey()
    apps = client.list_all(client.apps.List, api.ListApplicationsRequest(tenant_id=tenant_id, search=app.name),
                           "listing the tenant's applications")
    app_id = _by_name(apps, app.name, "application")
    if app_id:
        s.app = client.call(client.apps.Get, api.GetApplicationRequest(id=app_id),
                            "reading the application").application
    if dps:
        listed = client.list_all(client.profiles.List, api.ListDeviceProfilesRequest(tenant_id=tenant_id,
                                 search="civicedge-"), "listing device profiles")
        ids = {name: _by_name(listed, ours.name, "device profile") for name, ours in dps.items()}
        got = client.many([(client.profiles.Get, api.GetDeviceProfileRequest(id=i), "reading device profile " + n, n)
                           for n, i in ids.items() if i])
        s.profiles = {n: got[n].device_profile if n in got else None for n in dps}
    if gws:
        listed = {g.gateway_id for g in client.list_all(client.gateways.List, api.ListGatewaysRequest(
            tenant_id=tenant_id), "listing the tenant's gateways")}
        got = client.many([(client.gateways.Get, api.GetGatewayRequest(gateway_id=e), "reading gateway " + e, e)
                           for e in gws if e in listed])
        s.gateways = {e: got[e].gateway if e in got else None for e in gws}
    s.devices = {e: None for e in devs}
    s.keys = {e: None for e in devs}
    if s.app:
        listed = client.list_all(client.devices.List, api.ListDevicesRequest(application_id=s.app.id),
                                 "listing the application's devices")
        present = [i.dev_eui for i in listed if i.dev_eui in devs]
        s.extra = sorted((i.name, i.dev_eui) for i in listed if i.dev_eui not in devs)
        got = client.many([(client.devices.Get, api.GetDeviceRequest(dev_eui=e), "reading device " + e, e)
                           for e in present])
        keys = client.many([(client.devices.GetKeys, api.GetDeviceKeysRequest(dev_eui=e), "reading keys of " + e, e)
                            for e in present], missing_ok=True)
        s.devices.update({e: got[e].device for e in present})
        s.keys.update({e: keys[e] and keys[e].device_keys for e in present})
    return s


def _with_ids(ours, app_id, profile_id):
    msg = copy.deepcopy(ours)
    msg.application_id, msg.device_profile_id = app_id or "", profile_id or ""
    return msg


def changes(want, s, app_key_of):
    """[(kind, name, action, detail)] for every object; ``app_key_of(device_id)`` is the local
    AppKey hex, or None if it is still to be generated."""
    app, dps, gws, devs = want
    out = [("application", app.name, "create" if s.app is None else _action(merged("application", s.app, app)[1]),
            _detail(s.app, merged("application", s.app, app)[1]))]
    for name, ours in dps.items():
        differ = merged("profile", s.profiles[name], ours)[1]
        out.append(("device-profile", ours.name, "create" if s.profiles[name] is None else _action(differ),
                    _detail(s.profiles[name], differ)))
    for eui, ours in gws.items():
        differ = merged("gateway", s.gateways[eui], ours)[1]
        out.append(("gateway", "%s (%s)" % (ours.name, eui), "create" if s.gateways[eui] is None else _action(differ),
                    _detail(s.gateways[eui], differ)))
    profile_ids = {n: p.id for n, p in s.profiles.items() if p is not None}
    for eui, (entry, ours) in devs.items():
        actual = s.devices[eui]
        differ = merged("device", actual, _with_ids(ours, s.app and s.app.id, profile_ids.get(entry.profile)))[1]
        if actual is not None and entry.profile not in profile_ids and "device_profile_id" not in differ:
            differ.append("device_profile_id")
        out.append(("device", "%s (%s)" % (entry.id, eui), "create" if actual is None else _action(differ),
                    _detail(actual, differ)))
        key, keys = app_key_of(entry.id), s.keys[eui]
        if keys is None:
            out.append(("device-keys", entry.id, "create", "OTAA AppKey (nwk_key) from the local secrets"))
        elif key is None or keys.nwk_key.lower() != key.lower():
            out.append(("device-keys", entry.id, "update", "the AppKey differs from the local secrets: ChirpStack "
                        "gets the local one, so flash the node with its bundle"))
        else:
            out.append(("device-keys", entry.id, "unchanged", ""))
    out += [("device", "%s (%s)" % (name, eui), "not in inventory", "left as it is") for name, eui in s.extra]
    return out


def _action(differ):
    return "update" if differ else "unchanged"


def _detail(actual, differ):
    return "" if actual is None or not differ else "changes " + ", ".join(differ)


def apply(client, want, s, app_key_of, checkpoint, progress=None):
    """Make ``changes(want, s, ...)`` in ChirpStack; ``checkpoint(section, {name: value})``
    records each batch done. Returns {"application_id", "device_profiles"}; raises
    ``ChirpStackError`` (a rerun resumes)."""
    app, dps, gws, devs = want
    say = progress or (lambda msg: None)
    if s.app is None:
        app_id = client.call(client.apps.Create, api.CreateApplicationRequest(application=app),
                             "creating application " + app.name).id
        client.done += 1
    else:
        app_id, (msg, differ) = s.app.id, merged("application", s.app, app)
        if differ:
            client.call(client.apps.Update, api.UpdateApplicationRequest(application=msg), "updating the application")
            client.done += 1
    checkpoint("application_id", app_id)
    profile_ids = {}
    for name, ours in dps.items():
        actual = s.profiles[name]
        if actual is None:
            profile_ids[name] = client.call(client.profiles.Create, api.CreateDeviceProfileRequest(
                device_profile=ours), "creating device profile " + ours.name).id
            client.done += 1
        else:
            profile_ids[name], (msg, differ) = actual.id, merged("profile", actual, ours)
            if differ:
                client.call(client.profiles.Update, api.UpdateDeviceProfileRequest(device_profile=msg),
                            "updating device profile " + ours.name)
                client.done += 1
        checkpoint("device_profiles", {name: profile_ids[name]})
    jobs = []
    for eui, ours in gws.items():
        actual = s.gateways[eui]
        msg, differ = merged("gateway", actual, ours)
        if actual is None:
            jobs.append((client.gateways.Create, api.CreateGatewayRequest(gateway=msg), "creating gateway " + eui, eui))
        elif differ:
            jobs.append((client.gateways.Update, api.UpdateGatewayRequest(gateway=msg), "updating gateway " + eui, eui))
    _run(client, jobs, checkpoint, "gateways", say)
    jobs = []
    for eui, (entry, ours) in devs.items():
        actual = s.devices[eui]
        msg, differ = merged("device", actual, _with_ids(ours, app_id, profile_ids[entry.profile]))
        if actual is None:
            jobs.append((client.devices.Create, api.CreateDeviceRequest(device=msg), "creating device %s (%s)"
                         % (entry.id, eui), eui))
        elif differ:
            jobs.append((client.devices.Update, api.UpdateDeviceRequest(device=msg), "updating device %s (%s)"
                         % (entry.id, eui), eui))
    _run(client, jobs, checkpoint, "devices", say)
    jobs = []
    for eui, (entry, ours) in devs.items():
        key, actual = app_key_of(entry.id), s.keys[eui]
        if key is None:
            raise ChirpStackError("no local AppKey for %s: the secrets step must run first" % entry.id)
        if actual is None:
            keys = api.DeviceKeys(dev_eui=eui, nwk_key=key, app_key=ZERO_KEY, gen_app_key=ZERO_KEY)
            jobs.append((client.devices.CreateKeys, api.CreateDeviceKeysRequest(device_keys=keys),
                         "creating the keys of " + entry.id, eui))
        elif actual.nwk_key.lower() != key.lower():
            keys = copy.deepcopy(actual)
            keys.nwk_key = key
            jobs.append((client.devices.UpdateKeys, api.UpdateDeviceKeysRequest(device_keys=keys),
                         "updating the keys of " + entry.id, eui))
    _run(client, jobs, checkpoint, "device_keys", say)
    return {"application_id": app_id, "device_profiles": profile_ids}


def _run(client, jobs, checkpoint, section, say):
    count = [0]

    def done(keys):
        client.done += len(keys)
        count[0] += len(keys)
        checkpoint(section, {k: True for k in keys})
        say("chirpstack: %s %d/%d" % (section.replace("_", " "), count[0], len(jobs)))

    try:
        client.many(jobs, done)
    except ChirpStackError as e:
        if "duplicate key" in str(e) or "ALREADY_EXISTS" in str(e):
            raise ChirpStackError("%s. A DevEUI or gateway id of this site is already registered in ChirpStack "
                                  "outside the site's application (another application or tenant): move or delete "
                                  "it there, then run again" % e, e.exit_code)
        raise
