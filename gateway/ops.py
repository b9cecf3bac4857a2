"""Operations on a gateway's data: is the agent running, and ``status``. ``export`` (the
open-data copy) and ``wipe`` (decommissioning) are in ``gateway.ops_export``.

Theory of operation (for the IoT manager: docs/gateway-operations.md)
--------------------------------------------------------------------
Everything here reads the outbox database through its own **read-only** SQLite connection
(``open_readonly``): under WAL a reader sees the last committed state and never blocks the
agent, so ``status`` and ``export`` work while the agent runs and when it is stopped.

*Is the agent running?* (``agent_state``) Three independent signs, any one is enough:
the agent's lock file ``<data_dir>/agent.lock`` is locked (``hold_agent_lock``, taken by
the agent process for its lifetime; the kernel drops it when the process dies, so it never
goes stale), another process has the outbox database open (Linux ``/proc/locks``:
SQLite holds a POSIX lock on the file while a connection is open), or the metrics endpoint
answers.

``status`` gathers a JSON-able dict (``gather_status``): outbox depth per lane, tracked
bytes against the bound, the oldest unsent row's age, drops and gap markers, the delivered
history, per device the last time a row of it was received, its backlog and its last
accepted key (the replay state the agent stores), plus live counters from the metrics
endpoint when the agent serves them; ``format_status`` makes it readable, with ``notes``
saying what needs attention.
"""

import datetime
import fcntl
import json
import os
import sqlite3
import urllib.parse
import urllib.request

from gateway import metrics, ops_alarms, outbox_history as history

AGENT_LOCK = "agent.lock"
OLD_UNSENT_S = 3600  # a note when the oldest unsent row is older than this
QUIET_S = 86400  # a note for a device not heard from for this long


class OpsError(Exception):
    """What could not be done, where, and what to do next (printed as is)."""


class AgentRunning(OpsError):
    """The agent (or another process) is using the gateway's files."""


# -- is the agent running? ---------------------------------------------------------------------
def hold_agent_lock(data_dir):
    """Take ``<data_dir>/agent.lock`` (exclusive ``flock``) for this process's lifetime and
    write the pid into it; returns the open file (keep a reference). Raises ``OpsError`` if
    another process holds it (an agent is running, or a wipe is under way)."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    path = os.path.join(data_dir, AGENT_LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    f = os.fdopen(fd, "r+")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise AgentRunning("%s is locked by another process (pid %s): an agent is already running "
                       "or a wipe is under way" % (path, _read_pid(path) or "unknown")) from None
    f.truncate(0)
    f.write("%d\n" % os.getpid())
    f.flush()
    return f


def _read_pid(path):
    try:
        with open(path) as f:
            text = f.read(32).strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def lock_is_held(path):
    """True if another open file holds a ``flock`` on ``path``, False if not, None if it
    does not exist or cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our probe lock


def posix_lock_holders(path, proc_locks="/proc/locks"):
    """Pids (other than ours) holding a lock on ``path``'s inode per Linux ``/proc/locks``
    (SQLite keeps one while a connection is open); None where that file is not available."""
    try:
        st = os.stat(path)
        with open(proc_locks) as f:
            lines = f.read().splitlines()
    except OSError:
        return None if not os.path.exists(path) or not os.path.exists(proc_locks) else set()
    want = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    pids = set()
    for line in lines:
        bits = line.split()
        if "->" in bits:  # a waiter: "1: -> POSIX ..."
            bits.remove("->")
        if len(bits) >= 6 and bits[5] == want and bits[4].isdigit():
            pids.add(int(bits[4]))
    pids.discard(os.getpid())
    return pids


def probe_metrics(cfg, timeout_s=1.0):
    """True if the configured metrics endpoint answers ``GET /metrics`` with 200."""
    if not cfg.metrics.enabled:
        return False
    try:
        with urllib.request.urlopen(metrics.url(cfg.metrics.host, cfg.metrics.port),
                                    timeout=timeout_s) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def agent_state(cfg, probe=True):
    """``{"running", "pid", "evidence": [...], "metrics_url"}`` from the three signs."""
    evidence, pid = [], None
    lock = os.path.join(cfg.data_dir, AGENT_LOCK)
    if lock_is_held(lock):
        pid = _read_pid(lock)
        evidence.append("%s is locked (pid %s)" % (lock, pid or "unknown"))
    holders = posix_lock_holders(cfg.outbox.path)
    if holders:
        pid = pid or min(holders)
        evidence.append("the outbox is open in process %s" % ", ".join(map(str, sorted(holders))))
    url = metrics.url(cfg.metrics.host, cfg.metrics.port) if cfg.metrics.enabled else None
    if probe and url and probe_metrics(cfg):
        evidence.append("metrics answer at %s" % url)
    return {"running": bool(evidence), "pid": pid, "evidence": evidence, "metrics_url": url}


# -- reading the database ------------------------------------------------------------------------
def open_readonly(path):
    """A read-only connection to the outbox at ``path``; ``OpsError`` if there is none or it
    cannot be read (the message says which file and what to do)."""
    if not os.path.exists(path):
        raise OpsError("no outbox at %s: the agent has not run with this configuration yet "
                       "(check outbox.path and site.data_dir)" % path)
    try:
        db = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(os.path.abspath(path)),
                             uri=True, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("SELECT count(*) FROM meta").fetchone()
        return db
    except sqlite3.Error as e:
        raise OpsError("cannot read the outbox %s (%s): run as the agent's user (sudo -u "
                       "civicedge ...) or root; if it is damaged, stop the agent and move the "
                       "file aside" % (path, e)) from e


def iso(t):
    """Unix seconds -> ``2026-01-05T10:00:00Z`` (None stays None)."""
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def parse_time(text, name):
    """ISO-8601 date or date-time -> Unix seconds (no zone: UTC); ``ValueError`` names ``name``."""
    try:
        dt = datetime.datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ValueError("%s %r is not an ISO-8601 date or time (e.g. 2026-01-05 or "
                         "2026-01-05T10:00:00Z)" % (name, text)) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp()


def _meta(db):
    return dict(db.execute("SELECT key, value FROM meta"))


def _live(cfg, timeout_s=1.0):
    """A few live numbers from the metrics endpoint, or None."""
    try:
        with urllib.request.urlopen(metrics.url(cfg.metrics.host, cfg.metrics.port),
                                    timeout=timeout_s) as r:
            text = r.read(4 << 20).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, _, value = line.rpartition(" ")
        try:
            out[series] = float(value)
        except ValueError:
            continue
    return out


def gather_status(cfg, now_s, probe=True):
    """The status as a JSON-able dict (see the module docstring); ``now_s`` is the wall time
    ages are measured from. Raises ``OpsError`` only if the outbox exists but is unreadable."""
    st = {"config": cfg.file, "site": cfg.site_id, "gateway": cfg.gateway_id,
          "now": iso(now_s), "agent": agent_state(cfg, probe), "notes": []}
    notes = st["notes"]
    if not st["agent"]["running"]:
        notes.append("the agent is not running: systemctl start civicedge-gateway; "
                     "journalctl -u civicedge-gateway says why it stopped")
    devices = {d.id: {"id": d.id, "link": d.link, "profile": d.profile, "last_seen": None,
                      "last_seen_age_s": None, "unsent": 0, "last_key": None}
               for d in cfg.devices}
    ob = st["outbox"] = {"path": cfg.outbox.path, "exists": os.path.exists(cfg.outbox.path)}
    if not ob["exists"]:
        notes.append("no outbox at %s yet: the agent has not stored anything" % cfg.outbox.path)
    else:
        db = open_readonly(cfg.outbox.path)
        try:
            db.execute("BEGIN")  # one snapshot for every figure
            _outbox_status(db, cfg, now_s, ob, st, devices, notes)
            db.execute("COMMIT")
        finally:
            db.close()
    live = _live(cfg) if probe and st["agent"]["metrics_url"] else None
    st["live"] = live
    notes.extend(ops_alarms.live_notes(live, notes, os.path.dirname(cfg.outbox.path) or "."))
    if live:
        for series, v in live.items():
            if series.startswith("civicedge_device_last_seen_timestamp_seconds{device=\""):
                dev = series.split("\"")[1]
                d = devices.setdefault(dev, {"id": dev, "link": None, "profile": None,
                                             "last_seen": None, "unsent": 0, "last_key": None})
                if d["last_seen"] is None or v > parse_time(d["last_seen"], "last_seen"):
                    d["last_seen"] = iso(v)
    for d in devices.values():
        if d["last_seen"] is not None:
            d["last_seen_age_s"] = round(now_s - parse_time(d["last_seen"], "last_seen"), 1)
        if d["link"] is not None and (d["last_seen"] is None or d["last_seen_age_s"] > QUIET_S):
            notes.append("device %s has not been heard from %s" % (
                d["id"], "at all" if d["last_seen"] is None else "since " + d["last_seen"]))
    st["devices"] = sorted(devices.values(), key=lambda d: (d["link"] is None, d["id"]))
    return st


def _outbox_status(db, cfg, now_s, ob, st, devices, notes):
    m = _meta(db)
    lanes = ("alarm", "routine")
    ob["unsent"] = {lane: m.get("rows_" + lane, 0) for lane in lanes}
    ob["unsent"]["total"] = sum(ob["unsent"][lane] for lane in lanes)
    ob["tracked_bytes"] = sum(m.get("bytes_" + lane, 0) for lane in lanes)
    ob["max_bytes"] = cfg.outbox.max_bytes
    ob["file_bytes"] = sum(os.path.getsize(cfg.outbox.path + s) for s in ("", "-wal")
                           if os.path.exists(cfg.outbox.path + s))
    first = db.execute("SELECT rx_ms, rx_wall_s FROM rows ORDER BY id LIMIT 1").fetchone()
    ob["oldest_unsent_age_s"] = None if first is None else (m["store_ms"] - first[0]) / 1000.0
    ob["oldest_unsent_received"] = None if first is None else iso(first[1])
    ob["dropped"] = {lane: m.get("dropped_" + lane, 0) for lane in lanes}
    ob["dropped_by_reason"] = {r: m.get("dropped_" + r, 0) for r in ("size", "age", "full")}
    ob["duplicates"], ob["disk_full_events"] = m.get("duplicates", 0), m.get("disk_full", 0)
    ob["gap_markers"] = [
        {"device": g[0], "dropped": g[1], "alarms": g[2], "first": [g[3], g[4]],
         "last": [g[5], g[6]]}
        for g in db.execute("SELECT device_id, dropped, alarms, first_epoch, first_seq, "
                            "last_epoch, last_seq FROM gaps ORDER BY id LIMIT 1000")]
    if ob["oldest_unsent_age_s"] and ob["oldest_unsent_age_s"] > OLD_UNSENT_S:
        notes.append("the oldest unsent row waited %s: is the upstream reachable? (see the "
                     "agent's log)" % duration(ob["oldest_unsent_age_s"]))
    if sum(ob["dropped"].values()):
        notes.append("%d row(s) were dropped by the outbox's bounds (each reported upstream as a "
                      "gap): raise outbox.max_bytes/max_age_s or fix the upstream link"
                      % sum(ob["dropped"].values()))
    if ob["disk_full_events"]:
        notes.append("the disk was full %d time(s): free space on %s"
                     % (ob["disk_full_events"], os.path.dirname(cfg.outbox.path) or "."))
    hist = st["history"] = {"rows": m.get("history_rows", 0), "bytes": m.get("history_bytes", 0),
                            "trimmed": {r: m.get("history_trimmed_" + r, 0)
                                        for r in ("size", "age", "full")},
                            "skipped": m.get("history_skipped", 0), "oldest": None, "newest": None}
    def device(dev):
        return devices.setdefault(dev, {"id": dev, "link": None, "profile": None,
                                        "last_seen": None, "unsent": 0, "last_key": None})
    seen = {}
    dev = ""  # unsent rows: each device through the key index (a backlog may hold millions)
    while True:
        dev = db.execute("SELECT min(device_id) FROM rows WHERE device_id > ?",
                         (dev,)).fetchone()[0]
        if dev is None:
            break
        device(dev)["unsent"] = db.execute("SELECT count(*) FROM rows WHERE device_id = ?",
                                           (dev,)).fetchone()[0]
        last = db.execute("SELECT rx_wall_s FROM rows WHERE device_id = ? ORDER BY boot_epoch "
                          "DESC, seq DESC LIMIT 1", (dev,)).fetchone()[0]
        if last is not None:
            seen[dev] = last
    if history.has_table(db, "history"):  # bounded (history_max_bytes): one scan
        lo, hi = db.execute("SELECT min(%s), max(%s) FROM history"
                            % (history.TIME_EXPR, history.TIME_EXPR)).fetchone()
        hist["oldest"], hist["newest"] = iso(lo), iso(hi)
        for dev, last in db.execute("SELECT device_id, max(rx_wall_s) FROM history "
                                    "GROUP BY device_id"):
            device(dev)
            if last is not None and last > seen.get(dev, -1):
                seen[dev] = last
    for dev, last in seen.items():
        devices[dev]["last_seen"] = iso(last)
    if history.has_table(db, "state"):
        row = db.execute("SELECT json FROM state WHERE name = 'replay'").fetchone()
        try:
            for dev, s in json.loads(row[0])["devices"].items() if row else ():
                if dev in devices:
                    devices[dev]["last_key"] = [s["e"], max(hi for _, hi in s["r"])]
        except (ValueError, KeyError, TypeError, AttributeError):
            notes.append("the stored replay state is not readable (the agent says more)")
        # the gateway's own alarms standing: tls_failure and disk_full (gateway.ops_alarms)
        notes.extend(ops_alarms.stored_notes(db, os.path.dirname(cfg.outbox.path) or ".", iso))


def duration(s):
    """``3 d 4 h``, ``2 h 5 min``, ``4 min 10 s``, ``12 s``."""
    s = int(s)
    for unit, n, sub, k in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if s >= n:
            return "%d %s %d %s" % (s // n, unit, (s % n) // k, sub)
    return "%d s" % s


def _mb(n):
    return "%.1f MB" % (n / 1e6) if n >= 100000 else "%d kB" % -(-n // 1000)


def format_status(st):
    """The status dict as text for a person."""
    a, ob, out = st["agent"], st["outbox"], []
    out.append("gateway %s at site %s (%s), %s" % (st["gateway"], st["site"], st["config"],
                                                   st["now"]))
    state = "running (%s)" % "; ".join(a["evidence"]) if a["running"] else "NOT running"
    out.append("agent:    %s" % state)
    out.append("metrics:  %s" % (a["metrics_url"] or "off (metrics.enabled = false)"))
    if not ob["exists"]:
        out.append("outbox:   %s does not exist yet" % ob["path"])
    else:
        u = ob["unsent"]
        out.append("outbox:   %s, %s on disk" % (ob["path"], _mb(ob["file_bytes"])))
        out.append("  unsent: %d rows (alarm %d, routine %d), %s of the %s bound (%.1f %%)" % (
            u["total"], u["alarm"], u["routine"], _mb(ob["tracked_bytes"]),
            _mb(ob["max_bytes"]), 100.0 * ob["tracked_bytes"] / ob["max_bytes"]))
        if ob["oldest_unsent_age_s"] is not None:
            out.append("  oldest unsent: waiting %s (received %s)" % (
                duration(ob["oldest_unsent_age_s"]), ob["oldest_unsent_received"] or
                "while the clock was unsynchronised"))
        d, r = ob["dropped"], ob["dropped_by_reason"]
        out.append("  dropped by policy: %d (alarm %d, routine %d; size %d, age %d, disk full %d)"
                   % (sum(d.values()), d["alarm"], d["routine"], r["size"], r["age"], r["full"]))
        gaps = ob["gap_markers"]
        out.append("  gap markers waiting to go upstream: %d%s" % (len(gaps), "".join(
            "\n    %s: %d dropped (%d alarms), keys %d:%d .. %d:%d" % (
                g["device"], g["dropped"], g["alarms"], g["first"][0], g["first"][1],
                g["last"][0], g["last"][1]) for g in gaps[:10])))
        out.append("  duplicates ignored: %d; disk-full events: %d"
                   % (ob["duplicates"], ob["disk_full_events"]))
        h = st["history"]
        out.append("history:  %d delivered rows kept for export (%s), %s .. %s; trimmed %d "
                   "(not drops)%s" % (h["rows"], _mb(h["bytes"]), h["oldest"] or "-",
                                      h["newest"] or "-", sum(h["trimmed"].values()),
                                      "; %d not kept (disk full)" % h["skipped"]
                                      if h["skipped"] else ""))
    out.append("devices:  %-24s %-8s %8s  %-12s %s" % ("id", "link", "unsent", "last key",
                                                      "last received"))
    for d in st["devices"]:
        ago = " (%s ago)" % duration(d["last_seen_age_s"]) if d["last_seen"] else ""
        key = "%d:%d" % tuple(d["last_key"]) if d["last_key"] else "-"
        out.append("          %-24s %-8s %8d  %-12s %s%s" % (
            d["id"], d["link"] or "-", d["unsent"], key, d["last_seen"] or "never", ago))
    live = st.get("live")
    if live:
        def g(series):
            return int(live.get(series, 0))
        out.append("live:     received %d, forwarded %d, replays %d, auth failures %d, "
                   "upstream %s" % (g("civicedge_received_total"), g("civicedge_forwarded_total"),
                                    g("civicedge_replays_total"),
                                    sum(int(v) for k, v in live.items()
                                        if k.startswith("civicedge_auth_failures_total")),
                                    "connected" if g("civicedge_upstream_connected") else
                                    "NOT connected"))
    for n in st["notes"]:
        out.append("note:     " + n)
    return "\n".join(out) + "\n"
