"""``civicedge sim run SCENARIO``: a simulated site end to end (``simulators.fleet``).

SCENARIO is a scenario file, or the name of one shipped in ``simulators/scenarios/``
(``school``, ``legionella``, ``high-street``, ``smart-place``). Progress goes to stderr; the
summary table and the reports' paths to stdout. Exit status: 0 every record accounted for
and every alarm the truth called for raised; 1 records lost or alarms missed (the reports
say which); 2 a bad scenario file or option; 3 the run could not be set up (no broker:
neither Mosquitto nor amqtt would start; a build that failed).
"""

import pathlib
import sys

from simulators.mpyrun import REPO

SCENARIOS = REPO / "simulators" / "scenarios"


def register(simsub):
    run = simsub.add_parser("run", help="a simulated site end to end: real firmware, real gateway, "
                                        "simulated sensors, radios and faults (simulators/scenarios/)")
    run.add_argument("scenario", help="a scenario file, or a shipped scenario's name (%s)" % ", ".join(
        sorted(p.stem for p in SCENARIOS.glob("*.toml"))))
    run.add_argument("--out", help="directory for the reports and the run's files (default sim-out/<name>)")
    run.add_argument("--nodes-per-group", type=int, metavar="N",
                     help="run only the first N nodes of each group (a reduced run; faults follow)")
    run.add_argument("--hours", type=float, help="run only the first H simulated hours")
    run.set_defaults(func=_run)


def scenario_path(name):
    """A path as given, else ``simulators/scenarios/<name>.toml``."""
    p = pathlib.Path(name)
    if p.exists() or p.suffix == ".toml":
        return p
    return SCENARIOS / ("%s.toml" % name)


def _say(line):
    print(line, file=sys.stderr, flush=True)


def _run(args):
    from simulators.fleet import accounting, report, scenario
    from simulators.fleet.runner import FleetRun

    try:
        sc = scenario.load(scenario_path(args.scenario))
        if args.nodes_per_group is not None or args.hours is not None:
            if (args.nodes_per_group is not None and args.nodes_per_group < 1) or \
                    (args.hours is not None and args.hours <= 0):
                raise scenario.ScenarioError("--nodes-per-group must be >= 1 and --hours > 0")
            sc = sc.reduced(nodes_per_group=args.nodes_per_group,
                            duration_s=None if args.hours is None else int(args.hours * 3600))
    except (scenario.ScenarioError, OSError) as e:
        print("civicedge sim run: %s" % e, file=sys.stderr)
        return 2
    out = pathlib.Path(args.out or pathlib.Path("sim-out") / sc.name)
    _say("scenario %s: %s (seed %d), %d nodes, %d gateways, %d faults; files in %s" % (
        sc.name, sc.title, sc.seed, len(sc.nodes()), len(sc.gateways), len(sc.faults), out))
    try:
        run = FleetRun(sc, out / "run", say=_say).prepare().run()
    except RuntimeError as e:
        print("civicedge sim run: %s" % e, file=sys.stderr)
        return 3
    acct = accounting.account(run)
    paths = report.write_reports(run, acct, out)
    print(report.summary_table(acct))
    print("\nreports: %s (open in a browser), %s, %s" % (paths["html"], paths["json"], paths["junit"]))
    return 0 if _verdict_ok(acct) else 1


def _verdict_ok(acct):
    """Nothing lost, and every alarm the truth called for raised."""
    return acct["verdict"]["ok"] and not acct["alarms"]["misses"]
