"""The boot's configuration step (firmware/app/startup.py) on CPython: the node's files are
validated, the downlink overrides applied only when their file is there, a bad file comes
back as the ConfigError to report, and the validator leaves ``sys.modules`` afterwards; a boot
whose files are those last validated takes the result from ``config.valid`` without the
validator (``app.config_cache``), and any change to them, or a damaged cache, is validated."""

import json
import shutil
import sys

import cbor2
import pytest

from civicedge import firmware_build
from firmware.app import config, config_cache, downlink, startup
from tests.unit.test_config import EXAMPLE

_RELEASED = ("firmware.app.config", "firmware.app.config_schema", "firmware.app.downlink",
             "firmware.app.config_cache")


@pytest.fixture
def root(tmp_path):
    """A node's flash: the classroom example config.json and a provisioned secrets.json.
    The modules ``configure`` releases are put back afterwards, for the other tests."""
    shutil.copyfile(EXAMPLE, tmp_path / "config.json")
    (tmp_path / "secrets.json").write_text(json.dumps({"device_key_hex": bytes(range(16)).hex()}))
    saved = {name: sys.modules.get(name) for name in _RELEASED}
    package = sys.modules["firmware.app"]
    attrs = {name: getattr(package, name.rpartition(".")[2], None) for name in _RELEASED}
    downlink.take_counts({})
    sys.modules.pop("firmware.app.downlink", None)  # as at boot: not loaded yet
    yield str(tmp_path)
    for name in _RELEASED:
        if saved[name] is not None:
            sys.modules[name] = saved[name]
            setattr(package, name.rpartition(".")[2], attrs[name])


def test_the_overrides_file_name_is_the_downlink_modules():
    assert config_cache._OVERRIDES == downlink.OVERRIDES


def test_a_good_flash_gives_the_validated_config_and_secrets_and_releases_the_validator(root):
    got, err = startup.configure(root)
    assert err is None
    cfg, secrets = got
    assert cfg == config.load_config(str(EXAMPLE))
    assert secrets.device_key == bytes(range(16))
    # the validator and its schema are gone; with no overrides file, downlink was never needed
    assert "firmware.app.config" not in sys.modules and "firmware.app.config_schema" not in sys.modules
    assert "firmware.app.downlink" not in sys.modules and "firmware.app.config_cache" not in sys.modules


def test_a_bad_config_comes_back_as_the_error_naming_its_field(root):
    doc = json.loads(open(root + "/config.json").read())
    doc["interval_s"] = "soon"
    with open(root + "/config.json", "w") as f:
        json.dump(doc, f)
    got, err = startup.configure(root)
    assert got is None and isinstance(err, ValueError) and err.field == "interval_s"


def test_overrides_on_the_flash_are_applied(root):
    assert downlink.receive(downlink.PORT_CONFIG, cbor2.dumps({"interval_s": 60}), root, {})
    got, err = startup.configure(root)
    assert err is None and got[0]["interval_s"] == 60
    assert json.loads(open(root + "/" + downlink.OVERRIDES).read())["set"] == {"interval_s": 60}


# -- the cache of the validated result (config.valid) ---------------------------------------------
def _boot(root):
    """A boot whose validator cannot be imported: only a cache hit can configure it."""
    sys.modules["firmware.app.config"] = None  # `from . import config` raises ImportError
    try:
        return startup.configure(root)
    finally:
        sys.modules.pop("firmware.app.config", None)


def _write(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f)


def test_an_unchanged_flash_is_configured_from_the_cache_without_the_validator(root):
    first, err = startup.configure(root)
    assert err is None
    hits = startup.hits
    got, err = _boot(root)
    assert err is None and startup.hits == hits + 1
    cfg, secrets = got
    assert cfg == first[0] == config.load_config(str(EXAMPLE))
    assert (secrets.device_key, secrets.wifi_password, secrets.mqtt_password, secrets.lorawan_app_key) == (
        bytes(range(16)), None, None, None)
    assert "firmware.app.config_schema" not in sys.modules and "firmware.app.downlink" not in sys.modules


def test_the_cache_holds_no_secret(root):
    key = "5f1c9a0e7b3d2c48a6e1f0b9d8c7a6e5"
    _write(root + "/secrets.json", {"device_key_hex": key})
    assert startup.configure(root)[1] is None
    text = open(root + "/" + config_cache.CACHE, "rb").read()
    assert key.encode() not in text and bytes.fromhex(key) not in text
    assert _boot(root)[0][1].device_key == bytes.fromhex(key)


def test_a_changed_config_is_validated_again(root):
    startup.configure(root)
    doc = json.loads(open(root + "/config.json").read())
    doc["interval_s"] = 240
    _write(root + "/config.json", doc)
    with pytest.raises(ImportError):  # a miss: the validator is needed
        _boot(root)
    hits = startup.hits
    got, err = startup.configure(root)
    assert err is None and got[0]["interval_s"] == 240 and startup.hits == hits
    assert _boot(root)[0][0]["interval_s"] == 240  # and cached again


def test_a_bad_config_is_reported_as_without_a_cache(root):
    startup.configure(root)
    doc = json.loads(open(root + "/config.json").read())
    doc["interval_s"] = "soon"
    _write(root + "/config.json", doc)
    for _ in range(2):  # never cached: every boot reports it
        got, err = startup.configure(root)
        assert got is None and err.field == "interval_s"


def test_changed_secrets_are_validated_again(root):
    startup.configure(root)
    _write(root + "/secrets.json", {"device_key_hex": "00" * 16})  # a placeholder key
    got, err = startup.configure(root)
    assert got is None and err.field == "device_key_hex" and "00" * 16 not in str(err)
    _write(root + "/secrets.json", {"device_key_hex": bytes(range(1, 17)).hex()})
    assert startup.configure(root)[0][1].device_key == bytes(range(1, 17))
    assert _boot(root)[0][1].device_key == bytes(range(1, 17))


def test_a_downlinked_change_is_applied_and_then_cached(root):
    startup.configure(root)
    assert downlink.receive(downlink.PORT_CONFIG, cbor2.dumps({"interval_s": 60}), root, {})
    with pytest.raises(ImportError):  # the overrides file changed: validate it
        _boot(root)
    got, err = startup.configure(root)
    assert err is None and got[0]["interval_s"] == 60
    assert _boot(root)[0][0]["interval_s"] == 60  # the next wake: the cache, with the change


def test_a_firmware_update_is_validated_again(root):
    startup.configure(root)
    with open(root + "/manifest.json", "w") as f:
        f.write('{"firmware_version": "another"}')
    with pytest.raises(ImportError):
        _boot(root)


def _manifest(root, version, files=(), compiler="MicroPython v1.29.0; mpy-cross emitting mpy v6.3"):
    """A manifest.json as civicedge.firmware_build writes it; returns its bytes."""
    info = {"device_id": "civ1-hot01", "board": "esp32-devkitc-rak3272s", "profile": "legionella-outlet",
            "link": "lorawan", "compiler": compiler, "march": None}
    manifest = firmware_build.make_manifest(dict(files), {}, info)
    manifest["firmware_version"] = version
    data = (json.dumps(manifest, indent=1) + "\n").encode()
    with open(root + "/manifest.json", "wb") as f:
        f.write(data)
    return data


def test_of_the_manifest_only_its_firmware_version_counts(root):
    data = _manifest(root, "a" * 64, {"app/main.mpy": b"M\x06"})
    head = bytearray(data[:config_cache._HEAD_BYTES])  # found in the head of a manifest the build writes
    assert config_cache._version(head, len(head)) == b"a" * 64
    startup.configure(root)
    _manifest(root, "a" * 64, {"app/main.mpy": b"M\x06", "app/node.mpy": b"M\x06\x00"})
    assert _boot(root)[1] is None  # the same code: the cache
    _manifest(root, "b" * 64, {"app/main.mpy": b"M\x06"})
    with pytest.raises(ImportError):  # a firmware update
        _boot(root)


def test_a_manifest_without_its_version_in_its_head_is_digested_whole(root):
    _manifest(root, "a" * 64, compiler="x" * 600)  # the version past the head
    startup.configure(root)
    _manifest(root, "a" * 64, {"app/main.mpy": b"M\x06"}, compiler="x" * 600)
    with pytest.raises(ImportError):
        _boot(root)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "head", "other_inputs"])
def test_a_damaged_cache_is_ignored_and_rewritten(root, damage):
    first, _ = startup.configure(root)
    path = root + "/" + config_cache.CACHE
    data = bytearray(open(path, "rb").read())
    if damage == "flip":
        data[-5] ^= 0x01  # a bit of the configuration's JSON: its checksum no longer matches
    elif damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "empty":
        data = b""
    elif damage == "head":
        data = b"garbage\n" + data.split(b"\n", 1)[1]
    else:  # whole, but of other inputs
        data = b"0" * 64 + data[64:]
    with open(path, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(ImportError):
        _boot(root)
    hits = startup.hits
    got, err = startup.configure(root)
    assert err is None and got[0] == first[0] and startup.hits == hits
    assert _boot(root)[0][0] == first[0]
