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
