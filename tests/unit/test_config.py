"""The node configuration schema (firmware/app/config.py) on CPython: the example is valid,
every class of mistake raises ConfigError naming the field and the file, secrets never show,
and arbitrary JSON raises nothing but ConfigError."""

import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.app import config
from firmware.app.config import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "firmware" / "config.example.json"
KEY_HEX = "5f1c9a0e7b3d2c48a6e1f0b9d8c7a6e5"  # 16 random-looking bytes, for tests only
APP_KEY_HEX = "a0b1c2d3e4f5061728394a5b6c7d8e9f"


def example():
    return json.loads(EXAMPLE.read_text())


def write(tmp_path, obj, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def error_for(tmp_path, obj):
    path = write(tmp_path, obj)
    with pytest.raises(ConfigError) as info:
        config.load_config(path)
    return path, info.value


def test_the_example_is_a_valid_classroom_node():
    cfg = config.load_config(str(EXAMPLE))
    assert cfg["device_id"] == "sch1-rm12-co2"
    assert cfg["profile"] == "classroom-co2"
    assert [(s["part"], s["address"], s["mode"]) for s in cfg["sensors"]] == [("scd4x", 0x62, "periodic")]
    assert cfg["link"]["type"] == "serial" and cfg["link"]["uart"]["tx_pin"] == 17
    assert cfg["link"]["serial"]["ack_timeout_ms"] == 2000  # a default filled in
    assert cfg["quality"]["co2_ppm"] == {"lo": 250.0, "hi": 40000.0, "max_step": 1500.0, "stuck_n": 10}


def test_defaults_fill_missing_optional_fields():
    obj = example()
    del obj["watchdog_ms"], obj["sensors"][0]["asc_enabled"], obj["log"]
    cfg = config.validate(obj)
    assert cfg["watchdog_ms"] == 60000
    assert cfg["sensors"][0]["asc_enabled"] is True
    assert cfg["log"] == {"max_bytes": 262144, "segment_bytes": None}


def _set(obj, path, value):
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _add_tmp117s(obj):
    obj["sensors"] += [{"name": "a", "part": "tmp117", "address": 0x48},
                       {"name": "b", "part": "tmp117", "address": 0x48}]


def _lorawan_without_modem(obj):
    obj["link"] = {"type": "lorawan", "uart": obj["link"]["uart"]}


def _mqtt_without_broker(obj):
    obj["link"] = {"type": "mqtt", "wifi": {"ssid": "school"}}


# (mutation, field the error must name, words the message must contain)
MISTAKES = [
    (lambda o: _set(o, ["interval_s"], "120"), "interval_s", "must be an integer"),
    (lambda o: _set(o, ["watchdog_ms"], True), "watchdog_ms", "must be an integer"),
    (lambda o: _set(o, ["interval_s"], 1), "interval_s", "out of range 5..86400"),
    (lambda o: _set(o, ["sensors", 0, "altitude_m"], 4000), "sensors[0].altitude_m", "out of range"),
    (lambda o: _set(o, ["sensors", 0, "part"], "scd44"), "sensors[0].part", "not one of"),
    (_add_tmp117s, "sensors[2].address", "already used by sensors[1]"),
    (lambda o: _set(o, ["sensors", 0, "address"], 0x61), "sensors[0].address", "not an address a scd4x"),
    (_lorawan_without_modem, "link.modem", "missing: a lorawan link needs it"),
    (_mqtt_without_broker, "link.mqtt", "missing: a mqtt link needs it"),
    (lambda o: _set(o, ["link", "wifi"], {"ssid": "x"}), "link.wifi", "not used by a serial link"),
    (lambda o: _set(o, ["intervall_s"], 60), "intervall_s", "unknown key"),
    (lambda o: _set(o, ["sensors", 0, "adress"], 0x62), "sensors[0].adress", "unknown key"),
    (lambda o: _set(o, ["i2c", 0, "sda_pin"], 7), "i2c[0].sda_pin", "SPI flash"),
    (lambda o: _set(o, ["status_led"], {"pin": 34}), "status_led.pin", "input-only"),
    (lambda o: _set(o, ["status_led"], {"pin": 21}), "status_led.pin", "already used by i2c[0].sda_pin"),
    (lambda o: _set(o, ["quality", "co2"], {}), "quality.co2", "unknown quantity"),
    (lambda o: _set(o, ["quality", "no2_ppb"], {}), "quality.no2_ppb", "no sensor on this node measures"),
    (lambda o: _set(o, ["rail"], {"pin": 25, "settle_ms": 1000}), "sensors[0].mode", "needs the sensor powered"),
    (lambda o: _set(o, ["device_id"], "Sch1_Rm12"), "device_id", "a-z, 0-9 and '-'"),
    (lambda o: _set(o, ["mean_period_s"], 100), "mean_period_s", "multiple of interval_s"),
    (lambda o: _set(o, ["sensors"], []), "sensors", "1..8 entries"),
]


@pytest.mark.parametrize("mutate, field, words", MISTAKES, ids=[m[1] + ":" + m[2] for m in MISTAKES])
def test_each_mistake_names_the_field_and_the_file(tmp_path, mutate, field, words):
    obj = example()
    mutate(obj)
    path, e = error_for(tmp_path, obj)
    assert e.field == field
    assert e.source == e.file == path
    assert words in e.message
    assert str(e).startswith("%s: %s: " % (path, field))


def test_mqtt_settings_fail_closed(tmp_path):
    obj = example()
    obj["link"] = {"type": "mqtt", "wifi": {"ssid": "school"},
                   "mqtt": {"host": "gw1.school.example", "tls": False}}
    assert error_for(tmp_path, obj)[1].field == "link.mqtt.tls"
    obj["link"]["mqtt"]["tls"] = True
    assert error_for(tmp_path, obj)[1].field == "link.mqtt.ca_file"
    obj["link"]["mqtt"]["ca_file"] = "ca.pem"
    assert config.validate(obj)["link"]["mqtt"]["username"] is None
    obj["link"]["mqtt"] = {"host": "127.0.0.1", "tls": False}  # a loopback broker (the simulator)
    assert config.validate(obj)["link"]["mqtt"]["port"] == 8883


def test_cross_references_between_sensors(tmp_path):
    obj = example()
    obj["sensors"] = [{"name": "sonar", "part": "i2cxl", "empty_cm": 100, "air_temperature_sensor": "air"}]
    obj["quality"] = {}
    e = error_for(tmp_path, obj)[1]
    assert e.field == "sensors[0].air_temperature_sensor" and "not the name of a tmp117" in e.message
    obj["sensors"].append({"name": "air", "part": "tmp117"})
    cfg = config.validate(obj)
    assert [s["address"] for s in cfg["sensors"]] == [0x70, 0x48]  # the parts' defaults
    obj["sensors"][0]["full_cm"] = 120
    assert error_for(tmp_path, obj)[1].field == "sensors[0].full_cm"


def test_a_file_that_is_not_a_json_object(tmp_path):
    path = tmp_path / "config.json"
    for content in (b"{not json", b"[1, 2]", b"\xff\xfe\x00", b""):
        path.write_bytes(content)
        with pytest.raises(ConfigError) as info:
            config.load_config(str(path))
        assert info.value.field == "" and info.value.source == str(path)
    with pytest.raises(ConfigError) as info:
        config.load_config(str(tmp_path / "absent.json"))
    assert "cannot read it" in info.value.message


# -- secrets ---------------------------------------------------------------------------------------
def test_valid_secrets_and_a_repr_without_them(tmp_path):
    path = write(tmp_path, {"device_key_hex": KEY_HEX, "lorawan_app_key_hex": APP_KEY_HEX,
                            "mqtt_password": "correct horse battery"}, "secrets.json")
    s = config.load_secrets(path)
    assert s.device_key == bytes.fromhex(KEY_HEX) and s.lorawan_app_key == bytes.fromhex(APP_KEY_HEX)
    assert s.mqtt_password == "correct horse battery" and s.wifi_password is None
    text = repr(s) + str(s)
    assert "Secrets" in text
    for secret in (KEY_HEX, APP_KEY_HEX, "correct horse", s.device_key.hex()):
        assert secret not in text


SECRET_MISTAKES = [
    ({"device_key_hex": KEY_HEX[:-2]}, "device_key_hex", "32 or 64 hex digits"),
    ({"device_key_hex": KEY_HEX[:-1] + "g"}, "device_key_hex", "hex digits only"),
    ({"device_key_hex": "00" * 16}, "device_key_hex", "placeholder"),
    ({"device_key_hex": KEY_HEX, "wifi_password": "short"}, "wifi_password", "8..63 characters"),
    ({"device_key_hex": KEY_HEX, "mqtt_password": "changeme"}, "mqtt_password", "12..256"),
    ({"device_key_hex": 12345}, "device_key_hex", "must be a string"),
    ({"device_key_hex": KEY_HEX, "app_key": APP_KEY_HEX}, "app_key", "unknown key"),
    ({}, "device_key_hex", "missing"),
]


@pytest.mark.parametrize("obj, field, words", SECRET_MISTAKES)
def test_secret_errors_name_the_field_but_never_the_value(tmp_path, obj, field, words):
    path = write(tmp_path, obj, "secrets.json")
    with pytest.raises(ConfigError) as info:
        config.load_secrets(path)
    e = info.value
    assert e.field == field and e.source == path and words in e.message
    shown = str(e) + repr(e) + repr(e.args)
    for value in obj.values():
        if isinstance(value, str) and len(value) >= 5:
            assert value not in shown
            assert value[:8] not in shown


def test_sample_password_refused_without_echo():
    with pytest.raises(ConfigError) as info:
        config.validate_secrets({"device_key_hex": KEY_HEX, "mqtt_password": "civicedge"})
    assert "12..256" in info.value.message  # too short comes first; a long sample value:
    with pytest.raises(ConfigError) as info:
        config.validate_secrets({"device_key_hex": KEY_HEX, "wifi_password": "changeme"})
    assert info.value.field == "wifi_password" and "sample value" in info.value.message
    assert "changeme" not in str(info.value)


def test_the_link_decides_which_secrets_are_required():
    cfg = config.load_config(str(EXAMPLE))
    assert config.validate_secrets({"device_key_hex": KEY_HEX}, config=cfg).device_key
    cfg["link"]["type"] = "lorawan"
    with pytest.raises(ConfigError) as info:
        config.validate_secrets({"device_key_hex": KEY_HEX}, config=cfg)
    assert info.value.field == "lorawan_app_key_hex"
    cfg["link"]["type"] = "mqtt"
    with pytest.raises(ConfigError) as info:
        config.validate_secrets({"device_key_hex": KEY_HEX, "mqtt_password": "x" * 20}, config=cfg)
    assert info.value.field == "wifi_password"


def test_validation_does_not_share_state_between_calls():
    a = config.validate(example())
    a["quality"]["co2_ppm"]["lo"] = -1
    a["link"]["serial"]["ack_timeout_ms"] = 1
    b = config.validate(example())
    assert b["quality"]["co2_ppm"]["lo"] == 250.0 and b["link"]["serial"]["ack_timeout_ms"] == 2000


def test_quantities_are_the_protocol_table_s():
    from protocol import quantities

    assert set(config.QUANTITIES) <= set(quantities.BY_QUANTITY)


# -- fuzz: anything JSON can hold raises ConfigError or validates ----------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)


def _leaf_paths(obj, path=()):
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    out = [path]
    for k, v in items:
        out += _leaf_paths(v, path + (k,))
    return out


PATHS = _leaf_paths(example())


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PATHS[1:]), JSON)
def test_any_value_anywhere_raises_only_config_error(path, value):
    obj = example()
    _set(obj, list(path), value)
    try:
        cfg = config.validate(obj, "fuzz.json")
    except ConfigError as e:
        assert e.source == "fuzz.json"
        return
    assert cfg["device_id"]


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_any_document_raises_only_config_error(doc):
    for validate in (config.validate, config.validate_secrets):
        try:
            validate(doc)
        except ConfigError:
            pass


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_raise_only_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "config.json"
    path.write_bytes(data)
    with pytest.raises(ConfigError):
        config.load_config(str(path))


# -- the documentation covers the schema -----------------------------------------------------------
def _doc_paths(fields, prefix):
    out = []
    for spec in fields:
        key, kind, a = spec[0], spec[1], spec[3]
        path = prefix + key
        if kind == "obj":
            out += _doc_paths(a, path + ".")
        elif kind == "list" and a[1] == "obj":
            out += _doc_paths(a[3], path + "[].")
        elif kind == "list" and a[1] == "sensor":
            out += _doc_paths(config._SENSOR, path + "[].")
            for part in config.PARTS.values():
                out += _doc_paths(part[4], path + "[].")
        elif kind == "rules":
            out += _doc_paths(a, path + ".<quantity>.")
        else:
            out.append(path)
    return out


def test_every_field_is_documented():
    doc = (REPO / "docs" / "node-config.md").read_text()
    paths = _doc_paths(config.SCHEMA, "") + _doc_paths(config.SECRETS_SCHEMA, "")
    assert len(paths) > 80
    missing = [p for p in paths if "`%s`" % p not in doc]
    assert missing == []
    for part in config.PARTS:
        assert "### `%s`" % part in doc
