"""The boot's configuration step for the composition root (``app/main.py``): the validated
configuration and secrets, from ``config.valid`` when the inputs are those it was made from,
else from ``config.json`` validated, the downlink overrides applied and ``secrets.json``
checked (``app.config_cache``, which loads the validator only then and releases it).

Why a module of its own: the validator and its schema are the largest code the node loads
(tens of KB), and they are needed only here. ``configure`` returns before the caller
collects, so nothing of its frame is left on the stack: MicroPython's GC scans the C stack
conservatively, and a stale slot in a frame that is still live (the composition root's, had
this code stayed in ``main()``) can keep a bound ``config.validate`` — and through its
globals the whole validator — reachable. Measured on the built firmware under a 32-bit
MicroPython (docs/benchmarks.md, heap): about 19 KB that ``config.release()`` had not
freed. This module stays loaded (the caller keeps its functions), so it is kept small: the
cache's code is in ``app.config_cache``, released when ``configure`` returns. Runs on
MicroPython (and CPython for tests).
"""

import gc

from drivers import forget

hits = 0  # boots (of this interpreter) whose configuration came from config.valid: for the tests


def configure(root):
    """``((cfg, secrets), None)`` for the node's flash at ``root``, or ``(None, error)``
    with the ``config.ConfigError`` that a bad file raised (the caller reports it); see
    ``app.config_cache.configure``. On success ``app.config``, ``app.config_cache`` (and,
    unless the link is LoRaWAN, ``app.downlink``) are not in ``sys.modules``; the caller
    should ``gc.collect()``."""
    global hits
    from . import config_cache

    try:
        got, err, hit = config_cache.configure(root)
    finally:
        package = __name__.rpartition(".")[0]  # forget it: its code is not needed again
        forget(package + ".config_cache" if package else "config_cache")
    hits += hit
    return got, err


def collect_deep(depth=12):
    """``gc.collect()`` from ``depth`` fresh frames down. The frames that ``configure`` used
    are gone when it returns, but a collection called straight from the caller pushes new C
    frames over that stack region without initialising all of it, and the GC scans them
    conservatively: a stale pointer there kept the released validator alive (measured: ~19 KB
    under a 32-bit MicroPython, docs/benchmarks.md heap). Here the region is first
    overwritten by frames whose locals are all None."""
    a = b = c = d = e = f = g = h = None
    if depth > 0:
        return collect_deep(depth - 1)
    gc.collect()
    return a or b or c or d or e or f or g or h

