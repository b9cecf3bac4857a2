"""``simulators.fleet.inject.settles``: the runner lets the gateways settle (``drain.settle``)
around the actions of the gateways' and the council link's faults only; a node's own fault
(its power cut, its clock jump) and the modelled faults hold or release no backlog upstream,
so the fleet is not held for them (docs/simulation-fleet.md, "Latency")."""

from simulators.fleet import inject, scenario
from simulators.mpyrun import REPO


def _actions():
    sc = scenario.load(REPO / "simulators" / "scenarios" / "smart-place.toml")
    return sc, inject.actions(sc.faults)


def test_only_the_gateways_and_the_council_links_faults_settle():
    _, acts = _actions()
    settled = sorted(what for _, _, what, act in acts if inject.settles(act))
    held_not = sorted(what for _, _, what, act in acts if not inject.settles(act))
    assert settled == sorted([
        "clock jump -7200 s: hst1-gw",
        "power cut: civ1-gw", "power back: civ1-gw",
        "council broker unreachable from sch1-gw", "council broker back for sch1-gw",
        "disk full: sch1-gw", "disk space back: sch1-gw",
    ])
    # every node fault and every modelled fault of the day, each start and end
    assert "clock jump +1800 s: sch1-rm07-co2" in held_not
    assert "power cut at its next flash write: sch1-rm03-co2" in held_not
    assert "power back: sch1-rm03-co2" in held_not
    assert "power cut: hst1-bin-010" in held_not and "power back: hst1-bin-010" in held_not
    assert any(w.startswith("radio interference") for w in held_not)
    assert len(settled) + len(held_not) == len(acts)


class _Clocks:
    """A stand-in run whose ``jump_clock`` moves named clocks (s)."""

    def __init__(self):
        self.gateway, self.node = {}, {}

    def jump_clock(self, who, jump_s, on_gateway):
        side = self.gateway if on_gateway else self.node
        side[who] = side.get(who, 0.0) + jump_s


def test_a_clock_jump_still_moves_the_clock_it_names():
    _, acts = _actions()
    run = _Clocks()
    for _, _, what, act in acts:
        if what.startswith("clock jump"):
            act(run)
    assert run.gateway == {"hst1-gw": -7200.0}
    assert run.node == {"sch1-rm07-co2": 1800.0}
