"""Scaffolding shared by the gateway tests: pieces of a gateway TOML configuration, a site
written to a directory (configuration, 0600 secrets files, a CA file), a bounded
``wait_until``, the command prefix that runs the agent as a user, and the Mosquitto skip
marker. Import as ``from tests.gatewaykit import ...``."""

import os
import pathlib
import subprocess
import time

import pytest

from simulators.broker import mosquitto_available

CA_PEM = "-----BEGIN CERTIFICATE-----\n"

# Every test module that starts a real Mosquitto skips without one.
needs_mosquitto = pytest.mark.skipif(not mosquitto_available(),
                                     reason="mosquitto not installed: scripts/setup")


def broker_fixture(users, acl=None, **options):
    """A pytest fixture: a Mosquitto with these users (and ACL, options) for one test."""
    from simulators.broker import Mosquitto

    @pytest.fixture
    def broker():
        with Mosquitto(users=users, acl=acl, **options) as b:
            yield b
    return broker


# -- configuration text ----------------------------------------------------------------------------
def site_toml(site="sch1", gateway="gw1", data_dir="data", keys_file="secrets/keys.toml"):
    """``config_version``, ``[site]`` and (with ``keys_file``) ``[secrets]``."""
    text = 'config_version = 1\n[site]\nid = "%s"\ngateway_id = "%s"\n' % (site, gateway)
    if data_dir is not None:
        text += 'data_dir = "%s"\n' % data_dir
    if keys_file is not None:
        text += '[secrets]\ndevice_keys_file = "%s"\n' % keys_file
    return text


def device_toml(dev_id, profile="classroom-co2", link="serial", *lines):
    """One ``[[devices]]`` entry; ``lines`` are further ``key = value`` lines, verbatim."""
    text = '[[devices]]\nid = "%s"\nprofile = "%s"\nlink = "%s"\n' % (dev_id, profile, link)
    return text + "".join(line + "\n" for line in lines)


def mqtt_toml(table, username, password_file, host="127.0.0.1", port=None, tls=True,
              ca_file=None):
    """An MQTT connection table (``sources.site_broker``, ``sources.chirpstack``,
    ``upstream.mqtt``). ``port`` may be a placeholder such as ``"%d"``."""
    text = '[%s]\nhost = "%s"\n' % (table, host)
    if port is not None:
        text += "port = %s\n" % port
    if ca_file is not None:
        text += 'ca_file = "%s"\n' % ca_file
    if not tls:
        text += "tls = false\n"
    return text + 'username = "%s"\npassword_file = "%s"\n' % (username, password_file)


# -- files -----------------------------------------------------------------------------------------
def write_file(path, text, mode=None, owner=None):
    """Write ``text`` to ``path`` (making its directory), chmod to ``mode`` if given, and chown
    to ``owner`` when running as root. Returns the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        os.chmod(path, mode)
    if owner is not None and os.geteuid() == 0:
        os.chown(path, owner, -1)
    return path


def write_site(tmp_path, config, secrets=(), *, modes=None, owner=None, ca=False, dirs=(),
               config_mode=None, config_name="gateway.toml"):
    """A site in ``tmp_path``: each ``secrets`` entry (name -> text) as ``secrets/<name>``,
    mode 0600 unless ``modes`` says otherwise (chowned to ``owner`` under root); ``ca.pem``
    if ``ca``; the ``dirs`` made; the configuration last. Returns the configuration's path."""
    tmp_path = pathlib.Path(tmp_path)
    (tmp_path / "secrets").mkdir(exist_ok=True)
    for name in dirs:
        (tmp_path / name).mkdir(exist_ok=True)
    for name, text in dict(secrets).items():
        write_file(tmp_path / "secrets" / name, text, (modes or {}).get(name, 0o600), owner)
    if ca:
        write_file(tmp_path / "ca.pem", CA_PEM)
    return write_file(tmp_path / config_name, config, config_mode)


# -- waiting ---------------------------------------------------------------------------------------
def wait_until(pred, timeout_s=10.0, step_s=0.01):
    """Poll ``pred`` until it is true or ``timeout_s`` passed; returns its last value."""
    end = time.monotonic() + timeout_s
    while True:
        got = pred()
        if got or time.monotonic() >= end:
            return got
        time.sleep(step_s)


# -- the agent as a user ---------------------------------------------------------------------------
def as_user_prefix():
    """The command prefix that runs the agent as a user (it refuses root): under root, a user
    namespace mapping root to uid 1000 (``unshare`` execs the command: the child's pid is the
    agent's, the test's files look owned by that user and the interpreter stays reachable).
    None if that is not possible here."""
    if os.geteuid() != 0:
        return []
    prefix = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
    try:
        ok = subprocess.run(prefix + ["true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return prefix if ok else None
