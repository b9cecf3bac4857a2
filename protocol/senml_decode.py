"""Decoding a civicedge SenML pack back into records: the gateway's and the tests' side.

The node never imports this (it only encodes, ``protocol.senml``), which keeps the node's
RAM free of it. ``decode_pack`` takes what ``cbor2.loads`` (or ``protocol.cbor.loads``, or
``json.loads`` of the JSON form: text labels are accepted too) returns and raises only
``SenMLError``. The profile is described in ``protocol.senml`` and docs/protocol-senml.md.
Portable.
"""

from protocol import cbor, quality
from protocol.quantities import BY_SENML_NAME, NUM, TEXT
from protocol.senml_usual import decode_usual as _decode_usual  # the fast path for node packs
from protocol.senml import (  # the profile's constants and checks are shared, not copied
    ABSOLUTE_TIME_MIN,
    BN,
    BT,
    BU,
    BVER,
    COUNTER_PREFIX,
    COUNT_UNIT,
    GAP,
    GAP_FIELDS,
    GAP_NAME,
    JSON_LABELS,
    KINDS,
    L_EPOCH,
    L_FLAG,
    L_KIND,
    L_SEQ,
    N,
    READING,
    STATUS,
    SenMLError,
    T,
    U,
    V,
    VS,
    _BY_JSON,
    _COUNTER_CHARS,
    _EXTENSIONS,
    _INT_LIMIT,
    _UNUSED,
    _check_chars,
    _finite,
    _is_int,
    _is_num,
    _is_time,
    _is_uint32,
    gap_range,
    parse_base_name,
)


# ---------------------------------------------------------------------------- decoding

def _labels(raw, i):
    """Record ``i`` with labels as integers (standard) or extension names."""
    if not isinstance(raw, dict):
        raise SenMLError("record %d is not a map" % i)
    rec = {}
    for key in raw:
        if _is_int(key):
            if key not in JSON_LABELS:
                raise SenMLError("record %d: unknown integer label %d (RFC 8428's table is closed)"
                                 % (i, key))
            label = key
        elif isinstance(key, str):
            if key in _BY_JSON:
                label = _BY_JSON[key]
            elif key in _EXTENSIONS:
                label = key
            elif key.endswith("_"):
                raise SenMLError("record %d: must-understand label %r is not in this profile"
                                 % (i, key))
            else:
                continue                  # RFC 8428 §4.4: ignore what we do not know
        else:
            raise SenMLError("record %d: label %r is neither an integer nor text" % (i, key))
        if label in _UNUSED:
            raise SenMLError("record %d: label %r is not used by this profile"
                             % (i, JSON_LABELS[label]))
        if label in rec:
            raise SenMLError("record %d: label %r given twice" % (i, JSON_LABELS.get(label, label)))
        rec[label] = raw[key]
    return rec


def _time(i, bt, t):
    """Resolved time: None for 0 (no trusted time), else whole Unix seconds."""
    if not _is_time(t):
        raise SenMLError("record %d: t %r must be a finite number" % (i, t))
    r = bt + t
    if r == 0:
        return None
    if r < ABSOLUTE_TIME_MIN:
        raise SenMLError("record %d: time %r is relative; the profile uses absolute Unix seconds "
                         "or none (0)" % (i, r))
    if isinstance(r, float):
        if r != int(r):
            raise SenMLError("record %d: time %r is not whole seconds" % (i, r))
        r = int(r)
    return r


def _entry(i, rec, bu):
    name = rec.get(N)
    if not isinstance(name, str):
        raise SenMLError("record %d: name n must be text, got %r" % (i, name))
    unit = rec.get(U, bu)
    if unit is not None and not isinstance(unit, str):
        raise SenMLError("record %d: unit %r must be text" % (i, unit))
    flag = rec.get(L_FLAG, quality.OK)
    if not isinstance(flag, str) or flag not in quality.FLAGS:
        raise SenMLError("record %d: flag_ %r is not one of %s"
                         % (i, flag, ", ".join(quality.FLAGS)))
    if V in rec and VS in rec:
        raise SenMLError("record %d (%s): has both v and vs" % (i, name))
    gap = {}
    for key in GAP_FIELDS:
        if key in rec:
            gap[key] = rec[key]
    return {"i": i, "n": name, "u": unit, "flag": flag, "v": rec.get(V, rec.get(VS)),
            "vs": VS in rec, "has": V in rec or VS in rec, "gap": gap}


def _where(e):
    return "record %d (%s)" % (e["i"], e["n"])


def _count(e):
    if e["u"] != COUNT_UNIT:
        raise SenMLError("%s: unit %r should be %r" % (_where(e), e["u"], COUNT_UNIT))
    if e["flag"] != quality.OK or e["vs"] or not _is_int(e["v"]) or not 0 <= e["v"] < _INT_LIMIT:
        raise SenMLError("%s: a count needs v, an int >= 0, and no flag_" % _where(e))
    return e["v"]


def _value(e):
    row = BY_SENML_NAME.get(e["n"])
    if row is None:
        raise SenMLError("%s: name %r is not a quantity in protocol/quantities.py"
                         % (_where(e), e["n"]))
    if e["u"] != row[3]:
        raise SenMLError("%s: unit %r should be %r" % (_where(e), e["u"], row[3]))
    if e["flag"] == quality.SENSOR_FAILED:
        if e["has"]:
            raise SenMLError("%s: sensor_failed but has a value" % _where(e))
        return [row[1], None, e["flag"]]
    if not e["has"]:
        raise SenMLError("%s: no value and flag %r is not sensor_failed" % (_where(e), e["flag"]))
    v = e["v"]
    if row[4] == NUM and (e["vs"] or not _is_num(v) or not _finite(v)):
        raise SenMLError("%s: v %r must be a finite number" % (_where(e), v))
    if row[4] == TEXT and (not e["vs"] or not isinstance(v, str)):
        raise SenMLError("%s: value must be text (vs)" % _where(e))
    return [row[1], v, e["flag"]]


def _finish(group, epoch):
    entries, kind = group["entries"], group["kind"]
    out = {"seq": group["seq"], "t": group["t"]}
    if kind == GAP:
        e = entries[0]
        if len(entries) != 1 or e["n"] != GAP_NAME:
            raise SenMLError("gap seq %d must be one record named %r" % (group["seq"], GAP_NAME))
        dropped = _count(e)
        if dropped < 1:
            raise SenMLError("%s: a gap needs dropped >= 1" % _where(e))
        first, last = gap_range(_where(e), e["gap"], epoch)   # epochs default to bepoch
        out.update(kind=GAP, dropped=dropped, first_epoch=first[0], first_seq=first[1],
                   last_epoch=last[0], last_seq=last[1])
        return out
    values, counters, names = [], {}, []
    for e in entries:
        if e["gap"]:
            raise SenMLError("%s: %s belong in gap records only"
                             % (_where(e), "/".join(GAP_FIELDS)))
        if e["n"] in names:
            raise SenMLError("%s: name appears twice in seq %d" % (_where(e), group["seq"]))
        names.append(e["n"])
        if kind == STATUS and e["n"].startswith(COUNTER_PREFIX):
            cname = e["n"][len(COUNTER_PREFIX):]
            if not _check_chars(cname, _COUNTER_CHARS, 1, 32):
                raise SenMLError("%s: bad counter name" % _where(e))
            counters[cname] = _count(e)
        else:
            values.append(_value(e))
    out["values"] = values
    if kind == STATUS:
        out.update(kind=STATUS, counters=counters)
    return out


def decode_pack(pack):
    """Records of one pack, from the objects ``cbor2.loads`` / ``protocol.cbor.loads`` /
    ``json.loads`` give: ``{"device_id", "pen", "boot_epoch", "records": [reading, status
    and gap dicts as in brief issue 3]}``. A gap always comes back with ``first_epoch`` and
    ``last_epoch`` (the pack's ``boot_epoch`` where the pack leaves them out). Raises
    ``SenMLError`` naming what is wrong."""
    out = _decode_usual(pack)
    return out if out is not None else _decode_checked(pack)


def _decode_checked(pack):
    """``decode_pack`` by the book: every label and rule checked in pack order, so the first
    problem is the one named. The reference ``_decode_usual`` (``protocol.senml_usual``) must
    agree with."""
    if not isinstance(pack, list) or not pack:
        raise SenMLError("a pack must be a non-empty array of SenML records")
    bn = epoch = group = prev_seq = bu = None
    bt, kind, records = 0, READING, []
    for i, raw in enumerate(pack):
        rec = _labels(raw, i)
        if i == 0 and (BN not in rec or L_EPOCH not in rec):
            raise SenMLError("record 0 must carry the base name bn and bepoch")
        if BVER in rec and (not _is_int(rec[BVER]) or rec[BVER] != 10):
            raise SenMLError("record %d: bver %r is not 10 (RFC 8428)" % (i, rec[BVER]))
        if BN in rec:
            if bn is not None and rec[BN] != bn:
                raise SenMLError("record %d: base name changes; one pack is one device" % i)
            pen, device_id = parse_base_name(rec[BN])
            bn = rec[BN]
        if L_EPOCH in rec:
            if not _is_uint32(rec[L_EPOCH]) or (epoch is not None and rec[L_EPOCH] != epoch):
                raise SenMLError("record %d: bepoch %r must be one uint32 for the whole pack"
                                 % (i, rec[L_EPOCH]))
            epoch = rec[L_EPOCH]
        if BT in rec:
            if not _is_time(rec[BT]):
                raise SenMLError("record %d: bt %r must be a finite number" % (i, rec[BT]))
            bt = rec[BT]
        if BU in rec:
            if not isinstance(rec[BU], str):
                raise SenMLError("record %d: bu %r must be text" % (i, rec[BU]))
            bu = rec[BU]
        starts = L_SEQ in rec
        if L_KIND in rec:
            if not starts or not isinstance(rec[L_KIND], str) or rec[L_KIND] not in KINDS:
                raise SenMLError("record %d: bkind %r must be one of %s, at a bseq"
                                 % (i, rec[L_KIND], ", ".join(KINDS)))
            kind = rec[L_KIND]
        t = _time(i, bt, rec.get(T, 0))
        if starts:
            seq = rec[L_SEQ]
            if not _is_uint32(seq) or (prev_seq is not None and seq <= prev_seq):
                raise SenMLError("record %d: bseq %r must be a uint32 above the previous one"
                                 % (i, seq))
            if group is not None:
                records.append(_finish(group, epoch))
            group = {"seq": seq, "t": t, "kind": kind, "entries": []}
            prev_seq = seq
        elif group is None:
            raise SenMLError("record %d: no bseq before it" % i)
        elif t != group["t"]:
            raise SenMLError("record %d: time %r differs from seq %d's %r"
                             % (i, t, group["seq"], group["t"]))
        group["entries"].append(_entry(i, rec, bu))
    records.append(_finish(group, epoch))
    return {"device_id": device_id, "pen": pen, "boot_epoch": epoch, "records": records}


def decode_pack_bytes(data):
    """``decode_pack`` of CBOR bytes read with ``protocol.cbor.loads`` (node side, tests).

    Raises only ``SenMLError``."""
    try:
        obj = cbor.loads(data)
    except cbor.CBORError as e:
        raise SenMLError("pack is not valid CBOR: %s" % e)
    return decode_pack(obj)
