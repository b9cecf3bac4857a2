"""The MicroPython side of ``simulators.virtual_board``: the ESP32 port's REPL and boot
sequence, run by the unix port with the board shim on ``MICROPYPATH``::

    micropython -X heapsize=320K simulators/mpy/repl_agent.py --flash FLASH.bin \
        --offset 2097152 --blocks 512 --boot-ms 300 --console 127.0.0.1:PORT

``--flash``/``--offset``/``--blocks``: the littlefs "vfs" partition inside the flash chip's
file, mounted at ``/flash`` (formatted with MicroPython's initial ``boot.py`` when erased,
``ports/esp32/modules/inisetup.py``). ``--console``: a TCP connection to ``VirtualBoard``
that carries the host's bytes (UART0 RX); what the board prints (UART0 TX) is stdout.

The model is MicroPython's own ``ports/esp32/main.c`` (boot.py always, main.py only in the
friendly REPL; ``MPY: soft reboot``) and ``shared/runtime/pyexec.c`` (friendly REPL, raw REPL
with its ``OK`` / ``\\x04`` framing, raw-paste mode with a 128-byte window, Ctrl-C as a
KeyboardInterrupt while code runs). Resets (``machine.reset()``, deep sleep, the watchdog)
restart the application in this process as ``board.py`` does, printing the ROM's ``rst:``
line; a power cut or EN is ``VirtualBoard`` killing the process. See virtual_board.py for
what differs from the chip.
"""

import gc
import sys
import socket
import select as _rselect  # the real one: board.py's machinery replaces sys.modules["select"]
import time as _rtime

_args = sys.argv[1:]
_OPT = dict(zip(_args[::2], _args[1::2]))
import board  # the shim, loaded as board.py loads it (reserve block and all)
import esp32
import flashdev
import machine
import network
import os
import simclock
import simlink
import vfs
from simlink import BoardReset

FORCED = 0x100
_EXC = 0
_OK = 1
_RAW, _FRIENDLY = 1, 0
_mode = _FRIENDLY
_out = sys.stdout.buffer


def _w(s):
    _out.write(s if isinstance(s, bytes) else s.encode())


# -- the console (UART0) ---------------------------------------------------------------------
_host, _port = _OPT["--console"].rsplit(":", 1)
_con = socket.socket()
_con.connect(socket.getaddrinfo(_host, int(_port))[0][-1])
_poll = _rselect.poll()
_poll.register(_con, _rselect.POLLIN)
_rx = b""
_executing = False


def _pump(wait_ms):
    global _rx
    if not _poll.poll(wait_ms):
        return False
    data = _con.recv(4096)
    if not data:  # the board lost power
        sys.exit(0)
    _rx += data
    return True


def _check_intr():
    """While code runs: a Ctrl-C that has arrived raises KeyboardInterrupt (the chip's UART
    interrupt does the same; the Ctrl-C is not kept, what came before it is)."""
    global _rx
    _pump(0)
    i = _rx.find(b"\x03")
    if i >= 0:
        _rx = _rx[:i] + _rx[i + 1:]
        raise KeyboardInterrupt()


simlink.strict = True  # every sleep and clock read is a request, so Ctrl-C is seen while code runs
_real_call = simlink.call


def _call(op, addr=0, payload=b"", into=None, lag=None):
    if _executing:
        _check_intr()
    return _real_call(op, addr, payload, into, lag)


simlink.call = _call


def _wait_input():
    """Block until input is held; the real time spent waiting passes on the board's clock."""
    while not _rx:
        t0 = _rtime.ticks_ms()
        _pump(200)
        spent = _rtime.ticks_diff(_rtime.ticks_ms(), t0)
        if spent > 0:
            simclock.advance_us(spent * 1000)  # a watchdog left running fires here


def _getc():
    global _rx
    _wait_input()
    c = _rx[0]
    _rx = _rx[1:]
    return c


def _take_text():
    """Input up to (not including) the next of Ctrl-A..Ctrl-E, and that control byte (or None)."""
    global _rx
    _wait_input()
    cut = len(_rx)
    for ch in b"\x01\x02\x03\x04\x05":
        i = _rx.find(bytes((ch,)), 0, cut)
        if i >= 0:
            cut = i
    text, ctrl = _rx[:cut], None
    if cut < len(_rx):
        ctrl = _rx[cut]
        cut += 1
    _rx = _rx[cut:]
    return text, ctrl


# -- executing code ---------------------------------------------------------------------------
def _execute(source, ns, kind, eof, name="<stdin>"):
    """parse_compile_execute (shared/runtime/pyexec.c): _OK, _EXC or FORCED (SystemExit)."""
    global _executing
    ret = _OK
    try:
        code = compile(source, name, kind)
        source = None
        _executing = True
        try:
            exec(code, ns)
        finally:
            _executing = False
        if eof:
            _w(b"\x04")
    except SystemExit:
        if eof:
            _w(b"\x04")
        ret = FORCED
    except BoardReset:
        raise
    except BaseException as e:  # KeyboardInterrupt included, as on the chip
        if eof:
            _w(b"\x04")
        sys.print_exception(e)
        ret = _EXC
    if eof:
        _w(b"\x04")
    return ret


def _run_file(name, ns):
    try:
        f = open(name)
    except OSError:
        return _OK  # no file: as an empty one
    source = f.read()
    f.close()
    return _execute(source, ns, "exec", False, name)


# -- the REPLs (pyexec.c) -------------------------------------------------------------------
def _raw_paste(cmd, ns):
    global _rx
    if cmd != ord("A"):
        _w(b"R\x00")
        return 0
    _w(b"R\x01")
    window = 128  # MICROPY_REPL_STDIN_BUFFER_MAX (256) / 2
    _w(bytes((window & 0xFF, window >> 8, 1)))
    remain = window
    parts = []
    while True:
        _wait_input()
        chunk = _rx[:remain]
        end = -1
        for ch in b"\x03\x04":
            i = chunk.find(bytes((ch,)))
            if i >= 0 and (end < 0 or i < end):
                end = i
        if end >= 0:
            parts.append(chunk[:end])
            ctrl = chunk[end]
            _rx = _rx[end + 1:]
            _w(b"\x04")
            if ctrl == 3:
                return _execute("raise KeyboardInterrupt", ns, "exec", True)
            break
        parts.append(chunk)
        _rx = _rx[len(chunk):]
        remain -= len(chunk)
        if remain == 0:
            _w(b"\x01")
            remain = window
    return _execute(b"".join(parts), ns, "exec", True)


def _raw_repl(ns):
    global _mode
    _w("raw REPL; CTRL-B to exit\r\n")
    while True:
        _w(">")
        line = b""
        while True:
            text, c = _take_text()
            line += text
            if c is None:
                continue
            if c == 1:
                if len(line) == 2 and line[0] == 5:
                    ret = _raw_paste(line[1], ns)
                    if ret & FORCED:
                        return ret
                    line = b""
                    _w(">")
                    continue
                _w("raw REPL; CTRL-B to exit\r\n>")
                line = b""
            elif c == 2:
                _w("\r\n")
                _mode = _FRIENDLY
                return 0
            elif c == 3:
                line = b""
            elif c == 4:
                break
            else:
                line += bytes((c,))
        _w("OK")
        if not line:
            _w("\r\n")
            return FORCED
        ret = _execute(line, ns, "exec", True)
        line = None
        if ret & FORCED:
            return ret


def _banner():
    v = sys.implementation.version
    _w("MicroPython v%d.%d.%d on virtual-board; Generic ESP32 module with ESP32\r\n" % (v[0], v[1], v[2]))
    _w('Type "help()" for more information.\r\n')


def _paste(ns):
    _w("\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
    buf = b""
    while True:
        c = _getc()
        if c == 3:
            _w("\r\n")
            return 0
        if c == 4:
            _w("\r\n")
            return _execute(buf, ns, "exec", False)
        buf += bytes((c,))
        _w("\r\n=== " if c == 13 else bytes((c,)))


def _friendly_repl(ns):
    global _mode
    _banner()
    while True:
        _w(">>> ")
        line = b""
        while True:
            c = _getc()
            if c == 1:
                _w("\r\n")
                _mode = _RAW
                return 0
            if c == 2:
                _w("\r\n")
                _banner()
                _w(">>> ")
                line = b""
            elif c == 3:
                _w("\r\n>>> ")
                line = b""
            elif c == 4 and not line:
                _w("\r\n")
                return FORCED
            elif c == 5:
                ret = _paste(ns)
                if ret & FORCED:
                    return ret
                _w(">>> ")
            elif c in (8, 127):
                if line:
                    line = line[:-1]
                    _w("\x08 \x08")
            elif c == 13:
                _w("\r\n")
                break
            elif c >= 32 or c == 9:
                line += bytes((c,))
                _w(bytes((c,)))
        if line.strip():
            ret = _execute(line, ns, "single", False)
            if ret & FORCED:
                return ret


# -- the flash filesystem (ports/esp32/modules/_boot.py, inisetup.py) -----------------------
class _Partition(board._Flash):
    """The vfs partition: ``--blocks`` 4 KB blocks from ``--offset`` in the flash file."""

    def __init__(self, path, base, blocks):
        self.base = base
        board._Flash.__init__(self, path, (base // flashdev.BLOCK_SIZE) + blocks)
        self.block_count = blocks

    def readblocks(self, block, buf, offset=0):
        board._Flash.readblocks(self, block + self.base // self.block_size, buf, offset)

    def writeblocks(self, block, buf, offset=None):
        board._Flash.writeblocks(self, block + self.base // self.block_size, buf, offset)

    def ioctl(self, op, arg):
        if op == 6:
            arg += self.base // self.block_size
        return board._Flash.ioctl(self, op, arg)


_INITIAL_BOOT_PY = """\
# This file is executed on every boot (including wake-boot from deepsleep)
#import esp
#esp.osdebug(None)
#import webrepl
#webrepl.start()
"""


def _mount():
    dev = _Partition(_OPT["--flash"], int(_OPT["--offset"]), int(_OPT["--blocks"]))
    try:
        vfs.mount(vfs.VfsLfs2(dev), "/flash")
        return
    except OSError:
        pass
    buf = bytearray(dev.block_size)
    dev.readblocks(0, buf)
    if buf != b"\xff" * len(buf):
        while True:  # inisetup.fs_corrupted(): the chip prints this every 3 s for ever
            _w("The filesystem appears to be corrupted. If you had important data there, you\r\n"
               "may want to make a flash snapshot to try to recover it. Otherwise, perform\r\n"
               "factory reprogramming of MicroPython firmware (completely erase flash, followed\r\n"
               "by firmware programming).\r\n")
            for _ in range(15):
                _pump(200)
    _w("Performing initial setup\r\n")
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/flash")
    with open("/flash/boot.py", "w") as f:
        f.write(_INITIAL_BOOT_PY)


# -- the chip ---------------------------------------------------------------------------------
_RST = {machine.SOFT_RESET: "0xc (SW_CPU_RESET)", machine.DEEPSLEEP_RESET: "0x5 (DEEPSLEEP_RESET)",
        machine.WDT_RESET: "0x7 (TG0WDT_SYS_RESET)"}


def _clean(keep):
    for name in list(sys.modules):
        if name not in keep:
            del sys.modules[name]
    gc.collect()


def _session(keep):
    """One chip boot: soft reboots loop here until the chip resets (BoardReset out)."""
    global _mode
    _mode = _FRIENDLY  # a chip reset starts in the friendly REPL
    while True:
        ns = {"__name__": "__main__"}
        sys.path.clear()
        sys.path.extend(("/flash", "/flash/lib", ".frozen"))
        os.chdir("/flash")
        try:
            ret = _run_file("boot.py", ns)
            if not ret & FORCED and _mode == _FRIENDLY and ret == _OK:
                ret = _run_file("main.py", ns)
            while not ret & FORCED:
                ret = _raw_repl(ns) if _mode == _RAW else _friendly_repl(ns)
        except BoardReset as reset:
            if reset.cause is not None:
                raise
            reset = None  # machine.soft_reset(): a soft reboot, as Ctrl-D
        ns = None
        _w("MPY: soft reboot\r\n")
        _clean(keep)
        board._boot_at(simclock.now_us(), None)
        machine._boot(None)
        network._reset()
        esp32._reset()


def main():
    board._settle_heap(None)  # free the shim's reserve block first: mounting needs the heap
    _mount()
    sys.modules["time"] = simclock.VirtualTime()
    sys.modules["select"] = simclock.VirtualSelect()
    sys.modules["_asyncio"] = simclock.virtual_asyncio_core()
    for name in list(sys.modules):  # the shim's own copies: the firmware loads its flash's
        if name == "drivers" or name.startswith("drivers."):
            del sys.modules[name]
    keep = set(sys.modules)
    simclock.power_on(False)
    cause, wake, at_us = machine.PWRON_RESET, 0, 0
    boot_ms = int(_OPT.get("--boot-ms", "300"))
    while True:
        now_us = board._boot_at(at_us, cause)
        machine._boot(cause, wake)
        network._reset()
        esp32._reset()
        simclock.boot(now_us)
        simclock.advance_us(boot_ms * 1000)
        try:
            _session(keep)
        except BoardReset as reset:
            cause, at_us = reset.cause, reset.at_us
            reset = None
        _clean(keep)
        wake = machine.TIMER_WAKE if cause == machine.DEEPSLEEP_RESET else 0
        if at_us is None:  # deep sleep with no wake source: only EN brings it back
            while True:
                _pump(1000)
        _w("ets Jun  8 2016 00:22:57\r\nrst:%s,boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
           % _RST.get(cause, "0x1 (POWERON_RESET)"))


main()
