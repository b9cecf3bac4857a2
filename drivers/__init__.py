"""Sensor and modem drivers shared by the ESP32 firmware (MicroPython) and the Pi gateway (CPython).

Each part has one module: pure command tables and conversions, plus a thin class that takes a
bus object (see ``drivers.bus``) and a clock object (see ``drivers.clock``). Nothing here
imports ``machine``, ``time`` or ``smbus2``: the composition root passes those in.
"""

import sys

# Whether ``release`` forgets modules: on the node (MicroPython) only. A CPython process (the
# gateway, the tests) keeps them: there heap is no concern, and a module loaded again defines
# its classes again, so an exception class another module holds (``protocol.mqtt_packets``
# re-exports ``protocol.mqtt_wire``'s) would no longer match what is raised. A test of the
# releasing itself sets it.
RELEASE = sys.implementation.name == "micropython"


def release(name):
    """Forget the module ``name`` (dotted; one loaded on demand) so its code can be collected
    once nothing refers to it: out of ``sys.modules`` and off its package. The node loads
    some driver code only for the call that needs it (the modem's join, a sensor part's read)
    and releases it after (docs/benchmarks.md, heap). Nothing is forgotten unless ``RELEASE``."""
    if not RELEASE:
        return
    sys.modules.pop(name, None)
    i = name.rfind(".")
    package = sys.modules.get(name[:i]) if i > 0 else None
    if package is not None:
        try:
            delattr(package, name[i + 1:])
        except (AttributeError, KeyError):  # not loaded: MicroPython raises KeyError
            pass
