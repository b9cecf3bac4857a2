"""The LoRaWAN pack: a compact binary batch of readings for one uplink (docs/protocol-lorawan.md).

Theory of operation
-------------------
A batch carries consecutive records of one ``boot_epoch`` (readings, status and gap records,
in the dict forms of issue 3) and is built for one uplink: ``pack(readings, max_bytes,
boot_epoch)`` takes as many records from the front of the list as fit ``max_bytes`` and
says how many it took; ``protocol.lorapack_decode.unpack(payload)`` gives
``(boot_epoch, records)`` back.

Everything is unsigned LEB128 varints (7 bits a byte, low group first, at most 5 bytes) or
single bytes; signed numbers are zigzag-coded (0, -1, 1, -2 … → 0, 1, 2, 3 …); there are no
floats, so an ES5 ``decodeUplink`` reads it with plain arithmetic. Values travel as integers
at a fixed resolution per quantity (``RESOLUTION``) and each one as the difference from the
previous value of the same quantity in the batch, so a slowly changing value costs one byte.

The decoder predicts each record from the one before: seq + 1, time + the batch's interval,
the same quantities in the same order with the same flags. A record that matches the
prediction ("regular") costs only its values, and runs of regular readings share a single
run byte. Anything else is spelled out in the record's control byte and the fields it
announces. A gap record's dropped range is a pair of record keys ``(epoch, seq)`` (a drop
can span boots); the epochs cost nothing when both equal the batch's ``boot_epoch`` and are
otherwise sent as small differences (``_gap``). ``unpack`` (in ``lorapack_decode``) raises
only ``PackError`` whatever the bytes.
Runs on MicroPython and CPython.
"""

from protocol import quantities


class PackError(ValueError):
    """A LoRaWAN pack that cannot be decoded (truncated, inconsistent or unknown)."""


VERSION = 1
MAX_RECORDS = 255
LOOKAHEAD = 8              # records pack() reads ahead to choose the batch's interval
EPOCH_S = 1704067200       # absolute times are sent as seconds since 2024-01-01T00:00:00Z
_VARINT_MAX = (1 << 35) - 1  # 5 varint bytes; exact in an ES5 double
_U32 = 0xFFFFFFFF
_SCALED_MAX = (1 << 31) - 1  # a value's scaled integer; deltas then stay within 5 bytes
_TEXT_MAX = 64
_VALUES_MAX = 32  # per record; bounds what a short hostile payload can make unpack build

# Wire resolution per quantity, as the denominator: the wire integer is value × denominator
# rounded half up, decoded as integer / denominator. Codes and value kinds come from
# protocol/quantities.py (the one table); a numeric quantity missing here cannot be packed.
RESOLUTION = {
    "co2_ppm": 1,          # 1 ppm (SCD4x output resolution)
    "temperature_c": 128,  # 1/128 °C: exact for TMP117 (0.0078125 °C LSB), finer than SCD4x needs
    "rh_percent": 10,      # 0.1 %RH
    "no2_ppb": 10,         # 0.1 ppb
    "no2_ugm3": 10,        # 0.1 µg/m³
    "distance_cm": 1,      # 1 cm (I2CXL output resolution)
    "fill_ratio": 1000,    # 0.001
    "battery_v": 100,      # 0.01 V
    "uptime_s": 1,         # 1 s
    "rssi_dbm": 1,         # 1 dBm
}
QUANTITIES = {}  # packable quantity -> (code, denominator or None for text)
_BY_CODE = {}    # code -> (quantity, denominator or None)
for _row in quantities.QUANTITIES:
    if _row[4] == quantities.TEXT or _row[1] in RESOLUTION:
        QUANTITIES[_row[1]] = (_row[0], RESOLUTION.get(_row[1]))
        _BY_CODE[_row[0]] = (_row[1], RESOLUTION.get(_row[1]))
del _row

_KIND_READING = 0
_KIND_STATUS = 1
_KIND_GAP = 2
_KINDS = {"reading": _KIND_READING, "status": _KIND_STATUS, "gap": _KIND_GAP}
_RUN = 0x80          # 1nnnnnnn: n + 1 regular readings follow, values only (0xFF: full)
_S = 0x10            # schema follows
_F = 0x08            # flags follow
_Q = 0x04            # seq step follows
_E = _S              # in a gap's control byte (a gap has no schema): its epochs follow
_T_PRED = 0          # time as predicted (None stays None)
_T_DELTA = 1         # zigzag(t - predicted)
_T_ABS = 2           # zigzag(t - EPOCH_S)
_T_NONE = 3          # no trusted time
_NONE_BIT = 0x08     # in a value's flag nibble: the value is None


# ---- varints -------------------------------------------------------------------------

def _put(out, n):
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zz(n):
    return n * 2 if n >= 0 else -n * 2 - 1


# ---- encoding --------------------------------------------------------------------------

def _u32(name, v):
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > _U32:
        raise ValueError("%s must be a uint32, got %r" % (name, v))
    return v


def _text(name, s, limit):
    if not isinstance(s, str) or len(s) > limit:
        raise ValueError("%s must be printable ASCII of at most %d chars, got %r"
                         % (name, limit, s))
    raw = s.encode()
    for c in raw:
        if c < 0x20 or c > 0x7E:
            raise ValueError("%s must be printable ASCII, got %r" % (name, s))
    return raw


def scaled(quantity, value):
    """The wire integer of ``value`` of ``quantity`` (value × denominator, rounded half up).

    Raises ``ValueError`` naming the quantity when it has no code, the value is not a finite
    number (or text, for a text quantity), or it is beyond ±(2**31 - 1) wire units."""
    entry = QUANTITIES.get(quantity)
    if entry is None:
        raise ValueError("quantity %r cannot be packed: not in protocol/quantities.py or no "
                         "resolution in protocol.lorapack.RESOLUTION" % (quantity,))
    denom = entry[1]
    if denom is None:
        return _text(quantity, value, _TEXT_MAX)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError("%s value must be a number, got %r" % (quantity, value))
    x = value * denom + 0.5
    if not -_SCALED_MAX <= x <= _SCALED_MAX:  # also refuses NaN and infinities
        raise ValueError("%s value %r is not representable at 1/%d (limit ±%d units)"
                         % (quantity, value, denom, _SCALED_MAX))
    i = int(x)
    return i - 1 if i > x else i  # floor


def _keys(codes):
    """Delta keys: the k-th value of a quantity in a record follows the k-th value of that
    quantity in earlier records (two pipe sensors each follow their own series)."""
    seen = {}
    keys = []
    for c in codes:
        k = seen.get(c, 0)
        seen[c] = k + 1
        keys.append(c * 64 + k)
    return keys


def _kind(rec):
    k = rec.get("kind", "reading")
    kind = _KINDS.get(k) if isinstance(k, str) else None
    if kind is None:
        raise ValueError("record kind must be reading, status or gap, got %r" % (k,))
    return kind


def _values(rec):
    """(codes, nibbles, wire values) of a reading/status record's values."""
    codes, nibbles, wire = [], [], []
    items = rec.get("values", ())
    if not isinstance(items, (list, tuple)) or len(items) > _VALUES_MAX:
        raise ValueError("values must be a list of at most %d items" % _VALUES_MAX)
    for item in items:
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise ValueError("a value must be [quantity, value, flag], got %r" % (item,))
        q, v, flag = item
        entry = QUANTITIES.get(q) if isinstance(q, str) else None
        if entry is None:
            raise ValueError("quantity %r cannot be packed (see protocol.lorapack.RESOLUTION)"
                             % (q,))
        nib = quantities.FLAG_CODES.get(flag) if isinstance(flag, str) else None
        if nib is None or nib > 7:
            raise ValueError("flag of %s must be one of protocol.quality.FLAGS, got %r" % (q, flag))
        codes.append(entry[0])
        if v is None:
            nibbles.append(nib | _NONE_BIT)
            wire.append(None)
        else:
            nibbles.append(nib)
            wire.append(scaled(q, v))
    return tuple(codes), tuple(nibbles), wire


class _Encoder:
    """Encodes records one at a time against the prediction state, into ``body``."""

    def __init__(self, first_seq, interval, boot_epoch):
        self.body = bytearray()
        self.epoch = boot_epoch
        self.seq = first_seq - 1
        self.t = None
        self.interval = interval
        self.shape = {_KIND_READING: ((), ()), _KIND_STATUS: ((), ())}
        self.last = {}
        self.run_pos = -1

    def add(self, rec, room):
        """Append ``rec`` if it fits in ``room`` bytes of body; return whether it did.
        Validates first (``ValueError``) and changes no state unless it appends."""
        kind = _kind(rec)
        seq = _u32("seq", rec.get("seq"))
        t = rec.get("t")
        if t is not None:
            _u32("t", t)
        if seq <= self.seq:
            raise ValueError("seq must increase within a batch: %d after %d" % (seq, self.seq))
        predicted = None if self.t is None else self.t + self.interval
        if t == predicted:
            tmode = _T_PRED
        elif t is None:
            tmode = _T_NONE
        elif predicted is None or abs(t - predicted) > abs(t - EPOCH_S):
            tmode = _T_ABS
        else:
            tmode = _T_DELTA
        ctrl = kind << 5 | tmode | (_Q if seq != self.seq + 1 else 0)
        buf = bytearray()
        last = {}
        shape = None
        if kind != _KIND_GAP:
            codes, nibbles, wire = _values(rec)
            shape = (codes, nibbles)
            old_codes, old_nibbles = self.shape[kind]
            if codes != old_codes:
                ctrl |= _S
            if nibbles != (old_nibbles if codes == old_codes else (0,) * len(codes)):
                ctrl |= _F
            keys = _keys(codes)
            for i in range(len(wire)):
                w = wire[i]
                if isinstance(w, bytes):
                    _put(buf, len(w))
                    buf.extend(w)
                elif w is not None:
                    _put(buf, _zz(w - self.last.get(keys[i], 0)))
                    last[keys[i]] = w
        if kind == _KIND_STATUS:
            _counters(buf, rec.get("counters") or {})
        elif kind == _KIND_GAP and _gap(buf, rec, self.epoch):
            ctrl |= _E
        regular = ctrl == 0
        if not regular:
            head = bytearray((ctrl,))
            if ctrl & _Q:
                _put(head, seq - self.seq - 1)
            if tmode == _T_DELTA:
                _put(head, _zz(t - predicted))
            elif tmode == _T_ABS:
                _put(head, _zz(t - EPOCH_S))
            if ctrl & _S and shape is not None:  # a gap's _E bit announces no schema
                _put(head, len(codes))
                for c in codes:
                    _put(head, c)
            if ctrl & _F:
                for i in range(0, len(nibbles), 2):
                    head.append(nibbles[i] << 4 | (nibbles[i + 1] if i + 1 < len(nibbles) else 0))
            buf = head + buf
        new_run = regular and (self.run_pos < 0 or self.body[self.run_pos] == 0xFF)
        if len(self.body) + len(buf) + (1 if new_run else 0) > room:
            return False
        if new_run:
            self.run_pos = len(self.body)
            self.body.append(_RUN)
        elif regular:
            self.body[self.run_pos] += 1
        else:
            self.run_pos = -1
        self.body.extend(buf)
        self.seq = seq
        self.t = t
        if shape is not None:
            self.shape[kind] = shape
        self.last.update(last)
        return True


COUNTERS_MAX = 32  # counters a status record may carry (their count is then one varint byte)


def _counters(buf, counters):
    if not isinstance(counters, dict) or len(counters) > COUNTERS_MAX:
        raise ValueError("counters must be a dict of at most %d entries, got %r" % (COUNTERS_MAX, counters))
    for name in counters:
        _text("counter name", name, 32)
    names = sorted(counters)
    _put(buf, len(names))
    for name in names:
        _counter(buf, name, counters[name])


def _counter(buf, name, v):
    raw = name.encode()
    if not isinstance(v, int) or isinstance(v, bool) or abs(v) > _SCALED_MAX:
        raise ValueError("counter %s must be an integer within ±%d, got %r"
                         % (name, _SCALED_MAX, v))
    _put(buf, len(raw))
    buf.extend(raw)
    _put(buf, _zz(v))


def counter_len(name, value):
    """Bytes the counter ``name`` = ``value`` adds to a status record's pack (up to
    ``COUNTERS_MAX`` counters, each adds its own). ``ValueError`` if ``pack`` would refuse it."""
    buf = bytearray()
    _text("counter name", name, 32)
    _counter(buf, name, value)
    return len(buf)


def _gap(buf, rec, boot_epoch):
    """A gap's fields into ``buf``; returns whether its epochs are sent (control bit ``_E``).

    varint dropped; with ``_E``: varint zigzag(first_epoch - boot_epoch), varint
    (last_epoch - first_epoch); varint first_seq; varint (last_seq - first_seq) when both
    epochs are equal, else varint last_seq. A missing epoch is the batch's ``boot_epoch``."""
    dropped = _u32("dropped", rec.get("dropped"))
    e1 = _u32("first_epoch", rec.get("first_epoch", boot_epoch))
    first = _u32("first_seq", rec.get("first_seq"))
    e2 = _u32("last_epoch", rec.get("last_epoch", boot_epoch))
    last = _u32("last_seq", rec.get("last_seq"))
    if (e2, last) < (e1, first):
        raise ValueError("gap (last_epoch, last_seq) (%d, %d) is before (first_epoch, first_seq) "
                         "(%d, %d)" % (e2, last, e1, first))
    _put(buf, dropped)
    epochs = e1 != boot_epoch or e2 != boot_epoch
    if epochs:
        _put(buf, _zz(e1 - boot_epoch))
        _put(buf, e2 - e1)
    _put(buf, first)
    _put(buf, last - first if e1 == e2 else last)
    return epochs


def _interval(records):
    """The most common positive time step between consecutive timed records (ties: the
    smaller), else 0."""
    counts = {}
    prev = None
    for rec in records:
        t = rec.get("t") if isinstance(rec, dict) else None
        if isinstance(t, int) and isinstance(prev, int) and 0 < t - prev <= _U32:
            counts[t - prev] = counts.get(t - prev, 0) + 1
        prev = t
    best, best_n = 0, 0
    for dt in counts:
        if counts[dt] > best_n or (counts[dt] == best_n and dt < best):
            best, best_n = dt, counts[dt]
    return best


def pack(readings, max_bytes, boot_epoch, interval_s=None):
    """Pack records from the front of ``readings`` (one ``boot_epoch``, increasing seq) into
    at most ``max_bytes`` bytes. Returns ``(payload, n)``: the first ``n`` ≥ 1 records.

    ``readings`` is a list or any iterable: a node can stream its flash log, since at most
    ``LOOKAHEAD`` + 1 records are held (an iterator is left past record ``n``: resume from
    index ``n``). ``max_bytes`` is the uplink's application payload limit
    (``airtime.max_app_payload``). ``interval_s`` is the time step the decoder predicts
    (the node's sampling interval); None picks the commonest step in the look-ahead.
    A record that cannot be packed ends the batch before it, so its error surfaces when it
    comes first: raises ``ValueError`` (naming the field) for no records, a malformed or
    unrepresentable first record, or one that alone needs more than ``max_bytes``."""
    _u32("boot_epoch", boot_epoch)
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
        raise ValueError("max_bytes must be a positive integer, got %r" % (max_bytes,))
    it = iter(readings)
    ahead = []
    for rec in it:
        ahead.append(rec)
        if len(ahead) == LOOKAHEAD:
            break
    if not ahead:
        raise ValueError("readings is empty: nothing to pack")
    if not isinstance(ahead[0], dict):
        raise ValueError("a record must be a dict, got %r" % (ahead[0],))
    first_seq = _u32("seq", ahead[0].get("seq"))
    interval = _interval(ahead) if interval_s is None else _u32("interval_s", interval_s)
    head = bytearray((VERSION,))
    _put(head, boot_epoch)
    _put(head, first_seq)
    _put(head, interval)
    enc = _Encoder(first_seq, interval, boot_epoch)
    room = max_bytes - len(head) - 1
    if not enc.add(ahead[0], room):
        raise ValueError("record seq %d needs more than max_bytes %d" % (first_seq, max_bytes))
    n = 1
    for rec in _chain(ahead, it):
        if n == MAX_RECORDS or not isinstance(rec, dict):
            break
        try:
            if not enc.add(rec, room):
                break
        except ValueError:
            break
        n += 1
    head.append(n)
    return bytes(head + enc.body), n


def _chain(ahead, it):
    for i in range(1, len(ahead)):
        yield ahead[i]
    for rec in it:
        yield rec
