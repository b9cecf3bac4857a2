"""The fast path of ``gateway.upstream``'s readings packs (pure, no I/O).

``gateway.upstream`` builds a pack with ``protocol.senml.pack_records``, which checks every
record against the profile on the way (15-20 µs a 4-value reading here), then relabels it for
JSON. Nearly every stored row is a record the pipeline already checked: a reading or status
record with a trusted time, known quantities and numbers. For those, ``pack_json`` and
``pack_cbor`` write the same bytes directly, checking with plain type tests only what could
differ. Anything else (a gap record, a record without time, a key or value this path does
not know) makes them return None, and the caller takes the general path, which encodes the
record or reports it ``unencodable``: the fast path never decides that a record is bad, it
only declines.

``pack_json`` also takes a plain reading as the JSON text the outbox stored
(``Outbox.take(..., raw=True)``): one regex checks its shape (at most ``MAX_VALUES`` number
values of known quantities and flags) and its numbers are copied as text. The outbox wrote
them with ``int``/``float`` ``repr``, which is what ``json.dumps`` writes again, so the pack
is the same bytes as from the decoded record, without decoding it (the decode, mostly of the
floats, cost as much as writing the pack).
"""

import json
import re

import cbor2

from protocol import quality
from protocol.quantities import NUM, QUANTITIES
from protocol.senml import (
    ABSOLUTE_TIME_MIN,
    BN,
    BT,
    COUNT_UNIT,
    COUNTER_PREFIX,
    L_EPOCH,
    L_FLAG,
    L_KIND,
    L_SEQ,
    READING,
    STATUS,
    N,
    U,
    V,
    VS,
    SenMLError,
    base_name,
)

_U32 = 1 << 32
_I64 = 1 << 64
_text = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes
_int_repr, _float_repr = int.__repr__, float.__repr__
_GATEWAY_KEYS = ("alarms", "rx_t")  # as gateway.upstream: dropped from the pack
_KEYS = {READING: frozenset(("seq", "t", "values", "kind") + _GATEWAY_KEYS),
         STATUS: frozenset(("seq", "t", "values", "kind", "counters") + _GATEWAY_KEYS)}
_COUNTER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_COUNTER_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_FAILED, _NUM, _TEXT = 0, 1, 2


def _value_forms():
    """(quantity, flag) -> (value kind, JSON text before the value, JSON text after it,
    SenML name, unit or None, flag or None) for every quantity and flag of the profile."""
    forms = {}
    for _code, quantity, name, unit, kind in QUANTITIES:
        for flag in quality.FLAGS:
            head = '"n":' + _text(name) + ("" if unit is None else ',"u":' + _text(unit))
            tail = ("" if flag == quality.OK else ',"flag_":' + _text(flag)) + "}"
            if flag == quality.SENSOR_FAILED:
                form = (_FAILED, head + tail, "")
            elif kind == NUM:
                form = (_NUM, head + ',"v":', tail)
            else:
                form = (_TEXT, head + ',"vs":', tail)
            forms[(quantity, flag)] = form + (name, unit, None if flag == quality.OK else flag)
    return forms


_FORMS = _value_forms()
_NUM_FORMS = {key: form for key, form in _FORMS.items() if form[0] == _NUM}


def _value(form, value):
    """The JSON text of ``value`` for ``form``, or None if the profile needs the general path
    (a wrong type, a non-finite number, an int beyond 64 bits, a missing value)."""
    kind = form[0]
    if kind == _NUM:
        t = type(value)
        if t is int:
            return _int_repr(value) if -_I64 <= value < _I64 else None
        if t is float:
            return _float_repr(value) if value - value == 0.0 else None  # inf - inf is nan
        return None
    if kind == _TEXT:
        return _text(value) if type(value) is str else None
    return "" if value is None else None


def _counters(counters):
    """``[(name, count)]`` sorted, or None unless every name and count is the profile's."""
    if type(counters) is not dict:
        return None
    for name, count in counters.items():
        if type(name) is not str or not 1 <= len(name) <= 32 or name[0] not in _COUNTER_FIRST \
                or not _COUNTER_CHARS.issuperset(name) or type(count) is not int or count < 0:
            return None
    return sorted(counters.items())


def _dict_group(rec, prev):
    """``(seq, t, kind, forms, value texts, values, counters, None)`` of a record dict whose
    seq must be above ``prev``, or None."""
    kind = rec.get("kind", READING)
    keys = _KEYS.get(kind) if type(kind) is str else None
    if keys is None or not keys.issuperset(rec):
        return None
    seq, t, values = rec.get("seq"), rec.get("t"), rec.get("values")
    if type(seq) is not int or not prev < seq < _U32 or type(t) is not int \
            or t < ABSOLUTE_TIME_MIN or type(values) is not list:
        return None
    forms, texts, nums, seen = [], [], [], set()
    for item in values:
        if type(item) is not list or len(item) != 3:
            return None
        quantity, value, flag = item
        try:
            form = _FORMS.get((quantity, flag))
        except TypeError:  # an unhashable quantity or flag
            return None
        if form is None or quantity in seen:
            return None
        seen.add(quantity)
        text = _value(form, value)
        if text is None:
            return None
        forms.append(form)
        texts.append(text)
        nums.append(value)
    counters = ()
    if kind == STATUS:
        counters = _counters(rec.get("counters"))
        if counters is None:
            return None
    if not forms and not counters:
        return None
    return seq, t, kind, forms, texts, nums, counters, None


# A plain reading as the outbox stores it (compact JSON of the pipeline's record), with at
# most MAX_VALUES values: {"seq":N,"t":N,"values":[["quantity",number,"flag"],...]}. Numbers:
# an int of at most 19 digits (within 64 bits; not -0, which json.dumps writes 0), or a
# fraction without exponent below 1e16 (finite), as int/float repr wrote them.
MAX_VALUES = 8
_NUMBER = r"-?(?:0|[1-9][0-9]{0,15})\.[0-9]+|0|-?[1-9][0-9]{0,18}"
_ITEM = r'\["([a-z][a-z0-9_]{0,39})",(%s),"([a-z_]{1,20})"\]' % _NUMBER
_PLAIN = re.compile(r'\{"seq":(0|[1-9][0-9]{0,9}),"t":([1-9][0-9]{8,15}),"values":\[%s%s\]\}\Z'
                    % (_ITEM, "(?:,%s)?" * (MAX_VALUES - 1) % ((_ITEM,) * (MAX_VALUES - 1))))
_T_MIN_TEXT = str(ABSOLUTE_TIME_MIN)  # 9 digits: a 9-digit time below it is not absolute
_SHAPES = {}  # (quantities, flags) -> (forms, JSON template), or None: not for this path
_SHAPES_MAX = 4096  # a device profile has a few; the cache is cleared when this full


_SEQ, _T = r"0|[1-9][0-9]{0,9}", r"[1-9][0-9]{8,15}"


def _shape(quantities, flags):
    """``(forms, template, regex, with_bt, without_bt)`` of a plain reading's shape, or None:
    the forms of its values and its JSON template (``template % ((base,) + number texts)``
    is the record's SenML records); the regex that matches only stored plain readings of
    this shape (groups: seq, t, the number texts), and the templates of the record's SenML
    records from ``(t, seq) + number texts`` (with its ``bt``) and ``(seq,) + number
    texts`` (``t`` as the record before: no ``bt``)."""
    shape = None
    if len(set(quantities)) == len(quantities):
        forms = tuple(_NUM_FORMS.get(key) for key in zip(quantities, flags))
        if None not in forms:
            template = ",".join("{" + f[1].replace("%", "%%") + "%s" + f[2].replace("%", "%%")
                                for f in forms)
            regex = re.compile(r'\{"seq":(%s),"t":(%s),"values":\[%s\]\}\Z' % (_SEQ, _T, ",".join(
                r'\["%s",(%s),"%s"\]' % (re.escape(q), _NUMBER, re.escape(f))
                for q, f in zip(quantities, flags))))
            shape = (forms, "{%s" + template[1:], regex, '{"bt":%s,"bseq":%s,' + template[1:],
                     '{"bseq":%s,' + template[1:])
    if len(_SHAPES) >= _SHAPES_MAX:
        _SHAPES.clear()
    _SHAPES[(quantities, flags)] = shape
    return shape


def maybe_plain(text):
    """True if the stored JSON ``text`` may be a plain reading: an object starting with its
    seq, without alarm events, kind or escapes. Such a record needs nothing from
    ``gateway.upstream`` but its readings pack (``pack_json`` checks the rest, and a record
    it declines is decoded there and takes the dict path)."""
    return text.startswith('{"seq":') and '"alarms"' not in text and '"kind"' not in text \
        and "\\" not in text


def _text_group(text, prev):
    """The group of a stored plain reading's JSON text (seq above ``prev``), its numbers
    copied as text (values None: JSON only) and its shape's JSON template, or None."""
    m = _PLAIN.match(text)
    if m is None:
        return None
    g = m.groups()
    t_text = g[1]
    if len(t_text) == len(_T_MIN_TEXT) and t_text < _T_MIN_TEXT:
        return None
    seq = int(g[0])
    if not prev < seq < _U32:
        return None
    end = m.lastindex  # the last value's flag (groups: seq, t, then 3 a value)
    key = g[2:end:3], g[4:end:3]  # quantities, flags
    shape = _SHAPES[key] if key in _SHAPES else _shape(*key)
    if shape is None:
        return None
    return seq, int(t_text), READING, shape[0], g[3:end:3], None, (), shape[1]


def _plain_shape(text):
    """The shape (``_shape``) of a stored plain reading's JSON text, or None."""
    m = _PLAIN.match(text)
    if m is None:
        return None
    g, end = m.groups(), m.lastindex
    key = g[2:end:3], g[4:end:3]  # quantities, flags
    return _SHAPES[key] if key in _SHAPES else _shape(*key)


def plain_pack_json(device_id, boot_epoch, texts, pen):
    """``pack_json`` for ``texts`` that are all stored plain readings (JSON text, seq
    increasing), or None (then ``pack_json`` decides). Each text is matched by its shape's
    own regex, which holds its quantities and flags as literals and captures only its seq,
    time and number texts, and written by its shape's template: the same bytes in a third
    of the time, as a device sends readings of one shape."""
    bn = _base(device_id, boot_epoch, texts, pen)
    if bn is None:
        return None
    parts, prev, prev_t, shape, match = [], -1, None, None, None
    append = parts.append
    for text in texts:
        if type(text) is not str:
            return None
        m = match(text) if match is not None else None
        if m is None:  # another shape than the record before
            shape = _plain_shape(text)
            if shape is None:
                return None
            match = shape[2].match
            m = match(text)
        g = m.groups()
        seq = int(g[0])
        if not prev < seq < _U32:
            return None
        prev = seq
        t = g[1]
        if t != prev_t:
            if len(t) == len(_T_MIN_TEXT) and t < _T_MIN_TEXT:
                return None
            prev_t = t
            append(shape[3] % ((t,) + g[:1] + g[2:]))
        else:
            append(shape[4] % (g[:1] + g[2:]))
    parts[0] = '{"bn":' + _text(bn) + ',"bepoch":' + _int_repr(boot_epoch) + "," + parts[0][1:]
    try:
        return ("[" + ",".join(parts) + "]").encode("utf-8")
    except UnicodeError:  # a lone surrogate in the base name: the general path reports it
        return None


def _groups(records):
    """The group of each record (dict, or plain reading text), seqs increasing, or None if
    any record needs the general path."""
    out, prev = [], -1
    for rec in records:
        if type(rec) is str:
            group = _text_group(rec, prev)
        elif type(rec) is dict:
            group = _dict_group(rec, prev)
        else:
            return None
        if group is None:
            return None
        prev = group[0]
        out.append(group)
    return out


def _base(device_id, boot_epoch, records, pen):
    """The pack's base name, or None if it needs the general path (a bad epoch or device
    id, no records)."""
    if type(boot_epoch) is not int or not 0 <= boot_epoch < _U32 or not records:
        return None
    try:
        return base_name(device_id, pen)
    except SenMLError:
        return None


def _start(device_id, boot_epoch, records, pen):
    """``(base name, groups)``, or None if the pack needs the general path."""
    bn = _base(device_id, boot_epoch, records, pen)
    groups = None if bn is None else _groups(records)
    return None if groups is None else (bn, groups)


def pack_json(device_id, boot_epoch, records, pen):
    """The SenML JSON pack of ``records`` (stored records of one device and boot epoch,
    ``seq`` increasing: dicts, or plain readings' stored JSON text) exactly as
    ``gateway.upstream`` writes it, or None when a record needs the general path."""
    started = _start(device_id, boot_epoch, records, pen)
    if started is None:
        return None
    bn, groups = started
    parts, cur_t, cur_kind = [], 0, READING
    base = '"bn":' + _text(bn) + ',"bepoch":' + _int_repr(boot_epoch) + ","
    for seq, t, kind, forms, texts, _values, counters, template in groups:
        if t != cur_t:
            base += '"bt":' + _int_repr(t) + ","
            cur_t = t
        base += '"bseq":' + _int_repr(seq) + ","
        if kind != cur_kind:
            base += '"bkind":' + _text(kind) + ","
            cur_kind = kind
        if template is not None:  # a stored plain reading: one format for all its values
            parts.append(template % ((base,) + texts))
            base = ""
            continue
        for form, text in zip(forms, texts):
            parts.append("{" + base + form[1] + text + form[2])
            base = ""
        for name, count in counters:
            parts.append('{%s"n":%s,"u":"%s","v":%s}' % (base, _text(COUNTER_PREFIX + name),
                                                        COUNT_UNIT, _int_repr(count)))
            base = ""
    try:
        return ("[" + ",".join(parts) + "]").encode("utf-8")
    except UnicodeError:  # a lone surrogate: the general path reports it
        return None


def pack_cbor(device_id, boot_epoch, records, pen):
    """The SenML CBOR pack of ``records`` (dicts) exactly as ``gateway.upstream`` writes it
    (RFC 8949 §4.2 deterministic, as ``protocol.senml.encode_pack``), or None when a record
    needs the general path."""
    if any(type(r) is not dict for r in records):
        return None  # stored text carries its numbers as text: JSON only
    started = _start(device_id, boot_epoch, records, pen)
    if started is None:
        return None
    bn, groups = started
    pack, cur_t, cur_kind = [], 0, READING
    for seq, t, kind, forms, _texts, values, counters, _template in groups:
        recs = []
        for form, value in zip(forms, values):
            rec = {N: form[3]}
            if form[4] is not None:
                rec[U] = form[4]
            if form[0] == _NUM:
                rec[V] = value
            elif form[0] == _TEXT:
                rec[VS] = value
            if form[5] is not None:
                rec[L_FLAG] = form[5]
            recs.append(rec)
        recs += [{N: COUNTER_PREFIX + name, U: COUNT_UNIT, V: count}
                 for name, count in counters]
        first = recs[0]
        first[L_SEQ] = seq
        if not pack:
            first[BN], first[L_EPOCH] = bn, boot_epoch
        if t != cur_t:
            first[BT] = cur_t = t
        if kind != cur_kind:
            first[L_KIND] = cur_kind = kind
        pack += recs
    try:
        return cbor2.dumps(pack, canonical=True)
    except (UnicodeError, ValueError, cbor2.CBOREncodeError):  # the general path reports it
        return None
