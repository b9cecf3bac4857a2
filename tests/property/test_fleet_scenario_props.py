"""Scenario loader: whatever it is fed -- arbitrary text, arbitrary TOML-shaped tables, a good
scenario with one part changed -- it returns a Scenario or raises ScenarioError, never anything
else; and a Scenario it returns can give its nodes, its JSON form and reduced copies (the
first nodes, chosen nodes, a squeezed fault schedule)."""

import copy
import datetime
import json
import math

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from simulators.fleet import scenario as sc
from simulators.fleet.scenario import ScenarioError


def toml_value(v):
    """A TOML inline value for ``v`` (str, int, float, bool, datetime, list, dict)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join("%s = %s" % (toml_value(k), toml_value(x)) for k, x in v.items()) + "}"


def toml_document(d):
    return "".join("%s = %s\n" % (toml_value(k), toml_value(v)) for k, v in d.items())


WORDS = ["scenario", "gateways", "groups", "faults", "name", "title", "seed", "start", "duration", "sample_every",
         "id", "site", "lorawan", "profile", "link", "count", "gateway", "ids", "first", "environment", "stagger",
         "sets", "distances_m", "params", "kind", "at", "target", "during", "mode", "magnitude", "quantity",
         "channel_mhz", "jump", "site", "x"]
STRINGS = ["", "gw1", "gw2", "sch1", "street-no2", "classroom-co2", "bin-level", "mqtt", "serial", "lorawan",
           "street", "pipe", "bin", "classroom", "busy", "quiet", "hst1-no2-{n:02d}", "{n}", "{m}", "a{n:x}",
           "12:00", "23:59", "24:00", "+1h", "+0s", "45m", "1h30m", "-2h", "+1d", "2d", "0s", "10h",
           "2026-03-02T07:00:00Z", "1969-01-01T00:00:00Z", "broker_outage", "clock_jump", "failing_sensor",
           "lora_interference", "node_power_cut", "stuck_i2c", "gateway_power_cut", "gateway_disk_full", "drift",
           "nack", "spike", "stuck_value", "flash_write", "any", "no2_ppb", "temperature_c", "near", "hst1-no2-01",
           "interval_s=60", "="]
SCALARS = st.one_of(
    st.sampled_from(STRINGS), st.text(max_size=12), st.booleans(),
    st.integers(min_value=-2**63, max_value=2**63 - 1), st.integers(min_value=-5, max_value=5000),
    st.floats(allow_nan=True), st.sampled_from([868.1, 868.3, 868.5, 0.0, -1.0, 30.0, 400.0]),
    st.datetimes(min_value=datetime.datetime(1960, 1, 1), max_value=datetime.datetime(2100, 1, 1),
                 timezones=st.sampled_from([datetime.timezone.utc, datetime.timezone(datetime.timedelta(hours=1))])),
)
KEYS = st.one_of(st.sampled_from(WORDS), st.text(max_size=8))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)

BASE = {
    "scenario": {"name": "p", "seed": 3, "start": "2026-03-02T00:00:00Z", "duration": "6h", "sample_every": "10m"},
    "gateways": [{"id": "gw1", "site": "hst1", "lorawan": True}, {"id": "gw2", "site": "hst1"}],
    "groups": [
        {"name": "near", "profile": "street-no2", "link": "lorawan", "count": 3, "gateway": "gw1",
         "ids": "hst1-no2-{n:02d}", "environment": "street", "stagger": "1m", "distances_m": [50, 500],
         "params": {"site": "busy"}},
        {"name": "wired", "profile": "street-no2", "link": "mqtt", "count": 2, "gateway": "gw2",
         "ids": "hst1-aq{n}", "first": 7, "environment": "street", "params": {"site": "quiet"},
         "sets": ["interval_s=60"]},
    ],
    "faults": [
        {"kind": "broker_outage", "at": "01:00", "duration": "45m", "target": "gw2"},
        {"kind": "clock_jump", "at": "+2h", "jump": "-2h", "target": "near"},
        {"kind": "failing_sensor", "at": "03:00", "duration": "1h", "target": "hst1-aq8", "mode": "drift",
         "magnitude": 5.0, "quantity": "no2_ppb"},
        {"kind": "lora_interference", "at": "04:00", "duration": "10m", "target": "gw1", "channel_mhz": 868.1},
        {"kind": "node_power_cut", "at": "05:00", "duration": "5m", "target": ["hst1-no2-01"], "during": "flash_write"},
    ],
}


def paths(value, prefix=()):
    """Every (path) to a value inside nested dicts and lists."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(paths(v, prefix + (k,)))
    return out


def outcome(text, note=event):
    """The loader's result for ``text``: a Scenario, whose derived forms must also work, or a
    ScenarioError. Anything else propagates and fails the test. ``note`` records which
    (``--hypothesis-show-statistics``)."""
    try:
        s = sc.loads(text, where="fuzz.toml")
    except ScenarioError as e:
        assert str(e).startswith("fuzz.toml")
        note("refused at %s" % (e.table or "parse").split("[")[0])
        return e
    nodes = s.nodes()
    assert len({n.id for n in nodes}) == len(nodes)
    json.dumps(s.to_dict())
    small = s.reduced(nodes_per_group=1, duration_s=max(1, s.duration_s // 2))
    assert len(small.nodes()) == len(s.groups)
    # squeezed: every fault inside the shorter run; chosen nodes keep their seeds and distances
    squeezed = s.reduced(nodes=[n.id for n in nodes[::2]], duration_s=max(1, s.duration_s // 3), squeeze_faults_s=60)
    assert [(n.id, n.env_seed, n.distances_m) for n in squeezed.nodes()] == [
        (n.id, n.env_seed, n.distances_m) for n in nodes[::2]]
    assert all(0 <= f.start_s < squeezed.duration_s and (f.end_s is None or f.start_s < f.end_s <= squeezed.duration_s)
               for f in squeezed.faults)
    json.dumps(squeezed.to_dict())
    note("accepted")
    return s


def test_the_base_scenario_is_good():
    s = outcome(toml_document(BASE), note=lambda _: None)
    assert isinstance(s, sc.Scenario) and len(s.nodes()) == 5 and len(s.faults) == 5


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text(text):
    outcome(text)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=5))
def test_arbitrary_toml_tables(doc):
    outcome(toml_document(doc))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_good_scenario_with_one_part_changed(data):
    doc = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        where = data.draw(st.sampled_from(paths(doc) or [()]))
        if not where:
            break
        parent = doc
        for k in where[:-1]:
            parent = parent[k]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[where[-1]] = data.draw(VALUES)
        elif action == "delete":
            parent.pop(where[-1])
        elif isinstance(parent[where[-1]], dict):
            parent[where[-1]][data.draw(KEYS)] = data.draw(VALUES)
        elif isinstance(parent[where[-1]], list):
            parent[where[-1]].append(data.draw(VALUES))
    outcome(toml_document(doc))
