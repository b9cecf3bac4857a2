"""``civicedge firmware build``: one build per profile (its reference board and default link)
gives a flash tree whose .mpy files the MicroPython unix port imports, whose config.json the
shipped app/config.py accepts, and whose manifest matches its bytes; a broken field fails the
build with the ConfigError naming it."""

import argparse
import json
import pathlib

import pytest

from civicedge import cmd_firmware
from civicedge import firmware_build as fb
from simulators.mpyrun import run_micropython
from simulators.no2b43f import SimNO2B43F

REPO = pathlib.Path(__file__).resolve().parents[2]
PROFILES = fb.names("profiles")


def sheet_file(tmp_path):
    path = tmp_path / "no2-sheet.json"
    path.write_text(json.dumps(SimNO2B43F(seed=7).calibration_sheet))
    return path


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """{profile: (out dir, manifest)} for each profile's reference build."""
    tmp = tmp_path_factory.mktemp("builds")
    out = {}
    for name in PROFILES:
        prof = fb.load_profile(name)["profile"]
        calibration = sheet_file(tmp) if name == "street-no2" else None
        manifest = fb.build(prof["board"], name, prof["example_device_id"], tmp / name, calibration=calibration)
        out[name] = (tmp / name, manifest)
    return out


IMPORTS = r"""
import sys
sys.path[:] = [ROOT, ROOT + "/lib"]  # the flash only: nothing from the repository
import drivers.scd4x, protocol.quality, app.config
for m in (drivers.scd4x, protocol.quality, app.config):
    assert m.__file__.endswith(".mpy") and m.__file__.startswith(ROOT), m.__file__
cfg = app.config.load_config(ROOT + "/config.json")
assert drivers.scd4x.DEFAULT_ADDRESS == 0x62 and "stuck" in protocol.quality.FLAGS
print("NODE", cfg["device_id"], cfg["profile"], cfg["link"]["type"], len(cfg["sensors"]))
"""


@pytest.mark.parametrize("name", PROFILES)
def test_the_unix_port_imports_the_build_and_accepts_its_config(builds, name):
    out, manifest = builds[name]
    prof = fb.load_profile(name)["profile"]
    rc, stdout, stderr = run_micropython(["-c", "ROOT = %r\n" % str(out) + IMPORTS],
                                         extra_path=[out, out / "lib"], sim=False, timeout_s=60)
    assert rc == 0, stdout + stderr
    n_sensors = len(fb.load_profile(name)["sensors"])
    assert "NODE %s %s %s %d" % (prof["example_device_id"], name, prof["link"], n_sensors) in stdout


@pytest.mark.parametrize("name", PROFILES)
def test_the_layout_and_the_manifest_match_the_bytes(builds, name):
    out, manifest = builds[name]
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    listed = [e["path"] for e in manifest["files"]]
    assert on_disk == sorted(listed + ["manifest.json"])
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert fb.verify_manifest(out) == []
    for entry in manifest["files"]:
        data = (out / entry["path"]).read_bytes()
        assert (entry["sha256"], entry["bytes"]) == (fb.sha256_hex(data), len(data))
        if entry["path"].endswith(".mpy"):
            assert data[:2] == b"M\x06"  # mpy v6 (REFERENCE §10: mpy-cross 1.29 emits v6.3)
    # The layout: app/ at the root, drivers/ and protocol/ under lib/, boot/main kept as source.
    assert {"app/config.mpy", "lib/drivers/scd4x.mpy", "lib/protocol/quality.mpy", "config.json"} <= set(listed)
    for src in ("boot.py", "main.py"):
        assert (src in listed) == (REPO / "firmware" / src).exists()
    assert not any(p.endswith(".py") and p not in ("boot.py", "main.py") for p in listed)
    code = {p: (out / p).read_bytes() for p in listed if p != "config.json"}
    assert manifest["firmware_version"] == fb.firmware_version(code)
    config = json.loads((out / "config.json").read_text())
    assert config["firmware_version"] == manifest["firmware_version"]
    assert manifest["config_sha256"] == fb.sha256_hex((out / "config.json").read_bytes())


def test_same_code_same_firmware_version_whatever_the_config(builds):
    versions = {m["firmware_version"] for _, m in builds.values()}
    configs = {m["config_sha256"] for _, m in builds.values()}
    assert len(versions) == 1 and len(configs) == len(PROFILES)


def test_march_changes_nothing_for_bytecode_only_modules(builds, tmp_path):
    # -march only affects @micropython.native/viper code; our modules are plain bytecode.
    manifest = fb.build("esp32-devkitc", "classroom-co2", "sch1-rm12-co2", tmp_path / "x", march="xtensawin")
    assert manifest["firmware_version"] == builds["classroom-co2"][1]["firmware_version"]
    assert manifest["march"] == "xtensawin"


def test_a_broken_field_fails_the_build_with_the_config_error(tmp_path):
    ConfigError = fb.config_module().ConfigError
    out = tmp_path / "node"
    with pytest.raises(ConfigError) as info:
        fb.build("esp32-devkitc", "classroom-co2", "sch1-rm12-co2", out, sets=["sensors.co2.address=72"])
    assert info.value.field == "sensors[0].address"
    assert "esp32-devkitc + classroom-co2" in info.value.source
    with pytest.raises(ConfigError) as info:
        fb.build("esp32-devkitc", "classroom-co2", "sch1-rm12-co2", out, sets=["interval_s=2"])
    assert info.value.field == "interval_s"
    with pytest.raises(ConfigError) as info:
        fb.build("esp32-devkitc", "classroom-co2", "Not An Id", out)
    assert info.value.field == "device_id"
    assert not out.exists()  # nothing written


def test_site_settings_placeholders_and_link_choices(tmp_path):
    ConfigError = fb.config_module().ConfigError
    with pytest.raises(ConfigError) as info:  # the MQTT link needs the site's broker and WiFi
        fb.build("esp32-devkitc", "classroom-co2", "sch1-rm12-co2", tmp_path / "a", link="mqtt")
    assert info.value.field == "link.wifi.ssid"
    overlay = tmp_path / "site.toml"
    overlay.write_text('[link.wifi]\nssid = "school-iot"\n[link.mqtt]\nhost = "gw1.school.example"\n')
    m = fb.build("esp32-devkitc", "classroom-co2", "sch1-rm12-co2", tmp_path / "a", link="mqtt", overlay=overlay)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["link"]["mqtt"]["host"] == "gw1.school.example"
    assert m["link"] == "mqtt"
    with pytest.raises(fb.BuildError, match="calibration"):  # the NO2 sheet is per sensor
        fb.build("esp32-devkitc-rak3272s", "street-no2", "aqm-1", tmp_path / "b")
    with pytest.raises(fb.BuildError, match="rak3272s"):  # no modem on the plain DevKitC
        fb.build("esp32-devkitc", "legionella-outlet", "kit-1", tmp_path / "c")
    m = fb.build("esp32-devkitc-wio-e5", "bin-level", "bin-7", tmp_path / "d", sets=["sensors.sonar.empty_cm=118"])
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    assert cfg["link"]["modem"] == {"dialect": "lora-e5", "reset_pin": None}
    assert cfg["link"]["uart"]["baudrate"] == 9600 and cfg["sensors"][0]["empty_cm"] == 118.0


def test_out_dir_must_be_new_empty_or_an_earlier_build(tmp_path):
    out = tmp_path / "node"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(fb.BuildError, match="not an earlier build"):
        fb.build("esp32-devkitc", "classroom-co2", "sch1-rm12-co2", out)
    (out / "notes.txt").unlink()
    first = fb.build("esp32-devkitc", "classroom-co2", "sch1-rm12-co2", out)
    (out / "lib" / "protocol" / "quality.mpy").write_bytes(b"tampered")
    assert fb.verify_manifest(out) == ["lib/protocol/quality.mpy"]
    (out / "app" / "stale.mpy").write_bytes(b"old")
    second = fb.build("esp32-devkitc", "classroom-co2", "sch1-rm12-co2", out)
    assert first == second and not (out / "app" / "stale.mpy").exists() and fb.verify_manifest(out) == []


def _cli(argv):
    parser = argparse.ArgumentParser(prog="civicedge")
    cmd_firmware.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_the_cli(tmp_path, capsys):
    out = tmp_path / "node"
    assert _cli(["firmware", "build", "--board", "esp32-devkitc", "--profile", "classroom-co2",
                 "--device-id", "sch1-rm12-co2", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["firmware_version"] == json.loads((out / "manifest.json").read_text())["firmware_version"]
    assert _cli(["firmware", "check", str(out / "config.json")]) == 0
    assert "ok (sch1-rm12-co2, serial link, 1 sensors)" in capsys.readouterr().out
    assert _cli(["firmware", "build", "--board", "esp32-devkitc", "--profile", "classroom-co2",
                 "--device-id", "sch1-rm12-co2", "--out", str(tmp_path / "bad"), "--set", "watchdog_ms=10"]) == 1
    assert "watchdog_ms: 10 is out of range" in capsys.readouterr().err
    assert _cli(["firmware", "render", "--check"]) == 0
    assert _cli(["firmware", "list"]) == 0
    assert "esp32-devkitc-rak3272s" in capsys.readouterr().out
