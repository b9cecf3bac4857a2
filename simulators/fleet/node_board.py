"""How the fleet starts a node's board (``simulators/mpy/board.py``): the heap it gets, the
speed settings the firmware cannot see (docs/simulation-fleet.md, "Speed"), and the command
that starts its ``micropython`` (``interpreter``). ``simulators/fleet/nodes.py`` uses them."""

import functools
import importlib.util
import os
import sys

from simulators.mpyrun import micropython_binary

# Heap per link: more than an ESP32 without PSRAM has (~100 KB; 146 KB free at this 64-bit
# port's factor, which the heap tests use: tests/e2e/nodeharness.py), as a board with PSRAM: a
# mains node then has over drivers.KEEP_FREE_BYTES free after its cycles and keeps the code it
# loads on demand instead of loading it again every cycle (firmware/README.md, "Heap").
# Plus CODE_ROM_K for board.py --code-rom's image when in the heap (no ROM area: interpreter()).
HEAP = {"serial": "384K", "lorawan": "384K", "mqtt": "384K"}
CODE_ROM_K = 200
# board.py --gc-scale: the firmware's gc.threshold (8 KB, the chip's fragmentation guard; the
# heap tests keep it) times 20: a collection every 160 KB allocated. The firmware has ~218 KB free
# here (~300 KB over MQTT), ~72 KB over the chip's ~146 KB in 64-bit objects, so the garbage
# between collections still fits (a full heap collects anyway). Unseen by the firmware. 3 -> 10
# took ~14 % off the interpreters' CPU; 10 -> 20 halves a mains node's collections now that one
# with heap to spare no longer collects after every cycle (app/main.py, docs/simulation-fleet.md).
GC_SCALE = 20
# board.py --flash-read: littlefs reads whole 4 KB blocks, not the ESP32 port's 32 bytes (the
# same data and writes; far fewer block-device calls, the wake's largest cost before). Its
# caches are a block from 1 KB up; smaller sizes (smaller caches per open file, fewer bytes
# allocated) cost more in block-device calls than they save (docs/simulator-board.md)
FLASH_READ = 4096
# board.py --flash-cache: the last 4 blocks littlefs read kept in the heap (16 KB): ~80 reads of
# the image file a wake become ~6 (flashcache.CachedImageFlash; the writes are the same)
FLASH_CACHE = 4
# board.py --code-rom: a wake imports the firmware's code from a RAM copy made at power-on
# (the same files; no littlefs lookups or copies per import)
CODE_ROM = True
# board.py --late-collect (with --code-rom): after a reset the board leaves the old boot's
# garbage to boot.py's own first gc.collect() instead of collecting (and walking the heap for
# gc.mem_free()) just before it: ~5 % of a deep-sleep wake; the firmware sees the same heap
LATE_COLLECT = True


# The pip-installed ``micropython`` command is a Python script around the interpreter's
# extension module: run that module without the script (and without ``site``), ~20 ms of CPU
# less per node start. It also holds ROM_AREA_K outside MicroPython's heap (a CPython array)
# and names it in $CIVICEDGE_ROM_AREA: board.py --code-rom's image goes there, as a chip's
# ROMFS is in flash, taking no heap and scanned by no garbage collection.
ROM_AREA_K = 384  # the largest image, an MQTT node's, is ~160 KB
_LAUNCH = ("import array, os, sys; sys.path.insert(0, %r); from micropython_run import run_main; "
           "rom = array.array('B', bytes(%d)); os.environ['CIVICEDGE_ROM_AREA'] = '%%d %%d' %% rom.buffer_info(); "
           "sys.exit(run_main(sys.argv[1:]))")


def rail_args(cfg):
    """board.py's ``--rail PIN[:active_low]`` for a node whose configuration (its
    ``config.json``, from the board's ``[rail]``) gates the sensors' power; none without."""
    rail = cfg.get("rail")
    if not rail:
        return []
    return ["--rail", "%d%s" % (rail["pin"], ":active_low" if rail["active_low"] else "")]


@functools.lru_cache(maxsize=None)
def interpreter():
    """The command that starts a node's ``micropython`` (argv[0] included, as a list)."""
    binary = micropython_binary()
    module = importlib.util.find_spec("micropython_run")  # found, not loaded
    with open(binary, "rb") as f:
        wrapper = f.read(2) == b"#!" and b"micropython_unix" in f.read(4096)
    if module is None or module.origin is None or not wrapper:
        return [binary]
    return [sys.executable, "-I", "-S", "-c", _LAUNCH % (os.path.dirname(module.origin), ROM_AREA_K * 1024),
            "micropython"]
