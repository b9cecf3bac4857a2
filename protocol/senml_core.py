"""The node's part of ``protocol.senml``: the civicedge profile's constants and the encoder
(``base_name``, ``pack_records``, ``encode_pack``) with every check it makes.

``protocol.senml`` imports and re-exports all of this and adds what only a gateway (and the
tests) use: the JSON labels, ``parse_base_name``, ``to_json_labels`` and the decoder's label
sets. A node imports only this module (``app/links/framed.py``), so it does not hold them
(docs/protocol-senml.md). The profile itself: ``protocol/senml.py``'s docstring.
Runs on MicroPython and CPython.
"""

from protocol import cbor, quality
from protocol.quantities_core import BY_QUANTITY, NUM

BVER, BN, BT, BU, BV, BS = -1, -2, -3, -4, -5, -6
N, U, V, VS, VB, S, T, UT, VD = 0, 1, 2, 3, 4, 5, 6, 7, 8
L_EPOCH = "bepoch"
L_SEQ = "bseq"
L_KIND = "bkind"
L_FLAG = "flag_"
L_FIRST = "first_seq"
L_LAST = "last_seq"
L_FIRST_EPOCH = "first_epoch"
L_LAST_EPOCH = "last_epoch"
# a gap's labels, in the record dict and in its ``dropped`` SenML record alike
GAP_FIELDS = (L_FIRST_EPOCH, L_FIRST, L_LAST_EPOCH, L_LAST)

READING, STATUS, GAP = "reading", "status", "gap"
KINDS = (READING, STATUS, GAP)
COUNTER_PREFIX = "count."
COUNT_UNIT = "count"
GAP_NAME = "dropped"
# RFC 5612's documentation PEN. A deployment sets its own IANA Private Enterprise Number
# (free from IANA) so its device URNs are globally unique.
DEFAULT_PEN = 32473
ABSOLUTE_TIME_MIN = 1 << 28             # RFC 8428 §4.5.3: smaller times are relative
_UINT32 = 1 << 32
_INT_LIMIT = 1 << 64                    # CBOR's integer range: -2**64 .. 2**64-1
_TIME_LIMIT = 1 << 53                   # times beyond this are not seconds a float can hold
_INF = float("inf")
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"
_COUNTER_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


class SenMLError(ValueError):
    """A pack, record or argument that does not follow the civicedge SenML profile."""


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x):
    return _is_int(x) or isinstance(x, float)


def _finite(x):
    if _is_int(x):
        return -_INT_LIMIT <= x < _INT_LIMIT
    return x == x and x != _INF and x != -_INF


def _is_uint32(x):
    return _is_int(x) and 0 <= x < _UINT32


def _check_chars(s, chars, lo, hi):
    # every character of s in chars: nothing left once they are stripped from both ends (one
    # C call; a generator over the characters made a str per character, at every pack)
    return isinstance(s, str) and lo <= len(s) <= hi and not s.strip(chars) and s[0] in chars[:36]


def base_name(device_id, pen=DEFAULT_PEN):
    """``urn:dev:org:<pen>-<device_id>:`` (RFC 9039 "org" DEV URN: an identifier the
    organisation with that PEN assigns). Raises ``SenMLError`` naming a bad argument."""
    if not _check_chars(device_id, _ID_CHARS, 1, 32):
        raise SenMLError("device_id %r must match [a-z0-9][a-z0-9-]{0,31}" % (device_id,))
    if not _is_int(pen) or not 0 <= pen < _UINT32:
        raise SenMLError("pen %r must be an IANA Private Enterprise Number" % (pen,))
    return "urn:dev:org:%d-%s:" % (pen, device_id)


# ---------------------------------------------------------------------------- encoding

def _value_record(where, item, untimed):
    if not isinstance(item, (list, tuple)) or len(item) != 3:
        raise SenMLError("%s: each value must be [quantity, value, flag], got %r" % (where, item))
    quantity, value, flag = item
    row = BY_QUANTITY.get(quantity) if isinstance(quantity, str) else None
    if row is None:
        raise SenMLError("%s: quantity %r is not in protocol/quantities.py" % (where, quantity))
    if flag not in quality.FLAGS:
        raise SenMLError("%s: %s flag %r is not one of %s"
                         % (where, quantity, flag, ", ".join(quality.FLAGS)))
    rec = {N: row[2]}
    if row[3] is not None:
        rec[U] = row[3]
    if value is None:
        if flag != quality.SENSOR_FAILED:
            raise SenMLError("%s: %s has no value but flag %r (only sensor_failed has none)"
                             % (where, quantity, flag))
    elif flag == quality.SENSOR_FAILED:
        raise SenMLError("%s: %s is sensor_failed but has value %r" % (where, quantity, value))
    elif row[4] == NUM:
        if not _is_num(value) or not _finite(value):
            raise SenMLError("%s: %s value %r must be a finite number (ints within 64 bits)"
                             % (where, quantity, value))
        rec[V] = value
    else:
        if not isinstance(value, str):
            raise SenMLError("%s: %s value %r must be text" % (where, quantity, value))
        rec[VS] = value
    if untimed and flag == quality.OK:
        flag = quality.TIME_UNSYNCED
    if flag != quality.OK:
        rec[L_FLAG] = flag
    return rec


_KEYS = {READING: ("seq", "t", "values", "kind"),
         STATUS: ("seq", "t", "kind", "values", "counters"),
         GAP: ("seq", "t", "kind", "dropped", "first_seq", "last_seq", "first_epoch",
               "last_epoch")}
_OPTIONAL = ("kind", "first_epoch", "last_epoch")   # a gap without epochs: the pack's epoch


def gap_range(where, fields, boot_epoch):
    """``((first_epoch, first_seq), (last_epoch, last_seq))`` of a gap from ``fields`` (a dict
    with the ``GAP_FIELDS`` labels; a missing epoch is ``boot_epoch``). Raises ``SenMLError``
    unless all four are uint32 and the first key is not after the last."""
    got = []
    for key in GAP_FIELDS:
        v = fields.get(key, boot_epoch) if key in _OPTIONAL else fields.get(key)
        if not _is_uint32(v):
            raise SenMLError("%s: %s %r must be a uint32" % (where, key, v))
        got.append(v)
    first, last = (got[0], got[1]), (got[2], got[3])
    if last < first:
        raise SenMLError("%s: the gap ends at (epoch %d, seq %d), before its start (epoch %d, "
                         "seq %d)" % (where, last[0], last[1], first[0], first[1]))
    return first, last


def _group(record, prev_seq, boot_epoch):
    """(seq, time, kind, list of SenML records without base fields) for one record dict."""
    if not isinstance(record, dict):
        raise SenMLError("each record must be a dict, got %r" % (record,))
    seq = record.get("seq")
    if not _is_uint32(seq):
        raise SenMLError("record seq %r must be a uint32" % (seq,))
    where = "record seq %d" % seq
    if prev_seq is not None and seq <= prev_seq:
        raise SenMLError("%s: seqs must increase within a pack (previous %d)" % (where, prev_seq))
    kind = record.get("kind", READING)
    if kind not in KINDS:
        raise SenMLError("%s: kind %r is not one of %s" % (where, kind, ", ".join(KINDS)))
    for key in _KEYS[kind]:
        if key not in _OPTIONAL and key not in record:
            raise SenMLError("%s: %s record has no %r" % (where, kind, key))
    for key in record:
        if key not in _KEYS[kind]:
            raise SenMLError("%s: unknown key %r in a %s record" % (where, key, kind))
    t = record["t"]
    if t is not None and (not _is_int(t) or t < ABSOLUTE_TIME_MIN):
        raise SenMLError("%s: t %r must be Unix seconds (int >= 2**28) or None" % (where, t))
    if kind == GAP:
        dropped = record["dropped"]
        if not _is_int(dropped) or dropped < 1:
            raise SenMLError("%s: dropped %r must be an int >= 1" % (where, dropped))
        gap_range(where, record, boot_epoch)
        rec = {N: GAP_NAME, U: COUNT_UNIT, V: dropped}
        for key in GAP_FIELDS:
            if key in record:
                rec[key] = record[key]
        return seq, t, kind, [rec]
    values = record["values"]
    if not isinstance(values, (list, tuple)):
        raise SenMLError("%s: values must be a list" % where)
    recs = []
    seen = []
    for item in values:
        rec = _value_record(where, item, t is None)
        if rec[N] in seen:
            raise SenMLError("%s: quantity %r appears twice" % (where, item[0]))
        seen.append(rec[N])
        recs.append(rec)
    if kind == STATUS:
        counters = record["counters"]
        if not isinstance(counters, dict):
            raise SenMLError("%s: counters must be a dict" % where)
        for name in counters:
            count = counters[name]
            if not _check_chars(name, _COUNTER_CHARS, 1, 32):
                raise SenMLError("%s: counter name %r must match [a-z0-9][a-z0-9_]{0,31}"
                                 % (where, name))
            if not _is_int(count) or count < 0:
                raise SenMLError("%s: counter %s = %r must be an int >= 0" % (where, name, count))
        for name in sorted(counters):
            recs.append({N: COUNTER_PREFIX + name, U: COUNT_UNIT, V: counters[name]})
    if not recs:
        raise SenMLError("%s: a %s record needs at least one value" % (where, kind))
    return seq, t, kind, recs


def pack_records(device_id, boot_epoch, records, pen=DEFAULT_PEN):
    """Yield the pack's SenML records (dicts with RFC 8428 integer labels), one at a time.

    ``records``: reading/status/gap dicts (brief issue 3) in increasing ``seq``. Raises
    ``SenMLError`` naming the first bad argument or record."""
    bn = base_name(device_id, pen)
    if not _is_uint32(boot_epoch):
        raise SenMLError("boot_epoch %r must be a uint32" % (boot_epoch,))
    if not isinstance(records, (list, tuple)) or not records:
        raise SenMLError("records must be a non-empty list")
    cur_time, cur_kind, prev_seq = 0, READING, None
    for record in records:
        seq, t, kind, recs = _group(record, prev_seq, boot_epoch)
        first = recs[0]
        first[L_SEQ] = seq
        if prev_seq is None:
            first[BN] = bn
            first[L_EPOCH] = boot_epoch
        prev_seq = seq
        base_t = 0 if t is None else t
        if base_t != cur_time:
            first[BT] = base_t
            cur_time = base_t
        if kind != cur_kind:
            first[L_KIND] = kind
            cur_kind = kind
        for rec in recs:
            yield rec


def encode_pack_into(buf, device_id, boot_epoch, records, pen=DEFAULT_PEN):
    """Write the pack as deterministic CBOR (``application/senml+cbor``) into the bytearray
    ``buf``, emptied first (its capacity kept: a node reuses one buffer for every pack);
    returns ``buf``. ``senml.encode_pack`` gives the same bytes as a new object.

    Streams one SenML record at a time. Raises ``SenMLError``."""
    count = 0
    for _ in pack_records(device_id, boot_epoch, records, pen):
        count += 1
    buf[:] = b""
    cbor.encode_head(buf, 4, count)
    for rec in pack_records(device_id, boot_epoch, records, pen):
        try:
            cbor.encode_into(buf, rec)
        except cbor.CBORError as e:             # an integer beyond CBOR's 64 bits
            raise SenMLError("record %s: %s" % (rec.get(N), e))
    return buf
