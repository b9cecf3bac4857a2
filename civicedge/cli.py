"""``civicedge``: one console script, one subcommand per job.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed arguments, returning an exit status).
"""

import argparse
import importlib
import sys

from civicedge import __version__

# Subcommand modules, in the order ``civicedge --help`` lists them.
COMMANDS = ("civicedge.cmd_sim", "civicedge.cmd_firmware", "civicedge.cmd_gateway", "civicedge.cmd_flash", "civicedge.cmd_provision",
            "civicedge.cmd_bench")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="civicedge",
        description="Open edge stack for council smart-places sensor networks.",
    )
    parser.add_argument("--version", action="version", version="civicedge " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
