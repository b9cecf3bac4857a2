"""``civicedge flash``: put one inventory device's firmware on a board and check it on site.

Theory of operation
-------------------
``prepare`` checks everything it can before the port is touched (the inventory entry, the
site's bundle for it and its manifest, the device's secrets file, the MicroPython image) and
``plan_lines`` says what will happen (``--dry-run`` stops there). ``run`` then:

1. **Chip** (``esptool``, as a library): identify the chip and read its MAC; erase the whole
   flash if asked; write the MicroPython image at 0x1000 (compressed) — esptool verifies it
   with the loader's MD5. On a port with modem lines (a USB-serial bridge, ``rfc2217://``)
   esptool resets the board into its ROM loader and back by DTR/RTS, with its flasher stub.
   On one without (a pty, ``socket://``, a board without the auto-reset circuit) it cannot:
   the board must already be in download mode (hold BOOT, tap EN); the ROM loader does the
   work (no stub: the ESP32's stub cannot start the firmware without a reset line), erasing
   with FLASH_BEGIN over the whole chip, and its FLASH_END "run user code" starts the
   firmware. With no image to write, a board that is already running MicroPython is
   identified over its REPL instead (``machine.unique_id()`` is the base MAC).
2. **Copy** (``mpremote``'s transport): the bundle (``.mpy`` tree, ``config.json``,
   ``manifest.json``) and ``secrets.json``. The board hashes what it holds (SHA-256) and only
   files that differ from the manifest are sent, each to ``<path>.new`` then renamed, so a
   cable pulled mid-copy never leaves a half-written file under its real name; ``main.py``
   is removed first and written last, so an interrupted copy leaves a board that boots to
   the REPL instead of running half-new code; ``manifest.json`` goes last of all. Stale
   code (``.py``/``.mpy`` not in the manifest, which could shadow a module) is removed; the
   node's data files are not touched. A rerun therefore repairs any interruption. The
   watchdog (which cannot be stopped on an ESP32 once the old firmware started it) is fed
   with the node's ``watchdog_ms`` throughout.
3. **Boot**: ``machine.reset()``; the node runs for ``boot_wait_s`` while the console is
   watched for a traceback or ``CONFIG ERROR``.
4. **Self-test**: ``app.selftest.run()`` over the raw REPL (``firmware/app/selftest.py``):
   the node's boot count must have grown (the flashed firmware booted), then the I2C scan,
   one reading per sensor, the link. A pass/fail table names every failure.
5. **Register**: the result goes in ``SITE_DIR/assets.csv`` (``civicedge.assets``); the board
   is reset once more so the node starts working.

Any serial failure (the port vanishing mid-copy, a board that stops answering) is a
``FlashError`` saying what was being done and that a rerun repairs it.
"""

import hashlib
import json
import os
import pathlib

from civicedge import assets
from civicedge import firmware_build as fb
from civicedge import inventory as inv_mod
from civicedge.flash_board import (ESP_ROM_BAUD, Board, BoardCodeError, FlashError, _first_line,  # noqa: F401
                                   copy_bundle, result_rows, selftest, watch_boot)

BOOTLOADER_OFFSET = 0x1000  # esptool ESP32ROM.BOOTLOADER_FLASH_OFFSET
IMAGE_MAGIC = 0xE9  # esptool ESPLoader.ESP_IMAGE_MAGIC
MAX_IMAGE = 4 * 1024 * 1024 - BOOTLOADER_OFFSET


class Job:
    """Everything ``run`` needs, checked by ``prepare``."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def prepare(port, inventory, device_id, site_dir=None, firmware=None, erase=False, baud=ESP_ROM_BAUD,
            boot_wait_s=5.0):
    """A checked ``Job``; ``FlashError`` (or ``InventoryError``) naming what is missing."""
    inv = inv_mod.import_csv(inventory) if str(inventory).lower().endswith(".csv") \
        else inv_mod.load(inventory)
    try:
        device = inv.device(device_id)
    except KeyError:
        raise FlashError("%s: no device %r (devices: %s)" % (inventory, device_id,
                                                            ", ".join(d.id for d in inv.devices[:10])))
    site = pathlib.Path(site_dir) if site_dir else pathlib.Path(inventory).resolve().parent / inv.site_id
    bundle = site / "bundles" / device.id
    if not (bundle / "manifest.json").is_file():
        raise FlashError("%s: no firmware bundle for %s: run `civicedge provision apply --inventory %s` first"
                         % (bundle, device.id, inventory))
    manifest = json.loads((bundle / "manifest.json").read_text())
    for key, want in (("device_id", device.id), ("board", device.board), ("profile", device.profile),
                      ("link", device.link)):
        if manifest.get(key) != want:
            raise FlashError("%s was built for %s %r, the inventory says %r: run `civicedge provision apply` "
                             "again" % (bundle, key, manifest.get(key), want))
    bad = fb.verify_manifest(bundle)
    if bad:
        raise FlashError("%s: %s no longer match(es) the manifest (edited by hand?): rebuild it with "
                         "`civicedge provision apply`" % (bundle, ", ".join(bad[:5])))
    secrets = site / "secrets" / "devices" / (device.id + ".json")
    if not secrets.is_file():
        raise FlashError("%s: the device's secrets are missing: run `civicedge provision apply` first" % secrets)
    if erase and firmware is None:
        raise FlashError("--erase also erases MicroPython: give --firmware MICROPYTHON.bin to write it back")
    image = image_sha = None
    if firmware is not None:
        image = pathlib.Path(firmware).read_bytes()
        if not image or image[0] != IMAGE_MAGIC:
            raise FlashError("%s is not an ESP32 firmware image (first byte 0x%02x, not 0x%02x): give the "
                             "MicroPython .bin for ESP32" % (firmware, image[0] if image else 0, IMAGE_MAGIC))
        if len(image) > MAX_IMAGE:
            raise FlashError("%s: %d bytes do not fit a 4 MB flash after 0x1000" % (firmware, len(image)))
        image_sha = _sha256(image)
    return Job(port=port, inventory=inventory, inv=inv, device=device, site_dir=site, bundle=bundle,
               manifest=manifest, secrets_path=secrets, firmware=firmware, image=image, image_sha=image_sha,
               erase=erase, baud=baud, boot_wait_s=boot_wait_s,
               watchdog_ms=json.loads((bundle / "config.json").read_text())["watchdog_ms"])


def plan_lines(job):
    """What ``run`` will do, one line per step (the ``--dry-run`` output)."""
    d, m = job.device, job.manifest
    cfg = json.loads((job.bundle / "config.json").read_text())
    sensors = ", ".join("%s (%s at 0x%02x)" % (s["name"], s["part"], s["address"]) for s in cfg["sensors"])
    size = sum(e["bytes"] for e in m["files"])
    lines = ["flash %s: %s on %s, %s link, %s" % (d.id, d.profile, d.board, d.link, d.location.describe() or "-"),
             "  port %s: reset by DTR/RTS if it has them, else put the board in download mode first "
             "(hold BOOT, tap EN)" % job.port,
             "  1. identify the chip and read its MAC (esptool)"]
    n = 2
    if job.erase:
        lines.append("  %d. erase the whole flash (this also deletes the node's stored readings)" % n)
        n += 1
    if job.image is not None:
        lines.append("  %d. write %s (%d bytes, sha256 %s) at 0x%x and verify it" % (
            n, job.firmware, len(job.image), job.image_sha[:16], BOOTLOADER_OFFSET))
        n += 1
    lines += ["  %d. copy %d files (%d bytes, firmware %s) from %s, and %s as secrets.json; files already "
              "on the board are compared by SHA-256 and kept" % (n, len(m["files"]) + 1, size,
                                                                 m["firmware_version"][:16], job.bundle,
                                                                 job.secrets_path),
              "  %d. reboot, let the node run %gs, then its self-test: I2C scan, a reading from %s; link %s"
              % (n + 1, job.boot_wait_s, sensors, d.link),
              "  %d. record the result in %s" % (n + 2, assets.register_path(job.site_dir))]
    return lines


# -- the chip (esptool) -------------------------------------------------------------------------
def has_modem_lines(port):
    """True if the port can drive DTR/RTS (esptool's automatic reset): a USB-serial bridge or
    ``rfc2217://``; False for a pty, ``socket://`` or a bridge without them (ENOTTY/EINVAL)."""
    import serial

    if port.startswith("socket://"):
        return False
    if port.startswith("rfc2217://"):
        return True
    try:
        with serial.Serial(port) as s:
            s.cts  # TIOCMGET: fails where there are no modem lines
        return True
    except (OSError, serial.SerialException):
        return False


def identify_and_write(job, say):
    """Step 1 with esptool; returns {"chip", "mac", "via"}. ``FlashError`` if the ROM loader
    cannot be reached (and the image or erase needs it)."""
    from esptool.cmds import attach_flash, detect_chip, detect_flash_size, erase_flash, reset_chip, run_stub
    from esptool.cmds import write_flash
    from esptool.util import FatalError, flash_size_bytes

    if "://" not in job.port and os.name == "posix" and not os.path.exists(job.port):
        raise FlashError("no port %s: is the board plugged in? (ls /dev/serial/by-id/)" % job.port)
    modem = has_modem_lines(job.port)
    needs_rom = job.erase or job.image is not None
    if job.baud != ESP_ROM_BAUD and not modem:
        say("chip: --baud is ignored: the ROM loader alone stays at %d on a port without DTR/RTS" % ESP_ROM_BAUD)
    say("chip: connecting to the ROM loader on %s (%s)" % (
        job.port, "automatic reset by DTR/RTS" if modem else "no DTR/RTS: the board must be in download mode"))
    try:
        esp = detect_chip(job.port, ESP_ROM_BAUD, "default-reset" if modem else "no-reset",
                          connect_attempts=7 if modem or needs_rom else 2)
    except (FatalError, OSError) as e:
        if not needs_rom:
            return None
        raise FlashError("no answer from the ESP32 ROM loader on %s (%s).\n%s" % (job.port, _first_line(e), (
            "Check the cable and that no other program has the port open." if modem else
            "This port cannot reset the board (no DTR/RTS lines): hold BOOT, press and release EN, "
            "release BOOT, then run this again.")))
    try:
        info = {"chip": esp.get_chip_description(), "mac": ":".join("%02x" % b for b in esp.read_mac()),
                "via": "esptool"}
        say("chip: %s, MAC %s" % (info["chip"], info["mac"]))
        if modem:
            esp = run_stub(esp)
            if job.baud != ESP_ROM_BAUD:
                esp.change_baud(job.baud)
        attach_flash(esp)
        if job.erase:
            say("chip: erasing the whole flash")
            if esp.IS_STUB:
                erase_flash(esp)
            else:  # the ROM loader erases what FLASH_BEGIN names (no ERASE_FLASH without the stub)
                esp.flash_begin(flash_size_bytes(detect_flash_size(esp) or "4MB"), 0)
        if job.image is not None:
            say("chip: writing %s" % job.firmware)
            write_flash(esp, [(BOOTLOADER_OFFSET, job.image)], compress=True)
        reset_chip(esp, "hard-reset" if modem else "soft-reset")  # ROM: FLASH_END "run user code"
    except (FatalError, OSError) as e:  # OSError: the port went away (pyserial's SerialException)
        raise FlashError("esptool: %s. Run the same command again (put the board back in download mode "
                         "first if its port has no DTR/RTS)" % _first_line(e))
    finally:
        try:
            esp._port.close()
        except OSError:
            pass
    return info


def run(job, say):
    """Steps 1-5 (see the module docstring); returns {"ok", "rows", "chip", "mac", "register"}.
    Raises ``FlashError`` when a step cannot be done (nothing is recorded then)."""
    info = identify_and_write(job, say)
    board = Board(job.port, say)
    try:
        if info is None:  # no ROM loader and nothing to write: ask MicroPython
            out = board.exec("import machine, binascii, sys\nprint(binascii.hexlify(machine.unique_id()).decode(), "
                             "getattr(sys.implementation, '_machine', sys.platform))", "identifying the chip")
            mac, _, machine_name = out.strip().partition(" ")
            info = {"chip": machine_name, "mac": ":".join(mac[i:i + 2] for i in range(0, 12, 2)), "via": "repl"}
            say("chip: %s, MAC %s (read over the REPL: esptool could not reach the ROM loader)"
                % (info["chip"], info["mac"]))
        copied = copy_bundle(board, job, say)
        say("copy: %d file(s) written, %d already there, %d stale removed"
            % (len(copied["copied"]), copied["kept"], len(copied["removed"])))
        before = json.loads(board.exec("from app.state import NodeState\nprint(NodeState(os.getcwd() or '/')"
                                       ".boot_count)", "reading the node's boot count"))
        board.reset()
    except BaseException:
        board.close()
        raise
    say("boot: the node runs for %gs" % job.boot_wait_s)
    console = watch_boot(job.port, job.boot_wait_s)
    board = Board(job.port, say)
    try:
        checks, end, crash = selftest(board, say)
        board.reset()  # the node starts working
    except BaseException:
        board.close()
        raise
    rows = result_rows(checks, end, crash, console, before, job.manifest["firmware_version"], job.boot_wait_s)
    ok = all(r[0] for r in rows)
    failures = ["%s: %s" % (r[2], r[3]) for r in rows if not r[0]]
    row = assets.row_for(job.device, info["chip"], info["mac"], job.manifest, job.image_sha, ok, failures)
    path = assets.record(job.site_dir, row)
    return {"ok": ok, "rows": rows, "chip": info["chip"], "mac": info["mac"], "register": path}
