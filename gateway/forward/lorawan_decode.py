"""What crosses the air, decoded: the gateway's uplink envelope (the upstream's side, and the
tests') and the downlink commands (the gateway's side). Formats: ``gateway.forward.
lorawan_envelope`` (which encodes uplinks) and docs/gateway-lorawan-upstream.md.

``decode_uplink(payload, devices, rules)`` needs no state from earlier uplinks (a device or a
rule it cannot name comes back as ``#<hex of its hash>``); ``parse_downlink(port, payload)``
gives the commands of one downlink, all or nothing; ``Settings`` is what the accepted commands
changed. Both decoders raise only ``EnvelopeError`` whatever the bytes.
"""

import math
from collections import namedtuple

from gateway.forward.lorawan_envelope import (
    DOWNLINK_PORT, KINDS, SEC_DIRECTORY, SEC_EVENT_RECORD, SEC_GAP, SEC_PACK, SEC_PACK_EVENTS, SEC_STATUS,
    SEVERITIES, STATUS_KEYS, VERSION, EnvelopeError, device_hash, rule_hash)
from protocol import lorapack, quantities
from protocol.lorapack import EPOCH_S, PackError
from protocol.lorapack_decode import _Reader, _unzz, unpack


def _wire_value(code, w):
    entry = lorapack._BY_CODE.get(code)
    if entry is None or entry[1] is None:
        raise EnvelopeError("event value for quantity code %d, which has no resolution" % code)
    return w if entry[1] == 1 else w / entry[1]


def _hash4(r):
    return bytes(r.byte() for _ in range(4))


def _decode_event(r, base_t):
    """One event; ``device_id`` is the subject's hash (None: the section's device) and
    ``rule`` the rule hash, both named at the end of ``_decode``."""
    head = r.byte()
    rule = r.byte() << 8 | r.byte()
    subject = _hash4(r) if head & 0x10 else None
    code = r.varint()
    ev = {"kind": KINDS[head & 3], "rule": rule, "device_id": subject,
          "quantity": quantities.BY_CODE[code][1] if code in quantities.BY_CODE else None,
          "value": None, "at": None, "since": None, "severity": SEVERITIES[head >> 2 & 3]}
    if head & 0x20:
        ev["value"] = _wire_value(code, _unzz(r.varint()))
    ref = base_t
    if head & 0x40:
        ev["at"] = ref = base_t + _unzz(r.varint())
    if head & 0x80:
        ev["since"] = ref - _unzz(r.varint())
    return ev


def decode_uplink(payload, devices=(), rules=()):
    """Decode an envelope: ``{"records": [(device_id, boot_epoch, record)], "gaps": [dict],
    "status": dict or None, "directory": {device_id: hash4}}``; a record's alarm events are
    in its ``"alarms"`` list, a gateway event record is ``{"seq", "t", "kind": "event",
    "alarms"}``. Devices and rules are named from ``devices`` / ``rules`` (ids) and the
    uplink's own directory, else ``#<hex of the hash>``. Raises ``EnvelopeError`` for
    anything malformed, nothing else."""
    if not isinstance(payload, (bytes, bytearray)):
        raise EnvelopeError("payload must be bytes")
    try:
        return _decode(bytes(payload), devices, rules)
    except PackError as e:  # the reader's and unpack's error: truncated, bad varint...
        raise EnvelopeError("malformed envelope: %s" % e) from None


def _decode(payload, devices, rules):
    r = _Reader(payload)
    if r.byte() != VERSION:
        raise EnvelopeError("unknown envelope version %d" % payload[0])
    names = {device_hash(d): d for d in devices}
    out = {"records": [], "gaps": [], "status": None, "directory": {}}
    found = []  # (hash4, epoch, records) and (hash4, gap dict), named at the end
    while r.pos < len(payload):
        kind = r.byte()
        if kind == SEC_DIRECTORY:
            for _ in range(r.varint()):
                h, n = _hash4(r), r.byte()
                if r.pos + n > len(payload):
                    raise EnvelopeError("directory entry cut short")
                try:
                    dev = payload[r.pos:r.pos + n].decode("utf-8")
                except UnicodeDecodeError:
                    raise EnvelopeError("directory entry is not UTF-8") from None
                r.pos += n
                names.setdefault(h, dev)
                out["directory"][dev] = h
        elif kind == SEC_STATUS:
            status = {}
            for _ in range(r.varint()):
                code = r.varint()
                if not 1 <= code <= len(STATUS_KEYS):
                    raise EnvelopeError("unknown status key %d" % code)
                status[STATUS_KEYS[code - 1]] = _unzz(r.varint())
            out["status"] = status
        elif kind == SEC_GAP:
            h = _hash4(r)
            dropped, alarms, fe, fs, de, x = (r.varint() for _ in range(6))
            found.append((h, {"dropped": dropped, "alarms": alarms, "first_epoch": fe,
                              "first_seq": fs, "last_epoch": fe + de,
                              "last_seq": fs + x if de == 0 else x}))
        elif kind == SEC_EVENT_RECORD:
            h, epoch, seq, flags = _hash4(r), r.varint(), r.varint(), r.byte()
            if flags > 1:
                raise EnvelopeError("event record flags %d" % flags)
            t = _unzz(r.varint()) + EPOCH_S if flags else None
            base = EPOCH_S if t is None else t
            evs = [_decode_event(r, base) for _ in range(r.varint())]
            found.append((h, epoch, [{"seq": seq, "t": t, "kind": "event", "alarms": evs}]))
        elif kind in (SEC_PACK, SEC_PACK_EVENTS):
            h, n = _hash4(r), r.varint()
            if r.pos + n > len(payload):
                raise EnvelopeError("pack length %d passes the end" % n)
            epoch, records = unpack(payload[r.pos:r.pos + n])
            r.pos += n
            for _ in range(r.varint() if kind == SEC_PACK_EVENTS else 0):
                i = r.varint()
                if i >= len(records):
                    raise EnvelopeError("event for record %d of %d" % (i, len(records)))
                t = records[i].get("t")
                ev = _decode_event(r, EPOCH_S if t is None else t)
                records[i].setdefault("alarms", []).append(ev)
            found.append((h, epoch, records))
        else:
            raise EnvelopeError("unknown section type %d at byte %d" % (kind, r.pos - 1))
    rule_names = {rule_hash(x): x for x in rules}
    for item in found:  # a directory anywhere in the uplink names every section
        dev = names.get(item[0], "#" + item[0].hex())
        if len(item) == 2:
            out["gaps"].append(dict(item[1], device_id=dev))
            continue
        for rec in item[2]:
            for ev in rec.get("alarms", ()):
                h = ev["device_id"]
                ev["device_id"] = dev if h is None else names.get(h, "#" + h.hex())
                ev["rule"] = rule_names.get(ev["rule"], "#%04x" % ev["rule"])
            out["records"].append((dev, item[1], rec))
    return out


# ---- downlink commands (FPort 21): the gateway's side -------------------------------------

CMD_CAP, CMD_PAUSE, CMD_RESUME, CMD_STATUS, CMD_DIRECTORY = 1, 2, 3, 4, 5
_CMD_ARGS = {CMD_CAP: 1, CMD_PAUSE: 2, CMD_RESUME: 0, CMD_STATUS: 0, CMD_DIRECTORY: 0}
MAX_DOWNLINK = 32
Command = namedtuple("Command", "op arg")


def parse_downlink(port, payload):
    """The commands of one downlink (``[Command(op, arg)]``; ``arg`` an int or None).
    Raises ``EnvelopeError`` naming what is wrong: another port, empty, longer than
    ``MAX_DOWNLINK``, an unknown op or a cut-off argument."""
    if port != DOWNLINK_PORT:
        raise EnvelopeError("downlink on port %r; commands come on port %d" % (port, DOWNLINK_PORT))
    if not isinstance(payload, (bytes, bytearray)) or not payload:
        raise EnvelopeError("empty downlink")
    if len(payload) > MAX_DOWNLINK:
        raise EnvelopeError("downlink of %d bytes; at most %d" % (len(payload), MAX_DOWNLINK))
    out, i = [], 0
    while i < len(payload):
        op = payload[i]
        n = _CMD_ARGS.get(op)
        if n is None:
            raise EnvelopeError("unknown command 0x%02x at byte %d" % (op, i))
        if i + 1 + n > len(payload):
            raise EnvelopeError("command 0x%02x cut short" % op)
        arg = int.from_bytes(payload[i + 1:i + 1 + n], "big") if n else None
        out.append(Command(op, arg))
        i += 1 + n
    return out


def encode_commands(commands):
    """Bytes of ``[(op, arg)]`` (the network side's encoder, for tests and tools)."""
    out = bytearray()
    for op, arg in commands:
        n = _CMD_ARGS[op]
        out.append(op)
        if n:
            out += int(arg).to_bytes(n, "big")
    return bytes(out)


class Settings:
    """What accepted downlink commands changed, in memory (a restart goes back to these
    defaults): ``cap`` records per uplink (None: as many as fit), ``paused_until`` (ms on
    the forwarder's clock; ``math.inf``: until RESUME; None: not paused), ``want_status``,
    ``directory`` (device ids still to announce)."""

    def __init__(self):
        self.cap = self.paused_until = None
        self.want_status = False
        self.directory = []

    def apply(self, commands, now_ms, devices=()):
        """Apply ``parse_downlink``'s commands at ``now_ms``; ``devices``: the ids a
        DIRECTORY command announces."""
        for c in commands:
            if c.op == CMD_CAP:
                self.cap = c.arg or None
            elif c.op == CMD_PAUSE:
                self.paused_until = now_ms + c.arg * 60000 if c.arg else math.inf
            elif c.op == CMD_RESUME:
                self.paused_until = None
            elif c.op == CMD_STATUS:
                self.want_status = True
            elif c.op == CMD_DIRECTORY:
                self.directory = list(devices)

    def paused(self, now_ms):
        """True while routine forwarding is paused (a timed pause ends by itself)."""
        if self.paused_until is not None and now_ms >= self.paused_until:
            self.paused_until = None
        return self.paused_until is not None
