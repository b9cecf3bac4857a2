"""The boot's configuration step (firmware/app/startup.py) on CPython: the node's files are
validated, the downlink overrides applied only when their file is there, a bad file comes
back as the ConfigError to report, and the validator leaves ``sys.modules`` afterwards."""

import json
import shutil
import sys

import cbor2
import pytest

from firmware.app import config, downlink, startup
from tests.unit.test_config import EXAMPLE

_RELEASED = ("firmware.app.config", "firmware.app.config_schema", "firmware.app.downlink")


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
    assert startup._OVERRIDES == downlink.OVERRIDES


def test_a_good_flash_gives_the_validated_config_and_secrets_and_releases_the_validator(root):
    got, err = startup.configure(root)
    assert err is None
    cfg, secrets = got
    assert cfg == config.load_config(str(EXAMPLE))
    assert secrets.device_key == bytes(range(16))
    # the validator and its schema are gone; with no overrides file, downlink was never needed
    assert "firmware.app.config" not in sys.modules and "firmware.app.config_schema" not in sys.modules
    assert "firmware.app.downlink" not in sys.modules


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
