"""``Scenario.reduced`` (issue 5, Contract 1): a smaller copy keeps the seed and the nodes it
keeps, identical; node faults follow their group; a shorter run clips the fault schedule, or
squeezes the whole of it in (``squeeze_faults_s``); chosen nodes (``nodes``)."""

import json

import pytest

from simulators.fleet import scenario as sc
from tests.unit.test_fleet_scenario import SCENARIOS, mutated, parse


def test_reduced_keeps_the_seed_the_first_nodes_clips_and_retargets():
    full = sc.load(SCENARIOS / "smart-place.toml")
    small = full.reduced(nodes_per_group=2, duration_s=44000)   # to 12:13:20
    assert (small.seed, small.start_wall_s, small.duration_s, small.name) == (full.seed, full.start_wall_s, 44000,
                                                                             full.name)
    expected = []
    for g in full.groups:
        expected += [n for n in full.nodes() if n.group == g.name][:2]
    assert small.nodes() == expected                 # identical specs: seeds, offsets, distances
    assert all(g.count == min(2, f.count) for g, f in zip(small.groups, full.groups))
    kinds = {f.kind: f for f in small.faults}
    assert all(f.start_s < 44000 and (f.end_s is None or f.end_s <= 44000) for f in small.faults)
    assert kinds["broker_outage"].end_s == 44000                   # 12:00-12:45 clipped at the end
    assert "stuck_i2c" not in kinds and "gateway_disk_full" not in kinds   # 13:30, 12:15: after it
    by_start = {f.start_s: f for f in small.faults}
    assert by_start[10 * 3600 + 600].targets == ["sch1-rm01-co2"]  # rm03 is gone: first of its group
    assert by_start[9 * 3600 + 900].targets == ["sch1-rm05-co2"]   # rm07 -> first of the main block
    assert by_start[8 * 3600].targets == ["sch1-rm05-co2"]         # rm09 too
    assert by_start[6 * 3600].targets == ["hst1-no2-03"]           # still there: unchanged
    assert by_start[6 * 3600].params == full.faults[1].params      # a clipped drift keeps its rate
    assert len(full.faults) == 13 and len(full.nodes()) == 100     # the original is untouched


def test_reduced_group_target_keeps_the_remaining_nodes_and_stagger_fits():
    s = parse(mutated(lambda d: d.__setitem__("faults", [
        {"kind": "stuck_i2c", "at": "08:00", "duration": "1h", "target": "rooms"}])))
    small = s.reduced(nodes_per_group=2, duration_s=200)
    assert small.faults == []                        # it started after the new end
    small = s.reduced(nodes_per_group=2)
    assert small.faults[0].targets == ["sch1-rm01-co2", "sch1-rm02-co2"]
    short = s.reduced(duration_s=100)
    assert short.groups[0].stagger_s == 50 and all(n.boot_offset_s < 50 for n in short.nodes())
    assert short.sample_s == 100
    for bad in ({"nodes_per_group": 0}, {"duration_s": 0}, {"duration_s": 10 ** 9}, {"nodes_per_group": True},
                {"nodes": ["sch1-rm09-co2"]}, {"nodes": ["nobody"]}, {"squeeze_faults_s": 0},
                {"squeeze_faults_s": 1.5}, {"squeeze_faults_s": True}):
        with pytest.raises(ValueError):
            s.reduced(**bad)


def test_reduced_to_chosen_nodes_keeps_their_specs_and_their_faults():
    full = sc.load(SCENARIOS / "smart-place.toml")
    chosen = ["sch1-rm07-co2", "sch1-rm12-co2", "sch1-rm20-co2", "civ1-cold03", "hst1-bin-010"]
    small = full.reduced(nodes=chosen + ["no2-quiet"])          # ids and a group name
    by_id = {n.id: n for n in full.nodes()}
    assert [n.id for n in small.nodes()] == chosen[:4] + ["hst1-no2-05", "hst1-no2-06", "hst1-bin-010"]
    assert all(n == by_id[n.id] for n in small.nodes())        # seeds, offsets, distances: the same
    main = next(g for g in small.groups if g.name == "school-main-block")
    assert (main.count, main.first, main.numbers) == (3, 7, (7, 12, 20))
    assert next(g for g in small.groups if g.name == "no2-quiet").numbers is None   # contiguous
    assert {g.name for g in small.groups} == {"school-main-block", "civic-cold-taps", "no2-quiet", "street-bins"}
    node_faults = [(f.kind, f.params.get("mode"), f.targets) for f in small.faults if f.target_kind == "node"]
    assert node_faults == [                           # rm09 and rm15 move to rm07; rm03, no2-03: gone
        ("failing_sensor", "stuck_value", ["sch1-rm07-co2"]), ("clock_jump", None, ["sch1-rm07-co2"]),
        ("stuck_i2c", None, ["sch1-rm12-co2"]), ("failing_sensor", "nack", ["sch1-rm07-co2"]),
        ("failing_sensor", "spike", ["sch1-rm20-co2"]), ("node_power_cut", None, ["hst1-bin-010"])]
    assert len([f for f in small.faults if f.target_kind == "gateway"]) == 5
    json.dumps(small.to_dict())
    assert small.reduced(nodes_per_group=1).nodes() == [by_id[d] for d in
                                                        ("sch1-rm07-co2", "civ1-cold03", "hst1-no2-05", "hst1-bin-010")]


def test_reduced_drops_a_gateway_no_node_is_left_for_and_the_faults_aimed_at_it():
    full = sc.load(SCENARIOS / "smart-place.toml")
    radio = full.reduced(nodes=["civic-cold-taps", "street-bins"])
    # the school's gateway has no node left (it would start with no source)
    assert [g.id for g in radio.gateways] == ["civ1-gw", "hst1-gw"]
    # nor has the market's radio gateway here: gone too, though it would hear the civic taps
    assert [g.id for g in full.reduced(nodes=["civ1-hot01"]).gateways] == ["civ1-gw"]
    gw_faults = [(f.kind, f.targets) for f in radio.faults if f.target_kind == "gateway"]
    assert gw_faults and all(t != ["sch1-gw"] for _, t in gw_faults)
    assert {k for k, _ in gw_faults} == {k for k, t in ((f.kind, f.targets) for f in full.faults
                                                        if f.target_kind == "gateway") if t != ["sch1-gw"]}
    school = full.reduced(nodes=["sch1-rm05-co2"])
    assert [g.id for g in school.gateways] == ["sch1-gw"]
    assert {f.targets[0] for f in school.faults if f.target_kind == "gateway"} == {"sch1-gw"}
    json.dumps(school.to_dict())


def test_reduced_squeezes_the_fault_schedule_into_a_short_run():
    full = sc.load(SCENARIOS / "smart-place.toml")
    small = full.reduced(nodes_per_group=1, duration_s=7200, squeeze_faults_s=1500)
    assert len(small.faults) == len(full.faults)      # every fault still happens, in the same order
    for f, g in zip(full.faults, small.faults):
        assert (g.kind, g.start_s) == (f.kind, f.start_s // 12)     # 24 h into 2 h
        if f.end_s is None:
            assert g.end_s is None
        else:
            assert g.end_s - g.start_s == min(f.end_s - f.start_s, 1500, 7200 - g.start_s)
    drift = next(g for g in small.faults if g.params.get("mode") == "drift")
    assert drift.params["magnitude"] == 5.0 * 6 * 3600 / 1500   # the same 30 ppb by its end
    assert full.faults[1].params["magnitude"] == 5.0
    long = full.reduced(duration_s=3600, squeeze_faults_s=10 ** 6)
    assert all(f.end_s is None or f.end_s <= 3600 for f in long.faults)   # never past the end
