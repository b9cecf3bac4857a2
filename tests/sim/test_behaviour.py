"""Run every portable behaviour check (tests/behaviour/*_checks.py) on CPython against a
LocalRig. tests/mpy/ runs the same checks under the MicroPython unix port."""

import importlib
import pathlib

import pytest

from simulators.rig import LocalRig
from tests.behaviour.harness import check_names

HERE = pathlib.Path(__file__).resolve().parent.parent / "behaviour"


def _cases():
    for path in sorted(HERE.glob("*_checks.py")):
        module = importlib.import_module("tests.behaviour." + path.stem)
        for name in check_names(module):
            yield pytest.param(module, name, id="%s::%s" % (path.stem, name))


@pytest.mark.parametrize("module,name", list(_cases()))
def test_behaviour_check(module, name):
    # a check asserts inside and raises on failure; it returns nothing
    assert getattr(module, name)(LocalRig()) is None
