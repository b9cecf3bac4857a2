"""The gateway's own alarm when TLS to the council's broker keeps failing (RELIABILITY.md's
fault catalogue: "TLS failure (wrong CA, expired cert, clock before NTP): refuse, keep
buffering, raise an alarm; never fall back to plaintext"), in the test's process with the
composition root (``gateway.app.build``), a real council Mosquitto with TLS only and a CA
file that did not sign its certificate (``make_test_tls``, as tests/e2e/test_gateway_faults.py
makes them; that file's ``test_a_wrong_ca_...`` checks the same through ``civicedge gateway
run`` and its metrics)."""

import json
import logging
import os
import random

import pytest

from gateway.backoff import Backoff
from gateway.forward.mqtt import MQTTForwarder
from simulators.broker import make_test_tls, mosquitto_available
from tests.e2e.gatewayharness import GATEWAY_ID, SITE_ID, UP_PW, JumpingClock, Site, wait_until

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")


def gateway_alarms(site, rule):
    """The gateway's own ``rule`` events the platform received, in order."""
    out = []
    for t, payload in site.collector.topics("/alarms"):
        if t == "civicedge/v1/%s/%s/alarms" % (SITE_ID, GATEWAY_ID):
            out += [e for e in json.loads(payload)["alarms"] if e["rule"] == rule]
    return out


def tls_alarms(site):
    """The gateway's tls_failure events the platform received, in order."""
    return gateway_alarms(site, "tls_failure")


def test_a_wrong_ca_raises_the_tls_alarm_in_the_agent_and_a_good_link_clears_it(tmp_path,
                                                                                caplog):
    """The same fault in this process, fast: the forwarder as the composition root builds it
    but with a short backoff, the link checked every 0.1 s, two refusals raise."""
    os.makedirs(tmp_path / "other-ca")
    other = make_test_tls(str(tmp_path / "other-ca"))
    tuning = {"link_check_s": 0.1, "tls_alarm_after": 2}
    with Site(tmp_path, n_nodes=1, ca_file=other["cafile"]) as site:
        clock = JumpingClock()

        def forwarder():
            return MQTTForwarder(site.load_config().upstream_mqtt, UP_PW, SITE_ID, GATEWAY_ID,
                                 clock, backoff=Backoff(0.05, 0.2, rng=random.Random(3)))
        agent = site.in_process_agent(clock, forwarder=forwarder(), **tuning)
        with caplog.at_level(logging.WARNING, logger="civicedge.gateway"):
            assert agent.start()
            assert wait_until(lambda: agent.snapshot()["agent.link_alarms_active"] == 1, 30)
            snap = agent.snapshot()
            assert snap["forwarder.connect_failures.tls"] >= 2 and snap["agent.link_events"] == 1
            assert snap["outbox.rows.alarm"] == 1 and snap["forwarder.connects"] == 0
            assert agent.stop()
            assert site.collector.messages == []  # nothing went anywhere, in plaintext or not
            site.write_files(ca_file=site.tls["cafile"])
            agent = site.in_process_agent(clock, forwarder=forwarder(), **tuning)
            assert agent.start()
            assert wait_until(lambda: [e["kind"] for e in tls_alarms(site)] ==
                              ["raised", "cleared"], 30), site.collector.topics("/alarms")
            assert wait_until(lambda: agent.snapshot()["outbox.rows.alarm"] == 0)
            snap = agent.snapshot()
            assert snap["agent.link_alarms_active"] == 0 and snap["agent.link_events"] == 1
            assert agent.stop()
    raised, cleared = tls_alarms(site)
    assert raised["device_id"] == cleared["device_id"] == GATEWAY_ID
    assert raised["severity"] == "critical" and raised["value"] >= 2
    assert "certificate verify failed" in raised["detail"]["last_error"]
    assert cleared["since"] == raised["since"] and cleared["at"] >= raised["at"]
    lines = [r.getMessage() for r in caplog.records]
    assert any(ln.startswith("ALARM tls_failure raised: forwarder refused") for ln in lines)
    assert any(ln.startswith("alarm tls_failure cleared: forwarder") for ln in lines)
    assert not any(UP_PW in ln for ln in lines)
