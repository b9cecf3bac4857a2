"""The boot's configuration step for the composition root (``app/main.py``): ``config.json``
validated once, the downlink overrides applied, ``secrets.json`` checked, then the validator
released.

Why a module of its own: the validator and its schema are the largest code the node loads
(tens of KB), and they are needed only here. ``configure`` returns before the caller
collects, so nothing of its frame is left on the stack: MicroPython's GC scans the C stack
conservatively, and a stale slot in a frame that is still live (the composition root's, had
this code stayed in ``main()``) can keep a bound ``config.validate`` — and through its
globals the whole validator — reachable. Measured on the built firmware under a 32-bit
MicroPython (docs/benchmarks.md, heap): about 19 KB that ``config.release()`` had not
freed. Runs on MicroPython (and CPython for tests).
"""


import gc
import os

# app.downlink.OVERRIDES (tests/unit/test_startup.py checks they agree): while neither it nor
# its temporary file is on the flash — the usual case — there is nothing for app.downlink to
# do at boot, so it is not even imported (its code and names would cost heap for nothing).
_OVERRIDES = "overrides.json"


def _path(root, name):
    return root.rstrip("/") + "/" + name


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def configure(root):
    """``((cfg, secrets), None)`` for the node's flash at ``root``, or ``(None, error)``
    with the ``config.ConfigError`` that a bad file raised (the caller reports it). The
    overrides (``app.downlink.apply_overrides``) are applied when their file is there. On
    success ``app.config`` (and, unless the link is LoRaWAN, ``app.downlink``) have left
    ``sys.modules``; the caller should ``gc.collect()``."""
    from . import config

    try:
        cfg = config.load_config(_path(root, "config.json"))
        overrides = _path(root, _OVERRIDES)
        if _exists(overrides) or _exists(overrides + ".tmp"):
            from . import downlink  # configuration changes by downlink (docs/protocol-lorawan.md)

            cfg = downlink.apply_overrides(cfg, root, config.validate)
            if cfg["link"]["type"] != "lorawan":  # only a LoRaWAN link takes downlinks (and their counts)
                downlink.release()
        secrets = config.load_secrets(_path(root, "secrets.json"), cfg)
    except config.ConfigError as e:
        return None, e
    config.release()
    return (cfg, secrets), None


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

