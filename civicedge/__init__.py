"""civicedge: the command-line entry point (``civicedge``) and its subcommands.

The code itself lives in the layout of ARCHITECTURE.md (``drivers/``, ``protocol/``,
``gateway/``, ``simulators/``, ``firmware/``); this package only wires commands to it.
"""

__version__ = "0.1.0"
