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
is ``protocol.senml_decode`` (the node never needs it). The encoder and the profile's constants
are ``protocol.senml_core`` (what a node imports), re-exported here.
"""

from protocol.quantities import BY_SENML_NAME, TEXT  # noqa: F401 (re-exported)
from protocol.senml_core import *  # noqa: F401,F403 (the node's part, re-exported)
from protocol.senml_core import (  # noqa: F401 (private helpers senml_decode/_usual share)
    _COUNTER_CHARS, _ID_CHARS, _INF, _INT_LIMIT, _KEYS, _OPTIONAL, _TIME_LIMIT, _UINT32,
    _check_chars, _finite, _group, _is_int, _is_num, _is_uint32, _value_record)
from protocol.senml_core import (BN, BS, BT, BU, BV, BVER, L_EPOCH, L_FIRST, L_FIRST_EPOCH,
                                 L_FLAG, L_KIND, L_LAST, L_LAST_EPOCH, L_SEQ, N, S, T, U, UT,
                                 V, VB, VD, VS)

JSON_LABELS = {BVER: "bver", BN: "bn", BT: "bt", BU: "bu", BV: "bv", BS: "bs", N: "n",
               U: "u", V: "v", VS: "vs", VB: "vb", S: "s", T: "t", UT: "ut", VD: "vd"}
_BY_JSON = {}
for _k in JSON_LABELS:
    _BY_JSON[JSON_LABELS[_k]] = _k
del _k
_UNUSED = (BV, BS, VB, S, UT, VD)       # valid SenML the profile never writes: refused

_EXTENSIONS = (L_EPOCH, L_SEQ, L_KIND, L_FLAG, L_FIRST, L_LAST, L_FIRST_EPOCH, L_LAST_EPOCH)


def _is_time(x):
    return _is_num(x) and _finite(x) and -_TIME_LIMIT < x < _TIME_LIMIT


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


def encode_pack(device_id, boot_epoch, records, pen=DEFAULT_PEN):
    """The pack as deterministic CBOR bytes (``application/senml+cbor``): the bytes
    ``senml_core.encode_pack_into`` writes. Raises ``SenMLError``."""
    return bytes(encode_pack_into(bytearray(), device_id, boot_epoch, records, pen))


def to_json_labels(pack):
    """The same pack with RFC 8428 JSON labels (``bn``, ``n``, ...) for SenML JSON."""
    out = []
    for rec in pack:
        out.append(dict((JSON_LABELS.get(k, k), v) for k, v in rec.items()))
    return out
