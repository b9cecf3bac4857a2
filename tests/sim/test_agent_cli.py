"""``civicedge gateway run`` as a process: it refuses an insecure (3) or invalid (2)
configuration, says which part is missing (1), and otherwise runs until SIGTERM, telling
systemd READY=1 and STOPPING=1 on a notify socket, serving its metrics on loopback, and
exits 0 after a graceful stop.

The running agent gets its source and forwarder through the composition root's own module
paths (``gateway.app.SOURCES`` / ``FORWARDERS``), pointed at byte-level stand-ins defined in
the child script: a node that sends a real frame and verifies the ack with its key, and an
upstream that takes the rows from the outbox and acks them. The last test runs it whole with
the real sources and forwarder: a node publishes a frame on the site's Mosquitto, gets its
ack, and the reading arrives on the council's Mosquitto. The agent refuses to run as root,
so under root the child runs as a user in a user namespace (``_as_user``)."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from simulators.broker import free_port
from tests.gatewaykit import (as_user_prefix, device_toml, mqtt_toml, site_toml, write_file,
                              write_site)

PASSWORD = "n8Vq-3LzK-w7Rt-Y2pX-c5Hm"
KEY = "7c1f9a3e52b84d06a1e3c5f7092b4d6e"
DEV = "sch1-rm12-co2"

CONFIG = (site_toml() + device_toml("%s")
          + '[[sources.serial]]\nport = "loop://"\n'
          + mqtt_toml("upstream.mqtt", "sch1-gw1", "secrets/up.password", tls=False)
          + '[metrics]\nlisten = "127.0.0.1:%d"\n')

CHILD = r"""
import sys, threading
from civicedge import cmd_gateway
from gateway import app
from gateway.sources import FRAME, Arrival
from protocol import frame, senml

KEY, DEV = bytes.fromhex(sys.argv[1]), sys.argv[2]

def say(*words):
    print(*words, flush=True)

class LinkNode:  # in place of SerialSource(cfg_serial, clock)
    def __init__(self, cfg_serial, clock):
        self.name = "serial:" + cfg_serial.port
    def start(self, sink):
        recs = [{"seq": i, "t": None, "values": [["co2_ppm", 700 + i, "ok"]]} for i in range(3)]
        buf = frame.encode_data(KEY, DEV, 9, 0, 3, senml.encode_pack(DEV, 9, recs))
        threading.Thread(target=sink, args=(Arrival(FRAME, buf, self.name, reply=self.reply),)).start()
    def reply(self, ack):
        a = frame.decode_frame(ack, {DEV: KEY}.get, expect=frame.TYPE_ACK)
        say("ACK", a.device_id, a.boot_epoch, a.seq_through)
    def stop(self, timeout_s=5.0):
        say("SOURCE STOPPED")
    def counters(self):
        return {}
    def status(self):
        return {"connected": True, "detail": ""}

class Upstream:  # in place of MQTTForwarder(up, password, site_id, gateway_id, clock)
    def __init__(self, up, password, site_id, gateway_id, clock, protocol="5"):
        say("UPSTREAM", up.mqtt.host, site_id, gateway_id, password == sys.argv[3])
    def start(self, outbox):
        self.outbox = outbox
    def wake(self):
        rows = self.outbox.take(100)
        self.outbox.ack([r.row_id for r in rows])
        say("FORWARDED", *["%s/%d/%d" % (r.device_id, r.boot_epoch, r.seq) for r in rows])
    def stop(self, timeout_s=5.0):
        say("FORWARDER STOPPED")
    def counters(self):
        return {}
    def status(self):
        return {"connected": True, "detail": ""}

app.SOURCES["serial"] = "__main__:LinkNode"
app.FORWARDERS["mqtt"] = sys.argv[4]
sys.exit(cmd_gateway.main(["gateway", "run", "--config", sys.argv[5]]))
"""


def _as_user():
    """The command prefix that runs the agent as a non-root user (see ``as_user_prefix``);
    skips under root without a user namespace."""
    prefix = as_user_prefix()
    if prefix is None:
        pytest.skip("running as root and no user namespace to run the agent as a user")
    return prefix


@pytest.fixture
def site(tmp_path):
    def write(name, text, mode=0o600):
        return str(write_file(tmp_path / name, text, mode))

    write_site(tmp_path, CONFIG % (DEV, free_port()), {
        "up.password": PASSWORD + "\n", "keys.toml": '"%s" = "%s"\n' % (DEV, KEY)},
        config_mode=0o644)
    return str(tmp_path), write


def spawn(argv, **env):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **env)
    if "NOTIFY_SOCKET" not in env or env["NOTIFY_SOCKET"] == os.environ.get("NOTIFY_SOCKET"):
        env.pop("NOTIFY_SOCKET", None)
    return subprocess.Popen(_as_user() + [sys.executable, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)


def run_child(base, forwarder="__main__:Upstream", **env):
    return spawn(["-c", CHILD, KEY, DEV, PASSWORD, forwarder,
                  os.path.join(base, "gateway.toml")], **env)


class Lines:
    """Collects a pipe's lines on a thread, so the test can wait for one with a deadline."""

    def __init__(self, pipe):
        self.lines, self._cond = [], threading.Condition()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe):
        for line in pipe:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, prefix, timeout_s=30):
        end = time.monotonic() + timeout_s
        with self._cond:
            while not any(ln.startswith(prefix) for ln in self.lines):
                left = end - time.monotonic()
                assert left > 0, "no line starting %r in %r" % (prefix, self.lines)
                self._cond.wait(left)
            return next(ln for ln in self.lines if ln.startswith(prefix))


def test_runs_until_sigterm_telling_systemd_and_exits_0(site):
    base, _ = site
    notify = os.path.join(base, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify)
    sock.settimeout(30)
    proc = run_child(base, NOTIFY_SOCKET=notify)
    try:
        out = Lines(proc.stdout)
        assert out.wait_for("UPSTREAM") == "UPSTREAM 127.0.0.1 sch1 gw1 True"
        assert sock.recv(4096).decode().startswith("READY=1\nSTATUS=running: site sch1")
        assert out.wait_for("ACK") == "ACK %s 9 2" % DEV  # verified with the device key
        assert out.wait_for("FORWARDED %s" % DEV) == "FORWARDED %s" % " ".join(
            "%s/9/%d" % (DEV, i) for i in range(3))
        with open(os.path.join(base, "gateway.toml")) as f:
            port = int(f.read().split('listen = "127.0.0.1:')[1].split('"')[0])
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
            metrics = r.read().decode()
        assert "civicedge_received_total 1" in metrics  # the agent's snapshot, scraped
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        sock.close()
    time.sleep(0.05)  # the reader thread takes the last lines
    assert out.lines.index("SOURCE STOPPED") < out.lines.index("FORWARDER STOPPED")
    err = proc.stderr.read().splitlines()
    assert any("gateway gw1 starting: boot epoch" in ln for ln in err)
    assert any("running: site sch1, gateway gw1" in ln for ln in err)
    assert any("SIGTERM: stopping" in ln for ln in err) and err[-1].endswith("gateway gw1 stopped")
    assert all(" civicedge.gateway" in ln or " gateway." in ln for ln in err), err  # one line each
    assert not any(KEY in ln or PASSWORD in ln for ln in err)


def test_a_missing_part_exits_1_naming_it(site):
    base, _ = site
    proc = run_child(base, forwarder="gateway.nowhere:MQTTForwarder")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "cannot start: ImportError: gateway.nowhere:MQTTForwarder is not available" in err


def test_an_insecure_configuration_exits_3(site):
    base, write = site
    write("secrets/up.password", PASSWORD + "\n", mode=0o644)
    proc = spawn(["-m", "civicedge", "gateway", "run", "--config",
                  os.path.join(base, "gateway.toml")])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert "upstream.mqtt.password_file" in err and "chmod 600" in err
    assert "refusing to start" in err and PASSWORD not in err


def test_an_invalid_configuration_exits_2(site):
    base, write = site
    write("gateway.toml", (CONFIG % (DEV, 9)).replace('gateway_id = "gw1"\n', ""), 0o644)
    proc = spawn(["-m", "civicedge", "gateway", "run", "--config",
                  os.path.join(base, "gateway.toml")])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "site.gateway_id: missing" in err


# -- the real thing: a node on the site's Mosquitto, the council's Mosquitto upstream -----------
SITE_PW, NODE_PW, UP_PW, COUNCIL_PW = ("s1te-Gw-7Kq2-xN4v-Lp9R", "n0de-Rm12-Hq7w-3Zc8-Vt5",
                                       "up-Sch1-Gw1-9fK3-mQ7x-2Lb", "c0uncil-Vw8r-4Nt6-Jy2P")

MQTT_CONFIG = (site_toml() + device_toml("%s", "classroom-co2", "mqtt")
               + mqtt_toml("sources.site_broker", "gw1-site", "secrets/site.password",
                           port="%d", tls=False)
               + mqtt_toml("upstream.mqtt", "sch1-gw1", "secrets/up.password", port="%d",
                           tls=False)
               + "[metrics]\nenabled = false\n")


class Client:
    """A paho client that collects what it receives (the node, or the council)."""

    def __init__(self, port, user, password, topic):
        import paho.mqtt.client as mqtt

        self.got, self.cond = [], threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-" + user)
        self.c.username_pw_set(user, password)
        self.c.on_message = self._on_message
        self.c.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.got.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_a_node_frame_goes_from_the_site_broker_to_the_council_broker(site):
    import json

    from protocol import frame, senml
    from simulators.broker import Mosquitto, mosquitto_available

    if not mosquitto_available():
        pytest.skip("mosquitto is not installed")
    base, write = site
    key = bytes.fromhex(KEY)
    with Mosquitto(users={"gw1-site": SITE_PW, DEV: NODE_PW}) as site_broker, \
            Mosquitto(users={"sch1-gw1": UP_PW, "council": COUNCIL_PW}) as up_broker:
        write("secrets/site.password", SITE_PW + "\n")
        write("secrets/up.password", UP_PW + "\n")
        write("gateway.toml", MQTT_CONFIG % (DEV, site_broker.port, up_broker.port), 0o644)
        council = Client(up_broker.port, "council", COUNCIL_PW, "civicedge/v1/sch1/#")
        node = Client(site_broker.port, DEV, NODE_PW, "civicedge/node/%s/ack" % DEV)
        proc = spawn(["-m", "civicedge", "gateway", "run", "--config",
                      os.path.join(base, "gateway.toml")])
        try:
            err = Lines(proc.stderr)
            err.wait_for("", 30)  # it logs as it starts
            recs = [{"seq": i, "t": 1771236000 + 120 * i,
                     "values": [["co2_ppm", 700 + i, "ok"]]} for i in range(3)]
            buf = frame.encode_data(key, DEV, 9, 0, 3, senml.encode_pack(DEV, 9, recs))
            end = time.monotonic() + 30
            while not node.got:  # as a node does: resend until acked (the agent may be starting)
                assert time.monotonic() < end, err.lines
                node.c.publish("civicedge/node/%s/up" % DEV, buf, qos=1)
                with node.cond:
                    node.cond.wait(1.0)
            ack = node.got[0][1]
            assert frame.decode_frame(ack, {DEV: key}.get, expect=frame.TYPE_ACK) == \
                frame.Ack(DEV, 9, 2)
            readings, end = [], time.monotonic() + 30
            while not readings:
                assert time.monotonic() < end, council.got
                with council.cond:
                    council.cond.wait(0.2)
                    readings = [p for t, p in council.got
                                if t == "civicedge/v1/sch1/%s/readings" % DEV]
            values = [r.get("v") for r in json.loads(readings[0])]
            assert [700, 701, 702] == [v for v in values if v is not None]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            proc.kill()
            node.close()
            council.close()
    time.sleep(0.05)
    assert any(ln.endswith("gateway gw1 stopped") for ln in err.lines), err.lines
    assert not any(KEY in ln or pw in ln for ln in err.lines
                   for pw in (SITE_PW, UP_PW, NODE_PW))
