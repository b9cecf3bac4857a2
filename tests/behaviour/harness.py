"""Helpers for behaviour checks that run on both CPython and the MicroPython unix port.

A check module is ``tests/behaviour/<part>_checks.py`` holding functions ``check_<name>(rig)``.
Each gets a fresh rig (``simulators.rig.LocalRig`` on CPython; the socket rig under
MicroPython) and must only use what both runtimes have: no pytest, no typing, no f-string
``=``, no dataclasses. A check fails by raising (``assert`` is kept by the unix port).
"""


def raises(exc_type, fn, *args, **kwargs):
    """Call ``fn`` and return the exception of ``exc_type`` it raised; fail if it did not."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", fn), exc_type.__name__))


def close(a, b, tol):
    """True when ``a`` and ``b`` differ by at most ``tol``."""
    return abs(a - b) <= tol


def check_names(module):
    """The names of the ``check_`` functions of ``module``, sorted."""
    names = [n for n in dir(module) if n.startswith("check_")]
    names.sort()
    return names
