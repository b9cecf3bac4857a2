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
# A light-sleep (mains) node decides after each cycle, from its free heap once collected
# (``keep_if_room``): with at least KEEP_FREE_BYTES free it keeps what it loads on demand, below
# RELEASE_FREE_BYTES it releases again. KEEP_FREE_BYTES is more than an ESP32 without PSRAM has
# in all (~100 KB; ~146 KB in this 64-bit simulation's objects), so such a chip always releases:
# only a board with heap to spare (PSRAM: MBs) keeps its code loaded.
KEEP_FREE_BYTES = 160 * 1024
RELEASE_FREE_BYTES = 96 * 1024


def forget(name):
    """Forget the module ``name`` (dotted) whatever ``RELEASE`` says: out of ``sys.modules`` and
    off its package, so its code can be collected once nothing refers to it. For code a node
    needs once per boot (the configuration step); ``release`` is for code loaded on demand."""
    sys.modules.pop(name, None)
    i = name.rfind(".")
    package = sys.modules.get(name[:i]) if i > 0 else None
    if package is not None:
        try:
            delattr(package, name[i + 1:])
        except (AttributeError, KeyError):  # not loaded: MicroPython raises KeyError
            pass


def release(name):
    """``forget`` the module ``name`` (one loaded on demand) if ``RELEASE``. The node loads
    some driver code only for the call that needs it (the modem's join, a sensor part's read)
    and releases it after (docs/benchmarks.md, heap)."""
    if RELEASE:
        forget(name)


def keep_if_room(free_bytes):
    """Set whether ``release`` forgets modules, from a light-sleep node's free heap after its
    cycle's collection (``gc.mem_free()``, bytes): keep them from ``KEEP_FREE_BYTES`` up, release
    again below ``RELEASE_FREE_BYTES`` (in between, as before). Loading a module again costs the
    node awake time and CPU at every cycle: worth it only where the heap is tight, as on an
    ESP32 without PSRAM, which never has ``KEEP_FREE_BYTES`` free. Returns ``RELEASE``. CPython
    never releases, whatever this is told."""
    global RELEASE
    if sys.implementation.name == "micropython":
        if free_bytes >= KEEP_FREE_BYTES:
            RELEASE = False
        elif free_bytes < RELEASE_FREE_BYTES:
            RELEASE = True
    return RELEASE
