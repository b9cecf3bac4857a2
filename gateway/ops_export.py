"""``export`` (the council's open-data copy) and ``wipe`` (decommissioning) of a gateway.

Theory of operation (for the IoT manager and the data team: docs/gateway-operations.md)
-------------------------------------------------------------------------------------
``export`` streams delivered (``history``) and unsent (``rows``) records whose time is in
[from, to) in time order (``gateway.outbox_history.iter_rows``: two SQLite cursors merged in
one read snapshot, so memory stays bounded whatever the range) to a text stream:

* **CSV** (RFC 4180): one line per value, ``device_id, boot_epoch, seq, time, quantity,
  value, unit, flag``; ``time`` ISO-8601 UTC, ``quantity`` the project's name
  (``protocol/quantities.py``: ``co2_ppm``), ``unit`` its SenML unit, ``value`` empty for a
  failed sensor. Readings and status values; gap and gateway event records carry no values.
* **SenML JSON** (RFC 8428, ``application/senml+json``): ONE array for the whole range,
  each record a group as the upstream forwarder encodes it (``gateway.upstream.
  senml_record`` and ``protocol.senml.pack_records``: the civicedge profile's ``bepoch``,
  ``bseq``, ``bkind``, ``flag_``). Base fields (``bn``, ``bepoch``, ``bt``, ``bkind``) are
  written whenever they change from the record before, so resolving the array as RFC 8428
  says gives every value its device, key, time and flag. Gap records are included.

Both place a record without its own time at the gateway's receive time with its ``ok``
values flagged ``time_unsynced`` (the upstream does the same); records with no time at all
cannot be placed in a range and are only counted. Records the profile cannot encode are
skipped and counted, never guessed.

``wipe`` removes the outbox database (and ``-wal``/``-shm``/``-journal``), the agent's state
files in ``data_dir`` and the secrets files the configuration names (overwritten with
zeros, synced, then unlinked). It refuses while the agent runs and holds the agent lock
meanwhile, so the agent cannot start half-way.
"""

import csv
import json
import os
import stat
from typing import NamedTuple

from gateway import ops, outbox_history as history
from gateway.ops import OpsError, iso
from gateway.security import files_of
from gateway.upstream import EVENT, senml_record
from protocol.quantities import BY_QUANTITY
from protocol.senml import (BN, BT, DEFAULT_PEN, L_EPOCH, L_KIND, L_SEQ, READING, STATUS,
                            SenMLError, base_name, pack_records, to_json_labels)

FORMATS = ("csv", "senml")
CSV_COLUMNS = ("device_id", "boot_epoch", "seq", "time", "quantity", "value", "unit", "flag")
# The agent's files in data_dir (gateway.app.LOCAL_STATE_FILE: the Pi's own sensors' state).
STATE_FILES = (ops.AGENT_LOCK, "local-i2c.json", "local-i2c.json.tmp")
DB_SUFFIXES = ("", "-wal", "-shm", "-journal")
SECRET_KINDS = ("password", "device_keys", "app_key", "tls_key")  # gateway.security's kinds
_BASE_ORDER = (BN, L_EPOCH, BT, L_SEQ, L_KIND)


class ExportResult(NamedTuple):
    records: int   # records written (CSV: those with values)
    values: int    # values written (SenML: SenML records, counters and gap counts included)
    unsent: int    # of the records, how many are not yet delivered upstream
    skipped: int   # records left out: no values (CSV), gateway events, not encodable
    untimed: int   # records with no time at all (not placeable in any range)


def _value_text(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


class _CSV:
    def __init__(self, out, pen):
        self._w = csv.writer(out)
        self._w.writerow(CSV_COLUMNS)

    def record(self, device, epoch, seq, rec):
        """Values written (0: none, the record is skipped)."""
        if rec.get("kind", READING) not in (READING, STATUS):
            return 0
        when, n = iso(rec["t"]), 0
        for q, v, flag in rec.get("values") or ():
            row = BY_QUANTITY.get(q)
            self._w.writerow((device, epoch, seq, when, q, _value_text(v),
                              row[3] or "" if row else "", flag))
            n += 1
        return n

    def close(self):
        pass


class _SenML:
    """One SenML JSON array; base fields carried across records (module docstring)."""

    def __init__(self, out, pen):
        self._out, self._pen, self._first = out, pen, True
        self._bn = self._epoch = None
        self._bt, self._kind = 0, READING  # SenML's and the profile's defaults
        out.write("[")

    def record(self, device, epoch, seq, rec):
        """SenML records written (SenMLError: the record does not fit the profile)."""
        recs = list(pack_records(device, epoch, [rec], self._pen))
        head = recs[0]
        for k in (BN, L_EPOCH, BT, L_KIND):  # set below, relative to the record before
            head.pop(k, None)
        bn, t, kind = base_name(device, self._pen), rec.get("t") or 0, rec.get("kind", READING)
        if bn != self._bn:
            head[BN], head[L_EPOCH] = bn, epoch
        elif epoch != self._epoch:
            head[L_EPOCH] = epoch
        if t != self._bt:
            head[BT] = t
        if kind != self._kind:
            head[L_KIND] = kind
        self._bn, self._epoch, self._bt, self._kind = bn, epoch, t, kind
        recs[0] = dict([(k, head[k]) for k in _BASE_ORDER if k in head]
                       + [(k, v) for k, v in head.items() if k not in _BASE_ORDER])
        for r in to_json_labels(recs):
            self._out.write(("\n" if self._first else ",\n") + json.dumps(
                r, separators=(",", ":"), ensure_ascii=False, allow_nan=False))
            self._first = False
        return len(recs)

    def close(self):
        self._out.write("\n]\n")


def export(db, out, fmt, start_s, end_s, device=None, pen=DEFAULT_PEN):
    """Write the records of [``start_s``, ``end_s``) (and ``device`` only, if given) from the
    outbox connection ``db`` (``ops.open_readonly``) to the text stream ``out`` as ``fmt``
    (``csv`` or ``senml``). Returns ``ExportResult``. Raises ``ValueError`` for a bad format
    or range, ``OSError`` when ``out`` cannot be written."""
    if fmt not in FORMATS:
        raise ValueError("format %r is not one of %s" % (fmt, ", ".join(FORMATS)))
    if not start_s < end_s:
        raise ValueError("the range is empty: --from must be before --to")
    writer = (_CSV if fmt == "csv" else _SenML)(out, pen)
    records = values = unsent = skipped = 0
    db.execute("BEGIN")  # one snapshot: a row acked meanwhile is met once, not twice or never
    try:
        for row in history.iter_rows(db, start_s, end_s, device):
            _, dev, epoch, seq, _, _, rx_wall_s, payload, delivered = row
            try:
                rec = json.loads(payload)
                if not isinstance(rec, dict) or rec.get("kind") == EVENT:
                    raise SenMLError("a gateway event record")
                n = writer.record(dev, epoch, seq, senml_record(rec, rx_wall_s))
            except (SenMLError, ValueError, TypeError, KeyError):
                skipped += 1
                continue
            if fmt == "csv" and not n:
                skipped += 1
                continue
            records, values, unsent = records + 1, values + n, unsent + (not delivered)
        untimed = history.untimed_count(db, device)
    finally:
        db.execute("COMMIT")
    writer.close()
    return ExportResult(records, values, unsent, skipped, untimed)


def export_to_file(db, path, fmt, start_s, end_s, device=None, pen=DEFAULT_PEN):
    """``export`` into the file ``path``: a regular file is written as ``path.partial`` and
    renamed at the end (a failed export leaves no half file); anything else that exists (a
    FIFO, ``/dev/null``) is written in place, never replaced. Raises ``OpsError``."""
    try:
        special = os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        special = False
    tmp = path if special else path + ".partial"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            result = export(db, f, fmt, start_s, end_s, device, pen)
            if not special:
                f.flush()
                os.fsync(f.fileno())
        if not special:
            os.replace(tmp, path)
        return result
    except OSError as e:
        if not special:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise OpsError("cannot write %s (%s): choose another --out or free space"
                       % (path, e.strerror or e)) from e


# -- wipe --------------------------------------------------------------------------------------
def wipe_plan(cfg):
    """``([(path, what)], [path])``: the files that exist and ``wipe`` would remove (what:
    ``database``, ``state``, ``secret``; one secrets file may serve two connections, it comes
    once), and the paths it leaves alone because they are not regular files or symlinks
    (a device node or a directory named by mistake is never removed)."""
    out, seen, odd = [], set(), []
    cands = [(cfg.outbox.path + s, "database") for s in DB_SUFFIXES]
    cands += [(os.path.join(cfg.data_dir, n), "state") for n in STATE_FILES]
    cands += [(p, "secret") for _, p, kind in files_of(cfg) if kind in SECRET_KINDS]
    for path, what in cands:
        key = os.path.abspath(path)
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if key not in seen:
            seen.add(key)
            if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                out.append((path, what))
            else:
                odd.append(path)
    return out, odd


def shred(path):
    """Overwrite a regular file with zeros, fsync, unlink. A symlink is unlinked only (its
    target is not this gateway's to overwrite). Returns a note for the person, or ''."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if os.path.islink(path):
            os.unlink(path)
            return "a symlink: removed, its target %s left as it was" % os.path.realpath(path)
        raise e
    try:
        size = os.fstat(fd).st_size if stat.S_ISREG(os.fstat(fd).st_mode) else 0
        zeros, left = bytes(65536), size
        while left > 0:
            left -= os.write(fd, zeros[:min(left, len(zeros))])
        os.fsync(fd)
    finally:
        os.close(fd)
    os.unlink(path)
    return "overwritten (%d bytes) and removed" % size


def wipe(cfg, plan):
    """Remove ``plan`` (``wipe_plan``), holding the agent lock; refuses (``OpsError``) if the
    agent runs or the outbox is open elsewhere. Returns ``[(path, what, note or error)]``
    and whether every file went. Raises ``ops.AgentRunning``."""
    state = ops.agent_state(cfg)
    if state["running"]:
        raise ops.AgentRunning("the agent is running (%s): stop it first (systemctl stop "
                       "civicedge-gateway), then wipe" % "; ".join(state["evidence"]))
    lock = ops.hold_agent_lock(cfg.data_dir) if os.path.isdir(cfg.data_dir) else None
    try:
        holders = ops.posix_lock_holders(cfg.outbox.path)
        if holders:
            raise ops.AgentRunning("the outbox %s is open in process %s: close it first"
                           % (cfg.outbox.path, ", ".join(map(str, sorted(holders)))))
        done, ok = [], True
        lock_path = os.path.join(cfg.data_dir, ops.AGENT_LOCK)
        for path, what in plan:
            if lock is not None and os.path.abspath(path) == os.path.abspath(lock_path):
                continue  # ours now: removed last, below
            try:
                note = shred(path) if what == "secret" else (os.unlink(path) or "removed")
            except FileNotFoundError:
                note = "already gone"
            except OSError as e:
                note, ok = "NOT removed: %s" % (e.strerror or e), False
            done.append((path, what, note))
        if lock is not None:
            os.unlink(lock_path)  # removed while held: no agent can start on a half-wiped site
            if any(os.path.abspath(p) == os.path.abspath(lock_path) for p, _ in plan):
                done.append((lock_path, "state", "removed"))
        return done, ok
    finally:
        if lock is not None:
            lock.close()
