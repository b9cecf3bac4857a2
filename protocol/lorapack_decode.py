"""Unpacking a LoRaWAN pack back into records: the gateway's and the tests' side.

The node only packs (``protocol.lorapack``, which describes the format; byte by byte in
docs/protocol-lorawan.md); keeping the decoder here keeps it out of the node's RAM.
``unpack(payload)`` gives ``(boot_epoch, records)`` and raises only ``PackError`` whatever
the bytes. Runs on MicroPython and CPython.
"""

from protocol import quantities
from protocol.lorapack import (  # the format's constants are shared, not copied
    EPOCH_S,
    PackError,
    VERSION,
    _BY_CODE,
    _E,
    _F,
    _KIND_GAP,
    _KIND_READING,
    _KIND_STATUS,
    _NONE_BIT,
    _Q,
    _RUN,
    _S,
    _TEXT_MAX,
    _T_ABS,
    _T_DELTA,
    _T_PRED,
    _U32,
    _VALUES_MAX,
    _VARINT_MAX,
    _keys,
)


def _unzz(z):
    return z >> 1 if not z & 1 else -((z + 1) >> 1)


class _Reader:
    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def byte(self):
        if self.pos >= len(self.buf):
            raise PackError("truncated at byte %d" % self.pos)
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self):
        n = 0
        for shift in (0, 7, 14, 21, 28):
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
        raise PackError("varint longer than 5 bytes at byte %d" % self.pos)

    def ascii(self, limit):
        n = self.varint()
        if n > limit or self.pos + n > len(self.buf):
            raise PackError("bad text length %d at byte %d" % (n, self.pos))
        raw = self.buf[self.pos:self.pos + n]
        for c in raw:
            if c < 0x20 or c > 0x7E:
                raise PackError("non-printable text byte at %d" % self.pos)
        self.pos += n
        return bytes(raw).decode()


def unpack(payload):
    """Decode a pack: ``(boot_epoch, records)`` in the dict forms ``pack`` takes.

    Numeric values come back as ``int`` for denominator 1, else ``wire / denominator``
    (float). Raises ``PackError`` (a ValueError) for anything malformed, nothing else."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise PackError("payload must be bytes")
    r = _Reader(payload)
    if r.byte() != VERSION:
        raise PackError("unknown pack version %d" % payload[0])
    epoch = r.varint()
    first_seq = r.varint()
    interval = r.varint()
    count = r.byte()
    if epoch > _U32 or first_seq > _U32 or interval > _U32 or count == 0:
        raise PackError("bad header")
    st = {"seq": first_seq - 1, "t": None, "interval": interval, "last": {}, "epoch": epoch,
          _KIND_READING: ((), ()), _KIND_STATUS: ((), ())}
    out = []
    while len(out) < count:
        ctrl = r.byte()
        if ctrl & _RUN:
            n = (ctrl & 0x7F) + 1
            if len(out) + n > count:
                raise PackError("run of %d passes the count %d" % (n, count))
            for _ in range(n):
                out.append(_decode_record(r, st, 0))
        else:
            out.append(_decode_record(r, st, ctrl))
    if r.pos != len(payload):
        raise PackError("%d trailing bytes" % (len(payload) - r.pos))
    return epoch, out


def _decode_gap(r, epoch, ctrl, rec):
    """The gap fields (``lorapack._gap``): both epochs are ``epoch`` unless ``_E`` is set."""
    if ctrl & _F:
        raise PackError("gap record with flags")
    rec["kind"] = "gap"
    rec["dropped"] = r.varint()
    e1 = e2 = epoch
    if ctrl & _E:
        e1 = epoch + _unzz(r.varint())
        e2 = e1 + r.varint()
    first = r.varint()
    last = r.varint()
    if e1 == e2:
        last += first
    if rec["dropped"] > _U32 or not 0 <= e1 <= _U32 or e2 > _U32 or first > _U32 or last > _U32:
        raise PackError("gap field out of range")
    if (e2, last) < (e1, first):  # cannot be encoded; kept as the rule the format states
        raise PackError("gap ends before it starts")
    rec["first_epoch"] = e1
    rec["first_seq"] = first
    rec["last_epoch"] = e2
    rec["last_seq"] = last
    return rec


def _decode_record(r, st, ctrl):
    kind = ctrl >> 5
    if kind > _KIND_GAP:
        raise PackError("unknown record kind %d" % kind)
    seq = st["seq"] + 1 + (r.varint() if ctrl & _Q else 0)
    tmode = ctrl & 3
    prev_t = st["t"]
    if tmode == _T_PRED:
        t = None if prev_t is None else prev_t + st["interval"]
    elif tmode == _T_DELTA:
        if prev_t is None:
            raise PackError("time delta without a previous time")
        t = prev_t + st["interval"] + _unzz(r.varint())
    elif tmode == _T_ABS:
        t = EPOCH_S + _unzz(r.varint())
    else:
        t = None
    if seq > _U32 or (t is not None and not 0 <= t <= _U32):
        raise PackError("seq or time out of range")
    st["seq"] = seq
    st["t"] = t
    rec = {"seq": seq, "t": t}
    if kind == _KIND_GAP:
        return _decode_gap(r, st["epoch"], ctrl, rec)
    codes, nibbles = st[kind]
    if ctrl & _S:
        n = r.varint()
        if n > _VALUES_MAX:
            raise PackError("%d values in one record" % n)
        codes = tuple(r.varint() for _ in range(n))
        nibbles = (0,) * n
    if ctrl & _F:
        got = []
        for i in range(0, len(codes), 2):
            b = r.byte()
            got.append(b >> 4)
            if i + 1 < len(codes):
                got.append(b & 0xF)
            elif b & 0xF:
                raise PackError("padding nibble not zero")
        nibbles = tuple(got)
    st[kind] = (codes, nibbles)
    values = []
    last = st["last"]
    keys = _keys(codes)
    for i in range(len(codes)):
        entry = _BY_CODE.get(codes[i])
        if entry is None:
            raise PackError("unknown quantity code %d" % codes[i])
        nib = nibbles[i]
        flag = quantities.FLAG_BY_CODE.get(nib & 7)
        if flag is None:
            raise PackError("unknown flag %d" % (nib & 7))
        name, denom = entry
        v = None
        if not nib & _NONE_BIT:
            if denom is None:
                v = r.ascii(_TEXT_MAX)
            else:
                w = last.get(keys[i], 0) + _unzz(r.varint())
                if abs(w) > _VARINT_MAX:
                    raise PackError("%s drifts out of range" % name)
                last[keys[i]] = w
                v = w if denom == 1 else w / denom
        values.append([name, v, flag])
    rec["values"] = values
    if kind == _KIND_STATUS:
        rec["kind"] = "status"
        counters = {}
        for _ in range(r.varint()):
            name = r.ascii(32)
            counters[name] = _unzz(r.varint())
        rec["counters"] = counters
    return rec
