"""``drivers.release`` under MicroPython: a module loaded on demand is forgotten (out of
``sys.modules`` and off its package), and releasing one never loaded is harmless (MicroPython
raises ``KeyError``, not ``AttributeError``, for a missing package attribute)."""

from simulators.mpyrun import run_micropython

SCRIPT = """
import sys
import drivers
drivers.release("drivers.tmp117_core")          # never loaded: nothing to do, no error
import drivers.tmp117_core
print("loaded", "drivers.tmp117_core" in sys.modules, hasattr(drivers, "tmp117_core"))
drivers.release("drivers.tmp117_core")
print("released", "drivers.tmp117_core" in sys.modules, hasattr(drivers, "tmp117_core"))
drivers.release("drivers.tmp117_core")          # twice: still harmless
print("again ok")
"""


def test_release_forgets_a_loaded_module_and_ignores_one_never_loaded():
    rc, out, err = run_micropython(["-c", SCRIPT], sim=False, timeout_s=60)
    assert rc == 0, err
    assert out.split("\n")[:3] == ["loaded True True", "released False False", "again ok"]


KEEP_SCRIPT = """
import sys
import drivers
import drivers.tmp117_core
K, R = drivers.KEEP_FREE_BYTES, drivers.RELEASE_FREE_BYTES
print("tight", drivers.keep_if_room(R - 1))      # an ESP32's heap: release
print("between", drivers.keep_if_room(K - 1))    # no change
print("room", drivers.keep_if_room(K))           # heap to spare: keep from now on
drivers.release("drivers.tmp117_core")
print("kept", "drivers.tmp117_core" in sys.modules)
print("between", drivers.keep_if_room(R))        # still keeping
print("tight again", drivers.keep_if_room(R - 1))
drivers.release("drivers.tmp117_core")
print("released", "drivers.tmp117_core" in sys.modules)
"""


def test_a_node_with_heap_to_spare_keeps_its_modules_and_releases_them_when_it_runs_short():
    rc, out, err = run_micropython(["-c", KEEP_SCRIPT], sim=False, timeout_s=60)
    assert rc == 0, err
    assert out.split("\n")[:7] == ["tight True", "between True", "room False", "kept True", "between False",
                                   "tight again True", "released False"]


def test_no_esp32_without_psram_keeps_its_modules():
    # the threshold is above an ESP32's whole free heap (~100 KB; 146 KB in this 64-bit port's
    # objects, tests/e2e/nodeharness.ESP32_HEAP), so such a chip releases as it always did
    import drivers
    from tests.e2e.nodeharness import ESP32_HEAP

    assert drivers.KEEP_FREE_BYTES > int(ESP32_HEAP["heap_free"].rstrip("K")) * 1024 > drivers.RELEASE_FREE_BYTES
    assert drivers.keep_if_room(10 ** 9) is False  # CPython never releases, whatever it is told
