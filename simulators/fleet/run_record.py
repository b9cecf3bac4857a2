"""The run record of a fleet run (docs/simulation-fleet.md, "The accounting"): what arrived
upstream, what is still held on each node's flash and in each gateway's outbox, the
environments' truth, the director's actions and the run's timing, as ``accounting`` and
``report`` read it."""

import os

from simulators import flashinspect
from simulators.fleet import inject
from simulators.fleet.nodes import node_attributes


def run_record(run, held, wall_s, cpu_s, broker_cpu, scheduling):
    """The record of ``run`` (a ``FleetRun`` whose processes have stopped): ``held``, each
    node's flash as ``flashinspect.inspect_image`` read it; ``wall_s`` and ``cpu_s``, the run's
    real time and the runner's CPU time, s; ``broker_cpu``, the brokers' CPU time, s;
    ``scheduling``, the processes' policy (``sched.policy_name``: "batch" as a rule)."""
    sc = run.sc
    ids = set(run.nodes)
    nodes = [{"id": n.spec.id, "group": n.spec.group, "profile": n.spec.profile, "link": n.spec.link,
              "gateway": n.spec.gateway, "interval_s": n.config["interval_s"],
              "mean_period_s": n.config.get("mean_period_s", 0), "attributes": node_attributes(n.spec)}
             for n in run.nodes.values()]
    return {
        "scenario": {"name": sc.name, "title": sc.title, "seed": sc.seed, "start_wall_s": sc.start_wall_s,
                     "end_wall_s": sc.end_wall_s, "path": str(sc.path) if sc.path else None},
        "nodes": nodes,
        "gateways": [{"id": g.id, "site": g.site, "lorawan": g.lorawan} for g in sc.gateways],
        "faults": [{"kind": f.kind, "targets": list(f.targets), "start_wall_s": sc.start_wall_s + f.start_s,
                    "end_wall_s": None if f.end_s is None else sc.start_wall_s + f.end_s,
                    "params": dict(f.params)} for f in sc.faults],
        "arrived": list(run.platform.arrived),
        "gaps": list(run.platform.gaps),
        "alarm_events": list(run.platform.alarm_events),
        "platform_errors": list(run.platform.bad),
        "held_node": {d: {"mount": h["mount"], "state": h["state"], "keys": [list(k) for k in h["held"]],
                          "gaps": flashinspect.held_gap_records(d, h), "error": h["error"]} for d, h in held.items()},
        "held_gateway": {gid: g.held(ids) for gid, g in run.gateways.items()},
        "truth": {d: truth_series(n.env, sc) for d, n in run.nodes.items()},
        "backlog": run.backlog,
        "node_stats": {d: dict(n.stats(), power_ons=len(n.runs), cuts_at_write=n.cuts_at_write,
                               bus=n.server.rig.counters(None)) for d, n in run.nodes.items()},
        "counters": {gid: g.last_snapshot for gid, g in run.gateways.items()},
        "gateway_stats": {gid: {"starts": g.starts, "kills": g.kills} for gid, g in run.gateways.items()},
        "radio": inject.radio_record(run.radio, run.radio_links, sc.start_wall_s),
        "director": [[t, what] for t, what in run.log],
        "broker": {"kind": run.brokers.kind, "why": run.brokers.why},
        "timing": {"wall_s": round(wall_s, 2),
                   "cpu_s": {"interpreter": round(sum(n.cpu_s for n in run.nodes.values()), 2),
                             "simulator": round(cpu_s, 2),
                             "gateway": round(sum(g.cpu_s for g in run.gateways.values()), 2),
                             "broker": round(broker_cpu, 2)},
                   "node_days": round(len(run.nodes) * sc.duration_s / 86400.0, 3),
                   "timeline_waits": run.timeline.releases + run.timeline.passes,
                   "settle_wall_s": round(run.settle_wall_s, 2),
                   "scheduling": scheduling},
    }


def truth_series(env, sc):
    """The environment's numeric truth every ``sample_s`` over the run."""
    times, values = [], {}
    for t in range(sc.start_wall_s, sc.end_wall_s + 1, sc.sample_s):
        times.append(t)
        for q, v in env.at(t).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                values.setdefault(q, []).append(round(float(v), 4))
    return {"times": times, "values": {q: v for q, v in values.items() if len(v) == len(times)}}


def proc_cpu_s(proc):
    """``proc``'s CPU time (user + system), s, from ``/proc``; 0.0 once it is gone (or not Linux)."""
    try:
        with open("/proc/%d/stat" % proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, AttributeError, IndexError, ValueError):
        return 0.0
