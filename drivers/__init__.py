"""Sensor and modem drivers shared by the ESP32 firmware (MicroPython) and the Pi gateway (CPython).

Each part has one module: pure command tables and conversions, plus a thin class that takes a
bus object (see ``drivers.bus``) and a clock object (see ``drivers.clock``). Nothing here
imports ``machine``, ``time`` or ``smbus2``: the composition root passes those in.
"""


def release(name):
    """Forget the module ``name`` (dotted; one loaded on demand) so its code can be collected
    once nothing refers to it: out of ``sys.modules`` and off its package. The node loads
    some driver code only for the call that needs it (the modem's join, a sensor part's read)
    and releases it after (docs/benchmarks.md, heap)."""
    import sys

    sys.modules.pop(name, None)
    i = name.rfind(".")
    package = sys.modules.get(name[:i]) if i > 0 else None
    if package is not None:
        try:
            delattr(package, name[i + 1:])
        except (AttributeError, KeyError):  # not loaded: MicroPython raises KeyError
            pass
