"""``RecordLog``: the node's append-only, bounded, power-loss-safe log of records on littlefs.

Theory of operation (layout, guarantees and flash wear in docs/node-storage.md)
-------------------------------------------------------------------------------
``<root>/log/`` holds segment files ``00000042.seg`` and the metadata slot pair ``meta.0/1``
(``state.SlotFile``: ack pointer, drop/gap/torn totals, next segment id, a drop in progress).
A segment is a run of entries in key order ``(boot_epoch, seq)``; the entry format and the
segment reader are in ``segment.py``.

Each ``append_all`` is ONE open-append-close, which littlefs commits atomically at close.
Elsewhere a torn tail fails its length or CRC check: readers stop there, the newest segment's
tail is counted once at open and the next append starts a new segment (never after garbage).

``pending`` streams from the oldest segment past the ack pointer (memory bounded by its
``limit``). ``ack_through`` accepts only a key handed out by ``pending`` in this process that
names an epoch among the records it acks; it saves the pointer, then deletes segments holding
only acked records (an open finishes a cut trim), but keeps the active one "spent": out of the
log's segments and size, replaced by the next write in one commit (deleting it and creating
the next took three). The bound drops the oldest segments whole; the unacked keys in them
are counted exactly in a gap record (its own seq), into which a dropped gap record is merged:
its count added and its own key counted, so the ``dropped`` of the gap records that remain
is every key lost. Drop order: save the intent (totals, the gap's key and content) → delete
→ append the gap with the new records → clear the intent; an open that finds an intent
finishes it, writing the gap only if the log does not already hold it.

RAM tail (docs/node-storage.md "Per-cycle cost"): the last write's entries and the largest key
logged before them; a reader whose floor is at or above it parses them, opening no segment.
"""

import json
import os

from .segment import (
    DEFAULT_SEGMENT_BYTES, GAP, GAP_ENTRY_MAX, KIND_CODE, MAX_PAYLOAD, OVERHEAD, U32, as_key,
    gap_payload, list_segments, pack_entry, plan_drop, scan, scan_bytes, segment_path)
from .state import SlotFile, dumps, ensure_dir, join, write_bytes

_TAIL_MAX = 512  # bytes of the last write kept in RAM (a wake's records; none if larger)


class RecordLog:
    """The flash log under ``<root>/log``.

    ``max_bytes``: bound on the segment files' total size (int ≥ 1024); ``clock``: the clock
    contract, for the gap record's ``t`` (None, or untrusted wall time, gives ``t`` None);
    ``state``: the ``NodeState`` whose ``boot_epoch`` and seqs number the records (needed to
    append; a log without one can only be read and acked); ``segment_bytes``: segment size
    (default min(4096, max_bytes // 8), at least 512, at most max_bytes // 2).

    Raises ``ValueError`` for bad arguments, ``OSError`` if the flash cannot be read."""

    def __init__(self, root, max_bytes, clock=None, state=None, segment_bytes=None):
        if not isinstance(max_bytes, int) or max_bytes < 1024:
            raise ValueError("max_bytes must be an int >= 1024, got %r" % (max_bytes,))
        if segment_bytes is None:
            segment_bytes = min(max_bytes // 2, max(512, min(DEFAULT_SEGMENT_BYTES, max_bytes // 8)))
        if not isinstance(segment_bytes, int) or not 512 <= segment_bytes <= max_bytes // 2:
            raise ValueError("segment_bytes must be an int in 512..max_bytes//2, got %r" % (segment_bytes,))
        self._max = max_bytes
        self._seg_bytes = segment_bytes
        self._clock = clock
        self._state = state
        self._dir = join(root, "log")
        ensure_dir(self._dir)
        self._meta = SlotFile(join(self._dir, "meta"))
        m = self._meta.load() or {}
        self._ack = as_key(m.get("a"))
        self._dropped = m.get("d", 0)
        self._gaps = m.get("g", 0)
        self._torn = m.get("t", 0)
        self._torn_seg = m.get("ts", -1)
        self._next_id = m.get("n", 0)
        self._meta_faults = m.get("mf", 0) + self._meta.bad
        self.acks_rejected = 0
        self.acks_stale = 0
        self._sent = None  # highest key handed out by pending() in this process
        self._pending = None  # count of unacked records, computed on demand
        self._active = None  # segment id appends go to (None: start a new one)
        self._last_key = None
        self._tail = None  # [segment id, below, entries' bytes]: see the module docstring
        self._spent = None  # id of the kept segment whose records are all acked (docstring)
        self._segs = list_segments(self._dir)  # [[id, size], ...] oldest first
        self._bytes = 0
        for seg in self._segs:
            self._bytes += seg[1]
        if self._segs:
            self._next_id = max(self._next_id, self._segs[-1][0] + 1)
        dirty = self._check_tail() or self._meta.bad > 0
        if m.get("x"):
            self._finish_drop(m["x"])
        elif dirty:
            self._save_meta()
        self._trim()

    # -- reading ---------------------------------------------------------------------------
    def pending(self, limit, after=None, mark_sent=True):
        """Up to ``limit`` unacked records, oldest first, as ``(boot_epoch, record)`` pairs
        (record: the dict as appended, with its ``seq``). ``after``: a key ``(epoch, seq)``;
        only records above it (the next batch while one is in flight). With ``mark_sent``
        (default) they count as sent, so an ack may name them. ``ValueError`` if ``limit`` is
        not an int ≥ 1."""
        if not isinstance(limit, int) or limit < 1:
            raise ValueError("limit must be an int >= 1, got %r" % (limit,))
        out = []
        ack = self._ack
        if after is not None and (ack is None or tuple(after) > ack):
            ack = tuple(after)

        def visit(code, epoch, seq, payload):
            if ack is not None and (epoch, seq) <= ack:
                return False
            rec = json.loads(payload)
            rec["seq"] = seq
            out.append((epoch, rec))
            return len(out) >= limit

        for seg in self._segs:
            self._scan(seg[0], ack, visit)
            if len(out) >= limit:
                break
        if out and mark_sent:
            last = (out[-1][0], out[-1][1]["seq"])
            if self._sent is None or last > self._sent:
                self._sent = last
        return out

    def pending_count(self):
        """Number of unacked records (one scan of the log the first time, then kept)."""
        if self._pending is None:
            ack = self._ack
            n = [0]

            def visit(code, epoch, seq, payload):
                if ack is None or (epoch, seq) > ack:
                    n[0] += 1
                return False

            for seg in self._segs:
                self._scan(seg[0], ack, visit)
            self._pending = n[0]
        return self._pending

    def max_epoch(self):
        """The largest boot epoch the log knows of (0 if none): ``NodeState.boot``'s floor."""
        best = 0
        for k in (self._last_key, self._ack):
            if k is not None and k[0] > best:
                best = k[0]
        return best

    def stats(self):
        """A dict: ``bytes`` (segments' total size), ``max_bytes``, ``segments``,
        ``segment_bytes``, ``acked`` (ack pointer ``[epoch, seq]`` or None), ``pending``,
        ``dropped`` (unacked records lost to the bound, of every kind: a gap record merged
        into a later one counts), ``gaps`` (gap records written), ``torn``,
        ``acks_rejected``, ``acks_stale``, ``meta_faults``."""
        return {"bytes": self._bytes, "max_bytes": self._max, "segments": len(self._segs),
                "segment_bytes": self._seg_bytes,
                "acked": None if self._ack is None else list(self._ack),
                "pending": self.pending_count(), "dropped": self._dropped, "gaps": self._gaps,
                "torn": self._torn, "acks_rejected": self.acks_rejected, "acks_stale": self.acks_stale,
                "meta_faults": self._meta_faults}

    # -- acking ----------------------------------------------------------------------------
    def ack_through(self, boot_epoch, seq):
        """Mark every record up to key ``(boot_epoch, seq)`` delivered and delete the segments
        that hold only delivered records. Returns how many records it newly acked; 0 for a
        stale ack (``acks_stale`` + 1) or one that names a key beyond what ``pending`` handed
        out, or an epoch none of the acked records has (``acks_rejected`` + 1).
        ``ValueError`` if the arguments are not uint32 ints; ``OSError`` on a flash failure."""
        for name, v in (("boot_epoch", boot_epoch), ("seq", seq)):
            if not isinstance(v, int) or not 0 <= v <= U32:
                raise ValueError("%s must be a uint32 int, got %r" % (name, v))
        key = (boot_epoch, seq)
        ack = self._ack
        if ack is not None and key <= ack:
            self.acks_stale += 1
            return 0
        if self._sent is None or key > self._sent:
            self.acks_rejected += 1
            return 0
        found = [0, False, None]  # records acked, epoch seen, last acked key
        stop = [False]

        def visit(code, epoch, s, payload):
            k = (epoch, s)
            if ack is not None and k <= ack:
                return False
            if k > key:
                stop[0] = True
                return True
            found[0] += 1
            found[1] = found[1] or epoch == boot_epoch
            found[2] = k
            return False

        whole = []  # segments holding only acked records after this ack
        for seg in self._segs:
            self._scan(seg[0], ack, visit)
            if stop[0]:
                break
            whole.append(seg[0])
        if not found[1]:
            self.acks_rejected += 1
            return 0
        self._ack = found[2]
        self._save_meta()
        for sid in whole:
            if sid == self._active:
                self._spend()
            else:
                self._remove(sid)
        if self._pending is not None:
            self._pending -= found[0]
        return found[0]

    # -- appending -------------------------------------------------------------------------
    def append(self, record):
        """Log one record (see ``append_all``); returns its seq."""
        return self.append_all([record])[0]

    def append_all(self, records):
        """Log records in one flash write (what one wake produces; one littlefs block copy).

        Each record is a dict as in the issue 3 contract. Either none has a ``"seq"`` (the log
        takes them from the state; preferred) or all have one, increasing and above every key
        logged. Returns the seqs. If the bound would be passed, the oldest segments are dropped
        first and a gap record is logged with them (see the module docstring).
        Raises ``ValueError`` (bad record, out-of-order seq, record too large, no state),
        ``OSError`` on a flash failure (then nothing of this call was committed on littlefs)."""
        if self._state is None:
            raise ValueError("RecordLog was built without a NodeState: it cannot number records")
        if not isinstance(records, (list, tuple)) or not records:
            raise ValueError("records must be a non-empty list of dicts")
        given = isinstance(records[0], dict) and records[0].get("seq") is not None
        payloads = []
        size = 0
        for r in records:
            if not isinstance(r, dict) or r.get("kind") not in KIND_CODE:
                raise ValueError("record must be a dict with kind absent, 'status' or 'gap': %r" % (r,))
            if (r.get("seq") is not None) != given:
                raise ValueError("records must all carry a seq or none may")
            p = dumps(dict((k, v) for k, v in r.items() if k != "seq") if "seq" in r else r)
            if len(p) > MAX_PAYLOAD:
                raise ValueError("record encodes to %d bytes, more than %d" % (len(p), MAX_PAYLOAD))
            payloads.append((KIND_CODE[r.get("kind")], p))
            size += OVERHEAD + len(p)
        if size + GAP_ENTRY_MAX > self._seg_bytes:
            raise ValueError("records take %d bytes: more than a %d-byte segment holds with a gap"
                             % (size, self._seg_bytes))
        drop = None
        if self._bytes + size > self._max:
            drop = plan_drop(self._dir, self._segs, self._ack, self._bytes, self._max, size + GAP_ENTRY_MAX)
        state = self._state
        gap = None
        keys = []
        if given:
            epoch = state.boot_epoch
            keys = [(epoch, r["seq"]) for r in records]
        if drop is not None and drop[2] is not None:  # unacked records are lost: a gap says so
            gs = state.take_seq()
            gap = self._gap_intent(drop, (state.boot_epoch, gs))
        if not given:
            first = state.take_seqs(len(records))
            keys = [(state.boot_epoch, first + i) for i in range(len(records))]
        entries = [(keys[i], payloads[i][0], payloads[i][1]) for i in range(len(records))]
        if gap is not None:
            entries.append((as_key(gap["k"]), GAP, gap_payload(gap)))
            entries.sort(key=lambda e: e[0])
        prev = self._last_key
        for e in entries:
            if not (isinstance(e[0][1], int) and 0 <= e[0][1] <= U32) or (prev is not None and e[0] <= prev):
                raise ValueError("seq %r (epoch %d) is not above the last logged key %r" % (e[0][1], e[0][0], prev))
            prev = e[0]
        if drop is not None:
            if gap is not None:
                self._dropped += drop[1]
                self._gaps += 1
                try:
                    self._save_meta(gap)
                except OSError:
                    self._dropped -= drop[1]
                    self._gaps -= 1
                    raise
            self._remove_through(drop[0], drop[1])
        self._write(b"".join(pack_entry(code, k[0], k[1], p) for k, code, p in entries), len(entries), prev)
        if gap is not None:
            self._save_meta()
        return [k[1] for k in keys]

    # -- internals ---------------------------------------------------------------------------
    def _path(self, sid):
        return segment_path(self._dir, sid)

    def _scan(self, sid, floor, visit):
        """``scan`` of segment ``sid`` for a reader skipping keys <= ``floor``: the RAM tail
        if it holds all above ``floor`` (then other segments hold none: not opened)."""
        t = self._tail
        if t is not None and (t[1] is None or (floor is not None and floor >= t[1])):
            if sid != t[0]:
                return False
            return scan_bytes(t[2], visit)
        return scan(self._path(sid), visit)

    def _check_tail(self):
        """Find the last key; count a torn tail of the newest segment once. True if meta changed."""
        changed = False
        last = [None]

        def visit(code, epoch, seq, payload):
            last[0] = (epoch, seq)
            return False

        for i in range(len(self._segs) - 1, -1, -1):
            sid, size = self._segs[i]
            torn = scan(self._path(sid), visit)
            if i == len(self._segs) - 1:
                if torn and sid != self._torn_seg:
                    self._torn += 1
                    self._torn_seg = sid
                    changed = True
                elif not torn and size < self._seg_bytes:
                    self._active = sid
            if last[0] is not None:
                break
        self._last_key = last[0]
        if self._ack is not None and (self._last_key is None or self._ack > self._last_key):
            self._last_key = self._ack
        return changed

    def _trim(self):
        """Delete leading segments that hold only acked records; keep the active one spent."""
        while self._segs and self._ack is not None:
            if self._segs[0][0] == self._active and self._last_key <= self._ack:
                self._spend()
                return
            unacked = [False]
            ack = self._ack

            def visit(code, epoch, seq, payload):
                unacked[0] = (epoch, seq) > ack
                return unacked[0]

            scan(self._path(self._segs[0][0]), visit)
            if unacked[0]:
                return
            self._remove(self._segs[0][0])

    def _gap_intent(self, drop, gap_key):
        t = None
        if self._clock is not None and self._clock.wall_trusted():
            t = int(self._clock.wall_s())
        # n, keys lost: records with merged gaps' counts (drop[4]), their own keys (drop[1] - drop[5])
        return {"th": drop[0], "n": drop[4] + drop[1] - drop[5], "f": list(drop[2]), "l": list(drop[3]),
                "k": list(gap_key), "t": t}

    def _finish_drop(self, gap):
        """An open found a drop interrupted by a power cut: complete it exactly once."""
        self._remove_through(gap["th"], None)
        k = as_key(gap["k"])
        if self._last_key is None or self._last_key < k:
            self._write(pack_entry(GAP, k[0], k[1], gap_payload(gap)), 1, k)
        self._save_meta()

    def _remove_through(self, through, lost_entries):
        while through is not None and self._segs and self._segs[0][0] <= through:
            self._remove(self._segs[0][0])
        if lost_entries is None:
            self._pending = None
        elif self._pending is not None:
            self._pending -= lost_entries

    def _remove(self, sid):
        os.remove(self._path(sid))
        for i in range(len(self._segs)):
            if self._segs[i][0] == sid:
                self._bytes -= self._segs[i][1]
                self._segs.pop(i)
                break
        if sid == self._active:
            self._active = None
        if self._tail is not None and self._tail[0] == sid:
            self._tail = None

    def _spend(self):
        """Keep the active (newest) segment, all its records acked, for the next write to
        replace: out of the segments and their size, as if deleted, with no flash operation."""
        seg = self._segs.pop()
        self._bytes -= seg[1]
        self._spent = seg[0]
        self._active = None
        self._tail = None

    def _write(self, blob, n_entries, last_key):
        """One write of ``blob`` (packed entries): appended to the active segment, else a new
        segment, or it replaces the spent one (then the log holds no other segment)."""
        seg = self._segs[-1] if self._segs and self._segs[-1][0] == self._active else None
        new = seg is None or seg[1] + len(blob) > self._seg_bytes
        spent = self._spent
        if new:
            seg = [self._next_id if spent is None else spent, 0]
        below = self._last_key
        self._tail = None
        write_bytes(self._path(seg[0]), blob, "ab" if spent is None else "wb")
        if len(blob) <= _TAIL_MAX:
            self._tail = [seg[0], below, blob]
        if new:
            if spent is None:
                self._next_id += 1
            self._spent = None
            self._segs.append(seg)
            self._active = seg[0]
        seg[1] += len(blob)
        self._bytes += len(blob)
        self._last_key = last_key
        if self._pending is not None:
            self._pending += n_entries

    def _save_meta(self, intent=None):
        doc = {"a": None if self._ack is None else list(self._ack), "d": self._dropped, "g": self._gaps,
               "t": self._torn, "ts": self._torn_seg, "n": self._next_id, "mf": self._meta_faults}
        if intent is not None:
            doc["x"] = intent
        self._meta.save(doc)
