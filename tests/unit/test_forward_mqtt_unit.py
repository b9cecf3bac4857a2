"""MQTTForwarder's fail-closed construction and the in-flight bookkeeping (no broker needed;
tests/sim/test_forward_mqtt.py runs it against a real Mosquitto)."""

import dataclasses
import time

import pytest

from gateway.clock import SystemClock
from gateway.config_types import MQTTConnection, MQTTUpstream
from gateway.forward import Forwarder, InFlight
from gateway.forward.mqtt import COUNTERS, MQTTForwarder
from gateway.upstream import Message

PW = "gw1-7c1d9e4f2a8b"


def up(host="127.0.0.1", tls=False, tls_verify=True, ca_file=None, encoding="senml-json",
       per_publish=100):
    conn = MQTTConnection(host, 8883 if tls else 1883, tls, tls_verify, ca_file, None, None,
                          "gw-1", "/unused", "civicedge-site-a-gw-1", 60)
    return MQTTUpstream(conn, encoding, 100, per_publish)


def make(u, password=PW, **kw):
    return MQTTForwarder(u, password, "site-a", "gw-1", SystemClock(), **kw)


@pytest.mark.parametrize("u, words", [
    (up(host="broker.council.example"), "upstream.mqtt.tls"),  # plaintext off the host
    (up(tls=True, tls_verify=False), "upstream.mqtt.tls_verify"),
    (up(tls=True, ca_file="/nonexistent/ca.pem"), "ca_file"),
    (up(encoding="xml"), "encoding"),
    (up(per_publish=0), "per_publish"),
])
def test_an_insecure_or_unusable_configuration_is_refused(u, words):
    with pytest.raises(ValueError, match=words):
        make(u)


@pytest.mark.parametrize("kw, words", [
    ({"password": ""}, "password"), ({"protocol": "3"}, "protocol"),
    ({"max_publish_bytes": 10}, "max_bytes"),
])
def test_bad_arguments_are_named(kw, words):
    args = {"password": PW}
    args.update(kw)
    with pytest.raises(ValueError, match=words):
        make(up(), **args)


def test_plaintext_to_loopback_is_allowed_and_nothing_runs_before_start():
    fw = make(up(host="localhost"))
    assert isinstance(fw, Forwarder)
    assert fw.counters() == dict.fromkeys(COUNTERS + ("in_flight", "in_flight_rows", "confirmed_rows"), 0)
    assert fw.status()["connected"] is False and fw.status()["broker"] == "localhost:1883"
    fw.wake()  # harmless before start
    assert fw.stop() is True


def msg(rows=(), gaps=()):
    return Message("t", b"", "readings", tuple(rows), tuple(gaps), len(rows))


def test_a_row_is_done_only_when_every_message_carrying_it_is_confirmed():
    f = InFlight()
    pack, alarm, marker = msg([1, 2, 3]), msg([2]), msg(gaps=[9])
    assert f.carry([pack, alarm, marker], row_ids=[1, 2, 3, 4]) == 1  # row 4: nothing to send
    assert f.take_done() == ([4], [])
    for key, m in enumerate((pack, alarm, marker)):
        f.sent(key, m)
    assert len(f) == 3
    assert f.confirm(0) is pack
    assert f.take_done() == ([1, 3], [])  # row 2 waits for its alarms message
    assert f.confirm(0) is None  # a repeated PUBACK changes nothing
    assert f.confirm(2) is marker and f.take_done() == ([], [9])
    assert f.confirm(1) is alarm and f.take_done() == ([2], [])
    assert len(f) == 0 and f.refs == {}


def test_a_refused_message_leaves_its_rows_unfinished_until_cleared():
    f = InFlight()
    pack, alarm = msg([1, 2]), msg([2])
    f.carry([pack, alarm], [1, 2])
    f.sent("a", pack)
    f.sent("b", alarm)
    assert f.refuse("b") is alarm and f.confirm("a") is pack
    assert f.take_done() == ([1], [])  # row 2 is never done: the forwarder releases it
    f.clear()
    assert len(f) == 0 and f.refs == {} and f.take_done() == ([], [])


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "60", True, None])
def test_a_bad_puback_timeout_is_refused_naming_the_key(bad):
    with pytest.raises(ValueError, match="upstream.mqtt.puback_timeout_s"):
        make(dataclasses.replace(up(), puback_timeout_s=bad))


def test_the_puback_wait_runs_from_the_later_of_the_send_and_the_last_puback():
    fw = make(dataclasses.replace(up(), puback_timeout_s=60))
    try:
        assert fw._puback_left_s() == float("inf") and not fw._puback_overdue()  # none awaited
        now = time.monotonic()
        fw._sent_at.update({7: now - 100, 8: now - 1})  # 7: sent 100 s ago, the oldest
        fw._last_puback = now  # ... but a PUBACK just came: the window moves, no stall
        assert fw._puback_left_s() > 30 and not fw._puback_overdue()
        fw._got_puback(7)  # in order: 8 is the oldest now, sent 1 s ago
        assert fw._puback_left_s() > 30
        fw._last_puback = 0.0
        fw._sent_at[8] = now - 100  # no PUBACK for 100 s: overdue, counted once, link broken
        assert fw._puback_overdue() and "no PUBACK for message 8" in fw._broken
        assert fw.counters()["puback_timeouts"] == 1
    finally:
        assert fw.stop()
