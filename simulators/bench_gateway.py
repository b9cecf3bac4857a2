"""The gateway agent's benchmarks (issue 4): ``scripts/bench gateway``, each section written to
``docs/benchmarks.md`` between ``<!-- bench:gateway-NAME -->`` markers like the others.

``gateway-ingest``
    Durable ingest: readings committed per second. Real node frames, made as nodes make them
    (``protocol.senml.encode_pack`` + ``protocol.frame.encode_data``: 50 classroom-co2 nodes,
    4-value readings of one simulated day through the real drivers, a status record every 30
    cycles as the profile says) go through the real ``gateway.agent.Agent``: its queue, then
    per batch ``Ingest.ingest_frame`` (HMAC, replay, cbor2, the SenML decode, checks, the
    profile's alarm rules in UK time), ONE ``Outbox.put_many(records, state=...)`` on a new
    file (WAL, synchronous=FULL), ``ingest.commit()`` and the acks. A node keeps one frame in
    flight until it is acked, so a batch holds one frame per node. Baseline in the same run:
    plain ``sqlite3`` inserting the same rows (the same JSON text, a table like the outbox's
    with its unique key) with ``executemany``, one transaction per batch, WAL and
    synchronous=FULL. Measured alone too: decoding (``cbor2.loads`` + ``decode_pack``), the
    pipeline (no outbox) and the outbox (``put_many`` of records already decoded); and a
    cProfile of a durable run says where the time goes.

Rates are the best of ``ROUNDS`` rounds, the kinds interleaved, because these machines are
noisy; the ratio to the baseline is the figure to compare across runs.
"""

import datetime
import os
import platform
import sqlite3
import tempfile
import time

# The workload, the durable run, the profile and the section live in their own modules; their
# names are importable from here as before.
from simulators.bench_gateway_report import (  # noqa: F401
    HEADERS, PARTS, PROFILE_TOP, _profile, ingest_section)
from simulators.bench_gateway_workload import (  # noqa: F401
    BIG_FRAME, BOOT_EPOCH, DEVICES, FRAMES_PER_DEVICE, GOAL_RATE, INTERVAL_S, READINGS_PER_FRAME,
    ROUNDS, SITE_TZ, STATUS_EVERY, T0, _alarm_engine, _chunks, _classroom_values, _ingest,
    _open_outbox, _since, _start, durable_run, make_frames)


_PLAIN_SCHEMA = ("CREATE TABLE rows (id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, "
                 "boot_epoch INTEGER NOT NULL, seq INTEGER NOT NULL, lane TEXT NOT NULL, "
                 "rx_ms INTEGER NOT NULL, rx_wall_s REAL, payload TEXT NOT NULL, "
                 "UNIQUE (device_id, boot_epoch, seq))")
_PLAIN_INSERT = ("INSERT INTO rows (device_id, boot_epoch, seq, lane, rx_ms, rx_wall_s, payload) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)")


def plain_run(batches, path):
    """The baseline: ``batches`` (lists of row tuples for ``_PLAIN_INSERT``) inserted with
    ``executemany``, one transaction each, into a new SQLite file at ``path`` in WAL mode
    with synchronous=FULL. Returns ``((wall s, CPU s), rows_stored)``."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute(_PLAIN_SCHEMA)
        t0 = _start()
        for rows in batches:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_PLAIN_INSERT, rows)
            db.execute("COMMIT")
        seconds = _since(t0)
        stored = db.execute("SELECT count(*) FROM rows").fetchone()[0]
    finally:
        db.close()
    return seconds, stored


def _decoded_batches(keys, frames, frames_per_batch):
    """Each batch's outbox records as the agent stores them
    (``gateway.agent_records.stored_records``)."""
    from gateway.agent_records import stored_records as _stored

    ingest, out = _ingest(keys, True), []
    for batch in _chunks(frames, frames_per_batch):
        rows = []
        for f in batch:
            res = ingest.ingest_frame(f, "bench")
            if not res.accepted:
                raise RuntimeError("bench frame rejected: %s" % res.detail)
            rows += _stored(res, None)
        ingest.commit()
        out.append(rows)
    return out


def _plain_batches(batches):
    """The baseline's rows for ``_decoded_batches``: the same records' JSON text, as the
    outbox writes it (``outbox_policy.prepare``), in tuples for ``_PLAIN_INSERT``."""
    from gateway.outbox_policy import prepare

    return [[(d, e, s, lane, 0, None, p) for d, e, s, lane, p, _ in prepare(rows)[0]]
            for rows in batches]


def _pipeline_run(keys, frames, frames_per_batch, alarms):
    ingest = _ingest(keys, alarms)
    t0 = _start()
    for batch in _chunks(frames, frames_per_batch):
        for f in batch:
            ingest.ingest_frame(f, "bench")
        ingest.commit()
    return _since(t0)


def _decode_run(payloads):
    import cbor2

    from protocol.senml_decode import decode_pack

    t0 = _start()
    for p in payloads:
        decode_pack(cbor2.loads(p))
    return _since(t0)


def _outbox_run(batches, path):
    outbox = _open_outbox(path)
    try:
        t0 = _start()
        for rows in batches:
            outbox.put_many(rows)
        return _since(t0)
    finally:
        outbox.close()



def measure_ingest(devices=DEVICES, frames_per_device=FRAMES_PER_DEVICE,
                   readings_per_frame=READINGS_PER_FRAME, big_frame=BIG_FRAME, rounds=ROUNDS,
                   profile=True, values=None):
    """Every figure of the ``gateway-ingest`` section as a dict: rates in readings/s (best of
    ``rounds``) ``plain``, ``durable``, ``durable_no_alarms``, ``pipeline``,
    ``pipeline_no_alarms``, ``decode``, ``outbox`` and, with ``big_frame``, ``big_plain``
    and ``big_durable`` for frames of that many records; the workload (``readings``,
    ``records``, ``frames``, ``frame_bytes``...), what the durable runs ``stored`` and
    ``acks`` (checked: every record, every frame), ``profile`` (top functions),
    ``profile_parts`` and ``profile_total_s``. Raises ``RuntimeError`` if a run lost a record or an ack."""
    from protocol import frame as frame_mod

    load = os.getloadavg()[0]
    values = values if values is not None else _classroom_values()
    keys, frames, readings, records = make_frames(devices, frames_per_device,
                                                  readings_per_frame, values=values)
    payloads = [frame_mod.decode_frame(f, keys.get).payload for f in frames]
    plain_rows = _plain_batches(_decoded_batches(keys, frames, devices))
    out = {"readings": readings, "records": records, "frames": len(frames),
           "frame_bytes": sum(map(len, frames)) / len(frames), "devices": devices,
           "readings_per_frame": readings_per_frame, "load": load, "cpus": os.cpu_count()}
    best = {}

    def keep(name, seconds, n=readings):  # the best wall rate, and the least CPU a reading
        wall, cpu = seconds
        best[name] = max(best.get(name, 0.0), n / wall)
        best[name + "_cpu_us"] = min(best.get(name + "_cpu_us", float("inf")), cpu / n * 1e6)

    def durable(name, ks, fs, n_readings, n_records, path, **kw):
        seconds, stored, acks = durable_run(ks, fs, path, devices, **kw)
        if stored != n_records or acks != len(fs):
            raise RuntimeError("durable run stored %d records and acked %d frames, expected "
                               "%d and %d" % (stored, acks, n_records, len(fs)))
        keep(name, seconds, n_readings)
        if name == "durable":
            out["stored"], out["acks"] = stored, acks

    with tempfile.TemporaryDirectory(prefix="civicedge-bench-") as tmp:
        def path(name, r):
            return os.path.join(tmp, "%s-%d.db" % (name, r))
        for r in range(rounds):
            seconds, stored = plain_run(plain_rows, path("plain", r))
            if stored != records:
                raise RuntimeError("baseline stored %d rows, expected %d" % (stored, records))
            keep("plain", seconds)
            durable("durable", keys, frames, readings, records, path("durable", r))
            durable("durable_no_alarms", keys, frames, readings, records, path("bare", r),
                    alarms=False)
            keep("pipeline", _pipeline_run(keys, frames, devices, True))
            keep("pipeline_no_alarms", _pipeline_run(keys, frames, devices, False))
            keep("decode", _decode_run(payloads))
        decoded = _decoded_batches(keys, frames, devices)  # held only while it is used
        for r in range(rounds):
            keep("outbox", _outbox_run(decoded, path("outbox", r)))
        del decoded
        if big_frame:
            per_device = max(1, frames_per_device * readings_per_frame // big_frame)
            bkeys, bframes, breadings, brecords = make_frames(devices, per_device, big_frame,
                                                              values=values)
            bplain = _plain_batches(_decoded_batches(bkeys, bframes, devices))
            for r in range(rounds):
                keep("big_plain", plain_run(bplain, path("bplain", r))[0], breadings)
                durable("big_durable", bkeys, bframes, breadings, brecords, path("big", r))
            out["big_frame"] = big_frame
            out["big_frame_bytes"] = sum(map(len, bframes)) / len(bframes)
        if profile:
            some = frames[:len(frames) // 2]
            out["profile"], out["profile_parts"], out["profile_total_s"] = _profile(
                keys, some, path("profile", 0))
    out.update(best)
    return out


def bench_ingest():
    return ingest_section(measure_ingest())


# ---- running and writing -------------------------------------------------------------------

def _drain(name):
    """``simulators.bench_gateway_drain.<name>``."""
    from simulators import bench_gateway_drain
    return getattr(bench_gateway_drain, name)


SECTIONS = {"gateway-ingest": (bench_ingest, HEADERS),
            # simulators/bench_gateway_drain.py: one run measures these three
            "gateway-drain": (_drain("bench_drain"), _drain("DRAIN_HEADERS")),
            "gateway-rss": (_drain("bench_rss"), _drain("RSS_HEADERS")),
            "gateway-idle": (_drain("bench_idle"), _drain("IDLE_HEADERS"))}


def _markdown(name, title, rows, notes, head):
    lines = ["## %s" % name, "", title + ".", "",
             "Command: `scripts/bench gateway` — measured %s on %s, Python %s." % (
                 datetime.date.today().isoformat(), platform.machine(),
                 platform.python_version()), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main(names=(), write=True):
    """Run the gateway sections ``names`` (default all), print them and, with ``write``,
    replace their blocks in docs/benchmarks.md. Returns 0."""
    from simulators import bench

    sections = {}
    for name in names or list(SECTIONS):
        fn, head = SECTIONS[name]
        print("running %s ..." % name, flush=True)
        t0 = time.perf_counter()
        sections[name] = _markdown(name, *fn(), head=head)
        print(sections[name])
        print("(%s took %.0f s)" % (name, time.perf_counter() - t0), flush=True)
    if write:
        bench._write(sections)
        print("written to %s" % bench.DOC.relative_to(bench.REPO))
    return 0
