"""A virtual ESP32 DevKitC on a pty, for the field tools (``civicedge flash``, ``civicedge
console``) and for the real ``esptool`` and ``mpremote``.

Theory of operation
-------------------
``VirtualBoard`` owns a pty (``board.port`` is the device path a tool opens, as it would
open ``/dev/ttyUSB0``), a 4 MB flash chip in a file (``flash.bin``) and the chip's state:

* **download mode** (the ROM serial bootloader, as after holding BOOT and tapping EN): the
  bytes go to ``simulators.esp_rom.RomLoader`` (over ``simulators.esp32_chip``), so
  ``esptool --no-stub --before no-reset`` can identify the chip, read its MAC, erase, write
  and verify flash. The loader's FLASH_END
  "run user code" (``esptool --after soft-reset`` with the ROM) starts the firmware.
* **run mode** (a normal boot): the ROM checks for an ESP image header at 0x1000 (else
  it prints ``invalid header: 0x...`` and stops, as a chip with erased flash does); with one,
  "MicroPython" starts: the MicroPython unix port running the board shim
  (``simulators/mpy``, see ``docs/simulator-board.md``) and ``simulators/mpy/repl_agent.py``,
  which speaks the REPL on the pty — friendly REPL, raw REPL (Ctrl-A; Ctrl-D executes;
  ``OK``, output, ``\\x04``, exception, ``\\x04``, ``>``), raw-paste mode, Ctrl-C (interrupts running code),
  Ctrl-D soft reboot (``MPY: soft reboot``; boot.py runs, main.py only in the friendly
  REPL) — exactly what ``mpremote`` uses (``ports/esp32/main.c`` and
  ``shared/runtime/pyexec.c`` of MicroPython are the model). The filesystem is littlefs in
  the flash chip's "vfs" partition, 0x200000-0x400000 (MicroPython's
  ``partitions-4MiBplus.csv`` ends at 0x200000; the port makes "vfs" from the rest of a
  4 MB flash), formatted on first boot with its ``boot.py`` when the region is erased
  (``inisetup.py``). It is mounted at ``/flash`` and is the current directory, so tools
  must use relative paths (``:app/x.mpy``), as they may on the chip where it is ``/``.
  ``machine.reset()``, deep sleep and the watchdog reset the board in the same process, as
  ``board.py`` does, printing the ROM's ``rst:`` line; the sensors are the
  ``SimServer``'s (``simulators/i2c_server.py``).

There are no modem lines on a pty (esptool warns "Chip was NOT reset"), so the buttons are
methods: ``press_en(boot=False)`` resets (into download mode when BOOT is held),
``unplug()`` cuts power and makes the port vanish (tools see I/O errors), ``plug()`` gives a
new port (a new ``board.port``) and powers on. ``unplug_after(n, mode)`` unplugs once ``n``
more bytes have come from the host, for a cable pulled mid-copy. ``transcript()`` is what the
board has printed, ROM replies included.

Time at the REPL: while the agent waits for input the real time that passes is charged to
the virtual clock, so a running watchdog (``machine.WDT`` cannot be stopped on the ESP32)
resets a board left at the REPL, as on the chip. Code runs on virtual time as under
``board.py``; Ctrl-C is noticed at the next shim call (every I2C, clock and UART operation).

Differences from the chip: output is not "cooked" (``print`` sends ``\\n``, the chip
``\\r\\n``); the friendly REPL takes single lines (paste mode, Ctrl-E, for more);
``micropython.kbd_intr`` does not disable Ctrl-C; a deep sleep with no wake time waits for
``press_en``.
"""

import os
import pathlib
import select
import socket
import subprocess
import threading
import time
import tty

from simulators import esp32_chip, esp_rom
from simulators.mpyrun import micropython_binary, micropython_env

VFS_OFFSET = 0x200000  # MicroPython's "vfs" partition on a 4 MB ESP32 (see the module docstring)
VFS_BLOCKS = (esp32_chip.FLASH_SIZE - VFS_OFFSET) // 4096
DEFAULT_MAC = bytes.fromhex("240ac4123456")
_AGENT = pathlib.Path(__file__).resolve().parent / "mpy" / "repl_agent.py"  # the MicroPython side
_TRANSCRIPT_MAX = 1 << 20


class _Pty:
    """A pty whose slave end is the board's port; the slave fd is held so the device stays
    while tools open and close it (as a USB serial device stays while plugged in)."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no newline translation: every byte passes
        self.path = os.ttyname(self.slave)
        os.set_blocking(self.master, False)

    def close(self):
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class VirtualBoard:
    """See the module docstring. ``workdir``: where ``flash.bin`` lives (kept between boards
    made on the same directory); ``server``: a started ``SimServer`` (the sensors); ``mac``:
    the base MAC in the eFuses (and ``machine.unique_id()``); ``boot``: "download" (powered
    on with BOOT held) or "flash"; ``heapsize``: the unix port's ``-X heapsize``; ``env``: more
    environment for the MicroPython process (e.g. ``CIVICEDGE_UART2``, the node's link UART);
    ``boot_ms``: boot time charged at each chip reset, as ``board.py --boot-ms``."""

    def __init__(self, workdir, server, mac=DEFAULT_MAC, boot="download", heapsize="320K", env=None,
                 boot_ms=300):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.server = server
        self.mac = bytes(mac)
        self.heapsize = heapsize
        self.env = dict(env or {})
        self.boot_ms = boot_ms
        self.flash = esp32_chip.SpiFlash(self.workdir / "flash.bin")
        self.chip = esp32_chip.Esp32Chip(self.flash, self.mac)
        self._first_boot = boot
        self.mode = "off"
        self.rom = None
        self.pty = None
        self.proc = None
        self._conn = None
        self._pending = b""
        self._lock = threading.RLock()
        self._transcript = bytearray()
        self._stop = threading.Event()
        self._threads = []
        self._unplug_after = None
        self.received = 0  # bytes taken from the host since power-on

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.plug(download=self._first_boot == "download")
        return self

    def stop(self):
        self._power_off()
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        if self.pty is not None:
            self.pty.close()
            self.pty = None
        self._listener.close()

    @property
    def port(self):
        return self.pty.path if self.pty is not None else None

    def plug(self, download=False):
        """Connect the cable: a new port appears and the board powers on."""
        with self._lock:
            if self.pty is not None:
                raise RuntimeError("already plugged in")
            self._stop.clear()
            self.pty = _Pty()
            t = threading.Thread(target=self._read_host, args=(self.pty,), daemon=True)
            self._threads = [t]
            t.start()
            self._power_on(download, reason=1)

    def unplug(self):
        """Pull the cable: the board loses power and the port vanishes."""
        with self._lock:
            self._power_off()
            self._stop.set()
            pty, self.pty = self.pty, None
        if pty is not None:
            pty.close()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)

    def unplug_after(self, nbytes, mode=None):
        """Pull the cable once ``nbytes`` more bytes have come from the host (counting only
        bytes that arrive in ``mode``, "download" or "run", if given)."""
        self._unplug_after = [nbytes, mode]

    def press_en(self, boot=False):
        """Tap EN (holding BOOT if ``boot``): a chip reset, into download mode with BOOT."""
        with self._lock:
            self._power_off()
            self._power_on(boot, reason=1)

    # -- what the board printed ------------------------------------------------------------
    def transcript(self):
        with self._lock:
            return bytes(self._transcript)

    def wait_for(self, text, timeout_s=30, start=0):
        """Wait until ``text`` (bytes) appears in the transcript after ``start``; True if it did."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.transcript()[start:]:
                return True
            time.sleep(0.02)
        return False

    # -- internals --------------------------------------------------------------------------
    def _emit(self, data):
        """Board -> host. A UART with no listener loses what it sends: if the pty stays full
        (nobody reading) for half a second, the rest of ``data`` is dropped."""
        with self._lock:
            self._transcript += data
            del self._transcript[:-_TRANSCRIPT_MAX]
            pty = self.pty
        if pty is None:
            return
        deadline = time.monotonic() + 0.5
        while data:
            try:
                n = os.write(pty.master, data)
                data = data[n:]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.005)
            except OSError:
                return

    def _power_on(self, download, reason):
        self.received = 0
        self.chip.strap = esp32_chip.STRAP_DOWNLOAD if download else esp32_chip.STRAP_FLASH
        self.chip.baud = 115200
        self._emit(esp32_chip.boot_log(reason, download))
        if download:
            self.rom = esp_rom.RomLoader(self.chip)
            self.mode = "download"
            return
        self._boot_flash()

    def _boot_flash(self):
        ok, word = esp32_chip.boots_from_flash(self.flash)
        if not ok:
            self.mode = "halted"
            self._emit(b"invalid header: 0x%08x\r\n" % word * 3)
            return
        self.mode = "run"
        env = micropython_env(self.server, True, dict(self.env, CIVICEDGE_UNIQUE_ID=self.mac.hex()))
        args = [micropython_binary(), "-X", "heapsize=" + self.heapsize, str(_AGENT),
                "--flash", str(self.flash.path), "--offset", str(VFS_OFFSET), "--blocks", str(VFS_BLOCKS),
                "--boot-ms", str(self.boot_ms), "--console", "127.0.0.1:%d" % self._listener.getsockname()[1]]
        self.proc = subprocess.Popen(args, env=env, cwd=pathlib.Path(__file__).resolve().parents[1],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._listener.settimeout(30)
        try:
            conn, _ = self._listener.accept()
        except socket.timeout:
            self.proc.kill()
            raise RuntimeError("the MicroPython process did not start: %s" % self.proc.stdout.read(4000))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn = conn
        if self._pending:
            conn.sendall(self._pending)
            self._pending = b""
        t = threading.Thread(target=self._read_agent, args=(self.proc,), daemon=True)
        t.start()
        self._threads.append(t)

    def _power_off(self):
        proc, self.proc = self.proc, None
        conn, self._conn = self._conn, None
        self.mode = "off"
        self.rom = None
        self._pending = b""
        if proc is not None:
            proc.kill()
            proc.wait()
        if conn is not None:
            conn.close()

    def _read_agent(self, proc):
        out = proc.stdout
        while True:
            data = out.read1(4096)
            if not data:
                return
            with self._lock:
                current = proc is self.proc
            if current:
                self._emit(data)

    def _read_host(self, pty):
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([pty.master], [], [], 0.05)
                if not r:
                    continue
                data = os.read(pty.master, 4096)
            except (OSError, ValueError):
                if self._stop.is_set():
                    return
                time.sleep(0.01)  # no tool has the port open (EIO): wait for one
                continue
            if not data:
                continue
            self._from_host(data)

    def _from_host(self, data):
        with self._lock:
            mode, cut = self.mode, False
            pending = self._unplug_after
            if pending is not None and pending[1] in (None, mode):
                if len(data) >= pending[0]:
                    data, cut, self._unplug_after = data[:pending[0]], True, None
                else:
                    pending[0] -= len(data)
            self.received += len(data)
            if mode == "download" and self.rom is not None:
                rom = self.rom
                reply = rom.feed(data)
            elif mode == "run":
                if self._conn is not None:
                    try:
                        self._conn.sendall(data)
                    except OSError:
                        pass
                else:
                    self._pending += data
                reply = b""
            else:
                reply = b""
        if reply:
            self._emit(reply)
        if mode == "download" and self.rom is not None and self.rom.exit is not None:
            self._leave_loader()
        if cut:
            threading.Thread(target=self.unplug, daemon=True).start()

    def _leave_loader(self):
        with self._lock:
            how = self.rom.exit
            self.rom = None
            if how == "run":  # the ROM jumps to the flash bootloader, no reset
                self.chip.strap = esp32_chip.STRAP_FLASH
                self._boot_flash()
            elif how == "reboot":  # a software reset: the latched straps bring the loader back
                self._emit(esp32_chip.boot_log(12, True))
                self.rom = esp_rom.RomLoader(self.chip)
            else:
                self.mode = "halted"
