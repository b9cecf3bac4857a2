"""The usual SenML pack, decoded fast: ``decode_usual`` for ``protocol.senml_decode``.

What nodes send: integer labels, readings and status records (no gaps), nothing unknown.
``decode_usual`` decodes just that shape in one pass, several times faster than
``senml_decode._decode_checked`` (docs/benchmarks.md, gateway-ingest), and returns None at
the first thing outside it, valid or not: then ``_decode_checked`` gives the result or names
the error. So it returns only what ``_decode_checked`` would, and never raises: each key and
value is type-checked (exact int/str/float: True, 1.0 and Decimal(1) all equal the label 1)
before it is compared or hashed. Base fields are looked for only in records that carry one.

Two record shapes make up nearly every pack (``protocol.senml.encode_pack`` writes map keys
in deterministic order, which ``cbor2`` keeps): a value of the group in progress, keys
exactly ``(n, u, v)``, and the first value of a reading group with its own time, ``(n, u, v,
bt, bseq)``. Each has a short path that checks the same things as the general one in fewer
steps (a numeric quantity's name in one lookup, then its unit); any doubt (another shape, a group
of a status record, a name that is no numeric quantity, a value out of range) and the record
takes the general path, which decides. A key passes the shape test only if it *is* the
label's int object (CPython and MicroPython share small ints; where an interpreter did not,
every record would take the general path), so a ``False`` or ``0.0`` key that equals a label
never takes a short path. tests/property/test_senml_usual_props.py holds it to
``_decode_checked``, and checks that what it returns passes ``gateway.pipeline``'s record
check (which the pipeline then skips). Portable (MicroPython too).
"""

from protocol import quality
from protocol.quantities import BY_SENML_NAME, NUM, QUANTITIES
from protocol.senml import (
    ABSOLUTE_TIME_MIN, BN, BT, BU, BVER, COUNTER_PREFIX, COUNT_UNIT, L_EPOCH, L_FLAG, L_KIND,
    L_SEQ, N, READING, STATUS, SenMLError, T, U, V, VS, _COUNTER_CHARS, _INF, _INT_LIMIT,
    _TIME_LIMIT, _UINT32, _check_chars, parse_base_name)

_REGULAR = {N, U, V, VS, T, L_FLAG}
_BASE = {BVER, BN, BT, BU, L_EPOCH, L_SEQ, L_KIND}
_OK, _FAILED, _BAD = quality.OK, quality.SENSOR_FAILED, "bad"
_T_MIN = ABSOLUTE_TIME_MIN  # an int time this big is _usual_time's answer as it is
_NAMES = {}  # base name -> parse_base_name's (pure) answer: one entry per device of the site
# SenML name -> (quantity, unit), for the numeric quantities (a name has one unit): a short
# path's one lookup, then the unit compared
_NUM_Q = dict((row[2], (row[1], row[3])) for row in QUANTITIES if row[4] == NUM)


def _usual_time(x):
    """``_time``'s result for bt + t = ``x``, or ``_BAD`` (also for x not a time)."""
    if not ((type(x) is int or type(x) is float) and -_TIME_LIMIT < x < _TIME_LIMIT):
        return _BAD                              # NaN and infinities fail the range test too
    if x == 0:
        return None
    if x < ABSOLUTE_TIME_MIN or (type(x) is float and x != int(x)):
        return _BAD
    return int(x)


def _usual_name(bn):
    got = _NAMES.get(bn)
    if got is None:
        try:
            got = parse_base_name(bn)
        except SenMLError:
            return None
        if len(_NAMES) >= 4096:
            _NAMES.clear()
        _NAMES[bn] = got
    return got


def decode_usual(pack):
    """``decode_pack``'s result for a usual pack (the objects ``cbor2.loads`` gives), or
    None for anything else (valid or not). Never raises."""
    try:
        return _decode(pack)
    except TypeError:  # an unhashable name or unit met a short path's lookup: not usual
        return None


def _decode(pack):
    if type(pack) is not list or not pack:
        return None
    regular, base, flags, by_name = _REGULAR, _BASE, quality.FLAGS, BY_SENML_NAME
    bn = epoch = pen = device_id = bu = values = names = counters = g_t = bt_t = None
    bt, prev, status, records = 0, -1, False, []
    num_q, ok, inf, lim = _NUM_Q, _OK, _INF, _INT_LIMIT
    n_, u_, v_, bt_, seq_ = N, U, V, BT, L_SEQ
    for raw in pack:
        if type(raw) is not dict:
            return None
        size = len(raw)
        # -- the short paths: exactly what the general path below does for these shapes --
        if size == 3:  # (n, u, v): a value of the group in progress
            a, b, c = raw  # the keys: each must BE the label's int (True == 1 is no label)
            if (a is n_ and b is u_ and c is v_ and values is not None
                    and bt_t == g_t):  # g_t is never _BAD; a quantity is no status counter
                name, x = raw[n_], raw[v_]
                q = num_q.get(name)  # a numeric quantity's name, and its unit
                if q is not None and raw[u_] == q[1] and name not in names and (
                        -inf < x < inf if type(x) is float else
                        type(x) is int and -lim <= x < lim):
                    names.append(name)
                    values.append([q[0], x, ok])
                    continue
        elif size == 5:  # (n, u, v, bt, bseq): the first value of a reading group
            a, b, c, d, e = raw
            if (a is n_ and b is u_ and c is v_ and d is bt_ and type(e) is str and e == seq_
                    and bn is not None and not status):
                name, x, bt_raw, seq = raw[n_], raw[v_], raw[bt_], raw[seq_]
                q = num_q.get(name)
                if (q is not None and raw[u_] == q[1] and type(seq) is int
                        and prev < seq < _UINT32
                        and (-_TIME_LIMIT < bt_raw < _TIME_LIMIT if type(bt_raw) is int
                             or type(bt_raw) is float else False)
                        and (-inf < x < inf if type(x) is float else
                             type(x) is int and -lim <= x < lim)):
                    t = bt_raw if type(bt_raw) is int and bt_raw >= _T_MIN else _usual_time(bt_raw)
                    if t is not _BAD:
                        bt, bt_t, g_t, prev = bt_raw, t, t, seq
                        names, values = [name], [[q[0], x, ok]]
                        records.append({"seq": seq, "t": t, "values": values})
                        continue
        # -- the general path -----------------------------------------------------------------
        has_base = starts = False
        for key in raw:
            if type(key) is not int and type(key) is not str:
                return None
            if key not in regular:
                if key not in base:
                    return None
                has_base = True
        if has_base:
            if bn is None and (BN not in raw or L_EPOCH not in raw):
                return None                     # record 0 carries both
            if BVER in raw and (type(raw[BVER]) is not int or raw[BVER] != 10):
                return None
            if BN in raw:
                x = raw[BN]
                if type(x) is not str or (bn is not None and x != bn):
                    return None
                if bn is None:
                    got = _usual_name(x)
                    if got is None:
                        return None
                    (pen, device_id), bn = got, x
            if L_EPOCH in raw:
                x = raw[L_EPOCH]
                if type(x) is not int or not 0 <= x < _UINT32 or (epoch is not None and x != epoch):
                    return None
                epoch = x
            if BT in raw:
                bt = raw[BT]
                if not ((type(bt) is int or type(bt) is float) and -_TIME_LIMIT < bt < _TIME_LIMIT):
                    return None
                bt_t = _usual_time(bt)
            if BU in raw:
                bu = raw[BU]
                if type(bu) is not str:
                    return None
            starts = L_SEQ in raw
            if L_KIND in raw:
                x = raw[L_KIND]
                if not starts or type(x) is not str or (x != READING and x != STATUS):
                    return None                 # a gap (or an error): the checked path
                status = x == STATUS
        elif bn is None:
            return None
        t = bt_t                                # a record without t: bt's time
        if T in raw:
            t = raw[T]
            good = (type(t) is int or type(t) is float) and -_TIME_LIMIT < t < _TIME_LIMIT
            t = _usual_time(bt + t) if good else _BAD
        if t is _BAD:
            return None
        if starts:
            seq = raw[L_SEQ]
            if type(seq) is not int or not prev < seq < _UINT32:
                return None
            values, names, g_t, prev = [], [], t, seq
            if status:
                counters = {}
                records.append({"seq": seq, "t": t, "values": values, "kind": STATUS,
                                "counters": counters})
            else:
                records.append({"seq": seq, "t": t, "values": values})
        elif values is None or t != g_t:
            return None
        name = raw.get(N)
        if type(name) is not str or name in names:
            return None
        names.append(name)
        unit = raw[U] if U in raw else bu
        flag = raw.get(L_FLAG, _OK)
        if (unit is not None and type(unit) is not str) or (
                flag is not _OK and (type(flag) is not str or flag not in flags)):
            return None
        has_v, has_vs = V in raw, VS in raw
        if status and name.startswith(COUNTER_PREFIX):
            x, cname = raw.get(V), name[len(COUNTER_PREFIX):]
            if (unit != COUNT_UNIT or flag != _OK or has_vs or type(x) is not int
                    or not 0 <= x < _INT_LIMIT or not _check_chars(cname, _COUNTER_CHARS, 1, 32)):
                return None
            counters[cname] = x
            continue
        row = by_name.get(name)
        if row is None or unit != row[3]:
            return None
        if flag == _FAILED:
            if has_v or has_vs:
                return None
            values.append([row[1], None, flag])
            continue
        if row[4] == NUM:
            x = raw[V] if has_v and not has_vs else None
            if type(x) is int:
                if not -_INT_LIMIT <= x < _INT_LIMIT:
                    return None
            elif type(x) is not float or x != x or x == _INF or x == -_INF:
                return None
        else:
            x = raw[VS] if has_vs and not has_v else None
            if type(x) is not str:
                return None
        values.append([row[1], x, flag])
    return {"device_id": device_id, "pen": pen, "boot_epoch": epoch, "records": records}
