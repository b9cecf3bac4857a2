"""``civicedge provision apply`` for a 200-device site against the ChirpStack API stand-in over
real gRPC: every object made once, a second apply changes nothing, a failure half-way resumes
to exactly the expected objects, a wrong token or an unreachable server stops with a clear
message and exit status, and no key or password ever reaches the output or the logs."""

import argparse
import contextlib
import io
import json
import logging
import os
import socket

import pytest
from chirpstack_api import api, common

from civicedge import cmd_provision
from civicedge import firmware_build as fb
from gateway import config as gateway_config
from simulators.chirpstack_api import ChirpStackAPI

N_DEVICES = 200
CODEC = "// test codec\nfunction decodeUplink(input) { return { data: { bytes: input.bytes.length } }; }\n"


def inventory_text(n=N_DEVICES):
    """A site of ``n`` nodes: 6/10 legionella outlets and 2/10 bins on LoRaWAN, 1/10 classrooms on
    serial, 1/10 on WiFi; two gateways with LoRa concentrators."""
    out = ['inventory_version = 1', '[site]', 'id = "big"', 'name = "Big Site"', '',
           '[[gateways]]', 'id = "gw1"', 'location = { room = "Plant room", lat = 51.5, lon = -0.1 }',
           'lorawan_gateway_eui = "0016c001f1000001"', 'host = "big-gw1.local"', 'wifi_ssid = "BIG"',
           'wifi_password_file = "wifi.password"', 'serial_ports = ["/dev/ttyUSB0"]',
           'upstream_host = "mqtt.example.org"', '',
           '[[gateways]]', 'id = "gw2"', 'location = { street = "High Street" }',
           'lorawan_gateway_eui = "0016c001f1000002"', 'upstream_host = "mqtt.example.org"', '']
    for i in range(n):
        kind = i % 10
        out += ['[[devices]]', 'id = "big-d%03d"' % i]
        if kind < 6:
            out += ['profile = "legionella-outlet"', 'gateway = "gw%d"' % (1 + i % 2),
                    'dev_eui = "70b3d57ed%07x"' % i, 'location = { room = "Room %d", lat = 51.5, lon = -0.1 }' % i,
                    'attributes = { outlet = "%s" }' % ("hot" if i % 2 else "cold")]
        elif kind < 8:
            out += ['profile = "bin-level"', 'gateway = "gw2"', 'dev_eui = "2cf7f120%08x"' % i,
                    'location = { street = "Bin %d" }' % i,
                    'settings = { "sensors.sonar.empty_cm" = %d.0 }' % (100 + i % 50)]
        else:
            out += ['profile = "classroom-co2"', 'gateway = "gw1"', 'link = "%s"' % ("serial" if kind == 8 else "mqtt"),
                    'location = { room = "Class %d" }' % i]
        out.append('')
    return "\n".join(out)


class Site:
    def __init__(self, root):
        self.root = root
        self.inventory = root / "inventory.toml"
        self.inventory.write_text(inventory_text())
        (root / "wifi.password").write_text("Big-Site-WiFi-2024\n")
        self.codec = root / "codec.js"
        self.codec.write_text(CODEC)
        self.out = root / "site"
        self.outputs = []

    def token_file(self, token, name="token"):
        path = self.root / name
        path.write_text(token + "\n")
        path.chmod(0o600)
        return path

    def run(self, command, cs=None, token=None, url=None, extra=()):
        args = ["provision", command, "--inventory", str(self.inventory), "--out", str(self.out),
                "--codec", str(self.codec)] + list(extra)
        if cs is not None:
            args += ["--chirpstack", url or cs.url, "--token-file", str(self.token_file(token or cs.token)),
                     "--tenant-id", cs.tenant_id]
        parser = argparse.ArgumentParser()
        cmd_provision.register(parser.add_subparsers())
        ns = parser.parse_args(args)
        out, err, log = io.StringIO(), io.StringIO(), io.StringIO()
        handler = logging.StreamHandler(log)
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = ns.func(ns)
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
        self.outputs.append(out.getvalue() + err.getvalue() + log.getvalue())
        return code, out.getvalue(), err.getvalue()

    def secrets(self):
        """Every key and password provisioning wrote (hex lowercase)."""
        found = []
        for path in (self.out / "secrets").rglob("*"):
            if not path.is_file():
                continue
            text = path.read_text()
            if path.suffix == ".json":
                found += [v for v in json.loads(text).values() if v]
            elif path.name in ("device-keys.toml", "mosquitto-passwd.txt"):
                continue  # the same values as the nodes' files
            else:
                found.append(text.strip())
        return found

    def node_secrets(self, device_id):
        return json.loads((self.out / "secrets" / "devices" / (device_id + ".json")).read_text())


def lorawan_devices():
    return [("big-d%03d" % i, ("70b3d57ed%07x" % i) if i % 10 < 6 else ("2cf7f120%08x" % i))
            for i in range(N_DEVICES) if i % 10 < 8]


def expected_mutations():
    return 1 + 2 + 2 + 2 * len(lorawan_devices())  # application, profiles, gateways, devices + their keys


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = Site(tmp_path_factory.mktemp("provision"))
    with ChirpStackAPI() as cs:
        s.first = s.run("apply", cs)
        s.cs = cs
        yield s


def assert_complete(cs, site):
    """ChirpStack holds exactly the site's objects, each once, with the local keys."""
    devices = lorawan_devices()
    assert len(cs.applications) == 1
    (app,) = cs.applications.values()
    assert app.name == "civicedge-big" and app.tenant_id == cs.tenant_id
    assert sorted(p.name for p in cs.device_profiles.values()) == ["civicedge-bin-level", "civicedge-legionella-outlet"]
    assert sorted(cs.gateways) == ["0016c001f1000001", "0016c001f1000002"]
    assert sorted(cs.devices) == sorted(eui for _, eui in devices)
    assert sorted(cs.device_keys) == sorted(cs.devices)
    for device_id, eui in devices:
        d, keys = cs.devices[eui], cs.device_keys[eui]
        assert d.name == device_id and d.application_id == app.id and not d.skip_fcnt_check
        assert keys.nwk_key == site.node_secrets(device_id)["lorawan_app_key_hex"]
        assert keys.app_key == "0" * 32


def test_first_apply_provisions_200_devices_over_grpc(site):
    code, out, err = site.first
    assert code == 0, err
    assert "applied: " in out and "0 updated" in out
    assert site.cs.mutations == expected_mutations()
    assert_complete(site.cs, site)


def test_device_profiles_are_eu868_otaa_lorawan_103_with_the_codec(site):
    profiles = {p.name: p for p in site.cs.device_profiles.values()}
    legionella = profiles["civicedge-legionella-outlet"]
    for p in profiles.values():
        assert p.region == common.Region.EU868 and p.mac_version == common.MacVersion.LORAWAN_1_0_3
        assert p.reg_params_revision == common.RegParamsRevision.A and p.supports_otaa
        assert p.payload_codec_runtime == api.CodecRuntime.JS and p.payload_codec_script == CODEC
    assert legionella.uplink_interval == 900 * 5  # 15-min wakes, every 5th sends (max_delay_s 3600)
    device = site.cs.devices["70b3d57ed0000001"]
    assert device.device_profile_id == legionella.id
    assert device.tags["outlet"] == "hot" and device.tags["civicedge_device"] == "big-d001"
    assert device.description == "Room 1"


def test_second_apply_and_plan_change_nothing(site):
    before = site.cs.mutations
    code, out, err = site.run("apply", site.cs)
    assert code == 0, err
    assert "applied: nothing to do" in out
    assert site.cs.mutations == before
    code, out, err = site.run("plan", site.cs, extra=["--json"])
    report = json.loads(out)
    assert code == 0 and report["counts"]["create"] == 0 and report["counts"]["update"] == 0
    # each node's secrets and bundle, each ChirpStack object, the gateways' 5 + 4 files
    assert report["counts"]["unchanged"] == len(report["changes"]) == 2 * N_DEVICES + expected_mutations() + 9
    assert site.cs.mutations == before


def test_a_change_in_chirpstack_is_put_back_and_operator_tags_stay(site):
    d = site.cs.devices["70b3d57ed0000002"]
    d.skip_fcnt_check = True
    d.tags["installer"] = "acme"
    site.cs.device_keys["70b3d57ed0000002"].nwk_key = "11" * 16
    code, out, err = site.run("plan", site.cs)
    assert "update     chirpstack device         big-d002 (70b3d57ed0000002)  (changes skip_fcnt_check)" in out
    assert "update     chirpstack device-keys    big-d002" in out and "plan: 0 to create, 2 to update" in out
    code, out, err = site.run("apply", site.cs)
    assert code == 0 and not site.cs.devices["70b3d57ed0000002"].skip_fcnt_check
    assert site.cs.devices["70b3d57ed0000002"].tags["installer"] == "acme"
    assert_complete(site.cs, site)


def test_gateway_configs_load_and_name_the_application(site):
    (app,) = site.cs.applications.values()
    for gw in ("gw1", "gw2"):
        cfg = gateway_config.load(site.out / "gateways" / gw / "gateway.toml")
        assert cfg.gateway_id == gw and cfg.site_id == "big"
        assert cfg.sources.chirpstack.application_id == app.id
        ids = {d.id for d in cfg.devices}
        assert len(ids) == 100  # gw1: 60 outlets, 40 classrooms; gw2: 60 outlets, 40 bins
    keys = (site.out / "secrets" / "gateway-gw1" / "device-keys.toml").read_text()
    assert keys.count("\n") == 40 and site.node_secrets("big-d008")["device_key_hex"] in keys


def test_node_files_are_what_the_node_accepts_and_private(site):
    mod = fb.config_module()
    for device_id in ("big-d000", "big-d006", "big-d008", "big-d009"):
        cfg = mod.load_config(str(site.out / "bundles" / device_id / "config.json"))
        mod.load_secrets(str(site.out / "secrets" / "devices" / (device_id + ".json")), cfg)
        assert fb.verify_manifest(site.out / "bundles" / device_id) == []
    assert mod.load_config(str(site.out / "bundles" / "big-d006" / "config.json"))["sensors"][0]["empty_cm"] == 106.0
    for path in (site.out / "secrets").rglob("*"):
        assert os.stat(path).st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
    assert os.stat(site.out / "secrets").st_mode & 0o777 == 0o700


def test_a_failure_half_way_resumes_to_exactly_the_expected_objects(site):
    with ChirpStackAPI() as cs:  # a new, empty ChirpStack: the local files are already there
        cs.fail_call(3 + expected_mutations() // 2)
        code, out, err = site.run("apply", cs)
        assert code == 4 and "UNAVAILABLE" in err and "run apply again to finish" in err
        made = cs.mutations
        assert 0 < made < expected_mutations()
        code, out, err = site.run("apply", cs)
        assert code == 0, err
        assert cs.mutations == expected_mutations()  # nothing twice
        assert_complete(cs, site)


def test_a_lost_reply_does_not_make_a_duplicate(site):
    with ChirpStackAPI() as cs:
        cs.fail_call(3 + 1 + 2 + 2 + 10, after=True)  # a device's Create succeeds, its reply is lost
        code, out, err = site.run("apply", cs)
        assert code == 4
        code, out, err = site.run("apply", cs)
        assert code == 0, err
        assert cs.mutations == expected_mutations()
        assert_complete(cs, site)


def test_a_wrong_token_stops_before_anything_changes(site):
    state = (site.out / "state.json").read_bytes()
    code, out, err = site.run("apply", site.cs, token="csk.not-a-key")
    assert code == 3
    assert "refused the API token" in err and "UNAUTHENTICATED" in err and "nothing was changed" in err
    assert (site.out / "state.json").read_bytes() == state
    other = site.cs.add_api_key(site.cs.add_tenant("another council"))
    code, out, err = site.run("plan", site.cs, token=other)
    assert code == 3 and "API key of the tenant" in err


def test_an_unreachable_chirpstack_is_a_clear_error(site):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    before = site.cs.mutations
    code, out, err = site.run("apply", site.cs, url="http://127.0.0.1:%d" % port, extra=["--timeout", "5"])
    assert code == 4 and "cannot reach ChirpStack at 127.0.0.1:%d" % port in err
    assert site.cs.mutations == before


def test_a_missing_codec_is_named(site, tmp_path):
    code, out, err = site.run("plan", site.cs, extra=["--codec", str(tmp_path / "nope.js")])
    assert code == 1 and "nope.js is missing" in err and "--codec" in err


def test_no_key_or_password_is_ever_printed_or_logged(site):
    values = site.secrets()
    assert len(values) >= N_DEVICES + len(lorawan_devices())
    everything = "\n".join(site.outputs).lower()
    assert len(site.outputs) >= 8 and "applied" in everything
    for value in values:
        assert value.lower() not in everything
