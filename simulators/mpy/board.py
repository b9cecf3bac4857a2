"""Run node firmware from a littlefs flash image as an ESP32 runs it, through its resets,
inside one MicroPython process (a wake costs milliseconds; a new process ~24 ms)::

    MICROPYPATH=simulators/mpy:. CIVICEDGE_SIM=127.0.0.1:PORT \\
        micropython -X heapsize=100K simulators/mpy/board.py --flash IMAGE [--install DIR]
            [--wakes N] [--until-s S] [--boot-ms 300] [--rtc-synced] [--blocks 512] [--heap-free 100K]
            [--gc-scale 3] [--flash-read 4096] [--flash-cache 4] [--code-rom] [--late-collect]
            [--rail 25:active_low]

``--flash``: the image file, mounted at ``/flash`` (a new file is made and formatted; an
existing one that does not mount is an error, never reformatted). ``/flash`` is the current
directory and, with ``/flash/lib``, the import path: the firmware sees only its flash (and
the port's frozen modules, as an ESP32 build has them). ``--install DIR`` copies a host
directory onto the flash first, as flashing does. Then ``boot.py`` and ``main.py`` run as the
ESP32 port runs them (one ``__main__`` namespace; an error in boot.py is printed and main.py
still runs); ``time`` is the board's virtual clock (``simclock.VirtualTime``), and ``select``
and ``asyncio`` wait on it (``simclock.VirtualSelect``, ``virtual_asyncio_core``).

A reset — ``machine.deepsleep(ms)``, ``machine.reset()``, ``machine.soft_reset()``, or a
watchdog not fed (``simlink.BoardReset``) — restarts the application: every module the
firmware loaded leaves ``sys.modules``; the shim modules stay but start a new boot
(``machine.reset_cause()``, WiFi off, UARTs closed, watchdog stopped); the heap is collected;
the simulator's clock advances to the wake time (op BOOT_AT) and, for a chip reset, ticks
restart and ``--boot-ms`` of boot time pass (REFERENCE §5: ~0.3 s; a soft reboot skips both);
then boot.py and main.py run again. RTC memory, the RTC and the flash are kept. At most
``--wakes`` resets are followed; the next one ends the run. ``--until-s S`` instead bounds the
run by virtual time: it ends (``end`` "time") when a light sleep or a wake would pass S
seconds of the simulator's clock — how a mains node, which light-sleeps and never resets,
is run for a simulated day. An uncaught exception in main.py
is printed and stops the application (exit 1), and main.py returning stops it too (exit 0) —
unless a watchdog is running, which then resets the board at its deadline, as on the chip.
A power cut is a killed process: the next run starts with ``PWRON_RESET``.

``--rail PIN[:active_low]``: the sensor rail the pin switches powers the parts (``simrail``).

Heap: the shim's modules live in the heap (on an ESP32 they are in flash): at 100 KB the
firmware gets about 52 KB. ``--heap-free N`` holds a ballast block so the firmware gets N
bytes at boot whatever the shim takes: run with a larger ``-X heapsize`` (e.g. 200K with
``--heap-free 100K``). ``--gc-scale N`` multiplies the thresholds the firmware gives
``gc.threshold`` by N (``_GC``): the fleet, whose heaps are about 3 times the chip's, passes 3.

For speed (the fleet; docs/simulation-fleet.md, "Speed"), changing nothing the firmware
sees: ``--flash-read N`` mounts with littlefs's read size N (default 32, the ESP32 port's;
its caches grow to ``min(4096, 4 N)`` bytes; what it writes is the same), ``--flash-cache N``
keeps the last N blocks littlefs read in the heap (``flashcache.CachedImageFlash``: reads of
them cost no Python-level file calls; writes go to the image first, as always), ``--code-rom``
copies the flash's code files at power-on into a ROMFS image (``coderom``) at ``/code``,
the import path then ``/code``, ``/code/lib`` for ``/flash``, ``/flash/lib`` (the same code
files; the flash's entries cost littlefs lookups for every built-in imported), and
``boot.py`` and ``main.py`` are compiled at the first boot only, every wake running the same
code again (the image, too, is the flash's code as it was at power-on). The image is
in the memory ``$CIVICEDGE_ROM_AREA`` names (outside the heap: the fleet's launcher), else in
the heap (~150 KB after ``--heap-free``'s ballast). ``--late-collect`` (with ``--code-rom``)
leaves the old boot's garbage after a reset to the firmware's first collection (``boot.py``
collects first thing; nothing reads or writes the flash before it, so an old boot's file
that only the collector would close is closed before the firmware touches the flash, as
before): the board's own collection and ``gc.mem_free()`` walk of the heap, together ~5 % of
a deep-sleep wake, are done at power-on only, and ``mem_free`` is -1 for the other boots.

The last line of output is ``BOARD {json}``: ``end`` ("wakes", "time", "ended", "error",
"asleep" — a deep sleep with no wake time), ``boots``, ``resets`` by cause (the one that ended the run
included), ``virtual_s`` (the simulator clock at the end), ``ballast`` (bytes held for
``--heap-free``), ``largest_block`` (the largest allocation possible before the first boot), ``sim`` (what the
board cost the simulation: ``requests`` to the simulator, ``sleeps_kept`` (sleeps carried by
a later request instead of one of their own: ``simlink``), ``real_waits`` for a far end
(socket polls, UART reads), ``real_wait_ms`` they took and ``real_waits_empty``, those that
ended with nothing, and ``real_waits_gave_up``, those that gave up on a far end that was up
(``simlink.patient``: the board's clock may then depend on real timing)),
``mem_free`` (``gc.mem_free()`` after the collection before each boot; -1 where
``--late-collect`` left it to the firmware) and ``wall_us`` (real
µs each boot took, application and reset) — of every boot, or past 256 boots of the first
128 and the latest 128.
"""

import gc
import json
import os
import sys
import time  # the port's real clock (imported before the board's replaces it)
import vfs

_USAGE = ("usage: board.py --flash IMAGE [--install DIR] [--wakes N] [--until-s S] [--boot-ms MS] "
          "[--rtc-synced] [--blocks N] [--heap-free BYTES|NK] [--gc-scale N] [--flash-read N] [--flash-cache N] "
          "[--code-rom] [--late-collect] [--rail PIN[:active_low]]")
_RECORD = 256  # boots whose heap and wall time the summary keeps: the first and latest 128


def _options(argv):
    opts = {"flash": None, "install": None, "wakes": 0, "until_s": 0, "boot_ms": 300, "blocks": 512, "rtc_synced": False,
            "heap_free": None, "gc_scale": 1, "flash_read": 32, "flash_cache": 0,
            "code_rom": False, "late_collect": False, "rail": None}
    i = 0
    while i < len(argv):
        key = argv[i][2:].replace("-", "_")
        if argv[i] in ("--rtc-synced", "--code-rom", "--late-collect"):
            opts[key] = True
            i += 1
        elif argv[i].startswith("--") and key in opts and i + 1 < len(argv):
            value = argv[i + 1]
            if key == "heap_free" and value[-1:] in "kK":
                value = int(value[:-1]) * 1024
            opts[key] = value if key in ("flash", "install", "rail") else int(value)
            i += 2
        else:
            raise ValueError("unknown or incomplete option %r; %s" % (argv[i], _USAGE))
    if not opts["flash"]:
        raise ValueError("--flash is required; " + _USAGE)
    if opts["late_collect"] and not opts["code_rom"]:  # (without, boot.py is read before it collects)
        raise ValueError("--late-collect needs --code-rom; " + _USAGE)
    return opts


if __name__ == "__main__":
    _OPTS = _options(sys.argv[1:])
    _n = min(_OPTS["wakes"] + 1, _RECORD)
    _RECORDS = ([0] * _n, [0] * _n)  # allocated first, in a fresh heap: recording takes none later

_SHIM = ("simlink", "simclock", "machine", "simuart", "simchip", "network", "esp32", "flashdev", "simsocket")


def _load_shim():
    """Import the shim while a reserve block holds the bottom of the heap; returns the
    reserve, still held. Compiling from source leaves holes between the modules; once the
    runner's own allocations are made, freeing the reserve gives the firmware one large free
    block (without it, at 100 KB, the largest is ~6 KB). Smaller reserves if the heap is
    too small for the first."""
    read, kept = (_OPTS["flash_read"], _OPTS["flash_cache"]) if __name__ == "__main__" else (32, 0)
    extra = 12 * min(4096, 4 * read) if read > 32 else 0  # littlefs's caches (--flash-read)
    extra += 4096 * kept  # --flash-cache's copies (flashdev.BLOCK_SIZE each)
    for keep in (72000 + extra, 84000 + extra, 0):
        gc.collect()
        reserve = bytearray(max(0, gc.mem_free() - keep)) if keep else b""
        try:
            for name in _SHIM:
                __import__(name)
                gc.collect()  # the compiler's garbage, before the next module's
            return reserve
        except MemoryError:
            reserve = None
            for name in _SHIM:
                sys.modules.pop(name, None)
            if not keep:
                raise


_reserve = _load_shim()
import esp32  # noqa: E402 (already loaded, compactly, by _load_shim)
import flashdev
import machine
import network
import simchip  # the chip's state (RTC memory, UARTs) must outlive the firmware's modules
import simclock
import simlink
import simsocket
from simlink import OP_HALT, BoardReset, BoardStop

_CAUSES = {None: "soft_reboot", machine.SOFT_RESET: "soft", machine.WDT_RESET: "wdt",
           machine.DEEPSLEEP_RESET: "deepsleep"}


_Flash = flashdev.ImageFlash  # (repl_agent's partition builds on it)


def _run_file(name, namespace, codes=None):
    """Compile the flash's file ``name`` and run it in ``namespace``. ``codes`` (``--code-rom``,
    whose image holds the flash's code as it was at power-on): compiled files kept across
    boots, so a wake runs the same code without reading and compiling its source again."""
    code = codes.get(name) if codes is not None else None
    if code is None:
        try:
            f = open(name)
        except OSError:
            return  # no such file: the port skips it
        source = f.read()
        f.close()
        code = compile(source, name, "exec")
        source = None
        if codes is not None:
            codes[name] = code
    exec(code, namespace)


def _application(codes=None):
    """boot.py then main.py; returns the exception that stopped main.py, or None."""
    namespace = {"__name__": "__main__"}
    for name in ("boot.py", "main.py"):
        try:
            _run_file(name, namespace, codes)
        except SystemExit:
            if name == "main.py":
                return None
        except Exception as e:  # BoardReset is a BaseException: it goes to the runner
            sys.print_exception(e)
            if name == "main.py":
                return e
    return None


def _slot(k, size):
    """Where boot ``k`` (from 0) is recorded: the first half in order, then a ring."""
    half = size // 2
    return k if k < size else half + (k - half) % (size - half)


def _write_values(values, boots):
    """The recorded values in boot order, written piecewise (no allocation of a whole list)."""
    size = len(values)
    half = size // 2
    oldest = _slot(boots, size)
    spans = ((0, boots),) if boots <= size else ((0, half), (oldest, size), (half, oldest))
    sep = ""
    for start, end in spans:
        for i in range(start, end):
            sys.stdout.write("%s%d" % (sep, values[i]))
            sep = ", "


def _settle_heap(heap_free, rail=None):
    """Free the reserve (see ``_load_shim``), holding back a ballast so the firmware gets
    ``heap_free`` bytes at boot (None: all there is) whatever the shim takes — an ESP32 keeps
    ``machine`` in flash. The ballast fills the holes outside the reserve first, so the
    firmware's heap stays as contiguous as it can. Returns the ballast (a list of blocks)."""
    global _reserve
    ballast = []
    gc.collect()
    if heap_free is not None:
        target = heap_free - len(_reserve)  # while the reserve is still held
        while gc.mem_free() - target > 4096:
            try:
                ballast.append(bytearray(4000))
            except MemoryError:
                break
    _reserve = None
    gc.collect()
    if rail:  # --rail's module: in the freed reserve, before the firmware's heap is measured
        __import__("simrail").config(rail)
        gc.collect()  # (its compiler's garbage)
    if heap_free is not None:
        excess = gc.mem_free() - heap_free
        if excess > 64:
            ballast.append(bytearray(excess - 64))  # 64: what a block costs beyond its bytes
            gc.collect()
        elif not ballast:
            print("board.py: only %d bytes free, less than --heap-free %d" % (gc.mem_free(), heap_free))
    return ballast


class _GC:
    """The ``gc`` module the firmware sees with ``--gc-scale N``: ``threshold(n)`` asks for a
    collection after ``N * n`` bytes (and reports thresholds divided by N). A heap N times the
    chip's (``-X heapsize``, sized for the unix port's 64-bit objects) then collects after the
    same share of it is allocated as the firmware's threshold means on the chip."""

    def __init__(self, scale):
        self._scale = scale

    def threshold(self, amount=None):
        if amount is None:
            t = gc.threshold()
            return t if t < 0 else t // self._scale
        gc.threshold(amount * self._scale if amount >= 0 else amount)

    def __getattr__(self, name):
        return getattr(gc, name)


def _largest_block():
    """The largest single allocation the heap can give now (bytes)."""
    low, high = 0, gc.mem_free()
    while low < high:
        size = (low + high + 1) // 2
        try:
            block = bytearray(size)
            block = None
            low = size
        except MemoryError:
            high = size - 1
    gc.collect()
    return low


def _boot_at(at_us, cause):
    return simlink.boot_at(at_us, cause)


def run(opts, records):
    flashdev.mount_image(opts["flash"], opts["blocks"], opts["flash_read"], cache_blocks=opts["flash_cache"])
    if opts["install"]:
        flashdev.install(opts["install"].rstrip("/"), "/flash")
    sys.modules["time"] = simclock.VirtualTime()
    sys.modules["select"] = simclock.VirtualSelect()
    sys.modules["_asyncio"] = simclock.virtual_asyncio_core()
    sys.modules["socket"] = simsocket
    if opts["gc_scale"] != 1:
        sys.modules["gc"] = _GC(opts["gc_scale"])
    for name in list(sys.modules):  # the shim's own copies: the firmware loads its flash's
        if name == "drivers" or name.startswith("drivers."):
            del sys.modules[name]
    keep = set(sys.modules)
    wakes = opts["wakes"]
    mem_free, wall_us = records
    resets = {"deepsleep": 0, "wdt": 0, "soft": 0, "soft_reboot": 0}
    ballast = _settle_heap(opts["heap_free"], opts["rail"])
    keep.add("simrail")  # (a shim module when loaded: kept across boots)
    path, codes = ("/flash", "/flash/lib", ".frozen"), None
    if opts["code_rom"]:  # the flash's code in RAM (the first block of the freed reserve)
        import coderom  # only here: without it the firmware's heap stays as it was
        coderom.mount(coderom.build("/flash", coderom.area(os.getenv("CIVICEDGE_ROM_AREA"))), "/code")
        # /code holds every code file /flash does: /flash off the path skips the littlefs
        # lookups of every import that misses (a built-in such as json is looked for on the
        # path first, at every import statement run: ~130 lookups a deep-sleep wake)
        path, codes = ("/code", "/code/lib", ".frozen"), {}
    largest = _largest_block()
    simclock.power_on(opts["rtc_synced"])
    until_us = opts["until_s"] * 1000000 if opts["until_s"] else None
    if until_us is not None:
        import simchip

        simchip.stop_at_us = until_us
    cause, wake, at_us = machine.PWRON_RESET, 0, 0
    boots, end, error = 0, None, None
    while True:
        t0 = time.ticks_us()
        now_us = _boot_at(at_us, cause)
        machine._boot(cause, wake)
        network._reset()
        esp32._reset()
        simsocket._reset()
        sys.path.clear()
        sys.path.extend(path)
        os.chdir("/flash")
        if boots == 0 or not opts["late_collect"]:
            gc.collect()
            mem_free[_slot(boots, len(mem_free))] = gc.mem_free()
        else:  # (--late-collect: boot.py's gc.collect() frees the old boot)
            mem_free[_slot(boots, len(mem_free))] = -1
        boots += 1
        try:
            if cause is not None:  # a chip reset: ticks restart, the bootloader runs
                simclock.boot(now_us)
                simclock.advance_us(opts["boot_ms"] * 1000)
            error = _application(codes)
            simlink.call(OP_HALT)  # the app has stopped: only a watchdog can reset the board
            end = "error" if error is not None else "ended"
        except BoardReset as reset:
            cause, at_us = reset.cause, reset.at_us
            reset = error = None  # nothing of the old boot may stay reachable
        except BoardStop:  # a light sleep past --until-s
            end = "time"
        for name in list(sys.modules):
            if name not in keep:
                del sys.modules[name]
        # (the old boot's heap is collected before the next one starts, at the loop's top)
        wall_us[_slot(boots - 1, len(wall_us))] = time.ticks_diff(time.ticks_us(), t0)
        if end is not None:
            break
        resets[_CAUSES[cause]] += 1
        wake = machine.TIMER_WAKE if cause == machine.DEEPSLEEP_RESET else 0
        if at_us is None:
            end = "asleep"
            break
        if until_us is not None and at_us > until_us:
            end = "time"
            break
        if boots > wakes and until_us is None:
            end = "wakes"
            break
    try:
        simlink.flush()  # the simulator's clock where the board's is
    except BoardReset:
        pass
    c = simlink.counts
    sys.stdout.write('BOARD {"end": "%s", "boots": %d, "resets": %s, "virtual_s": %s, "ballast": %d, '
                     '"largest_block": %d, "sim": {"requests": %d, "sleeps_kept": %d, "real_waits": %d, '
                     '"real_wait_ms": %d, "real_waits_empty": %d, "real_waits_gave_up": %d}, "mem_free": ['
                     % (end, boots, json.dumps(resets), json.dumps(simclock.now_us() / 1e6), sum(len(b) for b in ballast), largest,
                        c[0], c[1], c[2], c[3], c[4], c[5]))
    _write_values(mem_free, boots)
    sys.stdout.write('], "wall_us": [')
    _write_values(wall_us, boots)
    sys.stdout.write("]}\n")
    return 1 if end == "error" else 0


if __name__ == "__main__":
    sys.exit(run(_OPTS, _RECORDS))
