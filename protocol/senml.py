"""The civicedge reading record as a SenML pack (RFC 8428) in deterministic CBOR. Portable.

Theory of operation (the full profile, with examples: ``docs/protocol-senml.md``)
-------------------------------------------------------------------------------
One pack = one device, one boot epoch, a batch of records (reading, status, gap) in
increasing ``seq``. Each record becomes a *group* of SenML records, one per value, that
share its sequence number and time. Standard labels use RFC 8428's integer keys; the
profile's extension labels are text keys (the integer table is closed):

``bepoch`` (base field)  boot epoch, in the first SenML record of the pack.
``bseq``   (base field)  ``seq`` of the group; its presence starts a new group.
``bkind``  (base field)  ``"status"`` / ``"gap"`` / ``"reading"``; written only when the
                         kind differs from the previous group's (a pack starts as reading).
``flag_``  (regular, must-understand)  the quality flag when it is not ``ok``.
``first_seq``, ``last_seq`` (regular)  the dropped range, in a gap's ``dropped`` record.
``first_epoch``, ``last_epoch`` (regular)  the boot epochs of ``first_seq`` and ``last_seq``
                         (a drop can span boots); written whenever the record gives them,
                         and a record without them means the pack's ``bepoch``.

New base labels start with "b" and regular ones must not (RFC 8428 §12.2). Base fields
apply to their record and every later one until set again, which is how a group's records
inherit ``bseq``/``bt`` without repeating them. Only ``flag_`` ends in "_": a processor
that ignored it would take a spike or out-of-range number as a good measurement, or
choke on a failed sensor's record that has no value, so RFC 8428 §4.4 makes it reject the
pack instead. The record key and kind are safe to ignore: the values stay right.

Time: ``bt`` is set in a group's first record whenever its time differs from the base in
force (a pack starts with none, i.e. 0). A record with no trusted time (``t`` None) gets
base time 0, which SenML reads as "relative to now": no absolute time is invented, and its
values carry ``flag_: "time_unsynced"`` unless they already have a worse flag (so a value
flagged ``ok`` in an untimed record decodes as ``time_unsynced``). A ``sensor_failed``
value has no ``v``; every other value has exactly one ``v`` (number) or ``vs`` (text).
Status counters are records ``count.<name>`` in unit ``count``; a gap is one record
``dropped`` (unit ``count``) with ``first_seq``/``last_seq`` and, when given,
``first_epoch``/``last_epoch``; the range is ordered by key: ``(first_epoch, first_seq) <=
(last_epoch, last_seq)`` (``last_seq`` may be below ``first_seq`` in a later epoch).

``encode_pack`` raises ``SenMLError`` (a ``ValueError``) naming a bad argument. Decoding
is ``protocol.senml_decode`` (the node never needs it).
"""

from protocol import cbor, quality
from protocol.quantities import BY_QUANTITY, BY_SENML_NAME, NUM, TEXT

BVER, BN, BT, BU, BV, BS = -1, -2, -3, -4, -5, -6
N, U, V, VS, VB, S, T, UT, VD = 0, 1, 2, 3, 4, 5, 6, 7, 8
JSON_LABELS = {BVER: "bver", BN: "bn", BT: "bt", BU: "bu", BV: "bv", BS: "bs", N: "n",
               U: "u", V: "v", VS: "vs", VB: "vb", S: "s", T: "t", UT: "ut", VD: "vd"}
_BY_JSON = {}
for _k in JSON_LABELS:
    _BY_JSON[JSON_LABELS[_k]] = _k
del _k
_UNUSED = (BV, BS, VB, S, UT, VD)       # valid SenML the profile never writes: refused

L_EPOCH = "bepoch"
L_SEQ = "bseq"
L_KIND = "bkind"
L_FLAG = "flag_"
L_FIRST = "first_seq"
L_LAST = "last_seq"
L_FIRST_EPOCH = "first_epoch"
L_LAST_EPOCH = "last_epoch"
_EXTENSIONS = (L_EPOCH, L_SEQ, L_KIND, L_FLAG, L_FIRST, L_LAST, L_FIRST_EPOCH, L_LAST_EPOCH)
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


def _is_time(x):
    return _is_num(x) and _finite(x) and -_TIME_LIMIT < x < _TIME_LIMIT


def _is_uint32(x):
    return _is_int(x) and 0 <= x < _UINT32


def _check_chars(s, chars, lo, hi):
    return isinstance(s, str) and lo <= len(s) <= hi and all(c in chars for c in s) \
        and s[0] in chars[:36]


def base_name(device_id, pen=DEFAULT_PEN):
    """``urn:dev:org:<pen>-<device_id>:`` (RFC 9039 "org" DEV URN: an identifier the
    organisation with that PEN assigns). Raises ``SenMLError`` naming a bad argument."""
    if not _check_chars(device_id, _ID_CHARS, 1, 32):
        raise SenMLError("device_id %r must match [a-z0-9][a-z0-9-]{0,31}" % (device_id,))
    if not _is_int(pen) or not 0 <= pen < _UINT32:
        raise SenMLError("pen %r must be an IANA Private Enterprise Number" % (pen,))
    return "urn:dev:org:%d-%s:" % (pen, device_id)


def parse_base_name(bn):
    """``(pen, device_id)`` from a base name; raises ``SenMLError`` saying what is wrong."""
    prefix = "urn:dev:org:"
    if not isinstance(bn, str) or not bn.startswith(prefix) or not bn.endswith(":"):
        raise SenMLError("base name %r is not urn:dev:org:<pen>-<device_id>:" % (bn,))
    body = bn[len(prefix):-1]
    dash = body.find("-")
    pen_text = body[:dash] if dash > 0 else ""
    if not pen_text or not all(c in "0123456789" for c in pen_text) or pen_text[0] == "0" \
            or len(pen_text) > 10 or int(pen_text) >= _UINT32:
        raise SenMLError("base name %r has no numeric PEN" % (bn,))
    device_id = body[dash + 1:]
    if not _check_chars(device_id, _ID_CHARS, 1, 32):
        raise SenMLError("base name %r has an invalid device id" % (bn,))
    return int(pen_text), device_id


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


def encode_pack(device_id, boot_epoch, records, pen=DEFAULT_PEN):
    """The pack as deterministic CBOR bytes (``application/senml+cbor``).

    Streams one SenML record at a time into one buffer. Raises ``SenMLError``."""
    count = 0
    for _ in pack_records(device_id, boot_epoch, records, pen):
        count += 1
    buf = bytearray()
    cbor.encode_head(buf, 4, count)
    for rec in pack_records(device_id, boot_epoch, records, pen):
        try:
            cbor.encode_into(buf, rec)
        except cbor.CBORError as e:             # an integer beyond CBOR's 64 bits
            raise SenMLError("record %s: %s" % (rec.get(N), e))
    return bytes(buf)


def to_json_labels(pack):
    """The same pack with RFC 8428 JSON labels (``bn``, ``n``, ...) for SenML JSON."""
    out = []
    for rec in pack:
        out.append(dict((JSON_LABELS.get(k, k), v) for k, v in rec.items()))
    return out
