"""``civicedge flash`` (put a device's firmware on a board and check it), ``civicedge
console`` (a node's live log and readings over serial) and ``civicedge assets export`` (the
asset register). The work is in ``civicedge.flash`` and ``civicedge.assets``; the field
engineer's guide is docs/flashing.md."""

import datetime
import json
import pathlib
import sys
import time

from civicedge import assets
from civicedge.flash import ESP_ROM_BAUD, FlashError, plan_lines, prepare, run
from civicedge.flash_board import format_table
from civicedge.inventory import InventoryError


def register(sub):
    f = sub.add_parser("flash", help="flash a board for an inventory device and run its self-test",
                       description="Write MicroPython (optional), copy the device's firmware bundle and secrets, "
                                   "reboot, run the node's self-test and record it in the asset register. "
                                   "See docs/flashing.md.")
    f.add_argument("--port", required=True, help="serial port (/dev/ttyUSB0, COM3, rfc2217://host:port)")
    f.add_argument("--inventory", required=True, type=pathlib.Path, help="the site inventory (TOML)")
    f.add_argument("--device", required=True, help="the device id in the inventory")
    f.add_argument("--site-dir", type=pathlib.Path,
                   help="the provisioned site directory (default: <inventory dir>/<site id>)")
    f.add_argument("--firmware", type=pathlib.Path, help="a MicroPython .bin for ESP32 to write first")
    f.add_argument("--erase", action="store_true", help="erase the whole flash first (loses stored readings)")
    f.add_argument("--dry-run", action="store_true", help="print the plan; touch nothing")
    f.add_argument("--baud", type=int, default=ESP_ROM_BAUD, help="esptool's baud rate (default %(default)s)")
    f.add_argument("--boot-wait", type=float, default=5.0, metavar="SECONDS",
                   help="how long the node runs after the reboot before its self-test (default %(default)s)")
    f.set_defaults(func=_flash)

    c = sub.add_parser("console", help="a node's live log and readings over serial",
                       description="Print what a node sends on a serial port: log lines as they are, node "
                                   "frames (protocol.serial_link) decoded into readings — verified with the "
                                   "device key when --site-dir (or --secrets) gives it.")
    c.add_argument("--port", required=True)
    c.add_argument("--baud", type=int, default=ESP_ROM_BAUD)
    c.add_argument("--site-dir", type=pathlib.Path, help="device keys from SITE_DIR/secrets/devices/*.json")
    c.add_argument("--secrets", type=pathlib.Path, action="append", default=[],
                   help="a device's secrets.json (repeatable); its id is the file name")
    c.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    c.set_defaults(func=_console)

    a = sub.add_parser("assets", help="the asset register (what is installed where)")
    asub = a.add_subparsers(dest="assets_command", metavar="COMMAND")
    e = asub.add_parser("export", help="write the register as CSV for the council's records")
    e.add_argument("--site-dir", required=True, type=pathlib.Path)
    e.add_argument("--out", type=pathlib.Path, help="output file (default: standard output)")
    e.set_defaults(func=_export)
    a.set_defaults(func=lambda args: (a.print_help(), 2)[1])


def _say(msg):
    print(msg, flush=True)


def _flash(args):
    try:
        job = prepare(args.port, args.inventory, args.device, args.site_dir, args.firmware, args.erase,
                      args.baud, args.boot_wait)
    except (FlashError, InventoryError, OSError, ValueError) as e:
        print("civicedge flash: %s" % e, file=sys.stderr)
        return 2
    for line in plan_lines(job):
        _say(line)
    if args.dry_run:
        _say("dry run: nothing was done")
        return 0
    try:
        result = run(job, _say)
    except FlashError as e:
        print("civicedge flash: %s" % e, file=sys.stderr)
        return 1
    _say("")
    _say(format_table(result["rows"]))
    _say("")
    _say("%s: %s (%s, MAC %s); recorded in %s" % (job.device.id, "PASS" if result["ok"] else "FAIL",
                                                   result["chip"], result["mac"], result["register"]))
    return 0 if result["ok"] else 1


def _export(args):
    try:
        text, n = assets.export(args.site_dir, args.out)
    except (assets.AssetError, OSError) as e:
        print("civicedge assets export: %s" % e, file=sys.stderr)
        return 1
    if args.out is None:
        sys.stdout.write(text)
    else:
        print("%s: %d device(s)" % (args.out, n), file=sys.stderr)
    return 0


# -- the console ------------------------------------------------------------------------------
def site_keys(site_dir=None, secrets_files=()):
    """{device_id: device key bytes} from a site directory's secrets and/or secrets files."""
    files = list(pathlib.Path(site_dir, "secrets", "devices").glob("*.json")) if site_dir else []
    keys = {}
    for path in files + [pathlib.Path(p) for p in secrets_files]:
        try:
            keys[path.stem] = bytes.fromhex(json.loads(path.read_text())["device_key_hex"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a node's secrets file
    return keys


class ConsoleDecoder:
    """Splits a serial stream into log lines and node packets (``00 COBS 00``) and decodes
    the packets: ``feed(bytes)`` returns the lines to print. ``keys``: {device_id: key}."""

    MAX_PACKET = 2 * 4096 + 16  # bigger than any COBS-encoded frame: it was not one

    def __init__(self, keys):
        self.keys = keys
        self.text = bytearray()
        self.packet = None

    def feed(self, data):
        out = []
        for b in data:
            if self.packet is None:
                if b == 0:
                    self.packet = bytearray()
                    if self.text.strip():
                        out.append(self._line())
                    self.text = bytearray()
                elif b == 10:
                    out.append(self._line())
                    self.text = bytearray()
                else:
                    self.text.append(b)
            elif b == 0:
                if self.packet:
                    out += self._packet(bytes(self.packet))
                    self.packet = None
            else:
                self.packet.append(b)
                if len(self.packet) > self.MAX_PACKET:  # not a packet after all
                    self.text += self.packet
                    self.packet = None
        return out

    def _line(self):
        return bytes(self.text).decode(errors="replace").rstrip("\r")

    def _packet(self, raw):
        from protocol import frame, serial_link

        frames = serial_link.SerialDecoder().feed(b"\x00" + raw + b"\x00")
        if not frames:
            return ["[%d bytes that are not a node packet]" % len(raw)]
        asked = []

        def key_for(device_id):
            asked.append(device_id)
            return self.keys.get(device_id)

        try:
            f = frame.decode_frame(frames[0], key_for)
        except frame.FrameError as e:
            who = asked[0] if asked else "?"
            if e.reason == "unknown_device":
                return ["[frame from %s, %d bytes: no key to verify it (give --site-dir)]" % (who, len(frames[0]))]
            return ["[frame from %s REFUSED: %s]" % (who, e)]
        if f.type == frame.TYPE_ACK:
            return ["[ack to %s: epoch %d through seq %d]" % (f.device_id, f.boot_epoch, f.seq_through)]
        return ["[frame from %s: epoch %d, seq %d..%d, verified]" % (
            f.device_id, f.boot_epoch, f.first_seq, f.first_seq + f.count - 1)] + self._records(f.payload)

    @staticmethod
    def _records(payload):
        import cbor2

        from protocol.senml_decode import decode_pack

        try:
            pack = decode_pack(cbor2.loads(payload))
        except (ValueError, cbor2.CBORError) as e:
            return ["  (payload not a civicedge pack: %s)" % e]
        lines = []
        for r in pack["records"]:
            t = r.get("t")
            when = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") \
                if isinstance(t, (int, float)) else "time unsynced"
            values = ", ".join("%s=%s%s" % (q, v, "" if f in (None, "ok") else " [%s]" % f)
                               for q, v, f in r.get("values", []))
            lines.append("  %s seq %s %s: %s" % (r.get("kind") or "reading", r.get("seq"), when, values or
                                                 ", ".join("%s=%s" % kv for kv in sorted(r.items())
                                                           if kv[0] not in ("seq", "t", "kind"))))
        return lines


def _console(args):
    import serial

    decoder = ConsoleDecoder(site_keys(args.site_dir, args.secrets))
    deadline = time.monotonic() + args.seconds if args.seconds else None
    try:
        port = serial.serial_for_url(args.port, args.baud, timeout=0.2)
    except (OSError, serial.SerialException) as e:
        print("civicedge console: cannot open %s: %s" % (args.port, e), file=sys.stderr)
        return 1
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                data = port.read(4096)
            except (OSError, serial.SerialException) as e:
                print("civicedge console: %s disconnected (%s)" % (args.port, e), file=sys.stderr)
                return 1
            for line in decoder.feed(data):
                print(line, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        port.close()
    return 0
