"""The fleet's fallback broker: the embedded ``amqtt`` broker (PyPI ``amqtt`` 0.12), used when
Mosquitto is not installed or will not start (``site.SiteBrokers`` chooses).

``AmqttBroker`` has the face of ``simulators.broker.Mosquitto`` that the fleet uses (``port``,
``proc``, ``start()``, ``close()``) and runs the broker in a child process of its own::

    python -m simulators.fleet.amqtt_broker CONFIG.json

so it gets its own CPU and its CPU time is measured as Mosquitto's is. Security as with
Mosquitto (RELIABILITY.md): no anonymous clients, per-user passwords (stored hashed, PBKDF2
SHA-256, in a 0600 file in the broker's work directory; amqtt's own password file wants
argon2, ~50 ms of CPU per connect), an optional TLS listener with the site's certificate, and
per-user access control from the same ACL lines the Mosquitto configuration uses (``Acl``:
``user NAME``, ``topic [read|write|readwrite] FILTER``, ``pattern [read|write|readwrite]
FILTER`` with ``%u`` the user name and ``%c`` the client id). Any other ACL line is refused
when the broker is built, and a topic no rule grants is denied: the checks fail closed.

What amqtt does differently (docs/simulation-fleet.md "Brokers"): everything is in memory
(Mosquitto here runs without persistence too); it has no queue limits (Mosquitto's
``max_queued_messages``); a persistent session's messages queued while it was away are
delivered with the retain flag set; a message goes out at the subscription's QoS.
"""

import atexit
import hashlib
import hmac
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from simulators.broker import free_port
from simulators.mpyrun import REPO

try:  # the broker's own side (the child process); the parent needs none of it
    from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
except ImportError:  # pragma: no cover - amqtt missing: amqtt_available() says so
    BaseAuthPlugin = BaseTopicPlugin = object

# Key stretching buys nothing for the run's random 24-character passwords, and a slow CONNACK
# costs a node virtual time (a poll that waits past CIVICEDGE_REAL_WAIT_MS): ~1 ms a connect.
PBKDF2_ROUNDS = 2000
READ, WRITE = "read", "write"


def amqtt_available():
    """True when the ``amqtt`` package can be imported (a project dependency)."""
    try:
        import amqtt.broker  # noqa: F401
    except ImportError:
        return False
    return True


# -- passwords --------------------------------------------------------------------------------
def hash_password(password):
    """``pbkdf2-sha256$ROUNDS$SALT$HASH`` (hex) of ``password``; ValueError if empty."""
    if not password:
        raise ValueError("password: empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ROUNDS)
    return "pbkdf2-sha256$%d$%s$%s" % (PBKDF2_ROUNDS, salt.hex(), digest.hex())


def check_password(password, stored):
    """True if ``password`` matches ``stored`` (``hash_password``'s form); False for anything
    else, a malformed ``stored`` included."""
    try:
        scheme, rounds, salt, digest = stored.split("$")
        if scheme != "pbkdf2-sha256" or not password:
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(rounds))
    except (AttributeError, ValueError):
        return False
    return hmac.compare_digest(got.hex(), digest)


# -- access control ---------------------------------------------------------------------------
def topic_matches(topic_filter, topic):
    """MQTT topic matching (§4.7): does ``topic_filter`` (with ``+``/``#``) match ``topic``?"""
    f, t = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return i == len(f) - 1
        if i >= len(t) or level not in ("+", t[i]):
            return False
    return len(f) == len(t)


def filter_covers(acl_filter, sub_filter):
    """Does ``acl_filter`` match every topic ``sub_filter`` can match (a subscription the
    ACL allows whole)? ``+`` in the subscription needs ``+`` or ``#`` in the ACL."""
    a, s = acl_filter.split("/"), sub_filter.split("/")
    for i, level in enumerate(a):
        if level == "#":
            return True
        if i >= len(s) or s[i] == "#":
            return False
        if level != "+" and level != s[i]:
            return False
    return len(a) == len(s)


class Acl:
    """Mosquitto ACL lines (module docstring) as rules; ``ValueError`` naming the line for
    anything else. ``allows(user, client_id, topic, access, subscribe=False)``."""

    ACCESS = {"read": (READ,), "write": (WRITE,), "readwrite": (READ, WRITE)}

    def __init__(self, lines):
        self.users, self.patterns = {}, []
        user = None
        for n, raw in enumerate(lines):
            words = raw.split()
            if not words or words[0].startswith("#"):
                continue
            if words[0] == "user" and len(words) == 2:
                user = words[1]
                self.users.setdefault(user, [])
            elif words[0] in ("topic", "pattern") and len(words) in (2, 3):
                access = self.ACCESS.get(words[1] if len(words) == 3 else "readwrite")
                if access is None:
                    raise ValueError("acl line %d %r: access must be read, write or readwrite" % (n + 1, raw))
                rule = (words[-1], access)
                if words[0] == "pattern":
                    self.patterns.append(rule)
                elif user is None:
                    raise ValueError("acl line %d %r: a topic rule before any user line" % (n + 1, raw))
                else:
                    self.users[user].append(rule)
            else:
                raise ValueError("acl line %d %r: only 'user', 'topic' and 'pattern' lines are supported"
                                 % (n + 1, raw))

    def rules(self, user, client_id):
        out = list(self.users.get(user, []))
        if user and not any(c in user for c in "+#/"):  # as Mosquitto: no patterns for such names
            for filt, access in self.patterns:
                if "%c" in filt and (not client_id or any(c in client_id for c in "+#/")):
                    continue
                out.append((filt.replace("%u", user).replace("%c", client_id or ""), access))
        return out

    def allows(self, user, client_id, topic, access, subscribe=False):
        """May ``user`` (None: anonymous: never) ``access`` (READ or WRITE) ``topic``? With
        ``subscribe``, ``topic`` is a filter every match of which must be readable."""
        if not user or not topic:
            return False
        test = filter_covers if subscribe else topic_matches
        return any(access in acc and test(filt, topic) for filt, acc in self.rules(user, client_id))


# -- amqtt plugins (loaded by the child from the configuration) -------------------------------
class PasswordAuth(BaseAuthPlugin):
    """Users and hashed passwords from the configuration; anyone else is refused."""

    @dataclass
    class Config:
        users: dict = field(default_factory=dict)

    async def authenticate(self, *, session):
        stored = self.context.config.users.get(session.username or "")
        return bool(stored) and check_password(session.password or "", stored)


class TopicAcl(BaseTopicPlugin):
    """``Acl`` over amqtt's subscribe / publish / receive checks; denies what it does not know."""

    @dataclass
    class Config:
        acl: list = field(default_factory=list)

    def __init__(self, context):
        super().__init__(context)
        self.acl = Acl(self.context.config.acl)

    async def topic_filtering(self, *, session=None, topic=None, action=None):
        action = str(getattr(action, "value", action))
        user = getattr(session, "username", None)
        client_id = getattr(session, "client_id", None)
        if action == "publish":
            return self.acl.allows(user, client_id, topic, WRITE)
        if action == "subscribe":
            return self.acl.allows(user, client_id, topic, READ, subscribe=True)
        if action == "receive":
            return self.acl.allows(user, client_id, topic, READ)
        return False


# -- the parent's side ------------------------------------------------------------------------
class AmqttBroker:
    """One amqtt broker process on loopback. ``users``: {name: password}; ``acl``: ACL lines
    (``Acl``; None: every user may use every topic, as Mosquitto without an ACL file);
    ``tls``: None or {"certfile", "keyfile"}: the main listener (``port``) speaks TLS;
    ``plain_port``: an extra plain listener (the site's loopback one for the gateways)."""

    kind = "amqtt"

    def __init__(self, users=None, acl=None, tls=None, plain_port=None, host="127.0.0.1", port=None,
                 start_timeout_s=20.0):
        self.users = dict(users or {})
        for name, pw in self.users.items():
            if not pw:
                raise ValueError("users: empty password for %r" % name)
        self.acl = None if acl is None else list(acl)
        if self.acl is not None:
            Acl(self.acl)  # refused here, in the parent, if a line is not understood
        self.tls = dict(tls) if tls else None
        self.host, self.port = host, port or free_port(host)
        self.plain_port = plain_port
        self.start_timeout_s = start_timeout_s
        self.workdir = self.proc = None

    def config(self):
        """The amqtt ``BrokerConfig`` dict (passwords hashed)."""
        main = {"type": "tcp", "bind": "%s:%d" % (self.host, self.port)}
        if self.tls:
            main.update(ssl=True, certfile=self.tls["certfile"], keyfile=self.tls["keyfile"])
        listeners = {"default": main}
        if self.plain_port:  # amqtt copies "default"'s unset fields into the others: plain first
            listeners = {"default": {"type": "tcp", "bind": "%s:%d" % (self.host, self.plain_port)}, "main": main}
        plugins = {__name__ + ".PasswordAuth": {"users": {u: hash_password(p) for u, p in self.users.items()}}}
        if self.acl is not None:
            plugins[__name__ + ".TopicAcl"] = {"acl": self.acl}
        return {"listeners": listeners, "plugins": plugins}

    def start(self):
        """Start the process and wait until every listener accepts; RuntimeError (with the
        broker's log) if it exits or does not listen within ``start_timeout_s``."""
        self.workdir = tempfile.mkdtemp(prefix="civicedge-amqtt-")
        atexit.register(self.close)  # as Mosquitto: no broker outlives a run that crashed
        conf = os.path.join(self.workdir, "amqtt.json")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.config(), f)
        log = open(os.path.join(self.workdir, "broker.log"), "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", __name__, conf], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir,
                                     env=dict(os.environ, PYTHONPATH=str(REPO)))
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        for port in [self.port] + ([self.plain_port] if self.plain_port else []):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError("amqtt exited with %s at start; its log:\n%s"
                                       % (self.proc.returncode, self.log_text()[-2000:]))
                try:
                    with socket.create_connection((self.host, port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.close()
                        raise RuntimeError("amqtt did not accept on %s:%d within %.0f s"
                                           % (self.host, port, self.start_timeout_s))
                    time.sleep(0.05)
        return self

    def log_text(self):
        try:
            with open(os.path.join(self.workdir, "broker.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def close(self):
        """Stop the process (SIGTERM, SIGKILL after 5 s) and delete the work directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        atexit.unregister(self.close)


def main(argv=None):
    import asyncio
    import logging
    import signal

    from amqtt.broker import Broker

    with open((argv or sys.argv[1:])[0]) as f:
        config = json.load(f)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def serve():
        broker = Broker(config)
        await broker.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await broker.shutdown()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
