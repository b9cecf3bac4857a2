"""Readings packs of ``gateway.upstream``, the general path (pure): a stored record as the SenML
profile takes it (``senml_record``: the gateway's keys dropped, a time given to an untimed
record), written as SenML JSON or CBOR by ``protocol.senml.pack_records`` with every check
of the profile (``_encode_pack``), and read back as a platform does (``decode_readings``).
``gateway.upstream_fast`` writes the same bytes for the usual records; ``gateway.upstream``
re-exports these names.
"""

import json
import math

import cbor2

from protocol import quality
from protocol.senml import (
    BN, BT, GAP_FIELDS, JSON_LABELS, L_EPOCH, L_FLAG, L_KIND, L_SEQ, N, U, V, VS, SenMLError,
    pack_records)
from protocol.senml_decode import decode_pack

SENML_JSON, SENML_CBOR = "senml-json", "senml-cbor"  # as gateway.config.ENCODINGS
_GATEWAY_KEYS = ("alarms", "rx_t")  # what the gateway adds to a stored record
_ABS_TIME_MIN = 1 << 28  # RFC 8428 §4.5.3: smaller times are relative
_TIME_MAX = 1 << 53


def _is_time(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) \
        and _ABS_TIME_MIN <= x < _TIME_MAX


def _unsynced(item):
    if isinstance(item, (list, tuple)) and len(item) == 3 and item[2] == quality.OK:
        return [item[0], item[1], quality.TIME_UNSYNCED]
    return item


def senml_record(record, rx_wall_s=None):
    """The stored ``record`` as ``protocol.senml.pack_records`` takes it: without the keys the
    gateway added (``alarms``, ``rx_t``), with a whole-second ``t``, and a record without time
    given the receive time (``rx_t``, else ``rx_wall_s``) with its ``ok`` values flagged
    ``time_unsynced``. Returns a new dict; raises ``SenMLError`` if ``record`` is no dict."""
    if not isinstance(record, dict):
        raise SenMLError("the stored record is %s, not a dict" % type(record).__name__)
    out = {k: v for k, v in record.items() if k not in _GATEWAY_KEYS}
    t = out.get("t")
    if isinstance(t, float) and t.is_integer():
        out["t"] = t = int(t)
    if t is None:
        rx = record.get("rx_t")
        rx = rx if _is_time(rx) else rx_wall_s
        if _is_time(rx):
            out["t"] = int(rx)  # whole seconds, as the profile's times
            if isinstance(out.get("values"), (list, tuple)):
                out["values"] = [_unsynced(item) for item in out["values"]]
    return out


# SenML JSON labels in reading order: base fields first (as RFC 8428's examples), then the rest
_JSON_ORDER = tuple((k, JSON_LABELS.get(k, k)) for k in (
    BN, L_EPOCH, BT, L_SEQ, L_KIND, N, U, V, VS, L_FLAG) + GAP_FIELDS)


def _json_labels(rec):
    out = {name: rec[k] for k, name in _JSON_ORDER if k in rec}
    if len(out) != len(rec):  # a label this order does not know: keep it, never drop it
        out.update((JSON_LABELS.get(k, k), v) for k, v in rec.items() if k not in out)
    return out


def _encode_pack(device_id, boot_epoch, records, encoding, pen):
    pack = list(pack_records(device_id, boot_epoch, records, pen))
    try:
        if encoding == SENML_CBOR:
            return cbor2.dumps(pack, canonical=True)
        return json.dumps([_json_labels(rec) for rec in pack], separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (UnicodeError, cbor2.CBOREncodeError) as e:  # text that is no valid Unicode
        raise SenMLError("a text value cannot be encoded: %s" % (e,)) from e


def _prepared(row):
    """The row's record as ``pack_records`` takes it (``senml_record``)."""
    return senml_record(row.record, row.rx_wall_s)


def decode_readings(payload, encoding=SENML_JSON):
    """A readings payload back to ``{"device_id", "pen", "boot_epoch", "records"}`` (what a
    platform does; ``protocol.senml_decode.decode_pack``). Raises ``SenMLError``."""
    try:
        obj = cbor2.loads(payload) if encoding == SENML_CBOR else json.loads(payload)
    except (ValueError, TypeError, EOFError, cbor2.CBORDecodeError) as e:
        raise SenMLError("payload is not %s: %s" % (encoding, e)) from e
    return decode_pack(obj)
