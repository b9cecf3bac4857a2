"""``civicedge gateway check`` through the module's own parser, on configuration files and
secrets files written to a temporary directory: exit statuses and what it prints."""

import os

import pytest

from civicedge import cmd_gateway
from tests.gatewaykit import device_toml, mqtt_toml, site_toml, write_site

PASSWORD = "n8Vq-3LzK-w7Rt-Y2pX-c5Hm"
KEY = "7c1f9a3e52b84d06a1e3c5f7092b4d6e"

CONFIG = (site_toml() + device_toml("sch1-rm12-co2")
          + '[[sources.serial]]\nport = "/dev/ttyUSB0"\n'
          + mqtt_toml("upstream.mqtt", "sch1-gw1", "secrets/up.password", host="mqtt.example.net",
                      ca_file="ca.pem"))


@pytest.fixture
def owner():
    return 65534 if os.geteuid() == 0 else os.geteuid()


@pytest.fixture
def site(tmp_path, owner):
    def make(text=CONFIG, password=PASSWORD + "\n", mode=0o600):
        return write_site(tmp_path, text, {"up.password": password,
                                           "keys.toml": '"sch1-rm12-co2" = "%s"\n' % KEY},
                          modes={"up.password": mode}, owner=owner, ca=True)
    return make


def run(capsys, *argv):
    status = cmd_gateway.main(["gateway", *argv])
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err and KEY not in out.out + out.err
    return status, out.out, out.err


def test_a_good_configuration_exits_0_with_a_summary(site, owner, capsys):
    path = site()
    status, out, err = run(capsys, "check", "--config", str(path), "--user", str(owner))
    assert status == cmd_gateway.EXIT_OK == 0
    assert out.startswith("%s: ok: site sch1, gateway gw1; 1 device; sources: serial x1; " % path)
    assert "upstream: MQTT mqtt.example.net:8883 over TLS; metrics: 127.0.0.1:9108" in out
    assert err == ""


def test_the_user_may_be_given_by_name(site, owner, capsys):
    import pwd
    name = pwd.getpwuid(owner).pw_name
    assert run(capsys, "check", "--config", str(site()), "--user", name)[0] == 0


def test_an_insecure_configuration_exits_3_and_prints_each_finding(site, owner, capsys):
    text = CONFIG.replace('ca_file = "ca.pem"\n', 'ca_file = "ca.pem"\ntls_verify = false\n')
    path = site(text=text, mode=0o644)
    status, out, err = run(capsys, "check", "--config", str(path), "--user", str(owner))
    assert status == cmd_gateway.EXIT_INSECURE == 3
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("%s: upstream.mqtt.tls_verify: TLS certificate verification is disabled" % path)
    assert lines[1].startswith("%s: upstream.mqtt.password_file: " % path) and "chmod 600" in lines[1]
    assert "2 problems; the gateway refuses to start" in err


@pytest.mark.parametrize("password,why", [("", "is empty"), ("password123456789\n", "sample"),
                                          ("Tr0ub4dor&3\n", "shorter than 16")])
def test_weak_passwords_exit_3(site, owner, capsys, password, why):
    status, out, err = run(capsys, "check", "--config", str(site(password=password)), "--user", str(owner))
    assert status == 3 and "upstream.mqtt.password_file: the password in" in out and why in out
    assert "1 problem;" in err
    if password.strip():
        assert password.strip() not in out + err


def test_plaintext_to_a_remote_broker_exits_3(site, owner, capsys):
    text = CONFIG.replace('ca_file = "ca.pem"\n', "tls = false\n")
    status, out, _ = run(capsys, "check", "--config", str(site(text=text)), "--user", str(owner))
    assert status == 3 and "upstream.mqtt.tls: plaintext MQTT to mqtt.example.net" in out


def test_root_exits_3(site, capsys):
    status, out, _ = run(capsys, "check", "--config", str(site()), "--user", "0")
    assert status == 3 and ": gateway: runs as root;" in out


def test_without_user_it_judges_the_running_user(site, owner, capsys):
    status, out, _ = run(capsys, "check", "--config", str(site()))
    if os.geteuid() == 0:
        assert status == 3 and "runs as root" in out
    else:
        assert status == 0


def test_an_invalid_configuration_exits_2_naming_key_and_file(site, owner, capsys):
    path = site(text=CONFIG.replace('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nbaud = 9600'))
    status, out, err = run(capsys, "check", "--config", str(path), "--user", str(owner))
    assert status == cmd_gateway.EXIT_INVALID == 2 and out == ""
    assert err.startswith("civicedge gateway: %s: sources.serial[0].baud: unknown key" % path)
    assert "docs/gateway-setup.md" in err


def test_a_missing_configuration_file_exits_2(tmp_path, capsys):
    status, out, err = run(capsys, "check", "--config", str(tmp_path / "nope.toml"))
    assert status == 2 and str(tmp_path / "nope.toml") in err and "cannot read" in err


def test_an_unknown_user_exits_2(site, capsys):
    status, _, err = run(capsys, "check", "--config", str(site()), "--user", "no-such-user-here")
    assert status == 2 and "--user: no user 'no-such-user-here'" in err


def test_gateway_without_a_command_prints_help_and_exits_2(capsys):
    status, out, _ = run(capsys)
    assert status == 2 and "check" in out


def test_register_adds_gateway_check_to_a_parser_like_civicedge_cli():
    import argparse
    parser = argparse.ArgumentParser(prog="civicedge")
    cmd_gateway.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gateway", "check"])
    assert args.config == "/etc/civicedge/gateway.toml" and args.user is None and callable(args.func)
