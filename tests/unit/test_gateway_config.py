"""gateway.config: one TOML file validated once; every ConfigError names the key and the file."""

import copy
import json
import pathlib
import re

import pytest
from hypothesis import given, settings, strategies as st

from gateway import config
from gateway.config import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "gateway.example.toml"


def _key(k):
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _lit(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{ %s }" % ", ".join("%s = %s" % (_key(k), _lit(x)) for k, x in v.items())
    return "[%s]" % ", ".join(_lit(x) for x in v)


def _is_tables(v):
    return isinstance(v, list) and v and all(isinstance(x, dict) for x in v)


def dump(d, prefix=""):
    """A small TOML writer for the tests (tomllib only reads)."""
    lines = ["%s = %s" % (_key(k), _lit(v)) for k, v in d.items() if not isinstance(v, dict) and not _is_tables(v)]
    for k, v in d.items():
        p = prefix + _key(k)
        if isinstance(v, dict):
            lines += ["[%s]" % p] + dump(v, p + ".")
        elif _is_tables(v):
            for x in v:
                lines += ["[[%s]]" % p] + dump(x, p + ".")
    return lines


BASE = {
    "config_version": 1,
    "site": {"id": "sch1", "gateway_id": "gw1", "data_dir": "data"},
    "secrets": {"device_keys_file": "keys.toml"},
    "devices": [{"id": "node-1", "profile": "classroom-co2", "link": "serial"},
                {"id": "node-2", "profile": "classroom-co2", "link": "mqtt"}],
    "sources": {"serial": [{"port": "/dev/ttyUSB0"}],
                "site_broker": {"host": "127.0.0.1", "tls": False, "username": "gateway",
                                "password_file": "site.password"}},
    "upstream": {"mqtt": {"host": "mqtt.example.net", "ca_file": "ca.pem", "username": "sch1-gw1",
                          "password_file": "up.password"}},
}


def write(tmp_path, data, name="gateway.toml"):
    path = tmp_path / name
    path.write_text("\n".join(dump(data)) + "\n")
    return path


def load(tmp_path, data):
    return config.load(write(tmp_path, data))


def base():
    return copy.deepcopy(BASE)


# -- valid files -----------------------------------------------------------------------------------
def test_the_example_in_deploy_validates():
    cfg = config.load(EXAMPLE)
    assert (cfg.site_id, cfg.gateway_id) == ("sch1", "gw1")
    assert cfg.upstream_mqtt.mqtt.tls and cfg.upstream_mqtt.mqtt.port == 8883 and cfg.upstream_lorawan is None
    assert (cfg.metrics.host, cfg.metrics.port) == ("127.0.0.1", 9108)
    assert {d.link for d in cfg.devices} == set(config.LINKS)
    assert cfg.sources.i2c.sensors[0].address == 0x62
    assert cfg.timezone == "Europe/London" and cfg.sources.chirpstack.f_port == 2
    assert [s.part for s in cfg.sources.i2c.sensors] == ["scd4x", "tmp117"]
    assert cfg.device_keys_file.startswith("/etc/civicedge/secrets/")
    assert any(not o.enabled for o in cfg.alarm_overrides)


def test_the_examples_commented_lorawan_upstream_validates_in_place_of_mqtt(tmp_path):
    text = EXAMPLE.read_text()
    start = text.index("[upstream.mqtt]")
    end = text.index("# Or, on a site with no internet")
    lorawan = text[end:text.index("# -- Prometheus")]
    lorawan = "\n".join(line[2:] if re.match(r"# (\[|[a-z_]+ = )", line) else line for line in lorawan.splitlines())
    path = tmp_path / "lorawan.toml"
    path.write_text(text[:start] + lorawan + "\n" + text[text.index("# -- Prometheus"):])
    cfg = config.load(path)
    assert cfg.upstream_mqtt is None
    assert cfg.upstream_lorawan.dialect == "rak3172" and cfg.upstream_lorawan.dev_eui == "70B3D57ED0061A30"
    assert cfg.upstream_lorawan.max_delay_s == 900


def test_defaults_and_relative_paths(tmp_path):
    cfg = load(tmp_path, base())
    up = cfg.upstream_mqtt
    assert (up.mqtt.port, up.mqtt.tls, up.mqtt.tls_verify, up.mqtt.keepalive_s) == (8883, True, True, 60)
    assert up.mqtt.client_id == "civicedge-sch1-gw1" and up.encoding == "senml-json"
    assert cfg.sources.site_broker.port == 1883  # plaintext default port
    assert cfg.sources.serial[0].baudrate == 115200
    assert cfg.data_dir == str(tmp_path / "data")  # relative to the configuration file
    assert cfg.outbox.path == str(tmp_path / "data" / "outbox.sqlite3")
    assert cfg.device_keys_file == str(tmp_path / "keys.toml")
    assert up.mqtt.password_file == str(tmp_path / "up.password")
    assert cfg.metrics == config.Metrics(True, "127.0.0.1", 9108)
    assert cfg.file == str(tmp_path / "gateway.toml")


def test_ipv6_metrics_and_alarm_override(tmp_path):
    d = base()
    d["metrics"] = {"listen": "[::1]:9200"}
    d["alarms"] = {"classroom-co2": {"co2_high_20min": {"threshold": 1200, "duration_s": 900, "severity": "critical"},
                                     "co2_daily_mean_high": {"enabled": False}}}
    cfg = load(tmp_path, d)
    assert (cfg.metrics.host, cfg.metrics.port) == ("::1", 9200)
    over = {o.alarm_id: o for o in cfg.alarm_overrides}
    assert over["co2_high_20min"].values == {"threshold": 1200, "duration_s": 900, "severity": "critical"}
    assert over["co2_high_20min"].enabled and not over["co2_daily_mean_high"].enabled


# -- every kind of error names the key and the file -------------------------------------------------
def _set(path, value):
    def edit(d):
        *parents, last = path
        for p in parents:
            d = d[p]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value
    return edit


def _add_lorawan_device(d):
    d["devices"].append({"id": "bin-1", "profile": "bin-level", "link": "lorawan", "dev_eui": "70b3d57ed0061a2d"})


CASES = [
    # (id, edit, key, words in the message)
    ("wrong type", _set(("upstream", "mqtt", "port"), "8883"), "upstream.mqtt.port", "must be an integer"),
    ("bool is not int", _set(("upstream", "mqtt", "port"), True), "upstream.mqtt.port", "must be an integer"),
    ("int is not bool", _set(("upstream", "mqtt", "tls"), 1), "upstream.mqtt.tls", "true or false"),
    ("out of range", _set(("upstream", "mqtt", "port"), 70000), "upstream.mqtt.port", "1..65535"),
    ("below range", _set(("sources", "serial", 0, "baudrate"), 300), "sources.serial[0].baudrate", "1200..921600"),
    ("outbox bound", _set(("outbox",), {"max_age_s": 60}), "outbox.max_age_s", "out of range"),
    ("unknown key", _set(("upstream", "mqtt", "keepalive"), 60), "upstream.mqtt.keepalive", "unknown key"),
    ("unknown table", _set(("metric",), {"listen": "127.0.0.1:9108"}), "metric", "unknown key"),
    ("unknown device key", _set(("devices", 0, "proflie"), "x"), "devices[0].proflie", "unknown key"),
    ("missing required", _set(("upstream", "mqtt", "username"), KeyError), "upstream.mqtt.username", "missing"),
    ("missing version", _set(("config_version",), KeyError), "config_version", "missing"),
    ("missing site", _set(("site",), KeyError), "site", "missing"),
    ("wrong version", _set(("config_version",), 2), "config_version", "not one of 1"),
    ("bad choice", _set(("upstream", "mqtt", "encoding"), "json"), "upstream.mqtt.encoding", "senml-json"),
    ("bad id", _set(("site", "id"), "Sch 1"), "site.id", "a-z 0-9"),
    ("empty text", _set(("upstream", "mqtt", "host"), " "), "upstream.mqtt.host", "empty"),
    ("host with scheme", _set(("upstream", "mqtt", "host"), "mqtts://x.example"), "upstream.mqtt.host", "no scheme"),
    ("host with port", _set(("upstream", "mqtt", "host"), "x.example:8883"), "upstream.mqtt.host", "no scheme, port"),
    ("duplicate device", _set(("devices", 1, "id"), "node-1"), "devices[1].id", "already devices[0]"),
    ("unknown profile", _set(("devices", 0, "profile"), "classroom-c02"), "devices[0].profile", "no profile"),
    ("lorawan without eui", _set(("devices", 0, "link"), "lorawan"), "devices[0].dev_eui", "DevEUI"),
    ("eui on a serial device", _set(("devices", 0, "dev_eui"), "70b3d57ed0061a2d"), "devices[0].dev_eui",
     "only a lorawan"),
    ("lorawan without chirpstack", _add_lorawan_device, "devices[2].link", "[sources.chirpstack]"),
    ("mqtt device without broker", _set(("sources", "site_broker"), KeyError), "devices[1].link", "site_broker"),
    ("keys file missing", _set(("secrets",), KeyError), "secrets.device_keys_file", "need keys"),
    ("attribute not text", _set(("devices", 0, "attributes"), {"outlet": 1}), "devices[0].attributes.outlet",
     "must be text"),
    ("no upstream", _set(("upstream",), {}), "upstream", "exactly one"),
    ("two upstreams", _set(("upstream", "lorawan"), {"port": "/dev/ttyAMA0", "dialect": "rak3172",
                                                     "join_eui": "00" * 8, "app_key_file": "k"}),
     "upstream", "exactly one"),
    ("bad dialect", _set(("upstream",), {"lorawan": {"port": "/dev/ttyAMA0", "dialect": "rak", "join_eui": "00" * 8,
                                                     "app_key_file": "k"}}), "upstream.lorawan.dialect", "rak3172"),
    ("plaintext with TLS files", _set(("upstream", "mqtt", "tls"), False), "upstream.mqtt.tls", "TLS files"),
    ("cert without key", _set(("upstream", "mqtt", "client_cert_file"), "gw.crt"), "upstream.mqtt.client_key_file",
     "both"),
    ("no password file", _set(("upstream", "mqtt", "password_file"), KeyError), "upstream.mqtt.password_file",
     "password"),
    ("no sources", _set(("sources",), {}), "sources", "no source"),
    ("bad application id", _set(("sources", "chirpstack"), {"host": "127.0.0.1", "tls": False, "username": "gw",
                                                           "password_file": "p", "application_id": "app-1"}),
     "sources.chirpstack.application_id", "UUID"),
    ("bad metrics listen", _set(("metrics",), {"listen": "9108"}), "metrics.listen", "HOST:PORT"),
    ("local device not the i2c one", _set(("devices", 0, "link"), "local"), "devices[0].link", "sources.i2c"),
    ("i2c without sensors", _set(("sources", "i2c"), {"device_id": "node-1"}), "sources.i2c.device_id", "local"),
    ("unknown alarm", _set(("alarms",), {"classroom-co2": {"co2_high": {"threshold": 1}}}),
     "alarms.classroom-co2.co2_high", "no alarm"),
    ("alarm of an unknown profile", _set(("alarms",), {"classroom": {"x": {}}}), "alarms.classroom", "no profile"),
    ("alarm key of another rule", _set(("alarms",), {"classroom-co2": {"co2_high_20min": {"window": "day"}}}),
     "alarms.classroom-co2.co2_high_20min", "window"),
    ("alarm value wrong type", _set(("alarms",), {"classroom-co2": {"co2_high_20min": {"threshold": "high"}}}),
     "alarms.classroom-co2.co2_high_20min", "threshold"),
    ("alarm identity", _set(("alarms",), {"classroom-co2": {"co2_high_20min": {"quantity": "temperature_c"}}}),
     "alarms.classroom-co2.co2_high_20min.quantity", "cannot be overridden"),
    ("alarm enabled not bool", _set(("alarms",), {"classroom-co2": {"co2_high_20min": {"enabled": "no"}}}),
     "alarms.classroom-co2.co2_high_20min.enabled", "true or false"),
    ("device with the gateway's id", _set(("devices", 1, "id"), "gw1"), "devices[1].id", "site.gateway_id"),
    ("unknown time zone", _set(("site", "timezone"), "Europe/Lundon"), "site.timezone", "not a time zone"),
    ("time zone as a path", _set(("site", "timezone"), "../../etc/passwd"), "site.timezone", "IANA name"),
    ("time zone not a zone file", _set(("site", "timezone"), "zone.tab"), "site.timezone", "not a time zone"),
    ("puback timeout zero", _set(("upstream", "mqtt", "puback_timeout_s"), 0), "upstream.mqtt.puback_timeout_s",
     "1..3600"),
    ("puback timeout text", _set(("upstream", "mqtt", "puback_timeout_s"), "60"),
     "upstream.mqtt.puback_timeout_s", "must be an integer"),
    ("chirpstack fport", _set(("sources", "chirpstack"), {"host": "127.0.0.1", "tls": False, "username": "gw",
                                                         "password_file": "p", "f_port": 224}),
     "sources.chirpstack.f_port", "1..223"),
]


@pytest.mark.parametrize("edit,key,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_config_error_names_the_key_and_the_file(tmp_path, edit, key, words):
    d = base()
    edit(d)
    path = write(tmp_path, d)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    e = info.value
    assert (e.key, e.file) == (key, str(path))
    assert words in e.message
    assert str(e).startswith("%s: %s: " % (path, key))


def test_i2c_source_sensors_are_checked(tmp_path):
    d = base()
    d["devices"].append({"id": "gw1-env", "profile": "classroom-co2", "link": "local"})
    d["sources"]["i2c"] = {"device_id": "gw1-env", "sensors": [{"name": "co2", "part": "scd4x", "address": 0x62},
                                                               {"name": "t", "part": "tmp117", "address": 0x62}]}
    with pytest.raises(ConfigError) as info:
        load(tmp_path, d)
    assert info.value.key == "sources.i2c.sensors[1].address" and "already used" in info.value.message
    d["sources"]["i2c"]["sensors"][1]["address"] = 0x48
    cfg = load(tmp_path, d)
    assert [s.address for s in cfg.sources.i2c.sensors] == [0x62, 0x48] and cfg.sources.i2c.bus == 1


def test_time_zone_and_chirpstack_fport_defaults_and_choices(tmp_path):
    d = base()
    d["sources"]["chirpstack"] = {"host": "127.0.0.1", "tls": False, "username": "gw", "password_file": "p"}
    cfg = load(tmp_path, d)
    assert cfg.timezone == "Europe/London" == config.DEFAULT_TIMEZONE
    assert cfg.sources.chirpstack.f_port == config.LORAWAN_FPORT == 2
    d["site"]["timezone"] = "Pacific/Auckland"
    d["sources"]["chirpstack"]["f_port"] = 10
    cfg = load(tmp_path, d)
    assert (cfg.timezone, cfg.sources.chirpstack.f_port) == ("Pacific/Auckland", 10)


def test_the_lorawan_fport_default_is_the_nodes_and_the_profiles():
    import tomllib

    schema = (REPO / "firmware" / "app" / "config_schema.py").read_text()
    assert '("port", _int(1, 223, %d))' % config.LORAWAN_FPORT in schema  # the node's default
    for prof in sorted((REPO / "hardware" / "profiles").glob("*.toml")):
        lorawan = tomllib.loads(prof.read_text()).get("link", {}).get("lorawan")
        if lorawan is not None:
            assert lorawan["port"] == config.LORAWAN_FPORT, prof.name


# -- the Pi's own sensors: calibration sheets, bin depths, one sensor per quantity --------------------
SHEET = {"sensor_type": "NO2-B43F", "serial_number": "212345678", "we_electronic_zero_mv": 228.0,
         "we_sensor_zero_mv": 10.0, "ae_electronic_zero_mv": 231.0, "ae_sensor_zero_mv": 3.0,
         "we_sensitivity_mv_ppb": 0.212}


def _local(tmp_path, *sensors, sheet=SHEET):
    """BASE with a local device reading ``sensors``, and ``sheet`` as no2.toml beside it."""
    (tmp_path / "no2.toml").write_text("\n".join(dump(sheet)) + "\n")
    d = base()
    d["devices"].append({"id": "gw1-env", "profile": "classroom-co2", "link": "local"})
    d["sources"]["i2c"] = {"device_id": "gw1-env", "sensors": [dict(s) for s in sensors]}
    return d


CO2 = {"name": "co2", "part": "scd4x", "address": 0x62}
AIR = {"name": "air", "part": "tmp117", "address": 0x48}
NO2 = {"name": "no2", "part": "ads1115", "address": 0x49, "calibration_file": "no2.toml"}
BIN = {"name": "bin", "part": "i2cxl", "address": 0x70}


def test_a_no2_sensor_takes_its_calibration_sheet_and_a_temperature_sensor(tmp_path):
    from drivers.no2b43f import Calibration

    cfg = load(tmp_path, _local(tmp_path, CO2, AIR, NO2))
    no2 = cfg.sources.i2c.sensors[2].options
    assert Calibration.from_sheet(no2["calibration"]).to_sheet() == Calibration.from_sheet(SHEET).to_sheet()
    # defaults: the TMP117 corrects it (not the SCD4x listed first), WE/AE on AIN0/AIN1, algorithm 1
    assert (no2["temperature_sensor"], no2["we_mux"], no2["ae_mux"], no2["algorithm"]) == ("air", "AIN0", "AIN1", 1)
    assert cfg.sources.i2c.sensors[0].options == cfg.sources.i2c.sensors[1].options == {}
    cfg = load(tmp_path, _local(tmp_path, CO2, dict(NO2, temperature_sensor="co2", we_mux="AIN2", algorithm=3)))
    no2 = cfg.sources.i2c.sensors[1].options
    assert (no2["temperature_sensor"], no2["we_mux"], no2["ae_mux"], no2["algorithm"]) == ("co2", "AIN2", "AIN1", 3)


def test_a_json_calibration_sheet_is_read_too(tmp_path):
    d = _local(tmp_path, AIR, dict(NO2, calibration_file="sheet.json"))
    (tmp_path / "sheet.json").write_text(json.dumps(SHEET))
    assert load(tmp_path, d).sources.i2c.sensors[1].options["calibration"]["we_sensitivity_mv_ppb"] == 0.212


def test_a_bins_depths_give_the_sonar_its_fill_ratio(tmp_path):
    cfg = load(tmp_path, _local(tmp_path, AIR, dict(BIN, empty_cm=118, air_temperature_sensor="air")))
    assert cfg.sources.i2c.sensors[1].options == {"repeats": 5, "empty_cm": 118.0, "full_cm": 30.0,
                                                  "air_temperature_sensor": "air"}
    cfg = load(tmp_path, _local(tmp_path, dict(BIN, empty_cm=100.0, full_cm=25.5, repeats=3)))
    assert cfg.sources.i2c.sensors[0].options == {"repeats": 3, "empty_cm": 100.0, "full_cm": 25.5}
    assert load(tmp_path, _local(tmp_path, BIN)).sources.i2c.sensors[0].options == {"repeats": 5}


LOCAL_CASES = [
    # (id, sensors, sheet, key, words)
    ("no2 without its sheet", (AIR, {k: v for k, v in NO2.items() if k != "calibration_file"}), SHEET,
     "sources.i2c.sensors[1].calibration_file", "calibration sheet"),
    ("sheet file absent", (AIR, dict(NO2, calibration_file="absent.toml")), SHEET,
     "sources.i2c.sensors[1].calibration_file", "cannot be read"),
    ("sheet lacks a field", (AIR, NO2), {k: v for k, v in SHEET.items() if k != "ae_electronic_zero_mv"},
     "sources.i2c.sensors[1].calibration_file", "ae_electronic_zero_mv is missing"),
    ("sheet of another sensor", (AIR, NO2), dict(SHEET, sensor_type="OX-B431"),
     "sources.i2c.sensors[1].calibration_file", "sensor_type"),
    ("sheet with a zero sensitivity", (AIR, NO2), dict(SHEET, we_sensitivity_mv_ppb=0),
     "sources.i2c.sensors[1].calibration_file", "we_sensitivity_mv_ppb"),
    ("no2 without a temperature sensor", (NO2,), SHEET, "sources.i2c.sensors[0].temperature_sensor", "tmp117"),
    ("no2 corrected by a sonar", (AIR, BIN, dict(NO2, temperature_sensor="bin")), SHEET,
     "sources.i2c.sensors[2].temperature_sensor", "'bin' is not the name of a tmp117 or scd4x"),
    ("we and ae on one input", (AIR, dict(NO2, ae_mux="AIN0")), SHEET, "sources.i2c.sensors[1].ae_mux", "different"),
    ("bad mux", (AIR, dict(NO2, we_mux="A0")), SHEET, "sources.i2c.sensors[1].we_mux", "AIN0"),
    ("algorithm 2 with AEo 0", (AIR, dict(NO2, algorithm=2)), dict(SHEET, ae_sensor_zero_mv=0.0),
     "sources.i2c.sensors[1].algorithm", "divides"),
    ("full without empty", (dict(BIN, full_cm=30),), SHEET, "sources.i2c.sensors[0].empty_cm", "needs both"),
    ("full below the floor", (dict(BIN, empty_cm=50, full_cm=60),), SHEET, "sources.i2c.sensors[0].full_cm",
     "less than empty_cm"),
    ("depth out of range", (dict(BIN, empty_cm=900),), SHEET, "sources.i2c.sensors[0].empty_cm", "20..765"),
    ("sonar air sensor unknown", (dict(BIN, air_temperature_sensor="air"),), SHEET,
     "sources.i2c.sensors[0].air_temperature_sensor", "there is none"),
    ("a setting of another part", (dict(AIR, empty_cm=100),), SHEET, "sources.i2c.sensors[0].empty_cm",
     "a setting of i2cxl, not of tmp117"),
    ("a typo in a setting", (dict(BIN, empty=100),), SHEET, "sources.i2c.sensors[0].empty", "unknown key"),
    ("two of one quantity", (AIR, dict(AIR, name="pipe", address=0x4A)), SHEET, "sources.i2c.sensors[1].part",
     "'air' and 'pipe' both report temperature_c"),
    ("two sonars", (BIN, dict(BIN, name="bin2", address=0x71)), SHEET, "sources.i2c.sensors[1].part",
     "both report distance_cm"),
]


@pytest.mark.parametrize("sensors,sheet,key,words", [c[1:] for c in LOCAL_CASES], ids=[c[0] for c in LOCAL_CASES])
def test_local_sensor_settings_are_checked_naming_the_key(tmp_path, sensors, sheet, key, words):
    path = write(tmp_path, _local(tmp_path, *sensors, sheet=sheet))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert (info.value.key, info.value.file) == (key, str(path))
    assert words in info.value.message


def test_an_scd4x_beside_a_tmp117_is_one_device_the_tmp117_gives_temperature(tmp_path):
    from gateway.sources.i2c_sensors import assign_reports, part_quantities

    cfg = load(tmp_path, _local(tmp_path, CO2, AIR))
    s = cfg.sources.i2c.sensors
    assert assign_reports([(x.name, x.part, part_quantities(x.part, x.options)) for x in s]) == [
        ["co2_ppm", "rh_percent"], ["temperature_c"]]


def test_the_examples_commented_local_sensors_validate_uncommented(tmp_path):
    text = EXAMPLE.read_text()
    start, end = text.index("# An Alphasense NO2-B43F"), text.index("# -- the outbox")
    block = "\n".join(line[2:] if re.match(r"# (\[|[a-z_]+ = )", line) else line
                      for line in text[start:end].splitlines())
    block = block.replace("/etc/civicedge/no2-b43f-sheet.toml", str(tmp_path / "no2.toml"))
    (tmp_path / "no2.toml").write_text("\n".join(dump(SHEET)) + "\n")
    path = tmp_path / "local.toml"
    path.write_text(text[:start] + block + "\n" + text[end:])
    cfg = config.load(path)
    parts = {s.name: s for s in cfg.sources.i2c.sensors}
    assert [s.part for s in cfg.sources.i2c.sensors] == ["scd4x", "tmp117", "ads1115", "i2cxl"]
    assert parts["no2"].options["temperature_sensor"] == "air" and "calibration" in parts["no2"].options
    assert parts["bin"].options == {"repeats": 5, "empty_cm": 100.0, "full_cm": 30.0, "air_temperature_sensor": "air"}


def test_bad_toml_names_the_file_with_an_empty_key(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text("config_version = 1\n[site\nid = 'x'\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert (info.value.key, info.value.file) == ("", str(path))
    assert str(info.value).startswith(str(path) + ": not valid TOML")


def test_an_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "absent.toml")
    assert info.value.file == str(tmp_path / "absent.toml") and "--config" in info.value.message


# -- secrets never appear in an error ---------------------------------------------------------------
def test_a_password_typed_into_the_file_is_refused_without_being_shown(tmp_path):
    d = base()
    d["upstream"]["mqtt"]["password"] = "Tr0ub4dor&3-hunter2-x9"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, d)
    assert info.value.key == "upstream.mqtt.password" and "password_file" in info.value.message
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("key,value", [("password_file", 123456789123), ("client_key_file", ["s3cr3t-k3y-b1ts"]),
                                       ("host", {"token": "s3cr3t-k3y-b1ts"})])
def test_values_of_secret_keys_and_tables_are_not_echoed(tmp_path, key, value):
    d = base()
    d["upstream"]["mqtt"][key] = value
    with pytest.raises(ConfigError) as info:
        load(tmp_path, d)
    assert info.value.key == "upstream.mqtt." + key
    assert "123456789123" not in str(info.value) and "s3cr3t" not in str(info.value)


def test_a_wrong_value_of_an_ordinary_key_is_shown():
    with pytest.raises(ConfigError) as info:
        config.parse(EXAMPLE.read_text().replace('encoding = "senml-json"', 'encoding = "xml"'), "g.toml")
    assert "'xml'" in str(info.value) and info.value.key == "upstream.mqtt.encoding"


# -- hostile input: only ConfigError ---------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_config_error(text):
    try:
        config.parse(text, "fuzz.toml")
    except ConfigError as e:
        assert e.file == "fuzz.toml"


_LINES = EXAMPLE.read_text().splitlines()
_VALUE_LINES = [i for i, line in enumerate(_LINES) if re.match(r"\s*[A-Za-z_0-9-]+ = ", line)]
_TOML_VALUES = st.one_of(
    st.integers(-2**63, 2**63 - 1).map(str), st.floats(allow_nan=False).map(repr).filter(lambda s: "inf" not in s),
    st.booleans().map(lambda b: "true" if b else "false"), st.text(max_size=20).map(json.dumps),
    st.just("[]"), st.just("{}"), st.just('[1, "a"]'), st.just("{ a = 1 }"), st.just("1979-05-27T07:32:00Z"))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_VALUE_LINES), _TOML_VALUES), min_size=1, max_size=3))
def test_any_value_anywhere_in_the_example_raises_only_config_error(changes):
    lines = list(_LINES)
    for i, value in changes:
        lines[i] = lines[i].split(" = ", 1)[0] + " = " + value
    try:
        cfg = config.parse("\n".join(lines), "fuzz.toml")
    except ConfigError as e:
        assert e.file == "fuzz.toml"
    else:
        assert isinstance(cfg, config.GatewayConfig)


def test_mqtt_protocol_and_history_bounds_defaults_and_checks(tmp_path):
    d = base()
    cfg = load(tmp_path, d)
    assert cfg.upstream_mqtt.protocol == "5"
    assert (cfg.outbox.history_max_bytes, cfg.outbox.history_max_age_s) == (64 * 2**20, 35 * 86400)
    d["upstream"]["mqtt"]["protocol"] = "3.1.1"
    d["outbox"] = {"history_max_bytes": 0, "history_max_age_s": 0}
    cfg = load(tmp_path, d)
    assert cfg.upstream_mqtt.protocol == "3.1.1"
    assert (cfg.outbox.history_max_bytes, cfg.outbox.history_max_age_s) == (0, 0)
    d["upstream"]["mqtt"]["protocol"] = "4"
    with pytest.raises(ConfigError) as e:
        load(tmp_path, d)
    assert e.value.key == "upstream.mqtt.protocol" and "gateway.toml" in str(e.value)
    d["upstream"]["mqtt"]["protocol"] = "5"
    d["outbox"] = {"history_max_bytes": -1}
    with pytest.raises(ConfigError) as e:
        load(tmp_path, d)
    assert e.value.key == "outbox.history_max_bytes"


def test_the_puback_timeout_defaults_to_60_s_and_is_read(tmp_path):
    d = base()
    assert load(tmp_path, d).upstream_mqtt.puback_timeout_s == 60
    d["upstream"]["mqtt"]["puback_timeout_s"] = 15
    assert load(tmp_path, d).upstream_mqtt.puback_timeout_s == 15
