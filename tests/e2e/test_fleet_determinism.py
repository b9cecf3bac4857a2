"""Same seed, same readings (issue 5): a small site — a classroom monitor on serial, two on
WiFi/MQTT, two pipe sensors on LoRaWAN and a pair of them that wake together (their uplinks
collide on the radio), a failing sensor and a stuck bus, the council's broker away for a
while, a power cut and a clock jump done by the runner's director — run twice through
``FleetRun`` with the same seed delivers the same readings, and a run with another seed does
not. Also the same: every frame on the radio with its fate (collisions are decided in
virtual time, inject.RadioOrder) and the virtual time of every director action (a barrier:
timeline.py).

"The same readings" is the set of delivered record keys ``(device, boot epoch, seq)`` and,
for each key, its kind, its time ``t`` and its values with their quality flags. What is NOT
compared: when a record arrived (``arrived_wall_s``: the gateway forwards in real time, and
the platform stamps arrivals on the fleet's clock as it then stands), but for the readings
held through the broker outage, which arrive as it ends, the fleet's time held while the
gateway drains (``simulators/fleet/drain.py``): their latency is the same in both runs and
bounded by the outage's length (``outage_latency``); and how many copies arrived (a node or
a gateway that resends after a lost acknowledgement makes a duplicate, which the platform
deduplicates by key)."""

import json
import os

from simulators.fleet import scenario as scenario_mod
from simulators.fleet.runner import WINDOW_S, FleetRun
from tests.gatewaykit import needs_mosquitto

GATEWAYS = [{"id": "gw1", "site": "sch1", "lorawan": True}]
GROUPS = [
    {"name": "wired", "profile": "classroom-co2", "link": "serial", "count": 1, "gateway": "gw1",
     "ids": "sch1-rm{n:02d}-co2", "environment": "classroom", "stagger": "2m"},
    {"name": "wifi", "profile": "classroom-co2", "link": "mqtt", "count": 2, "first": 2, "gateway": "gw1",
     "ids": "sch1-rm{n:02d}-co2", "environment": "classroom", "stagger": "2m"},
    # a batch every 4th wake (the profile's 13th), so that the taps send within the run
    {"name": "taps", "profile": "legionella-outlet", "link": "lorawan", "count": 2, "gateway": "gw1",
     "ids": "sch1-hot{n:02d}", "environment": "pipe", "stagger": "2m", "distances_m": [20, 60],
     "sets": ["interval_s=120", "link.lorawan.max_delay_s=480"], "params": {"kind": "hot"}},
    # two taps booting together, waking every minute and sending at once: their frames start
    # together and collide whenever their modems pick the same channel
    {"name": "pair", "profile": "legionella-outlet", "link": "lorawan", "count": 2, "gateway": "gw1",
     "ids": "sch1-cold{n:02d}", "environment": "pipe", "distances_m": [20, 30],
     "sets": ["interval_s=60", "power.sleep=light", "link.lorawan.max_delay_s=0"], "params": {"kind": "cold"}},
]
FAULTS = [
    {"kind": "failing_sensor", "at": "09:10", "duration": "10m", "target": "sch1-rm02-co2", "mode": "spike",
     "magnitude": 500.0, "quantity": "co2_ppm"},
    {"kind": "stuck_i2c", "at": "09:14", "duration": "5m", "target": "sch1-hot01"},
    {"kind": "broker_outage", "at": "09:20", "duration": "6m", "target": "gw1"},
    {"kind": "clock_jump", "at": "09:08", "target": "sch1-hot02", "jump": "+10m"},
    {"kind": "node_power_cut", "at": "09:12", "duration": "3m", "target": "sch1-rm01-co2"},
]
DEVICES = {"sch1-rm01-co2", "sch1-rm02-co2", "sch1-rm03-co2", "sch1-hot01", "sch1-hot02", "sch1-cold01",
           "sch1-cold02"}


def scenario_toml(seed, name="determinism", duration="30m", gateways=GATEWAYS, groups=GROUPS, faults=FAULTS):
    """A scenario file's text (contract 1) from tables given as dicts; starts 09:00."""
    def table(header, d):
        out = ["[[%s]]" % header]
        for k, v in d.items():
            if k != "params":
                out.append("%s = %s" % (k, json.dumps(v)))
        if "params" in d:
            out += ["[%s.params]" % header] + ["%s = %s" % (k, json.dumps(v)) for k, v in d["params"].items()]
        return out
    lines = ["[scenario]", 'name = "%s"' % name, 'title = "Same seed, same readings"', "seed = %d" % seed,
             'start = "2026-03-02T09:00:00Z"', 'duration = "%s"' % duration, 'sample_every = "10m"']
    for header, rows in (("gateways", gateways), ("groups", groups), ("faults", faults)):
        for row in rows:
            lines += table(header, row)
    return "\n".join(lines) + "\n"


def delivered(run):
    """``{(device, epoch, seq): (kind, t, values)}`` of every record that arrived (the
    first copy; later copies must agree with it)."""
    out = {}
    for rec in run["arrived"]:
        key = (rec["device"], rec["epoch"], rec["seq"])
        got = (rec["kind"], rec["t"], {q: tuple(vf) for q, vf in sorted(rec["values"].items())})
        assert out.setdefault(key, got) == got, "two copies of %r differ" % (key,)
    return out


def outage_latency(run):
    """Latency through the council broker's outage, checked against what the model implies:
    nothing arrives upstream while it lasts (but what was on its way when it began, stamped
    by a node's clock at most the timeline's window ahead), and every classroom reading
    taken during it (sent at once to the gateway, which holds it) arrives as the outage ends
    (at most the window later): at most the outage's length plus the window after it was
    taken, however fast the host ran the fleet. A reading taken within the window after it
    began is left out: a node running ahead of the fleet's time (the lookahead) may have sent
    it before the outage began, or not, as the processes happened to run. Returns
    ``{key: latency_s}`` of those."""
    (outage,) = [f for f in run["faults"] if f["kind"] == "broker_outage"]
    start, end = outage["start_wall_s"], outage["end_wall_s"]
    arrived = {}
    for r in run["arrived"]:
        arrived.setdefault((r["device"], r["epoch"], r["seq"]), r)
    inside = [r for r in arrived.values() if start + WINDOW_S < r["arrived_wall_s"] < end]
    assert not inside, inside[:3]
    held = {k: r for k, r in arrived.items() if r["device"].endswith("-co2") and r["kind"] == "reading"
            and r["t"] is not None and start + WINDOW_S <= r["t"] < end}
    late = [r for r in held.values() if not end <= r["arrived_wall_s"] <= end + WINDOW_S]
    assert not late, late[:3]
    return {k: round(r["arrived_wall_s"] - r["t"], 3) for k, r in held.items()}


def run_once(tmp_path, seed, name):
    sc = scenario_mod.loads(scenario_toml(seed), where="determinism.toml")
    return FleetRun(sc, tmp_path / name, say=lambda line: None).prepare().run()


def frames(run):
    """Every frame on the radio: ``(device, start, end, channel, heard by, losses)``."""
    return sorted((d, s, e, f, tuple(h), tuple(sorted(loss.items()))) for d, s, e, f, h, loss in run["radio"]["frames"])


def differences(a, b, limit=10):
    keys = sorted(set(a) | set(b), key=repr)
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)][:limit]


@needs_mosquitto
def test_the_same_seed_delivers_the_same_readings_and_another_seed_does_not(tmp_path):
    policy = os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else None
    first, second = run_once(tmp_path, 7, "a"), run_once(tmp_path, 7, "b")
    a, b = delivered(first), delivered(second)
    assert {k[0] for k in a} == DEVICES
    assert len(a) > 5 * 8
    assert a == b, differences(a, b)
    # the pair collided, and the radio decided every frame the same way both times
    fa, fb = frames(first), frames(second)
    assert first["radio"]["counters"]["collisions"] >= 1
    assert any(dict(loss).get("gw1") == "collision" for *_, loss in fa)
    assert fa == fb, [(x, y) for x, y in zip(fa, fb) if x != y][:5]
    # the director acted at the same virtual instants, the power cut started a new epoch
    assert first["director"] == second["director"]
    assert {k[1] for k in a if k[0] == "sch1-rm01-co2"} == {1, 2}
    # the platform stamps an arrival no earlier than the sending node's clock: no reading
    # arrives before it was taken (its t: the node's RTC, whole seconds; but for the node whose
    # RTC the clock jump moved on)
    assert all(r["arrived_wall_s"] >= r["t"] for r in first["arrived"] + second["arrived"]
               if r["t"] and r["device"] != "sch1-hot02")
    # the outage's latency is the model's, not the host's (simulators/fleet/drain.py)
    held_a, held_b = outage_latency(first), outage_latency(second)
    assert len(held_a) >= 3 * 2  # three classroom nodes, a reading every 2 min for 5.5 min
    assert held_a == held_b, differences(held_a, held_b)
    # both ran under the batch policy (sched.batch_scheduling), and the test's thread has its own back
    assert first["timing"]["scheduling"] == second["timing"]["scheduling"] == (
        "batch" if hasattr(os, "SCHED_BATCH") else "default")
    if policy is not None:
        assert os.sched_getscheduler(0) == policy
    other = delivered(run_once(tmp_path, 8, "c"))
    assert other != a
    assert sum(1 for k in set(a) & set(other) if a[k] == other[k]) < len(a) // 2
