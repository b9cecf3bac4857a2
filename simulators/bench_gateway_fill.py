"""The drain bench's backlogs (``simulators.bench_gateway_drain``): the records of a backlog
(``records``) and ``fill``, one SQL bulk insert into a file the real ``Outbox`` created, rows
exactly as ``Outbox.put_many`` writes them, with the lane counters set to match."""

import json
import os
import sqlite3
import time

DEVICES = 50
BOOT_EPOCH = 7
INTERVAL_S = 120
T0 = 1767225600
BOUNDS = {"max_bytes": 1 << 40, "max_age_s": 3650 * 86400.0}  # nothing is dropped


def device(d):
    return "sch1-rm%02d-co2" % d


def _values():
    from simulators.bench_gateway_workload import _classroom_values
    return _classroom_values()


def records(n, devices=DEVICES, values=None):
    """The backlog's first ``n`` records as ``OutboxRecord``s, in arrival order: one reading of
    every device, then the next (record i: device i % devices, seq i // devices)."""
    from gateway.outbox import OutboxRecord

    values = values if values is not None else _values()
    for i in range(n):
        d, seq = i % devices, i // devices
        yield OutboxRecord(device(d), BOOT_EPOCH, seq, {
            "seq": seq, "t": T0 + seq * INTERVAL_S + d,
            "values": values[(seq + d * 37) % len(values)]})


_FILL = """
WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c LIMIT :n)
INSERT INTO rows (id, device_id, boot_epoch, seq, lane, rx_ms, rx_wall_s, payload)
SELECT i + 1, printf('sch1-rm%02d-co2', i % :d), :epoch, i / :d, 'routine', :rx_ms, :wall,
       printf('{"seq":%d,"t":%d,"values":%s}', i / :d, :t0 + (i / :d) * :step + i % :d,
              (SELECT j FROM temp.v WHERE k = (i / :d + (i % :d) * 37) % :nv))
FROM c"""


def fill(path, n, devices=DEVICES, values=None):
    """A new outbox at ``path`` holding ``records(n)`` as ``Outbox.put_many`` stores them (the
    same payload text, key, lane and counters), by one SQL insert. Returns the seconds."""
    from gateway.clock import SystemClock
    from gateway.outbox import Outbox
    from gateway.outbox_policy import ROW_OVERHEAD_BYTES

    if devices > 100:
        raise ValueError("devices must be <= 100 (two-digit device ids)")
    values = values if values is not None else _values()
    t0 = time.perf_counter()
    Outbox(path, clock=SystemClock(wall_trusted=True), **BOUNDS).close()  # the schema
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = OFF")  # a fixture: one sync at the checkpoint
        db.execute("PRAGMA cache_size = -262144")  # the key index stays in memory
        db.execute("CREATE TEMP TABLE v (k INTEGER PRIMARY KEY, j TEXT NOT NULL)")
        db.executemany("INSERT INTO temp.v VALUES (?, ?)", [  # the outbox's JSON (compact)
            (k, json.dumps(v, separators=(",", ":"), allow_nan=False))
            for k, v in enumerate(values)])
        rx_ms = db.execute("SELECT value FROM meta WHERE key = 'store_ms'").fetchone()[0]
        db.execute("BEGIN IMMEDIATE")
        db.execute(_FILL, {"n": n, "d": devices, "epoch": BOOT_EPOCH, "rx_ms": rx_ms,
                           "wall": time.time(), "t0": T0, "step": INTERVAL_S, "nv": len(values)})
        rows, nbytes = db.execute("SELECT count(*), coalesce(sum(length(payload) + 2 * "
                                  "length(device_id)), 0) FROM rows").fetchone()
        db.executemany("UPDATE meta SET value = ? WHERE key = ?", [
            (rows, "rows_routine"), (nbytes + rows * ROW_OVERHEAD_BYTES, "bytes_routine")])
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    os.sync()
    return time.perf_counter() - t0
