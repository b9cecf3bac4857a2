"""``civicedge sim``: run simulations.

``civicedge sim run SCENARIO`` runs a simulated site end to end (``civicedge/cmd_simrun.py``);
``civicedge sim day`` runs a simulated day per deployment profile through the real drivers
on the simulated bus and prints truth against readings (``simulators.daysim``).
"""

import sys
import time

from simulators import daysim


def register(sub):
    sim = sub.add_parser("sim", help="run simulations (simulated sensors, buses and environments)")
    simsub = sim.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")
    day = simsub.add_parser("day", help="a simulated day per profile: the real drivers against the environment models")
    day.add_argument("--profile", action="append", choices=daysim.PROFILES,
                     help="profile to run (repeatable; default: all four)")
    day.add_argument("--seed", type=int, default=1, help="seed for the environments and sensors (default 1)")
    day.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    day.set_defaults(func=_day)
    from civicedge import cmd_simrun

    cmd_simrun.register(simsub)
    sim.set_defaults(func=lambda args: (sim.print_help(), 2)[1])


def _progress_bar(profile):
    def show(fraction):
        if sys.stderr.isatty():
            filled = int(fraction * 30)
            sys.stderr.write("\r  %-18s [%s%s] %3d%%" % (profile, "#" * filled, "." * (30 - filled), fraction * 100))
            if fraction >= 1.0:
                sys.stderr.write("\n")
            sys.stderr.flush()
    return show


def _day(args):
    if args.hours <= 0:
        print("civicedge sim day: --hours must be > 0", file=sys.stderr)
        return 2
    profiles = args.profile or list(daysim.PROFILES)
    summaries = []
    started = time.monotonic()
    for profile in profiles:
        print("simulating %s for %g h (seed %d)..." % (profile, args.hours, args.seed), file=sys.stderr)
        samples = daysim.run_day(profile, seed=args.seed, duration_s=args.hours * 3600,
                                 progress=_progress_bar(profile))
        summaries.extend(daysim.summarise(profile, samples))
    print(daysim.format_table(summaries))
    bad = [s for s in summaries if s.within != s.count]
    print("\n%d readings in %.1f s of wall time; %s" % (
        sum(s.count for s in summaries), time.monotonic() - started,
        "every reading within its datasheet accuracy of the truth" if not bad
        else "%d quantities have readings outside their accuracy band" % len(bad)))
    return 1 if bad else 0
