"""A real Mosquitto broker for tests and simulations, on a free loopback port.

Tests and simulations never use a system broker (the Debian package's on :1883, or anyone
else's): each starts its own ``Mosquitto`` here, with its own configuration, credentials and
ACL in a temporary directory, and stops it afterwards::

    with Mosquitto(users={"node-1": pw}, acl=["pattern write civicedge/v1/+/%u/#"]) as broker:
        client.connect(broker.host, broker.port)
        broker.kill()      # SIGKILL: an outage (sessions survive only with persistence)
        broker.restart()   # the same port, the same files

Security as the project ships it (RELIABILITY.md): ``allow_anonymous false`` always,
per-user passwords hashed by ``mosquitto_passwd``, an optional ACL file, an optional TLS
listener. The broker listens on ``127.0.0.1`` only. Passwords are never logged or printed.

``persistence=True`` writes ``mosquitto.db`` in the work directory after every change
(``autosave_on_changes``), so even a SIGKILL keeps sessions and queued messages, as a
durable production broker would; ``False`` (Mosquitto's default) loses them on any restart.
Mosquitto is a system package: ``scripts/setup`` installs it. CPython only.
"""

import atexit
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time

_SEARCH = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


class MosquittoMissing(RuntimeError):
    """Mosquitto (or ``mosquitto_passwd``) is not installed."""


def _find(name, extra=()):
    found = shutil.which(name)
    if found:
        return found
    for path in extra:
        if os.access(path, os.X_OK):
            return path
    raise MosquittoMissing("%s not found on PATH or in /usr/sbin: run scripts/setup, which "
                           "installs the mosquitto package (apt-get install mosquitto)" % name)


def mosquitto_binary():
    """Path of the ``mosquitto`` broker; raises ``MosquittoMissing``."""
    return _find("mosquitto", _SEARCH)


def mosquitto_available():
    try:
        mosquitto_binary()
        _find("mosquitto_passwd", ("/usr/bin/mosquitto_passwd",))
        return True
    except MosquittoMissing:
        return False


def _ephemeral_ports():
    """(low, high) of the kernel's range for the local ports of outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host="127.0.0.1"):
    """A TCP port nobody uses right now, below the kernel's ephemeral range when there is
    room (10000 up to it), else the kernel's choice.

    A broker stopped to stage an outage leaves its port closed while its clients retry. A
    port inside the ephemeral range can then be the local port the kernel gives one of
    those retries, and the socket connects to itself (a TLS client reads back its own
    ClientHello: "unexpected message", counted as a certificate problem), or an outgoing
    connection holds it when the broker restarts on it. Below the range neither can
    happen."""
    low, _high = _ephemeral_ports()
    pick = random.SystemRandom()
    for _ in range(100 if low > 11024 else 0):
        port = pick.randrange(10000, low)
        with socket.socket() as s:
            try:
                s.bind((host, port))  # no SO_REUSEADDR: a port in TIME_WAIT is refused
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Mosquitto:
    """One Mosquitto process; see the module docstring.

    ``users``: {name: password}; ``acl``: lines of a Mosquitto ACL file (``user x``,
    ``topic readwrite t/#``, ``pattern write civicedge/v1/+/%u/#``), None for no ACL (every
    authenticated user may use every topic); ``tls``: None or a dict with ``certfile``,
    ``keyfile`` and optional ``cafile`` / ``require_certificate`` (the files are copied into
    the work directory); ``persistence``: see the module docstring; ``extra_config``: more
    ``mosquitto.conf`` lines (e.g. ``"max_queued_messages 100"``); ``port``: None picks a
    free one, kept across ``restart()``."""

    def __init__(self, users=None, acl=None, tls=None, persistence=False, extra_config=(),
                 host="127.0.0.1", port=None, start_timeout_s=10.0):
        self.users = dict(users or {})
        self.acl = None if acl is None else list(acl)
        self.tls = dict(tls) if tls else None
        self.persistence = persistence
        self.extra_config = list(extra_config)
        self.host = host
        self.port = port or free_port(host)
        self.start_timeout_s = start_timeout_s
        self.workdir = None
        self.proc = None
        self._log = None
        self.starts = 0

    # ---- files ----
    def _write_files(self):
        binary = mosquitto_binary()
        passwd = _find("mosquitto_passwd", ("/usr/bin/mosquitto_passwd",))
        self.workdir = tempfile.mkdtemp(prefix="civicedge-mosquitto-")
        d = self.workdir
        lines = [
            "# written by simulators/broker.py for one test run",
            "listener %d %s" % (self.port, self.host),
            "allow_anonymous false",
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
        ]
        pwfile = os.path.join(d, "passwd")
        open(pwfile, "w").close()
        for name, password in self.users.items():
            if not password:
                raise ValueError("users: empty password for %r" % name)
            # -b takes the password as an argument: only ever test passwords, on this host.
            r = subprocess.run([passwd, "-b", pwfile, name, password], capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError("mosquitto_passwd failed for user %r: %s" % (name, r.stderr.strip()))
        lines.append("password_file " + pwfile)
        if self.acl is not None:
            aclfile = os.path.join(d, "acl")
            with open(aclfile, "w") as f:
                f.write("\n".join(self.acl) + "\n")
            lines.append("acl_file " + aclfile)
        if self.tls:
            for key in ("certfile", "keyfile", "cafile"):
                if self.tls.get(key):
                    dst = os.path.join(d, key + ".pem")
                    shutil.copyfile(self.tls[key], dst)
                    lines.append("%s %s" % (key, dst))
            if self.tls.get("require_certificate"):
                lines.append("require_certificate true")
        if self.persistence:
            lines += ["persistence true", "persistence_location " + d + "/",
                      "autosave_on_changes true", "autosave_interval 1"]
        else:
            lines.append("persistence false")
        lines += self.extra_config
        for name in os.listdir(d):
            os.chmod(os.path.join(d, name), 0o600)
        if os.geteuid() == 0:
            # Run as root, mosquitto drops to the "mosquitto" user, which must own its files
            # (passwords, keys, the persistence database).
            try:
                pw = pwd.getpwnam("mosquitto")
            except KeyError:
                lines.append("user root")
            else:
                for name in [""] + os.listdir(d):
                    os.chown(os.path.join(d, name), pw.pw_uid, pw.pw_gid)
        self.conf = os.path.join(d, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self._binary = binary

    # ---- process ----
    def start(self):
        """Start the broker and wait until its port accepts; returns self."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        if self.workdir is None:
            self._write_files()
            atexit.register(self.close)
        self._log = open(os.path.join(self.workdir, "broker.log"), "ab")
        self.proc = subprocess.Popen([self._binary, "-c", self.conf], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto exited with %s at start; its log:\n%s"
                                   % (self.proc.returncode, self.log_text()[-2000:]))
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("mosquitto did not accept on %s:%d within %.0f s; log:\n%s"
                                       % (self.host, self.port, self.start_timeout_s, self.log_text()[-2000:]))
                time.sleep(0.02)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _end(self, sig, wait_s):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None

    def stop(self):
        """SIGTERM (Mosquitto saves its database when persistent), SIGKILL after 5 s."""
        self._end(signal.SIGTERM, 5)

    def kill(self):
        """SIGKILL: an abrupt outage, nothing saved beyond the last autosave."""
        self._end(signal.SIGKILL, 5)

    def restart(self, kill=False):
        """Stop (or ``kill``) and start again on the same port with the same files."""
        self.kill() if kill else self.stop()
        return self.start()

    def close(self):
        """Stop the process and delete the work directory (idempotent)."""
        self.stop()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        try:
            atexit.unregister(self.close)
        except Exception:
            pass

    def db_bytes(self):
        """The persistence database as written so far (b"" before the first save)."""
        try:
            with open(os.path.join(self.workdir, "mosquitto.db"), "rb") as f:
                return f.read()
        except (OSError, TypeError):
            return b""

    def wait_saved(self, contains, timeout_s=5.0):
        """Wait until the database holds the bytes ``contains`` (e.g. a message payload).

        Mosquitto acknowledges first and saves on a later pass of its main loop (measured:
        up to about a second), so a SIGKILL right after a PUBACK can lose that message;
        tests that need it durable wait here. Returns False on timeout."""
        if not self.persistence:
            raise ValueError("wait_saved needs persistence=True")
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if contains in self.db_bytes():
                return True
            time.sleep(0.02)
        return False

    def log_text(self):
        """The broker's log so far (for assertions and failure messages)."""
        if not self.workdir:
            return ""
        try:
            with open(os.path.join(self.workdir, "broker.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False


def make_test_tls(directory, hostnames=("localhost", "127.0.0.1")):
    """A throw-away CA and a server certificate for ``hostnames``, written to ``directory``.

    Returns ``{"cafile", "certfile", "keyfile"}`` (PEM paths): pass it as ``Mosquitto(tls=...)``
    and give clients the ``cafile``. Uses ``trustme`` (a development dependency)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(*hostnames)
    paths = {"cafile": os.path.join(directory, "ca.pem"),
             "certfile": os.path.join(directory, "server.pem"),
             "keyfile": os.path.join(directory, "server.key")}
    ca.cert_pem.write_to_path(paths["cafile"])
    cert.cert_chain_pems[0].write_to_path(paths["certfile"])
    cert.private_key_pem.write_to_path(paths["keyfile"])
    os.chmod(paths["keyfile"], 0o600)
    return paths
