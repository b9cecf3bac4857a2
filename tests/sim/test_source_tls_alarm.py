"""TLS failures on the gateway's own inbound connections are alarmed (RELIABILITY.md's fault
catalogue: "TLS failure (wrong CA, expired cert, clock before NTP): refuse, keep buffering,
raise an alarm; never fall back to plaintext"), as they are for the upstream forwarder.

A real Mosquitto started here serves the site broker's topics and ChirpStack's over TLS only,
with a CA and certificates made in the test (``make_test_tls``, trustme). The composition
root (``gateway.app.build``) builds the site-broker and ChirpStack sources from a
``gateway.toml`` whose ``ca_file`` did not sign the broker's certificate: each source counts
``connect_failures.tls`` (classified as the forwarder does,
``gateway.forward.mqtt_link.connect_failure``), the agent raises ``tls_failure`` for each
(stored in the alarm lane, in metrics and in ``civicedge gateway status``); the operator puts
the right CA in that file and restarts: both connect and the alarms clear. An expired server
certificate is a TLS failure too. The agent's link check runs at every step here (the clock
is virtual)."""

import datetime
import json
import os
import sqlite3
import threading

import trustme

from gateway import app, config, metrics, ops
from gateway.security import Secrets
from simulators.broker import Mosquitto, make_test_tls
from simulators.clock import VirtualClock
from tests.gatewaykit import device_toml, mqtt_toml, needs_mosquitto, site_toml, wait_until
from tests.sim.test_agent import Upstream
from tests.sim.test_chirpstack_max_held import metric

pytestmark = needs_mosquitto

USERS = {"gateway": "gw-3c9e7a51d2f08b", "chirpstack": "cs-d1e2f3a4b5c6d7"}
ACL = ["user gateway", "topic read civicedge/node/+/up", "topic write civicedge/node/+/ack",
       "topic read application/+/device/+/event/up", "user chirpstack", "topic write application/#"]
APP = "6f1c0f7e-2d8a-4a43-9a4e-0c3b1f6d2a11"
PARTS = ("source.site_mqtt", "source.chirpstack")
TUNING = {"backoff_s": 0.05, "put_timeout_s": 0.05, "poll_s": 0.02, "link_check_s": 0}


def write_config(tmp_path, port, ca_file):
    path = tmp_path / "gateway.toml"
    path.write_text(
        site_toml()  # the keys file is not read here (the test gives Secrets)
        + device_toml("sch1-rm12-co2", "classroom-co2", "mqtt")
        + device_toml("sch1-yard-bin1", "bin-level", "lorawan", 'dev_eui = "70b3d57ed0061a2d"')
        + mqtt_toml("sources.site_broker", "gateway", "site.pw", port=port, ca_file=ca_file)
        + mqtt_toml("sources.chirpstack", "gateway", "cs.pw", port=port, ca_file=ca_file)
        + 'application_id = "%s"\n' % APP
        + mqtt_toml("upstream.mqtt", "gw1", "up.pw", tls=False))
    return config.load(path)


class Gateway:
    """The agent as the composition root builds it (configured sources), on its own thread."""

    def __init__(self, cfg):
        secrets = Secrets({"sources.site_broker": USERS["gateway"],
                           "sources.chirpstack": USERS["gateway"]}, {}, None)
        self.agent = app.build(cfg, secrets, VirtualClock(), forwarder=Upstream(), **TUNING)
        self.sources = {s.name: s for s in self.agent.sources}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.agent.run, args=(self.stop_event,),
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def tls_events(outbox_path):
    """The gateway's stored tls_failure events (alarm lane), in order."""
    db = sqlite3.connect(outbox_path)
    try:
        rows = [json.loads(p) for (p,) in db.execute(
            "SELECT payload FROM rows WHERE lane = 'alarm' ORDER BY id")]
    finally:
        db.close()
    return [e for r in rows for e in r.get("alarms", ()) if e["rule"] == "tls_failure"]


def status_alarm_notes(cfg):
    st = ops.gather_status(cfg, 1767571200.0, probe=False)
    return [n for n in st["notes"] if n.startswith("ALARM tls_failure")]


def test_a_wrong_ca_raises_tls_failure_for_each_source_and_the_right_ca_clears_it(tmp_path):
    good = make_test_tls(str(tmp_path))
    os.makedirs(tmp_path / "wrong")
    wrong = make_test_tls(str(tmp_path / "wrong"))
    ca_file = str(tmp_path / "site-ca.pem")  # what gateway.toml names: first the wrong CA
    with open(wrong["cafile"], "rb") as f, open(ca_file, "wb") as out:
        out.write(f.read())
    with Mosquitto(users=USERS, acl=ACL, tls=good) as broker:
        cfg = write_config(tmp_path, broker.port, ca_file)
        gw = Gateway(cfg)
        try:
            assert wait_until(lambda: gw.agent.snapshot()["agent.link_alarms_active"] == 2, 30), \
                gw.agent.snapshot()
            snap = gw.agent.snapshot()
            for name in ("site_mqtt", "chirpstack"):
                c = gw.sources[name].counters()
                assert c["connect_failures.tls"] >= 3 and c["connects"] == 0, (name, c)
                assert c["connect_failures.network"] == 0
                st = gw.sources[name].status()
                assert st["connected"] is False and "ca_file" in st["detail"]
                assert "certificate verify failed" in st["last_error"]
            text = metrics.render(snap)
        finally:
            gw.close()
        assert "unknown ca" in broker.log_text()  # refused by the gateway, nothing in plaintext
        assert metric(text, "civicedge_link_alarms_active") == 2
        for name in ("site_mqtt", "chirpstack"):
            assert metric(text, "civicedge_source_connect_failures_total", reason="tls",
                          source=name) >= 3
            assert metric(text, "civicedge_source_connected", source=name) == 0
        raised = tls_events(cfg.outbox.path)
        assert sorted(e["detail"]["part"] for e in raised) == sorted(PARTS)
        for e in raised:
            assert e["kind"] == "raised" and e["severity"] == "critical" and e["value"] >= 3
            assert e["detail"]["broker"] == "127.0.0.1:%d" % broker.port
            assert "certificate verify failed" in e["detail"]["last_error"]
        notes = status_alarm_notes(cfg)
        assert len(notes) == 2 and all("ca_file" in n for n in notes)
        assert any("[sources.site_broker]" in n for n in notes)
        assert any("[sources.chirpstack]" in n for n in notes)
        text = ops.format_status(ops.gather_status(cfg, 1767571200.0, probe=False))
        assert "ALARM tls_failure: source.site_mqtt" in text

        with open(good["cafile"], "rb") as f, open(ca_file, "wb") as out:  # the fix, a restart
            out.write(f.read())
        gw = Gateway(cfg)
        try:
            assert wait_until(lambda: all(s.status()["connected"]
                                          for s in gw.sources.values()), 30)
            assert wait_until(lambda: gw.agent.snapshot()["agent.link_alarms_active"] == 0, 30)
            snap = gw.agent.snapshot()
            assert snap["agent.link_events"] == 2
            assert snap["source.site_mqtt.connect_failures.tls"] == 0
        finally:
            gw.close()
    events = tls_events(cfg.outbox.path)
    assert sorted((e["detail"]["part"], e["kind"]) for e in events) == sorted(
        [(p, k) for p in PARTS for k in ("raised", "cleared")])
    for part in PARTS:
        r, c = [e for e in events if e["detail"]["part"] == part]
        assert (r["kind"], c["kind"]) == ("raised", "cleared") and c["since"] == r["since"]
    assert status_alarm_notes(cfg) == []


def test_an_expired_broker_certificate_is_a_tls_failure_not_a_network_one(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1",
                         not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
                         not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.timezone.utc))
    files = {"cafile": str(tmp_path / "ca.pem"), "certfile": str(tmp_path / "server.pem"),
             "keyfile": str(tmp_path / "server.key")}
    ca.cert_pem.write_to_path(files["cafile"])
    cert.cert_chain_pems[0].write_to_path(files["certfile"])
    cert.private_key_pem.write_to_path(files["keyfile"])
    os.chmod(files["keyfile"], 0o600)
    with Mosquitto(users=USERS, acl=ACL, tls=files) as broker:
        cfg = write_config(tmp_path, broker.port, files["cafile"])
        gw = Gateway(cfg)
        try:
            assert wait_until(lambda: gw.agent.snapshot()["agent.link_alarms_active"] == 2, 30), \
                gw.agent.snapshot()
            st = gw.sources["site_mqtt"].status()
            c = gw.sources["chirpstack"].counters()
        finally:
            gw.close()
    assert "certificate has expired" in st["last_error"]
    assert c["connect_failures.tls"] >= 3 and c["connect_failures.network"] == 0
    assert c["connects"] == 0

