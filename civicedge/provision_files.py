"""Files provisioning writes: atomic private writes, and a gateway's configuration and secrets.

``write_atomic(path, data, mode)`` writes a temporary file in the same directory with the final
mode from the start (never readable by others, not even for a moment), fsyncs it, renames it
over ``path`` and fsyncs the directory: a crash leaves the old file or the new one, never a
part. ``ensure_private_dir`` makes a 0700 directory (and corrects the mode of one that exists).
``gateway_toml`` renders the gateway's configuration for ``gateway.config`` (docs/gateway-setup.md)
from the inventory; ``device_keys_toml`` and ``mosquitto_passwd`` the secrets files it names.
Strings are written as JSON strings, which are valid TOML basic strings.
"""

import json
import os
import pathlib
import stat

from gateway.security import is_loopback

PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
MAX_SECRET_FILE = 65536


def ensure_private_dir(path):
    """``path`` (and missing parents) as a directory; ``path`` itself mode 0700."""
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError("%s is not a directory" % path)
    if stat.S_IMODE(st.st_mode) != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)


def dir_mode_problem(path):
    """"mode 0755 -> 0700" if the existing directory ``path`` is not private, else None."""
    try:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None
    return None if mode == PRIVATE_DIR else "mode %04o -> %04o" % (mode, PRIVATE_DIR)


def file_mode_problem(path, mode=PRIVATE_FILE):
    try:
        have = stat.S_IMODE(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None
    return None if have == mode else "mode %04o -> %04o" % (have, mode)


def write_atomic(path, data, mode=PRIVATE_FILE, durable=True):
    """Replace ``path`` with ``data`` (bytes) atomically, created with ``mode``; ``durable``:
    the data is fsynced before the rename (the caller fsyncs the directory: ``sync_dir``)."""
    path = pathlib.Path(path)
    tmp = path.with_name("." + path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def sync_dir(path):
    """fsync directory ``path``: the renames made in it are on disk."""
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_secret_text(path):
    """The text of a small regular file, or None if there is none (a symlink is refused)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SECRET_FILE:
        raise OSError("%s is not a small regular file" % path)
    with open(path, encoding="utf-8") as f:
        return f.read()


def read_json_secret(path):
    """The parsed JSON file ``path``, or None if there is none; ``ValueError`` saying why if
    it cannot be read or is not JSON (the text is never shown: it is a secret)."""
    try:
        text = read_secret_text(path)
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError("cannot read it: %s" % (getattr(e, "strerror", None) or e))
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError("not valid JSON")


# -- a gateway's files ----------------------------------------------------------------------------
def _q(s):
    return json.dumps(s)


def gateway_passwords(inv, gw):
    """{file name: what it is for} of the passwords the gateway's configuration names."""
    devs = inv.devices_of(gw.id)
    out = {"upstream.password": "the gateway's user %s on the council's broker %s" % (
        gw.upstream_username, gw.upstream_host)}
    if any(d.link == "mqtt" for d in devs) or (any(d.link == "lorawan" for d in devs)
                                               and is_loopback(gw.chirpstack_mqtt_host)):
        out["site-broker.password"] = "the agent's user 'gateway' on the site broker"
    if any(d.link == "lorawan" for d in devs) and not is_loopback(gw.chirpstack_mqtt_host):
        out["chirpstack-mqtt.password"] = "user %s on ChirpStack's MQTT broker %s" % (
            gw.upstream_username, gw.chirpstack_mqtt_host)
    return out


def gateway_toml(inv, gw, application_id="+"):
    """The gateway's configuration (``gateway.config.parse`` accepts it) as text, or None for a
    gateway that serves no device (the gateway needs a source of readings)."""
    devs = inv.devices_of(gw.id)
    if not devs:
        return None
    secrets_dir = gw.secrets_dir.rstrip("/")
    lines = ["# Written by `civicedge provision apply` from site %s's inventory: edit that and apply again."
             % inv.site_id,
             "# Install as /etc/civicedge/gateway.toml; the secrets files it names are in the site",
             "# directory's secrets/gateway-%s/ (docs/provisioning.md)." % gw.id, "",
             "config_version = 1", "", "[site]", "id = %s" % _q(inv.site_id), "gateway_id = %s" % _q(gw.id),
             "timezone = %s" % _q(inv.timezone), ""]
    if any(d.link in ("serial", "mqtt") for d in devs):
        lines += ["[secrets]", "device_keys_file = %s" % _q(secrets_dir + "/device-keys.toml"), ""]
    for d in devs:
        lines += ["[[devices]]", "id = %s" % _q(d.id), "profile = %s" % _q(d.profile), "link = %s" % _q(d.link)]
        if d.dev_eui:
            lines.append("dev_eui = %s" % _q(d.dev_eui))
        if d.attributes:
            pairs = ", ".join("%s = %s" % (k, _q(v)) for k, v in sorted(d.attributes.items()))
            lines.append("attributes = { %s }" % pairs)
        lines.append("")
    if any(d.link == "serial" for d in devs):
        for port in gw.serial_ports:
            lines += ["[[sources.serial]]", "port = %s" % _q(port), ""]
    passwords = gateway_passwords(inv, gw)
    site_broker = ['host = "127.0.0.1"', "port = 1883", "tls = false", 'username = "gateway"',
                   "password_file = %s" % _q(secrets_dir + "/site-broker.password")]
    if any(d.link == "mqtt" for d in devs):
        lines += ["[sources.site_broker]"] + site_broker + [""]
    if any(d.link == "lorawan" for d in devs):
        lines.append("[sources.chirpstack]")
        if "chirpstack-mqtt.password" in passwords:
            lines += ["host = %s" % _q(gw.chirpstack_mqtt_host), "port = 8883", "tls = true"]
            lines += ["ca_file = %s" % _q(gw.chirpstack_mqtt_ca_file)] if gw.chirpstack_mqtt_ca_file else []
            lines += ["username = %s" % _q(gw.upstream_username),
                      "password_file = %s" % _q(secrets_dir + "/chirpstack-mqtt.password")]
        else:
            lines += ["host = %s" % _q(gw.chirpstack_mqtt_host)] + site_broker[1:]
        lines += ["application_id = %s" % _q(application_id), ""]
    lines += ["[upstream.mqtt]", "host = %s" % _q(gw.upstream_host), "port = %d" % gw.upstream_port, "tls = true"]
    lines += ["ca_file = %s" % _q(gw.upstream_ca_file)] if gw.upstream_ca_file else []
    lines += ["username = %s" % _q(gw.upstream_username),
              "password_file = %s" % _q(secrets_dir + "/upstream.password"), ""]
    return "\n".join(lines)


def device_keys_toml(inv, gw, keys):
    """The gateway's device-keys file for its serial and WiFi nodes; ``keys``: {device: hex}.
    None if the gateway has no such node, or a key is not known yet."""
    devs = [d for d in inv.devices_of(gw.id) if d.link in ("serial", "mqtt")]
    if not devs or any(keys.get(d.id) is None for d in devs):
        return None
    return "".join("%s = %s\n" % (_q(d.id), _q(keys[d.id])) for d in devs)


def mosquitto_passwd(inv, gw, site_broker_password, mqtt_passwords):
    """``user:password`` lines for ``mosquitto_passwd -U`` (the agent's user, then each WiFi
    node's), or None when the site broker has no users or a password is not known yet."""
    devs = [d for d in inv.devices_of(gw.id) if d.link == "mqtt"]
    if site_broker_password is None or any(mqtt_passwords.get(d.id) is None for d in devs):
        return None
    return "gateway:%s\n" % site_broker_password + "".join("%s:%s\n" % (d.id, mqtt_passwords[d.id]) for d in devs)
