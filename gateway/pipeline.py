"""The gateway's core pipeline (sans-IO): bytes in, records, alarm events and acks out.

Theory of operation
-------------------
``Ingest`` does no I/O: a source hands it what arrived and stores what it returns.

``ingest_frame(buf, source)`` (serial and MQTT nodes) verifies the frame's tag with the
device key (``protocol.frame.decode_frame``), rejects a replay, decodes the SenML-CBOR pack
with ``cbor2`` and ``protocol.senml_usual`` (a node's usual pack, fast) or
``protocol.senml_decode``, validates it against the frame, runs the alarm
rules and returns a ``Result``: the records to store (each with its key and its lane), the
alarm events, the counters it bumped and the **ack to send once the outbox has committed**.
``ingest_lorawan(dev_eui, payload, dedup_id)`` does the same for a ChirpStack uplink
(``protocol.lorapack_decode.unpack``; the network server authenticated it, so there is no
tag and no ack). Nothing raises for what arrives: every bad input is a rejected ``Result``
whose ``reason`` names the counter it bumped (``auth_failures.bad_tag``, ``replays``,
``decode_errors.cbor``...) and whose ``detail`` says what happened and what to do.

Replays and duplicates (RELIABILITY.md rule 1, rule 9, fault table). Per device the pipeline
keeps the newest ``boot_epoch`` it accepted and, for that epoch, up to ``max_ranges`` ranges
of seqs it accepted (a node sends its log in order, so this is usually one range). A frame
or pack from an *older* epoch is a replay: rejected, ``replays`` +1, no ack. Anything in the
current or a newer epoch is accepted and classified per record: a record in an accepted
range is a known duplicate (``duplicates`` +1), the rest are new. Every record is returned
either way and the duplicate frame gets the same ack again: the outbox's unique key makes
the insert idempotent, so a resent frame whose ack was lost, or one reordered behind a newer
frame of its epoch, is harmless. The caller should not count the outbox's ignored inserts of
records marked ``duplicate`` again. A record whose seq lies outside its frame's range is
held back (``records_held.seq_range``): the ack covers only the frame's range, so the node
sends it again inside a later frame's range. An authentic frame that does not decode is not
acked either: its records stay on the node (e.g. until a newer gateway understands them).

Transactions. ``ingest_*`` update the replay state, the LoRaWAN de-duplication memory and
the alarm state at once (so a batch sees its own records), but remember how to undo it: the
caller commits the outbox, then calls ``commit()`` and sends the acks; if the commit fails
it calls ``rollback()`` and sends nothing, and the node's resend is processed afresh. The
caller persists ``replay_state()`` (small, JSON-able) in the same transaction.
"""

import copy
from collections import OrderedDict

import cbor2

from gateway.alarms import CLEARED, RAISED
from gateway.outbox_policy import compact_json
from gateway.pipeline_records import (  # noqa: F401  (ALARM, ROUTINE, normalise_dev_eui: the pipeline's API)
    ALARM, ROUTINE, Result, StoredRecord, _check_values, _copy_state, normalise_dev_eui)
from protocol import frame
from protocol.lorapack_decode import PackError, unpack
from protocol.senml_decode import SenMLError, decode_pack
from protocol.senml_usual import decode_usual

REPLAY_STATE_VERSION = 1
_DETAIL_MAX = 240
_HINTS = {
    "unknown_device": "add the device and its key to the gateway's inventory, or ignore a "
                      "stranger",
    "bad_tag": "if this device keeps failing, its key on the node and on the gateway differ: "
               "re-provision it",
    "source_mismatch": "the transport's identity and the frame's device differ: check the "
                       "broker's per-device credentials",
    "replays": "an old frame was sent again; if the node was re-flashed and restarts at a "
               "lower boot epoch, reset its replay state (Ingest.forget)",
}


class Ingest:
    """The pipeline. ``keys``: device_id → key bytes (>= 16); ``replay_state``: a
    ``replay_state()`` to resume from; ``alarms``: a ``gateway.alarms.AlarmEngine`` (None: no
    rules, every record routine); ``dev_euis``: devEUI → device_id for LoRaWAN uplinks;
    ``tag_len``: the link's tag length; ``dedup_size``: ChirpStack deduplication ids kept;
    ``max_ranges``: accepted seq ranges kept per device. Raises ``ValueError`` naming a bad
    argument (never showing key material)."""

    def __init__(self, keys, replay_state=None, *, alarms=None, dev_euis=None,
                 tag_len=frame.DEFAULT_TAG_LEN, dedup_size=4096, max_ranges=16):
        self._keys = {}
        for dev, key in dict(keys).items():
            frame.check_device_id(dev)
            if not isinstance(key, (bytes, bytearray)) or len(key) < frame.MIN_KEY_LEN:
                raise ValueError("key for device %r must be bytes of at least %d bytes"
                                 % (dev, frame.MIN_KEY_LEN))
            self._keys[dev] = bytes(key)
        self._euis = {}
        for eui, dev in dict(dev_euis or {}).items():
            norm = normalise_dev_eui(eui)
            if norm is None:
                raise ValueError("dev_euis: %r is not a 16-hex-digit devEUI" % (eui,))
            frame.check_device_id(dev)
            self._euis[norm] = dev
        if isinstance(tag_len, bool) or not isinstance(tag_len, int) or not 8 <= tag_len <= 32:
            raise ValueError("tag_len must be an int from 8 to 32, got %r" % (tag_len,))
        for name, v in (("dedup_size", dedup_size), ("max_ranges", max_ranges)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError("%s must be an int >= 1, got %r" % (name, v))
        self.alarms = alarms
        self._tag_len = tag_len
        self._dedup_size = dedup_size
        self._max_ranges = max_ranges
        self._state = {}
        self._undo = {}
        self._json = {}  # device -> its replay_state_json() part; never one changed since commit
        self._dedup = OrderedDict()
        self._dedup_added = []
        self.counters = {}
        if replay_state is not None:
            self.load_replay_state(replay_state)

    # -- inputs -------------------------------------------------------------------------------
    def ingest_frame(self, buf, source="", *, device_id=None, received_s=None):
        """One node frame (bytes) from ``source`` (a label for logs: ``serial:/dev/ttyUSB0``).
        ``device_id``: who the transport says sent it (the MQTT client), if it knows;
        ``received_s``: the gateway's receive time (Unix s), used for unsynced records."""
        res = Result(source=str(source))
        self._count(res, "received")
        if isinstance(buf, memoryview):
            buf = buf.tobytes()
        if not isinstance(buf, (bytes, bytearray)):
            return self._reject(res, "decode_errors.not_bytes", "input is %s, not bytes"
                                % type(buf).__name__)
        try:
            f = frame.decode_frame(buf, self._keys.get, self._tag_len, expect=frame.TYPE_DATA)
        except frame.FrameError as e:
            return self._reject(res, "auth_failures." + e.reason, "frame rejected (%s)" % e,
                                _HINTS.get(e.reason, "a damaged or forged frame: dropped"))
        res.device_id = f.device_id
        res.boot_epoch, res.first_seq, res.seq_through = f.boot_epoch, f.first_seq, f.seq_through
        if device_id is not None and device_id != f.device_id:
            return self._reject(res, "auth_failures.source_mismatch", "frame of device %r "
                                "arrived as %r" % (f.device_id, device_id),
                                _HINTS["source_mismatch"])
        if self._is_replay(res, f.device_id, f.boot_epoch, f.seq_through):
            return res
        try:
            obj = cbor2.loads(f.payload)
        except Exception as e:  # hostile bytes into a third-party decoder: any failure is theirs
            return self._reject(res, "decode_errors.cbor", "payload of device %r is not CBOR "
                                "(%s: %s)" % (f.device_id, type(e).__name__, e), _NOT_ACKED)
        try:  # a node's usual pack decodes on the fast path, already checked; else by the book
            pack = decode_usual(obj)
            usual = pack is not None
            if not usual:
                pack = decode_pack(obj)
        except Exception as e:  # SenMLError, or a CBOR type decode_pack never expected
            name = "" if isinstance(e, SenMLError) else type(e).__name__ + ": "
            return self._reject(res, "decode_errors.senml", "pack of device %r: %s%s"
                                % (f.device_id, name, e), _NOT_ACKED)
        if pack["device_id"] != f.device_id or pack["boot_epoch"] != f.boot_epoch:
            what = "device_id" if pack["device_id"] != f.device_id else "boot_epoch"
            return self._reject(res, "decode_errors." + what, "pack says %s %r, frame %r"
                                % (what, pack[what], getattr(f, what)), _NOT_ACKED)
        if not self._accept(res, f.device_id, f.boot_epoch, pack["records"], f.first_seq,
                            f.seq_through, received_s, checked=usual):
            return res
        res.ack = frame.encode_ack(self._keys[f.device_id], f.device_id, f.boot_epoch,
                                   f.seq_through, self._tag_len)
        return res

    def ingest_lorawan(self, dev_eui, payload, dedup_id=None, *, received_s=None, source=None):
        """One ChirpStack ``up`` event's ``devEui``, FRMPayload bytes (``data``, base64-decoded
        by the source) and ``deduplicationId``. No ack: LoRaWAN acks are the network's."""
        res = Result(source=str(source) if source is not None else "lorawan:%s" % (dev_eui,))
        self._count(res, "received")
        eui = normalise_dev_eui(dev_eui)
        if eui is None:
            return self._reject(res, "decode_errors.dev_eui", "devEUI %r is not 16 hex "
                                "digits" % (dev_eui,), "check the ChirpStack event source")
        dev = self._euis.get(eui)
        if dev is None:
            return self._reject(res, "auth_failures.unknown_device", "devEUI %s is not in the "
                                "inventory" % eui, "map it to a device id to accept it")
        res.device_id = dev
        if dedup_id is not None:
            if not isinstance(dedup_id, str) or not 0 < len(dedup_id) <= 128:
                return self._reject(res, "decode_errors.dedup_id", "deduplicationId %r is "
                                    "not a short string" % (dedup_id,), "")
            if dedup_id in self._dedup:
                self._dedup.move_to_end(dedup_id)
                return self._reject(res, "duplicate_uplinks", "uplink %s of %s delivered again"
                                    % (dedup_id, dev), "nothing to do")
        if isinstance(payload, memoryview):
            payload = payload.tobytes()
        if not isinstance(payload, (bytes, bytearray)):
            return self._reject(res, "decode_errors.not_bytes", "payload is %s, not bytes"
                                % type(payload).__name__)
        try:
            epoch, records = unpack(payload)
        except Exception as e:  # PackError is documented; anything else still is the bytes'
            name = "" if isinstance(e, PackError) else type(e).__name__ + ": "
            return self._reject(res, "decode_errors.pack", "uplink of %s: %s%s"
                                % (dev, name, e), "check the node's firmware version")
        first, last = records[0]["seq"], records[-1]["seq"]
        res.boot_epoch, res.first_seq, res.seq_through = epoch, first, last
        if self._is_replay(res, dev, epoch, last):
            return res
        if not self._accept(res, dev, epoch, records, first, last, received_s):
            return res
        if dedup_id is not None:
            self._dedup[dedup_id] = True
            self._dedup_added.append(dedup_id)
            while len(self._dedup) > self._dedup_size:
                self._dedup.popitem(last=False)
        return res

    # -- steps --------------------------------------------------------------------------------
    def _is_replay(self, res, dev, epoch, seq_through):
        st = self._state.get(dev)
        last = None if st is None else (st["e"], st["r"][-1][1])
        if frame.classify(last, epoch, seq_through) != frame.REPLAY:
            return False
        self._reject(res, "replays", "device %r sent boot epoch %d, older than its "
                     "accepted %d" % (dev, epoch, st["e"]), _HINTS["replays"])
        return True

    def _accept(self, res, dev, epoch, records, lo, hi, received_s, checked=False):
        """Classify, run the alarm rules and keep ``records``; ``checked``: they come from
        ``decode_usual``, whose records pass ``_check_values`` by construction
        (tests/property/test_senml_usual_props.py), so it is not run again."""
        bad = None if checked else _check_values(records)
        if bad is not None:
            self._reject(res, "decode_errors." + bad, "a record of device %r has a bad %s"
                         % (dev, bad), _NOT_ACKED)
            return False
        st = self._state.get(dev)
        ranges = st["r"] if st is not None and st["e"] == epoch else []
        top = max([b for _, b in ranges]) if ranges else -1  # above it, no range can hold a seq
        dups, out, held = 0, res.records, 0
        kept = records
        if records and not (lo <= records[0]["seq"] and records[-1]["seq"] <= hi):
            kept = [r for r in records if lo <= r["seq"] <= hi]  # seqs increase (decoders)
            held = len(records) - len(kept)
        if top >= lo:  # some may be duplicates
            new = []
            for rec in kept:
                seq = rec["seq"]
                if seq <= top and any(a <= seq <= b for a, b in ranges):
                    dups += 1
                    out.append(StoredRecord(dev, epoch, seq, rec, ROUTINE, True, []))
                else:
                    new.append(rec)
        else:
            new = kept
        if self.alarms is None:
            out.extend([_stored(StoredRecord, (dev, epoch, rec["seq"], rec, ROUTINE, False, []))
                        for rec in new])
        else:
            for rec, events in zip(new, self.alarms.observe_many(dev, epoch, new, received_s)):
                lane = ROUTINE
                if events:
                    if any(e.kind in (RAISED, CLEARED) for e in events):
                        lane = ALARM
                    res.events.extend(events)
                out.append(_stored(StoredRecord, (dev, epoch, rec["seq"], rec, lane, False,
                                                  events)))
        if dups:
            out.sort(key=_by_seq)  # back in pack order (duplicates were listed first)
        self._count(res, "records_held.seq_range", held)
        self._advance(dev, epoch, lo, hi)
        res.accepted = True
        self._count(res, "accepted")
        self._count(res, "records", len(res.records))
        self._count(res, "duplicates", dups)
        return True

    def _advance(self, dev, epoch, lo, hi):
        if dev not in self._undo:
            self._undo[dev] = _copy_state(self._state.get(dev))
            self._json.pop(dev, None)
        st = self._state.get(dev)
        if st is None or epoch > st["e"]:
            self._state[dev] = {"e": epoch, "r": [[lo, hi]]}
            return
        merged = []
        for a, b in sorted(st["r"] + [[lo, hi]]):
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        st["r"] = merged[-self._max_ranges:]  # forget the oldest: they only count duplicates

    def _count(self, res, name, n=1):
        if n:
            res.counters[name] = res.counters.get(name, 0) + n
            self.counters[name] = self.counters.get(name, 0) + n

    def _reject(self, res, reason, what, hint=""):
        res.reason = reason
        if len(what) > _DETAIL_MAX:  # hostile input must not make a hostile log line
            what = what[:_DETAIL_MAX] + "..."
        res.detail = "%s: %s%s" % (res.source[:80] or "input", what, "; " + hint if hint else "")
        self._count(res, reason)
        return res

    # -- transactions and state ---------------------------------------------------------------
    def commit(self):
        """The outbox transaction committed: keep this batch's state changes."""
        self._undo.clear()
        self._dedup_added = []
        if self.alarms is not None:
            self.alarms.commit()

    def rollback(self):
        """The outbox transaction failed: undo this batch's state changes (send no acks)."""
        for dev, old in self._undo.items():
            self._json.pop(dev, None)
            if old is None:
                self._state.pop(dev, None)
            else:
                self._state[dev] = old
        self._undo.clear()
        for dedup_id in self._dedup_added:
            self._dedup.pop(dedup_id, None)
        self._dedup_added = []
        if self.alarms is not None:
            self.alarms.rollback()

    def forget(self, device_id):
        """Drop ``device_id``'s replay state (after re-provisioning a node whose boot epoch
        restarted) and its alarm key order; its next frame is accepted whatever its epoch."""
        if device_id not in self._undo:
            self._undo[device_id] = copy.deepcopy(self._state.get(device_id))
            self._json.pop(device_id, None)
        self._state.pop(device_id, None)
        if self.alarms is not None:
            self.alarms.forget(device_id)

    def replay_state(self):
        """``{"v": 1, "devices": {device_id: {"e": boot_epoch, "r": [[lo, hi], ...]}}}``."""
        return {"v": REPLAY_STATE_VERSION,
                "devices": {dev: _copy_state(st) for dev, st in self._state.items()}}

    def replay_state_json(self):
        """``replay_state()`` as compact JSON text (``json.dumps(replay_state(),
        separators=(",", ":"))``), without a copy: each device's part is kept until the
        device changes again (as ``AlarmEngine.state_json`` does)."""
        cache, touched, parts = self._json, self._undo, []
        for dev, st in self._state.items():
            text = cache.get(dev)
            if text is None:
                text = '%s:{"e":%d,"r":[%s]}' % (compact_json(dev), st["e"], ",".join(
                    ["[%d,%d]" % (a, b) for a, b in st["r"]]))
                if dev not in touched:  # it may still change before the commit
                    cache[dev] = text
            parts.append(text)
        return '{"v":%d,"devices":{%s}}' % (REPLAY_STATE_VERSION, ",".join(parts))

    def load_replay_state(self, state):
        """Resume from ``replay_state()``. Raises ``ValueError`` naming what is malformed."""
        if not isinstance(state, dict) or state.get("v") != REPLAY_STATE_VERSION \
                or not isinstance(state.get("devices"), dict):
            raise ValueError("replay state is not a version-%d replay_state() dict"
                             % REPLAY_STATE_VERSION)
        devices = {}
        for dev, st in state["devices"].items():
            try:
                e, ranges = st["e"], [[int(a), int(b)] for a, b in st["r"]]
                ok = (isinstance(e, int) and 0 <= e <= 0xFFFFFFFF and ranges
                      and all(0 <= a <= b <= 0xFFFFFFFF for a, b in ranges)
                      and ranges == sorted(ranges))
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError("replay state of device %r is malformed: repair it, or "
                                 "delete it to accept that device's next frame" % (dev,))
            devices[dev] = {"e": e, "r": ranges}
        self._state = devices
        self._undo.clear()
        self._json.clear()


_stored = tuple.__new__  # a StoredRecord from its 7 fields, without the NamedTuple's __new__


def _by_seq(sr):
    return sr.seq


_NOT_ACKED = "not acked, so the node keeps these records and sends them again"
