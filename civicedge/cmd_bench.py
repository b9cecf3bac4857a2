"""``civicedge bench``: run the benchmarks and write their figures to docs/benchmarks.md."""

import importlib

from simulators import bench

# Benchmarks that write sections of their own (``<!-- bench:gateway-* -->``), imported when run.
GROUPS = {"gateway": "simulators.bench_gateway"}


def _run(names, write):
    rest = [n for n in names if n not in GROUPS]
    rc = bench.main(rest, write=write) if rest or not names else 0
    for name in [n for n in names if n in GROUPS] if names else list(GROUPS):
        rc = rc or importlib.import_module(GROUPS[name]).main(write=write)
    return rc


def register(sub):
    p = sub.add_parser("bench", help="run benchmarks; write their figures to docs/benchmarks.md")
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all): %s"
                   % ", ".join(list(bench.BENCHMARKS) + list(GROUPS)))
    p.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    p.set_defaults(func=lambda args: _run(args.names, write=not args.no_write))
