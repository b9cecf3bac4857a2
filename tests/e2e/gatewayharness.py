"""Shared set-up for the gateway's end-to-end fault tests (tests/e2e/test_gateway_*.py).

A ``Site`` is everything around one gateway agent, all real and on loopback:

* the **site broker**: Mosquitto with a user per node and one for the gateway, and the
  project's topic ACL as shipped (``deploy/mosquitto-acl.example``);
* the **council broker**: Mosquitto with a TLS listener only (CA and server certificate for
  ``localhost``/``127.0.0.1`` from ``make_test_tls``); the gateway's user may write
  ``civicedge/v1/<site>/#``, the ``platform`` user read it;
* optionally a ``TCPProxy`` between the agent and the council broker (network faults);
* the gateway's files in ``tmp_path``: ``gateway.toml``, secrets (mode 0600), ``data/``;
* ``MQTTPyNode``s publishing real authenticated frames to the site broker;
* a ``Collector``: the council's platform, subscribed to ``civicedge/v1/<site>/#`` over TLS,
  decoding readings with ``gateway.upstream.decode_readings`` and counting the keys
  ``(device_id, boot_epoch, seq)`` that arrived.

The agent runs as a process, ``civicedge gateway run --config`` (``AgentProcess``: READY=1
on a notify socket, SIGKILL/SIGTERM, CPU time from ``/proc/<pid>/stat``, the metrics
endpoint scraped and parsed), or in this process (``Site.in_process_agent``: the
composition root ``gateway.app.build`` with an injected clock). The agent refuses root;
under root the process runs as uid 1000 in a user namespace (``unshare --user``, as
tests/sim/test_agent_cli.py does), where the test's files look owned by that user.

Waits are bounded loops (``wait_until``); nothing here asserts: the tests do.
"""

import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

from gateway import app, config, security
from gateway.clock import SystemClock
from gateway.upstream import SENML_JSON, decode_readings
from simulators.broker import Mosquitto, free_port, make_test_tls
from simulators.pynode import MQTTPyNode
from simulators.tcpproxy import TCPProxy
from tests import gatewaykit as kit
from tests.gatewaykit import as_user_prefix  # noqa: F401  (the fault tests import it from here)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SITE_ID, GATEWAY_ID = "sch1", "gw1"
GATEWAY_USER, UP_USER, PLATFORM_USER = "gateway", "sch1-gw1", "platform"
# Test passwords only (long and random-looking: the agent refuses sample or weak ones).
SITE_PW, UP_PW = "s1te-Gw-7Kq2-xN4v-Lp9R-e3Wd", "up-Sch1-Gw1-9fK3-mQ7x-2Lb8"
PLATFORM_PW = "pl4tf0rm-Vw8r-4Nt6-Jy2P-k7Qs"
COUNCIL_ACL = ["user %s" % UP_USER, "topic write civicedge/v1/%s/#" % SITE_ID,
               "user %s" % PLATFORM_USER, "topic read civicedge/v1/#"]
# No silent drop at Mosquitto's default of 1000 queued messages per client (a killed
# agent's session on the site broker fills up with the nodes' resends).
BROKER_EXTRA = ["max_queued_messages 1000000", "max_inflight_messages 100"]
SLOW_START_S = 60.0  # bound on one start on a loaded machine (a bounded wait)


def wait_until(pred, timeout_s=30.0, interval_s=0.02):
    """Poll ``pred`` until it is true or ``timeout_s`` passed; returns its last value."""
    return kit.wait_until(pred, timeout_s, interval_s)


def site_acl():
    """The site broker's ACL as the project ships it (without comments)."""
    with open(os.path.join(REPO, "deploy", "mosquitto-acl.example")) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


def node_password(device_id):
    return "n0de-%s-Hq7w-3Zc8-Vt5" % device_id


def holes(seqs, through):
    """The seqs in ``0..through`` missing from ``seqs``."""
    have = set(seqs)
    return [s for s in range(through + 1) if s not in have]


# -- the council's platform --------------------------------------------------------------------
class Collector:
    """Subscribes ``civicedge/v1/<site>/#`` at QoS 1 with a persistent session, over TLS
    verified with ``cafile``, and decodes readings as a platform does. ``keys``:
    {(device_id, boot_epoch, seq): copies}; ``records``: the last decoded record of each key;
    ``messages``: every (topic, payload); ``bad``: readings that did not decode."""

    def __init__(self, host, port, cafile, encoding=SENML_JSON):
        self.encoding, self.lock = encoding, threading.Lock()
        self.keys, self.records, self.messages, self.bad = {}, {}, [], []
        self.subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="council-platform",
                        clean_session=False, protocol=mqtt.MQTTv311)
        c.username_pw_set(PLATFORM_USER, PLATFORM_PW)
        c.tls_set(ca_certs=cafile)
        c.reconnect_delay_set(0.1, 1)
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("civicedge/v1/%s/#" % SITE_ID, qos=1)
        c.on_subscribe = lambda cl, u, mid, rcs, p: self.subscribed.set()
        c.on_message = self._on_message
        c.connect(host, port, keepalive=30)
        c.loop_start()
        self.client = c

    def _on_message(self, client, userdata, msg):
        payload = bytes(msg.payload)
        with self.lock:
            self.messages.append((msg.topic, payload))
            if not msg.topic.endswith("/readings"):
                return
            try:
                pack = decode_readings(payload, self.encoding)
            except Exception as e:  # noqa: BLE001 (kept: the tests assert there are none)
                self.bad.append((msg.topic, repr(e)))
                return
            for rec in pack["records"]:
                key = (pack["device_id"], pack["boot_epoch"], rec["seq"])
                self.keys[key] = self.keys.get(key, 0) + 1
                self.records[key] = rec

    def seqs(self, device_id, boot_epoch=None):
        """The distinct seqs received for ``device_id`` (any or one boot epoch), sorted."""
        with self.lock:
            return sorted({s for d, e, s in self.keys
                           if d == device_id and boot_epoch in (None, e)})

    def count(self):
        """(distinct keys, copies received)."""
        with self.lock:
            return len(self.keys), sum(self.keys.values())

    def topics(self, suffix):
        with self.lock:
            return [(t, p) for t, p in self.messages if t.endswith(suffix)]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


# -- metrics --------------------------------------------------------------------------------------
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics(dict):
    """Prometheus text parsed: {(name, ((label, value), ...)): float}. ``get(name, **labels)``
    is one series (0.0 if absent), ``total(name)`` a metric summed over its labels."""

    @classmethod
    def parse(cls, text):
        out = cls()
        for line in text.splitlines():
            m = _SAMPLE.match(line) if line and not line.startswith("#") else None
            if m:
                out[(m.group(1), tuple(sorted(_LABEL.findall(m.group(3) or ""))))] = \
                    float(m.group(4))
        return out

    def get(self, name, default=0.0, **labels):
        return dict.get(self, (name, tuple(sorted(labels.items()))), default)

    def total(self, name):
        return sum(v for (n, _), v in self.items() if n == name)


def drained(m):
    """True if the metrics ``m`` show an empty outbox and nothing in flight upstream."""
    return m.total("civicedge_outbox_rows") == 0 and m.get("civicedge_upstream_in_flight") == 0


# -- the agent as a process -----------------------------------------------------------------------
class AgentProcess:
    """``civicedge gateway run --config <path>`` as a child process (startable again after
    it ended); stderr appended to ``log_path``."""

    def __init__(self, config_path, log_path, notify_path, prefix):
        self.config_path, self.log_path, self.prefix = config_path, log_path, prefix
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(notify_path)
        self.notify_path, self.proc = notify_path, None

    def start(self):
        self.notify.setblocking(False)
        try:  # forget what an earlier run said
            while self.notify.recv(4096):
                pass
        except BlockingIOError:
            pass
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path),
                   NOTIFY_SOCKET=self.notify_path)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.prefix + [sys.executable, "-m", "civicedge", "gateway", "run",
                               "--config", self.config_path],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, env=env)
        return self

    def wait_ready(self, timeout_s=SLOW_START_S):
        """True once the agent told systemd READY=1; False if it exited or time ran out."""
        end = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < end:
            self.notify.settimeout(max(0.01, min(end - time.monotonic(), 0.5)))
            try:
                if self.notify.recv(4096).startswith(b"READY=1"):
                    return True
            except socket.timeout:
                pass
        return False

    def kill(self):
        """SIGKILL wherever the process is; returns its exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(30)

    def terminate(self, timeout_s=60.0):
        """SIGTERM (a clean stop); returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def cpu_seconds(self):
        """User + system CPU time so far (``/proc/<pid>/stat`` fields 14 and 15)."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        self.notify.close()


# -- the agent in this process --------------------------------------------------------------------
class JumpingClock(SystemClock):
    """The production clock (``drivers.clock`` contract: monotonic ticks) whose wall time can
    be stepped (``jump_wall``), as NTP or ``date -s`` can step a Pi's. Wall time trusted."""

    def __init__(self):
        SystemClock.__init__(self, wall_trusted=True)
        self.offset_s = 0.0

    def wall_s(self):
        return SystemClock.wall_s(self) + self.offset_s

    def jump_wall(self, delta_s):
        self.offset_s += delta_s


class InProcessAgent:
    """An ``Agent`` running ``run`` on a thread of this process."""

    def __init__(self, agent):
        self.agent, self.stop_event, self.ready = agent, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=agent.run, args=(self.stop_event,),
                                       kwargs={"ready": self.ready.set}, daemon=True)

    def start(self, timeout_s=SLOW_START_S):
        self.thread.start()
        return self.ready.wait(timeout_s)

    def snapshot(self):
        return self.agent.snapshot()

    def stop(self, timeout_s=60.0):
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(timeout_s)
        return not self.thread.is_alive()


# -- the site -----------------------------------------------------------------------------------
CONFIG = """\
config_version = 1
[site]
id = "{site}"
gateway_id = "{gateway}"
data_dir = "data"
[secrets]
device_keys_file = "secrets/keys.toml"
{devices}
[sources.site_broker]
host = "127.0.0.1"
port = {site_port}
tls = false
username = "{site_user}"
password_file = "secrets/site.password"
keepalive_s = 10
[outbox]
path = "data/outbox.sqlite3"
max_bytes = {max_bytes}
max_age_s = {max_age_s}
[upstream.mqtt]
host = "{up_host}"
port = {up_port}
tls = true
ca_file = "{ca_file}"
username = "{up_user}"
password_file = "secrets/up.password"
client_id = "civicedge-{site}-{gateway}"
keepalive_s = {keepalive_s}
encoding = "{encoding}"
max_inflight = {max_inflight}
readings_per_publish = {per_publish}
[metrics]
listen = "127.0.0.1:{metrics_port}"
"""
DEFAULTS = dict(keepalive_s=10, encoding=SENML_JSON, max_inflight=20, per_publish=100,
                max_age_s=90 * 86400, max_bytes=256 * 2**20, ca_file=None, up_host="127.0.0.1",
                up_port=None)


class Site:
    """Brokers, files and nodes around one gateway (module docstring); a context manager.
    ``n_nodes`` devices (``start_nodes`` connects their nodes); ``proxy`` puts a ``TCPProxy``
    between the agent and the council broker; ``council_persistence`` keeps the council
    broker's sessions across a stop (the platform's subscription outlives an outage).
    Keywords fill ``gateway.toml`` (``DEFAULTS``: ``ca_file`` None is the council broker's
    CA, ``up_port`` None the proxy's or the council broker's port)."""

    def __init__(self, tmp_path, n_nodes=4, proxy=False, seed=1, council_persistence=False,
                 **cfg):
        self.dir, rng = str(tmp_path), random.Random(seed)
        self.devices = ["%s-rm%02d-co2" % (SITE_ID, i) for i in range(1, n_nodes + 1)]
        self.keys = {d: rng.randbytes(16) for d in self.devices}
        self.want_proxy, self.council_persistence = proxy, council_persistence
        self.cfg = dict(DEFAULTS, **cfg)
        self.proxy, self.nodes, self.agent = None, [], None
        self.metrics_port = free_port()
        self.config_path = os.path.join(self.dir, "gateway.toml")
        self.outbox_path = os.path.join(self.dir, "data", "outbox.sqlite3")
        self._closers = []

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _own(self, thing, closer):
        self._closers.append(closer)
        return thing

    def start(self):
        for d in ("secrets", "tls"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        self.tls = make_test_tls(os.path.join(self.dir, "tls"))
        users = dict({GATEWAY_USER: SITE_PW}, **{d: node_password(d) for d in self.devices})
        self.site_broker = Mosquitto(users=users, acl=site_acl(), extra_config=BROKER_EXTRA)
        self._own(self.site_broker, self.site_broker.close).start()
        self.council = Mosquitto(users={UP_USER: UP_PW, PLATFORM_USER: PLATFORM_PW},
                                 acl=COUNCIL_ACL, tls=self.tls, extra_config=BROKER_EXTRA,
                                 persistence=self.council_persistence)
        self._own(self.council, self.council.close).start()
        if self.want_proxy:
            self.proxy = TCPProxy(self.council.host, self.council.port)
            self._own(self.proxy, self.proxy.close)
        self.collector = Collector(self.council.host, self.council.port, self.tls["cafile"],
                                   self.cfg["encoding"])
        self._own(self.collector, self.collector.close).subscribed.wait(20)
        self.write_files()
        return self

    def write_files(self, **changes):
        """(Re)write gateway.toml and the secrets files (0600) from ``cfg`` + ``changes``."""
        c = self.cfg
        c.update(changes)
        for name, text in (("site.password", SITE_PW + "\n"), ("up.password", UP_PW + "\n"),
                           ("keys.toml", "".join('"%s" = "%s"\n' % (d, k.hex())
                                                 for d, k in self.keys.items()))):
            path = os.path.join(self.dir, "secrets", name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o600)
        devices = "".join('[[devices]]\nid = "%s"\nprofile = "classroom-co2"\nlink = "mqtt"\n'
                          % d for d in self.devices)
        up_port = c["up_port"] or (self.proxy or self.council).port
        with open(self.config_path, "w") as f:
            f.write(CONFIG.format(
                site=SITE_ID, gateway=GATEWAY_ID, devices=devices, site_user=GATEWAY_USER,
                site_port=self.site_broker.port, up_port=up_port, up_user=UP_USER,
                ca_file=c["ca_file"] or self.tls["cafile"], metrics_port=self.metrics_port,
                **{k: v for k, v in c.items() if k not in ("ca_file", "up_port")}))
        os.chmod(self.config_path, 0o644)

    # -- nodes ----------------------------------------------------------------------------------
    def start_nodes(self, node_class=MQTTPyNode, **kw):
        """One node per device on the site broker (resending after ``ack_timeout_s``, 1 s by
        default), connected; returns them."""
        kw.setdefault("ack_timeout_s", 1.0)
        for d in self.devices:
            self.nodes.append(node_class(d, self.keys[d], self.site_broker.host,
                                         self.site_broker.port, node_password(d), **kw))
            self._closers.append(self.nodes[-1].close)
        for node in self.nodes:
            node.wait_connected(20)
        return self.nodes

    def all_acked(self):
        return all(n.pending() == 0 for n in self.nodes)

    def produced(self):
        return sum(n.next_seq for n in self.nodes)

    def everything_delivered(self):
        """Every reading produced so far acked to its node and at the platform (seqs 0 to the
        last produced, per device)."""
        return self.all_acked() and all(
            not holes(self.collector.seqs(n.device_id, n.boot_epoch), n.next_seq - 1)
            for n in self.nodes)

    def undelivered(self):
        """{device: seqs acked to the node that never reached the platform}."""
        out = {}
        for n in self.nodes:
            if n.acked_through is not None:
                missing = holes(self.collector.seqs(n.device_id, n.boot_epoch), n.acked_through)
                if missing:
                    out[n.device_id] = missing
        return out

    # -- the agent --------------------------------------------------------------------------------
    def agent_process(self, prefix):
        self.agent = AgentProcess(self.config_path, os.path.join(self.dir, "agent.log"),
                                  os.path.join(self.dir, "notify.sock"), prefix)
        return self._own(self.agent, self.agent.close)

    def metrics(self):
        """The agent's metrics (``Metrics``), or None if it does not answer."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                        timeout=5) as r:
                return Metrics.parse(r.read().decode())
        except OSError:
            return None

    def wait_metrics(self, pred, timeout_s=30.0):
        """Scrape until ``pred(metrics)`` holds or ``timeout_s`` passed; returns the last
        ``Metrics`` (empty if the agent never answered)."""
        box = [Metrics()]

        def probe():
            m = self.metrics()
            box[0] = box[0] if m is None else m
            return m is not None and bool(pred(m))
        wait_until(probe, timeout_s, 0.1)
        return box[0]

    def load_config(self):
        return config.load(self.config_path)

    def in_process_agent(self, clock, forwarder=None, **tuning):
        """The composition root on this site's files (secrets read as the agent reads them;
        the root check is the process's business), with ``clock``; ``forwarder`` replaces the
        configured one. Not started."""
        cfg = self.load_config()
        secrets = security.secrets(cfg, security.gather(cfg))
        runner = InProcessAgent(app.build(cfg, secrets, clock, forwarder=forwarder, **tuning))
        return self._own(runner, runner.stop)

    def outbox_rows(self):
        """(rows left in the outbox file, its ``integrity_check`` verdict), read with our own
        connection (the agent must not be running)."""
        db = sqlite3.connect(self.outbox_path)
        try:
            return (db.execute("SELECT count(*) FROM rows").fetchone()[0],
                    [r[0] for r in db.execute("PRAGMA integrity_check")])
        finally:
            db.close()

    def close(self):
        for fn in reversed(self._closers):
            try:
                fn()
            except Exception:  # noqa: BLE001 (tear everything else down)
                pass
        self._closers = []


def copy_keys(path, into_dir):
    """Copy a dead agent's outbox file and WAL (frozen) to ``into_dir`` and open the copy as a
    restart would (WAL recovery on the copy; the original untouched). Returns
    ``(integrity_check verdict, {(device_id, boot_epoch, seq)} of its rows)``."""
    os.makedirs(into_dir, exist_ok=True)
    dst = os.path.join(into_dir, "copy.sqlite3")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(dst + suffix):
            os.unlink(dst + suffix)
        if suffix != "-shm" and os.path.exists(path + suffix):
            shutil.copyfile(path + suffix, dst + suffix)
    if not os.path.exists(dst):
        return ["ok"], set()  # killed before the outbox existed
    db = sqlite3.connect(dst)
    try:
        ok = [r[0] for r in db.execute("PRAGMA integrity_check")]
        has_rows = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'rows'").fetchone()
        keys = set(db.execute("SELECT device_id, boot_epoch, seq FROM rows")) if has_rows \
            else set()
    finally:
        db.close()
    return ok, keys


class ValueNode(MQTTPyNode):
    """An ``MQTTPyNode`` whose readings hold ``co2_ppm`` (and a plain temperature and
    humidity) and the node's own time ``time_fn()`` (whole Unix s), or no time at all with
    ``time_fn=None``: a node whose clock is not synchronised."""

    def __init__(self, *args, co2_ppm=800, time_fn=time.time, **kw):
        MQTTPyNode.__init__(self, *args, **kw)
        self.co2_ppm, self.time_fn = co2_ppm, time_fn

    def produce(self, n=1):
        with self._lock:
            for _ in range(n):
                t = None if self.time_fn is None else int(self.time_fn())
                self.records.append({"seq": self.next_seq, "t": t, "values": [
                    ["co2_ppm", self.co2_ppm, "ok"], ["temperature_c", 21.5, "ok"],
                    ["rh_percent", 45.0, "ok"]]})
                self.next_seq += 1
            return self.next_seq - 1


class NodePump:
    """A thread: every ``tick_s``, each node produces its share of ``rate_hz`` readings a
    second (while ``producing``) and pumps its link (sends, resends after its timeout)."""

    def __init__(self, nodes, rate_hz=10.0, tick_s=0.02):
        self.nodes, self.rate_hz, self.tick_s = nodes, rate_hz, tick_s
        self.producing, self._credit = True, 0.0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        last = time.monotonic()
        while not self._halt.is_set():
            now = time.monotonic()
            if self.producing:
                self._credit += (now - last) * self.rate_hz
                n, self._credit = int(self._credit), self._credit - int(self._credit)
                for node in self.nodes if n else ():
                    node.produce(n)
            last = now
            for node in self.nodes:
                node.pump()
            self._halt.wait(self.tick_s)

    def stop(self):
        self._halt.set()
        self._thread.join(10)
