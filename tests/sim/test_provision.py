"""``civicedge provision`` without ChirpStack, on the example inventory: the node secrets, the
bundles (identical to ``firmware_build.build``'s), the gateway's configuration and secrets;
idempotent, private, resumable after a crash part-way; errors name the file and field."""

import argparse
import contextlib
import fcntl
import io
import json
import os
import shutil

import pytest

from civicedge import cmd_provision
from civicedge import firmware_build as fb
from civicedge import provision
from gateway import config as gateway_config
from gateway import security

EXAMPLE = fb.REPO / "hardware" / "inventory.example.toml"
WIFI = "School-WiFi-2024-x"


@pytest.fixture
def site(tmp_path):
    inv = tmp_path / "inventory.toml"
    shutil.copy(EXAMPLE, inv)
    (tmp_path / "sch1-wifi.password").write_text(WIFI + "\n")
    return tmp_path


def run(site, command, *extra, inventory="inventory.toml"):
    parser = argparse.ArgumentParser()
    cmd_provision.register(parser.add_subparsers())
    ns = parser.parse_args(["provision", command, "--inventory", str(site / inventory), "--out",
                            str(site / "out")] + list(extra))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = ns.func(ns)
    return code, out.getvalue(), err.getvalue()


def node_secrets(site, device_id):
    return json.loads((site / "out" / "secrets" / "devices" / (device_id + ".json")).read_text())


def tree(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_apply_makes_every_file_and_a_second_apply_nothing(site):
    code, out, err = run(site, "plan")
    assert code == 0 and "plan: 13 to create, 0 to update, 0 unchanged" in out
    assert not (site / "out").exists()  # plan writes nothing
    code, out, err = run(site, "apply")
    assert code == 0, err
    assert "applied: 13 created" in out
    code, out, err = run(site, "apply")
    assert code == 0 and "applied: nothing to do; 13 unchanged" in out
    keys = [node_secrets(site, d)["device_key_hex"] for d in ("sch1-rm12-co2", "sch1-rm14-co2", "sch1-kit-hot1")]
    assert len(set(keys)) == 3 and all(len(k) == 64 for k in keys)
    assert len(node_secrets(site, "sch1-kit-hot1")["lorawan_app_key_hex"]) == 32
    assert (site / "out" / "secrets" / "lorawan" / "sch1-kit-hot1.appkey").read_text() == \
        node_secrets(site, "sch1-kit-hot1")["lorawan_app_key_hex"] + "\n"
    everything = (out + err).lower()
    for device_id in ("sch1-rm12-co2", "sch1-rm14-co2", "sch1-kit-hot1", "sch1-yard-bin1"):
        for value in node_secrets(site, device_id).values():
            assert value.lower() not in everything


def test_the_node_accepts_its_bundle_and_secrets(site):
    assert run(site, "apply")[0] == 0
    mod = fb.config_module()
    for device_id, link in (("sch1-rm12-co2", "serial"), ("sch1-rm14-co2", "mqtt"), ("sch1-kit-hot1", "lorawan"),
                            ("sch1-yard-bin1", "lorawan")):
        bundle = site / "out" / "bundles" / device_id
        cfg = mod.load_config(str(bundle / "config.json"))
        secrets = mod.load_secrets(str(site / "out" / "secrets" / "devices" / (device_id + ".json")), cfg)
        assert cfg["device_id"] == device_id and cfg["link"]["type"] == link and fb.verify_manifest(bundle) == []
        assert len(secrets.device_key) == 32
    wifi = mod.load_config(str(site / "out" / "bundles" / "sch1-rm14-co2" / "config.json"))["link"]
    assert wifi["mqtt"]["host"] == "sch1-gw1.local" and wifi["wifi"]["ssid"] == "SCH1-SENSORS"
    assert node_secrets(site, "sch1-rm14-co2")["wifi_password"] == WIFI
    bin_cfg = mod.load_config(str(site / "out" / "bundles" / "sch1-yard-bin1" / "config.json"))
    assert bin_cfg["link"]["lorawan"]["dev_eui"] == "2cf7f12024900363" and bin_cfg["sensors"][0]["empty_cm"] == 118.0


def test_each_bundle_is_what_firmware_build_makes_for_that_node(site, tmp_path_factory):
    assert run(site, "apply")[0] == 0
    other = tmp_path_factory.mktemp("build")
    (other / "overlay.json").write_text(json.dumps({"link": {"lorawan": {"dev_eui": "2cf7f12024900363",
                                                                         "join_eui": "0000000000000000"}}}))
    fb.build("esp32-devkitc-wio-e5", "bin-level", "sch1-yard-bin1", other / "b", link="lorawan",
             sets=["sensors.sonar.empty_cm=118.0"], overlay=other / "overlay.json")
    assert tree(site / "out" / "bundles" / "sch1-yard-bin1") == tree(other / "b")


def test_the_gateway_config_loads_with_its_keys(site):
    assert run(site, "apply")[0] == 0
    cfg = gateway_config.load(site / "out" / "gateways" / "gw1" / "gateway.toml")
    assert [d.id for d in cfg.devices] == ["sch1-rm12-co2", "sch1-rm14-co2", "sch1-kit-hot1", "sch1-yard-bin1"]
    assert cfg.sources.serial[0].port.startswith("/dev/serial/by-id/") and cfg.sources.site_broker.host == "127.0.0.1"
    assert cfg.sources.chirpstack.application_id == "+" and cfg.upstream_mqtt.mqtt.username == "sch1-gw1"
    assert cfg.device_keys_file == "/etc/civicedge/secrets/device-keys.toml"
    gdir = site / "out" / "secrets" / "gateway-gw1"
    keys = security.parse_device_keys((gdir / "device-keys.toml").read_text(), "device-keys.toml", cfg.devices)
    assert keys == {d: bytes.fromhex(node_secrets(site, d)["device_key_hex"]) for d in ("sch1-rm12-co2",
                                                                                          "sch1-rm14-co2")}
    for name in ("upstream.password", "site-broker.password"):
        assert security.password_problem(security.parse_password((gdir / name).read_text())) is None
    users = (gdir / "mosquitto-passwd.txt").read_text().splitlines()
    assert users == ["gateway:" + security.parse_password((gdir / "site-broker.password").read_text()),
                     "sch1-rm14-co2:" + node_secrets(site, "sch1-rm14-co2")["mqtt_password"]]
    for path in (site / "out" / "secrets").rglob("*"):
        assert os.stat(path).st_mode & 0o777 == (0o700 if path.is_dir() else 0o600)


def test_an_inventory_change_updates_only_what_it_touches(site):
    assert run(site, "apply")[0] == 0
    key = node_secrets(site, "sch1-yard-bin1")
    inv = site / "inventory.toml"
    inv.write_text(inv.read_text().replace('"sensors.sonar.empty_cm" = 118.0', '"sensors.sonar.empty_cm" = 121.5'))
    code, out, err = run(site, "plan")
    assert "update     bundle     node           sch1-yard-bin1  (its configuration changed)" in out
    assert "plan: 0 to create, 1 to update, 12 unchanged" in out
    assert run(site, "apply")[0] == 0
    cfg = json.loads((site / "out" / "bundles" / "sch1-yard-bin1" / "config.json").read_text())
    assert cfg["sensors"][0]["empty_cm"] == 121.5 and node_secrets(site, "sch1-yard-bin1") == key
    (site / "sch1-wifi.password").write_text("New-School-WiFi-2025\n")
    code, out, err = run(site, "apply")
    assert "update     secrets    node           sch1-rm14-co2  (new the site's new WiFi password)" in out
    assert "update     gateway    broker users" not in out and node_secrets(site, "sch1-rm14-co2")["wifi_password"] \
        == "New-School-WiFi-2025"


def test_permissions_are_repaired_and_keys_kept(site):
    assert run(site, "apply")[0] == 0
    path = site / "out" / "secrets" / "devices" / "sch1-rm12-co2.json"
    before = path.read_bytes()
    path.chmod(0o644)
    (site / "out" / "secrets").chmod(0o755)
    code, out, err = run(site, "plan")
    assert "update     secrets    directory      secrets  (mode 0755 -> 0700)" in out
    assert "update     secrets    node           sch1-rm12-co2  (mode 0644 -> 0600)" in out
    assert run(site, "apply")[0] == 0
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(site / "out" / "secrets").st_mode & 0o777 == 0o700
    assert path.read_bytes() == before


def test_state_json_is_only_a_cache(site):
    assert run(site, "apply")[0] == 0
    secrets = node_secrets(site, "sch1-kit-hot1")
    (site / "out" / "state.json").write_text("{ not json")
    code, out, err = run(site, "apply")
    assert code == 0 and "state.json was unreadable" in out
    assert "update     bundle     node           sch1-kit-hot1  (not recorded in state.json)" in out
    assert node_secrets(site, "sch1-kit-hot1") == secrets
    assert "nothing to do" in run(site, "apply")[1]


def test_a_crash_part_way_leaves_whole_files_and_a_rerun_finishes(site, monkeypatch):
    calls = {"n": 0}
    real = provision.Template.write

    def crash_on_third(self, d, cfg, out):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(self, d, cfg, out)

    monkeypatch.setattr(provision.Template, "write", crash_on_third)
    code, out, err = run(site, "apply")
    assert code == 1 and "No space left on device" in err
    monkeypatch.setattr(provision.Template, "write", real)
    code, out, err = run(site, "plan")
    assert "plan: 7 to create, 0 to update, 6 unchanged" in out  # 2 bundles and the gateway files to go
    assert run(site, "apply")[0] == 0
    assert "nothing to do" in run(site, "plan")[1]
    bundles = site / "out" / "bundles"
    assert sorted(p.name for p in bundles.iterdir()) == ["sch1-kit-hot1", "sch1-rm12-co2", "sch1-rm14-co2",
                                                        "sch1-yard-bin1"]
    assert all(fb.verify_manifest(p) == [] for p in bundles.iterdir())


def test_a_bad_secrets_file_is_refused_not_replaced(site):
    assert run(site, "apply")[0] == 0
    path = site / "out" / "secrets" / "devices" / "sch1-rm12-co2.json"
    path.write_text('{"device_key_hex": "00000000000000000000000000000000"}')
    code, out, err = run(site, "apply")
    assert code == 1 and "sch1-rm12-co2.json is not a valid secrets.json" in err and "placeholder" in err
    assert path.read_text() == '{"device_key_hex": "00000000000000000000000000000000"}'


def test_a_missing_wifi_password_names_the_inventory_field(site):
    (site / "sch1-wifi.password").unlink()
    code, out, err = run(site, "plan")
    assert code == 2 and "inventory.toml: line 23: gateways[0].wifi_password_file: cannot read" in err
    (site / "sch1-wifi.password").write_text("short\n")
    code, out, err = run(site, "plan")
    assert code == 2 and "gateways[0].wifi_password_file" in err and "8..63" in err


def test_a_malformed_inventory_changes_nothing(site):
    inv = site / "inventory.toml"
    inv.write_text(inv.read_text().replace('dev_eui = "70b3d57ed0061a2c"', 'dev_eui = "70b3d57ed0061a2"'))
    code, out, err = run(site, "apply")
    assert code == 2 and not (site / "out").exists()
    assert "inventory.toml: line 57: devices[2].dev_eui: '70b3d57ed0061a2' must be 16 hex digits" in err


def test_one_apply_at_a_time(site):
    (site / "out").mkdir()
    fd = os.open(site / "out" / ".provision.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code, out, err = run(site, "apply")
        assert code == 1 and "another `civicedge provision apply` is working" in err
    finally:
        os.close(fd)


def test_a_csv_inventory_provisions_the_same_site(site):
    shutil.copy(fb.REPO / "hardware" / "inventory.example.csv", site / "inventory.csv")
    code, out, err = run(site, "apply", inventory="inventory.csv")
    assert code == 0, err
    assert "nothing to do" in run(site, "plan")[1]  # the TOML inventory wants the same


def test_keys_are_random_not_derived_from_the_inventory(site):
    assert run(site, "apply")[0] == 0
    first = {d: node_secrets(site, d) for d in ("sch1-rm12-co2", "sch1-rm14-co2", "sch1-kit-hot1")}
    shutil.rmtree(site / "out")
    assert run(site, "apply")[0] == 0  # the same inventory again, from nothing
    for device_id, old in first.items():
        new = node_secrets(site, device_id)
        for field in ("device_key_hex", "lorawan_app_key_hex", "mqtt_password"):
            assert old.get(field) is None or old[field] != new[field]


def test_text_from_the_inventory_cannot_inject_into_the_gateway_config(site):
    inv = site / "inventory.toml"
    inv.write_text(inv.read_text().replace('attributes = { outlet = "hot" }',
                                           "attributes = { outlet = 'hot\" # ] [upstream.mqtt] x = \"' }"))
    assert run(site, "apply")[0] == 0
    cfg = gateway_config.load(site / "out" / "gateways" / "gw1" / "gateway.toml")
    assert cfg.devices[2].attributes == {"outlet": 'hot" # ] [upstream.mqtt] x = "'}


def test_a_directory_in_the_way_of_a_bundle_is_not_deleted(site):
    (site / "out" / "bundles" / "sch1-rm12-co2").mkdir(parents=True)
    (site / "out" / "bundles" / "sch1-rm12-co2" / "notes.txt").write_text("mine")
    code, out, err = run(site, "apply")
    assert code == 1 and "bundles/sch1-rm12-co2 is in the way" in err
    assert (site / "out" / "bundles" / "sch1-rm12-co2" / "notes.txt").read_text() == "mine"


def test_the_shipped_codec_is_a_chirpstack_codec():
    if not provision.DEFAULT_CODEC.exists():
        pytest.skip("protocol/js/civicedge_codec.js is not in this tree yet")
    assert "function decodeUplink(" in provision.read_codec(provision.DEFAULT_CODEC)
