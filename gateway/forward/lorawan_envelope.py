"""The gateway's LoRaWAN upstream envelope: encoding (pure core, no I/O).

A node's uplink carries one device's records (``protocol.lorapack``); the gateway forwards
many devices through ONE modem, so each uplink is an **envelope** of sections, each naming
its device by a 4-byte hash. Byte by byte (docs/gateway-lorawan-upstream.md has examples)::

    uplink (FPort 20)  = 0x01 (version) section*
    0x01 PACK          = hash4 varint(len) pack[len]                 records of one device+epoch
    0x02 PACK+EVENTS   = hash4 varint(len) pack[len] varint(n) (varint(index) event)*n
    0x03 EVENT RECORD  = hash4 varint(epoch) varint(seq) flags [zz(t - EPOCH_S)] varint(n) event*n
    0x04 GAP MARKER    = hash4 varint(dropped) varint(alarms) varint(first_epoch) varint(first_seq)
                         varint(last_epoch - first_epoch) varint(last_seq - first_seq | last_seq)
    0x05 STATUS        = varint(n) (varint(key) zz(value))*n         keys: STATUS_KEYS
    0x06 DIRECTORY     = varint(n) (hash4 varint(len) utf8[len])*n   hash -> device id
    event = head rule2 [subject4] varint(quantity code) [zz(value)] [zz(at - base)] [zz(ref - since)]
      head bits 0-1 kind (raised, cleared, report, other), 2-3 severity (info, warning,
      critical, other), 4 subject hash follows, 5 value follows, 6 at follows, 7 since follows

``hash4`` = the first 4 bytes of SHA-256 of the device id (UTF-8); ``rule2`` = the first 2
bytes (big-endian) of SHA-256 of the alarm rule id. A decoder resolves both from the device
inventory and the profiles' rule ids; the DIRECTORY section tells it the device ids when
asked. Values are the pack's wire integers (``lorapack.RESOLUTION``); ``base`` is the
record's time (or ``EPOCH_S`` without one), ``ref`` is ``at`` (or ``base`` without it). A
record the pack cannot carry travels as a one-record gap in its own place (``kind`` gap,
``dropped`` 1, its own key), counted by the caller. An alarm event's free-form ``detail`` is
not carried (the MQTT upstream has it).

Downlink commands (FPort 21): one or more ``op [args]``, validated as a whole (another port,
an unknown op, a cut-off argument or an empty payload reject all of it): 0x01 CAP u8 (records
per uplink, 0 = no cap), 0x02 PAUSE u16 BE minutes (routine forwarding; 0 = until RESUME),
0x03 RESUME, 0x04 STATUS (send a status section), 0x05 DIRECTORY (send the device directory).

The decoders of both directions are in ``gateway.forward.lorawan_decode``: ``decode_uplink``
(the upstream's side) and ``parse_downlink`` (the gateway's); both raise only
``EnvelopeError`` whatever the bytes.
"""

import hashlib
import math
from collections import namedtuple

from protocol import lorapack, quantities
from protocol.lorapack import EPOCH_S, _put, _zz

UPLINK_PORT = 20
DOWNLINK_PORT = 21
VERSION = 1
SEC_PACK, SEC_PACK_EVENTS, SEC_EVENT_RECORD, SEC_GAP, SEC_STATUS, SEC_DIRECTORY = 1, 2, 3, 4, 5, 6
KINDS = ("raised", "cleared", "report", "other")
SEVERITIES = ("info", "warning", "critical", "other")
# Status keys, most useful first: a status section carries as many as fit, in this order.
# Their codes (index + 1) are stable: add new keys at the end, never renumber.
STATUS_KEYS = ("rows_routine", "rows_alarm", "oldest_age_s", "dropped_routine", "dropped_alarm",
               "gap_markers", "forwarded", "budget_waits", "duty_used_ms", "fair_used_ms",
               "paused", "cap", "uplinks", "confirmed", "acked", "no_ack", "airtime_ms",
               "downlinks", "bad_downlinks", "modem_errors", "joins", "join_failures",
               "records_unpackable", "uptime_s")
STATUS_CODES = {name: i + 1 for i, name in enumerate(STATUS_KEYS)}
_ID_MAX = 64  # bytes of a device id in the directory
MIN_ROOM = 36  # DR0-2 (51 B) less 15 B of FOpts: any stand-in gap fits
# Room a PACK section needs besides its pack: type + hash + a 1-byte length (a pack of 128
# bytes or more needs a 2-byte length; such a section that misses by one is retried shorter).
_SECTION_MAX = 6
_U32 = 0xFFFFFFFF

Prepared = namedtuple("Prepared", "row record t events unpackable")
Prepared.__doc__ = ("One outbox row made ready for the envelope: ``record`` the pack's dict (None "
                    "for a gateway event record), ``t`` its time (int s or None), ``events`` "
                    "the encoded alarm events, ``unpackable`` True if ``record`` is the "
                    "one-record gap standing in for a record the pack cannot carry.")


class EnvelopeError(ValueError):
    """An uplink envelope or a downlink command that cannot be decoded."""


def device_hash(device_id):
    """The 4-byte hash naming ``device_id`` (str) in an envelope."""
    return hashlib.sha256(device_id.encode("utf-8", "surrogatepass")).digest()[:4]


def rule_hash(rule_id):
    """The 16-bit hash naming alarm rule ``rule_id`` (str) in an event."""
    return int.from_bytes(hashlib.sha256(rule_id.encode("utf-8", "surrogatepass")).digest()[:2], "big")


def _time(x):
    """``x`` as whole Unix seconds if it is a finite time within uint32, else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    t = math.floor(x + 0.5)
    return t if 0 <= t <= _U32 else None


def _code_and_wire(quantity, value):
    row = quantities.BY_QUANTITY.get(quantity) if isinstance(quantity, str) else None
    if row is None:
        return 0, None
    try:
        w = lorapack.scaled(quantity, value)
    except ValueError:
        return row[0], None
    return row[0], (w if isinstance(w, int) else None)


def encode_event(ev, base_t, device_id):
    """One alarm event dict (``AlarmEvent.to_dict()``) as bytes; times relative to
    ``base_t`` (the record's time, or ``EPOCH_S``). Raises ``ValueError`` if ``ev`` is not a
    dict with a text ``rule``."""
    if not isinstance(ev, dict) or not isinstance(ev.get("rule"), str):
        raise ValueError("an alarm event must be a dict with a text rule, got %r" % (ev,))
    kind = KINDS.index(ev["kind"]) if ev.get("kind") in KINDS[:3] else 3
    sev = SEVERITIES.index(ev["severity"]) if ev.get("severity") in SEVERITIES[:3] else 3
    subject = ev.get("device_id")
    subject = subject if isinstance(subject, str) and subject != device_id else None
    code, w = _code_and_wire(ev.get("quantity"), ev.get("value"))
    at, since = _time(ev.get("at")), _time(ev.get("since"))
    head = kind | sev << 2 | (subject is not None) << 4 | (w is not None) << 5 \
        | (at is not None) << 6 | (since is not None) << 7
    out = bytearray((head,)) + rule_hash(ev["rule"]).to_bytes(2, "big")
    if subject is not None:
        out += device_hash(subject)
    _put(out, code)
    if w is not None:
        _put(out, _zz(w))
    ref = base_t
    if at is not None:
        _put(out, _zz(at - base_t))
        ref = at
    if since is not None:
        _put(out, _zz(ref - since))
    return bytes(out)


def _pack_record(row, rec, t):
    kind = rec.get("kind", "reading")
    out = {"seq": row.seq, "t": t}
    if kind in ("reading", "status"):
        out["values"] = rec.get("values", [])
        if kind == "status":
            out.update(kind="status", counters=rec.get("counters") or {})
    elif kind == "gap":
        out["kind"] = "gap"
        for name in ("dropped", "first_epoch", "first_seq", "last_epoch", "last_seq"):
            if name in rec:
                out[name] = rec[name]
    else:
        raise ValueError("record kind %r cannot be packed" % (kind,))
    lorapack.pack([out], 4096, row.boot_epoch)  # ValueError if the pack cannot carry it
    return out


def stand_in_gap(row, t):
    """The one-record gap sent in place of ``row``'s record when the pack cannot carry it."""
    return {"seq": row.seq, "t": t, "kind": "gap", "dropped": 1, "first_seq": row.seq,
            "last_seq": row.seq}


def prepare(row):
    """``Prepared`` for an ``OutboxRow`` (never raises for a malformed record: it becomes
    the stand-in gap; malformed alarm events are left out)."""
    rec = row.record if isinstance(row.record, dict) else {}
    t = _time(rec.get("t"))
    if t is None:
        t = _time(rec.get("rx_t"))  # the gateway's receive time for a record without one
    events = []
    alarms = rec.get("alarms")
    for ev in alarms if isinstance(alarms, list) else ():
        try:
            events.append(encode_event(ev, EPOCH_S if t is None else t, row.device_id))
        except (ValueError, TypeError, OverflowError):
            pass
    if rec.get("kind") == "event":
        return Prepared(row, None, t, events, False)
    try:
        return Prepared(row, _pack_record(row, rec, t), t, events, False)
    except (ValueError, TypeError, OverflowError):
        return Prepared(row, stand_in_gap(row, t), t, events, True)


def _trim(p, room):
    """A smaller stand-in for ``p`` that alone fits ``room`` body bytes: a status record keeps
    as many counters as fit (by name), then events are left out, then the stand-in gap."""
    rec = p.record
    if rec is not None and rec.get("kind") == "status" and rec.get("counters"):
        kept = dict(rec, counters={})
        for name in sorted(rec["counters"]):
            kept["counters"][name] = rec["counters"][name]
            if len(lorapack.pack([kept], 4096, p.row.boot_epoch)[0]) + _SECTION_MAX > room:
                del kept["counters"][name]
        return p._replace(record=kept, events=[])
    if p.events:
        return p._replace(events=[])
    return p._replace(record=stand_in_gap(p.row, p.t), unpackable=True)


class UplinkBuilder:
    """Fills one uplink of at most ``room`` bytes with sections; ``payload()`` gives it.
    ``rows`` / ``gaps`` list what went in (to ack once it is delivered); ``records``
    counts records (rows); ``trimmed`` counts rows shrunk to fit (``_trim``)."""

    def __init__(self, room):
        if isinstance(room, bool) or not isinstance(room, int) or room < MIN_ROOM:
            raise ValueError("room must be at least %d bytes, got %r" % (MIN_ROOM, room))
        self.room = room
        self.buf = bytearray((VERSION,))
        self.rows, self.gaps, self.records, self.trimmed, self.unpackable = [], [], 0, 0, 0
        self.alarm_rows = 0  # set by the caller, which knows the rows' lanes

    def free(self):
        return self.room - len(self.buf)

    def empty(self):
        return len(self.buf) == 1

    def payload(self):
        return bytes(self.buf)

    def _add(self, section):
        if len(section) > self.free():
            return False
        self.buf += section
        return True

    def add_status(self, values):
        """A STATUS section with as many of ``values`` (name -> int) as fit, in
        ``STATUS_KEYS`` order (other names and non-integers are left out; values clamped to
        ±2**31). Returns the names it carries ([] if not even one fits)."""
        body, names = bytearray(), []
        for k in STATUS_KEYS:
            v = values.get(k)
            if isinstance(v, bool) or not isinstance(v, int):
                continue
            item = bytearray()
            _put(item, STATUS_CODES[k])
            _put(item, _zz(max(-(1 << 31), min(v, 1 << 31))))
            if 3 + len(body) + len(item) > self.free():
                break
            body += item
            names.append(k)
        if not names:
            return []
        sec = bytearray((SEC_STATUS,))
        _put(sec, len(names))
        self._add(sec + body)
        return names

    def add_directory(self, device_ids):
        """A DIRECTORY section with as many of ``device_ids`` as fit; returns those."""
        done = []
        for dev in device_ids:
            raw = dev.encode("utf-8", "surrogatepass")[:_ID_MAX]
            body = device_hash(dev) + bytes((len(raw),)) + raw
            if 3 + sum(len(x) for x in done) + len(body) > self.free():
                break
            done.append(body)
        if not done:
            return []
        sec = bytearray((SEC_DIRECTORY,))
        _put(sec, len(done))
        for body in done:
            sec += body
        self._add(sec)
        return list(device_ids)[:len(done)]

    def add_gap(self, m):
        """A GAP MARKER section for an outbox ``GapMarker``; returns whether it fitted."""
        sec = bytearray((SEC_GAP,)) + device_hash(m.device_id)
        fe, fs, le, ls = (max(0, int(x)) for x in (m.first_epoch, m.first_seq, m.last_epoch, m.last_seq))
        le = max(le, fe)
        for v in (m.dropped, m.alarms, fe, fs, le - fe, (ls - fs if le == fe else ls)):
            _put(sec, max(0, int(v)))
        if not self._add(sec):
            return False
        self.gaps.append(m.gap_id)
        return True

    def add_rows(self, prepared, max_records=None):
        """Add ``Prepared`` rows, as many as fit (and at most ``max_records`` records in the
        uplink): alarm-lane rows first, then the rest, each device's rows of one boot epoch
        as one section (an alarm row in a section of its own), oldest section first.
        Returns the row ids added."""
        groups, order = {}, []
        for p in prepared:
            alarm = p.row.lane == "alarm"
            if p.record is None:
                key = (not alarm, "", p.row.row_id)
            else:
                key = (not alarm, p.row.device_id, p.row.boot_epoch)
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(p)
        order.sort(key=lambda k: (k[0], min(p.row.row_id for p in groups[k])))
        before = len(self.rows)
        for key in order:
            left = None if max_records is None else max_records - self.records
            if left is not None and left <= 0:
                break
            grp = sorted(groups[key], key=lambda p: p.row.seq)
            if grp[0].record is None:
                self._event_record(grp[0])
            else:
                self._pack_group(grp, left)
        return self.rows[before:]

    def _event_record(self, p):
        row = p.row
        sec = bytearray((SEC_EVENT_RECORD,)) + device_hash(row.device_id)
        _put(sec, row.boot_epoch)
        _put(sec, row.seq)
        sec.append(1 if p.t is not None else 0)
        if p.t is not None:
            _put(sec, _zz(p.t - EPOCH_S))
        events = list(p.events)
        while True:
            body = bytearray(sec)
            _put(body, len(events))
            for ev in events:
                body += ev
            if self._add(body):
                self.rows.append(row.row_id)
                self.records += 1
                return True
            if not self.empty() or not events:
                return False
            events.pop()  # alone it does not fit: carry the events that do
            self.trimmed += 1

    def _pack_group(self, grp, left):
        k = min(len(grp), lorapack.MAX_RECORDS, len(grp) if left is None else left)
        trims = 0
        while k > 0:
            body_room = self.free() - _SECTION_MAX
            n = 0
            if body_room > 8:
                try:
                    pack, n = lorapack.pack([p.record for p in grp[:k]], body_room, grp[0].row.boot_epoch)
                except ValueError:
                    if k > 1:  # the batch's interval (from its look-ahead) may cost a byte more
                        k = 1
                        continue
                    n = 0
            if n:
                sec = bytearray((SEC_PACK,)) + device_hash(grp[0].row.device_id)
                _put(sec, len(pack))
                sec += pack
                evs = [(i, ev) for i in range(n) for ev in grp[i].events]
                if evs:
                    sec[0] = SEC_PACK_EVENTS
                    _put(sec, len(evs))
                    for i, ev in evs:
                        _put(sec, i)
                        sec += ev
                if self._add(sec):
                    self.rows += [p.row.row_id for p in grp[:n]]
                    self.records += n
                    self.unpackable += sum(1 for p in grp[:n] if p.unpackable)
                    return True
                k = n - 1
            if k == 0 or n == 0:
                # Even the first record does not fit: wait for the next uplink, unless this
                # one is empty (then no uplink would ever carry it: shrink it, at most 3 times)
                if not self.empty() or trims == 3:
                    return False
                grp = [_trim(grp[0], self.free())] + grp[1:]
                self.trimmed += 1
                trims += 1
                k = 1
        return False
