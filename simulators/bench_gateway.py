"""The gateway agent's benchmarks (issue 4): ``scripts/bench gateway``, each section written to
``docs/benchmarks.md`` between ``<!-- bench:gateway-NAME -->`` markers like the others.

``gateway-ingest``
    Durable ingest: readings committed per second. Real node frames, made as nodes make them
    (``protocol.senml.encode_pack`` + ``protocol.frame.encode_data``: 50 classroom-co2 nodes,
    4-value readings of one simulated day through the real drivers, a status record every 30
    cycles as the profile says) go through the real ``gateway.agent.Agent``: its queue, then
    per batch ``Ingest.ingest_frame`` (HMAC, replay, cbor2, ``decode_pack``, checks, the
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

import cProfile
import datetime
import os
import platform
import pstats
import sqlite3
import tempfile
import time

DEVICES = 50
READINGS_PER_FRAME = 16      # FramedLink.max_batch_records default (firmware/app/links/framed.py)
BIG_FRAME = 40               # about the most 4-value readings a 4096-byte frame holds
FRAMES_PER_DEVICE = 24       # frames each node sends in a run (its backlog)
STATUS_EVERY = 30            # classroom-co2 status_every_n_cycles
INTERVAL_S = 120             # classroom-co2 interval_s
BOOT_EPOCH = 7
ROUNDS = 5
GOAL_RATE = 50000            # readings/s (issue 4)
T0 = 1767225600              # 2026-01-01T00:00:00Z, as simulators/bench_node.py
SITE_TZ = "Europe/London"
PROFILE_TOP = 14


def _classroom_values():
    """The readings (CO2, T, RH) of one simulated classroom day as the real drivers produce
    them (``simulators.daysim``, seed 1), each with ``battery_v`` as the 4th value (3.0 V in
    10 mV steps, seeded noise: ``simulators/bench_node.py``'s "4-value reading")."""
    import random

    from simulators import daysim

    by_t = {}
    for s in daysim.run_day("classroom-co2", seed=1, duration_s=daysim.DAY_S):
        by_t.setdefault(s.t_s, []).append([s.quantity, s.reading, "ok"])
    rng = random.Random(1)
    return [by_t[t] + [["battery_v", round(rng.gauss(3.0, 0.01), 2), "ok"]]
            for t in sorted(by_t)]


def _start():
    return time.perf_counter(), time.process_time()


def _since(t0):
    """``(wall s, CPU s of this process)`` since ``_start()``'s ``t0``."""
    return time.perf_counter() - t0[0], time.process_time() - t0[1]


def _chunks(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def make_frames(devices=DEVICES, frames_per_device=FRAMES_PER_DEVICE,
                readings_per_frame=READINGS_PER_FRAME, status_every=STATUS_EVERY, values=None):
    """Node frames as nodes send their logs: ``devices`` classroom nodes (``sch1-rmNN-co2``),
    each ``frames_per_device`` data frames of ``readings_per_frame`` records in seq order (a
    status record after every ``status_every`` readings takes a record's place, as in the
    firmware's log), ordered round by round: one frame of every node, then the next. Returns
    ``(keys, frames, readings, records)``: device keys, the frames (bytes), and how many
    readings and records (readings + status) they carry."""
    from protocol import frame, senml

    values = values if values is not None else _classroom_values()
    keys = {"sch1-rm%02d-co2" % i: bytes((i * 7 + j) & 0xFF for j in range(16))
            for i in range(devices)}
    per_device, readings, records = [], 0, 0
    for d, dev in enumerate(keys):
        log, cycle = [], d * 37            # each node at another point of the day
        while len(log) < frames_per_device * readings_per_frame:
            cycle += 1
            t = T0 + cycle * INTERVAL_S + d
            log.append({"seq": len(log), "t": t, "values": values[cycle % len(values)]})
            if cycle % status_every == 0:
                log.append({"seq": len(log), "t": t, "kind": "status",
                            "values": [["boot_reason", "poweron", "ok"]],
                            "counters": {"boots": 1, "cycles": cycle, "i2c_errors": 0,
                                         "log_bytes": 115 * len(log)}})
        log = log[:frames_per_device * readings_per_frame]
        records += len(log)
        readings += sum(1 for r in log if "kind" not in r)
        per_device.append([frame.encode_data(keys[dev], dev, BOOT_EPOCH, chunk[0]["seq"],
                                             len(chunk), senml.encode_pack(dev, BOOT_EPOCH, chunk))
                           for chunk in _chunks(log, readings_per_frame)])
    frames = [dev_frames[i] for i in range(frames_per_device) for dev_frames in per_device]
    return keys, frames, readings, records


def _alarm_engine(devices):
    """The classroom-co2 profile's alarm rules for every device, in UK local time (what
    ``gateway.app.build`` gives a site)."""
    import tomllib
    import zoneinfo

    from gateway.alarms import AlarmEngine, rules_from_profile
    from simulators.mpyrun import REPO

    with open(REPO / "hardware" / "profiles" / "classroom-co2.toml", "rb") as f:
        profile = tomllib.load(f)
    return AlarmEngine({dev: rules_from_profile(profile) for dev in devices},
                       tz=zoneinfo.ZoneInfo(SITE_TZ))


def _ingest(keys, alarms):
    from gateway.pipeline import Ingest

    return Ingest(keys, alarms=_alarm_engine(keys) if alarms else None)


def _open_outbox(path, clock=None):
    from gateway.clock import SystemClock
    from gateway.outbox import Outbox

    # bounds far above the run: nothing is dropped, every row is an insert
    return Outbox(path, max_bytes=1 << 40, max_age_s=365 * 86400.0,
                  clock=clock or SystemClock(wall_trusted=True))


def durable_run(keys, frames, path, frames_per_batch=DEVICES, alarms=True):
    """The real ``gateway.agent.Agent`` (no sources, no forwarder) over ``frames``, into a
    new outbox at ``path``: ``frames_per_batch`` arrivals queued through ``sink``, then
    ``step`` until the queue is empty (each step: ingest, ONE ``put_many`` with the state,
    commit, acks). Returns ``((wall s, CPU s), records_stored, acks)``."""
    from gateway.agent import Agent
    from gateway.clock import SystemClock
    from gateway.sources import FRAME, Arrival

    clock = SystemClock(wall_trusted=True)
    agent = Agent(_ingest(keys, alarms), _open_outbox(path, clock), clock, gateway_id="gw-bench",
                  batch_max=frames_per_batch)
    acked = []
    arrivals = [Arrival(FRAME, f, "bench", reply=acked.append) for f in frames]
    agent.start()
    try:
        t0 = _start()
        for batch in _chunks(arrivals, frames_per_batch):
            for a in batch:
                agent.sink(a)
            while agent.step(0):
                pass
        seconds = _since(t0)
        stored = agent.counters.get("records_stored", 0)
    finally:
        agent.stop()
    return seconds, stored, len(acked)


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
    """Each batch's outbox records as the agent stores them (``gateway.agent._stored``)."""
    from gateway.agent import _stored

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


# The parts of a durable run whose cumulative time the section shows: "file|function|label"
PARTS = [line.split("|") for line in (
    "gateway/agent.py|_batch|the agent's batch (all that follows)",
    "gateway/pipeline.py|ingest_frame|`Ingest.ingest_frame`",
    "protocol/frame.py|decode_frame|frame check (HMAC)",
    "~|<built-in method cbor2._cbor2.loads>|`cbor2.loads`",
    "protocol/senml_decode.py|decode_pack|`decode_pack`",
    "gateway/pipeline.py|_check_values|`_check_values`",
    "gateway/alarms.py|observe|alarm rules (`AlarmEngine.observe`)",
    "protocol/frame.py|encode_ack|ack (HMAC)",
    "gateway/agent.py|_stored|agent: records to store (`_stored`)",
    "gateway/alarms.py|state|alarm state copy (`AlarmEngine.state`)",
    "gateway/outbox.py|put_many|`Outbox.put_many`",
    "gateway/outbox_policy.py|_encode|JSON of the records",
    "gateway/outbox_state.py|encode_state|state check + JSON",
    "~|<method 'executemany' of 'sqlite3.Connection' objects>|SQLite inserts",
    "gateway/outbox.py|_commit|SQLite commit (fsync)")]


def _profile(keys, frames, path):
    """A cProfile of a durable run: the top functions by own time ``[(function, calls,
    own_s, share)]``, the ``PARTS`` ``[(label, cumulative share)]`` and the seconds
    profiled."""
    from simulators.mpyrun import REPO

    prof = cProfile.Profile()
    prof.enable()
    durable_run(keys, frames, path)
    prof.disable()
    stats = pstats.Stats(prof).stats
    total = sum(v[2] for v in stats.values())
    top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:PROFILE_TOP]
    root, rows = str(REPO) + os.sep, []
    for (filename, line, func), (_cc, calls, own, _cum, _callers) in top:
        if filename == "~":
            name = func
        elif filename.startswith(root):
            name = "%s:%d %s" % (filename[len(root):], line, func)
        else:
            name = "%s:%d %s" % (os.path.basename(filename), line, func)
        rows.append((name, calls, own, own / total if total else 0.0))
    parts = []
    for where, func, label in PARTS:
        cum = sum(v[3] for (filename, _line, f), v in stats.items()
                  if f == func and (filename == where or filename.endswith(os.sep + where)))
        parts.append((label, cum / total if total else 0.0))
    return rows, parts, total


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


# ---- the section ---------------------------------------------------------------------------

HEADERS = ("what", "readings/s", "µs/reading", "CPU µs/reading", "ratio to plain SQLite")


def ingest_section(m):
    """``(title, rows, notes)`` of the ``gateway-ingest`` section from ``measure_ingest``."""
    base = m["plain"]

    def row(label, key, ref=base):
        return (label, "%.0f" % m[key], "%.1f" % (1e6 / m[key]), "%.1f" % m[key + "_cpu_us"],
                "%.3f" % (m[key] / ref))

    rows = [
        row("plain SQLite: executemany of the same rows, a transaction per batch, WAL + "
            "synchronous=FULL (baseline)", "plain"),
        row("**durable ingest**: the agent's loop, frames → `Ingest.ingest_frame` (alarm "
            "rules on) → one `Outbox.put_many(records, state=...)` a batch → commit → acks",
            "durable"),
        row("durable ingest, no alarm rules", "durable_no_alarms"),
        row("pipeline only: `ingest_frame` (HMAC, replay, cbor2, decode, checks, alarm rules), "
            "no outbox", "pipeline"),
        row("pipeline only, no alarm rules", "pipeline_no_alarms"),
        row("decode only: `cbor2.loads` + `decode_pack`", "decode"),
        row("outbox only: `put_many` of the decoded records, no state", "outbox"),
    ]
    if "big_durable" in m:
        rows.append(row("durable ingest, frames of %d records (%.0f B); ratio to plain SQLite "
                        "for their rows (%.0f /s)" % (m["big_frame"], m["big_frame_bytes"],
                                                      m["big_plain"]),
                        "big_durable", m["big_plain"]))
    met = m["durable"] >= GOAL_RATE
    notes = [
        "**Goal: at least %d readings/s durable ingest on this 2-core machine: %s** — %.0f "
        "readings/s committed with the profile's alarm rules, %.0f without (%.2f× and %.2f× "
        "plain SQLite's rate for the same rows)."
        % (GOAL_RATE, "met" if met else "NOT met", m["durable"], m["durable_no_alarms"],
           m["durable"] / base, m["durable_no_alarms"] / base),
        "CPU µs/reading is this process's CPU time (`time.process_time`, the least of the "
        "rounds); the rest of the wall time is waiting: fsync at each commit, and other "
        "processes on the machine. The agent's loop is one thread, so its CPU alone caps "
        "durable ingest at %.0f readings/s (%.0f without alarm rules) however fast the disk."
        % (1e6 / m["durable_cpu_us"], 1e6 / m["durable_no_alarms_cpu_us"]),
        "Workload: %d classroom-co2 nodes sending their backlog, frames of %d records "
        "(4-value readings: CO2, T, RH, battery_v of one simulated day through the real "
        "drivers; a status record every %d readings), %.0f bytes a frame with its 16-byte tag; "
        "%d frames, %d readings (%d records) a run. A node keeps one frame in flight until "
        "acked, so a batch (one `put_many`, one transaction) holds one frame per node: %d "
        "frames, about %d records. The outbox and the baseline are new files in the temp "
        "directory (ext4 on a virtual disk here; a Pi's SD card syncs slower). Best of %d "
        "interleaved rounds; each durable run checks that every record was stored and every "
        "frame acked. Load average when the run began: %.1f on %d CPUs (other work on the "
        "machine slows every row, the baseline less: it is mostly waiting on the disk)."
        % (m["devices"], m["readings_per_frame"], STATUS_EVERY, m["frame_bytes"], m["frames"],
           m["readings"], m["records"], m["devices"], m["devices"] * m["readings_per_frame"],
           ROUNDS, m["load"], m["cpus"]),
    ]
    if m.get("profile"):
        lines = ["Where a durable run's time goes (cProfile of half a run, own time; the "
                 "top %d of %.2f s profiled):" % (len(m["profile"]), m["profile_total_s"]), "",
                 "| function | calls | own s | share |", "|---|---|---|---|"]
        for name, calls, own, share in m["profile"]:
            lines.append("| `%s` | %d | %.3f | %.1f %% |" % (name, calls, own, 100 * share))
        notes.append("\n".join(lines))
        notes.append("The same profile by part (cumulative time, share of the run; parts "
                     "nest): " + "; ".join("%s %.1f %%" % (label, 100 * share)
                                           for label, share in m["profile_parts"]) + ".")
    return ("Durable ingest: node frames authenticated, decoded, checked, run through the "
            "alarm rules and committed to the outbox (SQLite WAL, synchronous=FULL) by the "
            "agent's loop, readings per second, against plain SQLite inserting the same "
            "rows"), rows, notes


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
