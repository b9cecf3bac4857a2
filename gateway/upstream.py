"""What the gateway publishes to the council's MQTT broker: topics and payloads (pure, no I/O).

Theory of operation (the platform's side, with examples: docs/gateway-upstream.md)
---------------------------------------------------------------------------------
``encode_rows`` turns a batch of outbox rows (``OutboxRow``) into ``Message``s, each one MQTT
publish with the outbox row ids and gap-marker ids it carries; the forwarder deletes a row
from the outbox once every message that carries it has been PUBACKed.

* ``civicedge/v1/{site}/{device}/readings``: the device's reading, status and gap records as
  a SenML pack in the node's own profile (``protocol.senml``: base name
  ``urn:dev:org:<pen>-<device>:``, record key in ``bepoch``/``bseq``, kind in ``bkind``, the
  quality flag in ``flag_``), so ``protocol.senml_decode.decode_pack`` reads it back. SenML
  JSON (``senml-json``, RFC 8428 labels) by default, or SenML CBOR (``senml-cbor``, integer
  labels, RFC 8949 §4.2 deterministic: ``cbor2`` canonical gives the same bytes for these
  packs, because every label is a one-byte integer or a text key shorter than 24 bytes). One
  pack = one device and one boot epoch, seqs increasing; at most ``per_publish`` records and
  ``max_bytes`` of payload: a larger batch is split into several packs.
  A record the node sent without a trusted time (``t`` None) gets the gateway's receive time
  (``rx_t`` in the record, else the outbox row's ``rx_wall_s``) as its time, and each of its
  ``ok`` values is flagged ``time_unsynced``: the time is when the gateway got it, an upper
  bound, never the measurement time. With neither, it stays without time (``bt`` 0).
* ``civicedge/v1/{site}/{device}/alarms``: JSON ``{"gateway", "key": [device, boot_epoch,
  seq], "t", "alarms": [AlarmEvent.to_dict()...]}`` for a stored record with alarm events
  (``record["alarms"]``); the topic's device is the device the event is about (a gateway
  ``event`` record, keyed on the gateway's own stream, reports window verdicts of devices).
* ``civicedge/v1/{site}/{device}/gaps``: JSON, one per drop the platform must know about:
  ``reason`` ``gateway_outbox`` (the gateway's overflow policy dropped ``dropped`` records of
  the device in the key range; ``marker`` is the outbox gap marker's id), ``node_log`` (the
  node's own log overflowed: its gap record, also in the readings pack) or ``unencodable``
  (a stored record that does not fit the SenML profile: counted as a drop of its key, the
  stored record attached when it fits, so nothing vanishes silently).
* ``civicedge/v1/{site}/gateway/{gateway}/status``: retained JSON ``{"state": "online" |
  "offline", "site", "gateway", ...}``; ``offline`` is also the connection's last will.

Readings packs of records the pipeline made (and of plain readings still as the JSON text the
outbox stored, ``Outbox.take(..., raw=True)``) are written by ``gateway.upstream_fast``, the
same bytes at a fraction of the cost; anything it declines takes the general path here.

Alarm, gap and status messages are JSON in either encoding (small, rare, read by people).
Nothing here raises for what a stored row holds: a record that cannot be encoded becomes an
``unencodable`` gap message. ``ValueError`` only for bad arguments (named).
"""

import json
import math
import operator
import re
from typing import NamedTuple

from gateway import upstream_fast
from gateway.upstream_senml import (  # noqa: F401 (the readings' general path, re-exported)
    SENML_CBOR, SENML_JSON, _encode_pack, _json_labels, _prepared, decode_readings,
    senml_record)
from protocol.senml import DEFAULT_PEN, GAP, GAP_FIELDS, KINDS, READING, SenMLError

PREFIX = "civicedge/v1"
ENCODINGS = (SENML_JSON, SENML_CBOR)
CONTENT_TYPES = {SENML_JSON: "application/senml+json", SENML_CBOR: "application/senml+cbor"}
READINGS, ALARMS, GAPS, STATUS = "readings", "alarms", "gaps", "status"
EVENT = "event"  # the gateway's own alarm records: no values, only ``alarms``
ONLINE, OFFLINE = "online", "offline"
GATEWAY_OUTBOX, NODE_LOG, UNENCODABLE = "gateway_outbox", "node_log", "unencodable"
DEFAULT_MAX_PUBLISH_BYTES = 128 * 1024  # AWS IoT Core's limit; Mosquitto's default is none
MIN_PUBLISH_BYTES = 512  # a gap or alarm message must always fit
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")  # a topic level: no / + # or NUL


class Message(NamedTuple):
    """One publish: ``kind`` is READINGS / ALARMS / GAPS; ``row_ids`` and ``gap_ids`` the outbox
    rows and gap markers it carries; ``records`` how many records (readings, alarm events) it
    holds; ``reason`` a gap message's reason."""
    topic: str
    payload: bytes
    kind: str
    row_ids: tuple
    gap_ids: tuple = ()
    records: int = 0
    reason: str = ""


# -- topics ------------------------------------------------------------------------------------
def _segment(name, value):
    if not isinstance(value, str) or not _SEGMENT.match(value):
        raise ValueError("%s %r is not usable in an MQTT topic (1-64 of A-Z a-z 0-9 . _ -)"
                         % (name, value))
    return value


def topic(site_id, device_id, kind):
    """``civicedge/v1/{site}/{device}/{kind}``; raises ``ValueError`` naming a bad argument."""
    if kind not in (READINGS, ALARMS, GAPS):
        raise ValueError("kind %r is not one of readings, alarms, gaps" % (kind,))
    return "%s/%s/%s/%s" % (PREFIX, _segment("site_id", site_id), _segment("device_id", device_id),
                            kind)


def status_topic(site_id, gateway_id):
    """The retained status topic ``civicedge/v1/{site}/gateway/{gateway}/status``."""
    return "%s/%s/gateway/%s/status" % (PREFIX, _segment("site_id", site_id),
                                        _segment("gateway_id", gateway_id))


def status_payload(state, site_id, gateway_id, **fields):
    """The JSON status document (``state`` ONLINE or OFFLINE plus JSON-able ``fields``)."""
    if state not in (ONLINE, OFFLINE):
        raise ValueError("state %r is not online or offline" % (state,))
    return _json({"state": state, "site": site_id, "gateway": gateway_id, **fields})


# -- JSON that never fails ---------------------------------------------------------------------
def _finite(obj):
    """``obj`` with non-finite floats as None (JSON has no NaN) and non-JSON types as text."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if obj is None or isinstance(obj, (str, int)):
        return obj
    return repr(obj)


def _json(obj):
    """Compact UTF-8 JSON; non-finite numbers as null, and ``\\u`` escapes for text that is
    not valid Unicode (a lone surrogate)."""
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (ValueError, TypeError):  # UnicodeEncodeError is a ValueError
        return json.dumps(_finite(obj), separators=(",", ":")).encode("ascii")


class _Batch:
    """Accumulates the messages of one ``encode_rows`` call."""

    def __init__(self, site_id, gateway_id, encoding, per_publish, max_bytes, pen):
        self.site, self.gateway, self.encoding = site_id, gateway_id, encoding
        self.fast = upstream_fast.pack_cbor if encoding == SENML_CBOR else upstream_fast.pack_json
        self.text_ok = encoding == SENML_JSON  # stored JSON text may go straight into a pack
        self.per_publish, self.max_bytes, self.pen = per_publish, max_bytes, pen
        self.alarms, self.gaps, self.readings = [], [], []

    def unencodable(self, row, detail):
        """A gap message for a row that cannot go out as SenML (the record attached if it fits)."""
        dev = row.device_id if _SEGMENT.match(str(row.device_id)) else None
        body = {"gateway": self.gateway, "device_id": str(row.device_id), "reason": UNENCODABLE,
                "key": [row.device_id, row.boot_epoch, row.seq], "dropped": 1,
                "alarms": int(row.lane == "alarm"), "first_epoch": row.boot_epoch,
                "first_seq": row.seq, "last_epoch": row.boot_epoch, "last_seq": row.seq,
                "detail": str(detail)[:300], "record": row.record}
        payload = _json(body)
        if len(payload) > self.max_bytes:
            del body["record"]
            body["detail"] += " (the record, %d bytes, is too large to attach)" % len(payload)
            payload = _json(body)
        where = topic(self.site, dev, GAPS) if dev else "%s/%s/gateway/%s/gaps" % (
            PREFIX, self.site, self.gateway)
        self.gaps.append(Message(where, payload, GAPS, (row.row_id,), (), 1, UNENCODABLE))

    def node_gap(self, row):
        rec = row.record
        body = {"gateway": self.gateway, "device_id": row.device_id, "reason": NODE_LOG,
                "key": [row.device_id, row.boot_epoch, row.seq], "dropped": rec.get("dropped")}
        for key in GAP_FIELDS:  # a node gap without epochs means its own boot epoch
            body[key] = rec.get(key, row.boot_epoch if key.endswith("epoch") else None)
        self.gaps.append(Message(topic(self.site, row.device_id, GAPS), _json(body), GAPS,
                                 (row.row_id,), (), 1, NODE_LOG))

    def alarm_events(self, row, events):
        by_device = {}
        for ev in events:
            dev = ev.get("device_id") if isinstance(ev, dict) else None
            if not isinstance(dev, str) or not _SEGMENT.match(dev):
                dev = row.device_id
            by_device.setdefault(dev, []).append(ev)
        t = row.record.get("t")
        for dev, evs in by_device.items():
            head = {"gateway": self.gateway, "key": [row.device_id, row.boot_epoch, row.seq],
                    "t": t}
            for chunk in self._fit(head, evs):
                self.alarms.append(Message(topic(self.site, dev, ALARMS),
                                           _json(dict(head, alarms=chunk)), ALARMS,
                                           (row.row_id,), (), len(chunk)))

    def _fit(self, head, events):
        """``events`` in chunks whose message fits ``max_bytes`` (an event too large on its own
        goes without its ``detail``, then as its repr cut to fit)."""
        chunk, size, base = [], 0, len(_json(dict(head, alarms=[])))
        for ev in events:
            n = len(_json(ev)) + 1
            if base + n > self.max_bytes:
                ev = dict(ev, detail={"truncated": True}) if isinstance(ev, dict) else ev
                n = len(_json(ev)) + 1
                if base + n > self.max_bytes:
                    ev = {"truncated": repr(ev)[:max(0, self.max_bytes - base - 40)]}
                    n = len(_json(ev)) + 1
            if chunk and size + n + base > self.max_bytes:
                yield chunk
                chunk, size = [], 0
            chunk.append(ev)
            size += n
        if chunk:
            yield chunk

    def _general(self, device_id, boot_epoch, items):
        """The pack of ``items`` through ``protocol.senml.pack_records`` (every check of the
        profile), or None once the records it refuses are reported ``unencodable`` (the
        rest then went out in a pack of their own)."""
        try:
            return _encode_pack(device_id, boot_epoch, [_prepared(r) for _, r in items],
                                self.encoding, self.pen)
        except SenMLError as e:
            if len(items) == 1:
                self.unencodable(items[0][1], e)
                return None
            good = []
            for item in items:  # find the records the profile refuses; send the rest
                try:
                    _encode_pack(device_id, boot_epoch, [_prepared(item[1])], self.encoding,
                                 self.pen)
                    good.append(item)
                except SenMLError as e:
                    self.unencodable(item[1], e)
            if good:
                self._pack(device_id, boot_epoch, good)
            return None

    def pack(self, device_id, boot_epoch, items):
        """Readings packs for ``items`` ((seq, row) of one device and epoch, seq order)."""
        for i in range(0, len(items), self.per_publish):
            self._pack(device_id, boot_epoch, items[i:i + self.per_publish])

    def decoded(self, row):
        """``row`` with its stored JSON text decoded, or None once reported ``unencodable``."""
        try:
            return row._replace(record=json.loads(row.record))
        except (ValueError, RecursionError) as e:
            self.unencodable(row, "the stored record is not JSON: %s" % (e,))
            return None

    def _pack(self, device_id, boot_epoch, items):
        # the fast path writes the same bytes for records the pipeline made (gateway.upstream_fast)
        records = [r.record for _, r in items]
        payload = None
        if self.text_ok and type(records[0]) is str:  # plain readings' stored text, usually
            payload = upstream_fast.plain_pack_json(device_id, boot_epoch, records, self.pen)
        if payload is None:
            payload = self.fast(device_id, boot_epoch, records, self.pen)
        if payload is None and any(type(r.record) is str for _, r in items):
            items = [(seq, self.decoded(r) if type(r.record) is str else r) for seq, r in items]
            items = [item for item in items if item[1] is not None]
            if not items:
                return
            payload = self.fast(device_id, boot_epoch, [r.record for _, r in items], self.pen)
        if payload is None:
            payload = self._general(device_id, boot_epoch, items)
            if payload is None:
                return
        if len(payload) <= self.max_bytes:
            self.readings.append(Message(topic(self.site, device_id, READINGS), payload,
                                         READINGS, tuple([r[0] for _, r in items]), (),
                                         len(items)))
        elif len(items) == 1:
            self.unencodable(items[0][1], "its SenML pack is %d bytes, over max_publish_bytes "
                             "%d" % (len(payload), self.max_bytes))
        else:
            half = len(items) // 2
            self._pack(device_id, boot_epoch, items[:half])
            self._pack(device_id, boot_epoch, items[half:])


def _check_args(site_id, gateway_id, encoding, per_publish, max_bytes):
    _segment("site_id", site_id)
    _segment("gateway_id", gateway_id)
    if encoding not in ENCODINGS:
        raise ValueError("encoding %r is not one of %s" % (encoding, ", ".join(ENCODINGS)))
    if isinstance(per_publish, bool) or not isinstance(per_publish, int) or per_publish < 1:
        raise ValueError("per_publish must be an int >= 1, got %r" % (per_publish,))
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) \
            or max_bytes < MIN_PUBLISH_BYTES:
        raise ValueError("max_bytes must be an int >= %d, got %r" % (MIN_PUBLISH_BYTES, max_bytes))


_first = operator.itemgetter(0)


def encode_rows(rows, site_id, gateway_id, encoding=SENML_JSON, per_publish=100,
                max_bytes=DEFAULT_MAX_PUBLISH_BYTES, pen=DEFAULT_PEN):
    """The messages that carry ``rows`` (``OutboxRow``s, any devices, any order): alarm
    messages first, then gap messages, then readings packs (one device and boot epoch each,
    ``per_publish`` records and ``max_bytes`` of payload at most). A gateway ``event`` record
    without alarms needs no message (it appears in none). A row's record may also be its
    stored JSON text (``Outbox.take(..., raw=True)``): it is decoded when needed, and a
    text that is not JSON is reported ``unencodable``. Raises ``ValueError`` naming a bad
    argument; never for a row's contents."""
    _check_args(site_id, gateway_id, encoding, per_publish, max_bytes)
    b = _Batch(site_id, gateway_id, encoding, per_publish, max_bytes, pen)
    groups, plain, usable = {}, b.text_ok and upstream_fast.maybe_plain, {}
    for row in rows:
        rec = row.record
        dev = row.device_id
        ok = usable.get(dev) if type(dev) is str else None
        if ok is None:
            ok = bool(_SEGMENT.match(str(dev)))
            if type(dev) is str:
                usable[dev] = ok
        if type(rec) is str:  # Outbox.take(..., raw=True): the stored JSON text
            if ok and plain and plain(rec):  # a reading without alarms: only in a pack
                key = (row.device_id, row.boot_epoch)
                if key in groups:
                    groups[key].append((row.seq, row))
                else:
                    groups[key] = [(row.seq, row)]
                continue
            row = b.decoded(row)
            if row is None:
                continue
            rec = row.record
        if not isinstance(rec, dict) or not ok:
            b.unencodable(row, "a record of %s for device %r" % (type(rec).__name__,
                                                                   row.device_id))
            continue
        kind = rec.get("kind", READING)
        events = rec.get("alarms")
        if events:
            b.alarm_events(row, events if isinstance(events, list) else [events])
        if kind == EVENT:
            continue
        if kind not in KINDS:
            b.unencodable(row, "record kind %r is not one of %s" % (kind, ", ".join(KINDS)))
            continue
        if kind == GAP:
            b.node_gap(row)
        groups.setdefault((row.device_id, row.boot_epoch), []).append((row.seq, row))
    for (device_id, boot_epoch), items in groups.items():
        items.sort(key=_first)
        b.pack(device_id, boot_epoch, items)
    return b.alarms + b.gaps + b.readings


def encode_gap_markers(markers, site_id, gateway_id):
    """One ``gateway_outbox`` gap message per outbox ``GapMarker`` (on the device's ``gaps``
    topic, or the gateway's if the device id is no topic level)."""
    _segment("site_id", site_id)
    _segment("gateway_id", gateway_id)
    out = []
    for m in markers:
        body = {"gateway": gateway_id, "device_id": m.device_id, "reason": GATEWAY_OUTBOX,
                "marker": m.gap_id, "dropped": m.dropped, "alarms": m.alarms,
                "first_epoch": m.first_epoch, "first_seq": m.first_seq,
                "last_epoch": m.last_epoch, "last_seq": m.last_seq}
        dev = m.device_id if isinstance(m.device_id, str) and _SEGMENT.match(m.device_id) else None
        where = topic(site_id, dev, GAPS) if dev else "%s/%s/gateway/%s/gaps" % (
            PREFIX, site_id, gateway_id)
        out.append(Message(where, _json(body), GAPS, (), (m.gap_id,), 0, GATEWAY_OUTBOX))
    return out
