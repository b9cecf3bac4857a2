"""The composition root's small parts: alarm rules per device with the site's overrides, the
one-line log format, systemd's notify socket, wall-clock trust, and the agent's argument
checks."""

import logging
import os
import socket
import sys

import pytest

from gateway import app, config
from gateway.agent import Agent
from gateway.pipeline import Ingest
from simulators.clock import VirtualClock
from tests.gatewaykit import device_toml, mqtt_toml, site_toml

HOT = device_toml("kitchen-hot", "legionella-outlet", "lorawan", 'dev_eui = "70b3d57ed0061a2c"',
                  'attributes = { outlet = "hot" }')
CHIRPSTACK = mqtt_toml("sources.chirpstack", "gw1", "pw", tls=False)
UPSTREAM = mqtt_toml("upstream.mqtt", "gw1", "pw", tls=False)

CONFIG = (site_toml(data_dir=None, keys_file=None) + HOT
          + device_toml("kitchen-cold", "legionella-outlet", "lorawan", 'dev_eui = "70b3d57ed0061a2e"',
                        'attributes = { outlet = "cold" }')
          + CHIRPSTACK + UPSTREAM
          + "[alarms.legionella-outlet.hot_outlet_below_50]\nthreshold = 55\nseverity = \"critical\"\n"
          + "[alarms.legionella-outlet.hours_in_growth_band]\nenabled = false\n")


def test_device_rules_apply_the_profile_and_only_the_overrides_that_fit_each_device():
    cfg = config.parse(CONFIG, "/tmp/gateway.toml")
    rules = app.device_rules(cfg)
    hot = {r.id: r for r in rules["kitchen-hot"]}
    cold = {r.id: r for r in rules["kitchen-cold"]}
    assert set(hot) == {"hot_outlet_below_50", "hot_flush_test"}  # growth band disabled
    assert set(cold) == {"cold_outlet_at_or_above_20", "cold_flush_test"}
    assert hot["hot_outlet_below_50"].threshold == 55
    assert hot["hot_outlet_below_50"].severity == "critical"


def test_load_class_names_the_missing_part():
    assert app.load_class("gateway.agent:Agent") is Agent
    with pytest.raises(ImportError, match="gateway.nowhere:Thing is not available"):
        app.load_class("gateway.nowhere:Thing")


def _record(level, msg, exc_info=None):
    return logging.LogRecord("civicedge.gateway", level, __file__, 1, msg, (), exc_info)


def test_log_lines_are_one_line_even_with_a_traceback():
    try:
        raise RuntimeError("inner\nproblem")
    except RuntimeError:
        exc = sys.exc_info()
    line = app.OneLineFormatter().format(_record(logging.ERROR, "it broke", exc))
    assert "\n" not in line and " ERROR civicedge.gateway: it broke | Traceback" in line
    assert line.endswith("RuntimeError: inner | problem")
    journal = app.OneLineFormatter(journal=True)
    assert journal.format(_record(logging.WARNING, "rejected (replays)")) == \
        "<4>civicedge.gateway: rejected (replays)"
    assert journal.format(_record(logging.INFO, "a\nb")) == "<6>civicedge.gateway: a | b"


def test_journal_detection_compares_stderr_with_journal_stream():
    st = os.fstat(2)
    assert app.stderr_is_journal({"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)})
    assert not app.stderr_is_journal({"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino + 1)})
    assert not app.stderr_is_journal({"JOURNAL_STREAM": "junk"}) and not app.stderr_is_journal({})


def test_sd_notify_sends_one_datagram_to_the_socket_systemd_names(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        assert app.sd_notify("READY=1\nSTATUS=running", {"NOTIFY_SOCKET": path})
        assert s.recv(4096) == b"READY=1\nSTATUS=running"
    name = "civicedge-test-%d" % os.getpid()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)  # the abstract namespace, written "@name" by systemd
        assert app.sd_notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert s.recv(4096) == b"STOPPING=1"
    assert app.sd_notify("READY=1", {}) is False
    assert app.sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "absent")}) is False


def test_the_wall_checker_follows_synchronisation_and_logs_each_change(caplog):
    clock, synced = VirtualClock(wall_trusted=False), [True]
    check = app.wall_checker(clock, lambda: synced[0])
    with caplog.at_level(logging.INFO, logger="civicedge.gateway"):
        check()
        assert clock.wall_trusted()
        check()
        synced[0] = False
        check()
    assert not clock.wall_trusted()
    assert [r.message.split(" (")[0] for r in caplog.records] == [
        "wall clock trusted now", "wall clock no longer trusted"]
    assert isinstance(app.ntp_synchronized(), bool)


class _Box:  # an outbox is not needed to check the arguments
    pass


@pytest.mark.parametrize("kw,named", [
    ({"queue_size": 0}, "queue_size=0"), ({"batch_max": 2.5}, "batch_max=2.5"),
    ({"tick_s": -1}, "tick_s=-1"), ({"poll_s": True}, "poll_s=True"),
    ({"colour": 3}, "colour=3"), ({"gateway_id": ""}, "gateway_id")])
def test_agent_arguments_are_checked(kw, named):
    kw = dict({"gateway_id": "gw1"}, **kw)
    with pytest.raises(ValueError, match=named):
        Agent(Ingest({}), _Box(), VirtualClock(), **kw)


def test_sources_need_distinct_names():
    class Src:
        name = "serial:/dev/ttyUSB0"
    with pytest.raises(ValueError, match="distinct"):
        Agent(Ingest({}), _Box(), VirtualClock(), gateway_id="gw1", sources=[Src(), Src()])


SITE = site_toml(keys_file=None) + "%s\n" + HOT + CHIRPSTACK + "%s\n" + UPSTREAM


class _Forwarder:
    def start(self, outbox):
        pass

    def stop(self, timeout_s=5.0):
        pass

    def wake(self):
        pass

    def counters(self):
        return {}

    def status(self):
        return {"connected": True, "detail": "test"}


def _build(tmp_path, site_extra="", chirpstack_extra=""):
    from gateway.security import Secrets

    path = tmp_path / "gateway.toml"
    path.write_text(SITE % (site_extra, chirpstack_extra))
    cfg = config.load(path)
    secrets = Secrets({"sources.chirpstack": "x" * 20, "upstream.mqtt": "x" * 20}, {}, None)
    return app.build(cfg, secrets, VirtualClock(), forwarder=_Forwarder())


def test_alarm_windows_follow_the_sites_time_zone(tmp_path):
    agent = _build(tmp_path)
    try:
        assert agent.alarms.tz.key == "Europe/London"  # the default: a UK council's site
    finally:
        agent.stop()
    agent = _build(tmp_path, 'timezone = "Pacific/Auckland"')
    try:
        assert agent.alarms.tz.key == "Pacific/Auckland"
    finally:
        agent.stop()


def _uplink(f_port):
    from chirpstack_api import integration
    from google.protobuf import json_format

    ev = integration.UplinkEvent(deduplication_id="dd-%d" % f_port, f_port=f_port, f_cnt=7, data=b"\x01\x02")
    ev.device_info.dev_eui = "70b3d57ed0061a2c"
    return json_format.MessageToJson(ev).encode()


@pytest.mark.parametrize("extra,port", [("", 2), ("f_port = 10", 10)])
def test_the_chirpstack_source_takes_the_configured_fport(tmp_path, extra, port):
    agent = _build(tmp_path, chirpstack_extra=extra)
    try:
        (src,) = [s for s in agent.sources if s.name == "chirpstack"]
        taken = []
        src._sink = lambda arrival: taken.append(arrival) or True
        topic = "application/x/device/70b3d57ed0061a2c/event/up"
        for p in (2, 10):
            src._on_payload(topic, _uplink(p))
        c = src.counters()
        assert (c["uplinks"], c["dropped.other_port"]) == (1, 1)
        assert [a.dedup_id for a in taken] == ["dd-%d" % port]
    finally:
        agent.stop()
