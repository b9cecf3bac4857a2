"""gateway.security: each check fires on its condition and not otherwise, on real files; no
password or key ever reaches a finding, an error, the CLI's output or a log line."""

import base64
import dataclasses
import logging
import os
import stat

import pytest

from civicedge import cmd_gateway
from gateway import config, security
from gateway.config import ConfigError
from gateway.security import Finding
from tests.gatewaykit import CA_PEM, device_toml, mqtt_toml, site_toml, write_file, write_site

# Distinctive secrets: the leak tests look for them (and parts of them) everywhere.
UP_PW = base64.b64encode(bytes(range(7, 31))).decode()  # 32 characters, as openssl rand -base64 24
SITE_PW = "Qv7-Lm2!Zr9#Tx4$Kb8%Nw"
KEY1 = bytes.fromhex("9f3c1ab27e5d4c8801f6e2a9b37d5c10")
KEY2 = bytes.fromhex("5aa1c3e4f7091b2d3c4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829304")
APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")

CONFIG = (site_toml(data_dir=None) + device_toml("node-1") + device_toml("node-2", "classroom-co2", "mqtt")
          + '[[sources.serial]]\nport = "/dev/ttyUSB0"\n'
          + mqtt_toml("sources.site_broker", "gateway", "secrets/site.password", tls=False)
          + mqtt_toml("upstream.mqtt", "sch1-gw1", "secrets/up.password", host="mqtt.example.net",
                      ca_file="ca.pem"))


@pytest.fixture
def owner():
    """The uid the agent "runs as" in these tests: ours, or nobody's when we are root (a root
    euid is itself a finding), with the files chowned to it."""
    return 65534 if os.geteuid() == 0 else os.geteuid()


@pytest.fixture
def site(tmp_path, owner):
    """A valid, secure configuration on disk: returns a function writing ``(cfg, path)``."""
    def make(text=CONFIG, up_pw=UP_PW + "\n", keys='"node-1" = "%s"\n"node-2" = "%s"\n' % (KEY1.hex(), KEY2.hex()),
             mode=0o600):
        path = write_site(tmp_path, text, {"up.password": up_pw, "site.password": SITE_PW, "keys.toml": keys},
                          modes={"up.password": mode}, owner=owner)
        write_file(tmp_path / "ca.pem", CA_PEM, 0o644, 0)
        return config.load(path), path
    return make


def settings_of(findings):
    return sorted(f.setting for f in findings)


# -- passwords ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("pw", [UP_PW, SITE_PW, "k3J9-xQ2m-Vb7Z-pL4w", "aB3dE6gH9jK2mN5p"])
def test_a_strong_password_passes(pw):
    assert security.password_problem(pw) is None


@pytest.mark.parametrize("pw,why", [
    ("", "empty"),
    ("mosquitto", "sample"),
    ("Raspberry", "sample"),
    ("12345678", "sample"),
    ("my-CHANGEME-x7Qz9LpW", "sample"),  # placeholder words, whatever else is around them
    ("Example-k3J9xQ2mVb7Z", "sample"),
    ("k3J9xQ2mVb7Zp\nL4wT", "more than one line"),
    ("k3J9xQ2mVb7ZpL4", "shorter than 16"),  # 15 random characters
    ("ababababcdcdcdcdabab", "fewer than 10 different"),
    ("k3J9xQ2mVbbbbZpL4wT", "run of 4"),  # repeated
    ("k3J9xQ2mVb6789ZpL4wT", "run of 4"),  # ascending
    ("k3J9xQ2mVbdcbaZpL4wT", "run of 4"),  # descending
])
def test_a_weak_password_is_refused_with_its_reason(pw, why):
    assert why in security.password_problem(pw)


def test_a_run_of_three_is_not_a_run():
    assert security.password_problem("k3J9xQ2mVb678ZpL4wT") is None
    assert security.password_problem("k3J9xQ2mVbbbZpL4wT") is None


def test_one_trailing_newline_is_not_part_of_the_password():
    assert security.parse_password(UP_PW + "\n") == UP_PW
    assert security.parse_password(UP_PW + "\r\n") == UP_PW
    assert security.parse_password(UP_PW) == UP_PW
    assert security.password_problem(security.parse_password(UP_PW + "\n\n")) == "holds more than one line"


# -- transport --------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "::1"])
def test_loopback_hosts(host):
    assert security.is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.5", "128.0.0.1", "localhost.example.com", "mqtt.example.net",
                                  "::2", "fe80::1", "0.0.0.0"])
def test_non_loopback_hosts(host):
    assert not security.is_loopback(host)


def _conn(**kw):
    base = dict(host="mqtt.example.net", port=8883, tls=True, tls_verify=True, ca_file=None, client_cert_file=None,
                client_key_file=None, username="u", password_file="/p", client_id="c", keepalive_s=60)
    base.update(kw)
    return config.MQTTConnection(**base)


def test_plaintext_fires_only_for_a_non_loopback_host():
    assert settings_of(security.check_connection("upstream.mqtt", _conn(tls=False))) == ["upstream.mqtt.tls"]
    assert security.check_connection("upstream.mqtt", _conn(tls=False, host="127.0.0.1")) == []
    assert security.check_connection("upstream.mqtt", _conn(tls=False, host="localhost")) == []
    assert security.check_connection("upstream.mqtt", _conn()) == []
    f = security.check_connection("x", _conn(tls=False, host="10.1.2.3"))[0]
    assert "10.1.2.3" in f.problem and "tls = true" in f.fix


def test_tls_verification_off_fires_wherever_it_is():
    assert settings_of(security.check_connection("sources.chirpstack", _conn(tls_verify=False))) == [
        "sources.chirpstack.tls_verify"]
    assert settings_of(security.check_connection("s", _conn(tls=False, host="::1", tls_verify=False))) == [
        "s.tls_verify"]


def test_running_as_root_is_refused():
    assert [f.setting for f in security.check_user(0)] == [""]
    assert "root" in str(security.check_user(0)[0])
    assert security.check_user(1000) == []


# -- the whole configuration on real files ---------------------------------------------------------------
def test_a_secure_site_has_no_findings_and_enforce_returns_the_secrets(site, owner):
    cfg, _ = site()
    assert security.check(cfg, security.gather(cfg, owner)) == []
    secrets = security.enforce(cfg, euid=owner)
    assert secrets.password("upstream.mqtt") == UP_PW and secrets.password("sources.site_broker") == SITE_PW
    assert secrets.device_keys == {"node-1": KEY1, "node-2": KEY2} and secrets.app_key is None
    assert UP_PW not in repr(secrets) and KEY1.hex() not in repr(secrets)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_a_secrets_file_readable_by_others_is_refused(site, owner, mode):
    cfg, _ = site(mode=mode)
    findings = security.check(cfg, security.gather(cfg, owner))
    assert settings_of(findings) == ["upstream.mqtt.password_file"]
    assert "%04o" % mode in findings[0].problem and findings[0].fix.startswith("chmod 600 ")
    with pytest.raises(security.InsecureConfig) as info:
        security.enforce(cfg, euid=owner)
    assert [f.setting for f in info.value.findings] == ["upstream.mqtt.password_file"]


def test_a_read_only_secrets_file_is_fine(site, owner):
    cfg, _ = site(mode=0o400)
    assert security.check(cfg, security.gather(cfg, owner)) == []


def test_a_secrets_file_owned_by_another_user_is_refused(site, owner):
    cfg, _ = site()
    other = owner + 1 if owner + 1 != 0 else owner + 2
    findings = security.check(cfg, security.gather(cfg, other))
    assert settings_of(findings) == ["secrets.device_keys_file", "sources.site_broker.password_file",
                                     "upstream.mqtt.password_file"]
    assert all("owned by" in f.problem and f.fix.startswith("chown ") for f in findings)


def test_root_is_refused_even_with_everything_else_right(site, owner):
    cfg, _ = site()
    facts = security.gather(cfg, owner)  # the same files, as root would own them
    facts = dataclasses.replace(facts, euid=0, files=tuple(dataclasses.replace(f, uid=0) for f in facts.files))
    assert settings_of(security.check(cfg, facts)) == [""]
    # Files owned by the service user: as root, only the root finding (never "chown root").
    findings = security.check(cfg, security.gather(cfg, 0))
    assert settings_of(findings) == [""] and "civicedge" in findings[0].fix


@pytest.mark.parametrize("pw,why", [("", "is empty"), ("changeme\n", "sample"), ("short-Pw-9\n", "shorter")])
def test_a_weak_password_file_is_refused(site, owner, pw, why):
    cfg, _ = site(up_pw=pw)
    findings = security.check(cfg, security.gather(cfg, owner))
    assert settings_of(findings) == ["upstream.mqtt.password_file"] and why in findings[0].problem


def test_missing_files_and_directories_are_findings(site, owner, tmp_path):
    cfg, _ = site()
    os.remove(tmp_path / "ca.pem")
    os.remove(tmp_path / "secrets" / "site.password")
    os.mkdir(tmp_path / "secrets" / "site.password")
    findings = security.check(cfg, security.gather(cfg, owner))
    assert settings_of(findings) == ["sources.site_broker.password_file", "upstream.mqtt.ca_file"]
    by = {f.setting: f for f in findings}
    assert "not a regular file" in by["sources.site_broker.password_file"].problem
    assert "cannot open" in by["upstream.mqtt.ca_file"].problem


def test_a_ca_file_may_be_world_readable_but_a_client_key_may_not(site, owner, tmp_path):
    text = CONFIG.replace('password_file = "secrets/up.password"\n',
                          'password_file = "secrets/up.password"\nclient_cert_file = "gw.crt"\n'
                          'client_key_file = "secrets/gw.key"\n')
    write_file(tmp_path / "gw.crt", "cert", 0o644, 0)
    write_file(tmp_path / "secrets" / "gw.key", "key", 0o644, owner)
    cfg, _ = site(text=text)
    assert settings_of(security.check(cfg, security.gather(cfg, owner))) == ["upstream.mqtt.client_key_file"]


@pytest.mark.parametrize("mode,fires", [(0o644, False), (0o444, False), (0o664, True), (0o666, True)])
def test_a_ca_file_others_can_replace_is_refused(site, owner, tmp_path, mode, fires):
    cfg, _ = site()
    os.chmod(tmp_path / "ca.pem", mode)
    findings = security.check(cfg, security.gather(cfg, owner))
    assert settings_of(findings) == (["upstream.mqtt.ca_file"] if fires else [])


def test_placeholder_and_malformed_device_keys(site, owner):
    cfg, _ = site(keys='"node-1" = "%s"\n"node-2" = "%s"\n' % ("00" * 16, KEY2.hex()))
    findings = security.check(cfg, security.gather(cfg, owner))
    assert settings_of(findings) == ["secrets.device_keys_file"] and "node-1" in findings[0].problem
    cfg, _ = site(keys='"node-1" = "%s"\n' % KEY1.hex())  # node-2 (mqtt) has none
    findings = security.check(cfg, security.gather(cfg, owner))
    assert settings_of(findings) == ["secrets.device_keys_file"] and "node-2" in findings[0].problem


def test_lorawan_app_key_file(site, owner, tmp_path):
    text = CONFIG[:CONFIG.index("[upstream.mqtt]")] + (
        '[upstream.lorawan]\nport = "/dev/ttyAMA0"\ndialect = "rak3172"\njoin_eui = "0000000000000000"\n'
        'app_key_file = "secrets/appkey.hex"\n')
    write_file(tmp_path / "secrets" / "appkey.hex", APP_KEY.hex() + "\n", 0o600, owner)
    cfg, _ = site(text=text)
    assert security.enforce(cfg, euid=owner).app_key == APP_KEY
    write_file(tmp_path / "secrets" / "appkey.hex", "01" * 16, 0o600, owner)
    findings = security.check(cfg, security.gather(cfg, owner))
    assert settings_of(findings) == ["upstream.lorawan.app_key_file"] and "placeholder" in findings[0].problem


def test_metrics_beyond_loopback_is_refused(site, owner):
    cfg, _ = site(text=CONFIG + '[metrics]\nlisten = "0.0.0.0:9108"\n')
    assert settings_of(security.check(cfg, security.gather(cfg, owner))) == ["metrics.listen"]
    cfg, _ = site(text=CONFIG + '[metrics]\nenabled = false\nlisten = "0.0.0.0:9108"\n')
    assert security.check(cfg, security.gather(cfg, owner)) == []


def test_findings_name_the_setting_and_what_to_do():
    f = Finding("upstream.mqtt.tls", "plaintext MQTT to x", "set tls = true")
    assert str(f) == "upstream.mqtt.tls: plaintext MQTT to x; set tls = true"
    assert str(Finding("", "runs as root", "run as civicedge")).startswith("gateway: runs as root")


# -- the secrets files' formats ---------------------------------------------------------------------------
DEVICES = (config.Device("node-1", "classroom-co2", "serial"),
           config.Device("node-2", "bin-level", "lorawan", "00" * 8))


@pytest.mark.parametrize("text,key,words", [
    ('"node-1" = "%s"' % KEY1.hex()[:-2], "node-1", "32 or 64 hex"),
    ('"node-1" = "%szz"' % KEY1.hex()[:-2], "node-1", "32 or 64 hex"),
    ('"node-1" = 12', "node-1", "32 or 64 hex"),
    ('"node-1" = "%s"\n"node-9" = "%s"' % (KEY1.hex(), KEY2.hex()), "node-9", "not a device"),
    ("", "node-1", "missing"),
    ('"node-1" = "%s' % KEY1.hex(), "", "not valid TOML"),
    ('"%s" = "node-1"' % KEY1.hex(), "entry 1", "looks like a key"),  # swapped: the key is not echoed
])
def test_device_key_file_errors_name_the_device_and_never_the_key(text, key, words):
    with pytest.raises(ConfigError) as info:
        security.parse_device_keys(text, "/etc/k.toml", DEVICES)
    assert (info.value.key, info.value.file) == (key, "/etc/k.toml") and words in info.value.message
    assert KEY1.hex()[:16] not in str(info.value) and KEY2.hex()[:16] not in str(info.value)


def test_device_keys_parse_and_the_lorawan_device_needs_none():
    assert security.parse_device_keys('"node-1" = "%s"' % KEY1.hex().upper(), "k", DEVICES) == {"node-1": KEY1}


def test_app_key_format():
    assert security.parse_app_key(" 2B7E1516 28AED2A6\nABF71588 09CF4F3C \n", "f") == APP_KEY
    with pytest.raises(ConfigError) as info:
        security.parse_app_key(APP_KEY.hex()[:-2], "f")
    assert info.value.key == "upstream.lorawan.app_key_file" and APP_KEY.hex()[:10] not in str(info.value)


# -- nothing secret in any output -----------------------------------------------------------------------
def _fragments():
    out = []
    for s in (UP_PW, SITE_PW, KEY1.hex(), KEY2.hex(), APP_KEY.hex(), "hunter2-Weak"):
        out += [s[i:i + 8] for i in range(0, len(s) - 7, 4)]
    return out


def test_no_password_or_key_in_findings_output_or_logs(site, owner, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    # Everything wrong at once: weak and world-readable password, placeholder-looking key file
    # with a real key and a malformed one, plaintext to a remote host, verification off.
    text = CONFIG.replace('host = "127.0.0.1"\ntls = false', 'host = "10.0.0.5"\ntls = false\ntls_verify = false')
    cfg, path = site(text=text, up_pw="hunter2-Weak\n", mode=0o644,
                     keys='"node-1" = "%s"\n"node-2" = "%s"\n' % (KEY1.hex(), KEY2.hex()[:-2]))
    findings = security.check(cfg, security.gather(cfg, owner))
    assert len(findings) >= 4
    with pytest.raises(security.InsecureConfig) as info:
        security.enforce(cfg, euid=0)
    status = cmd_gateway.main(["gateway", "check", "--config", str(path), "--user", str(owner)])
    assert status == cmd_gateway.EXIT_INSECURE
    out = capsys.readouterr()
    everything = "\n".join([out.out, out.err, caplog.text, str(info.value), repr(security.gather(cfg, owner))]
                           + [str(f) for f in findings])
    assert "upstream.mqtt.password_file" in out.out and "sources.site_broker.tls" in out.out
    assert "refusing to start" in caplog.text  # enforce logged its findings...
    for frag in _fragments():
        assert frag not in everything  # ...and nothing secret, anywhere


def test_secret_text_is_kept_off_repr(site, owner):
    cfg, _ = site()
    facts = security.gather(cfg, owner)
    assert any(f.text for f in facts.files)
    assert UP_PW not in repr(facts) and SITE_PW not in repr(facts) and KEY1.hex() not in repr(facts)
    assert stat.S_IMODE(os.stat(cfg.upstream_mqtt.mqtt.password_file).st_mode) == 0o600
