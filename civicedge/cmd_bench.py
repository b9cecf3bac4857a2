"""``civicedge bench``: run the benchmarks and write their figures to docs/benchmarks.md."""

from simulators import bench


def register(sub):
    p = sub.add_parser("bench", help="run benchmarks; write their figures to docs/benchmarks.md")
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all): %s" % ", ".join(bench.BENCHMARKS))
    p.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    p.set_defaults(func=lambda args: bench.main(args.names, write=not args.no_write))
