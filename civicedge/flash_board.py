"""The board side of ``civicedge flash`` (see ``civicedge.flash``): a raw-REPL session through
mpremote's ``SerialTransport``, the idempotent copy of a bundle, watching the boot, and the
node's self-test (``firmware/app/selftest.py``) with its pass/fail table.

Code sent to the board runs on the ESP32 port as on the virtual board: only ``os``,
``hashlib``, ``binascii``, ``json`` and ``machine``; paths are relative to the current
directory (the flash's root on the chip, ``/flash`` under the simulator).
"""

import base64
import hashlib
import json
import time

BOOT_TROUBLE = ("Traceback", "CONFIG ERROR", "OSError", "ImportError", "MemoryError")  # in the boot console
CHUNK = 2048  # bytes per exec when copying (sent base64: the raw-paste window paces it)
ESP_ROM_BAUD = 115200  # the ESP32 ROM's and MicroPython's UART0 rate


class FlashError(Exception):
    """Something stopped the flash; the message says what and what to do."""


class BoardCodeError(FlashError):
    """Code run on the board raised (its last traceback line is the message)."""


def _last_line(text):
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no message)"


def _first_line(e):
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


_HELPERS = r"""
import os, hashlib, binascii, json
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(memoryview(b)[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
def _walk(d, out):
    for e in (os.ilistdir(d) if d else os.ilistdir()):
        p = d + '/' + e[0] if d else e[0]
        if e[1] == 0x4000:
            _walk(p, out)
        else:
            out.append(p)
    return out
def _md(p):
    q = ''
    for part in p.split('/')[:-1]:
        q = q + '/' + part if q else part
        try:
            os.mkdir(q)
        except OSError:
            pass
def _rm(p):
    try:
        os.remove(p)
    except OSError:
        pass
def _mv(a, b):
    try:
        os.rename(a, b)
    except OSError:
        _rm(b)
        os.rename(a, b)
_a2b = binascii.a2b_base64
"""


class Board:
    """A raw-REPL session with the board through mpremote's ``SerialTransport``; serial and
    transport errors become ``FlashError`` naming ``doing``."""

    def __init__(self, port, say, open_s=15.0):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port, self.say, self.doing = port, say, "connecting to MicroPython"
        self._errors = (OSError, TransportError)
        deadline = time.monotonic() + open_s
        while True:
            try:
                self.t = SerialTransport(port, baudrate=ESP_ROM_BAUD)
                try:
                    self.t.enter_raw_repl(soft_reset=True)
                    break
                except self._errors:
                    self.t.close()
                    raise
            except self._errors as e:
                if time.monotonic() > deadline:
                    raise FlashError("no MicroPython REPL on %s (%s): is MicroPython on the board? Give "
                                     "--firmware MICROPYTHON.bin to write it" % (port, _first_line(e)))
                time.sleep(0.5)

    def exec(self, code, doing=None, timeout=10, consumer=None):
        self.doing = doing or self.doing
        try:
            out, err = self.t.exec_raw(code, timeout=timeout, data_consumer=consumer)
        except self._errors as e:
            raise FlashError("lost the board on %s while %s (%s).\nReconnect it and run the same command again: "
                             "what is already on the board is checked and kept, the rest is copied."
                             % (self.port, self.doing, _first_line(e)))
        if err:
            raise BoardCodeError("the board failed while %s: %s"
                                 % (self.doing, _last_line(err.decode(errors="replace"))))
        return out.decode(errors="replace")

    def reset(self):
        """``machine.reset()`` and close (the board reboots into its firmware)."""
        try:
            self.t.exec_raw_no_follow("import machine\nmachine.reset()")
        except self._errors:
            pass
        self.close()

    def close(self):
        try:
            self.t.close()
        except self._errors:
            pass


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def copy_bundle(board, job, say):
    """Step 2; returns {"copied": [...], "removed": [...], "kept": n}."""
    wanted = {}
    for e in job.manifest["files"]:
        wanted[e["path"]] = (job.bundle / e["path"], e["sha256"])
    secret = job.secrets_path.read_bytes()
    wanted["secrets.json"] = (job.secrets_path, _sha256(secret))
    manifest = (job.bundle / "manifest.json").read_bytes()
    wanted["manifest.json"] = (job.bundle / "manifest.json", _sha256(manifest))
    board.exec(_HELPERS + "_wd = __import__('machine').WDT(timeout=%d)\n" % job.watchdog_ms,
               "preparing the copy")
    held = json.loads(board.exec("_a = _walk('', [])\nprint(json.dumps({'all': _a, 'hash': dict((p, _h(p)) "
                                 "for p in _a if p in %r)}))" % sorted(wanted), "reading what the board holds"))
    todo = [p for p in sorted(wanted) if held["hash"].get(p) != wanted[p][1]]
    stale = [p for p in held["all"] if p not in wanted and (p.endswith((".py", ".mpy", ".new")))]
    if todo:
        first = [p for p in ("manifest.json", "main.py") if p in held["hash"]]
        if first:  # an interrupted copy must not leave a board running half-new code
            board.exec("".join("_rm(%r)\n" % p for p in first), "preparing the copy")
        order = [p for p in todo if p not in ("main.py", "manifest.json")] + ["main.py", "manifest.json"]
        total = sum(len(wanted[p][0].read_bytes()) for p in order)
        sent = 0
        for i, path in enumerate(order):
            data = secret if path == "secrets.json" else wanted[path][0].read_bytes()
            board.doing = "copying %s (file %d of %d)" % (path, i + 1, len(order))
            board.exec("_wd.feed()\n_md(%r)\n_f = open(%r, 'wb')" % (path, path + ".new"))
            for k in range(0, len(data), CHUNK):
                board.exec("_f.write(_a2b(%r))" % base64.b64encode(data[k:k + CHUNK]))
            board.exec("_f.close()\n_mv(%r, %r)" % (path + ".new", path))
            sent += len(data)
            say("copy: %3d%% %s (%d bytes)" % (100 * sent // max(1, total), path, len(data)))
    for p in stale:
        board.exec("_rm(%r)" % p, "removing stale %s" % p)
    check = json.loads(board.exec("print(json.dumps(dict((p, _h(p)) for p in %r)))" % sorted(wanted),
                                  "verifying the copy"))
    wrong = [p for p in sorted(wanted) if check.get(p) != wanted[p][1]]
    if wrong:
        raise FlashError("after the copy %s still differ(s) on the board: run the same command again"
                         % ", ".join(wrong[:5]))
    copied = order if todo else []
    return {"copied": copied, "removed": stale, "kept": len(wanted) - len(copied)}


def watch_boot(port, seconds):
    """What the board prints for ``seconds`` after its reset (text), or "" if the port
    cannot be read."""
    import serial

    out = b""
    deadline = time.monotonic() + seconds
    try:
        with serial.Serial(port, ESP_ROM_BAUD, timeout=0.1) as s:
            while time.monotonic() < deadline:
                out += s.read(4096)
    except (OSError, serial.SerialException):
        pass
    return out.decode(errors="replace")


def parse_selftest(text):
    """(checks, end) from the self-test's ``SELFTEST``/``SELFTEST-END`` lines."""
    checks, end = [], None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("SELFTEST "):
            checks.append(json.loads(line[9:]))
        elif line.startswith("SELFTEST-END "):
            end = json.loads(line[13:])
    return checks, end


def describe(check):
    """The table's (check, what, result detail) for one self-test line."""
    kind, name = check["check"], check.get("name", "")
    if kind == "sensor":
        what = "%s (%s at 0x%02x, bus %d)" % (name, check["part"], check["address"], check["bus"])
        detail = check.get("detail") or ", ".join("%s=%s%s" % (q, round(v, 2) if isinstance(v, float) else v,
                                                                "" if f == "ok" else " [%s]" % f)
                                                  for q, v, f in check.get("values", []))
        return "sensor", what, detail
    if kind == "i2c":
        return "i2c scan", name, "found " + (", ".join("0x%02x" % a for a in check.get("found", [])) or "nothing")
    if kind == "firmware":
        return "firmware", "boot count", "%s (last: %s)" % (check.get("boot_count"), check.get("boot_reason"))
    if kind == "config":
        return "config", "config.json, secrets.json", check.get("detail") or "valid"
    if kind == "battery":
        return "battery", name, "%.3f V" % check["volts"]
    return kind, name, check.get("detail", "")


def format_table(rows):
    """Rows of (ok, check, what, detail) as an aligned text table."""
    width = [max([len(r[i]) for r in rows] + [len(h)]) for i, h in ((1, "CHECK"), (2, "WHAT"))]
    lines = ["%-4s  %-*s  %-*s  %s" % ("", width[0], "CHECK", width[1], "WHAT", "RESULT")]
    for ok, check, what, detail in rows:
        lines.append("%-4s  %-*s  %-*s  %s" % ("PASS" if ok else "FAIL", width[0], check, width[1], what, detail))
    return "\n".join(lines)


def selftest(board, say, timeout_s=120):
    """Run ``app.selftest`` on the board; (checks, end), lines shown as they come."""
    buf = bytearray()

    def consume(b):
        buf.extend(b)
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            text = line.decode(errors="replace").strip()
            if text.startswith("SELFTEST "):
                kind, what, detail = describe(json.loads(text[9:]))
                say("self-test: %s %s: %s" % (kind, what, detail))
            consume.text += text + "\n"

    consume.text = ""
    crash = None
    try:
        board.exec("import app.selftest\napp.selftest.run()", "running the self-test", timeout=timeout_s,
                   consumer=consume)
    except BoardCodeError as e:  # the self-test itself raised: a failed check, not a lost board
        crash = str(e)
    checks, end = parse_selftest(consume.text + buf.decode(errors="replace"))
    return checks, end, crash




def result_rows(checks, end, crash, console, boots_before, firmware_version, boot_wait_s):
    """The table's rows (ok, check, what, detail): did the flashed firmware boot (its boot
    count grew and the console showed no trouble), is it the bundle's version, then each
    self-test check."""
    trouble = [line.strip() for line in console.splitlines() if any(t in line for t in BOOT_TROUBLE)]
    boots = [c for c in checks if c["check"] == "firmware"]
    booted = bool(boots) and boots[0].get("boot_count", 0) > boots_before and not trouble
    rows = [(booted, "boot", "flashed firmware",
             "started (boot %s, %s)" % (boots[0]["boot_count"], boots[0]["boot_reason"]) if booted
             else "; ".join(trouble[:2]) or "did not start within %gs" % boot_wait_s)]
    version = (end or {}).get("firmware_version")
    rows.append((version == firmware_version, "firmware", "version", (version or "unknown")[:16] + (
        "" if version == firmware_version else " (bundle: %s)" % firmware_version[:16])))
    rows += [(c["ok"],) + describe(c) for c in checks if c["check"] != "firmware"]
    if end is None:
        rows.append((False, "self-test", "app.selftest", crash or "did not finish"))
    return rows
