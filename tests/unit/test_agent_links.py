"""The gateway's TLS alarm (gateway/agent_links.py): refused handshakes in a row raise
``tls_failure`` once, a connection clears it, network failures neither raise nor clear, and
the standing alarms survive a restart through ``state()``."""

import pytest

from gateway.agent_links import QUANTITY, RULE_TLS, SEVERITY, LinkAlarms

DOWN = {"connected": False, "broker": "council.example:8883",
        "last_error": "connecting to council.example:8883 failed (tls): certificate verify failed"}
UP = {"connected": True, "broker": "council.example:8883"}


def counters(tls, connects=0, network=0):
    return {"connect_failures.tls": tls, "connects": connects,
            "connect_failures.network": network}


def test_three_refused_handshakes_in_a_row_raise_once_and_a_connection_clears():
    la = LinkAlarms("gw1")
    assert la.observe("forwarder", counters(1), DOWN, 100.0) == []
    assert la.observe("forwarder", counters(2), DOWN, 105.0) == []
    (raised,) = la.observe("forwarder", counters(3), DOWN, 110.0)
    assert (raised.kind, raised.rule_id, raised.device_id, raised.quantity, raised.value,
            raised.since, raised.at, raised.severity) == (
        "raised", RULE_TLS, "gw1", QUANTITY, 3, 100.0, 110.0, SEVERITY)
    assert raised.detail["part"] == "forwarder" and "certificate verify failed" in \
        raised.detail["last_error"]
    assert la.observe("forwarder", counters(9), DOWN, 200.0) == []  # raised once
    assert la.state() == {"active": {"forwarder": {"since": 100.0, "raised_at": 110.0}}}
    (cleared,) = la.observe("forwarder", counters(9, connects=1), UP, 300.0)
    assert (cleared.kind, cleared.since, cleared.at) == ("cleared", 100.0, 300.0)
    assert la.active == {} and la.observe("forwarder", counters(9, 1), UP, 301.0) == []


def test_a_connection_between_failures_and_network_failures_do_not_raise():
    la = LinkAlarms("gw1", after=3)
    la.observe("forwarder", counters(2), DOWN, 1.0)
    la.observe("forwarder", counters(2, connects=1), DOWN, 2.0)  # it connected in between
    assert la.observe("forwarder", counters(3, connects=1), DOWN, 3.0) == []
    # the broker is down: network failures only, however many
    assert la.observe("forwarder", counters(3, 1, network=50), DOWN, 4.0) == []
    assert la.observe("forwarder", counters(4, 1, network=50), DOWN, 5.0) == []
    assert la.observe("forwarder", counters(5, 1, network=90), DOWN, 6.0)[0].kind == "raised"


def test_parts_without_a_tls_counter_are_not_watched_and_untrusted_time_is_none():
    la = LinkAlarms("gw1", after=1)
    assert la.observe("source.serial:x", {"frames": 3}, {"connected": False}, None) == []
    (ev,) = la.observe("forwarder", counters(1), DOWN, None)
    assert ev.since is None and ev.at is None


def test_standing_alarms_survive_a_restart_and_bad_state_is_ignored():
    la = LinkAlarms("gw1", after=1)
    la.observe("forwarder", counters(1), DOWN, 10.0)
    again = LinkAlarms("gw1", state=la.state())  # a new process: counters from 0
    (cleared,) = again.observe("forwarder", counters(0, connects=1), UP, 50.0)
    assert cleared.kind == "cleared" and cleared.since == 10.0
    for junk in (None, "x", {"active": 3}, {"active": {"forwarder": 1}}):
        assert LinkAlarms("gw1", state=junk).active == {}
    with pytest.raises(ValueError, match="after"):
        LinkAlarms("gw1", after=0)
