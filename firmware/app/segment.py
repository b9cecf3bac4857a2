"""The flash log's on-flash format: one entry, one segment file (used by ``store.RecordLog``).

A segment ``<root>/log/00000042.seg`` is a run of entries, in key order ``(boot_epoch, seq)``::

    0xA0|kind (u8) | payload length (u16 LE) | boot_epoch (u32 LE) | seq (u32 LE)
    | the record as compact JSON without "seq" | crc32 of all before it (u32 LE)

``pack_entry`` builds one entry; ``scan`` reads a segment's good entries in order and says
whether it ended in a bad (torn or corrupt) tail (``scan_stream``: the same from any stream,
``scan_bytes`` from bytes in RAM): a reader stops at the first entry whose magic, length or
CRC is wrong. ``segment_path`` / ``list_segments`` name and list the files;
``plan_drop`` counts what dropping the oldest segments would lose; ``gap_payload`` is the
gap record's JSON and ``GAP_ENTRY_MAX`` the room a drop keeps for it.
Runs on MicroPython and CPython.
"""

import binascii
import json
import os
import struct

from .state import dumps, join

_ENTRY_HEAD = "<BHII"  # kind|magic, payload length, boot_epoch, seq
_HEAD_LEN = 11
OVERHEAD = 15  # head + crc32
_MAGIC = 0xA0  # high nibble of the first byte: neither erased (0xFF) nor zeroed flash
KIND_CODE = {None: 0, "status": 1, "gap": 2}
GAP = 2
MAX_PAYLOAD = 1024  # bytes of JSON per record
_SEG_SUFFIX = ".seg"
DEFAULT_SEGMENT_BYTES = 4096  # one littlefs block on the ESP32
U32 = 0xFFFFFFFF
# The largest gap entry (every number at its uint32 maximum): room kept for it in a drop.
GAP_ENTRY_MAX = OVERHEAD + len(dumps({"t": U32, "kind": "gap", "dropped": U32, "first_epoch": U32,
                                      "first_seq": U32, "last_epoch": U32, "last_seq": U32}))


def pack_entry(code, epoch, seq, payload):
    """One entry's bytes: kind ``code``, key ``(epoch, seq)``, ``payload`` (JSON bytes)."""
    head = struct.pack(_ENTRY_HEAD, _MAGIC | code, len(payload), epoch, seq)
    return head + payload + struct.pack("<I", binascii.crc32(payload, binascii.crc32(head)) & U32)


def scan(path, visit):
    """Call ``visit(code, epoch, seq, payload)`` for each good entry of a segment, in order,
    until it returns True. Returns True if the segment has a bad (torn or corrupt) tail."""
    try:
        f = open(path, "rb")
    except OSError:
        return False
    try:
        return scan_stream(f, visit)
    finally:
        f.close()


def scan_stream(f, visit):
    """``scan`` of entries read from ``f`` (an open segment, or ``io.BytesIO`` of entries)."""
    while True:
        head = f.read(_HEAD_LEN)
        if not head:
            return False
        if len(head) < _HEAD_LEN:
            return True
        code, n, epoch, seq = struct.unpack(_ENTRY_HEAD, head)
        if code & 0xF0 != _MAGIC or n > MAX_PAYLOAD:
            return True
        body = f.read(n + 4)
        if len(body) < n + 4:
            return True
        payload = body[:n]
        if binascii.crc32(payload, binascii.crc32(head)) & U32 != struct.unpack_from("<I", body, n)[0]:
            return True
        if visit(code & 0x0F, epoch, seq, payload):
            return False


def scan_bytes(buf, visit):
    """``scan_stream`` of the entries in ``buf`` (bytes in RAM: the log's tail), parsed in
    place: no stream and no copy but each payload handed to ``visit``."""
    view = memoryview(buf)
    at = 0
    while at < len(buf):
        if len(buf) - at < _HEAD_LEN:
            return True
        code, n, epoch, seq = struct.unpack_from(_ENTRY_HEAD, buf, at)
        start = at + _HEAD_LEN
        at = start + n + 4
        if code & 0xF0 != _MAGIC or n > MAX_PAYLOAD or at > len(buf):
            return True
        crc = binascii.crc32(view[start:start + n], binascii.crc32(view[start - _HEAD_LEN:start]))
        if crc & U32 != struct.unpack_from("<I", buf, start + n)[0]:
            return True
        if visit(code & 0x0F, epoch, seq, buf[start:start + n]):
            return False
    return False


def as_key(pair):
    """A stored ``[epoch, seq]`` pair as a key tuple (None stays None)."""
    return None if pair is None else (pair[0], pair[1])


# The last path made, [directory, sid, path]: a mains node writes one segment cycle after cycle,
# and on MicroPython every string a concatenation makes is first looked up among the interned
# ones, one by one (~7,000 instructions each; a path takes three)
_last_path = [None, None, None]


def segment_path(directory, sid):
    """The file of segment ``sid`` under ``directory``."""
    last = _last_path
    if last[1] != sid or last[0] is not directory:
        last[0], last[1], last[2] = directory, sid, join(directory, "%08d%s" % (sid, _SEG_SUFFIX))
    return last[2]


def list_segments(directory):
    """``[[id, size], ...]`` of the segment files under ``directory``, oldest first."""
    segs = []
    for name in os.listdir(directory):
        if name.endswith(_SEG_SUFFIX) and name[:-len(_SEG_SUFFIX)].isdigit():
            sid = int(name[:-len(_SEG_SUFFIX)])
            segs.append([sid, os.stat(segment_path(directory, sid))[6]])
    segs.sort(key=lambda s: s[0])
    return segs


def gap_payload(gap):
    """The gap record's JSON from a drop intent (``t``, ``n`` lost, ``f``/``l`` first/last key)."""
    return dumps({"t": gap["t"], "kind": "gap", "dropped": gap["n"], "first_epoch": gap["f"][0],
                  "first_seq": gap["f"][1], "last_epoch": gap["l"][0], "last_seq": gap["l"][1]})


def plan_drop(directory, segs, ack, total_bytes, max_bytes, need):
    """Oldest of ``segs`` (``[[id, size], ...]`` under ``directory``, ``total_bytes`` in all)
    to drop so ``need`` more bytes fit in ``max_bytes``, counting the entries above ``ack``:
    ``(through_id, unacked_entries, first_key, last_key, lost_records, newly_lost)``;
    first/last None if nothing unacked is lost; lost_records includes the counts of dropped
    gap records, newly_lost does not."""
    acc = [0, None, None, 0, 0]  # records lost (gap counts merged), first, last, entries, new

    def visit(code, epoch, seq, payload):
        k = (epoch, seq)
        if ack is not None and k <= ack:
            return False
        acc[3] += 1
        first = k
        if code == GAP:
            g = json.loads(payload)
            acc[0] += g["dropped"]
            first = (g["first_epoch"], g["first_seq"])
        else:
            acc[0] += 1
            acc[4] += 1
        if acc[1] is None or first < acc[1]:
            acc[1] = first
        if acc[2] is None or k > acc[2]:
            acc[2] = k
        return False

    freed = 0
    through = None
    for sid, size in segs:
        if total_bytes - freed + need <= max_bytes:
            break
        scan(segment_path(directory, sid), visit)
        freed += size
        through = sid
    return (through, acc[3], acc[1], acc[2], acc[0], acc[4])
