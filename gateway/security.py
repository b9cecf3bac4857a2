"""The gateway's fail-closed security checks (RELIABILITY.md "Security checks").

Theory of operation
-------------------
Two layers, so every rule is a pure function a test can drive:

- ``gather(cfg, euid=None) -> Facts`` (the shell): the effective user, and for each file
  the configuration names — secrets (password files, the device keys file, the LoRaWAN
  AppKey file, a TLS client key) and TLS certificates — whether it is a regular file, its
  permission bits and owner, and a secret's text (kept off ``repr``). Nothing else is read,
  nothing is started, no socket is opened.
- ``check(cfg, facts) -> [Finding]`` (pure): every rule below; an empty list means the
  configuration may run. Each ``Finding`` names the setting (a dotted key of the
  configuration file, e.g. ``upstream.mqtt.password_file``), what is wrong and what to do.

``enforce(cfg)`` runs both and raises ``InsecureConfig`` (carrying the findings), else
returns the ``Secrets`` the agent needs: the agent refuses to start on any finding.

The rules
---------
- **Running as root** (effective uid 0): refused. The agent runs as its own user.
- **Plaintext MQTT** (``tls = false``) is allowed only to a loopback broker: ``localhost``,
  an address in 127.0.0.0/8, or ``::1``. Host names are not resolved.
- **TLS verification** disabled (``tls_verify = false``): refused wherever it appears.
- **Secrets files** must be regular files with no permission bits for group or others
  (0600 or 0400: ``chmod 600``) and owned by the user the agent runs as.
- **MQTT passwords** (``password_file``) are refused when empty, when one of the sample
  values below or containing a placeholder word (``changeme``, ``example``, ``password``,
  ``placeholder``, ``replace``, ``sample``, ``secret``), or when weak: shorter than 16
  characters, fewer than 10 different characters, a run of 4 repeated characters
  (``aaaa``) or of 4 consecutive ones (``abcd``, ``4321``), or more than one line. A
  password made with ``openssl rand -base64 24`` (32 characters) passes.
- **Device keys and the AppKey**: placeholders (fewer than 8 different byte values in a
  key, e.g. all zeros or ``0102...``) are refused; real keys are random (provisioning).
- **Metrics** listen on loopback only (the agent opens no other listening socket).
- Files the configuration needs (CA certificates, client certificates) must exist, and
  must not be writable by group or others.

No message, finding or log line carries a password or key: findings name settings and
paths only.
"""

import binascii
import dataclasses
import ipaddress
import logging
import os
import pwd
import stat
import tomllib
from dataclasses import dataclass

from gateway.config import KEYED_LINKS, ConfigError

log = logging.getLogger("civicedge.gateway.security")

MIN_PASSWORD_CHARS = 16
MIN_DISTINCT_CHARS = 10
RUN_LIMIT = 4
MIN_KEY_DISTINCT_BYTES = 8
MAX_SECRET_BYTES = 65536
SAMPLE_PASSWORDS = frozenset((
    "", "admin", "administrator", "changeit", "changeme", "chirpstack", "civicedge", "default", "example",
    "gateway", "guest", "iot", "letmein", "mosquitto", "mqtt", "pass", "passw0rd", "password", "password1",
    "public", "qwerty", "raspberry", "root", "secret", "test", "user", "welcome", "12345678", "123456789",
    "1234567890", "123456789012", "0123456789abcdef"))
PLACEHOLDER_WORDS = ("changeme", "change-me", "change_me", "example", "password", "placeholder", "replace",
                     "sample", "secret")
GENERATE = "generate one: umask 077; openssl rand -base64 24 > %s"


@dataclass(frozen=True)
class Finding:
    setting: str  # dotted key in the configuration file ("" when it is about the process)
    problem: str
    fix: str

    def __str__(self):
        return "%s: %s; %s" % (self.setting or "gateway", self.problem, self.fix)


@dataclass(frozen=True)
class FileFacts:
    setting: str
    path: str
    kind: str  # "password", "device_keys", "app_key", "tls_key" (secrets) or "cert" (public)
    error: str | None = None  # why it could not be opened or read (never its contents)
    regular: bool = False
    mode: int = 0  # permission bits (st_mode & 0o7777)
    uid: int = -1
    text: str | None = dataclasses.field(default=None, repr=False)  # a secret's contents


@dataclass(frozen=True)
class Facts:
    euid: int
    files: tuple[FileFacts, ...]
    names: dict  # uid -> user name, for messages


class InsecureConfig(Exception):
    """The configuration fails the security checks; ``findings`` says which and what to do."""

    def __init__(self, findings):
        Exception.__init__(self, "%d security finding(s): %s" % (len(findings), "; ".join(map(str, findings))))
        self.findings = list(findings)


class Secrets:
    """What the agent needs from the secrets files, read once by ``gather``. Never printed:
    ``repr`` says only how many there are."""

    __slots__ = ("passwords", "device_keys", "app_key")

    def __init__(self, passwords, device_keys, app_key):
        self.passwords = passwords  # connection prefix ("upstream.mqtt") -> password
        self.device_keys = device_keys  # device_id -> key bytes
        self.app_key = app_key  # LoRaWAN AppKey bytes or None

    def password(self, prefix):
        return self.passwords.get(prefix)

    def __repr__(self):
        return "Secrets(%d passwords, %d device keys, app_key %s)" % (
            len(self.passwords), len(self.device_keys), "set" if self.app_key else "unset")


# -- the secrets files' formats --------------------------------------------------------------
def parse_device_keys(text, file, devices):
    """The device keys file: TOML, one ``"<device id>" = "<32 or 64 hex digits>"`` line per device.

    Returns ``{device_id: key bytes}``. Raises ``ConfigError`` naming the device (never the key)
    for bad TOML, a value that is not 16 or 32 bytes of hex, an id that is not in ``devices``
    and a serial/mqtt device without a key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", file, "not valid TOML: %s" % e)
    known = {d.id: d for d in devices}
    keys = {}
    for n, (dev_id, v) in enumerate(data.items()):
        if dev_id not in known:
            if len(dev_id) >= 16 and all(c in "0123456789abcdefABCDEF" for c in dev_id):
                raise ConfigError("entry %d" % (n + 1), file, "its name looks like a key, not a device id; each line "
                                  "is \"<device id>\" = \"<hex key>\"")  # and the name is not shown
            raise ConfigError(dev_id, file, "not a device in the gateway configuration; add it there or remove "
                              "this line")
        try:
            raw = binascii.unhexlify(v) if isinstance(v, str) else None
        except (binascii.Error, ValueError):
            raw = None
        if raw is None or len(raw) not in (16, 32):
            raise ConfigError(dev_id, file, "must be the device key as 32 or 64 hex digits (from provisioning)")
        keys[dev_id] = raw
    for d in devices:
        if d.link in KEYED_LINKS and d.id not in keys:
            raise ConfigError(d.id, file, "missing: device %s (link %s) needs its key: add \"%s\" = \"<hex key>\""
                              % (d.id, d.link, d.id))
    return keys


def parse_app_key(text, file):
    """A LoRaWAN AppKey file: 32 hex digits (whitespace ignored) -> 16 bytes; ``ConfigError`` otherwise."""
    try:
        raw = binascii.unhexlify("".join(text.split()))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise ConfigError("upstream.lorawan.app_key_file", file, "must hold the AppKey as 32 hex digits")
    return raw


def parse_password(text):
    """A password file's contents: the text without one trailing newline (``echo`` and
    ``openssl rand -base64 24 >`` both add one)."""
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


# -- which files ---------------------------------------------------------------------------------
def connections(cfg):
    """``(prefix, MQTTConnection)`` for every MQTT connection the configuration makes."""
    out = []
    if cfg.sources.site_broker:
        out.append(("sources.site_broker", cfg.sources.site_broker))
    if cfg.sources.chirpstack:
        out.append(("sources.chirpstack", cfg.sources.chirpstack.mqtt))
    if cfg.upstream_mqtt:
        out.append(("upstream.mqtt", cfg.upstream_mqtt.mqtt))
    return out


def files_of(cfg):
    """``(setting, path, kind)`` for every file the checks look at."""
    out = []
    if cfg.device_keys_file:
        out.append(("secrets.device_keys_file", cfg.device_keys_file, "device_keys"))
    for prefix, c in connections(cfg):
        for name, path, kind in (("password_file", c.password_file, "password"), ("ca_file", c.ca_file, "cert"),
                                 ("client_cert_file", c.client_cert_file, "cert"),
                                 ("client_key_file", c.client_key_file, "tls_key")):
            if path:
                out.append((prefix + "." + name, path, kind))
    if cfg.upstream_lorawan:
        out.append(("upstream.lorawan.app_key_file", cfg.upstream_lorawan.app_key_file, "app_key"))
    return out


# -- the shell ----------------------------------------------------------------------------------
def _file_facts(setting, path, kind):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return FileFacts(setting, path, kind, error=e.strerror or str(e))
    try:
        st = os.fstat(fd)
        facts = dict(regular=stat.S_ISREG(st.st_mode), mode=stat.S_IMODE(st.st_mode), uid=st.st_uid)
        if not facts["regular"] or kind in ("cert", "tls_key"):
            return FileFacts(setting, path, kind, **facts)
        if st.st_size > MAX_SECRET_BYTES:
            return FileFacts(setting, path, kind, error="larger than %d bytes: not a secrets file" % MAX_SECRET_BYTES,
                             **facts)
        data = os.read(fd, MAX_SECRET_BYTES + 1)
        try:
            return FileFacts(setting, path, kind, text=data.decode("utf-8"), **facts)
        except UnicodeDecodeError:
            return FileFacts(setting, path, kind, error="not UTF-8 text", **facts)
    except OSError as e:
        return FileFacts(setting, path, kind, error=e.strerror or str(e))
    finally:
        os.close(fd)


def _user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return "uid %d" % uid


def gather(cfg, euid=None):
    """The facts the checks need: ``euid`` (default: this process's effective uid) and each
    file's type, mode, owner and (for secrets) text. Reads only; raises nothing for a bad file."""
    euid = os.geteuid() if euid is None else euid
    files = tuple(_file_facts(*f) for f in files_of(cfg))
    names = {uid: _user_name(uid) for uid in {euid} | {f.uid for f in files if f.uid >= 0}}
    for f in files:
        log.debug("looked at %s (%s): %s", f.setting, f.path, f.error or "mode %04o uid %d" % (f.mode, f.uid))
    return Facts(euid, files, names)


# -- the rules (pure) ---------------------------------------------------------------------------
def is_loopback(host):
    """True for ``localhost``, 127.0.0.0/8 and ``::1``: the only hosts plaintext MQTT may reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def password_problem(pw):
    """Why ``pw`` is not acceptable (a phrase without the password in it), or None."""
    low = pw.lower()
    if not pw:
        return "is empty"
    if low in SAMPLE_PASSWORDS or any(w in low for w in PLACEHOLDER_WORDS):
        return "is a sample or placeholder value"
    if "\n" in pw or "\r" in pw:
        return "holds more than one line"
    if len(pw) < MIN_PASSWORD_CHARS:
        return "is shorter than %d characters" % MIN_PASSWORD_CHARS
    if len(set(pw)) < MIN_DISTINCT_CHARS:
        return "has fewer than %d different characters" % MIN_DISTINCT_CHARS
    for i in range(len(pw) - RUN_LIMIT + 1):
        steps = {ord(b) - ord(a) for a, b in zip(pw[i:i + RUN_LIMIT], pw[i + 1:i + RUN_LIMIT])}
        if len(steps) == 1 and steps <= {-1, 0, 1}:
            return "contains a run of %d repeated or consecutive characters" % RUN_LIMIT
    return None


def key_problem(raw):
    """Why key bytes ``raw`` look like a placeholder rather than a random key, or None."""
    if len(set(raw)) < MIN_KEY_DISTINCT_BYTES:
        return ("looks like a placeholder (fewer than %d different byte values), not a random key"
                % MIN_KEY_DISTINCT_BYTES)
    return None


def check_user(euid):
    if euid == 0:
        return [Finding("", "runs as root", "run the agent as its own user (the systemd unit's User=civicedge); "
                            "check as that user: sudo -u civicedge civicedge gateway check, or add --user civicedge")]
    return []


def check_connection(prefix, c):
    out = []
    if not c.tls and not is_loopback(c.host):
        out.append(Finding(prefix + ".tls", "plaintext MQTT to %s, which is not a loopback host" % c.host,
                           "set tls = true (port 8883) with ca_file; plaintext is allowed only to "
                           "127.0.0.0/8, ::1 or localhost"))
    if not c.tls_verify:
        out.append(Finding(prefix + ".tls_verify", "TLS certificate verification is disabled",
                           "remove tls_verify = false and give the broker's CA in ca_file; "
                           "an unverified broker can read every reading and password"))
    return out


def check_file(f, euid, names):
    """Findings for one file: missing/unreadable, not a regular file, and for secrets the mode and owner."""
    secret = f.kind != "cert"
    if f.error and not f.regular:
        return [Finding(f.setting, "cannot open %s (%s)" % (f.path, f.error),
                        "create it or correct the path" + ("; " + GENERATE % f.path if f.kind == "password" else ""))]
    if not f.regular:
        return [Finding(f.setting, "%s is not a regular file" % f.path, "point it at a file")]
    out = []
    if secret and f.mode & 0o077:
        out.append(Finding(f.setting, "%s is mode %04o: group or others can read or change it" % (f.path, f.mode),
                           "chmod 600 %s" % f.path))
    if not secret and f.mode & 0o022:
        out.append(Finding(f.setting, "%s is mode %04o: group or others can replace it (and so the broker they trust)"
                           % (f.path, f.mode), "chmod 644 %s" % f.path))
    if secret and f.uid != euid and euid != 0:  # as root, the root finding says what to do
        owner, user = names.get(f.uid, "uid %d" % f.uid), names.get(euid, "uid %d" % euid)
        out.append(Finding(f.setting, "%s is owned by %s, not by %s, the user the agent runs as"
                           % (f.path, owner, user), "chown %s %s" % (user, f.path)))
    if f.error:
        out.append(Finding(f.setting, "cannot read %s (%s)" % (f.path, f.error), "point it at the right file"))
    return out


def check_secret_text(cfg, f):
    """Findings about a secret's contents (never quoting them)."""
    if f.text is None:
        return []
    if f.kind == "password":
        why = password_problem(parse_password(f.text))
        return [Finding(f.setting, "the password in %s %s" % (f.path, why),
                        GENERATE % f.path + ", then set it for this user on the broker")] if why else []
    try:
        if f.kind == "app_key":
            keys = {"AppKey": parse_app_key(f.text, f.path)}
        else:
            keys = parse_device_keys(f.text, f.path, cfg.devices)
    except ConfigError as e:
        return [Finding(f.setting, str(e), "fix the file (provisioning writes it)")]
    return [Finding(f.setting, "%s: the key for %s %s" % (f.path, name, why), "use the key provisioning generated")
            for name, why in ((n, key_problem(k)) for n, k in sorted(keys.items())) if why]


def check(cfg, facts):
    """Every finding for ``cfg`` given ``facts`` (pure). Empty: the agent may start."""
    out = check_user(facts.euid)
    for prefix, c in connections(cfg):
        out += check_connection(prefix, c)
    for f in facts.files:
        out += check_file(f, facts.euid, facts.names)
        out += check_secret_text(cfg, f)
    m = cfg.metrics
    if m.enabled and not is_loopback(m.host):
        out.append(Finding("metrics.listen", "metrics would listen on %s, beyond this machine" % m.host,
                           "listen on 127.0.0.1 (or [::1]) and scrape through an SSH tunnel or a TLS proxy"))
    return out


def secrets(cfg, facts):
    """The ``Secrets`` in ``facts`` (call after ``check`` found nothing)."""
    by_setting = {f.setting: f.text for f in facts.files if f.text is not None}
    passwords = {p: parse_password(by_setting[p + ".password_file"]) for p, c in connections(cfg)
                 if p + ".password_file" in by_setting}
    keys_text = by_setting.get("secrets.device_keys_file")
    keys = parse_device_keys(keys_text, cfg.device_keys_file, cfg.devices) if keys_text is not None else {}
    app = by_setting.get("upstream.lorawan.app_key_file")
    return Secrets(passwords, keys, parse_app_key(app, cfg.upstream_lorawan.app_key_file) if app is not None else None)


def enforce(cfg, euid=None):
    """Gather and check; raise ``InsecureConfig`` on any finding, else return the ``Secrets``."""
    facts = gather(cfg, euid)
    findings = check(cfg, facts)
    if findings:
        for f in findings:
            log.error("refusing to start: %s", f)
        raise InsecureConfig(findings)
    return secrets(cfg, facts)
