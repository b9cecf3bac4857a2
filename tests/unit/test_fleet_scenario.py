"""Scenario files (issue 5, Contract 1): the shipped scenarios load with the promised sizes and
faults; every bad input is a ScenarioError naming the file, the table and the key; the same
file gives the same nodes, seeds included. reduced(): test_fleet_scenario_reduced.py."""

import copy
import datetime
import hashlib
import json
import pathlib

import pytest

from simulators.environment import ClassroomCO2
from simulators.environment.base import mix_seed, weekday
from simulators.fleet import scenario as sc
from simulators.fleet.scenario import ScenarioError
from simulators.fleet.scenario_parse import parse_at, parse_duration, parse_start

SCENARIOS = pathlib.Path(sc.__file__).resolve().parents[1] / "scenarios"
ALL_KINDS = {"broker_outage", "gateway_power_cut", "gateway_disk_full", "node_power_cut", "stuck_i2c",
             "failing_sensor", "lora_interference", "clock_jump"}


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join("%s = %s" % (json.dumps(k), toml_value(x)) for k, x in v.items()) + "}"


def toml_document(d):
    return "\n".join("%s = %s" % (json.dumps(k), toml_value(v)) for k, v in d.items()) + "\n"


BASE = {
    "scenario": {"name": "t", "title": "a test", "seed": 7, "start": "2026-03-02T07:00:00Z", "duration": "10h"},
    "gateways": [{"id": "gw1", "site": "sch1"}, {"id": "gw2", "site": "civ1", "lorawan": True}],
    "groups": [
        {"name": "rooms", "profile": "classroom-co2", "link": "mqtt", "count": 3, "gateway": "gw1",
         "ids": "sch1-rm{n:02d}-co2", "environment": "classroom", "stagger": "2m",
         "params": {"ventilation": "poor"}},
        {"name": "taps", "profile": "legionella-outlet", "link": "lorawan", "count": 4, "gateway": "gw2",
         "ids": "civ1-tap{n}", "first": 0, "environment": "pipe", "distances_m": [30, 400],
         "params": {"kind": "cold"}, "sets": ["interval_s=600"]},
    ],
    "faults": [{"kind": "broker_outage", "at": "12:00", "duration": "45m", "target": "gw1"}],
}


def parse(d, where="test.toml"):
    return sc.loads(toml_document(d), where=where)


def mutated(fn):
    d = copy.deepcopy(BASE)
    fn(d)
    return d


def fault(**kw):
    return lambda d: d.__setitem__("faults", [kw])


# -- the shipped scenarios ----------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_loads_and_is_json_able(path):
    s = sc.load(path)
    assert s.name == path.stem and s.path == str(path)
    assert json.loads(json.dumps(s.to_dict()))["end_wall_s"] == s.end_wall_s
    assert path.read_text().startswith("#")   # the plain-words header
    assert {n.gateway for n in s.nodes()} <= {g.id for g in s.gateways}


def test_shipped_scenario_set():
    assert {p.stem for p in SCENARIOS.glob("*.toml")} >= {"school", "legionella", "high-street", "smart-place"}


def test_school():
    s = sc.load(SCENARIOS / "school.toml")
    nodes = s.nodes()
    assert len(nodes) == 30 and {n.profile for n in nodes} == {"classroom-co2"}
    assert sum(n.link == "serial" for n in nodes) == 4 and sum(n.link == "mqtt" for n in nodes) == 26
    assert [(g.id, g.site, g.lorawan) for g in s.gateways] == [("gw1", "sch1", False)]
    assert s.start_wall_s == 1772434800 and weekday(s.start_wall_s) == 0   # Monday 2026-03-02 07:00Z
    assert s.duration_s == 10 * 3600 and all(n.boot_offset_s < 120 for n in nodes)
    [f] = s.faults
    assert (f.kind, f.start_s, f.end_s, f.targets) == ("broker_outage", 5 * 3600, 5 * 3600 + 2700, ["gw1"])
    assert len({n.id for n in nodes}) == 30


def test_school_has_a_few_rooms_that_really_breach_the_co2_alarm():
    s = sc.load(SCENARIOS / "school.toml")
    by_vent = {}
    for n in s.nodes():
        by_vent.setdefault(n.params["ventilation"], []).append(n)
    assert len(by_vent["poor"]) == 3 and len(by_vent["good"]) == 24
    for n in by_vent["poor"] + by_vent["good"][:2]:
        model = sc.make_environment(n)
        assert isinstance(model, ClassroomCO2)
        breached = model.co2_exceedances(s.start_wall_s, s.end_wall_s, sample_s=300.0)
        assert bool(breached) == (n.params["ventilation"] == "poor"), n.id


def test_legionella():
    s = sc.load(SCENARIOS / "legionella.toml")
    nodes = s.nodes()
    assert len(nodes) == 40 and {(n.profile, n.link, n.environment) for n in nodes} == {
        ("legionella-outlet", "lorawan", "pipe")}
    kinds = [n.params["kind"] for n in nodes]
    assert kinds.count("hot") >= 10 and kinds.count("cold") >= 10
    assert s.duration_s == 86400 and [g.lorawan for g in s.gateways] == [True]
    for n in nodes:
        assert 20 <= n.distances_m["civ1-gw"] <= 110  # within SF7 range of the radio model
    assert all(f.kind == "lora_interference" for f in s.faults)


def test_high_street():
    s = sc.load(SCENARIOS / "high-street.toml")
    nodes = s.nodes()
    profiles = [n.profile for n in nodes]
    assert profiles.count("street-no2") == 6 and profiles.count("bin-level") == 40
    assert {n.environment for n in nodes if n.profile == "street-no2"} == {"street"}
    assert {n.environment for n in nodes if n.profile == "bin-level"} == {"bin"}
    assert len({n.params["site"] for n in nodes if n.environment == "street"}) == 3
    assert 1 <= len(s.gateways) <= 2 and all(g.lorawan for g in s.gateways)
    assert {f.kind for f in s.faults} == {"lora_interference"} and s.duration_s == 86400
    assert all(set(n.distances_m) == {g.id for g in s.gateways} for n in nodes)


def test_smart_place_has_everything_and_every_fault_kind():
    s = sc.load(SCENARIOS / "smart-place.toml")
    nodes = s.nodes()
    assert 90 <= len(nodes) <= 110 and len(s.gateways) == 3
    assert {n.profile for n in nodes} == {"classroom-co2", "legionella-outlet", "street-no2", "bin-level"}
    assert {n.link for n in nodes} == {"serial", "mqtt", "lorawan"}
    assert {f.kind for f in s.faults} == ALL_KINDS
    assert any(f.kind == "node_power_cut" and f.params["during"] == "flash_write" for f in s.faults)
    assert {f.target_kind for f in s.faults if f.kind == "clock_jump"} == {"gateway", "node"}
    assert {f.params["mode"] for f in s.faults if f.kind == "failing_sensor"} == set(sc.FAILING_MODES)
    lora = {g.id for g in s.gateways if g.lorawan}
    assert all(set(f.targets) <= lora for f in s.faults if f.kind == "lora_interference")


# -- bad inputs ---------------------------------------------------------------------------------
BAD = [
    ("unknown top-level key", lambda d: d.__setitem__("extras", 1), "(top level)", "extras"),
    ("no [scenario]", lambda d: d.pop("scenario"), "(top level)", "scenario"),
    ("unknown key in scenario", lambda d: d["scenario"].__setitem__("colour", "red"), "scenario", "colour"),
    ("unknown key in a group", lambda d: d["groups"][1].__setitem__("colour", "red"), "groups[1]", "colour"),
    ("unknown key in a gateway", lambda d: d["gateways"][0].__setitem__("ip", "x"), "gateways[0]", "ip"),
    ("bad name", lambda d: d["scenario"].__setitem__("name", "My School"), "scenario", "name"),
    ("negative seed", lambda d: d["scenario"].__setitem__("seed", -1), "scenario", "seed"),
    ("bad duration", lambda d: d["scenario"].__setitem__("duration", "10 hours"), "scenario", "duration"),
    ("zero duration", lambda d: d["scenario"].__setitem__("duration", 0), "scenario", "duration"),
    ("fractional duration", lambda d: d["scenario"].__setitem__("duration", "1.5h"), "scenario", "duration"),
    ("start not UTC", lambda d: d["scenario"].__setitem__("start", "2026-03-02T07:00:00+01:00"), "scenario", "start"),
    ("start not a date", lambda d: d["scenario"].__setitem__("start", "2026-02-30T07:00:00Z"), "scenario", "start"),
    ("start local time", lambda d: d["scenario"].__setitem__("start", datetime.datetime(2026, 3, 2, 7)),
     "scenario", "start"),
    ("sample_every 0", lambda d: d["scenario"].__setitem__("sample_every", "0s"), "scenario", "sample_every"),
    ("no gateways", lambda d: d.__setitem__("gateways", []), "(top level)", "gateways"),
    ("duplicate gateway", lambda d: d["gateways"][1].__setitem__("id", "gw1"), "gateways[1]", "id"),
    ("bad gateway id", lambda d: d["gateways"][0].__setitem__("id", "-gw"), "gateways[0]", "id"),
    ("lorawan not a bool", lambda d: d["gateways"][0].__setitem__("lorawan", "yes"), "gateways[0]", "lorawan"),
    ("missing profile", lambda d: d["groups"][0].pop("profile"), "groups[0]", "profile"),
    ("unknown profile", lambda d: d["groups"][0].__setitem__("profile", "classroom-co3"), "groups[0]", "profile"),
    ("link not in the profile", lambda d: d["groups"][0].__setitem__("link", "lorawan"), "groups[0]", "link"),
    ("unknown link", lambda d: d["groups"][0].__setitem__("link", "wifi"), "groups[0]", "link"),
    ("count 0", lambda d: d["groups"][0].__setitem__("count", 0), "groups[0]", "count"),
    ("count not an int", lambda d: d["groups"][0].__setitem__("count", 2.0), "groups[0]", "count"),
    ("undefined gateway", lambda d: d["groups"][0].__setitem__("gateway", "gw9"), "groups[0]", "gateway"),
    ("mqtt group without gateway", lambda d: d["groups"][0].pop("gateway"), "groups[0]", "gateway"),
    ("lorawan group, no lorawan gateway", lambda d: d["gateways"][1].__setitem__("lorawan", False),
     "groups[1]", "link"),
    ("lorawan group on a wired gateway", lambda d: d["groups"][1].__setitem__("gateway", "gw1"), "groups[1]",
     "gateway"),
    ("lorawan group without distances", lambda d: d["groups"][1].pop("distances_m"), "groups[1]", "distances_m"),
    ("distances on an mqtt group", lambda d: d["groups"][0].__setitem__("distances_m", [1, 2]), "groups[0]",
     "distances_m"),
    ("distance lo 0", lambda d: d["groups"][1].__setitem__("distances_m", [0, 100]), "groups[1]", "distances_m"),
    ("distance lo > hi", lambda d: d["groups"][1].__setitem__("distances_m", [500, 100]), "groups[1]", "distances_m"),
    ("distance not a pair", lambda d: d["groups"][1].__setitem__("distances_m", [100]), "groups[1]", "distances_m"),
    ("duplicate group name", lambda d: d["groups"][1].__setitem__("name", "rooms"), "groups[1]", "name"),
    ("group named like a gateway", lambda d: d["groups"][1].__setitem__("name", "gw2"), "groups[1]", "name"),
    ("duplicate device id across groups", lambda d: d["groups"].append(dict(d["groups"][0], name="more", first=3)),
     "groups[2]", "ids"),
    ("device id equal to a gateway id", lambda d: d["groups"][0].update(ids="gw1", count=1), "groups[0]", "ids"),
    ("pattern without {n}", lambda d: d["groups"][0].__setitem__("ids", "sch1-rm-co2"), "groups[0]", "ids"),
    ("pattern with another field", lambda d: d["groups"][0].__setitem__("ids", "sch1-{m}"), "groups[0]", "ids"),
    ("pattern with a positional field", lambda d: d["groups"][0].__setitem__("ids", "sch1-{}"), "groups[0]", "ids"),
    ("pattern with an attribute", lambda d: d["groups"][0].__setitem__("ids", "x{n.real}"), "groups[0]", "ids"),
    ("pattern with a huge width", lambda d: d["groups"][0].__setitem__("ids", "x{n:>999999}"), "groups[0]", "ids"),
    ("pattern with a precision", lambda d: d["groups"][0].__setitem__("ids", "x{n:.0}"), "groups[0]", "ids"),
    ("pattern makes a bad id", lambda d: d["groups"][0].__setitem__("ids", "Room{n}"), "groups[0]", "ids"),
    ("pattern unbalanced", lambda d: d["groups"][0].__setitem__("ids", "room{n"), "groups[0]", "ids"),
    ("unknown environment", lambda d: d["groups"][0].__setitem__("environment", "office"), "groups[0]", "environment"),
    ("environment without the profile's quantities", lambda d: d["groups"][0].update(environment="pipe", params={}),
     "groups[0]", "environment"),
    ("bad env preset", lambda d: d["groups"][0].__setitem__("params", {"ventilation": "stuffy"}), "groups[0]",
     "params"),
    ("bad env type", lambda d: d["groups"][0].__setitem__("params", {"pupils": "many"}), "groups[0]", "params"),
    ("unknown env argument", lambda d: d["groups"][1].__setitem__("params", {"colour": 1}), "groups[1]", "params"),
    ("seed in params", lambda d: d["groups"][0].__setitem__("params", {"seed": 3}), "groups[0]", "params"),
    ("params not a table", lambda d: d["groups"][0].__setitem__("params", [1]), "groups[0]", "params"),
    ("stagger too long", lambda d: d["groups"][0].__setitem__("stagger", "10h"), "groups[0]", "stagger"),
    ("sets not PATH=VALUE", lambda d: d["groups"][0].__setitem__("sets", ["interval_s"]), "groups[0]", "sets"),
    ("sets not strings", lambda d: d["groups"][0].__setitem__("sets", [300]), "groups[0]", "sets"),
    ("faults not tables", lambda d: d.__setitem__("faults", ["gw1"]), "(top level)", "faults"),
    ("unknown fault kind", fault(kind="flood", at="12:00", duration="1h", target="gw1"), "faults[0]", "kind"),
    ("unknown fault key", fault(kind="broker_outage", at="12:00", duration="1h", target="gw1", severity=2),
     "faults[0]", "severity"),
    ("key of another kind", fault(kind="broker_outage", at="12:00", duration="1h", target="gw1", mode="nack"),
     "faults[0]", "mode"),
    ("window before the start", fault(kind="broker_outage", at="06:00", duration="1h", target="gw1"),
     "faults[0]", "at"),
    ("window after the end", fault(kind="broker_outage", at="17:00", duration="1h", target="gw1"),
     "faults[0]", "at"),
    ("window ends after the run", fault(kind="broker_outage", at="16:30", duration="1h", target="gw1"),
     "faults[0]", "duration"),
    ("bad at", fault(kind="broker_outage", at="noon", duration="1h", target="gw1"), "faults[0]", "at"),
    ("bad at hour", fault(kind="broker_outage", at="25:00", duration="1h", target="gw1"), "faults[0]", "at"),
    ("windowed without duration", fault(kind="stuck_i2c", at="12:00", target="rooms"), "faults[0]", "duration"),
    ("bad fault duration", fault(kind="stuck_i2c", at="12:00", duration="-5m", target="rooms"),
     "faults[0]", "duration"),
    ("unknown target", fault(kind="stuck_i2c", at="12:00", duration="5m", target="sch1-rm09-co2"),
     "faults[0]", "target"),
    ("gateway fault on a node", fault(kind="gateway_power_cut", at="12:00", duration="5m", target="sch1-rm01-co2"),
     "faults[0]", "target"),
    ("node fault on a gateway", fault(kind="node_power_cut", at="12:00", duration="5m", target="gw1"),
     "faults[0]", "target"),
    ("mixed targets", fault(kind="clock_jump", at="12:00", jump="+1h", target=["gw1", "rooms"]), "faults[0]", "target"),
    ("empty target list", fault(kind="stuck_i2c", at="12:00", duration="5m", target=[]), "faults[0]", "target"),
    ("instant fault with a duration", fault(kind="clock_jump", at="12:00", duration="5m", jump="+1h", target="gw1"),
     "faults[0]", "duration"),
    ("clock jump without jump", fault(kind="clock_jump", at="12:00", target="gw1"), "faults[0]", "jump"),
    ("unsigned jump", fault(kind="clock_jump", at="12:00", jump="2h", target="gw1"), "faults[0]", "jump"),
    ("zero jump", fault(kind="clock_jump", at="12:00", jump="+0s", target="gw1"), "faults[0]", "jump"),
    ("bad power-cut moment", fault(kind="node_power_cut", at="12:00", duration="5m", target="rooms",
                                   during="sometimes"), "faults[0]", "during"),
    ("bad sensor mode", fault(kind="failing_sensor", at="12:00", duration="5m", target="rooms", mode="melt"),
     "faults[0]", "mode"),
    ("drift without magnitude", fault(kind="failing_sensor", at="12:00", duration="5m", target="rooms",
                                      mode="drift"), "faults[0]", "magnitude"),
    ("nack with a magnitude", fault(kind="failing_sensor", at="12:00", duration="5m", target="rooms",
                                    mode="nack", magnitude=3.0), "faults[0]", "magnitude"),
    ("quantity not measured", fault(kind="failing_sensor", at="12:00", duration="5m", target="rooms",
                                    mode="stuck_value", quantity="no2_ppb"), "faults[0]", "quantity"),
    ("interference on a wired gateway", fault(kind="lora_interference", at="12:00", duration="5m", target="gw1"),
     "faults[0]", "target"),
    ("interference off the channels", fault(kind="lora_interference", at="12:00", duration="5m", target="gw2",
                                            channel_mhz=869.525), "faults[0]", "channel_mhz"),
]


@pytest.mark.parametrize("why, change, table, key", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_scenario_error_naming_file_table_and_key(why, change, table, key):
    with pytest.raises(ScenarioError) as e:
        parse(mutated(change))
    assert (e.value.where, e.value.table, e.value.key) == ("test.toml", table, key)
    message = str(e.value)
    assert message.startswith("test.toml: ") and table in message and key in message
    assert isinstance(e.value, ValueError)


def test_the_base_of_the_bad_inputs_is_good():
    s = parse(BASE)
    assert [n.id for n in s.nodes()] == ["sch1-rm01-co2", "sch1-rm02-co2", "sch1-rm03-co2",
                                         "civ1-tap0", "civ1-tap1", "civ1-tap2", "civ1-tap3"]
    assert s.sample_s == 300 and s.nodes()[3].sets == ["interval_s=600"]


@pytest.mark.parametrize("text, fragment", [
    ("[scenario\nname = 1", "not valid TOML"),
    ("a = 1\na = 2", "not valid TOML"),
    ("", "(top level).scenario: missing"),
])
def test_bad_toml_names_the_file(text, fragment):
    with pytest.raises(ScenarioError, match="^x.toml: .*" + fragment.replace("(", r"\(").replace(")", r"\)")):
        sc.loads(text, where="x.toml")


def test_load_names_an_unreadable_or_binary_file(tmp_path):
    with pytest.raises(ScenarioError, match="missing.toml: cannot read"):
        sc.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe[scenario]")
    with pytest.raises(ScenarioError, match="bad.toml: not UTF-8"):
        sc.load(bad)


def test_fault_targets_resolve_group_names_and_lists():
    s = parse(mutated(lambda d: d.__setitem__("faults", [
        {"kind": "stuck_i2c", "at": "+1h", "duration": 600, "target": "rooms"},
        {"kind": "clock_jump", "at": "08:30", "jump": "-2h", "target": ["civ1-tap2", "rooms", "civ1-tap2"]},
        {"kind": "lora_interference", "at": "09:00", "duration": "1h30m", "target": "gw2", "channel_mhz": 868.3},
        {"kind": "failing_sensor", "at": "09:00", "duration": "1h", "target": "taps", "mode": "drift",
         "magnitude": -0.5, "quantity": "temperature_c"},
    ])))
    f0, f1, f2, f3 = s.faults
    assert (f0.start_s, f0.end_s, f0.target_kind) == (3600, 4200, "node")
    assert f0.targets == ["sch1-rm01-co2", "sch1-rm02-co2", "sch1-rm03-co2"] and f0.target == "rooms"
    assert (f1.start_s, f1.end_s, f1.params) == (5400, None, {"jump_s": -7200})
    assert f1.targets == ["civ1-tap2", "sch1-rm01-co2", "sch1-rm02-co2", "sch1-rm03-co2"]
    assert (f2.end_s - f2.start_s, f2.params) == (5400, {"channel_hz": 868300000, "channel_mhz": 868.3})
    assert f3.params == {"mode": "drift", "magnitude": -0.5, "quantity": "temperature_c"}


def test_defaults():
    s = parse(mutated(lambda d: (d["scenario"].pop("title"), d["scenario"].pop("seed"), d["groups"][1].pop("gateway"),
                                 d.__setitem__("faults", [{"kind": "node_power_cut", "at": "12:00", "duration": "1m",
                                                           "target": "civ1-tap1"}]))))
    assert (s.title, s.seed, s.sample_s) == ("t", 0, 300)
    assert s.groups[1].gateway == "gw2"       # a lorawan group: the first lorawan gateway
    assert s.faults[0].params == {"during": "any"}
    assert s.groups[1].stagger_s == 0 and all(n.boot_offset_s == 0 for n in s.nodes()[3:])


# -- field parsers --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, seconds", [("90s", 90), ("45m", 2700), ("10h", 36000), ("2d", 172800),
                                           ("1h30m", 5400), ("1d2h3m4s", 93784), (7, 7), (0, 0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1.5h", "1m1h", "1 h", "-2h", "+2h", "2H", True, 1.0, -1, None, "١h"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_signed_duration_and_times():
    assert parse_duration("-2h", signed=True) == -7200 and parse_duration("+1d", signed=True) == 86400
    assert parse_duration(-60, signed=True) == -60
    with pytest.raises(ValueError):
        parse_duration("2h", signed=True)
    t0 = parse_start("2026-03-02T07:00:00Z")
    assert t0 == 1772434800 == parse_start("2026-03-02T07:00:00+00:00")
    assert parse_start(datetime.datetime(2026, 3, 2, 7, tzinfo=datetime.timezone.utc)) == t0
    for bad in ("2026-03-02T07:00:00.5Z", "2026-03-02", "2026-03-02T07:00:00-00:00", "1969-12-31T23:59:59Z"):
        with pytest.raises(ValueError):
            parse_start(bad)
    assert parse_at("12:00", t0) == 5 * 3600 and parse_at("+4h30m", t0) == 16200 and parse_at("06:00", t0) == -3600


# -- determinism -----------------------------------------------------------------------------------
def test_loading_twice_gives_identical_nodes():
    a = sc.load(SCENARIOS / "smart-place.toml").nodes()
    b = sc.loads((SCENARIOS / "smart-place.toml").read_text(), where="elsewhere").nodes()
    assert a == b
    assert [(n.env_seed, n.boot_offset_s, n.distances_m) for n in a] == [(n.env_seed, n.boot_offset_s, n.distances_m)
                                                                         for n in b]


def test_seeds_derive_from_the_scenario_seed_and_the_device_id():
    s = parse(BASE)
    for n in s.nodes():
        key = int.from_bytes(hashlib.blake2b(n.id.encode(), digest_size=8).digest(), "little")
        assert n.env_seed == mix_seed(7, "env", key)
        assert 0 <= n.boot_offset_s < (120 if n.group == "rooms" else 1)
        assert (set(n.distances_m) == {"gw2"} and 30 <= n.distances_m["gw2"] <= 400) if n.link == "lorawan" \
            else n.distances_m == {}
        assert n.environment == "pipe" or n.params["weather_seed"] == mix_seed(7, "weather", 0)
    other = parse(mutated(lambda d: d["scenario"].__setitem__("seed", 8))).nodes()
    assert all(a.env_seed != b.env_seed and a.id == b.id for a, b in zip(s.nodes(), other))
    alone = parse(mutated(lambda d: d["groups"].pop(0))).nodes()     # a node does not depend on the others
    assert alone == s.nodes()[3:]


def test_make_environment_builds_the_model_and_refuses_unknown_names():
    node = parse(BASE).nodes()[0]
    values = sc.make_environment(node).at(1772434800 + 3 * 3600)
    assert values["co2_ppm"] > 400.0
    with pytest.raises(ValueError, match="environment"):
        sc.make_environment(node.__class__(**dict(node.__dict__, environment="office")))
