"""Prometheus text exposition of the agent's snapshot (gateway/metrics.py), read back with a
strict parser of the 0.0.4 text format written here; and the real loopback HTTP server,
fetched with urllib on a free port."""

import math
import re
import socket
import urllib.error
import urllib.request

import pytest

from gateway import metrics
from gateway.agent import Agent
from gateway.outbox import Outbox, OutboxRecord
from gateway.pipeline import Ingest
from protocol import frame, senml
from simulators.clock import VirtualClock

_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class FormatError(AssertionError):
    pass


def _value(text):
    if text in ("NaN", "+Inf", "-Inf"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", text):
        raise FormatError("bad value %r" % text)
    return float(text)


def _labels(body, line):
    """Parse ``a="x",b="y"`` strictly (escapes: \\\\, \\", \\n only)."""
    labels, i = {}, 0
    while i < len(body):
        eq = body.index("=", i)
        name = body[i:eq]
        if not _LABEL.match(name) or name.startswith("__") or name in labels:
            raise FormatError("bad label name %r in %r" % (name, line))
        if body[eq + 1:eq + 2] != '"':
            raise FormatError("label value not quoted in %r" % line)
        j, out = eq + 2, []
        while True:
            c = body[j]
            if c == "\\":
                esc = body[j + 1]
                if esc not in '\\"n':
                    raise FormatError("bad escape \\%s in %r" % (esc, line))
                out.append("\n" if esc == "n" else esc)
                j += 2
            elif c == '"':
                break
            elif c == "\n":
                raise FormatError("raw newline in a label value")
            else:
                out.append(c)
                j += 1
        labels[name] = "".join(out)
        i = j + 1
        if i < len(body):
            if body[i] != ",":
                raise FormatError("expected ',' in %r" % line)
            i += 1
    return labels


def parse_exposition(text):
    """``{name: {"type", "help", "samples": {frozenset(labels.items()): value}}}``; raises
    ``FormatError`` for anything the 0.0.4 text format does not allow (plus our own rules:
    HELP and TYPE once each before a family's samples, samples of a family together, no
    repeated series, counters named ``*_total``, text ends with a newline)."""
    if text and not text.endswith("\n"):
        raise FormatError("text must end with a newline")
    fams, current, done = {}, None, set()
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, rest = line[2:6], line[7:]
            name, _, arg = rest.partition(" ")
            if not _METRIC.match(name):
                raise FormatError("bad metric name %r" % name)
            if name in done:
                raise FormatError("%s: %s after its samples or another family" % (name, kind))
            fam = fams.setdefault(name, {"type": None, "help": None, "samples": {}})
            if current not in (None, name):
                done.add(current)
            current = name
            key = kind.lower()
            if fam[key] is not None:
                raise FormatError("%s: second %s line" % (name, kind))
            if key == "type":
                if arg not in _TYPES:
                    raise FormatError("%s: bad type %r" % (name, arg))
                if fam["samples"]:
                    raise FormatError("%s: TYPE after samples" % name)
                fam["type"] = arg
            else:
                if re.search(r"\\[^\\n]", arg.replace("\\\\", "")):
                    raise FormatError("%s: bad escape in HELP" % name)
                fam["help"] = arg.replace("\\n", "\n").replace("\\\\", "\\")
            continue
        if not line or line.startswith("#"):
            raise FormatError("unexpected line %r" % line)
        m = re.match(r"([^{\s]+)(?:\{(.*)\})? (\S+)\Z", line, re.S)
        if not m:
            raise FormatError("bad sample line %r" % line)
        name, body, value = m.groups()
        if not _METRIC.match(name):
            raise FormatError("bad metric name %r" % name)
        if name != current:
            if name in done or name in fams and fams[name]["samples"]:
                raise FormatError("%s: samples not together" % name)
            if current is not None:
                done.add(current)
            current = name
        fam = fams.setdefault(name, {"type": None, "help": None, "samples": {}})
        series = frozenset(_labels(body or "", line).items())
        if series in fam["samples"]:
            raise FormatError("%s: series %s twice" % (name, dict(series)))
        fam["samples"][series] = _value(value)
    for name, fam in fams.items():
        if fam["type"] == "counter" and not name.endswith("_total"):
            raise FormatError("counter %s does not end in _total" % name)
    return fams


def sample(fams, name, **labels):
    return fams[name]["samples"][frozenset(labels.items())]


# -- the parser itself rejects what the format forbids -------------------------------------------
@pytest.mark.parametrize("bad", [
    "a 1",                                             # no trailing newline
    "a{x=\"1\"} 1\nb 2\na{x=\"2\"} 3\n",               # a family split
    "# TYPE a counter\na 1\n",                         # counter without _total
    "a{x=\"1\\t\"} 1\n",                               # a bad escape
    "a{x=\"1\"} 1\na{x=\"1\"} 2\n",                    # a series twice
    "1a 1\n",                                          # a bad name
    "a one\n",                                         # a bad value
])
def test_the_strict_parser_refuses_bad_text(bad):
    with pytest.raises((FormatError, ValueError)):
        parse_exposition(bad)


# -- rendering -------------------------------------------------------------------------------------
SNAPSHOT = {
    "pipeline.received": 120, "pipeline.accepted": 117, "pipeline.records": 351,
    "pipeline.duplicates": 4, "pipeline.replays": 1, "pipeline.auth_failures.bad_tag": 2,
    "outbox.rows.alarm": 3, "outbox.rows.routine": 1200, "outbox.oldest_age_s": 3600.5,
    "outbox.dropped.routine": 40, "outbox.dropped.alarm": 0,
    "outbox.dropped_by_reason.size": 40, "outbox.gap_markers": 1,
    "source.serial:/dev/ttyUSB0.reconnects": 2, "source.serial:/dev/ttyUSB0.connected": 1,
    "source.serial:/dev/ttyUSB0.link_errors.crc": 5, "forwarder.forwarded": 9000,
    "forwarder.reconnects": 3, "forwarder.connected": 0,
    "last_seen_s.sch1-rm12-co2": 1767571200.25, "device.bin-7.last_seen_s": 1767571100,
    "agent.queue_len": 7, "agent.store_failures.outbox_full": 1,
}


def test_the_required_metrics_have_names_types_labels_and_values():
    fams = parse_exposition(metrics.render(SNAPSHOT))
    expect = {
        ("civicedge_outbox_rows", "gauge", (("lane", "routine"),)): 1200,
        ("civicedge_outbox_oldest_unsent_age_seconds", "gauge", ()): 3600.5,
        ("civicedge_received_total", "counter", ()): 120,
        ("civicedge_duplicates_total", "counter", ()): 4,
        ("civicedge_replays_total", "counter", ()): 1,
        ("civicedge_auth_failures_total", "counter", (("reason", "bad_tag"),)): 2,
        ("civicedge_drops_total", "counter", (("lane", "routine"),)): 40,
        ("civicedge_drops_by_reason_total", "counter", (("reason", "size"),)): 40,
        ("civicedge_forwarded_total", "counter", ()): 9000,
        ("civicedge_source_reconnects_total", "counter",
         (("source", "serial:/dev/ttyUSB0"),)): 2,
        ("civicedge_source_link_errors_total", "counter",
         (("reason", "crc"), ("source", "serial:/dev/ttyUSB0"))): 5,
        ("civicedge_upstream_reconnects_total", "counter", ()): 3,
        ("civicedge_upstream_connected", "gauge", ()): 0,
        ("civicedge_device_last_seen_timestamp_seconds", "gauge",
         (("device", "sch1-rm12-co2"),)): 1767571200.25,
        ("civicedge_device_last_seen_timestamp_seconds", "gauge", (("device", "bin-7"),)):
            1767571100,
        ("civicedge_store_failures_total", "counter", (("reason", "outbox_full"),)): 1,
    }
    for (name, kind, labels), value in expect.items():
        assert fams[name]["type"] == kind, name
        assert fams[name]["help"], name
        assert sample(fams, name, **dict(labels)) == value, name


def test_counters_not_counted_yet_show_zero():
    fams = parse_exposition(metrics.render({}))
    assert sample(fams, "civicedge_received_total") == 0
    assert sample(fams, "civicedge_replays_total") == 0


def test_unknown_keys_are_exported_generically_with_honest_types():
    fams = parse_exposition(metrics.render({
        "pipeline.something_new": 3,              # pipeline counts: a counter
        "forwarder.modem_refusals.duty_cycle": 2,  # a family with a reason
        "source.i2c:1.pending": 4,                # a known gauge name
        "mystery.thing": 1.5,                     # no contract: untyped
        "agent.note": "text", "agent.none": None,  # not numbers: left out
    }))
    assert fams["civicedge_pipeline_something_new_total"]["type"] == "counter"
    assert sample(fams, "civicedge_forwarder_modem_refusals_total", reason="duty_cycle") == 2
    assert fams["civicedge_source_pending"]["type"] == "gauge"
    assert sample(fams, "civicedge_source_pending", source="i2c:1") == 4
    assert fams["civicedge_mystery_thing"]["type"] == "untyped"
    assert not any("note" in n or "none" in n for n in fams)


def test_label_values_are_escaped_and_read_back_exactly():
    odd = 'serial:/dev/tty"USB\\0\nx.y'
    fams = parse_exposition(metrics.render({"source.%s.frames" % odd: 5,
                                            "source.%s.link_errors.cobs" % odd: 1}))
    assert sample(fams, "civicedge_source_frames_total", source=odd) == 5
    assert sample(fams, "civicedge_source_link_errors_total", source=odd, reason="cobs") == 1


def test_a_source_name_with_dots_keeps_them():
    fams = parse_exposition(metrics.render({
        "source.serial:socket://10.0.0.2:7000.link_errors.crc": 1,
        "source.serial:socket://10.0.0.2:7000.opens": 2}))
    assert sample(fams, "civicedge_source_link_errors_total",
                  source="serial:socket://10.0.0.2:7000", reason="crc") == 1
    assert sample(fams, "civicedge_source_opens_total", source="serial:socket://10.0.0.2:7000") == 2


def test_special_floats_and_bools():
    fams = parse_exposition(metrics.render({"outbox.oldest_age_s": float("inf"),
                                            "agent.uptime_s": float("nan"),
                                            "forwarder.connected": True}))
    assert sample(fams, "civicedge_outbox_oldest_unsent_age_seconds") == math.inf
    assert math.isnan(sample(fams, "civicedge_agent_uptime_seconds"))
    assert sample(fams, "civicedge_upstream_connected") == 1


def test_two_keys_making_one_name_with_two_types_keep_the_first():
    fams = parse_exposition(metrics.render({"weird.a-b": 1, "weird.a_b": 2}))
    assert list(fams["civicedge_weird_a_b"]["samples"].values()) == [1]


def test_the_real_agent_snapshot_is_covered_by_the_table(tmp_path):
    """A real Agent over a real Ingest (one authentic frame, one forged) and Outbox: every
    key its snapshot has today maps to a described metric, none to the generic fall-back
    except the agent's own bookkeeping counters."""
    clock = VirtualClock()
    key = bytes(range(16, 48))
    ing = Ingest({"sch1-rm12-co2": key})
    recs = [{"seq": 0, "t": 1767571200, "values": [["co2_ppm", 612, "ok"]]}]
    payload = senml.encode_pack("sch1-rm12-co2", 7, recs)
    good = frame.encode_data(key, "sch1-rm12-co2", 7, 0, 1, payload)
    assert ing.ingest_frame(good, "serial:x", received_s=1767571200).accepted
    assert not ing.ingest_frame(good[:-1] + bytes([good[-1] ^ 1]), "serial:x").accepted
    ob = Outbox(str(tmp_path / "o.db"), 1 << 20, 86400, clock)
    ob.put_many([OutboxRecord("sch1-rm12-co2", 7, 0, recs[0])])
    snap = Agent(ing, ob, clock, gateway_id="gw1").snapshot()
    snap.update(metrics.flatten("outbox.history", ob.history_stats()))
    fams = parse_exposition(metrics.render(snap))
    generic = sorted(n for n, f in fams.items() if "not described yet" in f["help"])
    assert generic == [], generic
    assert sample(fams, "civicedge_outbox_rows", lane="routine") == 1
    assert sample(fams, "civicedge_auth_failures_total", reason="bad_tag") == 1
    assert sample(fams, "civicedge_history_trimmed_total", reason="age") == 0


# -- the HTTP server -------------------------------------------------------------------------------
def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.headers["Content-Type"], r.read().decode("utf-8")


def test_the_server_answers_get_metrics_on_loopback():
    state = {"n": 0}

    def snap():
        state["n"] += 1
        return {"pipeline.received": state["n"], "source.a.connected": 1}

    srv = metrics.MetricsServer("127.0.0.1", 0, snap)
    try:
        assert srv.port > 0 and srv.url == "http://127.0.0.1:%d/metrics" % srv.port
        status, ctype, body = fetch(srv.url)
        assert status == 200 and ctype == metrics.CONTENT_TYPE
        assert sample(parse_exposition(body), "civicedge_received_total") == 1
        _, _, body = fetch(srv.url)
        assert sample(parse_exposition(body), "civicedge_received_total") == 2  # fresh each scrape
        for path in ("/", "/metricsx", "/favicon.ico"):
            with pytest.raises(urllib.error.HTTPError) as e:
                fetch("http://127.0.0.1:%d%s" % (srv.port, path))
            assert e.value.code == 404
    finally:
        srv.stop()
    with pytest.raises(OSError):
        fetch(srv.url)


def test_a_failing_snapshot_answers_500_and_the_server_goes_on():
    calls = []

    def snap():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("stats unavailable")
        return {"pipeline.replays": 3}

    srv = metrics.MetricsServer("localhost", 0, snap)
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            fetch(srv.url)
        assert e.value.code == 500
        assert sample(parse_exposition(fetch(srv.url)[2]), "civicedge_replays_total") == 3
    finally:
        srv.stop()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_loopback():
    try:
        srv = metrics.MetricsServer("::1", 0, lambda: {"alarms.active": 2})
    except OSError:
        pytest.skip("::1 cannot be bound here")
    try:
        assert srv.url.startswith("http://[::1]:")
        assert sample(parse_exposition(fetch(srv.url)[2]), "civicedge_alarms_active") == 2
    finally:
        srv.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "gateway.local", ""])
def test_a_host_beyond_loopback_is_refused(host):
    with pytest.raises(ValueError, match="loopback"):
        metrics.MetricsServer(host, 0, dict)


def test_a_port_in_use_raises_oserror():
    srv = metrics.MetricsServer("127.0.0.1", 0, dict)
    try:
        with pytest.raises(OSError):
            metrics.MetricsServer("127.0.0.1", srv.port, dict)
    finally:
        srv.stop()


def test_flatten_dots_nested_stats():
    assert metrics.flatten("outbox", {"rows": {"alarm": 1}, "in_flight": 2}) == {
        "outbox.rows.alarm": 1, "outbox.in_flight": 2}

