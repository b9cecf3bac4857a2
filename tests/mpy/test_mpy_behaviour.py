"""Run every portable behaviour check (tests/behaviour/*_checks.py) under the MicroPython unix
port, against the same simulated devices as tests/sim/test_behaviour.py, one pytest test per
check. Each check module runs in ONE ``micropython`` process (tests/mpy/run_checks.py) with
its own simulator server; each test then reads its own result line."""

import importlib
import pathlib

import pytest

from simulators.mpyrun import run_micropython
from tests.behaviour.harness import check_names

REPO = pathlib.Path(__file__).resolve().parents[2]
BEHAVIOUR = REPO / "tests" / "behaviour"
RUN_CHECKS = REPO / "tests" / "mpy" / "run_checks.py"
PROCESS_TIMEOUT_S = 120


def parse_results(stdout):
    """``run_checks.py`` output → ``({"module::name" or "module": text}, done)``, where text
    is "PASS" or "FAIL <repr>" followed by the traceback lines."""
    results = {}
    key = None
    done = False
    for line in stdout.splitlines():
        if line.startswith("| ") and key is not None:
            results[key] += "\n" + line[2:]
            continue
        parts = line.split(" ", 2)
        if parts[0] in ("CHECK", "MODULE") and len(parts) == 3:
            key = parts[1]
            results[key] = parts[2]
        elif line == "DONE":
            done = True
    return results, done


class ModuleRuns:
    """One micropython run per check module, made on first use and kept for the session."""

    def __init__(self):
        self._runs = {}

    def get(self, module_name):
        if module_name not in self._runs:
            rc, out, err = run_micropython([str(RUN_CHECKS), module_name])
            results, done = parse_results(out)
            self._runs[module_name] = (rc, done, results, out, err)
        return self._runs[module_name]


@pytest.fixture(scope="module")
def module_runs():
    return ModuleRuns()


def _cases():
    for path in sorted(BEHAVIOUR.glob("*_checks.py")):
        module_name = "tests.behaviour." + path.stem
        try:
            names = check_names(importlib.import_module(module_name))
        except Exception as e:  # still run it under MicroPython: its MODULE line says why
            yield pytest.param(module_name, None, repr(e), id="%s::<import>" % path.stem)
            continue
        for name in names:
            yield pytest.param(module_name, name, None, id="%s::%s" % (path.stem, name))


@pytest.mark.parametrize("module_name,check,cpython_error", list(_cases()))
def test_check_under_micropython(module_runs, module_name, check, cpython_error):
    rc, done, results, out, err = module_runs.get(module_name)
    context = "micropython exit %s\n--- stdout tail ---\n%s\n--- stderr tail ---\n%s" % (
        rc, out[-2000:], err[-2000:])
    if module_name in results:
        pytest.fail("%s did not import under MicroPython: %s" % (module_name, results[module_name]))
    if check is None:
        pytest.fail("%s did not import under CPython: %s" % (module_name, cpython_error))
    key = "%s::%s" % (module_name, check)
    assert key in results, "no result line for %s\n%s" % (key, context)
    if results[key] != "PASS":
        pytest.fail("%s under MicroPython: %s" % (key, results[key]), pytrace=False)
    assert rc == 0 and done, "run_checks did not finish cleanly\n%s" % context
