"""The outbox's overflow policy: which rows to drop, and how each drop is accounted for.

Pure core (no ``sqlite3``, no clock, no files): plain functions over small row summaries.
The SQLite shell (``gateway.outbox``) streams summaries to these functions, oldest first,
and carries out what they decide in the same transaction that updates the counters and
the gap markers, so a drop is never visible without its count and its marker.

Theory of operation
-------------------
The outbox holds two lanes, ``alarm`` and ``routine``. It has two bounds:

* **size** -- the tracked bytes (payload bytes plus a fixed per-row overhead, see
  ``row_nbytes``) must stay at or under ``max_bytes``. When over, rows are dropped in
  ``DROP_ORDER``: the oldest routine rows first, and alarm rows only when no routine row is
  left to drop ("drop oldest routine readings first, alarms last", RELIABILITY.md rule 4).
  Exactly as many rows are dropped as bring the total under the bound, no more.
* **age** -- rows received more than ``max_age_s`` ago (on the outbox's own running-time
  line, not wall time, so a clock jump cannot expire a backlog) are dropped, routine first
  then alarms; both lanes expire, because an operator's age bound is a promise about what
  is kept at all.

A disk that fills (``SQLITE_FULL``) before the size bound is reached is handled by the same
size policy with targets from ``full_targets``: twice the failed batch (at least two pages)
at first, doubling on each retry until everything stored is covered. Each try frees and
stores in ONE transaction: delivered history is trimmed first (generously, at least
``FULL_HISTORY_MIN_BYTES``: it is not a drop), unsent rows are dropped only for what the
history did not free, and a try whose batch still does not fit is rolled back with its
drops, so a drop is never made without the batch it made room for being stored.

Rows in flight (handed to a forwarder, not yet acked or released) are never dropped: they
are about to be delivered, and a row both delivered and reported dropped would make the
upstream accounting lie. A forwarder's window bounds how many there are.

Every dropped row is counted per lane and per reason, and covered by a gap marker for its
device: ``(device_id, first key, last key, dropped)`` where the keys are ``(boot_epoch,
seq)`` and ``dropped`` counts the rows dropped inside the range -- the same meaning as a
node's gap record (keys inside the range that are not dropped, e.g. an alarm kept while the
routine rows around it went, are still delivered; the holes upstream are exactly
``dropped``). A device has at most one *open* marker (stored, not in flight); later drops
for the device widen it and add to its count, so markers stay bounded by the number of
devices, not by the number of drops.
"""

import json
from collections import namedtuple
from dataclasses import dataclass
from typing import NamedTuple

ALARM = "alarm"
ROUTINE = "routine"
LANES = (ALARM, ROUTINE)
DROP_ORDER = (ROUTINE, ALARM)  # rule 4: routine readings first, alarms last

# Reasons a row is dropped (each has its own counter).
SIZE, AGE, FULL = "size", "age", "full"
REASONS = (SIZE, AGE, FULL)

# Tracked bytes per row on top of its payload and twice its device id (stored in the row and
# in the key index): the other columns, cell and record headers and index entry. Measured on
# SQLite 3.40 with 4 KiB pages as 48-54 bytes a row (docs/gateway-outbox.md, "Size").
ROW_OVERHEAD_BYTES = 56

# Rows planned (and deleted) per step, so a large drop never holds a large list in memory.
CHUNK_ROWS = 2000

# SQLITE_FULL: trim at least this much delivered history per try (history is not a drop, and
# a generous trim spares the next puts another full disk); unsent rows are dropped only for
# what a try's target still needs (``full_targets``).
FULL_HISTORY_MIN_BYTES = 64 * 1024

RowSummary = namedtuple("RowSummary", "row_id device_id boot_epoch seq lane nbytes rx_ms")
RowSummary.__doc__ = ("What the policy needs of a stored row: its id (insertion order), key, "
                      "lane, tracked bytes and received time (outbox running time, ms).")

GapMarker = namedtuple("GapMarker",
                       "gap_id device_id first_epoch first_seq last_epoch last_seq dropped "
                       "alarms")
GapMarker.__doc__ = ("Rows of one device dropped by policy: the key range they fall in, "
                     "how many (``dropped``) and how many of them were alarms. ``gap_id`` is "
                     "None until stored.")


class OutboxRecord(NamedTuple):
    """One record to store: its key, the decoded record (JSON-able), and its lane."""
    device_id: str
    boot_epoch: int
    seq: int
    record: object
    lane: str = ROUTINE


class OutboxRow(NamedTuple):
    """A stored row handed out by ``take``; ``rx_ms`` is on the running-time line."""
    row_id: int
    device_id: str
    boot_epoch: int
    seq: int
    lane: str
    rx_ms: int
    rx_wall_s: float | None
    record: object


class PutResult(NamedTuple):
    """Keys ``(device_id, boot_epoch, seq)`` newly stored and already present (both are
    durable: ack both), and how many rows the bounds dropped during this put."""
    new: list
    duplicates: list
    dropped: int


@dataclass(frozen=True)
class OutboxStats:
    rows: dict              # lane -> rows stored (in flight included)
    bytes: dict             # lane -> tracked bytes
    total_bytes: int
    max_bytes: int
    oldest_age_s: float | None  # running time since the oldest stored row arrived
    in_flight: int
    dropped: dict           # lane -> rows dropped by policy, ever
    dropped_by_reason: dict  # "size" / "age" / "full" -> rows
    duplicates: int
    disk_full_events: int
    gap_markers: int
    file_bytes: int         # page_count * page_size of the main file (WAL excluded)


_U32 = 1 << 32
# Compact ASCII-only JSON: the stored text's length is its size in bytes, as SQLite's length()
# counts it. NaN/Infinity are refused (not JSON). Where CPython's C encoder is there, it is
# called directly without the circular-reference check (records are trees from a decoder):
# half the cost of JSONEncoder.encode, which is most of put_many's own CPU time. The alarm
# engine's and the pipeline's state texts use it too.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
if getattr(json.encoder, "c_make_encoder", None) is not None:
    _c_encode = json.encoder.c_make_encoder(None, _ENCODER.default,
                                            json.encoder.encode_basestring_ascii, None,
                                            ":", ",", False, False, False)

    def compact_json(value):
        """``value`` (a tree of dicts, lists, text, numbers: no cycles) as compact ASCII JSON
        text; raises ``ValueError`` for NaN or an infinity, ``TypeError`` for what JSON
        cannot hold."""
        return "".join(_c_encode(value, 0))
else:  # pragma: no cover (PyPy and others)
    compact_json = _ENCODER.encode
_encode = compact_json  # its old name (tests/property/test_upstream_fast_props.py)


def _bad_record(i, rec):
    """The ``ValueError`` for ``records[i]`` that failed the fast check, naming the field."""
    try:
        if not isinstance(rec, (tuple, list)):
            raise TypeError
        device_id, boot_epoch, seq, _record, lane = OutboxRecord(*rec)
    except TypeError:
        return ValueError("records[%d] must be (device_id, boot_epoch, seq, record[, lane]), "
                          "got %r" % (i, rec))
    if not isinstance(device_id, str) or not device_id:
        return ValueError("records[%d]: device_id %r must be non-empty text" % (i, device_id))
    for name, value in (("boot_epoch", boot_epoch), ("seq", seq)):
        if type(value) is not int or not 0 <= value < _U32:
            return ValueError("records[%d]: %s %r must be an int in 0..2**32-1" % (i, name, value))
    return ValueError("records[%d]: lane %r must be one of %s" % (i, lane, ", ".join(LANES)))


def prepare(records):
    """Validated, encoded rows ``(device_id, boot_epoch, seq, lane, payload, nbytes)`` of
    ``records`` (``OutboxRecord`` or equal tuples) and their total tracked bytes. The payload
    is the record as compact ASCII JSON text. Raises ``ValueError`` naming the first bad
    record and field."""
    prepared, batch_bytes, _tallies = prepare_tallied(records)
    return prepared, batch_bytes


def prepare_tallied(records):
    """``prepare``'s rows and total, and ``{lane: (rows, tracked bytes)}`` for every lane
    (what the counters gain if every row is new)."""
    prepared, batch_bytes, alarm_rows, alarm_bytes, extra = [], 0, 0, 0, {}
    append, encode, lanes = prepared.append, compact_json, LANES
    for i, rec in enumerate(records):
        if type(rec) is tuple and len(rec) == 5:  # the agent's (and most callers') form
            device_id, boot_epoch, seq, record, lane = rec
        else:
            try:
                if not isinstance(rec, (tuple, list)):
                    raise TypeError
                device_id, boot_epoch, seq, record, lane = (rec if len(rec) == 5
                                                            else OutboxRecord(*rec))
            except TypeError:
                raise _bad_record(i, rec) from None
        if (type(device_id) is not str or not device_id or type(boot_epoch) is not int
                or type(seq) is not int or not 0 <= boot_epoch < _U32 or not 0 <= seq < _U32
                or lane not in lanes):
            raise _bad_record(i, rec)
        try:
            payload = encode(record)
        except (TypeError, ValueError, RecursionError) as e:
            raise ValueError("records[%d]: record is not JSON-able (%s)" % (i, e)) from e
        x = extra.get(device_id)  # row_nbytes without the payload, once per device
        if x is None:
            x = extra[device_id] = row_nbytes(0, device_id)
        nbytes = len(payload) + x
        append((device_id, boot_epoch, seq, lane, payload, nbytes))
        batch_bytes += nbytes
        if lane is not ROUTINE and lane == ALARM:  # (the rare lane: the other is the rest)
            alarm_rows += 1
            alarm_bytes += nbytes
    tallies = {ALARM: (alarm_rows, alarm_bytes),
               ROUTINE: (len(prepared) - alarm_rows, batch_bytes - alarm_bytes)}
    return prepared, batch_bytes, tallies


def row_nbytes(payload_len, device_id):
    """Tracked bytes of a row of ``device_id`` whose payload is ``payload_len`` bytes: an
    estimate of what it occupies in the database file."""
    return payload_len + 2 * len(device_id.encode("utf-8")) + ROW_OVERHEAD_BYTES


def excess_bytes(total_bytes, max_bytes):
    """Bytes over the size bound (0 when within it)."""
    return total_bytes - max_bytes if total_bytes > max_bytes else 0


def age_cutoff_ms(now_ms, max_age_s):
    """Rows received before this running-time instant (ms) are past the age bound."""
    return now_ms - int(max_age_s * 1000)


def plan_size_drops(excess, stream, in_flight=(), max_rows=CHUNK_ROWS):
    """The rows to drop to free ``excess`` bytes, in policy order.

    ``stream(lane)`` yields that lane's rows as ``RowSummary``, oldest first (lazily: only
    what is needed is read). Rows whose id is in ``in_flight`` are skipped. Stops once the
    freed bytes reach ``excess`` or ``max_rows`` rows are planned (the caller deletes them
    and asks again). Returns ``(rows, freed_bytes)``; no rows means nothing is droppable."""
    rows, freed = [], 0
    if excess <= 0:
        return rows, freed
    for lane in DROP_ORDER:
        for row in stream(lane):
            if row.row_id in in_flight:
                continue
            rows.append(row)
            freed += row.nbytes
            if freed >= excess or len(rows) >= max_rows:
                return rows, freed
    return rows, freed


def plan_age_drops(cutoff_ms, stream, in_flight=(), max_rows=CHUNK_ROWS):
    """The rows received before ``cutoff_ms``, routine first then alarms, at most
    ``max_rows``. ``stream(lane)`` yields oldest first; received time never decreases along
    it, so each lane is read only up to its first row inside the bound."""
    rows = []
    for lane in DROP_ORDER:
        for row in stream(lane):
            if row.rx_ms >= cutoff_ms:
                break
            if row.row_id in in_flight:
                continue
            rows.append(row)
            if len(rows) >= max_rows:
                return rows
    return rows


def full_targets(batch_bytes, page_bytes, stored_bytes):
    """Bytes to free on each try after ``SQLITE_FULL``, smallest first: twice the failed
    batch (its pages plus index growth), at least two pages of ``page_bytes``, doubling
    until a target covers ``stored_bytes`` (everything stored: the last try, after which
    nothing more could be freed)."""
    target = max(2 * batch_bytes, 2 * page_bytes, 1)
    while True:
        yield target
        if target >= stored_bytes:
            return
        target <<= 1


def full_split(target, history_freed):
    """``(history_bytes, unsent_bytes)`` for a try freeing ``target``: the history trim to
    ask for (at least ``FULL_HISTORY_MIN_BYTES``), and, once ``history_freed`` bytes of it
    are gone, the unsent bytes still to drop (0 when the history covered the target)."""
    return max(target, FULL_HISTORY_MIN_BYTES), max(target - history_freed, 0)


def count_by_lane(rows):
    """``{lane: rows, ...}`` for every lane (zero included)."""
    counts = dict.fromkeys(LANES, 0)
    for row in rows:
        counts[row.lane] += 1
    return counts


def bytes_by_lane(rows):
    """``{lane: tracked bytes, ...}`` for every lane (zero included)."""
    total = dict.fromkeys(LANES, 0)
    for row in rows:
        total[row.lane] += row.nbytes
    return total


def _key_min(a, b):
    return a if a <= b else b


def _key_max(a, b):
    return a if a >= b else b


def widen(marker, first, last, dropped, alarms):
    """``marker`` extended to cover the keys ``first``..``last`` (``(epoch, seq)`` pairs)
    and ``dropped`` (of which ``alarms``) more rows."""
    lo = _key_min((marker.first_epoch, marker.first_seq), first)
    hi = _key_max((marker.last_epoch, marker.last_seq), last)
    return marker._replace(first_epoch=lo[0], first_seq=lo[1], last_epoch=hi[0],
                           last_seq=hi[1], dropped=marker.dropped + dropped,
                           alarms=marker.alarms + alarms)


def _add_drops(out, device_id, first, last, dropped, alarms):
    """Fold ``dropped`` (of which ``alarms``) rows of ``device_id`` with keys in
    ``first``..``last`` into the summary ``out`` (``summarize_drops``' form)."""
    got = out.get(device_id)
    if got is None:
        out[device_id] = (first, last, dropped, alarms)
    else:
        out[device_id] = (_key_min(got[0], first), _key_max(got[1], last),
                          got[2] + dropped, got[3] + alarms)


def summarize_drops(rows):
    """``{device_id: (first_key, last_key, dropped, alarms)}`` of dropped rows
    (``RowSummary``), keys as ``(boot_epoch, seq)``."""
    out = {}
    for row in rows:
        key = (row.boot_epoch, row.seq)
        _add_drops(out, row.device_id, key, key, 1, 1 if row.lane == ALARM else 0)
    return out


def summarize_ranges(drops):
    """``summarize_drops``' summary of drops given as key ranges: anything with
    ``device_id``, ``first_epoch``, ``first_seq``, ``last_epoch``, ``last_seq``, ``dropped``
    and ``alarms`` (``gateway.outbox_gaps.Dropped``)."""
    out = {}
    for d in drops:
        _add_drops(out, d.device_id, (d.first_epoch, d.first_seq), (d.last_epoch, d.last_seq),
                   d.dropped, d.alarms)
    return out


def mark_drops(open_markers, summary):
    """Gap markers after the drops of ``summary`` (``{device_id: (first_key, last_key,
    dropped, alarms)}``, from ``summarize_drops`` or ``summarize_ranges``): each device's
    open marker (``open_markers``: ``{device_id: GapMarker}``, the stored marker not in
    flight) widened, or a new one (``gap_id`` None). Returns the markers to write, one per
    device with drops, in device order."""
    out = []
    for device_id, (first, last, dropped, alarms) in sorted(summary.items()):
        marker = open_markers.get(device_id)
        if marker is None:
            out.append(GapMarker(None, device_id, first[0], first[1], last[0], last[1],
                                 dropped, alarms))
        else:
            out.append(widen(marker, first, last, dropped, alarms))
    return out
